//! Matrix-vector (decode) and matrix-matrix (prefill) products for every matrix [`Format`].
//!
//! # Dispatch
//!
//! A [`Kernels`] value holds the instruction set chosen **once**: [`Kernels::scalar`] (the
//! portable reference), [`Kernels::for_target`] (what the compile-time `target_feature`s allow;
//! works in `no_std`), or [`Kernels::from_cpu_features`] (run-time detection, done by
//! `goldcrest_std::kernels::detect()` under std). Calls never probe the CPU.
//!
//! | ISA | selected when | accelerated |
//! |-----|---------------|-------------|
//! | `Avx512Vnni` | avx512f+bw+vl+vnni, avx2, fma, f16c | ternary × int8, i8 × int8, q8_0/q4_0 × int8 (`vpdpbusd`; ternary and q8_0/q4_0 prefill through weight panels), f32/f16/bf16 × f32 (16 lanes), activation quantization, exp/SiLU, plus all of `Avx2` |
//! | `Avx2` | avx2, fma, f16c | ternary × f32/int8, i8 × f32/int8, q8_0/q4_0 × f32/int8, f32, f16, bf16 |
//! | `NeonDotprod` | aarch64 with `dotprod` | ternary × int8, i8 × int8 (`sdot` via `asm!`), plus all of `Neon` |
//! | `Neon` | aarch64 | ternary × int8, i8 × int8 (`smull`/`sadalp`), ternary × f32, i8 × f32, q8_0, q4_0, f32 |
//! | `Scalar` | always | everything (the reference) |
//!
//! Formats an ISA does not accelerate run the scalar code.
//!
//! # Float activations: [`Kernels::gemv`], [`Kernels::gemm`]
//!
//! Ternary blocks are applied with additions and subtractions only, then one multiply by the
//! block scale per 256-block. SIMD paths sum in a different order than the scalar reference, so
//! results differ by rounding. **Bound** (tested): for an output `y = Σ_i w_i x_i` over `n = cols`
//! terms, `|y_simd − y_scalar| ≤ 2·(n + 2)·2⁻²⁴·Σ_i |w_i x_i|`: each order of a floating-point
//! sum of `n` terms is within `(n − 1)·u·Σ|terms|` of the exact value (Higham, Accuracy and
//! Stability of Numerical Algorithms, §4.2), plus one rounding for each block-scale multiply.
//!
//! # Integer activations: [`Kernels::quantize_acts`], [`Kernels::gemm_i8`]
//!
//! BitNet b1.58 quantizes activations to int8 per token with absmax: `s = max|x| / 127`,
//! `a = round(x / s)` in `-127..=127`. [`ActScale::PerBlock`] uses one such scale per 256
//! activations (like ggml's `Q8_K`), which keeps more precision for outliers at the same speed.
//!
//! The caller provides the scratch (no allocation): [`Int8Acts::scratch_bytes`] gives its size
//! for `n` tokens of `cols`; [`Kernels::quantize_acts`] fills it and returns an [`Int8Acts`]
//! view borrowing it, reusable for every matrix with that many columns (q, k, v, gate, up...).
//! Layout inside the scratch, per token: activations padded with zeros to whole 256-blocks,
//! the scales, and the sum of each block's activations (used by SIMD kernels to undo the `+1`
//! offset of ternary codes).
//!
//! ```
//! use goldcrest_core::kernels::{ActScale, Int8Acts, Kernels};
//! use goldcrest_core::quant::{Format, Matrix, float, tq2_0};
//!
//! // One row of 256 weights, all +1, block scale 0.5 (66 bytes of tq2_0).
//! let block = tq2_0::pack_block(&[1i8; 256], float::f32_to_f16(0.5));
//! let w = Matrix::new("w", Format::Tq2_0, 1, 256, &block)?;
//! let x = [1.0f32; 256];
//! let kernels = Kernels::for_target(); // or goldcrest_std::kernels::detect()
//!
//! // f32 activations: exact sums of ±x, then one multiply per block.
//! let mut y = [0.0f32; 1];
//! kernels.gemv(&w, &x, &mut y)?;
//! assert_eq!(y[0], 128.0);
//!
//! // int8 activations in caller scratch (no allocation).
//! let mut scratch = [0u8; Int8Acts::scratch_bytes(1, 256, ActScale::PerToken).unwrap()];
//! let acts = kernels.quantize_acts(&x, 1, 256, ActScale::PerToken, &mut scratch)?;
//! kernels.gemv_i8(&w, &acts, &mut y)?;
//! assert!((y[0] - 128.0).abs() < 1e-3);
//! # Ok::<(), goldcrest_core::Error>(())
//! ```
//!
//! Integer paths are **exact**: every ISA computes the same integer sum per 256-block and
//! combines blocks with the same float operations in the same order, so results are
//! bit-identical to the scalar reference. Supported weight formats: `tq2_0`, `tq1_0`, `i8`,
//! and `q8_0`/`q4_0` (llama.cpp's `Q8_0`/`Q4_0` × int8 scheme, with a 256-block or per-token
//! activation scale). `q8_0`/`q4_0` have two fixed orders, chosen by the number of tokens
//! quantized together (never by ISA or thread count): decode (fewer than
//! [`scalar::Q32_PREFILL_MIN_TOKENS`]) uses [`scalar::q32_row_i8`]'s sixteen lanes, prefill
//! [`scalar::q32_row_i8_blockwise`]'s one chain per output (what weight panels compute without
//! horizontal reductions). The same token prefilled and decoded may therefore differ by
//! rounding (tested bound: `2·(nb + nb/8 + 10)·2⁻²⁴·Σ_k |d_k|·s_k·Σ|w·a|` over `nb` blocks).
//!
//! # `unsafe`
//!
//! The ISA modules (`x86`, `aarch64`) contain the unsafe code (intrinsics, `asm!`); this
//! module calls into them from the two dispatch points below, hands split products' disjoint
//! output ranges to [`Parallel`] workers through one raw pointer (`SharedOut`; a part of an
//! int8 product split by rows is a strided view, `StridedOut`, since its runs interleave with
//! the other parts'), and
//! [`Kernels::from_cpu_features`] is `unsafe` because it trusts its caller about the CPU.

use crate::error::{Error, Name, Result};
use crate::quant::{Format, Matrix};

pub mod attention;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_q32;

#[cfg(target_arch = "aarch64")]
mod aarch64;

/// Elements per ternary block, and the unit int8 activations are grouped and padded to.
pub const QBLOCK: usize = 256;

/// CPU features relevant to goldcrest's kernels, as detected at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// x86-64 AVX2.
    pub avx2: bool,
    /// x86-64 FMA3.
    pub fma: bool,
    /// x86-64 F16C (f16 ↔ f32 conversion).
    pub f16c: bool,
    /// x86-64 AVX-512 Foundation.
    pub avx512f: bool,
    /// x86-64 AVX-512 byte/word instructions.
    pub avx512bw: bool,
    /// x86-64 AVX-512 vector-length extensions (256-bit forms).
    pub avx512vl: bool,
    /// x86-64 AVX-512 VNNI (`vpdpbusd`).
    pub avx512vnni: bool,
    /// aarch64 Advanced SIMD.
    pub neon: bool,
    /// aarch64 dot product (`sdot`).
    pub dotprod: bool,
}

/// The instruction set a [`Kernels`] value runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust (the reference).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) with VNNI, on top of AVX2.
    Avx512Vnni,
    /// aarch64 NEON.
    Neon,
    /// aarch64 NEON with the dot-product extension.
    NeonDotprod,
}

impl Isa {
    /// Short name for logs and benchmark ids.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
        }
    }
}

/// How int8 activations are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActScale {
    /// One absmax scale per token (BitNet b1.58).
    PerToken,
    /// One absmax scale per 256 activations (ggml `Q8_K`-like).
    PerBlock,
}

/// Int8 activations of `tokens` tokens, quantized into caller scratch by
/// [`Kernels::quantize_acts`].
#[derive(Debug, Clone, Copy)]
pub struct Int8Acts<'a> {
    pub(crate) q: &'a [i8],
    pub(crate) scales: &'a [f32],
    pub(crate) sums: &'a [i32],
    pub(crate) tokens: usize,
    pub(crate) cols: usize,
    pub(crate) blocks: usize,
    pub(crate) mode: ActScale,
    /// Tokens quantized together ([`Kernels::quantize_acts`]'s `n`); token slices made for a
    /// split product keep it, so every part of a product uses the same `q8_0`/`q4_0` order
    /// (see [`scalar::Q32_PREFILL_MIN_TOKENS`]).
    pub(crate) batch: usize,
}

impl<'a> Int8Acts<'a> {
    /// Scratch bytes [`Kernels::quantize_acts`] needs for `tokens` tokens of `cols` values
    /// (any alignment of the scratch is accepted), or `None` on overflow.
    ///
    /// A `const fn`, so firmware can size a `static` buffer at compile time:
    ///
    /// ```
    /// use goldcrest_core::kernels::{ActScale, Int8Acts};
    /// const SCRATCH: usize = match Int8Acts::scratch_bytes(1, 2048, ActScale::PerToken) {
    ///     Some(n) => n,
    ///     None => panic!("too large"),
    /// };
    /// static mut ACTS: [u8; SCRATCH] = [0; SCRATCH];
    /// assert_eq!(SCRATCH, 2048 + 4 + 8 * 4 + 8);
    /// ```
    pub const fn scratch_bytes(tokens: usize, cols: usize, mode: ActScale) -> Option<usize> {
        let Some((q, s, sums)) = Self::counts(tokens, cols, mode) else {
            return None;
        };
        // Scales and sums are 4 bytes each; +8: worst-case padding to align both parts.
        let Some(four) = s.checked_add(sums) else {
            return None;
        };
        let Some(four_bytes) = four.checked_mul(4) else {
            return None;
        };
        match q.checked_add(four_bytes) {
            Some(v) => v.checked_add(8),
            None => None,
        }
    }

    const fn counts(tokens: usize, cols: usize, mode: ActScale) -> Option<(usize, usize, usize)> {
        let blocks = cols.div_ceil(QBLOCK);
        let Some(per_token_q) = blocks.checked_mul(QBLOCK) else {
            return None;
        };
        let Some(block_count) = tokens.checked_mul(blocks) else {
            return None;
        };
        let scales = match mode {
            ActScale::PerToken => tokens,
            ActScale::PerBlock => block_count,
        };
        match tokens.checked_mul(per_token_q) {
            Some(q) => Some((q, scales, block_count)),
            None => None,
        }
    }

    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Activations per token (before padding).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Scale mode.
    pub fn mode(&self) -> ActScale {
        self.mode
    }

    /// Token `t`'s quantized activations, zero-padded to whole 256-blocks.
    pub fn token(&self, t: usize) -> &'a [i8] {
        let n = self.blocks * QBLOCK;
        &self.q[t * n..(t + 1) * n]
    }

    /// Token `t`'s scales: one for [`ActScale::PerToken`], one per 256-block otherwise.
    pub fn token_scales(&self, t: usize) -> &'a [f32] {
        match self.mode {
            ActScale::PerToken => &self.scales[t..t + 1],
            ActScale::PerBlock => &self.scales[t * self.blocks..(t + 1) * self.blocks],
        }
    }

    /// Tokens `first..first + count` as their own activations (same scales and sums).
    fn slice_tokens(&self, first: usize, count: usize) -> Int8Acts<'a> {
        let padded = self.blocks * QBLOCK;
        let (s0, s1) = match self.mode {
            ActScale::PerToken => (first, first + count),
            ActScale::PerBlock => (first * self.blocks, (first + count) * self.blocks),
        };
        Int8Acts {
            q: &self.q[first * padded..(first + count) * padded],
            scales: &self.scales[s0..s1],
            sums: &self.sums[first * self.blocks..(first + count) * self.blocks],
            tokens: count,
            ..*self
        }
    }

    /// Token `t`'s per-block activation sums.
    pub fn token_sums(&self, t: usize) -> &'a [i32] {
        &self.sums[t * self.blocks..(t + 1) * self.blocks]
    }
}

/// Absmax int8 quantization of `x` into `q` (same length); returns the dequantization scale.
fn quantize_absmax(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
    if amax == 0.0 {
        q.iter_mut().for_each(|v| *v = 0);
        return 0.0;
    }
    let inv = 127.0 / amax;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = round_to_i8(v * inv);
    }
    amax / 127.0
}

/// `libm::roundf(y)` (halves away from zero) clamped to `-127..=127` (NaN gives 0),
/// without the libm call: truncation and the exact fraction `y − trunc(y)` decide, so the
/// loop vectorizes (activation quantization runs for every linear layer).
#[inline(always)]
fn round_to_i8(y: f32) -> i8 {
    let t = y as i32;
    let f = y - t as f32;
    // Clamped first so that ±∞ (t saturated to i32::MAX/MIN) cannot overflow the add.
    (t.clamp(-128, 128) + i32::from(f >= 0.5) - i32::from(f <= -0.5)).clamp(-127, 127) as i8
}

fn split_aligned<T: bytemuck::Pod>(buf: &mut [u8], n: usize) -> Result<(&mut [T], &mut [u8])> {
    let pad = buf.as_ptr().align_offset(core::mem::align_of::<T>());
    let bytes = n
        .checked_mul(core::mem::size_of::<T>())
        .ok_or(Error::OutOfRange)?;
    let need = pad.checked_add(bytes).ok_or(Error::OutOfRange)?;
    if buf.len() < need {
        return Err(Error::BufferTooSmall {
            needed: need as u64,
            provided: buf.len() as u64,
        });
    }
    let (_, rest) = buf.split_at_mut(pad);
    let (typed, rest) = rest.split_at_mut(bytes);
    let typed = bytemuck::try_cast_slice_mut(typed).map_err(|_| Error::BufferMisaligned {
        required: core::mem::align_of::<T>() as u16,
    })?;
    Ok((typed, rest))
}

/// A pool of workers that [`Kernels`] may split large products across (see
/// [`Kernels::with_parallel`]). Core itself never creates threads: it stays callable from a
/// single RTOS task, and a hosted program (goldcrest-std's `parallel::Pool`) or firmware with
/// several cores provides the workers.
///
/// # Safety
///
/// The kernels hand each task a disjoint part of the output through a raw pointer and rely on
/// this contract for soundness: [`Parallel::run`] calls `task(i)` **exactly once** for every
/// `i` in `0..tasks` (on any threads, in any order, possibly concurrently), and returns only
/// after every call has returned. A call must not outlive `run`.
#[allow(unsafe_code)]
pub unsafe trait Parallel: Sync {
    /// Threads that work on one [`Parallel::run`], the calling thread included (≥ 1).
    fn workers(&self) -> usize;
    /// Runs `task(0)`, …, `task(tasks - 1)` and returns when all have returned.
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync));
}

/// [`Kernels::gemm`] computes each token of a call of at least this many tokens with the same
/// operations in the same order, whatever the number of tokens in the call, on every ISA: a
/// model may split such a batch into calls of at least this many tokens each (for example
/// across threads) and get the same numbers bit for bit. (Below it, x86 ternary products take
/// a matrix-vector path that sums in another order.)
pub const GEMM_INVARIANT_TOKENS: usize = 4;

/// Products smaller than this many weights stay on the calling thread: waking a worker costs
/// a few microseconds, about what a core needs for this many multiply-adds.
pub const PARALLEL_MIN_WEIGHTS: usize = 1 << 17;

/// Token splits are multiples of this, so every part takes the same tile path the whole
/// product would (the SIMD tiles cover up to 4 tokens).
const TOKEN_SPLIT_ALIGN: usize = 4;

/// Row splits are multiples of this (SIMD row tiles cover up to 8 rows; 16 also keeps parts
/// on different cache lines of `y`).
const ROW_SPLIT_ALIGN: usize = 16;

/// Row splits of int8 products of several tokens are multiples of this: two 16-row panels of
/// the AVX-512 ternary prefill kernel, so no part unpacks a panel another part also unpacks.
const PREFILL_ROW_SPLIT_ALIGN: usize = 32;

/// Row-split parts per worker (see [`Kernels::split`]).
const ROW_PARTS_PER_WORKER: usize = 4;

/// An output slice shared by tasks that each write a disjoint range of it.
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only form non-overlapping sub-slices (see `SharedOut::range`), and the
// `Parallel` contract guarantees no task outlives the borrow the pointer came from.
#[allow(unsafe_code)]
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// `y[start..start + len]`.
    ///
    /// # Safety
    /// No other live reference may overlap this range, and `start + len <= self.len`.
    #[allow(unsafe_code)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [f32] {
        debug_assert!(start + len <= self.len);
        // SAFETY: in bounds and unaliased per this function's contract.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// The output of one int8 product (or of one part of a split one): `tokens` runs of `rows`
/// floats, run `t` starting `t · stride` floats after the first (`stride ≥ rows`). The
/// whole product's output is token-major, so a part that covers a range of rows writes a
/// strided block of it; parts of one product interleave in memory but never share an
/// element. A view holds a raw pointer, not a slice, because slices of interleaved parts
/// would overlap (two live `&mut [f32]` over the same memory), which Rust forbids even when
/// the elements each writes are disjoint.
pub(crate) struct StridedOut<'a> {
    ptr: *mut f32,
    rows: usize,
    stride: usize,
    tokens: usize,
    _borrow: core::marker::PhantomData<&'a mut [f32]>,
}

#[allow(unsafe_code)]
impl<'a> StridedOut<'a> {
    /// The start of `y`: `tokens` runs of `rows` back to back. Panics when `y` is shorter
    /// than `tokens · rows` (callers have checked the shapes).
    pub(crate) fn contiguous(y: &'a mut [f32], rows: usize, tokens: usize) -> Self {
        assert!(rows.checked_mul(tokens).is_some_and(|len| len <= y.len()));
        StridedOut {
            ptr: y.as_mut_ptr(),
            rows,
            stride: rows,
            tokens,
            _borrow: core::marker::PhantomData,
        }
    }

    /// Rows `first..first + rows` of every token of `out`, a token-major output of
    /// `out.len / stride` tokens × `stride` rows.
    ///
    /// # Safety
    /// `first + rows <= stride` and `tokens · stride <= out.len`; while the view lives, no
    /// other view or reference may access the elements it covers (`t · stride + first + r`
    /// for `t < tokens`, `r < rows`), and `out`'s pointer must stay valid (the [`Parallel`]
    /// contract: no task outlives the borrow `out` came from).
    unsafe fn rows_of(
        out: &SharedOut,
        first: usize,
        rows: usize,
        stride: usize,
        tokens: usize,
    ) -> Self {
        debug_assert!(first + rows <= stride && tokens * stride <= out.len);
        StridedOut {
            // SAFETY: `first <= stride <= out.len` (caller), so the pointer stays in bounds.
            ptr: unsafe { out.ptr.add(first) },
            rows,
            stride,
            tokens,
            _borrow: core::marker::PhantomData,
        }
    }

    /// Rows written per token.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Tokens in the view.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }

    /// Floats from one token's run to the next.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// `y[t, r] = v`. Panics when `(t, r)` is outside the view (a kernel bug, as an
    /// out-of-bounds slice index would be).
    #[inline(always)]
    pub(crate) fn set(&mut self, t: usize, r: usize, v: f32) {
        assert!(t < self.tokens && r < self.rows);
        // SAFETY: inside the view (checked above), which this `&mut self` accesses alone.
        unsafe { *self.ptr.add(t * self.stride + r) = v };
    }

    /// Where token `t`'s run starts, for vector stores and masked loads. The address is
    /// computed with wrapping arithmetic, so forming it is safe; the caller's `unsafe` block
    /// must keep accesses inside `0..rows` of a token `< tokens`.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn token_ptr(&mut self, t: usize) -> *mut f32 {
        self.ptr.wrapping_add(t.wrapping_mul(self.stride))
    }

    /// The view as one slice when its runs are back to back.
    pub(crate) fn as_contiguous(&mut self) -> Option<&mut [f32]> {
        (self.stride == self.rows || self.tokens <= 1).then(|| {
            // SAFETY: with no gaps (or one run) the view is `tokens · rows` consecutive
            // floats it alone accesses, for as long as `&mut self` is borrowed.
            unsafe { core::slice::from_raw_parts_mut(self.ptr, self.tokens * self.rows) }
        })
    }
}

/// The selected kernel implementation. `Copy`; choose it once and keep it.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    parallel: Option<&'static dyn Parallel>,
}

impl PartialEq for Kernels {
    fn eq(&self, other: &Self) -> bool {
        self.isa == other.isa
            && match (self.parallel, other.parallel) {
                (None, None) => true,
                (Some(a), Some(b)) => core::ptr::addr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for Kernels {}

impl core::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Kernels")
            .field("isa", &self.isa)
            .field("workers", &self.workers())
            .finish()
    }
}

/// One part of a split product: `(w_part, first_token, tokens, y_part)`.
type PartProduct<'p> = dyn Fn(&Matrix, usize, usize, &mut StridedOut) + Sync + 'p;

/// How a product is divided between workers.
#[derive(Clone, Copy)]
enum SplitBy {
    /// Row ranges of the matrix (all tokens; each part writes a strided block of `y`).
    Rows,
    /// Token ranges (every part reads the whole matrix).
    Tokens,
}

#[derive(Clone, Copy)]
struct Split {
    by: SplitBy,
    per: usize,
    parts: usize,
}

fn check_len(expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(Error::LengthMismatch {
            expected: expected as u64,
            found: found as u64,
        });
    }
    Ok(())
}

impl Kernels {
    /// The portable reference implementation.
    pub const fn scalar() -> Self {
        Kernels {
            isa: Isa::Scalar,
            parallel: None,
        }
    }

    /// The best implementation the compile-time target features allow (`-C target-feature`,
    /// `-C target-cpu`). Needs no run-time detection, so it works in `no_std` firmware.
    pub const fn for_target() -> Self {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512vnni",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ))]
        return Kernels {
            isa: Isa::Avx512Vnni,
            parallel: None,
        };
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c",
            not(all(
                target_feature = "avx512f",
                target_feature = "avx512bw",
                target_feature = "avx512vl",
                target_feature = "avx512vnni"
            ))
        ))]
        return Kernels {
            isa: Isa::Avx2,
            parallel: None,
        };
        #[cfg(all(
            target_arch = "aarch64",
            target_feature = "neon",
            target_feature = "dotprod"
        ))]
        return Kernels {
            isa: Isa::NeonDotprod,
            parallel: None,
        };
        #[cfg(all(
            target_arch = "aarch64",
            target_feature = "neon",
            not(target_feature = "dotprod")
        ))]
        return Kernels {
            isa: Isa::Neon,
            parallel: None,
        };
        #[allow(unreachable_code)]
        Kernels::scalar()
    }

    /// The best implementation for a CPU with `features`.
    ///
    /// # Safety
    ///
    /// Every feature set to `true` must really be present on every CPU this value is used on
    /// (typically: detected at run time on this machine); otherwise the kernels execute
    /// illegal instructions.
    #[allow(unsafe_code)]
    pub unsafe fn from_cpu_features(features: CpuFeatures) -> Self {
        let f = features;
        let isa = if cfg!(target_arch = "x86_64") && f.avx2 && f.fma && f.f16c {
            if f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni {
                Isa::Avx512Vnni
            } else {
                Isa::Avx2
            }
        } else if cfg!(target_arch = "aarch64") && f.neon {
            if f.dotprod {
                Isa::NeonDotprod
            } else {
                Isa::Neon
            }
        } else {
            Isa::Scalar
        };
        Kernels {
            isa,
            parallel: None,
        }
    }

    /// The instruction set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The same kernels, splitting products of at least [`PARALLEL_MIN_WEIGHTS`] weights
    /// across `parallel`'s workers: matrix-vector products by rows, matrix-matrix products by
    /// tokens (float) or rows (int8; see `Kernels::split`). Results are bit-identical to the
    /// single-threaded kernels (each output element is computed by the same code in the same
    /// order; only which thread runs it changes).
    pub fn with_parallel(self, parallel: &'static dyn Parallel) -> Self {
        Kernels {
            parallel: Some(parallel),
            ..self
        }
    }

    /// The same kernels on the calling thread only.
    pub fn single_threaded(self) -> Self {
        Kernels {
            parallel: None,
            ..self
        }
    }

    /// Threads a large product runs on (1 without a [`Parallel`] pool).
    pub fn workers(&self) -> usize {
        self.parallel.map_or(1, |p| p.workers().max(1))
    }

    /// The pool and the split when a product of `n` tokens × `w` is worth splitting.
    ///
    /// One token: rows (a few aligned parts per worker). Several tokens: rows when
    /// `prefill_rows` (the int8 products, whose prefill kernels unpack or stream each weight
    /// block once per call: split by tokens, every worker would unpack the whole matrix)
    /// or when a dense float kernel writes strided row ranges
    /// ([`Kernels::float_rows_strided`]: each worker streams only its rows), and the matrix
    /// has enough rows; else tokens when there are eight or more (one aligned part per
    /// worker). Int8 products count `rows · cols · n` multiply-adds against
    /// [`PARALLEL_MIN_WEIGHTS`]; the float ones, as before, `rows · cols`.
    fn split(
        &self,
        w: &Matrix,
        n: usize,
        prefill_rows: bool,
    ) -> Option<(&'static dyn Parallel, Split)> {
        let pool = self.parallel?;
        let workers = pool.workers();
        let weights = w.rows().saturating_mul(w.cols());
        let work = if prefill_rows {
            weights.saturating_mul(n)
        } else {
            weights
        };
        if workers < 2 || work < PARALLEL_MIN_WEIGHTS || n == 0 {
            return None;
        }
        let (units, align, by) = if n == 1 {
            (w.rows(), ROW_SPLIT_ALIGN, SplitBy::Rows)
        } else if !prefill_rows
            && self.float_rows_strided(w.format())
            && w.rows() >= workers * ROW_SPLIT_ALIGN
        {
            // Each worker streams only its rows of the matrix; split by tokens, every worker
            // would read all of it (Toto's 16-patch context pass is bound by that stream).
            (w.rows(), ROW_SPLIT_ALIGN, SplitBy::Rows)
        } else if prefill_rows && w.rows() >= workers * PREFILL_ROW_SPLIT_ALIGN {
            (w.rows(), PREFILL_ROW_SPLIT_ALIGN, SplitBy::Rows)
        } else if n >= 2 * TOKEN_SPLIT_ALIGN {
            (n, TOKEN_SPLIT_ALIGN, SplitBy::Tokens)
        } else {
            return None;
        };
        // Row parts cost nothing extra (each row is read once either way), so there are a few
        // per worker: a worker that the OS deschedules on a busy machine then holds up only
        // a small part while the others claim the rest. Token parts each read the whole
        // matrix, so there is one per worker.
        let per_worker = match by {
            SplitBy::Rows => ROW_PARTS_PER_WORKER,
            SplitBy::Tokens => 1,
        };
        let per = units
            .div_ceil(workers * per_worker)
            .div_ceil(align)
            .saturating_mul(align);
        let parts = units.div_ceil(per);
        (parts >= 2).then_some((pool, Split { by, per, parts }))
    }

    /// Runs `product(w_part, first_token, tokens, y_part)` on each part of a split product.
    /// `y` is token-major `n × w.rows()` (checked by the caller).
    #[allow(unsafe_code)]
    fn run_split(
        pool: &dyn Parallel,
        split: Split,
        w: &Matrix,
        n: usize,
        y: &mut [f32],
        product: &PartProduct,
    ) {
        let out = SharedOut {
            ptr: y.as_mut_ptr(),
            len: y.len(),
        };
        let (rows, row_bytes) = (w.rows(), w.row_bytes());
        pool.run(split.parts, &|part| {
            let first = part * split.per;
            match split.by {
                SplitBy::Rows => {
                    let count = split.per.min(rows - first);
                    let bytes = &w.data()[first * row_bytes..(first + count) * row_bytes];
                    // A row range of a valid matrix is valid (same format, row length and
                    // alignment: rows are whole, aligned blocks).
                    let Ok(part_w) = Matrix::new("", w.format(), count, w.cols(), bytes) else {
                        return;
                    };
                    // SAFETY: the pool runs each part once, and parts cover disjoint row
                    // ranges `first..first + count` (`<= rows`), so the views' elements
                    // `t · rows + first + r` (`t < n`, `r < count`) never coincide, and all lie
                    // inside `y` (`n · rows` long). The pool returns before `y`'s borrow ends.
                    let mut y_part = unsafe { StridedOut::rows_of(&out, first, count, rows, n) };
                    product(&part_w, 0, n, &mut y_part);
                }
                SplitBy::Tokens => {
                    let count = split.per.min(n - first);
                    // SAFETY: parts cover disjoint token ranges; each token's outputs are
                    // `rows` contiguous floats inside `y` (`n · rows` long).
                    let y_part = unsafe { out.range(first * rows, count * rows) };
                    product(
                        w,
                        first,
                        count,
                        &mut StridedOut::contiguous(y_part, rows, count),
                    );
                }
            }
        });
    }

    /// Calls `task(i, part)` for every `part = out[i·len..(i + 1)·len]` (`out.len()` must be
    /// a multiple of `len`), spread over the pool when there is one and `work` (the caller's
    /// count of multiply-adds) is at least [`PARALLEL_MIN_WEIGHTS`]. Each part is computed by
    /// the same code whichever thread runs it, so results do not depend on the thread count.
    /// For model code with independent outputs besides the matrix products (attention heads).
    #[allow(unsafe_code)]
    pub fn for_each_part(
        &self,
        out: &mut [f32],
        len: usize,
        work: usize,
        task: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) -> Result<()> {
        if len == 0 || !out.len().is_multiple_of(len) {
            return Err(Error::LengthMismatch {
                expected: len as u64,
                found: out.len() as u64,
            });
        }
        let parts = out.len() / len;
        let pool = self
            .parallel
            .filter(|p| p.workers() >= 2 && parts >= 2 && work >= PARALLEL_MIN_WEIGHTS);
        let Some(pool) = pool else {
            for (i, part) in out.chunks_exact_mut(len).enumerate() {
                task(i, part);
            }
            return Ok(());
        };
        let shared = SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        };
        pool.run(parts, &|i| {
            // SAFETY: the pool calls each `i < parts` once, so the ranges `i·len..(i+1)·len`
            // (inside `out`) never overlap.
            task(i, unsafe { shared.range(i * len, len) });
        });
        Ok(())
    }

    /// Calls `task` once on every element of `parts`, spread over the pool's workers when there
    /// is one and there are at least two parts (else in order on the calling thread). For model
    /// code that splits whole independent computations (such as groups of sample paths, each
    /// with its own buffers) rather than single products. Inside `task`, run products with
    /// [`Kernels::single_threaded`]: every worker is busy with a part, and a [`Parallel`] need
    /// not support a job started from inside one of its tasks (goldcrest-std's pool runs such
    /// a job inline).
    #[allow(unsafe_code)]
    pub fn for_each_mut<T: Send>(&self, parts: &mut [T], task: &(dyn Fn(&mut T) + Sync)) {
        let pool = self
            .parallel
            .filter(|p| p.workers() >= 2 && parts.len() >= 2);
        let Some(pool) = pool else {
            parts.iter_mut().for_each(task);
            return;
        };
        struct Items<T>(*mut T);
        // SAFETY: each task dereferences a different element (below); `T: Send` lets that
        // element be used from another thread.
        unsafe impl<T: Send> Sync for Items<T> {}
        let count = parts.len();
        let items = Items(parts.as_mut_ptr());
        let items = &items;
        pool.run(count, &|i| {
            // SAFETY: the pool calls each `i < parts.len()` exactly once and returns only after
            // all calls have returned (the `Parallel` contract), so the `&mut` to element `i`
            // is unique and does not outlive the borrow of `parts`.
            task(unsafe { &mut *items.0.add(i) });
        });
    }

    fn check_matrix(w: &Matrix) -> Result<()> {
        if w.format() == Format::U8 {
            return Err(Error::UnsupportedFormat {
                tensor: Name::EMPTY,
            });
        }
        Ok(())
    }

    /// `y[r] = Σ_c W[r, c]·x[c]`: `x.len()` must be `w.cols()`, `y.len()` must be `w.rows()`.
    pub fn gemv(&self, w: &Matrix, x: &[f32], y: &mut [f32]) -> Result<()> {
        Self::check_matrix(w)?;
        check_len(w.cols(), x.len())?;
        check_len(w.rows(), y.len())?;
        self.gemm_split(w, x, 1, y);
        Ok(())
    }

    /// `n` tokens at once: `x` holds `n` rows of `w.cols()` (token-major), `y` receives `n` rows
    /// of `w.rows()`. SIMD paths unpack each weight tile once for several tokens.
    pub fn gemm(&self, w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        Self::check_matrix(w)?;
        check_len(n.checked_mul(w.cols()).ok_or(Error::OutOfRange)?, x.len())?;
        check_len(n.checked_mul(w.rows()).ok_or(Error::OutOfRange)?, y.len())?;
        self.gemm_split(w, x, n, y);
        Ok(())
    }

    fn gemm_split(&self, w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
        let Some((pool, split)) = self.split(w, n, false) else {
            return self.gemm_checked(w, x, n, y);
        };
        let cols = w.cols();
        Self::run_split(pool, split, w, n, y, &|part_w, first, count, y_part| {
            let x_part = &x[first * cols..(first + count) * cols];
            match y_part.as_contiguous() {
                Some(y_part) => self.gemm_checked(part_w, x_part, count, y_part),
                None => self.gemm_strided(part_w, x_part, count, y_part),
            }
        });
    }

    /// Whether float products in `format` with several tokens can write a row range of a
    /// token-major output (so split by rows); see [`Kernels::gemm_strided`].
    fn float_rows_strided(&self, format: Format) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            return matches!(format, Format::F32 | Format::F16 | Format::Bf16);
        }
        let _ = format;
        false
    }

    /// A float product into a strided view; only for the formats and ISA of
    /// [`Kernels::float_rows_strided`], the only ones [`Kernels::split`] splits this way.
    #[allow(unsafe_code)]
    fn gemm_strided(&self, w: &Matrix, x: &[f32], n: usize, y: &mut StridedOut) {
        assert!(
            self.float_rows_strided(w.format()),
            "a float product split by rows over several tokens without a strided kernel"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512Vnni` (checked above) is only constructed when AVX-512 F/BW/VL, AVX2,
        // FMA and F16C are present; the split gives the view `n` tokens of `w.rows()`.
        unsafe {
            x86::dense_avx512_strided(w, x, n, y)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (x, n, y);
    }

    #[allow(unsafe_code)]
    fn gemm_checked(&self, w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => {
                // SAFETY: `Avx2`/`Avx512Vnni` are only constructed when those features are
                // present (compile-time cfg or the `from_cpu_features` contract).
                unsafe { x86::gemm(self.isa, w, x, n, y) }
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonDotprod => {
                // SAFETY: as above, for NEON (and dotprod).
                unsafe { aarch64::gemm(self.isa, w, x, n, y) }
            }
            _ => scalar::gemm(w, x, n, y),
        }
    }

    /// Quantizes `n` tokens of `cols` activations (`x.len() == n·cols`) to int8 in `scratch`
    /// (at least [`Int8Acts::scratch_bytes`] bytes, any alignment).
    pub fn quantize_acts<'s>(
        &self,
        x: &[f32],
        n: usize,
        cols: usize,
        mode: ActScale,
        scratch: &'s mut [u8],
    ) -> Result<Int8Acts<'s>> {
        check_len(n.checked_mul(cols).ok_or(Error::OutOfRange)?, x.len())?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite);
        }
        let need = Int8Acts::scratch_bytes(n, cols, mode).ok_or(Error::OutOfRange)?;
        if scratch.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need as u64,
                provided: scratch.len() as u64,
            });
        }
        let (nq, ns, nsums) = Int8Acts::counts(n, cols, mode).ok_or(Error::OutOfRange)?;
        let (q, rest) = split_aligned::<i8>(scratch, nq)?;
        let (scales, rest) = split_aligned::<f32>(rest, ns)?;
        let (sums, _) = split_aligned::<i32>(rest, nsums)?;
        let blocks = cols.div_ceil(QBLOCK);
        let padded = blocks * QBLOCK;
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            let qt = &mut q[t * padded..(t + 1) * padded];
            qt[cols..].iter_mut().for_each(|v| *v = 0);
            match mode {
                ActScale::PerToken => scales[t] = self.quantize_absmax(xt, &mut qt[..cols]),
                ActScale::PerBlock => {
                    for (b, xb) in xt.chunks(QBLOCK).enumerate() {
                        let qb = &mut qt[b * QBLOCK..b * QBLOCK + xb.len()];
                        scales[t * blocks + b] = self.quantize_absmax(xb, qb);
                    }
                }
            }
            for (b, qb) in qt.chunks_exact(QBLOCK).enumerate() {
                sums[t * blocks + b] = qb.iter().map(|&v| v as i32).sum();
            }
        }
        Ok(Int8Acts {
            q,
            scales,
            sums,
            tokens: n,
            cols,
            blocks,
            mode,
            batch: n,
        })
    }

    /// [`quantize_absmax`] with this ISA's vector code where there is one (identical results).
    #[allow(unsafe_code)]
    fn quantize_absmax(&self, x: &[f32], q: &mut [i8]) -> f32 {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                // SAFETY: `Avx512Vnni` is only constructed when AVX-512 F/BW/VL are present;
                // the caller passes slices of equal length.
                unsafe { x86::quantize_absmax_avx512(x, q) }
            }
            _ => quantize_absmax(x, q),
        }
    }

    /// Numerically stable softmax in place with [`Kernels::exp_shifted`] (with the scalar
    /// kernels, exactly [`crate::ops::softmax`]). An empty slice is left alone; a slice
    /// containing NaN, or only −∞, is [`Error::NonFinite`] rather than a silent NaN
    /// distribution.
    #[allow(unsafe_code)]
    pub fn softmax(&self, x: &mut [f32]) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni {
            // SAFETY: `Avx512Vnni` implies AVX-512 F (see `quantize_absmax`).
            let finite = unsafe { x86::softmax_avx512(x) };
            return if finite {
                Ok(())
            } else {
                Err(Error::NonFinite)
            };
        }
        let mut max = f32::NEG_INFINITY;
        for &v in x.iter() {
            if v.is_nan() {
                return Err(Error::NonFinite);
            }
            max = max.max(v);
        }
        if max == f32::NEG_INFINITY {
            return Err(Error::NonFinite);
        }
        let inv = 1.0 / self.exp_shifted(x, max);
        for v in x.iter_mut() {
            *v *= inv;
        }
        Ok(())
    }

    /// Softmax numerators: `x[i] = e^(x[i] − shift)` (`shift` is usually `max x`); returns
    /// `Σ x[i]`. The scalar path uses `libm::expf` and a sequential sum; the AVX-512 path a
    /// vector exponential within 4 ulp of it and lane-wise partial sums (tested bound: each
    /// value within 4 ulp, the sum within `(n + 4)·2⁻²⁴·Σ`).
    #[allow(unsafe_code)]
    pub fn exp_shifted(&self, x: &mut [f32], shift: f32) -> f32 {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` implies AVX-512 F (see `quantize_absmax`).
            Isa::Avx512Vnni => unsafe { x86::exp_shifted_avx512(x, shift) },
            _ => {
                let mut sum = 0.0;
                for v in x.iter_mut() {
                    *v = libm::expf(*v - shift);
                    sum += *v;
                }
                sum
            }
        }
    }

    /// SwiGLU: `gate[i] = silu(gate[i]) · up[i]` (`up.len()` must equal `gate.len()`). Scalar:
    /// [`crate::ops::silu`]; AVX-512: the same formula with the vector exponential of
    /// [`Kernels::exp_shifted`] (each output within 8 ulp).
    #[allow(unsafe_code)]
    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<()> {
        check_len(gate.len(), up.len())?;
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` implies AVX-512 F; lengths checked above.
            Isa::Avx512Vnni => unsafe { x86::silu_mul_avx512(gate, up) },
            _ => {
                for (g, &u) in gate.iter_mut().zip(up) {
                    *g = crate::ops::silu(*g) * u;
                }
            }
        }
        Ok(())
    }

    /// Integer-activation product: `y` receives `acts.tokens()` rows of `w.rows()`
    /// (token-major). `w` must be `tq2_0`, `tq1_0`, `i8`, `q8_0` or `q4_0` with
    /// `w.cols() == acts.cols()`.
    #[allow(unsafe_code)]
    pub fn gemm_i8(&self, w: &Matrix, acts: &Int8Acts, y: &mut [f32]) -> Result<()> {
        if !Self::has_int8_path(w.format()) {
            return Err(Error::UnsupportedFormat {
                tensor: Name::EMPTY,
            });
        }
        check_len(w.cols(), acts.cols)?;
        check_len(
            acts.tokens.checked_mul(w.rows()).ok_or(Error::OutOfRange)?,
            y.len(),
        )?;
        let Some((pool, split)) = self.split(w, acts.tokens, true) else {
            self.gemm_i8_checked(
                w,
                acts,
                &mut StridedOut::contiguous(y, w.rows(), acts.tokens),
            );
            return Ok(());
        };
        Self::run_split(
            pool,
            split,
            w,
            acts.tokens,
            y,
            &|part_w, first, count, y_part| {
                self.gemm_i8_checked(part_w, &acts.slice_tokens(first, count), y_part);
            },
        );
        Ok(())
    }

    /// Whether [`Kernels::gemm_i8`] accepts weights of `format`.
    pub const fn has_int8_path(format: Format) -> bool {
        matches!(
            format,
            Format::Tq2_0 | Format::Tq1_0 | Format::I8 | Format::Q8_0 | Format::Q4_0
        )
    }

    #[allow(unsafe_code)]
    /// `y` covers `acts.tokens` runs of `w.rows()` floats.
    fn gemm_i8_checked(&self, w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
        debug_assert!(y.rows() == w.rows() && y.tokens == acts.tokens);
        #[cfg(target_arch = "x86_64")]
        if matches!(w.format(), Format::Q8_0 | Format::Q4_0)
            && matches!(self.isa, Isa::Avx2 | Isa::Avx512Vnni)
        {
            // SAFETY: see `gemm_checked`.
            unsafe { x86_q32::gemm_i8(self.isa, w, acts, y) };
            return;
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => {
                // SAFETY: see `gemm_checked`.
                unsafe { x86::gemm_i8(self.isa, w, acts, y) }
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonDotprod => {
                // SAFETY: see `gemm_checked`.
                unsafe { aarch64::gemm_i8(self.isa, w, acts, y) }
            }
            _ => scalar::gemm_i8_strided(w, acts, y),
        }
    }

    /// [`Kernels::gemm_i8`] for one token (decode).
    pub fn gemv_i8(&self, w: &Matrix, acts: &Int8Acts, y: &mut [f32]) -> Result<()> {
        check_len(1, acts.tokens)?;
        self.gemm_i8(w, acts, y)
    }
}

#[cfg(test)]
mod tests;
