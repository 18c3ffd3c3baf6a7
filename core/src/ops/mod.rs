//! Plain numeric building blocks shared by the models: norms, activations, softmax and the small
//! vector-times-matrix product used by low-rank (LoRA) weights.
//!
//! Everything works on caller slices and never allocates. Weight vectors (norm gains, mixing
//! coefficients) are read through [`Vector`], a borrowed view that accepts f32, f16 or bf16 so a
//! file can keep them at half precision.

use crate::error::{Error, Name, Result};
use crate::quant::{Format, Matrix};
use half::slice::HalfBitsSliceExt;
use half::{bf16, f16};

pub mod sample;

/// A borrowed weight vector in f32, f16 or bf16 (little-endian, as stored in the file).
#[derive(Debug, Clone, Copy)]
pub enum Vector<'a> {
    /// binary32 values.
    F32(&'a [f32]),
    /// binary16 values.
    F16(&'a [f16]),
    /// bfloat16 values.
    Bf16(&'a [bf16]),
}

impl<'a> Vector<'a> {
    /// Views `bytes` as a vector of `format`; `name` only labels errors.
    ///
    /// Fails for formats other than f32/f16/bf16, lengths that are not whole elements, and data
    /// not aligned for its element type (goldcrest never copies weights).
    pub fn from_bytes(name: &str, format: Format, bytes: &'a [u8]) -> Result<Self> {
        let misaligned = |required: u8| Error::Misaligned {
            tensor: Name::new(name),
            required,
        };
        match format {
            Format::F32 => bytemuck::try_cast_slice(bytes)
                .map(Vector::F32)
                .map_err(|_| misaligned(4)),
            // Through u16 bits: half's own Pod impls would need its `bytemuck` feature, which
            // pulls bytemuck's derive macros (and syn) into every build of core.
            Format::F16 => bytemuck::try_cast_slice::<u8, u16>(bytes)
                .map(|bits| Vector::F16(bits.reinterpret_cast()))
                .map_err(|_| misaligned(2)),
            Format::Bf16 => bytemuck::try_cast_slice::<u8, u16>(bytes)
                .map(|bits| Vector::Bf16(bits.reinterpret_cast()))
                .map_err(|_| misaligned(2)),
            _ => Err(Error::UnsupportedFormat {
                tensor: Name::new(name),
            }),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Vector::F32(v) => v.len(),
            Vector::F16(v) => v.len(),
            Vector::Bf16(v) => v.len(),
        }
    }

    /// Whether the vector has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f32 (0.0 past the end; callers check lengths once at load time).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Vector::F32(v) => v.get(i).copied().unwrap_or(0.0),
            Vector::F16(v) => v.get(i).map_or(0.0, |x| x.to_f32()),
            Vector::Bf16(v) => v.get(i).map_or(0.0, |x| x.to_f32()),
        }
    }

    /// Elements `start..start + len` as a vector of the same format, or `None` if out of range.
    pub fn slice(&self, start: usize, len: usize) -> Option<Vector<'a>> {
        let range = start..start.checked_add(len)?;
        Some(match self {
            Vector::F32(v) => Vector::F32(v.get(range)?),
            Vector::F16(v) => Vector::F16(v.get(range)?),
            Vector::Bf16(v) => Vector::Bf16(v.get(range)?),
        })
    }
}

fn same_len(expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            expected: expected as u64,
            found: found as u64,
        })
    }
}

/// Affine LayerNorm in place: `x = (x - mean) / sqrt(var + eps) * weight + bias`, with the
/// biased variance, as torch computes it.
pub fn layer_norm(x: &mut [f32], weight: Vector, bias: Vector, eps: f32) -> Result<()> {
    same_len(x.len(), weight.len())?;
    same_len(x.len(), bias.len())?;
    normalize(x, eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v = *v * weight.get(i) + bias.get(i);
    }
    Ok(())
}

/// GroupNorm in place over consecutive groups of `x.len() / groups` channels, each normalised on
/// its own, then one affine transform over all channels (RWKV's per-head `ln_x`).
pub fn group_norm(
    x: &mut [f32],
    groups: usize,
    weight: Vector,
    bias: Vector,
    eps: f32,
) -> Result<()> {
    same_len(x.len(), weight.len())?;
    same_len(x.len(), bias.len())?;
    if groups == 0 || !x.len().is_multiple_of(groups) {
        return Err(Error::OutOfRange);
    }
    for group in x.chunks_exact_mut(x.len() / groups) {
        normalize(group, eps);
    }
    for (i, v) in x.iter_mut().enumerate() {
        *v = *v * weight.get(i) + bias.get(i);
    }
    Ok(())
}

/// Zero mean, unit variance (biased), no affine part. Two passes keep it accurate in f32.
fn normalize(x: &mut [f32], eps: f32) {
    if x.is_empty() {
        return;
    }
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / libm::sqrtf(var + eps);
    for v in x.iter_mut() {
        *v = (*v - mean) * inv;
    }
}

/// RMSNorm in place: `x = x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(x: &mut [f32], weight: Vector, eps: f32) -> Result<()> {
    same_len(x.len(), weight.len())?;
    if x.is_empty() {
        return Ok(());
    }
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(mean_sq + eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v = *v * inv * weight.get(i);
    }
    Ok(())
}

/// Logistic sigmoid.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// SiLU (swish): `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Squared ReLU: `max(x, 0)^2`.
#[inline]
pub fn relu_squared(x: f32) -> f32 {
    let r = x.max(0.0);
    r * r
}

/// Applies `f` to every element in place.
pub fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32) {
    for v in x.iter_mut() {
        *v = f(*v);
    }
}

/// `e^x` within 2 ulp of the exact value for `x` in `-87.3..=88.7` (inputs below are clamped
/// to `-87.3`, giving about `1.2e-38` instead of a subnormal or 0; above, to `88.7`). NaN stays
/// NaN. Branch-free (Cody–Waite reduction by `ln 2`, degree-6 polynomial on
/// `|r| ≤ ln 2 / 2`, exponent bits), so loops over slices vectorize: attention calls it
/// tens of millions of times per long prompt, where `libm::expf` cost a tenth of the run.
#[inline]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split so that `n·LN2_HI` is exact for |n| < 2^9.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // n is in -126..=128 here; 2^n from its exponent bits (n = 128 only for x > 88.38,
    // where the result overflows to infinity as e^x does).
    let bits = ((n as i32 + 127).clamp(0, 255) as u32) << 23;
    e * f32::from_bits(bits)
}

/// Numerically stable softmax in place (`libm::expf`, sequential sum). An empty slice is left
/// alone; a slice containing NaN is an error rather than a silent NaN distribution.
pub fn softmax(x: &mut [f32]) -> Result<()> {
    crate::kernels::Kernels::scalar().softmax(x)
}

/// `y[c] = sum_r x[r] * W[r, c]`: a row vector times a matrix stored `[in, out]`, the layout of
/// low-rank adapter weights. `W` must be f32, f16 or bf16.
pub fn vecmat(x: &[f32], w: &Matrix, y: &mut [f32]) -> Result<()> {
    same_len(w.rows(), x.len())?;
    same_len(w.cols(), y.len())?;
    y.fill(0.0);
    for (r, &xr) in x.iter().enumerate() {
        let row = w.row(r).ok_or(Error::OutOfRange)?;
        // Typed views (aligned: `Matrix::new` checked it) so the f32 loop vectorizes.
        match Vector::from_bytes("vecmat", w.format(), row)? {
            Vector::F32(row) => {
                for (yc, wc) in y.iter_mut().zip(row) {
                    *yc += xr * wc;
                }
            }
            Vector::F16(row) => {
                for (yc, wc) in y.iter_mut().zip(row) {
                    *yc += xr * wc.to_f32();
                }
            }
            Vector::Bf16(row) => {
                for (yc, wc) in y.iter_mut().zip(row) {
                    *yc += xr * wc.to_f32();
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::slice::HalfFloatSliceExt;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn layer_norm_matches_hand_computation() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        let w = [1.0f32, 2.0, 1.0, 1.0];
        let b = [0.0f32, 0.0, 1.0, 0.0];
        layer_norm(&mut x, Vector::F32(&w), Vector::F32(&b), 1e-5).unwrap();
        // mean 2.5, var 1.25
        let s = 1.0 / (1.25f32 + 1e-5).sqrt();
        let want = [-1.5 * s, -0.5 * s * 2.0, 0.5 * s + 1.0, 1.5 * s];
        for (a, b) in x.iter().zip(want) {
            assert!(close(*a, b, 1e-6), "{a} vs {b}");
        }
    }

    #[test]
    fn group_norm_normalises_each_group_alone() {
        let mut x = [1.0f32, 3.0, 10.0, 30.0];
        let ones = [1.0f32; 4];
        let zeros = [0.0f32; 4];
        group_norm(&mut x, 2, Vector::F32(&ones), Vector::F32(&zeros), 0.0).unwrap();
        for (a, b) in x.iter().zip([-1.0f32, 1.0, -1.0, 1.0]) {
            assert!(close(*a, b, 1e-6));
        }
        assert!(group_norm(&mut x, 3, Vector::F32(&ones), Vector::F32(&zeros), 0.0).is_err());
    }

    #[test]
    fn exp_fast_is_within_two_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_fast(x), libm::exp(x as f64) as f32);
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, want {want} ({ulp} ulp)");
            x += 0.001_7;
        }
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-1000.0) < 1.3e-38);
        assert!(exp_fast(f32::NAN).is_nan());
        assert_eq!(exp_fast(f32::NEG_INFINITY), exp_fast(-87.3));
    }

    #[test]
    fn softmax_sums_to_one_and_rejects_nan() {
        let mut x = [1000.0f32, 1000.0, f32::NEG_INFINITY];
        softmax(&mut x).unwrap();
        assert_eq!(x, [0.5, 0.5, 0.0]);
        let mut y = [1.0f32, f32::NAN];
        assert_eq!(softmax(&mut y), Err(Error::NonFinite));
    }

    #[test]
    fn vecmat_is_transposed_gemv() {
        // W = [[1, 2, 3], [4, 5, 6]] stored [in=2, out=3].
        let w: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = Matrix::new("w", Format::F32, 2, 3, bytemuck::cast_slice(&w)).unwrap();
        let mut y = [0.0f32; 3];
        vecmat(&[1.0, 10.0], &m, &mut y).unwrap();
        assert_eq!(y, [41.0, 52.0, 63.0]);
        assert!(vecmat(&[1.0], &m, &mut y).is_err());
    }

    #[test]
    fn vector_reads_half_precision() {
        let h = [f16::from_f32(0.5), f16::from_f32(-2.0)];
        let bits: &[u16] = h.reinterpret_cast();
        let v = Vector::from_bytes("v", Format::F16, bytemuck::cast_slice(bits)).unwrap();
        assert_eq!((v.len(), v.get(0), v.get(1)), (2, 0.5, -2.0));
        assert!(Vector::from_bytes("v", Format::Q8_0, &[0u8; 34]).is_err());
    }

    #[test]
    fn activations() {
        assert_eq!(relu_squared(-1.0), 0.0);
        assert_eq!(relu_squared(3.0), 9.0);
        assert!(close(silu(1.0), 0.7310586, 1e-6));
        assert!(close(sigmoid(0.0), 0.5, 0.0));
    }
}
