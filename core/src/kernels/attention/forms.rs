//! The cache storage forms as the SIMD loops see them. Each ISA module writes its dot-product
//! and `axpy` loops once, generic over a form, and adds only how eight codes load into lanes;
//! the scalar tail (fewer than eight codes) is shared by both ISAs.

use half::f16;

/// A storage form with `R` runs of values per stored code: 1, or 2 for split nibbles (byte
/// `j` of a row of `n` values holds value `j` and value `j + n/2`).
pub(super) trait Form<const R: usize> {
    /// What one element of a stored row is.
    type Code: Copy;
    /// The values one code holds, run by run.
    fn values(code: Self::Code) -> [f32; R];
}

/// f32 rows.
pub(super) struct F32;
/// f16 rows, as bit patterns.
pub(super) struct F16;
/// 8-bit codes.
pub(super) struct U8;
/// 4-bit codes in the split-nibble layout.
pub(super) struct U4;

impl Form<1> for F32 {
    type Code = f32;
    #[inline(always)]
    fn values(code: f32) -> [f32; 1] {
        [code]
    }
}

impl Form<1> for F16 {
    type Code = u16;
    #[inline(always)]
    fn values(code: u16) -> [f32; 1] {
        [f16::from_bits(code).to_f32()]
    }
}

impl Form<1> for U8 {
    type Code = u8;
    #[inline(always)]
    fn values(code: u8) -> [f32; 1] {
        [code as f32]
    }
}

impl Form<2> for U4 {
    type Code = u8;
    #[inline(always)]
    fn values(code: u8) -> [f32; 2] {
        [(code & 15) as f32, (code >> 4) as f32]
    }
}

/// `Σ value·q` over the codes from `from` on, summed in order (run `r` of code `j` meets
/// `q[r·len + j]`): the tail a SIMD loop leaves.
#[inline(always)]
pub(super) fn dot_tail<F: Form<R>, const R: usize>(
    codes: &[F::Code],
    q: &[f32],
    from: usize,
) -> f32 {
    let len = codes.len();
    let mut sum = 0.0;
    for (j, &code) in codes.iter().enumerate().skip(from) {
        for (r, value) in F::values(code).into_iter().enumerate() {
            sum += value * q[r * len + j];
        }
    }
    sum
}

/// `out += w·value` over the codes from `from` on: the tail a SIMD loop leaves.
#[inline(always)]
pub(super) fn axpy_tail<F: Form<R>, const R: usize>(
    w: f32,
    codes: &[F::Code],
    out: &mut [f32],
    from: usize,
) {
    let len = codes.len();
    for (j, &code) in codes.iter().enumerate().skip(from) {
        for (r, value) in F::values(code).into_iter().enumerate() {
            out[r * len + j] += w * value;
        }
    }
}
