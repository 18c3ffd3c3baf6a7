//! What the two ternary packings share. `tq1_0` and `tq2_0` differ only in where each weight's
//! code (`w + 1`) sits inside a 256-weight block; scale, rounding and dequantization are one.

/// Weights per block in both ternary packings.
pub(crate) const BLOCK_ELEMS: usize = 256;

/// Turns codes (`w + 1`, in `0..=2`) into trits.
#[inline(always)]
pub(crate) fn from_codes(codes: &[u8; BLOCK_ELEMS]) -> [i8; BLOCK_ELEMS] {
    let mut t = [0i8; BLOCK_ELEMS];
    for (o, &c) in t.iter_mut().zip(codes) {
        *o = c as i8 - 1;
    }
    t
}

/// llama.cpp's reference rounding: `d = max|x|`, `trit = round(x / d)`. Lossless when the block
/// already is `d·{-1, 0, 1}`.
pub(crate) fn round_to_max(x: &[f32; BLOCK_ELEMS]) -> ([i8; BLOCK_ELEMS], f32) {
    let d = x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut trits = [0i8; BLOCK_ELEMS];
    for (t, v) in trits.iter_mut().zip(x) {
        *t = libm::roundf(v * id).clamp(-1.0, 1.0) as i8;
    }
    (trits, d)
}
