//! NEON attention primitives: four lanes, two accumulators for dot products, the tail in
//! scalar code. f16 is widened with `fcvtl` (base ARMv8; the f16 vector types are unstable in
//! Rust, so the instruction is emitted with `asm!`). Codes are widened to exact f32 before the
//! FMA, so every term is rounded once, as in the bound of [`super`].
#![allow(unsafe_code)]

use super::scalar;
use core::arch::aarch64::*;
use core::arch::asm;

/// Four f32 from four f16 bit patterns at `p`.
#[inline(always)]
unsafe fn load_f16(p: *const u16) -> float32x4_t {
    // SAFETY: the caller guarantees 4 readable u16 at `p`; NEON is enabled by the callers.
    unsafe {
        let h = vld1_u16(p);
        let out: float32x4_t;
        asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
        out
    }
}

/// Eight f32 (two vectors) from eight bytes at `p`.
#[inline(always)]
unsafe fn load_u8(p: *const u8) -> (float32x4_t, float32x4_t) {
    // SAFETY: the caller guarantees 8 readable bytes at `p`.
    unsafe { widen(vmovl_u8(vld1_u8(p))) }
}

/// Eight u16 lanes to two vectors of four f32.
#[inline(always)]
unsafe fn widen(w: uint16x8_t) -> (float32x4_t, float32x4_t) {
    // SAFETY: NEON is enabled by the callers.
    unsafe {
        (
            vcvtq_f32_u32(vmovl_u16(vget_low_u16(w))),
            vcvtq_f32_u32(vmovl_high_u16(w)),
        )
    }
}

/// The low nibbles and the high nibbles of eight bytes at `p`, each as eight f32.
#[inline(always)]
unsafe fn load_u4(p: *const u8) -> [(float32x4_t, float32x4_t); 2] {
    // SAFETY: the caller guarantees 8 readable bytes at `p`.
    unsafe {
        let b = vld1_u8(p);
        let lo = vand_u8(b, vdup_n_u8(15));
        let hi = vshr_n_u8::<4>(b);
        [widen(vmovl_u8(lo)), widen(vmovl_u8(hi))]
    }
}

/// # Safety
/// NEON must be present; `k.len() == q.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_f32(k: &[f32], q: &[f32]) -> f32 {
    let n = k.len() & !7;
    let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= k.len() == q.len().
        unsafe {
            let (kp, qp) = (k.as_ptr().add(i), q.as_ptr().add(i));
            a0 = vfmaq_f32(a0, vld1q_f32(kp), vld1q_f32(qp));
            a1 = vfmaq_f32(a1, vld1q_f32(kp.add(4)), vld1q_f32(qp.add(4)));
        }
        i += 8;
    }
    vaddvq_f32(vaddq_f32(a0, a1)) + scalar::dot_f32(&k[n..], &q[n..])
}

/// # Safety
/// NEON must be present; `k.len() == q.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_f16(k: &[u16], q: &[f32]) -> f32 {
    let n = k.len() & !7;
    let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= k.len() == q.len().
        unsafe {
            let (kp, qp) = (k.as_ptr().add(i), q.as_ptr().add(i));
            a0 = vfmaq_f32(a0, load_f16(kp), vld1q_f32(qp));
            a1 = vfmaq_f32(a1, load_f16(kp.add(4)), vld1q_f32(qp.add(4)));
        }
        i += 8;
    }
    vaddvq_f32(vaddq_f32(a0, a1)) + scalar::dot_f16(&k[n..], &q[n..])
}

/// # Safety
/// NEON must be present; `codes.len() == q.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_u8(codes: &[u8], q: &[f32]) -> f32 {
    let n = codes.len() & !7;
    let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= codes.len() == q.len().
        unsafe {
            let (u0, u1) = load_u8(codes.as_ptr().add(i));
            let qp = q.as_ptr().add(i);
            a0 = vfmaq_f32(a0, u0, vld1q_f32(qp));
            a1 = vfmaq_f32(a1, u1, vld1q_f32(qp.add(4)));
        }
        i += 8;
    }
    vaddvq_f32(vaddq_f32(a0, a1)) + scalar::dot_u8(&codes[n..], &q[n..])
}

/// # Safety
/// NEON must be present; `q.len() == 2·codes.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_u4(codes: &[u8], q: &[f32]) -> f32 {
    let half = codes.len();
    let n = half & !7;
    let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= half; q holds 2·half values.
        unsafe {
            let [(l0, l1), (h0, h1)] = load_u4(codes.as_ptr().add(i));
            let (lp, hp) = (q.as_ptr().add(i), q.as_ptr().add(half + i));
            a0 = vfmaq_f32(a0, l0, vld1q_f32(lp));
            a1 = vfmaq_f32(a1, l1, vld1q_f32(lp.add(4)));
            a0 = vfmaq_f32(a0, h0, vld1q_f32(hp));
            a1 = vfmaq_f32(a1, h1, vld1q_f32(hp.add(4)));
        }
        i += 8;
    }
    let mut tail = 0.0;
    for j in n..half {
        tail += (codes[j] & 15) as f32 * q[j];
        tail += (codes[j] >> 4) as f32 * q[half + j];
    }
    vaddvq_f32(vaddq_f32(a0, a1)) + tail
}

/// `out[i..i + 8] += w·(x0, x1)`.
#[inline(always)]
unsafe fn axpy8(w: float32x4_t, x: (float32x4_t, float32x4_t), out: *mut f32) {
    // SAFETY: the caller guarantees 8 writable f32 at `out`.
    unsafe {
        vst1q_f32(out, vfmaq_f32(vld1q_f32(out), w, x.0));
        vst1q_f32(out.add(4), vfmaq_f32(vld1q_f32(out.add(4)), w, x.1));
    }
}

/// # Safety
/// NEON must be present; `v.len() == out.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn axpy_f32(w: f32, v: &[f32], out: &mut [f32]) {
    let n = v.len() & !7;
    let wv = vdupq_n_f32(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= v.len() == out.len().
        unsafe {
            let p = v.as_ptr().add(i);
            axpy8(
                wv,
                (vld1q_f32(p), vld1q_f32(p.add(4))),
                out.as_mut_ptr().add(i),
            );
        }
        i += 8;
    }
    scalar::axpy_f32(w, &v[n..], &mut out[n..]);
}

/// # Safety
/// NEON must be present; `v.len() == out.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn axpy_f16(w: f32, v: &[u16], out: &mut [f32]) {
    let n = v.len() & !7;
    let wv = vdupq_n_f32(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= v.len() == out.len().
        unsafe {
            let p = v.as_ptr().add(i);
            axpy8(
                wv,
                (load_f16(p), load_f16(p.add(4))),
                out.as_mut_ptr().add(i),
            );
        }
        i += 8;
    }
    scalar::axpy_f16(w, &v[n..], &mut out[n..]);
}

/// # Safety
/// NEON must be present; `codes.len() == out.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn axpy_u8(w: f32, codes: &[u8], out: &mut [f32]) {
    let n = codes.len() & !7;
    let wv = vdupq_n_f32(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= codes.len() == out.len().
        unsafe { axpy8(wv, load_u8(codes.as_ptr().add(i)), out.as_mut_ptr().add(i)) };
        i += 8;
    }
    scalar::axpy_u8(w, &codes[n..], &mut out[n..]);
}

/// # Safety
/// NEON must be present; `out.len() == 2·codes.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn axpy_u4(w: f32, codes: &[u8], out: &mut [f32]) {
    let half = codes.len();
    let n = half & !7;
    let wv = vdupq_n_f32(w);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= half; out holds 2·half values.
        unsafe {
            let [lo, hi] = load_u4(codes.as_ptr().add(i));
            axpy8(wv, lo, out.as_mut_ptr().add(i));
            axpy8(wv, hi, out.as_mut_ptr().add(half + i));
        }
        i += 8;
    }
    for j in n..half {
        out[j] += w * (codes[j] & 15) as f32;
        out[half + j] += w * (codes[j] >> 4) as f32;
    }
}
