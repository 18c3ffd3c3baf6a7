//! AVX2 + FMA + F16C attention primitives: eight lanes, one accumulator per run of values for
//! dot products, the tail (fewer than eight codes) in scalar code. Codes are widened to exact
//! f32 before the FMA, so every term is rounded once, as in the bound of [`super`].
#![allow(unsafe_code)]

use super::forms::{F16, F32, Form, U4, U8, axpy_tail, dot_tail};
use core::arch::x86_64::*;

/// Sum of the eight lanes.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: AVX is implied by the callers' AVX2 target feature.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// How eight codes of a form become f32 lanes: one vector per run.
trait Lanes<const R: usize>: Form<R> {
    /// # Safety
    /// 8 readable codes at `p`; the CPU features of the calling kernel.
    unsafe fn load8(p: *const Self::Code) -> [__m256; R];
}

impl Lanes<1> for F32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> [__m256; 1] {
        // SAFETY: the caller guarantees 8 readable f32 at `p`.
        unsafe { [_mm256_loadu_ps(p)] }
    }
}

impl Lanes<1> for F16 {
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> [__m256; 1] {
        // SAFETY: the caller guarantees 8 readable u16 at `p` and F16C.
        unsafe { [_mm256_cvtph_ps(_mm_loadu_si128(p.cast()))] }
    }
}

impl Lanes<1> for U8 {
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> [__m256; 1] {
        // SAFETY: the caller guarantees 8 readable bytes at `p`.
        unsafe {
            [_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                p.cast(),
            )))]
        }
    }
}

impl Lanes<2> for U4 {
    /// The low nibbles, then the high nibbles.
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> [__m256; 2] {
        // SAFETY: the caller guarantees 8 readable bytes at `p`.
        unsafe {
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
            let lo = _mm256_and_si256(b, _mm256_set1_epi32(15));
            let hi = _mm256_srli_epi32(b, 4);
            [_mm256_cvtepi32_ps(lo), _mm256_cvtepi32_ps(hi)]
        }
    }
}

/// `Σ value·q` over a row of any form; run `r` of code `j` meets `q[r·len + j]`.
///
/// # Safety
/// AVX2 and FMA (and F16C for f16) are enabled in the caller; `q.len() == R·codes.len()`.
#[inline(always)]
unsafe fn dot<F: Lanes<R>, const R: usize>(codes: &[F::Code], q: &[f32]) -> f32 {
    let len = codes.len();
    let n = len & !7;
    // SAFETY: AVX is enabled in the caller.
    let mut acc = [unsafe { _mm256_setzero_ps() }; R];
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= len, and q holds R runs of len values.
        unsafe {
            let x = F::load8(codes.as_ptr().add(i));
            for (r, (a, v)) in acc.iter_mut().zip(x).enumerate() {
                *a = _mm256_fmadd_ps(v, _mm256_loadu_ps(q.as_ptr().add(r * len + i)), *a);
            }
        }
        i += 8;
    }
    // SAFETY: AVX is enabled in the caller.
    unsafe {
        let total = acc[1..].iter().fold(acc[0], |t, &a| _mm256_add_ps(t, a));
        hsum(total) + dot_tail::<F, R>(codes, q, n)
    }
}

/// `out += w·value` over a row of any form; run `r` of code `j` updates `out[r·len + j]`.
///
/// # Safety
/// AVX2 and FMA (and F16C for f16) are enabled in the caller; `out.len() == R·codes.len()`.
#[inline(always)]
unsafe fn axpy<F: Lanes<R>, const R: usize>(w: f32, codes: &[F::Code], out: &mut [f32]) {
    let len = codes.len();
    let n = len & !7;
    // SAFETY: AVX is enabled in the caller.
    let wv = unsafe { _mm256_set1_ps(w) };
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= len, and out holds R runs of len values.
        unsafe {
            let x = F::load8(codes.as_ptr().add(i));
            for (r, v) in x.into_iter().enumerate() {
                let o = out.as_mut_ptr().add(r * len + i);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, v, _mm256_loadu_ps(o)));
            }
        }
        i += 8;
    }
    axpy_tail::<F, R>(w, codes, out, n);
}

simd_primitives!("avx2,fma", "avx2,fma,f16c");

/// [`axpy_f32`] of `out.len()` values from each row of `v` (rows `stride` apart), row by row
/// in order. Up to 64 outputs stay in registers across all rows; each output sees the same
/// operations in the same order as one [`axpy_f32`] call per row (fused multiply-adds on the
/// 8-wide part, multiply then add on the tail), so results are identical.
///
/// # Safety
/// AVX2 and FMA must be present; every row lies inside `v`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy_rows_f32(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    let d = out.len();
    let wide = d & !7;
    let mut c0 = 0;
    while c0 < wide {
        // SAFETY (each arm): `c0 + 8·J <= wide <= d`, and every row holds `d` values.
        c0 += unsafe {
            match (wide - c0) / 8 {
                8.. => axpy_rows_f32_run::<8>(w, v, stride, out, c0),
                4..=7 => axpy_rows_f32_run::<4>(w, v, stride, out, c0),
                2 | 3 => axpy_rows_f32_run::<2>(w, v, stride, out, c0),
                _ => axpy_rows_f32_run::<1>(w, v, stride, out, c0),
            }
        };
    }
    for (r, &wr) in w.iter().enumerate() {
        let row = &v[r * stride..r * stride + d];
        for (o, &x) in out[wide..].iter_mut().zip(&row[wide..]) {
            *o += wr * x;
        }
    }
}

/// Outputs `c0..c0 + 8·J` of [`axpy_rows_f32`] in `J` registers; returns `8·J`.
///
/// # Safety
/// AVX2 and FMA must be present; `c0 + 8·J <= out.len()`; every row lies inside `v`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn axpy_rows_f32_run<const J: usize>(
    w: &[f32],
    v: &[f32],
    stride: usize,
    out: &mut [f32],
    c0: usize,
) -> usize {
    // SAFETY: outputs `c0..c0 + 8J` and, for each row, values `r·stride + c0..+8J` are inside
    // the slices (the caller's contract).
    unsafe {
        let o = out.as_mut_ptr().add(c0);
        let mut acc = [_mm256_setzero_ps(); J];
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(o.add(8 * j));
        }
        for (r, &wr) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wr);
            let p = v.as_ptr().add(r * stride + c0);
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p.add(8 * j)), *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(8 * j), *a);
        }
    }
    8 * J
}

/// [`axpy_f16`] for consecutive rows of `v` (`v.len() == w.len()·out.len()`), row by row in
/// order. Runs of 64 outputs stay in eight registers across all rows; each output still sees
/// the same fused multiply-adds in the same order as one [`axpy_f16`] call per row, so results
/// are identical.
///
/// `out[i] = dot_f32(k[i·stride ..][..q.len()], q)` with the dot product inlined.
///
/// # Safety
/// AVX2 and FMA must be present; every row lies inside `k`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_rows_f32(k: &[f32], stride: usize, q: &[f32], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let row = &k[i * stride..i * stride + q.len()];
        // SAFETY: the features are enabled here; `row.len() == q.len()`.
        *o = unsafe { dot::<F32, 1>(row, q) };
    }
}

/// # Safety
/// AVX2, FMA and F16C must be present; `v.len() == w.len()·out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_rows_f16(w: &[f32], v: &[u16], out: &mut [f32]) {
    let d = out.len();
    let rows = w.len();
    let wide = d & !63;
    let mut c0 = 0;
    while c0 < wide {
        // SAFETY: outputs `c0..c0 + 64` and, for each row `r`, values `r·d + c0..+64`, all
        // inside the slices (`c0 + 64 <= d`, `v.len() == rows·d`).
        unsafe {
            let o = out.as_mut_ptr().add(c0);
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(o.add(8 * j));
            }
            for (r, &wr) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(wr);
                let p = v.as_ptr().add(r * d + c0);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(
                        wv,
                        _mm256_cvtph_ps(_mm_loadu_si128(p.add(8 * j).cast())),
                        *a,
                    );
                }
            }
            for (j, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(8 * j), *a);
            }
        }
        c0 += 64;
    }
    if wide < d {
        for r in 0..rows {
            // SAFETY: the caller's contract, on the remaining columns of row `r`.
            unsafe { axpy_f16(w[r], &v[r * d + wide..(r + 1) * d], &mut out[wide..]) };
        }
    }
}
