//! Attention over a KV cache: `q·k` scores and the weighted sum of values, for every cache
//! storage form (f32, f16, 8-bit and 4-bit codes).
//!
//! The decoder's cache stores each `(position, head)` row of keys or values either as floats
//! or as unsigned codes `u` with one scale `s` and one offset `m` per row (`x ≈ m + s·u`).
//! These primitives see only the codes; the decoder applies `s` and `m`, so one call per row
//! costs `head_dim` multiply-adds whatever the form:
//!
//! - [`Kernels::dot_u8`] / [`Kernels::dot_u4`] give `Σ u_i·q_i`; the score is
//!   `s·Σ u_i·q_i + m·Σ q_i` (`Σ q_i` once per query head).
//! - [`Kernels::axpy_u8`] / [`Kernels::axpy_u4`] add `w·u_i`; the decoder passes `w·s` and
//!   adds `Σ_j w_j·m_j` to every output once per head.
//!
//! 4-bit rows of `n` values (`n` even) take `n/2` bytes: byte `j` holds value `j` in its low
//! nibble and value `j + n/2` in its high nibble, so one byte load feeds two runs of lanes.
//!
//! **Bound** (tested against [`scalar`]): SIMD paths sum in another order (lanes, then a
//! horizontal sum) and fuse multiply-adds, so a dot product of `n` terms is within
//! `(n + 2)·2⁻²⁴·Σ|k_i·q_i|` of the scalar one, and each `axpy` output within one rounding
//! (`2⁻²⁴·|out|` plus `2⁻²⁴·|w·v_i|`) of it.

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::Isa;
use super::{Kernels, check_len};
use crate::error::Result;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod forms;

/// Defines an ISA module's eight exported primitives, each its generic `dot` or `axpy` loop for
/// one form, compiled with the ISA's target features (`$f16` for the f16 form, which may need
/// more). The module provides `dot::<Form, RUNS>` and `axpy::<Form, RUNS>`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! simd_primitives {
    ($features:literal, $f16:literal) => {
        simd_primitives!(@form $features, F32, 1, f32, dot_f32, axpy_f32);
        simd_primitives!(@form $f16, F16, 1, u16, dot_f16, axpy_f16);
        simd_primitives!(@form $features, U8, 1, u8, dot_u8, axpy_u8);
        simd_primitives!(@form $features, U4, 2, u8, dot_u4, axpy_u4);
    };
    (@form $features:literal, $form:ident, $runs:literal, $code:ty, $dot:ident, $axpy:ident) => {
        /// # Safety
        #[doc = concat!("The CPU has ", $features, "; `q.len() == ", $runs, "·codes.len()`.")]
        #[target_feature(enable = $features)]
        pub unsafe fn $dot(codes: &[$code], q: &[f32]) -> f32 {
            // SAFETY: the features are enabled here; lengths are the caller's contract.
            unsafe { dot::<$form, $runs>(codes, q) }
        }

        /// # Safety
        #[doc = concat!("The CPU has ", $features, "; `out.len() == ", $runs, "·codes.len()`.")]
        #[target_feature(enable = $features)]
        pub unsafe fn $axpy(w: f32, codes: &[$code], out: &mut [f32]) {
            // SAFETY: the features are enabled here; lengths are the caller's contract.
            unsafe { axpy::<$form, $runs>(w, codes, out) }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod aarch64;

/// The portable reference: sequential sums, products rounded then added.
pub mod scalar {
    use half::f16;

    /// `Σ k_i·q_i`.
    pub fn dot_f32(k: &[f32], q: &[f32]) -> f32 {
        k.iter().zip(q).map(|(a, b)| a * b).sum()
    }

    /// `Σ f32(k_i)·q_i` over f16 bit patterns.
    pub fn dot_f16(k: &[u16], q: &[f32]) -> f32 {
        k.iter()
            .zip(q)
            .map(|(&a, b)| f16::from_bits(a).to_f32() * b)
            .sum()
    }

    /// `Σ u_i·q_i` over 8-bit codes.
    pub fn dot_u8(codes: &[u8], q: &[f32]) -> f32 {
        codes.iter().zip(q).map(|(&u, b)| u as f32 * b).sum()
    }

    /// `Σ u_i·q_i` over 4-bit codes in the split-nibble layout.
    pub fn dot_u4(codes: &[u8], q: &[f32]) -> f32 {
        let (lo, hi) = q.split_at(codes.len());
        let a: f32 = codes
            .iter()
            .zip(lo)
            .map(|(&u, b)| (u & 15) as f32 * b)
            .sum();
        let b: f32 = codes
            .iter()
            .zip(hi)
            .map(|(&u, b)| (u >> 4) as f32 * b)
            .sum();
        a + b
    }

    /// `out_i += w·v_i`.
    pub fn axpy_f32(w: f32, v: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += w * x;
        }
    }

    /// `out_i += w·f32(v_i)` over f16 bit patterns.
    pub fn axpy_f16(w: f32, v: &[u16], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += w * f16::from_bits(x).to_f32();
        }
    }

    /// `out_i += w·u_i` over 8-bit codes.
    pub fn axpy_u8(w: f32, codes: &[u8], out: &mut [f32]) {
        for (o, &u) in out.iter_mut().zip(codes) {
            *o += w * u as f32;
        }
    }

    /// `out_i += w·u_i` over 4-bit codes in the split-nibble layout.
    pub fn axpy_u4(w: f32, codes: &[u8], out: &mut [f32]) {
        let (lo, hi) = out.split_at_mut(codes.len());
        for ((l, h), &u) in lo.iter_mut().zip(hi.iter_mut()).zip(codes) {
            *l += w * (u & 15) as f32;
            *h += w * (u >> 4) as f32;
        }
    }
}

/// `rows` rows of `width` values that start `stride` apart fit in `len` values.
fn check_strided_rows(rows: usize, stride: usize, width: usize, len: usize) -> Result<()> {
    let Some(last) = rows.checked_sub(1) else {
        return Ok(());
    };
    let need = last
        .checked_mul(stride)
        .and_then(|v| v.checked_add(width))
        .ok_or(crate::error::Error::OutOfRange)?;
    if need > len {
        return Err(crate::error::Error::LengthMismatch {
            expected: need as u64,
            found: len as u64,
        });
    }
    Ok(())
}

fn check_u4(codes: usize, values: usize) -> Result<()> {
    check_len(codes.saturating_mul(2), values)
}

/// Calls the ISA module's version of `$f` when this `Kernels` has one, else the scalar one.
macro_rules! dispatch {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        match $self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2`/`Avx512Vnni` are only constructed when AVX2, FMA and F16C are
            // present (compile-time cfg or the `from_cpu_features` contract).
            Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::$f($($arg),*) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: `Neon`/`NeonDotprod` are only constructed when NEON is present.
            Isa::Neon | Isa::NeonDotprod => unsafe { aarch64::$f($($arg),*) },
            _ => scalar::$f($($arg),*),
        }
    };
}

impl Kernels {
    /// `Σ k_i·q_i` (`k.len() == q.len()`).
    #[allow(unsafe_code)]
    pub fn dot_f32(&self, k: &[f32], q: &[f32]) -> Result<f32> {
        check_len(q.len(), k.len())?;
        Ok(dispatch!(self, dot_f32(k, q)))
    }

    /// [`Kernels::dot_f32`] of `q` with `out.len()` rows of `k` that start `stride` apart (row
    /// `i` is `k[i·stride..i·stride + q.len()]`), in one call: identical results, without a
    /// call and its checks per row (for example one head's keys in a cache of whole tokens).
    #[allow(unsafe_code)]
    pub fn dot_rows_f32(&self, k: &[f32], stride: usize, q: &[f32], out: &mut [f32]) -> Result<()> {
        check_strided_rows(out.len(), stride, q.len(), k.len())?;
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `dispatch!`; every row was checked to lie inside `k`.
            Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::dot_rows_f32(k, stride, q, out) },
            _ => {
                for (i, o) in out.iter_mut().enumerate() {
                    let row = &k[i * stride..i * stride + q.len()];
                    *o = dispatch!(self, dot_f32(row, q));
                }
            }
        }
        Ok(())
    }

    /// [`Kernels::axpy_f32`] of `out.len()` values from each of `w.len()` rows of `v` that
    /// start `stride` apart (row `r` is `v[r·stride..r·stride + out.len()]`) with weight `w[r]`,
    /// in row order: identical results to one call per row, without a call and its checks per
    /// row (for example one head's values in a cache of whole tokens).
    #[allow(unsafe_code)]
    pub fn axpy_rows_f32(
        &self,
        w: &[f32],
        v: &[f32],
        stride: usize,
        out: &mut [f32],
    ) -> Result<()> {
        check_strided_rows(w.len(), stride, out.len(), v.len())?;
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `dispatch!`; every row was checked to lie inside `v`.
            Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::axpy_rows_f32(w, v, stride, out) },
            _ => {
                let d = out.len();
                for (r, &wr) in w.iter().enumerate() {
                    dispatch!(self, axpy_f32(wr, &v[r * stride..r * stride + d], out));
                }
            }
        }
        Ok(())
    }

    /// `Σ f32(k_i)·q_i` with `k` as f16 bit patterns.
    #[allow(unsafe_code)]
    pub fn dot_f16(&self, k: &[u16], q: &[f32]) -> Result<f32> {
        check_len(q.len(), k.len())?;
        Ok(dispatch!(self, dot_f16(k, q)))
    }

    /// [`Kernels::dot_f16`] of `q` with each of `out.len()` consecutive rows of `k`
    /// (`k.len() == out.len()·q.len()`), in one call: identical results, without a call and
    /// its checks per row.
    #[allow(unsafe_code)]
    pub fn dot_rows_f16(&self, k: &[u16], q: &[f32], out: &mut [f32]) -> Result<()> {
        check_len(out.len().saturating_mul(q.len()), k.len())?;
        if q.is_empty() {
            // No rows to cut `k` into: every row is empty, as is its dot product.
            for o in out.iter_mut() {
                *o = dispatch!(self, dot_f16(&[], q));
            }
            return Ok(());
        }
        for (o, row) in out.iter_mut().zip(k.chunks_exact(q.len())) {
            *o = dispatch!(self, dot_f16(row, q));
        }
        Ok(())
    }

    /// [`Kernels::axpy_f16`] of each of `w.len()` consecutive rows of `v` with weight `w[r]`, in
    /// row order (`v.len() == w.len()·out.len()`): identical results; the AVX2 path keeps 64
    /// outputs in registers across the rows.
    #[allow(unsafe_code)]
    pub fn axpy_rows_f16(&self, w: &[f32], v: &[u16], out: &mut [f32]) -> Result<()> {
        check_len(w.len().saturating_mul(out.len()), v.len())?;
        if out.is_empty() {
            return Ok(());
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `dispatch!`; lengths checked above.
            Isa::Avx2 | Isa::Avx512Vnni => unsafe { x86::axpy_rows_f16(w, v, out) },
            _ => {
                for (&wr, row) in w.iter().zip(v.chunks_exact(out.len())) {
                    self.axpy_f16(wr, row, out)?;
                }
            }
        }
        Ok(())
    }

    /// `Σ u_i·q_i` over 8-bit codes (`codes.len() == q.len()`).
    #[allow(unsafe_code)]
    pub fn dot_u8(&self, codes: &[u8], q: &[f32]) -> Result<f32> {
        check_len(q.len(), codes.len())?;
        Ok(dispatch!(self, dot_u8(codes, q)))
    }

    /// `Σ u_i·q_i` over 4-bit codes in the split-nibble layout (`q.len() == 2·codes.len()`).
    #[allow(unsafe_code)]
    pub fn dot_u4(&self, codes: &[u8], q: &[f32]) -> Result<f32> {
        check_u4(codes.len(), q.len())?;
        Ok(dispatch!(self, dot_u4(codes, q)))
    }

    /// `out_i += w·v_i` (`v.len() == out.len()`).
    #[allow(unsafe_code)]
    pub fn axpy_f32(&self, w: f32, v: &[f32], out: &mut [f32]) -> Result<()> {
        check_len(out.len(), v.len())?;
        dispatch!(self, axpy_f32(w, v, out));
        Ok(())
    }

    /// `out_i += w·f32(v_i)` with `v` as f16 bit patterns.
    #[allow(unsafe_code)]
    pub fn axpy_f16(&self, w: f32, v: &[u16], out: &mut [f32]) -> Result<()> {
        check_len(out.len(), v.len())?;
        dispatch!(self, axpy_f16(w, v, out));
        Ok(())
    }

    /// `out_i += w·u_i` over 8-bit codes.
    #[allow(unsafe_code)]
    pub fn axpy_u8(&self, w: f32, codes: &[u8], out: &mut [f32]) -> Result<()> {
        check_len(out.len(), codes.len())?;
        dispatch!(self, axpy_u8(w, codes, out));
        Ok(())
    }

    /// `out_i += w·u_i` over 4-bit codes in the split-nibble layout.
    #[allow(unsafe_code)]
    pub fn axpy_u4(&self, w: f32, codes: &[u8], out: &mut [f32]) -> Result<()> {
        check_u4(codes.len(), out.len())?;
        dispatch!(self, axpy_u4(w, codes, out));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
