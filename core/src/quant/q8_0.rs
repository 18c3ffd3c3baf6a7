//! `q8_0`: blocks of 32 int8 weights with one f16 scale, byte-compatible with ggml `Q8_0`.
//!
//! Block layout (34 bytes): `d: f16` at offset 0, then `qs: [i8; 32]`. Weight `i` is
//! `qs[i] * d`. Quantization uses `d = max|x| / 127`, `qs = round(x / d)` (ties away from zero),
//! exactly as ggml's reference quantizer.

use super::float::{f16_to_f32, f32_to_f16};
use crate::error::Result;

/// Weights per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 34;

/// Quantizes 32 weights into one block.
pub fn quantize_block(x: &[f32; BLOCK_ELEMS]) -> [u8; BLOCK_BYTES] {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut out = [0u8; BLOCK_BYTES];
    out[..2].copy_from_slice(&f32_to_f16(d));
    for (o, v) in out[2..].iter_mut().zip(x) {
        *o = libm::roundf(v * id) as i8 as u8;
    }
    out
}

/// Splits a block into its scale and its 32 int8 values.
#[inline(always)]
pub fn unpack_block(block: &[u8; BLOCK_BYTES]) -> (f32, [i8; BLOCK_ELEMS]) {
    let mut q = [0i8; BLOCK_ELEMS];
    for (o, &b) in q.iter_mut().zip(&block[2..]) {
        *o = b as i8;
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
    fn block_roundtrip_is_close() {
        let mut x = [0.0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 15.5) * 0.1;
        }
        let b = quantize_block(&x);
        let mut y = [0.0f32; 32];
        dequantize_row(&b, 32, &mut y).unwrap();
        let d = f16_to_f32([b[0], b[1]]);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= d * 0.5 + 1e-3, "{a} {b}");
        }
    }
}
