//! `q4_0`: blocks of 32 4-bit weights with one f16 scale, byte-compatible with ggml `Q4_0`.
//!
//! Block layout (18 bytes): `d: f16` at offset 0, then 16 bytes; byte `j` holds weight `j` in
//! its low nibble and weight `j + 16` in its high nibble. Weight = `(nibble - 8) * d`.
//! Quantization follows ggml's reference: `d = m / -8` where `m` is the signed value of largest
//! magnitude, nibble = `min(15, trunc(x / d + 8.5))`.

use super::float::{f16_to_f32, f32_to_f16};
use crate::error::Result;

/// Weights per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 18;

/// Quantizes 32 weights into one block.
pub fn quantize_block(x: &[f32; BLOCK_ELEMS]) -> [u8; BLOCK_BYTES] {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if libm::fabsf(v) > amax {
            amax = libm::fabsf(v);
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut out = [0u8; BLOCK_BYTES];
    out[..2].copy_from_slice(&f32_to_f16(d));
    for j in 0..16 {
        let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let hi = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        out[2 + j] = lo | (hi << 4);
    }
    out
}

/// Splits a block into its scale and its 32 signed values in `-8..=7`.
#[inline(always)]
pub fn unpack_block(block: &[u8; BLOCK_BYTES]) -> (f32, [i8; BLOCK_ELEMS]) {
    let mut q = [0i8; BLOCK_ELEMS];
    for j in 0..16 {
        let b = block[2 + j];
        q[j] = (b & 0x0f) as i8 - 8;
        q[j + 16] = (b >> 4) as i8 - 8;
    }
    (f16_to_f32([block[0], block[1]]), q)
}

/// Dequantizes the first `cols` weights of a stored row into `out`.
pub fn dequantize_row(row: &[u8], cols: usize, out: &mut [f32]) -> Result<()> {
    super::dequantize_blocks(row, cols, out, unpack_block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_value_maps_to_nibble_zero() {
        let mut x = [0.0f32; 32];
        x[3] = -4.0;
        x[20] = 2.0;
        let b = quantize_block(&x);
        let (d, q) = unpack_block(&b);
        assert_eq!(d, 0.5);
        assert_eq!(q[3], -8);
        assert_eq!(q[3] as f32 * d, -4.0);
        assert_eq!(q[20] as f32 * d, 2.0);
    }
}
