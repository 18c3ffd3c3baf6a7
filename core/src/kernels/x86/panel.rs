//! Block-quantized weights (`tq2_0`, `tq1_0`, `q8_0`, `q4_0`) × f32 activations on AVX-512,
//! for products of several tokens.
//!
//! The row-major kernels ([`super::ternary_f32_avx2`], [`super::q32_avx2`]) keep one vector
//! accumulator per (row, token) and reduce it horizontally at the end. On narrow rows (the
//! bundled tiny Toto's are 64 and 128 wide) that reduction and the tile set-up cost as much as
//! the multiply-adds. Here 32 rows are expanded once into exact f32 weights (`±d` for ternary
//! codes, `q·d` for `q8_0`/`q4_0`: an int8 or nibble times an f16 scale has at most 19
//! significant bits) and stored **transposed**, a column of 32 rows per two zmm registers;
//! every token then accumulates `w[·, c] · x[t, c]` into 32 row lanes with a broadcast of its
//! activation, so each accumulator lane is one finished output and nothing is reduced.
//!
//! Each output is `fma(w_c, x_c, acc)` over `c = 0, 1, …` in order (a column chunk's sum is
//! stored and reloaded exactly): one rounding per term, so the bound in [`super::super`]
//! holds, and a token's result does not depend on the other tokens of the call nor on the
//! tile it falls in.

use super::{Q4, Q8, expand_block, q32_block, transpose16};
use crate::kernels::QBLOCK;
use crate::quant::{Format, Matrix};
use core::arch::x86_64::*;

/// Rows per panel: two zmm registers of outputs.
const ROWS: usize = 32;

/// Columns expanded at once (one ternary block, eight `q8_0`/`q4_0` blocks): the transposed
/// panel is 32 KiB and stays in L1 while every token sweeps it.
const COLS: usize = QBLOCK;

/// Tokens per tile: 12 × 2 accumulators, two weight registers and a broadcast fit the 32 zmm
/// registers.
const TILE: usize = 12;

/// `COLS` columns of `ROWS` rows, column-major.
#[repr(C, align(64))]
struct Panel([[f32; ROWS]; COLS]);

/// Sixteen expanded rows, row-major (the transpose's input).
#[repr(C, align(64))]
struct Rows16([[f32; COLS]; 16]);

/// Whether [`gemm`] handles `format`.
pub(super) fn supports(format: Format) -> bool {
    matches!(
        format,
        Format::Tq2_0 | Format::Tq1_0 | Format::Q8_0 | Format::Q4_0
    )
}

/// `y = x · wᵀ` for `n` tokens. The caller checked shapes and [`supports`].
///
/// # Safety
/// The CPU must support AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let mut panel = Panel([[0.0; ROWS]; COLS]);
    let mut staging = Rows16([[0.0; COLS]; 16]);
    let mut r0 = 0;
    while r0 < rows {
        let nr = ROWS.min(rows - r0);
        let masks = [lane_mask(nr), lane_mask(nr.saturating_sub(16))];
        let mut c0 = 0;
        while c0 < cols {
            let nc = COLS.min(cols - c0);
            for half in 0..2 {
                for r in 0..16 {
                    let out = &mut staging.0[r];
                    match w.row(r0 + 16 * half + r) {
                        Some(row) if 16 * half + r < nr => expand(w.format(), row, c0, nc, out),
                        _ => out.fill(0.0),
                    }
                }
                transpose_into(&staging, &mut panel, half, nc);
            }
            let first = c0 == 0;
            let mut t0 = 0;
            // SAFETY (tiles): tokens `t0..t0 + T <= n`, rows `r0..r0 + nr <= rows` and columns
            // `c0..c0 + nc <= cols` lie inside `x` (`n × cols`) and `y` (`n × rows`), which
            // the caller checked.
            unsafe {
                while n - t0 >= TILE {
                    tile::<TILE>(&panel, nc, x, cols, c0, t0, y, rows, r0, masks, first);
                    t0 += TILE;
                }
                while n - t0 >= 4 {
                    tile::<4>(&panel, nc, x, cols, c0, t0, y, rows, r0, masks, first);
                    t0 += 4;
                }
                while t0 < n {
                    tile::<1>(&panel, nc, x, cols, c0, t0, y, rows, r0, masks, first);
                    t0 += 1;
                }
            }
            c0 += nc;
        }
        r0 += nr;
    }
}

/// The low `n` lanes (of 16).
fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 }
}

/// Weights `c0..c0 + nc` of `row` as exact f32 into `out[..nc]` (`c0` is a multiple of
/// [`COLS`]; entries past `nc` are left as they are and never read).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn expand(fmt: Format, row: &[u8], c0: usize, nc: usize, out: &mut [f32; COLS]) {
    match fmt {
        Format::Tq2_0 | Format::Tq1_0 => expand_block(fmt, row, c0 / QBLOCK, out),
        _ => {
            let bb = fmt.block_bytes();
            for j in 0..nc.div_ceil(32) {
                let at = (c0 / 32 + j) * bb;
                // Whole blocks only: a row holds `cols.div_ceil(32)` blocks (the last padded
                // with zero weights), and `c0 / 32 + j` is below that.
                let Some(blk) = row.get(at..at + bb) else {
                    return;
                };
                // SAFETY: `blk` is one whole block of `fmt`.
                let (v, d) = unsafe {
                    if fmt == Format::Q8_0 {
                        q32_block::<Q8>(blk.as_ptr())
                    } else {
                        q32_block::<Q4>(blk.as_ptr())
                    }
                };
                let dv = _mm256_set1_ps(d);
                for (i, &vi) in v.iter().enumerate() {
                    // SAFETY: 8 floats at `32j + 8i < COLS`.
                    unsafe {
                        _mm256_storeu_ps(
                            out.as_mut_ptr().add(32 * j + 8 * i),
                            _mm256_mul_ps(vi, dv),
                        )
                    };
                }
            }
        }
    }
}

/// Columns `..nc` of the sixteen staged rows into lanes `16·half ..` of the panel.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn transpose_into(staging: &Rows16, panel: &mut Panel, half: usize, nc: usize) {
    for g in 0..nc.div_ceil(16) {
        let mut v = [_mm512_setzero_si512(); 16];
        for (r, vr) in v.iter_mut().enumerate() {
            // SAFETY: columns `16g..16g + 16 <= COLS` of staged row `r`.
            *vr = unsafe { _mm512_loadu_si512(staging.0[r].as_ptr().add(16 * g).cast()) };
        }
        let t = transpose16(&v);
        for (i, &ti) in t.iter().enumerate() {
            // SAFETY: lanes `16·half..16·half + 16` of panel column `16g + i < COLS`.
            unsafe {
                _mm512_storeu_si512(panel.0[16 * g + i].as_mut_ptr().add(16 * half).cast(), ti)
            };
        }
    }
}

/// Tokens `t0..t0 + T` × the panel's rows over its `nc` columns, added to what the previous
/// column chunks stored (`first`: nothing stored yet).
///
/// # Safety
/// Tokens `t0..t0 + T`, columns `c0..c0 + nc` of `x` (row stride `cols`) and the rows selected
/// by `masks` from `r0` in `y` (row stride `rows`) must be in bounds.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const T: usize>(
    panel: &Panel,
    nc: usize,
    x: &[f32],
    cols: usize,
    c0: usize,
    t0: usize,
    y: &mut [f32],
    rows: usize,
    r0: usize,
    masks: [__mmask16; 2],
    first: bool,
) {
    let yp = y.as_mut_ptr();
    let xp = x.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; T];
    // SAFETY: the caller's bounds; masked-off lanes are neither read nor written.
    unsafe {
        if !first {
            for (t, a) in acc.iter_mut().enumerate() {
                let at = yp.add((t0 + t) * rows + r0);
                a[0] = _mm512_maskz_loadu_ps(masks[0], at);
                a[1] = _mm512_maskz_loadu_ps(masks[1], at.add(16));
            }
        }
        for c in 0..nc {
            let col = panel.0[c].as_ptr();
            let w0 = _mm512_load_ps(col);
            let w1 = _mm512_load_ps(col.add(16));
            for (t, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xp.add((t0 + t) * cols + c0 + c));
                a[0] = _mm512_fmadd_ps(w0, xv, a[0]);
                a[1] = _mm512_fmadd_ps(w1, xv, a[1]);
            }
        }
        for (t, a) in acc.iter().enumerate() {
            let at = yp.add((t0 + t) * rows + r0);
            _mm512_mask_storeu_ps(at, masks[0], a[0]);
            _mm512_mask_storeu_ps(at.add(16), masks[1], a[1]);
        }
    }
}
