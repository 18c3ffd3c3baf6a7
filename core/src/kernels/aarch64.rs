//! aarch64 NEON kernels.
//!
//! - Ternary × int8: each row-block is unpacked once into signed trits and applied to up to
//!   eight tokens with `sdot` (dot-product extension; `vdotq_s32` is unstable on Rust 1.95, so
//!   the instruction is emitted with `asm!`) or, without it, `smull`/`smull2` + `sadalp`. The
//!   per-block integer sums are combined by the scalar reference's [`Combine`], so results are
//!   bit-identical to [`super::scalar`].
//! - Ternary × f32: each row-block is expanded once into `±d` f32 (exact) and applied to four
//!   tokens with `fmla`; each FMA rounds once like the addition of an exact term, so the bound
//!   in [`super`] holds.
//! - Dense f32: `fmla` with four accumulators; dense i8 widened to f32 (exact) then `fmla`.
//! - `q8_0`/`q4_0` × f32: each 32-block is widened once to exact f32 and applied to up to four
//!   tokens; per block, eight FMAs then one FMA by the block scale (the scalar reference's
//!   `acc += partial·d`), so the bound in [`super`] holds.
//! - `i8` × int8: `sdot` or `smull`/`sadalp` per 256-block, combined by [`Combine`]
//!   (bit-identical). Other formats run the scalar code.
#![allow(unsafe_code)]
// Kernels index several tiles with the same row/token/chunk counters.
#![allow(clippy::needless_range_loop)]

use super::scalar::{self, Combine};
use super::{Int8Acts, Isa, QBLOCK, StridedOut};
use crate::quant::{Format, Matrix, tq1_0, tq2_0};
use core::arch::aarch64::*;
use core::arch::asm;

/// Unpacks row-block `b` of a ternary row into codes (`w + 1`); returns the scale.
#[inline(always)]
fn unpack(fmt: Format, row: &[u8], b: usize, codes: &mut [u8; QBLOCK]) -> f32 {
    if fmt == Format::Tq2_0 {
        let blk: &[u8; tq2_0::BLOCK_BYTES] = row
            .get(b * tq2_0::BLOCK_BYTES..(b + 1) * tq2_0::BLOCK_BYTES)
            .and_then(|s| s.try_into().ok())
            .unwrap_or(&[0u8; tq2_0::BLOCK_BYTES]);
        tq2_0::unpack_codes(blk, codes);
        tq2_0::scale(blk)
    } else {
        let blk: &[u8; tq1_0::BLOCK_BYTES] = row
            .get(b * tq1_0::BLOCK_BYTES..(b + 1) * tq1_0::BLOCK_BYTES)
            .and_then(|s| s.try_into().ok())
            .unwrap_or(&[0u8; tq1_0::BLOCK_BYTES]);
        tq1_0::unpack_codes(blk, codes);
        tq1_0::scale(blk)
    }
}

/// Float-activation products. Caller checked shapes.
///
/// # Safety
/// The CPU must support NEON.
pub unsafe fn gemm(isa: Isa, w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    let _ = isa;
    // SAFETY: the caller guarantees NEON.
    unsafe {
        match w.format() {
            Format::Tq2_0 | Format::Tq1_0 => ternary_f32(w, x, n, y),
            Format::F32 => dense_f32(w, x, n, y),
            Format::I8 => dense_i8(w, x, n, y),
            Format::Q8_0 => q32_f32::<Q8>(w, x, n, y),
            Format::Q4_0 => q32_f32::<Q4>(w, x, n, y),
            _ => scalar::gemm(w, x, n, y),
        }
    }
}

/// Integer-activation products. Caller checked shapes and format.
///
/// # Safety
/// The CPU must support NEON, and the dot-product extension for `Isa::NeonDotprod`.
pub unsafe fn gemm_i8(isa: Isa, w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
    if w.format() == Format::I8 {
        // SAFETY: the caller guarantees the features of `isa`.
        unsafe {
            if isa == Isa::NeonDotprod {
                i8_i8_dotprod(w, acts, y)
            } else {
                i8_i8_neon(w, acts, y)
            }
        }
        return;
    }
    if !matches!(w.format(), Format::Tq2_0 | Format::Tq1_0) {
        return scalar::gemm_i8_strided(w, acts, y);
    }
    // SAFETY: the caller guarantees the features of `isa`.
    unsafe {
        if isa == Isa::NeonDotprod {
            ternary_i8_dotprod(w, acts, y)
        } else {
            ternary_i8_neon(w, acts, y)
        }
    }
}

/// `acc += Σ₄ a·b` per i32 lane with one `sdot`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction of the dot-product extension, which this function's
    // target features require.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `acc += pairwise Σ a·b` per i32 lane with base NEON (`smull`, `smull2`, `sadalp`).
#[target_feature(enable = "neon")]
#[inline]
fn dot_neon(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// Tokens handled per unpacked row-block.
const TOKENS: usize = 8;

macro_rules! ternary_i8 {
    ($name:ident, $features:literal, $dot:ident) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
            let rows = w.rows();
            let mut codes = [0u8; QBLOCK];
            let mut trits = [0i8; QBLOCK];
            for r in 0..rows {
                let row = w.row(r).unwrap_or(&[]);
                let mut t0 = 0;
                while t0 < acts.tokens {
                    let nt = TOKENS.min(acts.tokens - t0);
                    let mut comb = [Combine::new(); TOKENS];
                    for b in 0..acts.blocks {
                        let d = unpack(w.format(), row, b, &mut codes);
                        for (t, c) in trits.iter_mut().zip(&codes) {
                            *t = *c as i8 - 1;
                        }
                        for (t, cb) in comb.iter_mut().enumerate().take(nt) {
                            let a = &acts.token(t0 + t)[b * QBLOCK..(b + 1) * QBLOCK];
                            let mut acc = vdupq_n_s32(0);
                            for c in 0..QBLOCK / 16 {
                                // SAFETY: 16 bytes inside 256-byte slices.
                                let (wv, av) = unsafe {
                                    (
                                        vld1q_s8(trits.as_ptr().add(16 * c)),
                                        vld1q_s8(a.as_ptr().add(16 * c)),
                                    )
                                };
                                acc = $dot(acc, wv, av);
                            }
                            cb.add(acts, t0 + t, b, vaddvq_s32(acc), d);
                        }
                    }
                    for (t, cb) in comb.iter().enumerate().take(nt) {
                        y.set(t0 + t, r, cb.finish(acts, t0 + t));
                    }
                    t0 += nt;
                }
            }
        }
    };
}

ternary_i8!(ternary_i8_dotprod, "neon,dotprod", sdot);
ternary_i8!(ternary_i8_neon, "neon", dot_neon);

#[target_feature(enable = "neon")]
unsafe fn ternary_f32(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    const T: usize = 4;
    let (rows, cols) = (w.rows(), w.cols());
    let blocks = cols.div_ceil(QBLOCK);
    let mut codes = [0u8; QBLOCK];
    let mut wf = [0.0f32; QBLOCK];
    for r in 0..rows {
        let row = w.row(r).unwrap_or(&[]);
        let mut t0 = 0;
        while t0 < n {
            let nt = T.min(n - t0);
            let mut acc = [vdupq_n_f32(0.0); T];
            let mut tail = [0.0f32; T];
            for b in 0..blocks {
                let d = unpack(w.format(), row, b, &mut codes);
                for (o, &c) in wf.iter_mut().zip(&codes) {
                    *o = (c as i8 - 1) as f32 * d;
                }
                let start = b * QBLOCK;
                let valid = QBLOCK.min(cols - start);
                let full4 = valid / 4;
                for t in 0..nt {
                    let xt = &x[(t0 + t) * cols + start..(t0 + t) * cols + start + valid];
                    for c in 0..full4 {
                        // SAFETY: `4c + 4 <= valid` floats of both slices.
                        unsafe {
                            acc[t] = vfmaq_f32(
                                acc[t],
                                vld1q_f32(wf.as_ptr().add(4 * c)),
                                vld1q_f32(xt.as_ptr().add(4 * c)),
                            );
                        }
                    }
                    for i in full4 * 4..valid {
                        tail[t] += wf[i] * xt[i];
                    }
                }
            }
            for t in 0..nt {
                y[(t0 + t) * rows + r] = vaddvq_f32(acc[t]) + tail[t];
            }
            t0 += nt;
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dense_f32(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    let full16 = cols / 16;
    for t in 0..n {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let row = w.row(r).unwrap_or(&[]);
            let mut acc = [vdupq_n_f32(0.0); 4];
            for c in 0..full16 {
                for (k, a) in acc.iter_mut().enumerate() {
                    // SAFETY: elements `16c + 4k .. +4` lie inside the row (4 bytes each, any
                    // alignment: `vld1q_f32` has no alignment requirement) and inside `xt`.
                    unsafe {
                        let wv = vld1q_f32(row.as_ptr().add(4 * (16 * c + 4 * k)).cast());
                        *a = vfmaq_f32(*a, wv, vld1q_f32(xt.as_ptr().add(16 * c + 4 * k)));
                    }
                }
            }
            let s = vaddvq_f32(vaddq_f32(
                vaddq_f32(acc[0], acc[1]),
                vaddq_f32(acc[2], acc[3]),
            ));
            let tail = scalar::dot_row(Format::F32, &row[full16 * 64..], &xt[full16 * 16..]);
            y[t * rows + r] = s + tail;
        }
    }
}

const Q8: u8 = 0;
const Q4: u8 = 1;

/// Tokens sharing each widened weight block.
const FLOAT_TOKENS: usize = 4;

/// The 32 values of a `q8_0` (`F = Q8`) or `q4_0` block as eight exact f32 vectors in weight
/// order, and the block scale.
///
/// # Safety
/// `blk` must point to a whole block (34 or 18 bytes).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn q32_block<const F: u8>(blk: *const u8) -> ([float32x4_t; 8], f32) {
    // SAFETY: the caller guarantees the block's bytes are readable.
    unsafe {
        let d = crate::quant::float::f16_to_f32([*blk, *blk.add(1)]);
        let (a, b) = if F == Q8 {
            (vld1q_s8(blk.add(2).cast()), vld1q_s8(blk.add(18).cast()))
        } else {
            let v = vld1q_u8(blk.add(2));
            let eight = vdupq_n_s8(8);
            (
                vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), eight),
                vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight),
            )
        };
        let mut out = [vdupq_n_f32(0.0); 8];
        for (h, v) in [a, b].into_iter().enumerate() {
            let lo = vmovl_s8(vget_low_s8(v));
            let hi = vmovl_high_s8(v);
            out[4 * h] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
            out[4 * h + 1] = vcvtq_f32_s32(vmovl_high_s16(lo));
            out[4 * h + 2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
            out[4 * h + 3] = vcvtq_f32_s32(vmovl_high_s16(hi));
        }
        (out, d)
    }
}

#[target_feature(enable = "neon")]
unsafe fn q32_f32<const F: u8>(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    const T: usize = FLOAT_TOKENS;
    let (rows, cols, fmt) = (w.rows(), w.cols(), w.format());
    let bb = fmt.block_bytes();
    let full = cols / 32;
    for r in 0..rows {
        let row = w.row(r).unwrap_or(&[]);
        let mut t0 = 0;
        while t0 < n {
            let nt = T.min(n - t0);
            let mut total = [vdupq_n_f32(0.0); T];
            for b in 0..full {
                // SAFETY: block `b < full` of a checked row.
                let (wv, d) = unsafe { q32_block::<F>(row.as_ptr().add(b * bb)) };
                for t in 0..nt {
                    // SAFETY: activations `32b .. 32b + 32 <= cols` of token `t0 + t`.
                    unsafe {
                        let xp = x.as_ptr().add((t0 + t) * cols + 32 * b);
                        let mut part = vmulq_f32(wv[0], vld1q_f32(xp));
                        for k in 1..8 {
                            part = vfmaq_f32(part, wv[k], vld1q_f32(xp.add(4 * k)));
                        }
                        total[t] = vfmaq_n_f32(total[t], part, d);
                    }
                }
            }
            for t in 0..nt {
                let xt = &x[(t0 + t) * cols..(t0 + t + 1) * cols];
                // The partial last block reads only `cols` activations.
                let tail = scalar::dot_row(fmt, &row[full * bb..], &xt[full * 32..]);
                y[(t0 + t) * rows + r] = vaddvq_f32(total[t]) + tail;
            }
            t0 += nt;
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dense_i8(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    const T: usize = FLOAT_TOKENS;
    let (rows, cols) = (w.rows(), w.cols());
    let full8 = cols / 8;
    for r in 0..rows {
        let row = w.row(r).unwrap_or(&[]);
        let mut t0 = 0;
        while t0 < n {
            let nt = T.min(n - t0);
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for c in 0..full8 {
                // SAFETY: bytes `8c .. 8c + 8 <= cols` of the row.
                let v = vmovl_s8(unsafe { vld1_s8(row.as_ptr().add(8 * c).cast()) });
                let lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(v)));
                let hi = vcvtq_f32_s32(vmovl_high_s16(v));
                for t in 0..nt {
                    // SAFETY: activations `8c .. 8c + 8 <= cols` of token `t0 + t`.
                    unsafe {
                        let xp = x.as_ptr().add((t0 + t) * cols + 8 * c);
                        acc[t][0] = vfmaq_f32(acc[t][0], lo, vld1q_f32(xp));
                        acc[t][1] = vfmaq_f32(acc[t][1], hi, vld1q_f32(xp.add(4)));
                    }
                }
            }
            for t in 0..nt {
                let xt = &x[(t0 + t) * cols..(t0 + t + 1) * cols];
                let tail = scalar::dot_row(Format::I8, &row[full8 * 8..], &xt[full8 * 8..]);
                y[(t0 + t) * rows + r] = vaddvq_f32(vaddq_f32(acc[t][0], acc[t][1])) + tail;
            }
            t0 += nt;
        }
    }
}

macro_rules! i8_i8 {
    ($name:ident, $features:literal, $dot:ident) => {
        /// Dense `i8` × int8: exact integer sums per 256-block (the partial last block of an
        /// unpadded row in scalar code), combined in block order by [`Combine`].
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
            let (rows, cols) = (w.rows(), w.cols());
            let full = cols / QBLOCK;
            for r in 0..rows {
                let row = w.row(r).unwrap_or(&[]);
                let mut t0 = 0;
                while t0 < acts.tokens {
                    let nt = TOKENS.min(acts.tokens - t0);
                    let mut comb = [Combine::new(); TOKENS];
                    for b in 0..acts.blocks {
                        for (t, cb) in comb.iter_mut().enumerate().take(nt) {
                            let a = &acts.token(t0 + t)[b * QBLOCK..(b + 1) * QBLOCK];
                            let isum = if b < full {
                                let mut acc = vdupq_n_s32(0);
                                for c in 0..QBLOCK / 16 {
                                    // SAFETY: 16 bytes inside block `b < full` of the row and
                                    // inside the 256-byte activation slice.
                                    let (wv, av) = unsafe {
                                        (
                                            vld1q_s8(row.as_ptr().add(b * QBLOCK + 16 * c).cast()),
                                            vld1q_s8(a.as_ptr().add(16 * c)),
                                        )
                                    };
                                    acc = $dot(acc, wv, av);
                                }
                                vaddvq_s32(acc)
                            } else {
                                row[b * QBLOCK..]
                                    .iter()
                                    .zip(a)
                                    .fold(0i32, |s, (&w, &v)| s + (w as i8) as i32 * v as i32)
                            };
                            cb.add(acts, t0 + t, b, isum, 1.0);
                        }
                    }
                    for (t, cb) in comb.iter().enumerate().take(nt) {
                        y.set(t0 + t, r, cb.finish(acts, t0 + t));
                    }
                    t0 += nt;
                }
            }
        }
    };
}

i8_i8!(i8_i8_dotprod, "neon,dotprod", sdot);
i8_i8!(i8_i8_neon, "neon", dot_neon);
