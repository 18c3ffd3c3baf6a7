//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 VNNI.
//!
//! - Ternary × int8: codes stay unsigned (`w + 1` in `0..=2`) so they feed `vpmaddubsw` (AVX2)
//!   or `vpdpbusd` (VNNI) directly; the `+1` offset is removed per block with the activation
//!   block sums. Tiles of `R` rows × `T` tokens share every unpacked code vector and every
//!   activation load; per-block integer sums are reduced eight at a time with `vphaddd` and
//!   combined lane-wise with exactly the scalar reference's float operations (mul, then add;
//!   never fused), so results are bit-identical to [`super::scalar`].
//! - Ternary × int8 prefill on AVX-512 VNNI: weight panels (16 rows × 256 weights, interleaved
//!   for `vpdpbusd`) swept by tiles of 12 tokens with broadcast activations; every accumulator
//!   lane is one row's finished sum, so no horizontal reductions (see `Panel`). Same
//!   integers, same combine: bit-identical too.
//! - Activation quantization, softmax numerators and SiLU have AVX-512 versions (identical
//!   codes; exponentials within a few ulp of `libm::expf`).
//! - Float activations, four or more tokens on AVX-512 (ternary, `q8_0`, `q4_0`): 32-row panels
//!   of exact f32 weights stored transposed, swept by tiles of 12 tokens (see `panel`).
//! - Float activations otherwise: each row-block of weights is expanded once into `±d` (exact) f32 in an
//!   L1 buffer and applied with FMA to `T` tokens. Each FMA rounds once, like the addition of an
//!   exact term `±d·x`, so the bound in [`super`] holds.
//! - Dense f32/f16/bf16: FMA over 8 lanes (AVX2, 4 rows × 3 tokens) or 16 lanes (AVX-512,
//!   4 rows × 6 tokens, masked tails); f16 via F16C.
#![allow(unsafe_code)]
// Kernels index several tiles with the same row/token/chunk counters.
#![allow(clippy::needless_range_loop)]

use super::scalar::{self, Combine};
use super::{ActScale, Int8Acts, Isa, QBLOCK, StridedOut};
use crate::quant::{Format, Matrix, tq1_0, tq2_0};
use core::arch::x86_64::*;

mod panel;

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
            // Several tokens on AVX-512: transposed weight panels (no horizontal sums).
            f if isa == Isa::Avx512Vnni && n >= GEMM_MIN_TOKENS && panel::supports(f) => {
                panel::gemm(w, x, n, y)
            }
            Format::Tq2_0 | Format::Tq1_0 => ternary_f32_avx2(w, x, n, y),
            // Monomorphized per element type and per decode/prefill so the inner loops carry
            // no format branch and prefill no prefetch.
            // AVX-512 dense: twice the lanes, and a 4 × 6 tile whose 24 accumulators fit
            // the 32 zmm registers.
            Format::F32 | Format::F16 | Format::Bf16 if isa == Isa::Avx512Vnni => {
                dense_avx512_strided(w, x, n, &mut StridedOut::contiguous(y, w.rows(), n))
            }
            Format::F32 if n == 1 => dense_avx2::<F32, true>(w, x, n, y),
            Format::F32 => dense_avx2::<F32, false>(w, x, n, y),
            Format::F16 if n == 1 => dense_avx2::<F16, true>(w, x, n, y),
            Format::F16 => dense_avx2::<F16, false>(w, x, n, y),
            Format::Bf16 if n == 1 => dense_avx2::<BF16, true>(w, x, n, y),
            Format::Bf16 => dense_avx2::<BF16, false>(w, x, n, y),
            Format::I8 if n == 1 => dense_avx2::<I8, true>(w, x, n, y),
            Format::I8 => dense_avx2::<I8, false>(w, x, n, y),
            Format::Q8_0 if n == 1 => q32_avx2::<Q8, 4, 1>(w, x, n, y),
            Format::Q8_0 => q32_avx2::<Q8, 2, 4>(w, x, n, y),
            Format::Q4_0 if n == 1 => q32_avx2::<Q4, 4, 1>(w, x, n, y),
            Format::Q4_0 => q32_avx2::<Q4, 2, 4>(w, x, n, y),
            _ => scalar::gemm(w, x, n, y),
        }
    }
}

/// Integer-activation products. Caller checked shapes and format.
///
/// # Safety
/// As [`gemm`].
pub unsafe fn gemm_i8(isa: Isa, w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
    if w.format() == Format::I8 {
        // SAFETY: the caller guarantees the features of `isa`.
        unsafe {
            if isa == Isa::Avx512Vnni {
                i8_i8_vnni(w, acts, y)
            } else {
                i8_i8_avx2(w, acts, y)
            }
        }
        return;
    }
    if !matches!(w.format(), Format::Tq2_0 | Format::Tq1_0) {
        return scalar::gemm_i8_strided(w, acts, y);
    }
    // SAFETY: the caller guarantees the features of `isa`.
    unsafe {
        match isa {
            Isa::Avx512Vnni if acts.tokens >= PANEL_MIN_TOKENS && acts.blocks > 0 => {
                ternary_gemm_i8_panels(w, acts, y)
            }
            Isa::Avx512Vnni if w.format() == Format::Tq2_0 => {
                let mut t0 = 0;
                while t0 + 4 <= acts.tokens {
                    tq2_gemm4_i8_zmm(w, acts, t0, y);
                    t0 += 4;
                }
                for t in t0..acts.tokens {
                    tq2_gemv_i8_zmm(w, acts, t, y);
                }
            }
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
        unsafe fn $name(w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
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
            y: &mut StridedOut,
        ) {
            // SAFETY: every raw load below reads 32 bytes inside a checked row-block (66 bytes
            // for tq2_0), a 256-byte code buffer, a token's `blocks·256` padded activations, or
            // an 8-lane table row; the caller guarantees the target features.
            unsafe {
                let rows = w.rows();
                // Prefetch distance: whole tiles, at least PREFETCH_BYTES ahead.
                let tile_bytes = (R * w.row_bytes()).max(1);
                let ahead = PREFETCH_BYTES.div_ceil(tile_bytes) * tile_bytes;
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
                    let mut rowp = [core::ptr::null::<u8>(); R];
                    for (r, p) in rowp.iter_mut().enumerate() {
                        *p = w.row(r0 + r).unwrap_or(&[]).as_ptr();
                    }
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
                                if fmt == Format::Tq2_0 {
                                    // Block `b` of row `r0 + r`: inside the checked matrix.
                                    let p = rowp[r].add(b * tq2_0::BLOCK_BYTES);
                                    // Rows of a tile are short interleaved streams that the
                                    // hardware prefetcher detects late; fetch the same spot of
                                    // the next tile's rows. A prefetch never faults, so the
                                    // address may run past the matrix (wrapping arithmetic).
                                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
                                    halves[r] = [
                                        _mm256_loadu_si256(p.cast()),
                                        _mm256_loadu_si256(p.add(32).cast()),
                                    ];
                                } else {
                                    let p = rowp[r].add(b * tq1_0::BLOCK_BYTES);
                                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
                                    let row = w.row(r0 + r).unwrap_or(&[]);
                                    let blk = row_block::<{ tq1_0::BLOCK_BYTES }>(row, b);
                                    for (c, v) in tq1_codes(blk).iter().enumerate() {
                                        _mm256_storeu_si256(
                                            codes_buf[r].as_mut_ptr().add(32 * c).cast(),
                                            *v,
                                        );
                                    }
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
                                y.set(t0 + i % T, r0 + i / T, v);
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
                        y.set(t, r, c.finish(acts, t));
                    }
                }
            }
        }
    };
}

/// Decode of `tq2_0` against one token on AVX-512 VNNI with 512-bit vectors: one 64-byte load
/// holds a whole block's codes, so each shift by `2j` yields weights `32j..32j+32` and
/// `128+32j..128+32j+32` together; the activations are gathered into that order once per block
/// for all eight rows of a tile. Integer sums and their combination are those of the scalar
/// reference, so results are bit-identical.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tq2_gemv_i8_zmm(w: &Matrix, acts: &Int8Acts, t: usize, y: &mut StridedOut) {
    const R: usize = 8;
    let rows = w.rows();
    let blocks = acts.blocks;
    let full = rows - rows % R;
    let per_block = acts.mode == ActScale::PerBlock;
    let a_all = acts.token(t);
    let sums = acts.token_sums(t);
    let scales = acts.token_scales(t);
    let tile_bytes = (R * w.row_bytes()).max(1);
    let ahead = PREFETCH_BYTES.div_ceil(tile_bytes) * tile_bytes;
    let mask3 = _mm512_set1_epi8(3);
    let mut dtab = [[0u16; R]; CHUNK];
    let mut r0 = 0;
    while r0 < full {
        let mut rowp = [core::ptr::null::<u8>(); R];
        for (r, p) in rowp.iter_mut().enumerate() {
            *p = w.row(r0 + r).unwrap_or(&[]).as_ptr();
        }
        let mut comb = _mm256_setzero_ps();
        let mut b0 = 0;
        while b0 < blocks {
            let nb = CHUNK.min(blocks - b0);
            for (r, p) in rowp.iter().enumerate() {
                for (j, dt) in dtab.iter_mut().enumerate().take(nb) {
                    // SAFETY: the scale of block `b0 + j < blocks` of a checked row.
                    let at = (b0 + j) * tq2_0::BLOCK_BYTES + tq2_0::SCALE_OFFSET;
                    dt[r] = unsafe { u16::from_le_bytes([*p.add(at), *p.add(at + 1)]) };
                }
            }
            for j in 0..nb {
                let b = b0 + j;
                // SAFETY: all loads below stay inside block `b` of a checked row (64 of its 66
                // bytes) or inside the token's `blocks·256` padded activations; prefetches never
                // fault.
                unsafe {
                    let ab = a_all.as_ptr().add(b * QBLOCK);
                    let mut a = [_mm512_setzero_si512(); 4];
                    for (c, av) in a.iter_mut().enumerate() {
                        let lo = _mm256_loadu_si256(ab.add(32 * c).cast());
                        let hi = _mm256_loadu_si256(ab.add(128 + 32 * c).cast());
                        *av = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    }
                    let mut acc = [_mm256_setzero_si256(); R];
                    for r in 0..R {
                        let p = rowp[r].add(b * tq2_0::BLOCK_BYTES);
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
                        let v = _mm512_loadu_si512(p.cast());
                        let mut z = _mm512_dpbusd_epi32(
                            _mm512_setzero_si512(),
                            _mm512_and_si512(v, mask3),
                            a[0],
                        );
                        z = _mm512_dpbusd_epi32(
                            z,
                            _mm512_and_si512(_mm512_srli_epi16::<2>(v), mask3),
                            a[1],
                        );
                        z = _mm512_dpbusd_epi32(
                            z,
                            _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask3),
                            a[2],
                        );
                        z = _mm512_dpbusd_epi32(
                            z,
                            _mm512_and_si512(_mm512_srli_epi16::<6>(v), mask3),
                            a[3],
                        );
                        acc[r] = _mm256_add_epi32(
                            _mm512_castsi512_si256(z),
                            _mm512_extracti64x4_epi64::<1>(z),
                        );
                    }
                    let s01 = _mm256_hadd_epi32(acc[0], acc[1]);
                    let s23 = _mm256_hadd_epi32(acc[2], acc[3]);
                    let s45 = _mm256_hadd_epi32(acc[4], acc[5]);
                    let s67 = _mm256_hadd_epi32(acc[6], acc[7]);
                    let s0123 = _mm256_hadd_epi32(s01, s23);
                    let s4567 = _mm256_hadd_epi32(s45, s67);
                    let dot = _mm256_add_epi32(
                        _mm256_permute2x128_si256::<0x20>(s0123, s4567),
                        _mm256_permute2x128_si256::<0x31>(s0123, s4567),
                    );
                    let isum = _mm256_sub_epi32(dot, _mm256_set1_epi32(sums[b]));
                    let mut scale = _mm256_cvtph_ps(_mm_loadu_si128(dtab[j].as_ptr().cast()));
                    if per_block {
                        scale = _mm256_mul_ps(scale, _mm256_set1_ps(scales[b]));
                    }
                    // As `Combine::add`: product, then sum; never fused.
                    comb = _mm256_add_ps(comb, _mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale));
                }
            }
            b0 += nb;
        }
        if !per_block {
            comb = _mm256_mul_ps(comb, _mm256_set1_ps(scales[0]));
        }
        assert!(r0 + R <= y.rows());
        // SAFETY: rows `r0..r0 + 8` (`<= y.rows()`, checked) of token `t` of the view.
        unsafe { _mm256_storeu_ps(y.token_ptr(t).add(r0), comb) };
        r0 += R;
    }
    for r in full..rows {
        let row = w.row(r).unwrap_or(&[]);
        let mut c = Combine::new();
        scalar::row_block_isums(Format::Tq2_0, row, a_all, |b, s, d| c.add(acts, t, b, s, d));
        y.set(t, r, c.finish(acts, t));
    }
}

/// Prefill of `tq2_0` for tokens `t0..t0+4` on AVX-512 VNNI with 512-bit vectors: tiles of 4
/// rows × 4 tokens; each row's block is one 64-byte load whose four shifted copies meet four
/// tokens' activations (gathered into the same order). Lane `l` of combiner `k` is the pair
/// `8k + l = 4r + t`. Integer sums and their combination are the scalar reference's.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tq2_gemm4_i8_zmm(w: &Matrix, acts: &Int8Acts, t0: usize, y: &mut StridedOut) {
    const R: usize = 4;
    const T: usize = 4;
    let rows = w.rows();
    let blocks = acts.blocks;
    let full = rows - rows % R;
    let per_block = acts.mode == ActScale::PerBlock;
    let mask3 = _mm512_set1_epi8(3);
    let mut dtab = [[[0u16; 8]; CHUNK]; 2];
    let mut stab = [[[0i32; 8]; CHUNK]; 2];
    let mut ftab = [[[0f32; 8]; CHUNK]; 2];
    let mut ap = [core::ptr::null::<i8>(); T];
    for (t, p) in ap.iter_mut().enumerate() {
        *p = acts.token(t0 + t).as_ptr();
    }
    let mut r0 = 0;
    while r0 < full {
        let mut rowp = [core::ptr::null::<u8>(); R];
        for (r, p) in rowp.iter_mut().enumerate() {
            *p = w.row(r0 + r).unwrap_or(&[]).as_ptr();
        }
        let mut comb = [_mm256_setzero_ps(); 2];
        let mut b0 = 0;
        while b0 < blocks {
            let nb = CHUNK.min(blocks - b0);
            for k in 0..2 {
                for l in 0..8 {
                    let (r, t) = ((8 * k + l) / T, (8 * k + l) % T);
                    let row = w.row(r0 + r).unwrap_or(&[]);
                    let sums = acts.token_sums(t0 + t);
                    let scales = acts.token_scales(t0 + t);
                    for j in 0..nb {
                        let at = (b0 + j) * tq2_0::BLOCK_BYTES + tq2_0::SCALE_OFFSET;
                        dtab[k][j][l] = u16::from_le_bytes([row[at], row[at + 1]]);
                        stab[k][j][l] = sums[b0 + j];
                        if per_block {
                            ftab[k][j][l] = scales[b0 + j];
                        }
                    }
                }
            }
            for j in 0..nb {
                let b = b0 + j;
                // SAFETY: loads stay inside block `b` of checked rows (64 of 66 bytes), inside
                // the tokens' `blocks·256` padded activations, or inside 8-lane table rows.
                unsafe {
                    let mut v = [_mm512_setzero_si512(); R];
                    for r in 0..R {
                        v[r] = _mm512_loadu_si512(rowp[r].add(b * tq2_0::BLOCK_BYTES).cast());
                    }
                    let mut acc = [[_mm512_setzero_si512(); T]; R];
                    for c in 0..4 {
                        let mut a = [_mm512_setzero_si512(); T];
                        for t in 0..T {
                            let ab = ap[t].add(b * QBLOCK);
                            let lo = _mm256_loadu_si256(ab.add(32 * c).cast());
                            let hi = _mm256_loadu_si256(ab.add(128 + 32 * c).cast());
                            a[t] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                        }
                        for r in 0..R {
                            let sh = match c {
                                0 => v[r],
                                1 => _mm512_srli_epi16::<2>(v[r]),
                                2 => _mm512_srli_epi16::<4>(v[r]),
                                _ => _mm512_srli_epi16::<6>(v[r]),
                            };
                            let codes = _mm512_and_si512(sh, mask3);
                            for t in 0..T {
                                acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], codes, a[t]);
                            }
                        }
                    }
                    for k in 0..2 {
                        let mut h = [_mm256_setzero_si256(); 8];
                        for (l, hl) in h.iter_mut().enumerate() {
                            let z = acc[(8 * k + l) / T][(8 * k + l) % T];
                            *hl = _mm256_add_epi32(
                                _mm512_castsi512_si256(z),
                                _mm512_extracti64x4_epi64::<1>(z),
                            );
                        }
                        let s01 = _mm256_hadd_epi32(h[0], h[1]);
                        let s23 = _mm256_hadd_epi32(h[2], h[3]);
                        let s45 = _mm256_hadd_epi32(h[4], h[5]);
                        let s67 = _mm256_hadd_epi32(h[6], h[7]);
                        let s0123 = _mm256_hadd_epi32(s01, s23);
                        let s4567 = _mm256_hadd_epi32(s45, s67);
                        let dot = _mm256_add_epi32(
                            _mm256_permute2x128_si256::<0x20>(s0123, s4567),
                            _mm256_permute2x128_si256::<0x31>(s0123, s4567),
                        );
                        let isum =
                            _mm256_sub_epi32(dot, _mm256_loadu_si256(stab[k][j].as_ptr().cast()));
                        let mut scale =
                            _mm256_cvtph_ps(_mm_loadu_si128(dtab[k][j].as_ptr().cast()));
                        if per_block {
                            scale = _mm256_mul_ps(scale, _mm256_loadu_ps(ftab[k][j].as_ptr()));
                        }
                        // As `Combine::add`: product, then sum; never fused.
                        let prod = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale);
                        comb[k] = _mm256_add_ps(comb[k], prod);
                    }
                }
            }
            b0 += nb;
        }
        for (k, &ck) in comb.iter().enumerate() {
            let mut out = [0.0f32; 8];
            let mut fin = ck;
            if !per_block {
                let mut sc = [0.0f32; 8];
                for (l, sv) in sc.iter_mut().enumerate() {
                    *sv = acts.token_scales(t0 + (8 * k + l) % T)[0];
                }
                // SAFETY: an 8-lane local array.
                fin = _mm256_mul_ps(fin, unsafe { _mm256_loadu_ps(sc.as_ptr()) });
            }
            // SAFETY: an 8-lane local array.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), fin) };
            for (l, &v) in out.iter().enumerate() {
                let i = 8 * k + l;
                y.set(t0 + i % T, r0 + i / T, v);
            }
        }
        r0 += R;
    }
    for r in full..rows {
        let row = w.row(r).unwrap_or(&[]);
        for t in t0..t0 + T {
            let mut c = Combine::new();
            scalar::row_block_isums(Format::Tq2_0, row, acts.token(t), |b, s, d| {
                c.add(acts, t, b, s, d)
            });
            y.set(t, r, c.finish(acts, t));
        }
    }
}

/// Minimum distance of the int8 kernels' software prefetch: about what DRAM latency times one
/// core's bandwidth needs in flight, with margin.
const PREFETCH_BYTES: usize = 16384;

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

ternary_i8_kernel!(
    ternary_i8_avx2,
    tile_i8_avx2,
    "avx2,fma,f16c",
    dot_avx2,
    8,
    4,
    2
);
ternary_i8_kernel!(
    ternary_i8_vnni,
    tile_i8_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    dot_vnni,
    8,
    4,
    4
);

// ---------------------------------------------------------------------------------------------
// Ternary × int8 prefill on AVX-512 VNNI: weight panels, no horizontal reductions

/// Rows of one weight panel: one per i32 lane of a zmm register.
const PANEL_ROWS: usize = 16;

/// Groups of four consecutive weights in a 256-block (one `vpdpbusd` step each).
const GROUPS: usize = QBLOCK / 4;

/// Tokens of one register tile: 2 panels × 12 tokens = 24 accumulators, plus the two weight
/// vectors and one broadcast, out of 32 zmm registers.
const PANEL_TOKENS: usize = 12;

/// From this many tokens on, the panel kernel pays for its unpacking (each panel is built
/// once per call and used by every token); fewer tokens use the row-tile kernels.
const PANEL_MIN_TOKENS: usize = 4;

/// One 256-block of up to 16 rows, laid out for `vpdpbusd`: `codes[g]` is one zmm whose
/// dword `r` holds the codes (`w + 1`, one byte each) of weights `4g..4g + 4` of row `r`, so a
/// token's four activations `4g..4g + 4`, broadcast to all lanes, meet all 16 rows in one
/// instruction with the sums staying in their row's lane. `d` holds the rows' block scales
/// (0 for rows past the matrix).
#[repr(C, align(64))]
struct Panel {
    codes: [[u32; PANEL_ROWS]; GROUPS],
    d: [f32; PANEL_ROWS],
}

impl Panel {
    const EMPTY: Panel = Panel {
        codes: [[0; PANEL_ROWS]; GROUPS],
        d: [0.0; PANEL_ROWS],
    };
}

/// Transposes a 16 × 16 matrix of dwords (row `r` = `v[r]`): dword `r` of result `i` is dword
/// `i` of `v[r]`. Three shuffle stages: dwords, qwords within 128-bit lanes, then lanes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) fn transpose16(v: &[__m512i; 16]) -> [__m512i; 16] {
    // t[2p], t[2p+1]: rows 2p and 2p+1 interleaved (dwords 4L..4L+1 and 4L+2..4L+3 of lane L).
    let mut t = [_mm512_setzero_si512(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_epi32(v[2 * p], v[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_epi32(v[2 * p], v[2 * p + 1]);
    }
    // u[4q + c], lane L: rows 4q..4q + 4 of column 4L + c.
    let mut u = [_mm512_setzero_si512(); 16];
    for q in 0..4 {
        let (a, b) = (4 * q, 4 * q + 2);
        u[4 * q] = _mm512_unpacklo_epi64(t[a], t[b]);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t[a], t[b]);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t[a + 1], t[b + 1]);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t[a + 1], t[b + 1]);
    }
    // Column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let a0 = _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]);
        let a1 = _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]);
        let a2 = _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]);
        let a3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_i32x4::<0x88>(a0, a2);
        out[4 + c] = _mm512_shuffle_i32x4::<0xDD>(a0, a2);
        out[8 + c] = _mm512_shuffle_i32x4::<0x88>(a1, a3);
        out[12 + c] = _mm512_shuffle_i32x4::<0xDD>(a1, a3);
    }
    out
}

/// Fills `panel` with block `b` of rows `rowp[..nrows]` (rows past `nrows` get code 0 and
/// scale 0, so they add nothing to any output that is stored).
///
/// `tq2_0` goes straight from the packed bytes: dword `i` of a block's 64 code bytes holds,
/// at shift `2j`, weights `128·(i/8) + 32j + 4·(i%8) + 0..4` (byte `32h + m`, shift `2j` is
/// weight `128h + 32j + m`), i.e. group `32·(i/8) + 8j + i%8`; one transpose of the 16 rows'
/// code bytes serves all four shifts. `tq1_0` is unpacked per row to weight order in `tmp`
/// and transposed a quarter-block at a time.
///
/// # Safety
/// `rowp[r]` for `r < nrows` points at a row of at least `b + 1` blocks of `fmt`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn build_panel(
    fmt: Format,
    rowp: &[*const u8; PANEL_ROWS],
    nrows: usize,
    b: usize,
    tmp: &mut [[u8; QBLOCK]; PANEL_ROWS],
    panel: &mut Panel,
) {
    let (bb, scale_at) = match fmt {
        Format::Tq2_0 => (tq2_0::BLOCK_BYTES, tq2_0::SCALE_OFFSET),
        _ => (tq1_0::BLOCK_BYTES, tq1_0::SCALE_OFFSET),
    };
    let mut dh = [0u16; PANEL_ROWS];
    // SAFETY: block `b` of each of the first `nrows` rows is inside the matrix (caller); the
    // prefetch of a later block may run past it, which never faults; stores go to `panel` and
    // `tmp`, whose sizes the indices respect.
    unsafe {
        for r in 0..nrows {
            let p = rowp[r].add(b * bb);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(4 * bb).cast());
            dh[r] = u16::from_le_bytes([*p.add(scale_at), *p.add(scale_at + 1)]);
        }
        _mm512_store_ps(
            panel.d.as_mut_ptr(),
            _mm512_cvtph_ps(_mm256_loadu_si256(dh.as_ptr().cast())),
        );
        let out = panel.codes.as_mut_ptr().cast::<__m512i>();
        if fmt == Format::Tq2_0 {
            let mut v = [_mm512_setzero_si512(); 16];
            for r in 0..nrows {
                v[r] = _mm512_loadu_si512(rowp[r].add(b * bb).cast());
            }
            let tr = transpose16(&v);
            let mask3 = _mm512_set1_epi8(3);
            for (i, &ti) in tr.iter().enumerate() {
                let g = 32 * (i / 8) + i % 8;
                _mm512_store_si512(out.add(g), _mm512_and_si512(ti, mask3));
                let s2 = _mm512_and_si512(_mm512_srli_epi32::<2>(ti), mask3);
                _mm512_store_si512(out.add(g + 8), s2);
                let s4 = _mm512_and_si512(_mm512_srli_epi32::<4>(ti), mask3);
                _mm512_store_si512(out.add(g + 16), s4);
                let s6 = _mm512_and_si512(_mm512_srli_epi32::<6>(ti), mask3);
                _mm512_store_si512(out.add(g + 24), s6);
            }
        } else {
            for (r, row) in tmp.iter_mut().enumerate() {
                if r < nrows {
                    let blk = &*rowp[r].add(b * bb).cast::<[u8; tq1_0::BLOCK_BYTES]>();
                    for (c, v) in tq1_codes(blk).iter().enumerate() {
                        _mm256_storeu_si256(row.as_mut_ptr().add(32 * c).cast(), *v);
                    }
                } else {
                    *row = [0; QBLOCK];
                }
            }
            for q in 0..4 {
                let mut v = [_mm512_setzero_si512(); 16];
                for (r, vr) in v.iter_mut().enumerate() {
                    *vr = _mm512_loadu_si512(tmp[r].as_ptr().add(64 * q).cast());
                }
                for (i, ti) in transpose16(&v).iter().enumerate() {
                    _mm512_store_si512(out.add(16 * q + i), *ti);
                }
            }
        }
    }
}

/// Where one tile of the panel kernel writes: `y` (token `t`'s outputs start at
/// `y + t · stride`), the first row of the panel pair, and each panel's lane mask (rows inside
/// the matrix).
#[derive(Clone, Copy)]
struct PanelOut {
    y: *mut f32,
    stride: usize,
    r0: usize,
    masks: [__mmask16; 2],
}

/// Tokens `t0..t0 + T` against block `b` of two panels: the 4-byte activation groups are
/// broadcast (`vpdpbusd` with a memory broadcast) and meet 16 rows at once, so each
/// accumulator ends the block holding 16 finished row sums; the `+1` offset of the codes is
/// removed with the token's block sum and the block is combined into `y` exactly as
/// `Combine::add` does (product, then sum; `0.0 + p` for the first block).
///
/// # Safety
/// Tokens `t0..t0 + T` exist in `acts`, `b < acts.blocks`, and `out.y` holds `acts.tokens`
/// runs, `out.stride` apart, of the matrix's rows (lanes outside `out.masks` are neither read
/// nor written), which no other thread accesses during the call.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn panel_tile<const T: usize>(
    panels: &[Panel; 2],
    acts: &Int8Acts,
    b: usize,
    t0: usize,
    out: PanelOut,
) {
    let blocks = acts.blocks;
    let padded = blocks * QBLOCK;
    let per_block = acts.mode == ActScale::PerBlock;
    // SAFETY: activation reads stay inside tokens `t0..t0 + T`, block `b` (caller); panel
    // loads are aligned 64-byte rows of `codes`; `y` accesses are masked to rows inside the
    // matrix of tokens inside `acts`, and pointer arithmetic on `y` wraps (a masked-off lane
    // is never touched, so its address may be past the end).
    unsafe {
        let mut ap = [core::ptr::null::<i8>(); T];
        for (t, p) in ap.iter_mut().enumerate() {
            *p = acts.q.as_ptr().add((t0 + t) * padded + b * QBLOCK);
        }
        let w0p = panels[0].codes.as_ptr().cast::<__m512i>();
        let w1p = panels[1].codes.as_ptr().cast::<__m512i>();
        let mut acc0 = [_mm512_setzero_si512(); T];
        let mut acc1 = [_mm512_setzero_si512(); T];
        for g in 0..GROUPS {
            let w0 = _mm512_load_si512(w0p.add(g));
            let w1 = _mm512_load_si512(w1p.add(g));
            for t in 0..T {
                let a = _mm512_set1_epi32(ap[t].add(4 * g).cast::<i32>().read_unaligned());
                acc0[t] = _mm512_dpbusd_epi32(acc0[t], w0, a);
                acc1[t] = _mm512_dpbusd_epi32(acc1[t], w1, a);
            }
        }
        let d = [
            _mm512_load_ps(panels[0].d.as_ptr()),
            _mm512_load_ps(panels[1].d.as_ptr()),
        ];
        for t in 0..T {
            let tok = t0 + t;
            let bsum = _mm512_set1_epi32(acts.sums[tok * blocks + b]);
            let s = per_block.then(|| _mm512_set1_ps(acts.scales[tok * blocks + b]));
            for (p, acc) in [acc0[t], acc1[t]].into_iter().enumerate() {
                let isum = _mm512_sub_epi32(acc, bsum);
                let scale = match s {
                    Some(s) => _mm512_mul_ps(d[p], s),
                    None => d[p],
                };
                let prod = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), scale);
                let yp = out
                    .y
                    .wrapping_add(tok * out.stride + out.r0 + PANEL_ROWS * p);
                let prev = if b == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_maskz_loadu_ps(out.masks[p], yp)
                };
                _mm512_mask_storeu_ps(yp, out.masks[p], _mm512_add_ps(prev, prod));
            }
        }
    }
}

/// Prefill of `tq2_0`/`tq1_0` against int8 activations on AVX-512 VNNI (`acts.tokens ≥ 1`,
/// `acts.blocks ≥ 1`). For each pair of 16-row panels, block by block: the block is unpacked
/// once into [`Panel`] layout and then swept by every token in tiles of [`PANEL_TOKENS`];
/// `y` holds the running per-block combination (the scalar reference's float operations in its
/// order, so results are bit-identical), finished by the per-token scale.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn ternary_gemm_i8_panels(w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
    let (rows, n, blocks) = (w.rows(), acts.tokens, acts.blocks);
    let fmt = w.format();
    let mut panels = [Panel::EMPTY, Panel::EMPTY];
    let mut tmp = [[0u8; QBLOCK]; PANEL_ROWS];
    let mut r0 = 0;
    while r0 < rows {
        let nr = [
            (rows - r0).min(PANEL_ROWS),
            (rows - r0).saturating_sub(PANEL_ROWS).min(PANEL_ROWS),
        ];
        let mut rowp = [[core::ptr::null::<u8>(); PANEL_ROWS]; 2];
        for (p, rp) in rowp.iter_mut().enumerate() {
            for (r, ptr) in rp.iter_mut().enumerate().take(nr[p]) {
                *ptr = w.row(r0 + PANEL_ROWS * p + r).unwrap_or(&[]).as_ptr();
            }
        }
        let out = PanelOut {
            y: y.token_ptr(0),
            stride: y.stride(),
            r0,
            masks: nr.map(|k| ((1u32 << k) - 1) as __mmask16),
        };
        for b in 0..blocks {
            // SAFETY: rows of a checked matrix hold `blocks` blocks; every tile below covers
            // tokens inside `acts`, and `y` is a view of `n` runs of `rows` (the caller's
            // shapes), which this call alone accesses (`&mut`).
            unsafe {
                for p in 0..2 {
                    build_panel(fmt, &rowp[p], nr[p], b, &mut tmp, &mut panels[p]);
                }
                let mut t0 = 0;
                while t0 < n {
                    let tt = (n - t0).min(PANEL_TOKENS);
                    match tt {
                        1 => panel_tile::<1>(&panels, acts, b, t0, out),
                        2 => panel_tile::<2>(&panels, acts, b, t0, out),
                        3 => panel_tile::<3>(&panels, acts, b, t0, out),
                        4 => panel_tile::<4>(&panels, acts, b, t0, out),
                        5 => panel_tile::<5>(&panels, acts, b, t0, out),
                        6 => panel_tile::<6>(&panels, acts, b, t0, out),
                        7 => panel_tile::<7>(&panels, acts, b, t0, out),
                        8 => panel_tile::<8>(&panels, acts, b, t0, out),
                        9 => panel_tile::<9>(&panels, acts, b, t0, out),
                        10 => panel_tile::<10>(&panels, acts, b, t0, out),
                        11 => panel_tile::<11>(&panels, acts, b, t0, out),
                        _ => panel_tile::<PANEL_TOKENS>(&panels, acts, b, t0, out),
                    }
                    t0 += tt;
                }
            }
        }
        if acts.mode == ActScale::PerToken {
            for t in 0..n {
                let s = _mm512_set1_ps(acts.scales[t]);
                for (p, &m) in out.masks.iter().enumerate() {
                    // SAFETY: masked to rows of token `t` inside `y`; the address wraps.
                    unsafe {
                        let yp = out.y.wrapping_add(t * out.stride + r0 + PANEL_ROWS * p);
                        let v = _mm512_maskz_loadu_ps(m, yp);
                        _mm512_mask_storeu_ps(yp, m, _mm512_mul_ps(v, s));
                    }
                }
            }
        }
        r0 += 2 * PANEL_ROWS;
    }
}

// ---------------------------------------------------------------------------------------------
// Ternary × f32

/// Expands one ternary row-block into `±d`/`0` f32 values (exact products).
#[target_feature(enable = "avx2,fma,f16c")]
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
#[target_feature(enable = "avx2,fma,f16c")]
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
        (
            out,
            f16_bits_to_f32([blk[tq2_0::SCALE_OFFSET], blk[tq2_0::SCALE_OFFSET + 1]]),
        )
    } else {
        let blk = row_block::<{ tq1_0::BLOCK_BYTES }>(row, b);
        let _ = buf;
        out = tq1_codes(blk);
        (
            out,
            f16_bits_to_f32([blk[tq1_0::SCALE_OFFSET], blk[tq1_0::SCALE_OFFSET + 1]]),
        )
    }
}

/// Base-3 digit of each byte: `(v·3) >> 8`, which is `[v ≥ 86] + [v ≥ 171]`; unsigned byte
/// compares are done as signed compares after flipping the top bit.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn top_trit(v: __m256i) -> __m256i {
    let s = _mm256_xor_si256(v, _mm256_set1_epi8(i8::MIN));
    let ge86 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8((85i32 - 128) as i8));
    let ge171 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8((170i32 - 128) as i8));
    // Each mask is −1 where true.
    _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(ge86, ge171))
}

/// Bytewise `v·3 mod 256`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn times3(v: __m256i) -> __m256i {
    _mm256_add_epi8(v, _mm256_add_epi8(v, v))
}

/// The 256 codes of a `tq1_0` block as eight vectors of 32 bytes in weight order, unpacked in
/// registers: digit `k` of a byte is the top trit of `byte·3^k mod 256`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn tq1_codes(blk: &[u8; tq1_0::BLOCK_BYTES]) -> [__m256i; 8] {
    let mut out = [_mm256_setzero_si256(); 8];
    // SAFETY: bytes 0..32 and 32..48 of a 54-byte block.
    let (q32, q16) = unsafe {
        (
            _mm256_loadu_si256(blk.as_ptr().cast()),
            _mm_loadu_si128(blk.as_ptr().add(32).cast()),
        )
    };
    // qs[0..32]: digit k of byte m is weight 32k + m.
    let mut v = q32;
    for o in out.iter_mut().take(5) {
        *o = top_trit(v);
        v = times3(v);
    }
    // qs[32..48]: digit k of byte m is weight 160 + 16k + m; pair digits (0,1), (2,3), (4,qh).
    let q16x3 = _mm_add_epi8(q16, _mm_add_epi8(q16, q16));
    let a = _mm256_set_m128i(q16x3, q16);
    out[5] = top_trit(a);
    let b = times3(times3(a));
    out[6] = top_trit(b);
    // qh: digit k of byte j is weight 240 + 4k + j; replicate the 4 bytes and scale group k
    // by 3^k.
    let qh = u32::from_le_bytes([blk[48], blk[49], blk[50], blk[51]]);
    let h1 = _mm_set1_epi32(qh as i32);
    let h3 = _mm_add_epi8(h1, _mm_add_epi8(h1, h1));
    let h9 = _mm_add_epi8(h3, _mm_add_epi8(h3, h3));
    let h27 = _mm_add_epi8(h9, _mm_add_epi8(h9, h9));
    let h = _mm_blend_epi32::<0b1000>(
        _mm_blend_epi32::<0b0100>(_mm_blend_epi32::<0b0010>(h1, h3), h9),
        h27,
    );
    let b81 = times3(times3(b));
    out[7] = top_trit(_mm256_set_m128i(h, _mm256_castsi256_si128(b81)));
    out
}

/// One f16 → f32 with F16C (exact, like the portable conversion, but one instruction).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16_bits_to_f32(b: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(
        _mm_cvtsi32_si128(u16::from_le_bytes(b) as i32),
    ))
}

/// The codes of block `b` of a ternary row (at least its first `len`) and the block's scale.
#[inline(always)]
fn tail_codes(fmt: Format, row: &[u8], b: usize, len: usize, codes: &mut [u8; QBLOCK]) -> f32 {
    if fmt == Format::Tq2_0 {
        let blk = row_block::<{ tq2_0::BLOCK_BYTES }>(row, b);
        tq2_0::unpack_codes_prefix(blk, codes, len);
        tq2_0::scale(blk)
    } else {
        let blk = row_block::<{ tq1_0::BLOCK_BYTES }>(row, b);
        tq1_0::unpack_codes_prefix(blk, codes, len);
        tq1_0::scale(blk)
    }
}

/// Decode with f32 activations on AVX-512: trits are written to an L1 buffer, then widened
/// 16 at a time straight from memory (`vpmovsxbd`), converted, and applied with FMA — with a
/// weight of ±1 or 0 the FMA is exactly the rounded `acc ± x` of the scalar reference.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn ternary_gemv_f32_avx512(w: &Matrix, x: &[f32], y: &mut [f32]) {
    let (cols, fmt) = (w.cols(), w.format());
    let full = cols / QBLOCK;
    let mut buf = [0u8; QBLOCK];
    let mut trits = [0i8; QBLOCK];
    let one = _mm256_set1_epi8(1);
    for (r, out) in y.iter_mut().enumerate() {
        let row = w.row(r).unwrap_or(&[]);
        let mut total = _mm512_setzero_ps();
        for b in 0..full {
            let (codes, d) = codes8(fmt, row, b, &mut buf);
            for (c, &cv) in codes.iter().enumerate() {
                // SAFETY: 32 bytes inside the 256-byte trit buffer.
                unsafe {
                    _mm256_storeu_si256(
                        trits.as_mut_ptr().add(32 * c).cast(),
                        _mm256_sub_epi8(cv, one),
                    )
                };
            }
            let mut acc = [_mm512_setzero_ps(); 4];
            for g in 0..QBLOCK / 16 {
                // SAFETY: 16 trits inside the buffer; block `b < full` lies inside `x`.
                unsafe {
                    let t =
                        _mm512_cvtepi8_epi32(_mm_loadu_si128(trits.as_ptr().add(16 * g).cast()));
                    let xv = _mm512_loadu_ps(x.as_ptr().add(b * QBLOCK + 16 * g));
                    acc[g % 4] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), xv, acc[g % 4]);
                }
            }
            let bsum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            total = _mm512_fmadd_ps(bsum, _mm512_set1_ps(d), total);
        }
        let mut s = _mm512_reduce_add_ps(total);
        if full * QBLOCK < cols {
            s += tail_block_avx512(fmt, row, full, &x[full * QBLOCK..]);
        }
        *out = s;
    }
}

/// The partial last block of a row on AVX-512, 16 codes at a time with masked activation
/// loads. Rows narrower than one block (width-128 models) are all tail: the scalar fold's
/// data-dependent branches over random trits made those rows many times slower than full ones.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
fn tail_block_avx512(fmt: Format, row: &[u8], b: usize, x: &[f32]) -> f32 {
    let valid = x.len().min(QBLOCK);
    let mut codes = [0u8; QBLOCK];
    let d = tail_codes(fmt, row, b, valid, &mut codes);
    let one = _mm512_set1_epi32(1);
    let mut acc = _mm512_setzero_ps();
    for g in 0..valid.div_ceil(16) {
        let n = (valid - 16 * g).min(16);
        let mask: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
        // SAFETY: codes has 256 bytes and 16 * g + 16 <= 256; the masked load reads only the
        // first `n` activations at 16 * g, all inside `x` (masked lanes do not fault).
        unsafe {
            let c = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes.as_ptr().add(16 * g).cast()));
            let w = _mm512_cvtepi32_ps(_mm512_sub_epi32(c, one));
            let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(16 * g));
            acc = _mm512_fmadd_ps(w, xv, acc);
        }
    }
    _mm512_reduce_add_ps(acc) * d
}

/// Decode with f32 activations on AVX2: trits widened to f32 (±1/0) and applied with FMA,
/// which rounds once like the addition or subtraction it stands for.
#[target_feature(enable = "avx2,fma,f16c")]
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
            s += tail_block_avx2(fmt, row, full, &x[full * QBLOCK..]);
        }
        *out = s;
    }
}

/// The partial last block of a row on AVX2, 8 codes at a time with masked activation loads
/// (see [`tail_block_avx512`]).
#[target_feature(enable = "avx2,fma,f16c")]
fn tail_block_avx2(fmt: Format, row: &[u8], b: usize, x: &[f32]) -> f32 {
    let valid = x.len().min(QBLOCK);
    let mut codes = [0u8; QBLOCK];
    let d = tail_codes(fmt, row, b, valid, &mut codes);
    let one = _mm256_set1_epi32(1);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut acc = _mm256_setzero_ps();
    for g in 0..valid.div_ceil(8) {
        let n = (valid - 8 * g).min(8) as i32;
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
        // SAFETY: codes has 256 bytes and 8 * g + 8 <= 256; the masked load reads only the
        // first `n` activations at 8 * g, all inside `x` (masked lanes do not fault).
        unsafe {
            let c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(codes.as_ptr().add(8 * g).cast()));
            let w = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, one));
            let xv = _mm256_maskload_ps(x.as_ptr().add(8 * g), mask);
            acc = _mm256_fmadd_ps(w, xv, acc);
        }
    }
    hsum(acc) * d
}

/// Blocks expanded per row at once: 4 rows × 8 blocks × 1 KiB = 32 KiB of `±d` weights,
/// reused by every token.
const EXPAND_BLOCKS: usize = 8;

#[target_feature(enable = "avx2,fma,f16c")]
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

#[target_feature(enable = "avx2,fma,f16c")]
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
unsafe fn load8<const F: u8>(row: *const u8, i: usize) -> __m256 {
    // SAFETY: the caller guarantees elements `i..i+8` exist in `row`.
    unsafe {
        match F {
            F32 => _mm256_loadu_ps(row.add(4 * i).cast()),
            F16 => _mm256_cvtph_ps(_mm_loadu_si128(row.add(2 * i).cast())),
            I8 => _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(row.add(i).cast()))),
            _ => {
                let h = _mm_loadu_si128(row.add(2 * i).cast());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
        }
    }
}

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;
const I8: u8 = 3;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dense_avx2<const F: u8, const DECODE: bool>(
    w: &Matrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    const R: usize = 4;
    const T: usize = 3;
    let (rows, cols, fmt) = (w.rows(), w.cols(), w.format());
    let full8 = cols / 8;
    let esize = fmt.block_bytes();
    let tile_bytes = (R * w.row_bytes()).max(1);
    let ahead = PREFETCH_BYTES.div_ceil(tile_bytes) * tile_bytes;
    let mut r0 = 0;
    while r0 < rows {
        let nr = R.min(rows - r0);
        let mut t0 = 0;
        while t0 < n {
            let nt = T.min(n - t0);
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut rs = [core::ptr::null::<u8>(); R];
            for (r, row) in rs.iter_mut().enumerate().take(nr) {
                *row = w.row(r0 + r).unwrap_or(&[]).as_ptr();
            }
            for c in 0..full8 {
                let mut wv = [_mm256_setzero_ps(); R];
                for (r, v) in wv.iter_mut().enumerate().take(nr) {
                    // SAFETY: `8c + 8 <= cols` elements of a checked row.
                    *v = unsafe { load8::<F>(rs[r], 8 * c) };
                    if DECODE {
                        // Decode streams `nr` rows at once; fetch the next tile's rows early
                        // (a prefetch never faults, hence wrapping arithmetic).
                        let p = rs[r].wrapping_add(8 * c * esize + ahead);
                        _mm_prefetch::<_MM_HINT_T0>(p.cast());
                    }
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
                    // No call for rows without a tail (short rows: most of the time); adding
                    // 0.0 keeps the result bit-identical either way.
                    let tail = if full8 * 8 < cols {
                        scalar::dot_row(fmt, &row[full8 * 8 * elem_bytes(fmt)..], &xt[full8 * 8..])
                    } else {
                        0.0
                    };
                    y[(t0 + t) * rows + r0 + r] = hsum(acc[r][t]) + tail;
                }
            }
            t0 += nt;
        }
        r0 += nr;
    }
}

/// Loads 16 weights of a dense row as f32; lanes outside `mask` are zero and not read.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn load16<const F: u8>(row: *const u8, i: usize, mask: __mmask16) -> __m512 {
    // SAFETY: the caller guarantees the elements `i..i+16` selected by `mask` exist in `row`
    // (masked-off lanes never fault).
    unsafe {
        match F {
            F32 => _mm512_maskz_loadu_ps(mask, row.add(4 * i).cast()),
            F16 => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, row.add(2 * i).cast())),
            _ => {
                let h = _mm256_maskz_loadu_epi16(mask, row.add(2 * i).cast());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
        }
    }
}

/// Dense f32/f16/bf16 × f32 on AVX-512 into a view of the output (a row range of a larger
/// product's token-major output when the product is split by rows across threads); other
/// formats are not written.
///
/// # Safety
/// AVX-512 F/BW/VL, AVX2, FMA and F16C must be present; `x` holds `n` tokens of `w.cols()`,
/// `y` covers `n` tokens of `w.rows()`.
pub unsafe fn dense_avx512_strided(w: &Matrix, x: &[f32], n: usize, y: &mut StridedOut) {
    debug_assert!(y.rows() == w.rows() && y.tokens() == n);
    // SAFETY: the caller's contract.
    unsafe {
        match w.format() {
            Format::F32 => dense_avx512::<F32>(w, x, n, y),
            Format::F16 => dense_avx512::<F16>(w, x, n, y),
            Format::Bf16 => dense_avx512::<BF16>(w, x, n, y),
            _ => {}
        }
    }
}

/// Dense f32/f16/bf16 × f32 on AVX-512. Every output is one 16-lane FMA accumulator over the
/// row (the tail through a masked load), reduced once: the same operations in the same order
/// whatever the tile, so a token's result does not depend on how many tokens share the call
/// (decoding one sample path or 256 gives the same numbers).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn dense_avx512<const F: u8>(w: &Matrix, x: &[f32], n: usize, y: &mut StridedOut) {
    // SAFETY (all calls below): tiles stay inside `rows × n`, which the caller checked
    // against `w`, `x` and `y`.
    unsafe {
        if n == 1 {
            // Decode streams the matrix once: 8 rows keep 8 independent FMA chains busy. For
            // f32 rows the hardware prefetchers alone stream fastest: on the Zen 5 test machine,
            // software prefetches (64 KiB ahead, each row's line) held Toto's f32 decode
            // products at about 30 GB/s against 38 GB/s without them. Half-width rows (f16,
            // bf16) are the other way round: a TriLM-shaped model with an f16 head decoded at
            // 49.8 instead of 48.1 tokens/s with them (interleaved runs, quiet machine).
            if F == F32 {
                dense_rows_avx512::<F, 8, false>(w, x, n, y);
            } else {
                dense_rows_avx512::<F, 8, true>(w, x, n, y);
            }
        } else {
            dense_rows_avx512::<F, 4, true>(w, x, n, y);
        }
    }
}

/// How far ahead [`dense_rows_avx512`] prefetches weights for several tokens.
const DENSE_PREFETCH_BYTES: usize = 65536;

/// Row tiles of `R` (then single rows for the remainder), each over all tokens in tiles of 6;
/// with `PREFETCH`, every token tile prefetches the next row tile.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn dense_rows_avx512<const F: u8, const R: usize, const PREFETCH: bool>(
    w: &Matrix,
    x: &[f32],
    n: usize,
    y: &mut StridedOut,
) {
    const T: usize = 6;
    let rows = w.rows();
    let tile_bytes = (R * w.row_bytes()).max(1);
    let ahead = DENSE_PREFETCH_BYTES.div_ceil(tile_bytes) * tile_bytes;
    let mut r0 = 0;
    // SAFETY (every tile call): `r0 + R <= rows` (or `r0 < rows` for single rows) and
    // `t0 + T' <= n`.
    unsafe {
        while r0 + R <= rows {
            let mut t0 = 0;
            // Every token tile prefetches the next row tile (the first one brings the lines in;
            // the others' prefetches find them in flight or cached and cost little): with the
            // prefetch in the first tile only, a 16-token product of Toto's prefill streaming
            // from memory ran about 5% slower.
            while t0 + T <= n {
                dense_tile_avx512::<F, R, T, PREFETCH>(w, x, r0, t0, y, ahead);
                t0 += T;
            }
            match n - t0 {
                1 => dense_tile_avx512::<F, R, 1, PREFETCH>(w, x, r0, t0, y, ahead),
                2 => dense_tile_avx512::<F, R, 2, PREFETCH>(w, x, r0, t0, y, ahead),
                3 => dense_tile_avx512::<F, R, 3, PREFETCH>(w, x, r0, t0, y, ahead),
                4 => dense_tile_avx512::<F, R, 4, PREFETCH>(w, x, r0, t0, y, ahead),
                5 => dense_tile_avx512::<F, R, 5, PREFETCH>(w, x, r0, t0, y, ahead),
                _ => {}
            }
            r0 += R;
        }
        while r0 < rows {
            let mut t0 = 0;
            while t0 + T <= n {
                dense_tile_avx512::<F, 1, T, false>(w, x, r0, t0, y, ahead);
                t0 += T;
            }
            for t in t0..n {
                dense_tile_avx512::<F, 1, 1, false>(w, x, r0, t, y, ahead);
            }
            r0 += 1;
        }
    }
}

/// `y[t0 + t, r0 + r]` for an `R × T` tile: `R` weight vectors and `T` activation vectors per
/// 16 columns feed `R·T` accumulators.
///
/// # Safety
/// Rows `r0..r0 + R` exist in `w`; tokens `t0..t0 + T` exist in `x` (`w.cols()` each) and `y`
/// (`w.rows()` each).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn dense_tile_avx512<const F: u8, const R: usize, const T: usize, const PREFETCH: bool>(
    w: &Matrix,
    x: &[f32],
    r0: usize,
    t0: usize,
    y: &mut StridedOut,
    ahead: usize,
) {
    let cols = w.cols();
    let esize = w.format().block_bytes();
    let full = cols / 16;
    let tail = cols % 16;
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut rs = [core::ptr::null::<u8>(); R];
    for (r, row) in rs.iter_mut().enumerate() {
        *row = w.row(r0 + r).unwrap_or(&[]).as_ptr();
    }
    let xp = x[t0 * cols..].as_ptr();
    for c in 0..full {
        let mut wv = [_mm512_setzero_ps(); R];
        for r in 0..R {
            // SAFETY: `16c + 16 <= cols` elements of a checked row.
            wv[r] = unsafe { load16::<F>(rs[r], 16 * c, 0xFFFF) };
            if PREFETCH {
                // Fetch the next row tile early (a prefetch never faults, hence wrapping
                // arithmetic).
                let p = rs[r].wrapping_add(16 * c * esize + ahead);
                _mm_prefetch::<_MM_HINT_T0>(p.cast());
            }
        }
        for t in 0..T {
            // SAFETY: inside token `t0 + t`.
            let xv = unsafe { _mm512_loadu_ps(xp.add(t * cols + 16 * c)) };
            for r in 0..R {
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
    }
    if tail > 0 {
        let mask: __mmask16 = (1u16 << tail) - 1;
        let mut wv = [_mm512_setzero_ps(); R];
        for r in 0..R {
            // SAFETY: the masked lanes are the row's last `tail` elements.
            wv[r] = unsafe { load16::<F>(rs[r], 16 * full, mask) };
        }
        for t in 0..T {
            // SAFETY: the masked lanes are token `t0 + t`'s last `tail` activations.
            let xv = unsafe { _mm512_maskz_loadu_ps(mask, xp.add(t * cols + 16 * full)) };
            for r in 0..R {
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
    }
    if R.is_multiple_of(4) {
        for t in 0..T {
            for r in (0..R).step_by(4) {
                let sums = reduce_add_4(acc[r][t], acc[r + 1][t], acc[r + 2][t], acc[r + 3][t]);
                assert!(t0 + t < y.tokens() && r0 + r + 4 <= y.rows());
                // SAFETY: outputs `r0 + r .. + 4` of token `t0 + t` lie inside the view
                // (checked above), which `&mut y` accesses alone.
                unsafe { _mm_storeu_ps(y.token_ptr(t0 + t).add(r0 + r), sums) };
            }
        }
    } else {
        for r in 0..R {
            for t in 0..T {
                y.set(t0 + t, r0 + r, _mm512_reduce_add_ps(acc[r][t]));
            }
        }
    }
}

/// `[_mm512_reduce_add_ps(a0), …, _mm512_reduce_add_ps(a3)]` bit for bit (the same pairwise
/// tree: the 8-lane halves, then the 4-lane halves, then lanes `i + 2`, then the last pair),
/// with the four reductions sharing their shuffles: a tile's horizontal sums cost about a
/// third of the instructions, which matters when rows are short (Toto's 64-wide heads).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
fn reduce_add_4(a0: __m512, a1: __m512, a2: __m512, a3: __m512) -> __m128 {
    // 128-bit units: [a.u0, a.u1, b.u0, b.u1] + [a.u2, a.u3, b.u2, b.u3].
    let halves = |a, b| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    };
    let (s01, s23) = (halves(a0, a1), halves(a2, a3));
    // Units: the 4-lane partial sums of a0, a1, a2, a3.
    let quarters = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(s01, s23),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(s01, s23),
    );
    let lo = _mm512_castps512_ps256(quarters);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(quarters)));
    // Per 128-bit lane: [x0 + x2, x1 + x3] of a0 and a2 (low lane), a1 and a3 (high lane).
    let pairs = _mm256_add_ps(
        _mm256_shuffle_ps::<0b01_00_01_00>(lo, hi),
        _mm256_shuffle_ps::<0b11_10_11_10>(lo, hi),
    );
    let (l, h) = (
        _mm256_castps256_ps128(pairs),
        _mm256_extractf128_ps::<1>(pairs),
    );
    let sums = _mm_add_ps(
        _mm_shuffle_ps::<0b10_00_10_00>(l, h),
        _mm_shuffle_ps::<0b11_01_11_01>(l, h),
    );
    // [a0, a2, a1, a3] → [a0, a1, a2, a3].
    _mm_permute_ps::<0b11_01_10_00>(sums)
}

fn elem_bytes(fmt: Format) -> usize {
    fmt.block_bytes()
}

// ---------------------------------------------------------------------------------------------
// q8_0 / q4_0 × f32

const Q8: u8 = 0;
const Q4: u8 = 1;

/// The 32 signed values of a 32-block (`q8_0`: `i8`; `q4_0`: nibble − 8) as four vectors of
/// eight exact f32, in weight order, and the block scale.
///
/// # Safety
/// `blk` must point to a whole block (34 bytes for `q8_0`, 18 for `q4_0`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q32_block<const F: u8>(blk: *const u8) -> ([__m256; 4], f32) {
    // SAFETY: the caller guarantees the block's bytes are readable.
    unsafe {
        let d = f16_bits_to_f32([*blk, *blk.add(1)]);
        let q = if F == Q8 {
            _mm256_loadu_si256(blk.add(2).cast())
        } else {
            let packed = _mm_loadu_si128(blk.add(2).cast());
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(packed, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(packed), mask);
            _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
        };
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256::<1>(q);
        let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
        (
            [
                f(lo),
                f(_mm_srli_si128::<8>(lo)),
                f(hi),
                f(_mm_srli_si128::<8>(hi)),
            ],
            d,
        )
    }
}

/// `q8_0`/`q4_0` with f32 activations: tiles of `R` rows × `T` tokens. Each 32-block is
/// widened to f32 once per tile (values in `-128..=127`, exact) and applied to `T` tokens:
/// four FMAs give the block's partial sum (each FMA rounds once, like the scalar reference's
/// multiply-then-add of an exact product), then one FMA by the block scale, as the scalar
/// reference's `acc += partial·d`; the bound in [`super`] holds. The partial last block of a
/// row (`cols % 32 != 0`) goes through the scalar reference so only `cols` activations are read.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q32_avx2<const F: u8, const R: usize, const T: usize>(
    w: &Matrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    let (rows, cols, fmt) = (w.rows(), w.cols(), w.format());
    let bb = fmt.block_bytes();
    let full = cols / 32;
    let tile_bytes = (R * w.row_bytes()).max(1);
    let ahead = PREFETCH_BYTES.div_ceil(tile_bytes) * tile_bytes;
    let mut r0 = 0;
    while r0 < rows {
        let nr = R.min(rows - r0);
        let mut rs = [core::ptr::null::<u8>(); R];
        for (r, p) in rs.iter_mut().enumerate().take(nr) {
            *p = w.row(r0 + r).unwrap_or(&[]).as_ptr();
        }
        let mut t0 = 0;
        while t0 < n {
            let nt = T.min(n - t0);
            let mut total = [[_mm256_setzero_ps(); T]; R];
            for b in 0..full {
                for r in 0..nr {
                    let p = rs[r].wrapping_add(b * bb);
                    if T == 1 {
                        // Decode streams `nr` rows at once; fetch the next tile's rows early
                        // (a prefetch never faults, hence wrapping arithmetic).
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
                    }
                    // SAFETY: block `b < full` of a checked row of `nr` rows.
                    let (wv, d) = unsafe { q32_block::<F>(p) };
                    let dv = _mm256_set1_ps(d);
                    for t in 0..nt {
                        // SAFETY: weights `32b..32b + 32 <= cols` of token `t0 + t`.
                        let xp = unsafe { x.as_ptr().add((t0 + t) * cols + 32 * b) };
                        // SAFETY: as above, four groups of eight.
                        let part = unsafe {
                            let mut s = _mm256_mul_ps(wv[0], _mm256_loadu_ps(xp));
                            s = _mm256_fmadd_ps(wv[1], _mm256_loadu_ps(xp.add(8)), s);
                            s = _mm256_fmadd_ps(wv[2], _mm256_loadu_ps(xp.add(16)), s);
                            _mm256_fmadd_ps(wv[3], _mm256_loadu_ps(xp.add(24)), s)
                        };
                        total[r][t] = _mm256_fmadd_ps(part, dv, total[r][t]);
                    }
                }
            }
            for r in 0..nr {
                let row = w.row(r0 + r).unwrap_or(&[]);
                for t in 0..nt {
                    let xt = &x[(t0 + t) * cols..(t0 + t + 1) * cols];
                    // As in `dense_avx2`: no call without a tail, the same sum.
                    let tail = if full * 32 < cols {
                        scalar::dot_row(fmt, &row[full * bb..], &xt[full * 32..])
                    } else {
                        0.0
                    };
                    y[(t0 + t) * rows + r0 + r] = hsum(total[r][t]) + tail;
                }
            }
            t0 += nt;
        }
        r0 += nr;
    }
}

// ---------------------------------------------------------------------------------------------
// i8 × int8

/// `acc += Σ₄ w·a` per i32 lane for signed `w` and `a`, via `vpmaddubsw`: `|w|` is unsigned
/// and `a` takes `w`'s sign. A pair sum is at most `2·128·127 = 32512`, so it never saturates.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sdot_avx2(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// As [`sdot_avx2`] with one `vpdpbusd` after the sign transfer.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn sdot_vnni(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
}

macro_rules! i8_i8_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// Dense `i8` weights × int8 activations: tiles of 2 rows × 4 tokens (1 × 1 for the
        /// rest) share each weight and activation load. Each 256-block's integer sum is exact
        /// in any order, and blocks are combined with [`Combine`] in block order, so results
        /// are bit-identical to the scalar reference. A partial last block (`cols % 256`) is
        /// summed in scalar code because the row has no padding.
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &Matrix, acts: &Int8Acts, y: &mut StridedOut) {
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn tile<const R: usize, const T: usize>(
                w: &Matrix,
                acts: &Int8Acts,
                r0: usize,
                t0: usize,
                y: &mut StridedOut,
            ) {
                let cols = w.cols();
                let full = cols / QBLOCK;
                let mut comb = [[Combine::new(); T]; R];
                let mut rs = [core::ptr::null::<u8>(); R];
                for (r, p) in rs.iter_mut().enumerate() {
                    *p = w.row(r0 + r).unwrap_or(&[]).as_ptr();
                }
                let mut ap = [core::ptr::null::<i8>(); T];
                for (t, p) in ap.iter_mut().enumerate() {
                    *p = acts.token(t0 + t).as_ptr();
                }
                for b in 0..acts.blocks {
                    let mut isum = [[0i32; T]; R];
                    if b < full {
                        let mut acc = [[_mm256_setzero_si256(); T]; R];
                        for c in 0..QBLOCK / 32 {
                            let off = b * QBLOCK + 32 * c;
                            // SAFETY: `off + 32 <= full·256 <= cols` bytes of each row and of
                            // each token's padded activations.
                            unsafe {
                                let mut a = [_mm256_setzero_si256(); T];
                                for t in 0..T {
                                    a[t] = _mm256_loadu_si256(ap[t].add(off).cast());
                                }
                                for r in 0..R {
                                    let wv = _mm256_loadu_si256(rs[r].add(off).cast());
                                    for t in 0..T {
                                        acc[r][t] = $dot(acc[r][t], wv, a[t]);
                                    }
                                }
                            }
                        }
                        for r in 0..R {
                            for t in 0..T {
                                let v = acc[r][t];
                                let s = _mm_add_epi32(
                                    _mm256_castsi256_si128(v),
                                    _mm256_extracti128_si256::<1>(v),
                                );
                                let s = _mm_hadd_epi32(s, s);
                                isum[r][t] = _mm_cvtsi128_si32(_mm_hadd_epi32(s, s));
                            }
                        }
                    } else {
                        for r in 0..R {
                            let row = w.row(r0 + r).unwrap_or(&[]);
                            for t in 0..T {
                                let a = &acts.token(t0 + t)[b * QBLOCK..];
                                isum[r][t] = row[b * QBLOCK..]
                                    .iter()
                                    .zip(a)
                                    .fold(0i32, |s, (&w, &v)| s + (w as i8) as i32 * v as i32);
                            }
                        }
                    }
                    for r in 0..R {
                        for t in 0..T {
                            comb[r][t].add(acts, t0 + t, b, isum[r][t], 1.0);
                        }
                    }
                }
                for r in 0..R {
                    for t in 0..T {
                        y.set(t0 + t, r0 + r, comb[r][t].finish(acts, t0 + t));
                    }
                }
            }

            let rows = w.rows();
            let (full_r, full_t) = (rows - rows % 2, acts.tokens - acts.tokens % 4);
            // SAFETY: same features as this function; tiles stay inside rows and tokens.
            unsafe {
                for r0 in (0..full_r).step_by(2) {
                    for t0 in (0..full_t).step_by(4) {
                        tile::<2, 4>(w, acts, r0, t0, y);
                    }
                }
                for t in full_t..acts.tokens {
                    for r in 0..full_r {
                        tile::<1, 1>(w, acts, r, t, y);
                    }
                }
                for t in 0..acts.tokens {
                    for r in full_r..rows {
                        tile::<1, 1>(w, acts, r, t, y);
                    }
                }
            }
        }
    };
}

i8_i8_kernel!(i8_i8_avx2, "avx2,fma,f16c", sdot_avx2);
i8_i8_kernel!(
    i8_i8_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    sdot_vnni
);

// ---------------------------------------------------------------------------------------------
// Activation quantization

/// [`super::quantize_absmax`] 16 lanes at a time with the same float operations, so the
/// codes and the scale are identical: `max |x|` is exact in any order, `x · (127 / max)` is one
/// rounded product, and rounding half away from zero is done as `libm::roundf` does it,
/// `trunc(p + copysign(0.5 − 2⁻²⁵, p))`; NaN products (`0 · ∞` when `max` is subnormal) become
/// 0 and infinities clamp, as Rust's `clamp` then `as i8` do.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL; `q.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn quantize_absmax_avx512(x: &[f32], q: &mut [i8]) -> f32 {
    let n = x.len().min(q.len());
    let tail_mask = |i: usize| -> __mmask16 {
        let left = n - i;
        if left >= 16 {
            0xffff
        } else {
            ((1u32 << left) - 1) as __mmask16
        }
    };
    // SAFETY: every access is masked to `i..n`, inside both slices.
    unsafe {
        let mut m = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let v = _mm512_maskz_loadu_ps(tail_mask(i), x.as_ptr().add(i));
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
            i += 16;
        }
        let amax = _mm512_reduce_max_ps(m);
        if amax == 0.0 {
            q[..n].iter_mut().for_each(|v| *v = 0);
            return 0.0;
        }
        let inv = _mm512_set1_ps(127.0 / amax);
        let half = _mm512_set1_ps(0.5 - 0.25 * f32::EPSILON);
        let sign = _mm512_set1_epi32(i32::MIN);
        let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
        let mut i = 0;
        while i < n {
            let k = tail_mask(i);
            let p = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x.as_ptr().add(i)), inv);
            let bias = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(_mm512_castps_si512(p), sign),
                _mm512_castps_si512(half),
            ));
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(
                _mm512_add_ps(p, bias),
            );
            let r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r), r);
            let r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
            _mm512_mask_cvtsepi32_storeu_epi8(
                q.as_mut_ptr().add(i).cast(),
                k,
                _mm512_cvttps_epi32(r),
            );
            i += 16;
        }
        amax / 127.0
    }
}

// ---------------------------------------------------------------------------------------------
// Exponentials (softmax numerators, SiLU)

/// `e^x` in 16 lanes, within a few ulp of `libm::expf`: `x = n·ln 2 + r` with `n` rounded to
/// nearest, so `|r| ≤ ln 2 / 2`; `ln 2` is split in a 9-bit head (so `n·ln2_hi` is exact for
/// every `|n| ≤ 151`) and a tail; `e^r` by its degree-7 Taylor polynomial (truncation below
/// `0.35⁸/8! < 6·10⁻⁹` relative); `2^n` applied by `vscalefps`, which overflows to +∞ and
/// underflows through the subnormals to 0 as `expf` does. NaN passes through.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn exp16(x: __m512) -> __m512 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // `min`/`max` return their second operand when either is NaN: x stays NaN.
    let x = _mm512_max_ps(
        _mm512_set1_ps(-104.0),
        _mm512_min_ps(_mm512_set1_ps(89.0), x),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(core::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// Lane mask for elements `i..min(i + 16, n)`.
#[inline(always)]
fn mask16(i: usize, n: usize) -> __mmask16 {
    let left = n - i;
    if left >= 16 {
        0xffff
    } else {
        ((1u32 << left) - 1) as __mmask16
    }
}

/// `x[i] = e^(x[i] − shift)`; returns `Σ x[i]` (16 lane sums, then one reduction).
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn exp_shifted_avx512(x: &mut [f32], shift: f32) -> f32 {
    let n = x.len();
    let s = _mm512_set1_ps(shift);
    let mut sum = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let k = mask16(i, n);
        // SAFETY: masked to `i..n`.
        unsafe {
            let p = x.as_mut_ptr().add(i);
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p), s));
            _mm512_mask_storeu_ps(p, k, e);
            sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
        }
        i += 16;
    }
    _mm512_reduce_add_ps(sum)
}

/// [`super::Kernels::softmax`] with the maximum, the NaN check and the final scaling in vector
/// registers: the same values as the generic path (an exact maximum, [`exp_shifted_avx512`],
/// one multiply per value by the same reciprocal), for a fraction of the time on the short
/// rows of attention scores and mixture weights. Returns `false` (leaving `x` unchanged) if
/// `x` holds a NaN or only −∞.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn softmax_avx512(x: &mut [f32]) -> bool {
    let n = x.len();
    let low = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut max = low;
    let mut nan: __mmask16 = 0;
    let mut i = 0;
    while i < n {
        let k = mask16(i, n);
        // SAFETY: masked to `i..n`; the other lanes read as −∞.
        let v = unsafe { _mm512_mask_loadu_ps(low, k, x.as_ptr().add(i)) };
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        max = _mm512_max_ps(max, v);
        i += 16;
    }
    let max = _mm512_reduce_max_ps(max);
    if nan != 0 || max == f32::NEG_INFINITY {
        return false;
    }
    // SAFETY: the features are enabled here.
    let inv = _mm512_set1_ps(1.0 / unsafe { exp_shifted_avx512(x, max) });
    let mut i = 0;
    while i < n {
        let k = mask16(i, n);
        // SAFETY: masked to `i..n`.
        unsafe {
            let p = x.as_mut_ptr().add(i);
            _mm512_mask_storeu_ps(p, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p), inv));
        }
        i += 16;
    }
    true
}

/// `gate[i] = gate[i] / (1 + e^(−gate[i])) · up[i]` (SiLU, then the product).
///
/// # Safety
/// The CPU must support AVX-512 F; `up.len() >= gate.len()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn silu_mul_avx512(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < n {
        let k = mask16(i, n);
        // SAFETY: masked to `i..n`, inside both slices.
        unsafe {
            let p = gate.as_mut_ptr().add(i);
            let g = _mm512_maskz_loadu_ps(k, p);
            let u = _mm512_maskz_loadu_ps(k, up.as_ptr().add(i));
            let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let sig = _mm512_div_ps(one, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(p, k, _mm512_mul_ps(_mm512_mul_ps(g, sig), u));
        }
        i += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::is_x86_feature_detected;

    /// The shared-shuffle reduction is `_mm512_reduce_add_ps` bit for bit, special values included.
    #[test]
    fn reduce_add_4_matches_the_single_reduction() {
        if !(is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma"))
        {
            return;
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e38,
            -1e38,
        ];
        for round in 0..20_000 {
            let mut lanes = [[0f32; 16]; 4];
            for v in lanes.iter_mut().flatten() {
                let bits = next();
                // Wide exponents so that the order of the additions shows in the rounding.
                *v = if round % 7 == 0 && bits % 11 == 0 {
                    specials[(bits >> 8) as usize % specials.len()]
                } else {
                    let m = ((bits >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
                    m * f32::powi(2.0, ((bits >> 16) % 40) as i32 - 20)
                };
            }
            // SAFETY: the features were detected above; the loads read 16 floats each.
            unsafe {
                let v = lanes.map(|l| _mm512_loadu_ps(l.as_ptr()));
                let mut got = [0f32; 4];
                _mm_storeu_ps(got.as_mut_ptr(), reduce_add_4(v[0], v[1], v[2], v[3]));
                for i in 0..4 {
                    let want = _mm512_reduce_add_ps(v[i]);
                    assert!(
                        got[i].to_bits() == want.to_bits() || (got[i].is_nan() && want.is_nan()),
                        "round {round} lane {i}: {} vs {want}",
                        got[i]
                    );
                }
            }
        }
    }
}
