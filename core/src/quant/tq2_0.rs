//! `tq2_0`: 256 ternary weights in 66 bytes (2.0625 bits per weight), byte-compatible with
//! llama.cpp's `TQ2_0` (GGUF type 35).
//!
//! Block layout: `qs: [u8; 64]` then `d: f16` at offset 64. Weight `e` has code
//! `q = w + 1` (`-1 → 0b00`, `0 → 0b01`, `+1 → 0b10`) stored in byte `32·(e/128) + e%32` at bit
//! `2·((e%128)/32)`: byte `m` of each 32-byte half holds weights `m, m+32, m+64, m+96` of that
//! half. Weight value = `(q − 1)·d`. The layout lets SIMD code unpack 32 consecutive weights
//! with one shift and one mask.

use super::float::{f16_to_f32, f32_to_f16};
use crate::error::Result;

/// Weights per block.
pub const BLOCK_ELEMS: usize = super::trits::BLOCK_ELEMS;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 66;
/// Byte offset of the f16 scale inside a block.
pub const SCALE_OFFSET: usize = 64;

/// Packs 256 trits (each `-1`, `0` or `1`; other values are clamped) and a raw f16 scale.
pub fn pack_block(trits: &[i8; BLOCK_ELEMS], d_f16: [u8; 2]) -> [u8; BLOCK_BYTES] {
    let mut out = [0u8; BLOCK_BYTES];
    for half in 0..2 {
        for m in 0..32 {
            let mut byte = 0u8;
            for n in 0..4 {
                let t = trits[128 * half + 32 * n + m].clamp(-1, 1);
                byte |= ((t + 1) as u8) << (2 * n);
            }
            out[32 * half + m] = byte;
        }
    }
    out[SCALE_OFFSET..].copy_from_slice(&d_f16);
    out
}

/// The block's scale `d`.
#[inline(always)]
pub fn scale(block: &[u8; BLOCK_BYTES]) -> f32 {
    f16_to_f32([block[SCALE_OFFSET], block[SCALE_OFFSET + 1]])
}

/// Unpacks the 256 codes (`w + 1`, in `0..=2`; `3` only in corrupt data) in weight order.
#[inline(always)]
pub fn unpack_codes(block: &[u8; BLOCK_BYTES], codes: &mut [u8; BLOCK_ELEMS]) {
    unpack_codes_prefix(block, codes, BLOCK_ELEMS);
}

/// Like [`unpack_codes`], but only guarantees `codes[..len]` (in groups of 32 weights): the
/// tail block of a row narrower than 256 columns unpacks only what it uses.
#[inline(always)]
pub fn unpack_codes_prefix(block: &[u8; BLOCK_BYTES], codes: &mut [u8; BLOCK_ELEMS], len: usize) {
    for half in 0..2 {
        for n in 0..4 {
            if 128 * half + 32 * n >= len {
                return;
            }
            for m in 0..32 {
                codes[128 * half + 32 * n + m] = (block[32 * half + m] >> (2 * n)) & 3;
            }
        }
    }
}

/// Unpacks the block into its scale and its 256 trits (`code − 1`).
pub fn unpack_trits(block: &[u8; BLOCK_BYTES]) -> (f32, [i8; BLOCK_ELEMS]) {
    let mut codes = [0u8; BLOCK_ELEMS];
    unpack_codes(block, &mut codes);
    (scale(block), super::trits::from_codes(&codes))
}

/// Quantizes 256 weights the way llama.cpp's reference quantizer does: `d = max|x|`,
/// `trit = round(x / d)`. Lossless when the block already is `d·{-1, 0, 1}` with `d`
/// representable in f16; for general weights use the absmean quantizer in `goldcrest-alloc`.
pub fn quantize_block(x: &[f32; BLOCK_ELEMS]) -> [u8; BLOCK_BYTES] {
    let (trits, d) = super::trits::round_to_max(x);
    pack_block(&trits, f32_to_f16(d))
}

/// Dequantizes the first `cols` weights of a stored row into `out`.
pub fn dequantize_row(row: &[u8], cols: usize, out: &mut [f32]) -> Result<()> {
    super::dequantize_blocks(row, cols, out, unpack_trits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prefix_unpack_agrees_with_the_full_unpack(
            bytes in proptest::collection::vec(any::<u8>(), BLOCK_BYTES),
            len in 0usize..=BLOCK_ELEMS,
        ) {
            let block: [u8; BLOCK_BYTES] = bytes.try_into().unwrap();
            let (mut full, mut prefix) = ([0u8; BLOCK_ELEMS], [0u8; BLOCK_ELEMS]);
            unpack_codes(&block, &mut full);
            unpack_codes_prefix(&block, &mut prefix, len);
            prop_assert_eq!(&full[..len], &prefix[..len]);
        }
    }

    #[test]
    fn layout_matches_ggml_description() {
        let mut t = [0i8; 256];
        t[0] = 1; // byte 0, bits 0..2 → code 2
        t[32] = -1; // byte 0, bits 2..4 → code 0
        t[128 + 97] = 1; // byte 32 + 1, bits 6..8 → code 2
        let b = pack_block(&t, f32_to_f16(0.5));
        assert_eq!(b[0], 0b01_01_00_10);
        assert_eq!(b[33], 0b10_01_01_01);
        assert_eq!(b[1], 0b01_01_01_01);
        assert_eq!(&b[64..], &f32_to_f16(0.5));
    }

    proptest! {
        #[test]
        fn pack_unpack_roundtrip(t in proptest::collection::vec(-1i8..=1, 256), d in -100.0f32..100.0) {
            let trits: [i8; 256] = t.try_into().unwrap();
            let b = pack_block(&trits, f32_to_f16(d));
            let (d2, t2) = unpack_trits(&b);
            prop_assert_eq!(t2, trits);
            prop_assert_eq!(d2, f16_to_f32(f32_to_f16(d)));
            // The reference quantizer is lossless on its own output.
            let mut x = [0.0f32; 256];
            dequantize_row(&b, 256, &mut x).unwrap();
            if d2 > 0.0 && trits.iter().any(|&v| v != 0) {
                prop_assert_eq!(quantize_block(&x), b);
            }
        }
    }
}
