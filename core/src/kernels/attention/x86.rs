//! AVX2 + FMA + F16C attention primitives: eight lanes, two accumulators for dot products,
//! the tail (fewer than eight values) in scalar code. Codes are widened to exact f32 before
//! the FMA, so every term is rounded once, as in the bound of [`super`].
#![allow(unsafe_code)]

use super::scalar;
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

/// Eight f32 from eight f16 bit patterns at `p`.
#[inline(always)]
unsafe fn load_f16(p: *const u16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable u16 at `p` and F16C.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
}

/// Eight f32 from eight bytes at `p`.
#[inline(always)]
unsafe fn load_u8(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees 8 readable bytes at `p`.
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))) }
}

/// The low and high nibbles of eight bytes at `p`, as two vectors of eight f32.
#[inline(always)]
unsafe fn load_u4(p: *const u8) -> (__m256, __m256) {
    // SAFETY: the caller guarantees 8 readable bytes at `p`.
    unsafe {
        let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
        let lo = _mm256_and_si256(b, _mm256_set1_epi32(15));
        let hi = _mm256_srli_epi32(b, 4);
        (_mm256_cvtepi32_ps(lo), _mm256_cvtepi32_ps(hi))
    }
}

/// # Safety
/// AVX2 and FMA must be present; `k.len() == q.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_f32(k: &[f32], q: &[f32]) -> f32 {
    let n = k.len() & !7;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= k.len() == q.len().
        unsafe {
            let a = _mm256_loadu_ps(k.as_ptr().add(i));
            acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(q.as_ptr().add(i)), acc);
        }
        i += 8;
    }
    // SAFETY: AVX2 is enabled for this function.
    unsafe { hsum(acc) + scalar::dot_f32(&k[n..], &q[n..]) }
}

/// # Safety
/// AVX2, FMA and F16C must be present; `k.len() == q.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(k: &[u16], q: &[f32]) -> f32 {
    let n = k.len() & !7;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= k.len() == q.len().
        unsafe {
            let a = load_f16(k.as_ptr().add(i));
            acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(q.as_ptr().add(i)), acc);
        }
        i += 8;
    }
    // SAFETY: AVX2 is enabled for this function.
    unsafe { hsum(acc) + scalar::dot_f16(&k[n..], &q[n..]) }
}

/// # Safety
/// AVX2 and FMA must be present; `codes.len() == q.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_u8(codes: &[u8], q: &[f32]) -> f32 {
    let n = codes.len() & !7;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= codes.len() == q.len().
        unsafe {
            let a = load_u8(codes.as_ptr().add(i));
            acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(q.as_ptr().add(i)), acc);
        }
        i += 8;
    }
    // SAFETY: AVX2 is enabled for this function.
    unsafe { hsum(acc) + scalar::dot_u8(&codes[n..], &q[n..]) }
}

/// # Safety
/// AVX2 and FMA must be present; `q.len() == 2·codes.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_u4(codes: &[u8], q: &[f32]) -> f32 {
    let half = codes.len();
    let n = half & !7;
    let (mut lo_acc, mut hi_acc) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= half; q holds 2·half values.
        unsafe {
            let (lo, hi) = load_u4(codes.as_ptr().add(i));
            lo_acc = _mm256_fmadd_ps(lo, _mm256_loadu_ps(q.as_ptr().add(i)), lo_acc);
            hi_acc = _mm256_fmadd_ps(hi, _mm256_loadu_ps(q.as_ptr().add(half + i)), hi_acc);
        }
        i += 8;
    }
    let mut tail = 0.0;
    for j in n..half {
        tail += (codes[j] & 15) as f32 * q[j];
        tail += (codes[j] >> 4) as f32 * q[half + j];
    }
    // SAFETY: AVX2 is enabled for this function.
    unsafe { hsum(_mm256_add_ps(lo_acc, hi_acc)) + tail }
}

/// # Safety
/// AVX2 and FMA must be present; `v.len() == out.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy_f32(w: f32, v: &[f32], out: &mut [f32]) {
    let n = v.len() & !7;
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= v.len() == out.len().
        unsafe {
            let o = out.as_mut_ptr().add(i);
            let x = _mm256_loadu_ps(v.as_ptr().add(i));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o)));
        }
        i += 8;
    }
    scalar::axpy_f32(w, &v[n..], &mut out[n..]);
}

/// # Safety
/// AVX2, FMA and F16C must be present; `v.len() == out.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_f16(w: f32, v: &[u16], out: &mut [f32]) {
    let n = v.len() & !7;
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= v.len() == out.len().
        unsafe {
            let o = out.as_mut_ptr().add(i);
            let x = load_f16(v.as_ptr().add(i));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o)));
        }
        i += 8;
    }
    scalar::axpy_f16(w, &v[n..], &mut out[n..]);
}

/// # Safety
/// AVX2 and FMA must be present; `codes.len() == out.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy_u8(w: f32, codes: &[u8], out: &mut [f32]) {
    let n = codes.len() & !7;
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= codes.len() == out.len().
        unsafe {
            let o = out.as_mut_ptr().add(i);
            let x = load_u8(codes.as_ptr().add(i));
            _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(o)));
        }
        i += 8;
    }
    scalar::axpy_u8(w, &codes[n..], &mut out[n..]);
}

/// # Safety
/// AVX2 and FMA must be present; `out.len() == 2·codes.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy_u4(w: f32, codes: &[u8], out: &mut [f32]) {
    let half = codes.len();
    let n = half & !7;
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= half; out holds 2·half values.
        unsafe {
            let (lo, hi) = load_u4(codes.as_ptr().add(i));
            let o = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, lo, _mm256_loadu_ps(o)));
            let o = out.as_mut_ptr().add(half + i);
            _mm256_storeu_ps(o, _mm256_fmadd_ps(wv, hi, _mm256_loadu_ps(o)));
        }
        i += 8;
    }
    for j in n..half {
        out[j] += w * (codes[j] & 15) as f32;
        out[half + j] += w * (codes[j] >> 4) as f32;
    }
}

/// [`axpy_f16`] for consecutive rows of `v` (`v.len() == w.len()·out.len()`), row by row in
/// order. Runs of 64 outputs stay in eight registers across all rows; each output still sees
/// the same fused multiply-adds in the same order as one [`axpy_f16`] call per row, so results
/// are identical.
///
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
                    *a = _mm256_fmadd_ps(wv, load_f16(p.add(8 * j)), *a);
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
