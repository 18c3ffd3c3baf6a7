//! The portable reference: plain Rust, no `unsafe`, no target features.
//!
//! Every SIMD path is tested against these functions; their arithmetic order defines the
//! results. Integer-activation kernels must match them bit for bit, float-activation kernels
//! within the bound stated in [`super`].

use super::{ActScale, Int8Acts, QBLOCK, StridedOut};
use crate::quant::{Format, Matrix, float, q4_0, q8_0, tq1_0, tq2_0};

/// Dot product of one stored row with `x` (`x.len() == cols`), f32 activations.
pub fn dot_row(format: Format, row: &[u8], x: &[f32]) -> f32 {
    match format {
        Format::F32 => row.chunks_exact(4).zip(x).fold(0.0, |acc, (b, &v)| {
            acc + f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v
        }),
        Format::F16 => row.chunks_exact(2).zip(x).fold(0.0, |acc, (b, &v)| {
            acc + float::f16_to_f32([b[0], b[1]]) * v
        }),
        Format::Bf16 => row.chunks_exact(2).zip(x).fold(0.0, |acc, (b, &v)| {
            acc + float::bf16_to_f32([b[0], b[1]]) * v
        }),
        Format::I8 => row
            .iter()
            .zip(x)
            .fold(0.0, |acc, (&b, &v)| acc + (b as i8) as f32 * v),
        Format::Q8_0 => blocks::<{ q8_0::BLOCK_BYTES }>(row, x, 32, |blk, xs| {
            let (d, q) = q8_0::unpack_block(blk);
            (
                q.iter().zip(xs).fold(0.0, |a, (&q, &v)| a + q as f32 * v),
                d,
            )
        }),
        Format::Q4_0 => blocks::<{ q4_0::BLOCK_BYTES }>(row, x, 32, |blk, xs| {
            let (d, q) = q4_0::unpack_block(blk);
            (
                q.iter().zip(xs).fold(0.0, |a, (&q, &v)| a + q as f32 * v),
                d,
            )
        }),
        Format::Tq2_0 => blocks::<{ tq2_0::BLOCK_BYTES }>(row, x, QBLOCK, |blk, xs| {
            let mut codes = [0u8; QBLOCK];
            tq2_0::unpack_codes_prefix(blk, &mut codes, xs.len());
            (ternary_sum(&codes, xs), tq2_0::scale(blk))
        }),
        Format::Tq1_0 => blocks::<{ tq1_0::BLOCK_BYTES }>(row, x, QBLOCK, |blk, xs| {
            let mut codes = [0u8; QBLOCK];
            tq1_0::unpack_codes_prefix(blk, &mut codes, xs.len());
            (ternary_sum(&codes, xs), tq1_0::scale(blk))
        }),
        Format::U8 => 0.0,
    }
}

/// Sum of `±x` selected by ternary codes: additions and subtractions only.
#[inline(always)]
fn ternary_sum(codes: &[u8; QBLOCK], xs: &[f32]) -> f32 {
    codes.iter().zip(xs).fold(0.0, |a, (&c, &v)| match c {
        0 => a - v,
        2 => a + v,
        _ => a,
    })
}

/// Runs `block` over each stored block with its slice of activations (shorter for the tail),
/// accumulating `partial * scale` in block order.
#[inline(always)]
fn blocks<const B: usize>(
    row: &[u8],
    x: &[f32],
    elems: usize,
    block: impl Fn(&[u8; B], &[f32]) -> (f32, f32),
) -> f32 {
    let mut acc = 0.0f32;
    for (chunk, xs) in row.chunks_exact(B).zip(x.chunks(elems)) {
        if let Ok(blk) = <&[u8; B]>::try_from(chunk) {
            let (partial, d) = block(blk, xs);
            acc += partial * d;
        }
    }
    acc
}

/// `y[r] = Σ_c W[r, c]·x[c]` (shapes already checked by the caller).
pub fn gemv(w: &Matrix, x: &[f32], y: &mut [f32]) {
    for (r, out) in y.iter_mut().enumerate() {
        *out = w.row(r).map_or(0.0, |row| dot_row(w.format(), row, x));
    }
}

/// `n` independent products, token-major (shapes already checked by the caller).
pub fn gemm(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    let (cols, rows) = (w.cols(), w.rows());
    for t in 0..n {
        gemv(
            w,
            &x[t * cols..(t + 1) * cols],
            &mut y[t * rows..(t + 1) * rows],
        );
    }
}

/// Integer sum of one 256-block: `Σ (code − 1)·a` for ternary codes.
#[inline(always)]
pub fn ternary_block_isum(codes: &[u8; QBLOCK], a: &[i8]) -> i32 {
    codes
        .iter()
        .zip(a)
        .fold(0i32, |s, (&c, &v)| s + (c as i32 - 1) * v as i32)
}

/// Per-block integer sums of one stored row against one token's activations, in block order,
/// handed to `sink(block, isum, weight_scale)`.
pub fn row_block_isums(
    format: Format,
    row: &[u8],
    a: &[i8],
    mut sink: impl FnMut(usize, i32, f32),
) {
    match format {
        Format::Tq2_0 => {
            for (b, (chunk, ab)) in row
                .chunks_exact(tq2_0::BLOCK_BYTES)
                .zip(a.chunks_exact(QBLOCK))
                .enumerate()
            {
                if let Ok(blk) = <&[u8; tq2_0::BLOCK_BYTES]>::try_from(chunk) {
                    let mut codes = [0u8; QBLOCK];
                    tq2_0::unpack_codes(blk, &mut codes);
                    sink(b, ternary_block_isum(&codes, ab), tq2_0::scale(blk));
                }
            }
        }
        Format::Tq1_0 => {
            for (b, (chunk, ab)) in row
                .chunks_exact(tq1_0::BLOCK_BYTES)
                .zip(a.chunks_exact(QBLOCK))
                .enumerate()
            {
                if let Ok(blk) = <&[u8; tq1_0::BLOCK_BYTES]>::try_from(chunk) {
                    let mut codes = [0u8; QBLOCK];
                    tq1_0::unpack_codes(blk, &mut codes);
                    sink(b, ternary_block_isum(&codes, ab), tq1_0::scale(blk));
                }
            }
        }
        Format::I8 => {
            for (b, (wb, ab)) in row.chunks(QBLOCK).zip(a.chunks_exact(QBLOCK)).enumerate() {
                let s = wb
                    .iter()
                    .zip(ab)
                    .fold(0i32, |s, (&w, &v)| s + (w as i8) as i32 * v as i32);
                sink(b, s, 1.0);
            }
        }
        _ => {}
    }
}

/// Combines per-block integer sums into one output, in block order. Shared by every ISA so
/// that integer-activation results are bit-identical everywhere.
#[derive(Clone, Copy)]
pub struct Combine {
    acc: f32,
}

impl Default for Combine {
    fn default() -> Self {
        Self::new()
    }
}

impl Combine {
    /// Starts an output.
    #[inline(always)]
    pub fn new() -> Self {
        Combine { acc: 0.0 }
    }

    /// Adds block `b` with integer sum `isum` and weight scale `d`.
    #[inline(always)]
    pub fn add(&mut self, acts: &Int8Acts, token: usize, b: usize, isum: i32, d: f32) {
        match acts.mode {
            ActScale::PerToken => self.acc += isum as f32 * d,
            ActScale::PerBlock => {
                self.acc += isum as f32 * (d * acts.scales[token * acts.blocks + b]);
            }
        }
    }

    /// The finished output.
    #[inline(always)]
    pub fn finish(self, acts: &Int8Acts, token: usize) -> f32 {
        match acts.mode {
            ActScale::PerToken => self.acc * acts.scales[token],
            ActScale::PerBlock => self.acc,
        }
    }
}

/// f32 lane accumulators of the `q8_0`/`q4_0` × int8 order ([`q32_row_i8`]).
pub const Q32_LANES: usize = 16;

/// The 32 signed weights of a `q8_0` or `q4_0` block and its scale.
#[inline(always)]
fn q32_block(format: Format, blk: &[u8]) -> (f32, [i8; 32]) {
    match format {
        Format::Q4_0 => match <&[u8; q4_0::BLOCK_BYTES]>::try_from(blk) {
            Ok(b) => q4_0::unpack_block(b),
            Err(_) => (0.0, [0; 32]),
        },
        _ => match <&[u8; q8_0::BLOCK_BYTES]>::try_from(blk) {
            Ok(b) => q8_0::unpack_block(b),
            Err(_) => (0.0, [0; 32]),
        },
    }
}

/// One `q8_0`/`q4_0` row times token `t` of `acts` (zero-padded to whole 256-blocks, so every
/// 32-block of the row has 32 activations) in the decode order (batches of fewer than
/// [`Q32_PREFILL_MIN_TOKENS`] tokens).
///
/// The order, which every SIMD path reproduces bit for bit: [`Q32_LANES`] f32 accumulators;
/// 32-block `k` splits into eight exact integer partial sums `p_j` (products `4j..4j+4`) and
/// adds each to lane `8·(k mod 2) + j` as `acc = fma(p_j, s, acc)` (one rounding), with
/// `s = d_k` for [`ActScale::PerToken`] and `s = d_k·a_(k/8)` (the block's activation scale)
/// for [`ActScale::PerBlock`]; then lanes are added pairwise at distance 8, 4, 2 and 1, and a
/// per-token activation scale multiplies the result. Sixteen independent lanes are what a
/// 512-bit register holds for two blocks, so SIMD code never reduces horizontally per block.
pub fn q32_row_i8(format: Format, row: &[u8], acts: &Int8Acts, t: usize) -> f32 {
    let bb = format.block_bytes();
    let a = acts.token(t);
    let mut acc = [0.0f32; Q32_LANES];
    for (k, (blk, ak)) in row.chunks_exact(bb).zip(a.chunks_exact(32)).enumerate() {
        let (d, q) = q32_block(format, blk);
        let s = match acts.mode {
            ActScale::PerToken => d,
            ActScale::PerBlock => d * acts.scales[t * acts.blocks + k / 8],
        };
        for j in 0..8 {
            let p: i32 = (4 * j..4 * j + 4).map(|i| q[i] as i32 * ak[i] as i32).sum();
            let lane = &mut acc[8 * (k % 2) + j];
            *lane = libm::fmaf(p as f32, s, *lane);
        }
    }
    let mut width = Q32_LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    match acts.mode {
        ActScale::PerToken => acc[0] * acts.scales[t],
        ActScale::PerBlock => acc[0],
    }
}

/// Activations quantized in batches of at least this many tokens (a prefill) meet `q8_0`/`q4_0`
/// weights in the blockwise order of [`q32_row_i8_blockwise`]; smaller batches (decode) in the
/// sixteen-lane order of [`q32_row_i8`]. The choice depends only on the batch, never on the ISA
/// or the thread count, so every ISA stays bit-identical to this module.
pub const Q32_PREFILL_MIN_TOKENS: usize = 4;

/// One `q8_0`/`q4_0` row times token `t` of `acts` in the prefill ("blockwise") order, which
/// the AVX-512 VNNI weight-panel kernel and the AVX2 prefill tiles reproduce bit for bit.
///
/// Block `k` gives the exact integer `i_k = Σ₃₂ w·a` (`|i_k| < 2²⁴`, so `i_k as f32` is
/// exact). [`ActScale::PerToken`]: `g = fma(i_k, d_k, g)` over all blocks from `g = 0`, and the
/// result is `g · s` (the token's scale). [`ActScale::PerBlock`]: the same chain restarts at 0
/// for each 256-activation group `G` (blocks `8G..8G + 8`, clipped to the row), and each
/// group's `g` is folded as `out = fma(g, s_G, out)` from `out = 0` in group order. One float
/// chain per output means a SIMD lane can hold one (row, token) output and reduce nothing.
pub fn q32_row_i8_blockwise(format: Format, row: &[u8], acts: &Int8Acts, t: usize) -> f32 {
    let bb = format.block_bytes();
    let nb = row.len() / bb;
    let a = acts.token(t);
    let (mut g, mut out) = (0.0f32, 0.0f32);
    for (k, (blk, ak)) in row.chunks_exact(bb).zip(a.chunks_exact(32)).enumerate() {
        let (d, q) = q32_block(format, blk);
        let isum: i32 = q.iter().zip(ak).map(|(&w, &v)| w as i32 * v as i32).sum();
        g = libm::fmaf(isum as f32, d, g);
        if acts.mode == ActScale::PerBlock && (k % 8 == 7 || k + 1 == nb) {
            out = libm::fmaf(g, acts.scales[t * acts.blocks + k / 8], out);
            g = 0.0;
        }
    }
    match acts.mode {
        ActScale::PerToken => g * acts.scales[t],
        ActScale::PerBlock => out,
    }
}

/// Integer-activation product (shapes and format already checked by the caller): `y` holds
/// `acts.tokens()` rows of `w.rows()` (token-major).
pub fn gemm_i8(w: &Matrix, acts: &Int8Acts, y: &mut [f32]) {
    gemm_i8_strided(
        w,
        acts,
        &mut StridedOut::contiguous(y, w.rows(), acts.tokens),
    );
}

/// [`gemm_i8`] into a strided view (one part of a product split by rows).
pub(crate) fn gemm_i8_strided(w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
    let rows = w.rows();
    if matches!(w.format(), Format::Q8_0 | Format::Q4_0) {
        let row_i8 = if acts.batch >= Q32_PREFILL_MIN_TOKENS {
            q32_row_i8_blockwise
        } else {
            q32_row_i8
        };
        for t in 0..acts.tokens {
            for r in 0..rows {
                let v = w.row(r).map_or(0.0, |row| row_i8(w.format(), row, acts, t));
                y.set(t, r, v);
            }
        }
        return;
    }
    for t in 0..acts.tokens {
        let a = acts.token(t);
        for r in 0..rows {
            let mut c = Combine::new();
            if let Some(row) = w.row(r) {
                row_block_isums(w.format(), row, a, |b, s, d| c.add(acts, t, b, s, d));
            }
            y.set(t, r, c.finish(acts, t));
        }
    }
}
