//! x86-64 `q8_0`/`q4_0` × int8 products: decode (and batches below
//! [`Q32_PREFILL_MIN_TOKENS`]) bit-identical to [`scalar::q32_row_i8`](super::scalar::q32_row_i8),
//! prefill bit-identical to [`scalar::q32_row_i8_blockwise`](super::scalar::q32_row_i8_blockwise).
//!
//! # Decode tiles
//!
//! Weights become unsigned codes (`q8_0`: `w + 128`, one `xor`; `q4_0`: the raw nibbles,
//! `w + 8`) so they feed `vpdpbusd` (VNNI) or `vpmaddubsw` (AVX2); the offset is removed by
//! starting each dot product from `−offset·Σa` over the same four activations, computed once
//! per token and block and shared by every row of a tile. Each 32-block yields eight exact
//! partial sums that are converted and added with one FMA per lane into sixteen f32 lanes
//! (lanes `0..8` for even blocks, `8..16` for odd ones), reduced once per output: the scalar
//! reference's order, so results are bit-identical.
//!
//! Tiles of `R` rows × `T` tokens share every activation load (and its offset correction)
//! and every weight load; decode streams eight rows at once with software prefetch.
//!
//! # Prefill
//!
//! AVX-512 VNNI (the idea of the ternary panel kernel in `x86`): 32 rows × 32 blocks are
//! unpacked once into two 16-row panels (`PanelChunk`, 36 KiB: one 16 × 16 dword transpose per
//! two blocks of 16 rows, so lane `r` of a zmm holds four consecutive codes of row `r`), then
//! every token of a 128-token chunk sweeps them in tiles of 2 panels × 6 tokens: per block,
//! eight `vpdpbusd` with the token's broadcast activations give each (row, token) its exact
//! block sum in one i32 lane (started from `−offset·Σ₃₂a`, computed once per token chunk),
//! then one convert and one FMA by the rows' block scales extend that output's f32 chain.
//! 24 accumulators + 2 weight vectors + 1 broadcast fit the 32 zmm registers; nothing is
//! reduced horizontally. AVX2 has no such lane budget: its 2 × 4 tiles reduce eight block dot
//! products at once (`vphaddd` tree) into one vector whose lanes follow the same chains.

#![allow(unsafe_code)]
// Tiles index rows and tokens with the same counters.
#![allow(clippy::needless_range_loop)]

use super::scalar::Q32_PREFILL_MIN_TOKENS;
use super::x86::transpose16;
use super::{ActScale, Int8Acts, Isa, StridedOut};
use crate::quant::{Format, Matrix};
use core::arch::x86_64::*;

const Q8: u8 = 0;
const Q4: u8 = 1;

/// Minimum distance of the decode kernels' software prefetch. Decode fetches the next tile's
/// bytes while it works on this one: with short rows (Qwen2's 896 columns
/// make 952-byte `q8_0` rows, 7.6 KB tiles), one tile ahead measured −1 to +25% against
/// three (the old 16 KiB minimum) in seven interleaved runs on a loaded machine.
const PREFETCH_BYTES: usize = 4096;

/// Calls `$vnni` (AVX-512 VNNI) or `$avx2` (AVX2) with `($w, $acts, $out)`, instantiated for
/// `$w`'s format and `$acts`' scale mode: decode and prefill pick their kernels alike.
/// Expands to unsafe calls: the caller states why the ISA's features are present.
macro_rules! dispatch {
    ($isa:expr, $vnni:ident, $avx2:ident, $w:expr, $acts:expr, $out:expr) => {{
        let q4 = $w.format() == Format::Q4_0;
        let per_block = $acts.mode == ActScale::PerBlock;
        match ($isa == Isa::Avx512Vnni, q4, per_block) {
            (true, false, false) => $vnni::<Q8, false>($w, $acts, $out),
            (true, false, true) => $vnni::<Q8, true>($w, $acts, $out),
            (true, true, false) => $vnni::<Q4, false>($w, $acts, $out),
            (true, true, true) => $vnni::<Q4, true>($w, $acts, $out),
            (false, false, false) => $avx2::<Q8, false>($w, $acts, $out),
            (false, false, true) => $avx2::<Q8, true>($w, $acts, $out),
            (false, true, false) => $avx2::<Q4, false>($w, $acts, $out),
            (false, true, true) => $avx2::<Q4, true>($w, $acts, $out),
        }
    }};
}

/// `q8_0`/`q4_0` weights × int8 activations. Caller checked shapes and format.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (and AVX-512 F/BW/VL/VNNI for `Isa::Avx512Vnni`).
pub unsafe fn gemm_i8(isa: Isa, w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
    if acts.batch >= Q32_PREFILL_MIN_TOKENS {
        // SAFETY: the caller guarantees the features of `isa` and the shapes.
        return unsafe { gemm_i8_prefill(isa, w, acts, y) };
    }
    // SAFETY: the caller guarantees the features of `isa`.
    unsafe { dispatch!(isa, drive_vnni, drive_avx2, w, acts, y) }
}

/// Defines a driver that covers every (row, token) output with one ISA's tiles: prefill tiles
/// (`$pr` rows × `$pt` tokens) with row blocks outermost, so a block of weights stays in cache
/// while every token passes; the leftover tokens one at a time with decode tiles (`$dr` rows).
macro_rules! driver {
    ($name:ident, $features:literal, $tile:ident, $dr:literal, $pr:literal, $pt:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const F: u8, const PB: bool>(
            w: &Matrix,
            acts: &Int8Acts,
            y: &mut StridedOut,
        ) {
            let (rows, n) = (w.rows(), acts.tokens);
            let full_t = n - n % $pt;
            let full_pr = rows - rows % $pr;
            let full_dr = rows - rows % $dr;
            // SAFETY: every tile stays inside `rows` × `n`; same features as this function.
            unsafe {
                for r0 in (0..full_pr).step_by($pr) {
                    for t0 in (0..full_t).step_by($pt) {
                        $tile::<F, PB, $pr, $pt>(w, acts, r0, t0, y);
                    }
                }
                for r in full_pr..rows {
                    for t0 in (0..full_t).step_by($pt) {
                        $tile::<F, PB, 1, $pt>(w, acts, r, t0, y);
                    }
                }
                for t in full_t..n {
                    for r0 in (0..full_dr).step_by($dr) {
                        $tile::<F, PB, $dr, 1>(w, acts, r0, t, y);
                    }
                    for r in full_dr..rows {
                        $tile::<F, PB, 1, 1>(w, acts, r, t, y);
                    }
                }
            }
        }
    };
}

driver!(
    drive_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    tile_vnni,
    8,
    4,
    4
);
driver!(drive_avx2, "avx2,fma,f16c", tile_avx2, 4, 2, 2);

/// The code offset removed per product: `q8_0` codes are `w + 128`, `q4_0` nibbles `w + 8`.
const fn offset<const F: u8>() -> i8 {
    if F == Q8 { -128 } else { 8 }
}

/// Row pointers of a tile.
fn row_ptrs<const R: usize>(w: &Matrix, r0: usize) -> [*const u8; R] {
    let mut rs = [core::ptr::null::<u8>(); R];
    for (r, p) in rs.iter_mut().enumerate() {
        *p = w.row(r0 + r).unwrap_or(&[]).as_ptr();
    }
    rs
}

/// Whether a tile prefetches weights, and how far ahead. Decode streams the matrix once, so
/// it fetches whole tiles at least [`PREFETCH_BYTES`] ahead. Prefill reads a block of rows
/// once per group of tokens: the first group (`t0 == 0`) fetches the next block of rows,
/// which the later groups give time to arrive; without it each new block stalls on DRAM.
fn prefetch_plan<const R: usize, const T: usize>(w: &Matrix, t0: usize) -> (bool, usize) {
    let tile_bytes = (R * w.row_bytes()).max(1);
    if T == 1 {
        (true, PREFETCH_BYTES.div_ceil(tile_bytes) * tile_bytes)
    } else {
        (t0 == 0, tile_bytes)
    }
}

/// The f16 scale of the block at `p` (F16C conversion is exact).
///
/// # Safety
/// `p` must point to a whole block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_scale(p: *const u8) -> __m128 {
    // SAFETY: the first two bytes of a block are its scale.
    let bits = unsafe { core::ptr::read_unaligned(p.cast::<u16>()) };
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Finishes one output from its sixteen lanes, in the reference's order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn finish<const PB: bool>(s8: __m256, acts: &Int8Acts, t: usize) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)));
    if PB { s1 } else { s1 * acts.scales[t] }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 VNNI: two blocks per 512-bit register.

/// The codes of blocks `k` (lanes `0..32`) and `k + 1` (lanes `32..64`, zero when `!two`) as
/// unsigned bytes in weight order.
///
/// # Safety
/// `p` must point to block `k` of a row, and to two whole blocks when `two`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn codes_zmm<const F: u8>(p: *const u8, bb: usize, two: bool) -> __m512i {
    // SAFETY: block bytes `2..bb` of each block that exists.
    unsafe {
        if F == Q8 {
            let lo = _mm256_loadu_si256(p.add(2).cast());
            let hi = if two {
                _mm256_loadu_si256(p.add(bb + 2).cast())
            } else {
                _mm256_setzero_si256()
            };
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            _mm512_xor_si512(z, _mm512_set1_epi8(-128))
        } else {
            let x = if two {
                _mm256_loadu2_m128i(p.add(bb + 2).cast(), p.add(2).cast())
            } else {
                _mm256_zextsi128_si256(_mm_loadu_si128(p.add(2).cast()))
            };
            let mask = _mm256_set1_epi8(0x0f);
            let lo = _mm256_and_si256(x, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
            // [lo_k, lo_k1, hi_k, hi_k1] → [lo_k, hi_k, lo_k1, hi_k1] (128-bit lanes).
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            _mm512_shuffle_i64x2::<0b11_01_10_00>(z, z)
        }
    }
}

/// What both ISAs' tiles of `R` rows × `T` tokens set up before their block loop.
struct Tile<const R: usize, const T: usize> {
    /// Bytes per block and blocks per row.
    bb: usize,
    nb: usize,
    /// The tile's weight rows and token activations.
    rs: [*const u8; R],
    ap: [*const i8; T],
    /// [`prefetch_plan`]'s answer for this tile.
    prefetch: bool,
    ahead: usize,
}

impl<const R: usize, const T: usize> Tile<R, T> {
    #[inline(always)]
    fn new(w: &Matrix, acts: &Int8Acts, r0: usize, t0: usize) -> Self {
        let bb = w.format().block_bytes();
        let (prefetch, ahead) = prefetch_plan::<R, T>(w, t0);
        let mut ap = [core::ptr::null::<i8>(); T];
        for (t, p) in ap.iter_mut().enumerate() {
            *p = acts.token(t0 + t).as_ptr();
        }
        Tile {
            bb,
            nb: w.row_bytes() / bb,
            rs: row_ptrs::<R>(w, r0),
            ap,
            prefetch,
            ahead,
        }
    }
}

/// `q8_0`/`q4_0` × int8 on a tile of `R` rows × `T` tokens with 512-bit vectors.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C; `r0 + R <= rows`, `t0 + T <= tokens`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_vnni<const F: u8, const PB: bool, const R: usize, const T: usize>(
    w: &Matrix,
    acts: &Int8Acts,
    r0: usize,
    t0: usize,
    y: &mut StridedOut,
) {
    let Tile {
        bb,
        nb,
        rs,
        prefetch,
        ahead,
        ap,
    } = Tile::<R, T>::new(w, acts, r0, t0);
    let off = _mm512_set1_epi8(offset::<F>());
    // Lanes 0..8 take element 0 (block k's scale), lanes 8..16 element 1 (block k + 1's).
    let pick = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut k = 0;
    while k < nb {
        let two = k + 1 < nb;
        let mut a = [_mm512_setzero_si512(); T];
        let mut c = [_mm512_setzero_si512(); T];
        for t in 0..T {
            // SAFETY: 64 bytes from 32k: blocks k and k + 1 lie inside the zero-padded
            // activations (an odd block count never ends on a 256-boundary).
            a[t] = unsafe { _mm512_loadu_si512(ap[t].add(32 * k).cast()) };
            let sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, a[t]);
            c[t] = _mm512_sub_epi32(_mm512_setzero_si512(), sum);
        }
        for r in 0..R {
            let p = rs[r].wrapping_add(k * bb);
            if prefetch {
                // A prefetch never faults, hence wrapping arithmetic. One step reads two
                // blocks: 68 bytes of `q8_0`, so a single prefetch per step would leave one
                // cache line in seventeen to a demand miss; the second covers it (with one
                // tile ahead: +22–28% decode bandwidth on Qwen2's shapes, three runs).
                let at = p.wrapping_add(ahead);
                _mm_prefetch::<_MM_HINT_T0>(at.cast());
                if F == Q8 {
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64).cast());
                }
            }
            // SAFETY: block k (and k + 1 when `two`) of row `r0 + r`.
            let (codes, d) = unsafe {
                let d0 = block_scale(p);
                let d01 = if two {
                    _mm_unpacklo_ps(d0, block_scale(p.add(bb)))
                } else {
                    d0
                };
                (
                    codes_zmm::<F>(p, bb, two),
                    _mm512_permutexvar_ps(pick, _mm512_castps128_ps512(d01)),
                )
            };
            for t in 0..T {
                let dot = _mm512_dpbusd_epi32(c[t], codes, a[t]);
                // The activation scale is broadcast from memory here rather than held in a
                // register: a 4 × 4 tile already uses 24 of the 32 vector registers.
                let s = if PB {
                    _mm512_mul_ps(
                        d,
                        _mm512_set1_ps(acts.scales[(t0 + t) * acts.blocks + k / 8]),
                    )
                } else {
                    d
                };
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[r][t]);
            }
        }
        k += 2;
    }
    for r in 0..R {
        for t in 0..T {
            let v = acc[r][t];
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            let s8 = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
            y.set(t0 + t, r0 + r, finish::<PB>(s8, acts, t0 + t));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2: one block per 256-bit register, even and odd blocks in separate accumulators.

/// `Σ₄ w·a` per i32 lane of one block (exact) on AVX2. `q8_0` moves `w`'s sign onto `a`
/// (`|w| ≤ 128` keeps `vpmaddubsw` from saturating); `q4_0` multiplies the nibbles and adds
/// `c = −8·Σ₄a`.
///
/// # Safety
/// `p` must point to a whole block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_dot_avx2<const F: u8>(p: *const u8, a: __m256i, c: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    // SAFETY: block bytes `2..34` (q8_0) or `2..18` (q4_0).
    unsafe {
        if F == Q8 {
            let w = _mm256_loadu_si256(p.add(2).cast());
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
            _mm256_madd_epi16(pairs, ones)
        } else {
            let x = _mm_loadu_si128(p.add(2).cast());
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(x, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), mask);
            let u = _mm256_set_m128i(hi, lo);
            _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(u, a), ones), c)
        }
    }
}

/// Block `k`'s 32 int8 activations of each of `T` tokens, and for `q4_0` the correction
/// `c = −8·Σ₄a` that [`block_dot_avx2`] adds (zero for `q8_0`).
///
/// # Safety
/// Block `k` (bytes `32k..32k + 32`) lies inside every token run `ap[t]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_acts_avx2<const F: u8, const T: usize>(
    ap: &[*const i8; T],
    k: usize,
) -> ([__m256i; T], [__m256i; T]) {
    let mut a = [_mm256_setzero_si256(); T];
    let mut c = [_mm256_setzero_si256(); T];
    for t in 0..T {
        // SAFETY: the caller's contract.
        a[t] = unsafe { _mm256_loadu_si256(ap[t].add(32 * k).cast()) };
        if F == Q4 {
            let eights = _mm256_maddubs_epi16(_mm256_set1_epi8(8), a[t]);
            let sum = _mm256_madd_epi16(eights, _mm256_set1_epi16(1));
            c[t] = _mm256_sub_epi32(_mm256_setzero_si256(), sum);
        }
    }
    (a, c)
}

/// `q8_0`/`q4_0` × int8 on a tile of `R` rows × `T` tokens with 256-bit vectors.
///
/// # Safety
/// AVX2, FMA, F16C; `r0 + R <= rows`, `t0 + T <= tokens`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const F: u8, const PB: bool, const R: usize, const T: usize>(
    w: &Matrix,
    acts: &Int8Acts,
    r0: usize,
    t0: usize,
    y: &mut StridedOut,
) {
    let Tile {
        bb,
        nb,
        rs,
        prefetch,
        ahead,
        ap,
    } = Tile::<R, T>::new(w, acts, r0, t0);
    // [even blocks, odd blocks] per output.
    let mut acc = [[[_mm256_setzero_ps(); 2]; T]; R];
    for k in 0..nb {
        // SAFETY: block k's 32 activations lie inside every zero-padded token.
        let (a, c) = unsafe { block_acts_avx2::<F, T>(&ap, k) };
        let mut sa = [_mm256_setzero_ps(); T];
        if PB {
            for t in 0..T {
                sa[t] = _mm256_set1_ps(acts.scales[(t0 + t) * acts.blocks + k / 8]);
            }
        }
        for r in 0..R {
            let p = rs[r].wrapping_add(k * bb);
            if prefetch {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
            }
            // SAFETY: block k of row `r0 + r`.
            let d = unsafe { _mm256_broadcastss_ps(block_scale(p)) };
            for t in 0..T {
                // SAFETY: as above.
                let dot = unsafe { block_dot_avx2::<F>(p, a[t], c[t]) };
                let s = if PB { _mm256_mul_ps(d, sa[t]) } else { d };
                let lane = &mut acc[r][t][k % 2];
                *lane = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, *lane);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            let s8 = _mm256_add_ps(acc[r][t][0], acc[r][t][1]);
            y.set(t0 + t, r0 + r, finish::<PB>(s8, acts, t0 + t));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prefill: the blockwise order of `scalar::q32_row_i8_blockwise`.

/// `q8_0`/`q4_0` × int8 prefill in [`scalar::q32_row_i8_blockwise`](super::scalar)'s order:
/// token `t`, row `r` goes to the view's `(t, r)` (a part of a product split by rows writes
/// only its own rows of each token). AVX-512 VNNI runs weight panels, AVX2 register tiles.
///
/// # Safety
/// As [`gemm_i8`]; `w.cols() == acts.cols`, and `y` is a view of `acts.tokens` runs of
/// `w.rows()` rows.
pub unsafe fn gemm_i8_prefill(isa: Isa, w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
    if acts.tokens == 0 || w.rows() == 0 {
        return;
    }
    debug_assert!(y.rows() == w.rows());
    let out = Out {
        y: y.token_ptr(0),
        stride: y.stride(),
    };
    // SAFETY: the caller guarantees the features of `isa` and the shapes; the view covers
    // rows `0..w.rows()` of `acts.tokens` runs `y.stride()` apart, which `&mut y` holds alone.
    unsafe { dispatch!(isa, panels_vnni, blockwise_avx2, w, acts, out) }
}

/// Where prefill results go: token `t`, row `r` at `y + t·stride + r`.
#[derive(Clone, Copy)]
struct Out {
    y: *mut f32,
    stride: usize,
}

/// Whether block `k` (of `nb` per row) closes a 256-activation scale group.
#[inline(always)]
fn closes_group(k: usize, nb: usize) -> bool {
    k % 8 == 7 || k + 1 == nb
}

/// Rows of one weight panel: one per i32 lane of a zmm register.
const PANEL_ROWS: usize = 16;

/// Blocks of one panel chunk. A multiple of 8, so chunks start on 256-activation scale groups;
/// 32 blocks of two panels are 36 KiB, which stay in L1/L2 while every token passes.
const CHUNK_BLOCKS: usize = 32;

/// Tokens whose per-block activation sums are computed at once (one build of each panel chunk
/// serves them all); 16 KiB of sums.
const TOKEN_CHUNK: usize = 128;

/// Tokens of one register tile: 2 panels × 6 tokens × (i32 block sum + f32 chain) = 24
/// accumulators, plus two weight vectors and one broadcast activation group, of 32 zmm.
const TILE_TOKENS: usize = 6;

/// Blocks `k0..k0 + kb` of two 16-row panels (32 rows), laid out for `vpdpbusd`: `codes[j][p][g]`
/// is one zmm whose dword `r` holds the unsigned codes (`q8_0`: `w + 128`; `q4_0`: `w + 8`)
/// of weights `4g..4g + 4` of block `k0 + j` of row `16p + r`, so a token's four activations,
/// broadcast, meet sixteen rows in one instruction and every lane sums one row. `d[j][p]`
/// holds the rows' block scales (0 for rows past the matrix).
#[repr(C, align(64))]
struct PanelChunk {
    codes: [[[[u8; 64]; 8]; 2]; CHUNK_BLOCKS],
    d: [[[f32; PANEL_ROWS]; 2]; CHUNK_BLOCKS],
}

/// Fills `chunk` with blocks `k0..k0 + kb` of rows `r0..r0 + 32` (rows past `rows` get scale 0
/// and are never stored). Two blocks of sixteen rows are one 16 × 16 dword transpose.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C; `k0 + kb <= ` the row's blocks, `kb <= CHUNK_BLOCKS`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn build_chunk<const F: u8>(
    w: &Matrix,
    r0: usize,
    k0: usize,
    kb: usize,
    chunk: &mut PanelChunk,
) {
    let (bb, row_bytes) = (w.format().block_bytes(), w.row_bytes());
    // Byte offsets of sixteen consecutive rows (rows are contiguous, `row_bytes` apart; 15
    // rows of any matrix that fits in memory are far below 2³¹ bytes).
    let row_offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(row_bytes as i32),
    );
    for p in 0..2 {
        let first = r0 + PANEL_ROWS * p;
        let nr = w.rows().saturating_sub(first).min(PANEL_ROWS);
        let mask = ((1u32 << nr) - 1) as __mmask16;
        // Block `k0` of row `first` (only dereferenced for rows that exist).
        let base = w.data().as_ptr().wrapping_add(first * row_bytes + k0 * bb);
        let mut j = 0;
        while j < kb {
            let two = j + 1 < kb;
            let mut v = [_mm512_setzero_si512(); PANEL_ROWS];
            for r in 0..nr {
                // SAFETY: blocks `k0 + j` (and `k0 + j + 1` when `two`) of row `first + r`
                // exist (caller).
                v[r] = unsafe { codes_zmm::<F>(base.add(r * row_bytes + j * bb), bb, two) };
            }
            let tr = transpose16(&v);
            for h in 0..(1 + usize::from(two)) {
                // SAFETY: `j + h < kb <= CHUNK_BLOCKS`: aligned 64-byte rows of `chunk`; the
                // gather reads the first four bytes (scale and two code bytes) of block
                // `k0 + j + h` of the rows in `mask` only.
                unsafe {
                    for g in 0..8 {
                        let dst = chunk.codes[j + h][p][g].as_mut_ptr();
                        _mm512_store_si512(dst.cast(), tr[8 * h + g]);
                    }
                    let words = _mm512_mask_i32gather_epi32::<1>(
                        _mm512_setzero_si512(),
                        mask,
                        row_offsets,
                        base.wrapping_add((j + h) * bb).cast(),
                    );
                    let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words));
                    _mm512_store_ps(chunk.d[j + h][p].as_mut_ptr(), d);
                }
            }
            j += 2;
        }
    }
}

/// Tokens `t0..t0 + T` against blocks `k0..k0 + kb` of the panel chunk of rows `r0..r0 + 32`.
/// Per block, each (panel, token) sums its eight `vpdpbusd` steps exactly in i32, starting
/// from `corr` (`−offset·Σ₃₂a`, which removes the code offset), then adds the sum to its
/// lane's f32 chain with one FMA by the rows' scales. `PerBlock` folds the chain into `y`
/// at the end of each scale group; `PerToken` keeps it in `y` between chunks and scales it
/// after the last.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C; tokens `t0..t0 + T` exist in `acts`; `corr` holds
/// `T` rows of `CHUNK_BLOCKS` sums for these tokens and blocks; `out` is valid for the rows of
/// `masks` of these tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn panel_tile<const PB: bool, const T: usize>(
    chunk: &PanelChunk,
    (k0, kb, nb): (usize, usize, usize),
    corr: &[i32],
    acts: &Int8Acts,
    t0: usize,
    out: Out,
    r0: usize,
    masks: [__mmask16; 2],
) {
    // SAFETY: activation reads stay inside the zero-padded tokens (block `k0 + j < nb`);
    // `y` accesses are masked to rows inside the matrix, and their addresses wrap (a
    // masked-off lane is never touched).
    unsafe {
        let mut ap = [core::ptr::null::<i8>(); T];
        let mut yp = [[core::ptr::null_mut::<f32>(); 2]; T];
        for t in 0..T {
            ap[t] = acts.token(t0 + t).as_ptr().add(32 * k0);
            for p in 0..2 {
                yp[t][p] = out
                    .y
                    .wrapping_add((t0 + t) * out.stride + r0 + PANEL_ROWS * p);
            }
        }
        let mut chain = [[_mm512_setzero_ps(); 2]; T];
        if !PB && k0 > 0 {
            for t in 0..T {
                for p in 0..2 {
                    chain[t][p] = _mm512_maskz_loadu_ps(masks[p], yp[t][p]);
                }
            }
        }
        for j in 0..kb {
            let mut acc = [[_mm512_setzero_si512(); 2]; T];
            for t in 0..T {
                let c = _mm512_set1_epi32(corr[t * CHUNK_BLOCKS + j]);
                acc[t] = [c, c];
            }
            let codes = &chunk.codes[j];
            for g in 0..8 {
                let w0 = _mm512_load_si512(codes[0][g].as_ptr().cast());
                let w1 = _mm512_load_si512(codes[1][g].as_ptr().cast());
                for t in 0..T {
                    let a =
                        _mm512_set1_epi32(ap[t].add(32 * j + 4 * g).cast::<i32>().read_unaligned());
                    acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], w0, a);
                    acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], w1, a);
                }
            }
            let d = [
                _mm512_load_ps(chunk.d[j][0].as_ptr()),
                _mm512_load_ps(chunk.d[j][1].as_ptr()),
            ];
            for t in 0..T {
                for p in 0..2 {
                    let isum = _mm512_cvtepi32_ps(acc[t][p]);
                    chain[t][p] = _mm512_fmadd_ps(isum, d[p], chain[t][p]);
                }
            }
            let k = k0 + j;
            if PB && closes_group(k, nb) {
                for t in 0..T {
                    let s = _mm512_set1_ps(acts.scales[(t0 + t) * acts.blocks + k / 8]);
                    for p in 0..2 {
                        let prev = if k < 8 {
                            _mm512_setzero_ps()
                        } else {
                            _mm512_maskz_loadu_ps(masks[p], yp[t][p])
                        };
                        let folded = _mm512_fmadd_ps(chain[t][p], s, prev);
                        _mm512_mask_storeu_ps(yp[t][p], masks[p], folded);
                        chain[t][p] = _mm512_setzero_ps();
                    }
                }
            }
        }
        if !PB {
            let last = k0 + kb == nb;
            for t in 0..T {
                let s = _mm512_set1_ps(acts.scales[t0 + t]);
                for p in 0..2 {
                    let v = if last {
                        _mm512_mul_ps(chain[t][p], s)
                    } else {
                        chain[t][p]
                    };
                    _mm512_mask_storeu_ps(yp[t][p], masks[p], v);
                }
            }
        }
    }
}

/// Prefetches blocks `k0..k0 + kb` of row `r` into L2 (a prefetch never faults).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn prefetch_blocks(w: &Matrix, r: usize, k0: usize, kb: usize) {
    let bb = w.format().block_bytes();
    let p = w.row(r).unwrap_or(&[]).as_ptr().wrapping_add(k0 * bb);
    for line in (0..kb * bb).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(line).cast());
    }
}

/// Prefill on AVX-512 VNNI: for each chunk of [`TOKEN_CHUNK`] tokens and [`CHUNK_BLOCKS`]
/// blocks, the tokens' per-block offset corrections are computed once; then each pair of
/// 16-row panels is unpacked once into a [`PanelChunk`] and swept by every token in register
/// tiles of [`TILE_TOKENS`]. No horizontal reductions: every lane is one (row, token) output.
///
/// # Safety
/// As [`gemm_i8_prefill`] (AVX-512 VNNI).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panels_vnni<const F: u8, const PB: bool>(w: &Matrix, acts: &Int8Acts, out: Out) {
    let (rows, n) = (w.rows(), acts.tokens);
    let nb = w.row_bytes() / w.format().block_bytes();
    // The code offset: `q8_0` codes are `w + 128`, `q4_0` nibbles `w + 8`.
    let off: i32 = if F == Q8 { 128 } else { 8 };
    if nb == 0 {
        // No columns: every output is the reference's empty sum, +0.
        for t in 0..n {
            // SAFETY: token `t`'s `rows` outputs are inside `y` (caller).
            unsafe { core::slice::from_raw_parts_mut(out.y.add(t * out.stride), rows).fill(0.0) };
        }
        return;
    }
    let mut chunk = PanelChunk {
        codes: [[[[0; 64]; 8]; 2]; CHUNK_BLOCKS],
        d: [[[0.0; PANEL_ROWS]; 2]; CHUNK_BLOCKS],
    };
    let mut corr = [0i32; TOKEN_CHUNK * CHUNK_BLOCKS];
    for tc0 in (0..n).step_by(TOKEN_CHUNK) {
        let tcn = (n - tc0).min(TOKEN_CHUNK);
        for k0 in (0..nb).step_by(CHUNK_BLOCKS) {
            let kb = (nb - k0).min(CHUNK_BLOCKS);
            for t in 0..tcn {
                let a = &acts.token(tc0 + t)[32 * k0..32 * (k0 + kb)];
                for (j, aj) in a.chunks_exact(32).enumerate() {
                    let sum: i32 = aj.iter().map(|&v| i32::from(v)).sum();
                    corr[t * CHUNK_BLOCKS + j] = -off * sum;
                }
            }
            for r0 in (0..rows).step_by(2 * PANEL_ROWS) {
                let masks = [0, 1].map(|p| {
                    let nr = rows.saturating_sub(r0 + PANEL_ROWS * p).min(PANEL_ROWS);
                    ((1u32 << nr) - 1) as __mmask16
                });
                // SAFETY: blocks `k0..k0 + kb` of rows `r0..` exist; tiles cover tokens of
                // this chunk, whose sums `corr` holds from row `t0 − tc0`.
                unsafe {
                    build_chunk::<F>(w, r0, k0, kb, &mut chunk);
                    let blocks = (k0, kb, nb);
                    // The next panel pair to build (the first one of the next block chunk,
                    // or of the next token chunk, after the last rows) is fetched into L2 a
                    // few rows per tile, so its build does not wait on memory.
                    let (next_r0, next_k0) = if r0 + 2 * PANEL_ROWS < rows {
                        (r0 + 2 * PANEL_ROWS, k0)
                    } else if k0 + CHUNK_BLOCKS < nb {
                        (0, k0 + CHUNK_BLOCKS)
                    } else {
                        (0, 0)
                    };
                    let next_kb = (nb - next_k0).min(CHUNK_BLOCKS);
                    let next_end = (next_r0 + 2 * PANEL_ROWS).min(rows);
                    let per_tile = (2 * PANEL_ROWS).div_ceil(tcn.div_ceil(TILE_TOKENS));
                    let mut next_row = next_r0;
                    let mut t0 = tc0;
                    while t0 < tc0 + tcn {
                        let tt = (tc0 + tcn - t0).min(TILE_TOKENS);
                        for _ in 0..per_tile {
                            if next_row < next_end {
                                prefetch_blocks(w, next_row, next_k0, next_kb);
                                next_row += 1;
                            }
                        }
                        let c = &corr[(t0 - tc0) * CHUNK_BLOCKS..];
                        match tt {
                            1 => panel_tile::<PB, 1>(&chunk, blocks, c, acts, t0, out, r0, masks),
                            2 => panel_tile::<PB, 2>(&chunk, blocks, c, acts, t0, out, r0, masks),
                            3 => panel_tile::<PB, 3>(&chunk, blocks, c, acts, t0, out, r0, masks),
                            4 => panel_tile::<PB, 4>(&chunk, blocks, c, acts, t0, out, r0, masks),
                            5 => panel_tile::<PB, 5>(&chunk, blocks, c, acts, t0, out, r0, masks),
                            _ => panel_tile::<PB, TILE_TOKENS>(
                                &chunk, blocks, c, acts, t0, out, r0, masks,
                            ),
                        }
                        t0 += tt;
                    }
                }
            }
        }
    }
}

/// The eight i32 lanes of each `v[i]` summed into lane `i` (exact: integer adds).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lane_sums8(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // Per 128-bit half h: [v0, v1, v2, v3] (q0) and [v4 .. v7] (q1) summed over half h.
    let q0 = _mm256_hadd_epi32(h01, h23);
    let q1 = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(q0, q1),
        _mm256_permute2x128_si256::<0x31>(q0, q1),
    )
}

/// Rows `r0..r0 + R` × tokens `t0..t0 + T` (`R·T ≤ 8`) in the blockwise order on AVX2: each
/// (row, token) block product is [`block_dot_avx2`]'s eight exact lanes, reduced across lanes
/// for eight outputs at once, so that lane `i = R_i·T + t` of one f32 vector carries output
/// (row `r0 + i / T`, token `t0 + i % T`) through the reference's float chain.
///
/// # Safety
/// AVX2, FMA, F16C; `r0 + R <= rows`, `t0 + T <= tokens`; `out` valid for those outputs.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blockwise_tile_avx2<const F: u8, const PB: bool, const R: usize, const T: usize>(
    w: &Matrix,
    acts: &Int8Acts,
    r0: usize,
    t0: usize,
    out: Out,
) {
    let Tile { bb, nb, rs, ap, .. } = Tile::<R, T>::new(w, acts, r0, t0);
    // Lanes of row 1 (i ≥ T) take the second row's scale.
    let row1 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(T as i32 - 1),
    ));
    let tok_scales = |group: usize| {
        let mut s = [0.0f32; 8];
        for (i, v) in s.iter_mut().enumerate().take(R * T) {
            *v = acts.scales[(t0 + i % T) * acts.blocks + group];
        }
        s
    };
    let mut chain = _mm256_setzero_ps();
    let mut folded = _mm256_setzero_ps();
    for k in 0..nb {
        // SAFETY: block k's 32 activations lie inside every zero-padded token.
        let (a, c) = unsafe { block_acts_avx2::<F, T>(&ap, k) };
        let mut v = [_mm256_setzero_si256(); 8];
        let mut d = [_mm_setzero_ps(); 2];
        for r in 0..R {
            let p = rs[r].wrapping_add(k * bb);
            // SAFETY: block k of row `r0 + r`.
            unsafe {
                d[r] = block_scale(p);
                for t in 0..T {
                    v[r * T + t] = block_dot_avx2::<F>(p, a[t], c[t]);
                }
            }
        }
        let dv = _mm256_blendv_ps(
            _mm256_broadcastss_ps(d[0]),
            _mm256_broadcastss_ps(d[1]),
            row1,
        );
        let isum = _mm256_cvtepi32_ps(lane_sums8(&v));
        chain = _mm256_fmadd_ps(isum, dv, chain);
        if PB && closes_group(k, nb) {
            // SAFETY: eight floats.
            let s = unsafe { _mm256_loadu_ps(tok_scales(k / 8).as_ptr()) };
            folded = _mm256_fmadd_ps(chain, s, folded);
            chain = _mm256_setzero_ps();
        }
    }
    let res = if PB {
        folded
    } else {
        let mut s = [0.0f32; 8];
        for (i, v) in s.iter_mut().enumerate().take(R * T) {
            *v = acts.scales[t0 + i % T];
        }
        // SAFETY: eight floats.
        _mm256_mul_ps(chain, unsafe { _mm256_loadu_ps(s.as_ptr()) })
    };
    let mut lanes = [0.0f32; 8];
    // SAFETY: eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), res) };
    for (i, &v) in lanes.iter().enumerate().take(R * T) {
        // SAFETY: output (row r0 + i / T, token t0 + i % T) exists (caller).
        unsafe {
            *out.y.add((t0 + i % T) * out.stride + r0 + i / T) = v;
        }
    }
}

/// Prefill on AVX2: tiles of 2 rows × 4 tokens (rows outermost, so a row pair's blocks stay in
/// L1 while every token passes) and their leftovers.
///
/// # Safety
/// As [`gemm_i8_prefill`] (AVX2, FMA, F16C).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blockwise_avx2<const F: u8, const PB: bool>(w: &Matrix, acts: &Int8Acts, out: Out) {
    let (rows, n) = (w.rows(), acts.tokens);
    let full_t = n - n % 4;
    // SAFETY: every tile stays inside `rows` × `n`; same features as this function.
    unsafe {
        for r0 in (0..rows).step_by(2) {
            let two_rows = r0 + 1 < rows;
            for t0 in (0..full_t).step_by(4) {
                if two_rows {
                    blockwise_tile_avx2::<F, PB, 2, 4>(w, acts, r0, t0, out);
                } else {
                    blockwise_tile_avx2::<F, PB, 1, 4>(w, acts, r0, t0, out);
                }
            }
            match (two_rows, n - full_t) {
                (_, 0) => {}
                (true, 1) => blockwise_tile_avx2::<F, PB, 2, 1>(w, acts, r0, full_t, out),
                (true, 2) => blockwise_tile_avx2::<F, PB, 2, 2>(w, acts, r0, full_t, out),
                (true, _) => blockwise_tile_avx2::<F, PB, 2, 3>(w, acts, r0, full_t, out),
                (false, 1) => blockwise_tile_avx2::<F, PB, 1, 1>(w, acts, r0, full_t, out),
                (false, 2) => blockwise_tile_avx2::<F, PB, 1, 2>(w, acts, r0, full_t, out),
                (false, _) => blockwise_tile_avx2::<F, PB, 1, 3>(w, acts, r0, full_t, out),
            }
        }
    }
}
