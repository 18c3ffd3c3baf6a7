//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 VNNI.
//!
//! - Ternary × int8: codes stay unsigned (`w + 1` in `0..=2`) so they feed `vpmaddubsw` (AVX2)
//!   or `vpdpbusd` (VNNI) directly; the `+1` offset is removed per block with the activation
//!   block sums. Tiles of `R` rows × `T` tokens share every unpacked code vector and every
//!   activation load; per-block integer sums are reduced eight at a time with `vphaddd` and
//!   combined lane-wise with exactly the scalar reference's float operations (mul, then add;
//!   never fused), so results are bit-identical to [`super::scalar`].
//! - Float activations: each row-block of weights is expanded once into `±d` (exact) f32 in an
//!   L1 buffer and applied with FMA to `T` tokens. Each FMA rounds once, like the addition of an
//!   exact term `±d·x`, so the bound in [`super`] holds.
//! - Dense f32/f16/bf16: FMA over 8 lanes × 4 accumulators (f16 via F16C).
#![allow(unsafe_code)]
// Kernels index several tiles with the same row/token/chunk counters.
#![allow(clippy::needless_range_loop)]

use super::scalar::{self, Combine};
use super::{ActScale, Int8Acts, Isa, QBLOCK};
use crate::quant::{Format, Matrix, tq1_0, tq2_0};
use core::arch::x86_64::*;

/// Float-activation products. Caller checked shapes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (and AVX-512 F/BW/VL/VNNI for `Isa::Avx512Vnni`).
pub unsafe fn gemm(isa: Isa, w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    // SAFETY: the caller guarantees AVX2 + FMA + F16C.
    unsafe {
        match w.format() {
            Format::Tq2_0 | Format::Tq1_0 if n < GEMM_MIN_TOKENS => {
                for t in 0..n {
                    let xt = &x[t * w.cols()..(t + 1) * w.cols()];
                    let yt = &mut y[t * w.rows()..(t + 1) * w.rows()];
                    if isa == Isa::Avx512Vnni {
                        ternary_gemv_f32_avx512(w, xt, yt)
                    } else {
                        ternary_gemv_f32_avx2(w, xt, yt)
                    }
                }
            }
            Format::Tq2_0 | Format::Tq1_0 => ternary_f32_avx2(w, x, n, y),
            Format::F32 | Format::F16 | Format::Bf16 => dense_avx2(w, x, n, y),
            _ => scalar::gemm(w, x, n, y),
        }
    }
}

/// Integer-activation products. Caller checked shapes and format.
///
/// # Safety
/// As [`gemm`].
pub unsafe fn gemm_i8(isa: Isa, w: &Matrix, acts: &Int8Acts, y: &mut [f32]) {
    if !matches!(w.format(), Format::Tq2_0 | Format::Tq1_0) {
        return scalar::gemm_i8(w, acts, y);
    }
    // SAFETY: the caller guarantees the features of `isa`.
    unsafe {
        match isa {
            Isa::Avx512Vnni => ternary_i8_vnni(w, acts, y),
            _ => ternary_i8_avx2(w, acts, y),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ternary × int8

/// One 32-byte code vector (`0..=2` per byte) of row-block `blk`, chunk `c` (weights
/// `32c..32c+32`).
#[inline(always)]
fn row_block<const B: usize>(row: &[u8], b: usize) -> &[u8; B] {
    // Callers only pass b < blocks of a checked row.
    row[b * B..(b + 1) * B].try_into().unwrap_or(&[0u8; B])
}

macro_rules! ternary_i8_kernel {
    ($name:ident, $tile:ident, $features:literal, $dot:ident, $gemv_r:literal, $gemm_r:literal, $gemm_t:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &Matrix, acts: &Int8Acts, y: &mut [f32]) {
            let rows = w.rows();
            let mut t0 = 0;
            // SAFETY: same features as this function.
            unsafe {
                while t0 + $gemm_t <= acts.tokens && $gemm_t > 1 {
                    $tile::<$gemm_r, $gemm_t>(w, acts, t0, y);
                    t0 += $gemm_t;
                }
                while t0 < acts.tokens {
                    $tile::<$gemv_r, 1>(w, acts, t0, y);
                    t0 += 1;
                }
            }
            let _ = rows;
        }

        /// Tokens `t0..t0+T`, all rows: full `R`-row tiles in SIMD, leftover rows by the
        /// scalar reference (identical integers, identical combine).
        ///
        /// Lane `l` of combiner vector `k` is the (row, token) pair `i = 8k + l = r·T + t`.
        /// Per-lane weight scales, activation block sums and activation scales are gathered
        /// into small tables once per chunk of blocks, so the per-block combine is a few
        /// vector loads.
        #[target_feature(enable = $features)]
        unsafe fn $tile<const R: usize, const T: usize>(
            w: &Matrix,
            acts: &Int8Acts,
            t0: usize,
            y: &mut [f32],
        ) {
            // SAFETY: every raw load below reads 32 bytes inside a checked row-block (66 bytes
            // for tq2_0), a 256-byte code buffer, a token's `blocks·256` padded activations, or
            // an 8-lane table row; the caller guarantees the target features.
            unsafe {
                let rows = w.rows();
                let blocks = acts.blocks;
                let fmt = w.format();
                let per_block = acts.mode == ActScale::PerBlock;
                let mask3 = _mm256_set1_epi8(3);
                let full = rows - rows % R;
                let mut codes_buf = [[0u8; QBLOCK]; R];
                let mut dtab = [[[0u16; 8]; CHUNK]; 2];
                let mut stab = [[[0i32; 8]; CHUNK]; 2];
                let mut ftab = [[[0f32; 8]; CHUNK]; 2];
                let kk = (R * T).div_ceil(8);
                let mut r0 = 0;
                while r0 < full {
                    let mut comb = [_mm256_setzero_ps(); 2];
                    let mut b0 = 0;
                    while b0 < blocks {
                        let nb = CHUNK.min(blocks - b0);
                        for k in 0..kk {
                            for l in 0..8 {
                                let i = 8 * k + l;
                                if i >= R * T {
                                    continue;
                                }
                                let (r, t) = (i / T, i % T);
                                let row = w.row(r0 + r).unwrap_or(&[]);
                                let (bb, off) = match fmt {
                                    Format::Tq2_0 => (tq2_0::BLOCK_BYTES, tq2_0::SCALE_OFFSET),
                                    _ => (tq1_0::BLOCK_BYTES, tq1_0::SCALE_OFFSET),
                                };
                                let sums = acts.token_sums(t0 + t);
                                for j in 0..nb {
                                    let at = (b0 + j) * bb + off;
                                    dtab[k][j][l] = u16::from_le_bytes([row[at], row[at + 1]]);
                                    stab[k][j][l] = sums[b0 + j];
                                    if per_block {
                                        ftab[k][j][l] = acts.token_scales(t0 + t)[b0 + j];
                                    }
                                }
                            }
                        }
                        for j in 0..nb {
                            let b = b0 + j;
                            let mut acc = [[_mm256_setzero_si256(); T]; R];
                            let mut halves = [[_mm256_setzero_si256(); 2]; R];
                            for r in 0..R {
                                let row = w.row(r0 + r).unwrap_or(&[]);
                                if fmt == Format::Tq2_0 {
                                    let blk = row_block::<{ tq2_0::BLOCK_BYTES }>(row, b);
                                    halves[r] = [
                                        _mm256_loadu_si256(blk.as_ptr().cast()),
                                        _mm256_loadu_si256(blk.as_ptr().add(32).cast()),
                                    ];
                                } else {
                                    let blk = row_block::<{ tq1_0::BLOCK_BYTES }>(row, b);
                                    tq1_0::unpack_codes(blk, &mut codes_buf[r]);
                                }
                            }
                            for c in 0..8 {
                                let mut a = [_mm256_setzero_si256(); T];
                                for (t, av) in a.iter_mut().enumerate() {
                                    let at = acts.token(t0 + t);
                                    *av = _mm256_loadu_si256(
                                        at.as_ptr().add(b * QBLOCK + 32 * c).cast(),
                                    );
                                }
                                for r in 0..R {
                                    let codes = if fmt == Format::Tq2_0 {
                                        let v = halves[r][c / 4];
                                        let sh = match c % 4 {
                                            0 => v,
                                            1 => _mm256_srli_epi16::<2>(v),
                                            2 => _mm256_srli_epi16::<4>(v),
                                            _ => _mm256_srli_epi16::<6>(v),
                                        };
                                        _mm256_and_si256(sh, mask3)
                                    } else {
                                        _mm256_loadu_si256(codes_buf[r].as_ptr().add(32 * c).cast())
                                    };
                                    for t in 0..T {
                                        acc[r][t] = $dot(acc[r][t], codes, a[t]);
                                    }
                                }
                            }
                            for k in 0..kk {
                                let mut v = [_mm256_setzero_si256(); 8];
                                for (l, vl) in v.iter_mut().enumerate() {
                                    let i = 8 * k + l;
                                    if i < R * T {
                                        *vl = acc[i / T][i % T];
                                    }
                                }
                                let s01 = _mm256_hadd_epi32(v[0], v[1]);
                                let s23 = _mm256_hadd_epi32(v[2], v[3]);
                                let s45 = _mm256_hadd_epi32(v[4], v[5]);
                                let s67 = _mm256_hadd_epi32(v[6], v[7]);
                                let s0123 = _mm256_hadd_epi32(s01, s23);
                                let s4567 = _mm256_hadd_epi32(s45, s67);
                                let lo = _mm256_permute2x128_si256::<0x20>(s0123, s4567);
                                let hi = _mm256_permute2x128_si256::<0x31>(s0123, s4567);
                                let dot = _mm256_add_epi32(lo, hi);
                                let bsum = _mm256_loadu_si256(stab[k][j].as_ptr().cast());
                                let isum = _mm256_sub_epi32(dot, bsum);
                                let mut scale =
                                    _mm256_cvtph_ps(_mm_loadu_si128(dtab[k][j].as_ptr().cast()));
                                if per_block {
                                    scale =
                                        _mm256_mul_ps(scale, _mm256_loadu_ps(ftab[k][j].as_ptr()));
                                }
                                // Same operations as `Combine::add`: product, then sum; never
                                // fused.
                                let prod = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale);
                                comb[k] = _mm256_add_ps(comb[k], prod);
                            }
                        }
                        b0 += nb;
                    }
                    for (k, &ck) in comb.iter().enumerate().take(kk) {
                        let mut out = [0.0f32; 8];
                        let mut fin = ck;
                        if !per_block {
                            let mut sc = [0.0f32; 8];
                            for (l, sv) in sc.iter_mut().enumerate() {
                                let i = 8 * k + l;
                                if i < R * T {
                                    *sv = acts.token_scales(t0 + i % T)[0];
                                }
                            }
                            fin = _mm256_mul_ps(fin, _mm256_loadu_ps(sc.as_ptr()));
                        }
                        _mm256_storeu_ps(out.as_mut_ptr(), fin);
                        for (l, &v) in out.iter().enumerate() {
                            let i = 8 * k + l;
                            if i < R * T {
                                y[(t0 + i % T) * rows + r0 + i / T] = v;
                            }
                        }
                    }
                    r0 += R;
                }
                for r in full..rows {
                    let row = w.row(r).unwrap_or(&[]);
                    for t in t0..t0 + T {
                        let mut c = Combine::new();
                        scalar::row_block_isums(fmt, row, acts.token(t), |b, s, d| {
                            c.add(acts, t, b, s, d)
                        });
                        y[t * rows + r] = c.finish(acts, t);
                    }
                }
            }
        }
    };
}

/// Blocks whose per-lane scales and sums are gathered into tables at once.
const CHUNK: usize = 32;

/// `acc += Σ₄ u8·i8` per i32 lane with the AVX2 idiom. `vpmaddubsw` cannot saturate here:
/// codes ≤ 2 and |a| ≤ 127 give pair sums ≤ 508.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_avx2(acc: __m256i, codes: __m256i, a: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(codes, a);
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// `acc += Σ₄ u8·i8` per i32 lane with one `vpdpbusd`.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
fn dot_vnni(acc: __m256i, codes: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, codes, a)
}

ternary_i8_kernel!(ternary_i8_avx2, tile_i8_avx2, "avx2,fma", dot_avx2, 8, 4, 2);
ternary_i8_kernel!(
    ternary_i8_vnni,
    tile_i8_vnni,
    "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni",
    dot_vnni,
    8,
    4,
    4
);

// ---------------------------------------------------------------------------------------------
// Ternary × f32

/// Expands one ternary row-block into `±d`/`0` f32 values (exact products).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn expand_block(fmt: Format, row: &[u8], b: usize, out: &mut [f32; QBLOCK]) {
    let mut buf = [0u8; QBLOCK];
    let (codes, d) = codes8(fmt, row, b, &mut buf);
    let one = _mm256_set1_epi8(1);
    let dv = _mm256_set1_ps(d);
    for (c, &cv) in codes.iter().enumerate() {
        let t = _mm256_sub_epi8(cv, one);
        let lanes = [_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t)];
        for (h, &l) in lanes.iter().enumerate() {
            let parts = [l, _mm_srli_si128::<8>(l)];
            for (k, &part) in parts.iter().enumerate() {
                let wv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)), dv);
                // SAFETY: 8 floats inside the 256-float output.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(32 * c + 16 * h + 8 * k), wv) };
            }
        }
    }
}

/// Below this many tokens, ternary f32 products run token by token straight from the packed
/// codes; from here on, expanding each weight block once and reusing it pays.
const GEMM_MIN_TOKENS: usize = 4;

/// The 256 codes of row-block `b` as eight vectors of 32 bytes (`0..=2`), weights in order.
/// `tq2_0` unpacks in registers (two loads, shifts, masks); `tq1_0` goes through `buf`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn codes8(fmt: Format, row: &[u8], b: usize, buf: &mut [u8; QBLOCK]) -> ([__m256i; 8], f32) {
    let mut out = [_mm256_setzero_si256(); 8];
    if fmt == Format::Tq2_0 {
        let blk = row_block::<{ tq2_0::BLOCK_BYTES }>(row, b);
        let mask3 = _mm256_set1_epi8(3);
        for half in 0..2 {
            // SAFETY: bytes `32·half .. 32·half + 32` of a 66-byte block.
            let v = unsafe { _mm256_loadu_si256(blk.as_ptr().add(32 * half).cast()) };
            out[4 * half] = _mm256_and_si256(v, mask3);
            out[4 * half + 1] = _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask3);
            out[4 * half + 2] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask3);
            out[4 * half + 3] = _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask3);
        }
        (out, tq2_0::scale(blk))
    } else {
        let blk = row_block::<{ tq1_0::BLOCK_BYTES }>(row, b);
        tq1_0::unpack_codes(blk, buf);
        for (c, o) in out.iter_mut().enumerate() {
            // SAFETY: 32 bytes inside the 256-byte buffer.
            *o = unsafe { _mm256_loadu_si256(buf.as_ptr().add(32 * c).cast()) };
        }
        (out, tq1_0::scale(blk))
    }
}

/// The partial last block of a row, reading only its `valid` activations.
#[inline(always)]
fn tail_block(fmt: Format, row: &[u8], b: usize, x: &[f32]) -> f32 {
    let mut codes = [0u8; QBLOCK];
    let d = if fmt == Format::Tq2_0 {
        let blk = row_block::<{ tq2_0::BLOCK_BYTES }>(row, b);
        tq2_0::unpack_codes(blk, &mut codes);
        tq2_0::scale(blk)
    } else {
        let blk = row_block::<{ tq1_0::BLOCK_BYTES }>(row, b);
        tq1_0::unpack_codes(blk, &mut codes);
        tq1_0::scale(blk)
    };
    let s = codes.iter().zip(x).fold(0.0f32, |a, (&c, &v)| match c {
        0 => a - v,
        2 => a + v,
        _ => a,
    });
    s * d
}

/// Decode with f32 activations on AVX-512: per 16 weights, one masked add of `x` into a
/// positive and one into a negative accumulator (masks from byte compares of the codes).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn ternary_gemv_f32_avx512(w: &Matrix, x: &[f32], y: &mut [f32]) {
    let (cols, fmt) = (w.cols(), w.format());
    let full = cols / QBLOCK;
    let mut buf = [0u8; QBLOCK];
    let two = _mm256_set1_epi8(2);
    let zero = _mm256_setzero_si256();
    for (r, out) in y.iter_mut().enumerate() {
        let row = w.row(r).unwrap_or(&[]);
        let mut total = _mm512_setzero_ps();
        for b in 0..full {
            let (codes, d) = codes8(fmt, row, b, &mut buf);
            let mut p = [_mm512_setzero_ps(); 4];
            let mut q = [_mm512_setzero_ps(); 4];
            for (c, &cv) in codes.iter().enumerate() {
                let kp = _mm256_cmpeq_epi8_mask(cv, two);
                let kn = _mm256_cmpeq_epi8_mask(cv, zero);
                // SAFETY: block `b < full` lies inside `x`: 32 floats at `256b + 32c`.
                let (x0, x1) = unsafe {
                    let px = x.as_ptr().add(b * QBLOCK + 32 * c);
                    (_mm512_loadu_ps(px), _mm512_loadu_ps(px.add(16)))
                };
                let k = 2 * (c % 2);
                p[k] = _mm512_mask_add_ps(p[k], kp as u16, p[k], x0);
                q[k] = _mm512_mask_add_ps(q[k], kn as u16, q[k], x0);
                p[k + 1] = _mm512_mask_add_ps(p[k + 1], (kp >> 16) as u16, p[k + 1], x1);
                q[k + 1] = _mm512_mask_add_ps(q[k + 1], (kn >> 16) as u16, q[k + 1], x1);
            }
            let pos = _mm512_add_ps(_mm512_add_ps(p[0], p[1]), _mm512_add_ps(p[2], p[3]));
            let neg = _mm512_add_ps(_mm512_add_ps(q[0], q[1]), _mm512_add_ps(q[2], q[3]));
            total = _mm512_fmadd_ps(_mm512_sub_ps(pos, neg), _mm512_set1_ps(d), total);
        }
        let mut s = _mm512_reduce_add_ps(total);
        if full * QBLOCK < cols {
            s += tail_block(fmt, row, full, &x[full * QBLOCK..]);
        }
        *out = s;
    }
}

/// Decode with f32 activations on AVX2: trits widened to f32 (±1/0) and applied with FMA,
/// which rounds once like the addition or subtraction it stands for.
#[target_feature(enable = "avx2,fma")]
unsafe fn ternary_gemv_f32_avx2(w: &Matrix, x: &[f32], y: &mut [f32]) {
    let (cols, fmt) = (w.cols(), w.format());
    let full = cols / QBLOCK;
    let mut buf = [0u8; QBLOCK];
    let one = _mm256_set1_epi8(1);
    for (r, out) in y.iter_mut().enumerate() {
        let row = w.row(r).unwrap_or(&[]);
        let mut total = _mm256_setzero_ps();
        for b in 0..full {
            let (codes, d) = codes8(fmt, row, b, &mut buf);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (c, &cv) in codes.iter().enumerate() {
                let t = _mm256_sub_epi8(cv, one);
                let lanes = [_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t)];
                for (h, &l) in lanes.iter().enumerate() {
                    let parts = [l, _mm_srli_si128::<8>(l)];
                    for (k, &part) in parts.iter().enumerate() {
                        let wv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part));
                        // SAFETY: block `b < full` lies inside `x`.
                        let xv = unsafe {
                            _mm256_loadu_ps(x.as_ptr().add(b * QBLOCK + 32 * c + 16 * h + 8 * k))
                        };
                        acc[2 * h + k] = _mm256_fmadd_ps(wv, xv, acc[2 * h + k]);
                    }
                }
            }
            let bsum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            total = _mm256_fmadd_ps(bsum, _mm256_set1_ps(d), total);
        }
        let mut s = hsum(total);
        if full * QBLOCK < cols {
            s += tail_block(fmt, row, full, &x[full * QBLOCK..]);
        }
        *out = s;
    }
}

/// Blocks expanded per row at once: 4 rows × 8 blocks × 1 KiB = 32 KiB of `±d` weights,
/// reused by every token.
const EXPAND_BLOCKS: usize = 8;

#[target_feature(enable = "avx2,fma")]
unsafe fn ternary_f32_avx2(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    const R: usize = 4;
    const T: usize = 3;
    let (rows, cols) = (w.rows(), w.cols());
    let blocks = cols.div_ceil(QBLOCK);
    let mut wbuf = [[0.0f32; EXPAND_BLOCKS * QBLOCK]; R];
    for v in y.iter_mut() {
        *v = 0.0;
    }
    let mut r0 = 0;
    while r0 < rows {
        let nr = R.min(rows - r0);
        let mut b0 = 0;
        while b0 < blocks {
            let nb = EXPAND_BLOCKS.min(blocks - b0);
            for (r, buf) in wbuf.iter_mut().enumerate().take(nr) {
                let row = w.row(r0 + r).unwrap_or(&[]);
                for k in 0..nb {
                    let chunk: &mut [f32; QBLOCK] = (&mut buf[k * QBLOCK..(k + 1) * QBLOCK])
                        .try_into()
                        .unwrap_or_else(|_| unreachable!());
                    expand_block(w.format(), row, b0 + k, chunk);
                }
            }
            let start = b0 * QBLOCK;
            let valid = (nb * QBLOCK).min(cols - start);
            let full8 = valid / 8;
            let mut t0 = 0;
            while t0 < n {
                let nt = T.min(n - t0);
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                for c in 0..full8 {
                    for t in 0..nt {
                        // SAFETY: `start + 8c + 8 <= cols`, inside token `t0 + t`.
                        let xv = unsafe {
                            _mm256_loadu_ps(x.as_ptr().add((t0 + t) * cols + start + 8 * c))
                        };
                        for r in 0..nr {
                            // SAFETY: 8 floats inside the expansion buffer.
                            let wv = unsafe { _mm256_loadu_ps(wbuf[r].as_ptr().add(8 * c)) };
                            acc[r][t] = _mm256_fmadd_ps(wv, xv, acc[r][t]);
                        }
                    }
                }
                for r in 0..nr {
                    for t in 0..nt {
                        // Tail: only `cols` activations are read.
                        let xt = &x[(t0 + t) * cols + start..(t0 + t) * cols + start + valid];
                        let mut s = hsum(acc[r][t]);
                        for i in full8 * 8..valid {
                            s += wbuf[r][i] * xt[i];
                        }
                        y[(t0 + t) * rows + r0 + r] += s;
                    }
                }
                t0 += nt;
            }
            b0 += nb;
        }
        r0 += nr;
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

// ---------------------------------------------------------------------------------------------
// Dense f32 / f16 / bf16

/// Loads 8 weights of a dense row as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load8(fmt: Format, row: &[u8], i: usize) -> __m256 {
    // SAFETY: the caller guarantees elements `i..i+8` exist in `row`.
    unsafe {
        match fmt {
            Format::F32 => _mm256_loadu_ps(row.as_ptr().add(4 * i).cast()),
            Format::F16 => _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(2 * i).cast())),
            _ => {
                let h = _mm_loadu_si128(row.as_ptr().add(2 * i).cast());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dense_avx2(w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) {
    const R: usize = 4;
    const T: usize = 3;
    let (rows, cols, fmt) = (w.rows(), w.cols(), w.format());
    let full8 = cols / 8;
    let mut r0 = 0;
    while r0 < rows {
        let nr = R.min(rows - r0);
        let mut t0 = 0;
        while t0 < n {
            let nt = T.min(n - t0);
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            for c in 0..full8 {
                let mut wv = [_mm256_setzero_ps(); R];
                for (r, v) in wv.iter_mut().enumerate().take(nr) {
                    // SAFETY: `8c + 8 <= cols` elements of a checked row.
                    *v = unsafe { load8(fmt, w.row(r0 + r).unwrap_or(&[]), 8 * c) };
                }
                for t in 0..nt {
                    // SAFETY: inside token `t0 + t`.
                    let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add((t0 + t) * cols + 8 * c)) };
                    for r in 0..nr {
                        acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                    }
                }
            }
            for r in 0..nr {
                let row = w.row(r0 + r).unwrap_or(&[]);
                for t in 0..nt {
                    let xt = &x[(t0 + t) * cols..(t0 + t + 1) * cols];
                    let tail =
                        scalar::dot_row(fmt, &row[full8 * 8 * elem_bytes(fmt)..], &xt[full8 * 8..]);
                    y[(t0 + t) * rows + r0 + r] = hsum(acc[r][t]) + tail;
                }
            }
            t0 += nt;
        }
        r0 += nr;
    }
}

fn elem_bytes(fmt: Format) -> usize {
    fmt.block_bytes()
}
