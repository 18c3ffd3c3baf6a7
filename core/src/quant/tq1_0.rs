//! `tq1_0`: 256 ternary weights in 54 bytes (1.6875 bits per weight), byte-compatible with
//! llama.cpp's `TQ1_0` (GGUF type 34).
//!
//! Block layout: `qs: [u8; 48]`, `qh: [u8; 4]`, then `d: f16` at offset 52. Digits are
//! `t = w + 1` in `0..=2`. A byte holds five digits as `n = Σ t_k·3^(4−k)` (digit 0 most
//! significant), stored in fixed point as `q = ceil(n·256 / 243)`; digit `k` comes back as
//! `((q·3^k mod 256)·3) >> 8`, without division. Digit order:
//!
//! - `qs[0..32]`: byte `m`, digit `k` is weight `m + 32k` (weights 0..160);
//! - `qs[32..48]`: byte `m`, digit `k` is weight `160 + m + 16k` (weights 160..240);
//! - `qh[0..4]`: byte `j`, digit `k < 4` is weight `240 + j + 4k`; the fifth digit is 0.

use super::float::{f16_to_f32, f32_to_f16};
use crate::error::Result;

/// Weights per block.
pub const BLOCK_ELEMS: usize = super::trits::BLOCK_ELEMS;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 54;
/// Byte offset of the f16 scale inside a block.
pub const SCALE_OFFSET: usize = 52;

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

#[inline(always)]
fn to_fixed(n: u16) -> u8 {
    // n ≤ 242, so the quotient is ≤ 255.
    (n * 256).div_ceil(243) as u8
}

#[inline(always)]
fn digit(q: u8, k: usize) -> u8 {
    ((q.wrapping_mul(POW3[k]) as u16 * 3) >> 8) as u8
}

/// Packs 256 trits (each `-1`, `0` or `1`; other values are clamped) and a raw f16 scale.
#[allow(clippy::needless_range_loop)] // the index is the weight position formula
pub fn pack_block(trits: &[i8; BLOCK_ELEMS], d_f16: [u8; 2]) -> [u8; BLOCK_BYTES] {
    let t = |e: usize| (trits[e].clamp(-1, 1) + 1) as u16;
    let mut out = [0u8; BLOCK_BYTES];
    for m in 0..32 {
        let n = (0..5).fold(0u16, |acc, k| acc * 3 + t(m + 32 * k));
        out[m] = to_fixed(n);
    }
    for m in 0..16 {
        let n = (0..5).fold(0u16, |acc, k| acc * 3 + t(160 + m + 16 * k));
        out[32 + m] = to_fixed(n);
    }
    for j in 0..4 {
        let n = (0..4).fold(0u16, |acc, k| acc * 3 + t(240 + j + 4 * k));
        out[48 + j] = to_fixed(n * 3);
    }
    out[SCALE_OFFSET..].copy_from_slice(&d_f16);
    out
}

/// The block's scale `d`.
#[inline(always)]
pub fn scale(block: &[u8; BLOCK_BYTES]) -> f32 {
    f16_to_f32([block[SCALE_OFFSET], block[SCALE_OFFSET + 1]])
}

/// Unpacks the 256 codes (`w + 1`, in `0..=2`) in weight order.
///
/// Written as fixed-trip loops over whole byte groups so that compilers vectorize it when it is
/// inlined into a SIMD-enabled kernel.
#[inline(always)]
pub fn unpack_codes(block: &[u8; BLOCK_BYTES], codes: &mut [u8; BLOCK_ELEMS]) {
    unpack_codes_prefix(block, codes, BLOCK_ELEMS);
}

/// Like [`unpack_codes`], but only guarantees `codes[..len]` (in groups of 32, 16 and 4
/// weights, so a little more may be written): a row narrower than one block (width 128 models)
/// decodes half the base-3 digits instead of all of them.
#[inline(always)]
pub fn unpack_codes_prefix(block: &[u8; BLOCK_BYTES], codes: &mut [u8; BLOCK_ELEMS], len: usize) {
    for k in 0..5 {
        if 32 * k >= len {
            return;
        }
        for m in 0..32 {
            codes[32 * k + m] = digit(block[m], k);
        }
    }
    for k in 0..5 {
        if 160 + 16 * k >= len {
            return;
        }
        for m in 0..16 {
            codes[160 + 16 * k + m] = digit(block[32 + m], k);
        }
    }
    for k in 0..4 {
        if 240 + 4 * k >= len {
            return;
        }
        for j in 0..4 {
            codes[240 + 4 * k + j] = digit(block[48 + j], k);
        }
    }
}

/// Unpacks the block into its scale and its 256 trits.
pub fn unpack_trits(block: &[u8; BLOCK_BYTES]) -> (f32, [i8; BLOCK_ELEMS]) {
    let mut codes = [0u8; BLOCK_ELEMS];
    unpack_codes(block, &mut codes);
    (scale(block), super::trits::from_codes(&codes))
}

/// Quantizes 256 weights the way llama.cpp's reference quantizer does (`d = max|x|`,
/// `trit = round(x / d)`); lossless for blocks that already are `d·{-1, 0, 1}`.
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
    fn every_five_digit_byte_decodes() {
        for n in 0u16..243 {
            let q = to_fixed(n);
            let back = (0..5).fold(0u16, |acc, k| acc * 3 + digit(q, k) as u16);
            assert_eq!(back, n);
        }
    }

    proptest! {
        #[test]
        fn pack_unpack_roundtrip(t in proptest::collection::vec(-1i8..=1, 256), d in -100.0f32..100.0) {
            let trits: [i8; 256] = t.try_into().unwrap();
            let b = pack_block(&trits, f32_to_f16(d));
            let (d2, t2) = unpack_trits(&b);
            prop_assert_eq!(t2, trits);
            prop_assert_eq!(d2, f16_to_f32(f32_to_f16(d)));
        }
    }
}
