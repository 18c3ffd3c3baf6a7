//! NEON attention primitives: four lanes, two accumulators for dot products, the tail in
//! scalar code. f16 is widened with `fcvtl` (base ARMv8; the f16 vector types are unstable in
//! Rust, so the instruction is emitted with `asm!`). Codes are widened to exact f32 before the
//! FMA, so every term is rounded once, as in the bound of [`super`].
#![allow(unsafe_code)]

use super::forms::{F16, F32, Form, U4, U8, axpy_tail, dot_tail};
use core::arch::aarch64::*;
use core::arch::asm;

/// Eight f32 as two vectors of four.
type Eight = (float32x4_t, float32x4_t);

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

/// Eight u16 lanes to two vectors of four f32.
#[inline(always)]
unsafe fn widen(w: uint16x8_t) -> Eight {
    // SAFETY: NEON is enabled by the callers.
    unsafe {
        (
            vcvtq_f32_u32(vmovl_u16(vget_low_u16(w))),
            vcvtq_f32_u32(vmovl_high_u16(w)),
        )
    }
}

/// How eight codes of a form become f32 lanes: eight values per run.
trait Lanes<const R: usize>: Form<R> {
    /// # Safety
    /// 8 readable codes at `p`; NEON is enabled by the callers.
    unsafe fn load8(p: *const Self::Code) -> [Eight; R];
}

impl Lanes<1> for F32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> [Eight; 1] {
        // SAFETY: the caller guarantees 8 readable f32 at `p`.
        unsafe { [(vld1q_f32(p), vld1q_f32(p.add(4)))] }
    }
}

impl Lanes<1> for F16 {
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> [Eight; 1] {
        // SAFETY: the caller guarantees 8 readable u16 at `p`.
        unsafe { [(load_f16(p), load_f16(p.add(4)))] }
    }
}

impl Lanes<1> for U8 {
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> [Eight; 1] {
        // SAFETY: the caller guarantees 8 readable bytes at `p`.
        unsafe { [widen(vmovl_u8(vld1_u8(p)))] }
    }
}

impl Lanes<2> for U4 {
    /// The low nibbles, then the high nibbles.
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> [Eight; 2] {
        // SAFETY: the caller guarantees 8 readable bytes at `p`.
        unsafe {
            let b = vld1_u8(p);
            let lo = vand_u8(b, vdup_n_u8(15));
            let hi = vshr_n_u8::<4>(b);
            [widen(vmovl_u8(lo)), widen(vmovl_u8(hi))]
        }
    }
}

/// `Σ value·q` over a row of any form; run `r` of code `j` meets `q[r·len + j]`.
///
/// # Safety
/// NEON is enabled in the caller; `q.len() == R·codes.len()`.
#[inline(always)]
unsafe fn dot<F: Lanes<R>, const R: usize>(codes: &[F::Code], q: &[f32]) -> f32 {
    let len = codes.len();
    let n = len & !7;
    // SAFETY: NEON is enabled in the caller.
    let (mut a0, mut a1) = unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) };
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= len, and q holds R runs of len values.
        unsafe {
            let x = F::load8(codes.as_ptr().add(i));
            for (r, (x0, x1)) in x.into_iter().enumerate() {
                let qp = q.as_ptr().add(r * len + i);
                a0 = vfmaq_f32(a0, x0, vld1q_f32(qp));
                a1 = vfmaq_f32(a1, x1, vld1q_f32(qp.add(4)));
            }
        }
        i += 8;
    }
    // SAFETY: NEON is enabled in the caller.
    unsafe { vaddvq_f32(vaddq_f32(a0, a1)) + dot_tail::<F, R>(codes, q, n) }
}

/// `out += w·value` over a row of any form; run `r` of code `j` updates `out[r·len + j]`.
///
/// # Safety
/// NEON is enabled in the caller; `out.len() == R·codes.len()`.
#[inline(always)]
unsafe fn axpy<F: Lanes<R>, const R: usize>(w: f32, codes: &[F::Code], out: &mut [f32]) {
    let len = codes.len();
    let n = len & !7;
    // SAFETY: NEON is enabled in the caller.
    let wv = unsafe { vdupq_n_f32(w) };
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= len, and out holds R runs of len values.
        unsafe {
            let x = F::load8(codes.as_ptr().add(i));
            for (r, (x0, x1)) in x.into_iter().enumerate() {
                let o = out.as_mut_ptr().add(r * len + i);
                vst1q_f32(o, vfmaq_f32(vld1q_f32(o), wv, x0));
                vst1q_f32(o.add(4), vfmaq_f32(vld1q_f32(o.add(4)), wv, x1));
            }
        }
        i += 8;
    }
    axpy_tail::<F, R>(w, codes, out, n);
}

simd_primitives!("neon", "neon");
