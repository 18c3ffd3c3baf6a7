//! Element formats without blocks: f16, bf16 and i8 rows, converted to f32.
//!
//! Conversions from f16 and bf16 to f32 are exact, so every kernel that widens weights before
//! multiplying computes on the same values as the scalar reference.

use crate::error::Result;

/// Decodes one little-endian IEEE binary16 value.
#[inline(always)]
pub fn f16_to_f32(bytes: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(bytes)).to_f32()
}

/// Encodes an f32 as little-endian IEEE binary16 (round to nearest even).
#[inline]
pub fn f32_to_f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// Decodes one little-endian bfloat16 value (exact: bf16 is the top half of an f32).
#[inline(always)]
pub fn bf16_to_f32(bytes: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(bytes) as u32) << 16)
}

/// Encodes an f32 as little-endian bfloat16 (round to nearest even; NaN stays NaN).
#[inline]
pub fn f32_to_bf16(x: f32) -> [u8; 2] {
    half::bf16::from_f32(x).to_bits().to_le_bytes()
}

fn check(row: &[u8], cols: usize, elem: usize, out: &[f32]) -> Result<()> {
    super::check_block_row(row, cols, 1, elem, out).map(|_| ())
}

/// Widens `cols` stored f32 values (little-endian bytes, any alignment) into `out`.
pub fn dequantize_row_f32(row: &[u8], cols: usize, out: &mut [f32]) -> Result<()> {
    check(row, cols, 4, out)?;
    for (o, b) in out.iter_mut().zip(row.chunks_exact(4)).take(cols) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Widens `cols` f16 values into `out`.
pub fn dequantize_row_f16(row: &[u8], cols: usize, out: &mut [f32]) -> Result<()> {
    check(row, cols, 2, out)?;
    for (o, b) in out.iter_mut().zip(row.chunks_exact(2)).take(cols) {
        *o = f16_to_f32([b[0], b[1]]);
    }
    Ok(())
}

/// Widens `cols` bf16 values into `out`.
pub fn dequantize_row_bf16(row: &[u8], cols: usize, out: &mut [f32]) -> Result<()> {
    check(row, cols, 2, out)?;
    for (o, b) in out.iter_mut().zip(row.chunks_exact(2)).take(cols) {
        *o = bf16_to_f32([b[0], b[1]]);
    }
    Ok(())
}

/// Widens `cols` plain i8 values into `out`.
pub fn dequantize_row_i8(row: &[u8], cols: usize, out: &mut [f32]) -> Result<()> {
    check(row, cols, 1, out)?;
    for (o, &b) in out.iter_mut().zip(row.iter()).take(cols) {
        *o = b as i8 as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_and_f16_roundtrip_representable_values() {
        for v in [0.0f32, -0.0, 1.0, -2.5, 1.0 / 1024.0] {
            assert_eq!(f16_to_f32(f32_to_f16(v)).to_bits(), v.to_bits());
            assert_eq!(bf16_to_f32(f32_to_bf16(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn short_rows_are_errors() {
        let mut out = [0.0f32; 4];
        assert!(dequantize_row_f16(&[0u8; 7], 4, &mut out).is_err());
        assert!(dequantize_row_i8(&[0u8; 4], 5, &mut out).is_err());
    }
}
