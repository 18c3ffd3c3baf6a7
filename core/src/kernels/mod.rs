//! Matrix-vector and matrix-matrix products over [`Matrix`] views.
//!
//! Placeholder carried by the `rwkv` branch until the `kernels` branch lands: a portable scalar
//! implementation with exactly the contracted signatures, for the formats the RWKV-6 tests use
//! (f32, f16, bf16, i8 and tq2_0). The lead replaces this module at merge.

use crate::error::{Error, Name, Result};
use crate::quant::{Format, Matrix};
use half::{bf16, f16};

/// CPU features detected at run time by a hosted caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// x86 AVX2 + FMA.
    pub avx2: bool,
}

/// The selected kernel implementation (only the scalar one in this placeholder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    _private: (),
}

impl Kernels {
    /// The portable scalar kernels.
    pub const fn scalar() -> Self {
        Kernels { _private: () }
    }

    /// The best kernels the compile-time target features allow.
    pub const fn for_target() -> Self {
        Kernels::scalar()
    }

    /// Kernels for run-time detected features.
    ///
    /// # Safety
    /// The caller asserts the features are present on the executing CPU.
    #[allow(unsafe_code)]
    pub unsafe fn from_cpu_features(_features: CpuFeatures) -> Self {
        Kernels::scalar()
    }

    /// `y[r] = sum_c W[r, c] * x[c]`.
    pub fn gemv(&self, w: &Matrix, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.gemm(w, x, 1, y)
    }

    /// `x` is `n` rows of `w.cols()` values (token-major); `y` is `n` rows of `w.rows()`.
    pub fn gemm(&self, w: &Matrix, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let (rows, cols) = (w.rows(), w.cols());
        check_len(n * cols, x.len())?;
        check_len(n * rows, y.len())?;
        for r in 0..rows {
            let row = w.row(r).ok_or(Error::OutOfRange)?;
            for t in 0..n {
                y[t * rows + r] = dot_row(w.format(), row, &x[t * cols..(t + 1) * cols])?;
            }
        }
        Ok(())
    }
}

fn check_len(expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            expected: expected as u64,
            found: found as u64,
        })
    }
}

fn dot_row(format: Format, row: &[u8], x: &[f32]) -> Result<f32> {
    let mut acc = 0.0f32;
    match format {
        Format::F32 => {
            for (b, &xv) in row.chunks_exact(4).zip(x) {
                acc += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * xv;
            }
        }
        Format::F16 => {
            for (b, &xv) in row.chunks_exact(2).zip(x) {
                acc += f16::from_le_bytes([b[0], b[1]]).to_f32() * xv;
            }
        }
        Format::Bf16 => {
            for (b, &xv) in row.chunks_exact(2).zip(x) {
                acc += bf16::from_le_bytes([b[0], b[1]]).to_f32() * xv;
            }
        }
        Format::I8 => {
            for (&b, &xv) in row.iter().zip(x) {
                acc += (b as i8) as f32 * xv;
            }
        }
        Format::Tq2_0 => {
            for (block, xs) in row.chunks_exact(66).zip(x.chunks(256)) {
                let d = f16::from_le_bytes([block[64], block[65]]).to_f32();
                let mut sum = 0.0f32;
                for (i, &xv) in xs.iter().enumerate() {
                    let (half, within) = (i / 128, i % 128);
                    let (shift, byte) = (within / 32, within % 32);
                    let q = (block[half * 32 + byte] >> (2 * shift)) & 3;
                    sum += (q as f32 - 1.0) * xv;
                }
                acc += d * sum;
            }
        }
        _ => {
            return Err(Error::UnsupportedFormat {
                tensor: Name::new(format.name()),
            });
        }
    }
    Ok(acc)
}
