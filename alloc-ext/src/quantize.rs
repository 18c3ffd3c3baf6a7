//! Quantizing and packing f32 weights into every [`Format`] goldcrest stores.
//!
//! - [`quantize`]: f32 → any matrix format. Ternary formats use the **absmean** rule per
//!   tensor (BitNet b1.58 / Spectra TriLM training rule): `γ = max(mean|W|, 1e-5)`,
//!   `W_q = clamp(round(W / γ), -1, 1)`, stored with block scale `d = f16(γ)` in every block.
//! - [`import_ternary`]: exact import of weights that already are ternary (TriLM "unpacked"
//!   checkpoints are `s·{-1, 0, 1}` with one scale per model-parallel shard, up to six per
//!   matrix). Each 256-block of a row gets its own scale (`max|w|` of the block), which absorbs
//!   every shard scale as long as shard boundaries fall on block boundaries; nothing is
//!   rounded. A tensor that is not ternary in that sense is refused with
//!   [`Error::NotTernary`] naming it.
//!
//! Rows are quantized independently; a row whose length is not a multiple of the block is
//! padded with zero weights.

use alloc::vec;
use alloc::vec::Vec;
use goldcrest_core::error::{Error, Name, Result};
use goldcrest_core::quant::{Format, float, q4_0, q8_0, tq1_0, tq2_0};

/// Smallest absmean scale (as in BitNet's reference code), so an all-zero tensor stays finite.
pub const ABSMEAN_EPS: f32 = 1e-5;

fn check_input(name: &str, w: &[f32], rows: usize, cols: usize) -> Result<()> {
    let n = rows.checked_mul(cols).ok_or(Error::BadShape {
        tensor: Name::new(name),
    })?;
    if w.len() != n {
        return Err(Error::LengthMismatch {
            expected: n as u64,
            found: w.len() as u64,
        });
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite);
    }
    Ok(())
}

/// The absmean scale of a tensor: `max(mean|W|, 1e-5)` (summed in f64).
pub fn absmean(w: &[f32]) -> f32 {
    if w.is_empty() {
        return ABSMEAN_EPS;
    }
    let s: f64 = w.iter().map(|v| v.abs() as f64).sum();
    ((s / w.len() as f64) as f32).max(ABSMEAN_EPS)
}

/// Ternarizes with a given scale: `clamp(round(w / γ), -1, 1)` (ties away from zero).
pub fn ternarize(w: &[f32], gamma: f32) -> Vec<i8> {
    w.iter()
        .map(|&v| libm::roundf(v / gamma).clamp(-1.0, 1.0) as i8)
        .collect()
}

/// Packs ternary rows (`trits`, `rows × cols`) with one raw f16 scale per 256-block of each row
/// (`scales`, `rows × ceil(cols / 256)`) into `tq2_0` or `tq1_0`.
pub fn pack_ternary(
    name: &str,
    format: Format,
    trits: &[i8],
    scales: &[[u8; 2]],
    rows: usize,
    cols: usize,
) -> Result<Vec<u8>> {
    let blocks = cols.div_ceil(256);
    let row_bytes = format.row_bytes(cols).ok_or(Error::BadShape {
        tensor: Name::new(name),
    })?;
    if !matches!(format, Format::Tq2_0 | Format::Tq1_0) {
        return Err(Error::UnsupportedFormat {
            tensor: Name::new(name),
        });
    }
    if trits.len() != rows * cols || scales.len() != rows * blocks {
        return Err(Error::LengthMismatch {
            expected: (rows * cols) as u64,
            found: trits.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(rows * row_bytes);
    for r in 0..rows {
        for b in 0..blocks {
            let mut t = [0i8; 256];
            let start = r * cols + b * 256;
            let n = 256.min(cols - b * 256);
            t[..n].copy_from_slice(&trits[start..start + n]);
            let d = scales[r * blocks + b];
            if format == Format::Tq2_0 {
                out.extend_from_slice(&tq2_0::pack_block(&t, d));
            } else {
                out.extend_from_slice(&tq1_0::pack_block(&t, d));
            }
        }
    }
    Ok(out)
}

/// Quantizes `rows × cols` f32 weights (row-major) into `format`.
///
/// f32/f16/bf16 round to nearest; `i8` requires integers in `-128..=127` (it has no scale) and
/// otherwise fails with [`Error::OutOfRange`]; q8_0/q4_0 follow ggml's reference quantizers;
/// tq2_0/tq1_0 use the per-tensor absmean rule (see the module docs). `u8` is not a matrix
/// format.
pub fn quantize(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    format: Format,
) -> Result<Vec<u8>> {
    check_input(name, w, rows, cols)?;
    let mut out = Vec::new();
    match format {
        Format::F32 => w
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Format::F16 => w
            .iter()
            .for_each(|&v| out.extend_from_slice(&float::f32_to_f16(v))),
        Format::Bf16 => w
            .iter()
            .for_each(|&v| out.extend_from_slice(&float::f32_to_bf16(v))),
        Format::I8 => {
            for &v in w {
                if v != libm::roundf(v) || !(-128.0..=127.0).contains(&v) {
                    return Err(Error::OutOfRange);
                }
                out.push(v as i8 as u8);
            }
        }
        Format::Q8_0 | Format::Q4_0 => {
            for row in w.chunks(cols.max(1)).take(rows) {
                for chunk in row.chunks(32) {
                    let mut x = [0.0f32; 32];
                    x[..chunk.len()].copy_from_slice(chunk);
                    if format == Format::Q8_0 {
                        out.extend_from_slice(&q8_0::quantize_block(&x));
                    } else {
                        out.extend_from_slice(&q4_0::quantize_block(&x));
                    }
                }
            }
        }
        Format::Tq2_0 | Format::Tq1_0 => {
            let gamma = absmean(w);
            let trits = ternarize(w, gamma);
            let d = float::f32_to_f16(gamma);
            let scales = vec![d; rows * cols.div_ceil(256)];
            return pack_ternary(name, format, &trits, &scales, rows, cols);
        }
        _ => {
            return Err(Error::UnsupportedFormat {
                tensor: Name::new(name),
            });
        }
    }
    Ok(out)
}

/// Packs weights that already are ternary into `tq2_0` or `tq1_0` without loss.
///
/// For each 256-block of each row the scale is `s = max|w|`; every weight must be exactly `0`,
/// `s` or `-s`, and `s` must be exactly representable in f16 (true for TriLM's f16
/// checkpoints). Otherwise the result is [`Error::NotTernary`] naming `name` and the first
/// offending element. Dequantizing the result gives back `w` bit for bit (up to the sign of
/// zero).
pub fn import_ternary(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    format: Format,
) -> Result<Vec<u8>> {
    check_input(name, w, rows, cols)?;
    let blocks = cols.div_ceil(256);
    let mut trits = vec![0i8; w.len()];
    let mut scales = vec![[0u8; 2]; rows * blocks];
    for r in 0..rows {
        for b in 0..blocks {
            let start = r * cols + b * 256;
            let end = start + 256.min(cols - b * 256);
            let (at, s) = w[start..end]
                .iter()
                .enumerate()
                .fold((0, 0.0f32), |(mi, m), (i, v)| {
                    if v.abs() > m { (i, v.abs()) } else { (mi, m) }
                });
            let d = float::f32_to_f16(s);
            if float::f16_to_f32(d) != s {
                // The largest magnitude is not an f16 value: point at it.
                return Err(Error::NotTernary {
                    tensor: Name::new(name),
                    element: (start + at) as u64,
                });
            }
            for (i, &v) in w[start..end].iter().enumerate() {
                trits[start + i] = if v == 0.0 {
                    0
                } else if v == s {
                    1
                } else if v == -s {
                    -1
                } else {
                    return Err(Error::NotTernary {
                        tensor: Name::new(name),
                        element: (start + i) as u64,
                    });
                };
            }
            scales[r * blocks + b] = d;
        }
    }
    pack_ternary(name, format, &trits, &scales, rows, cols)
}

/// [`import_ternary`] for f16 checkpoints (the form TriLM ships in); the conversion to f32 is
/// exact.
pub fn import_ternary_f16(
    name: &str,
    w: &[half::f16],
    rows: usize,
    cols: usize,
    format: Format,
) -> Result<Vec<u8>> {
    let f: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    import_ternary(name, &f, rows, cols, format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use goldcrest_core::quant::dequantize_row;
    use proptest::prelude::*;

    fn dequant(format: Format, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
        let rb = format.row_bytes(cols).unwrap();
        let mut out = vec![0.0f32; rows * cols];
        for r in 0..rows {
            dequantize_row(
                format,
                &bytes[r * rb..(r + 1) * rb],
                cols,
                &mut out[r * cols..(r + 1) * cols],
            )
            .unwrap();
        }
        out
    }

    /// A TriLM-like matrix: ternary, with `shards` scales split along rows or along columns at
    /// multiples of 256.
    fn trilm(rows: usize, cols: usize, shards: usize, along_cols: bool, seed: u64) -> Vec<f32> {
        let scales = [
            0.015625f32,
            0.0234375,
            0.01171875,
            0.03125,
            0.0078125,
            0.019531,
        ];
        let mut g = seed | 1;
        (0..rows * cols)
            .map(|i| {
                g ^= g << 13;
                g ^= g >> 7;
                g ^= g << 17;
                let (r, c) = (i / cols, i % cols);
                let shard = if along_cols {
                    ((c / 256) * shards / cols.div_ceil(256)).min(shards - 1)
                } else {
                    (r * shards / rows).min(shards - 1)
                };
                let s = half::f16::from_f32(scales[shard]).to_f32();
                ((g % 3) as f32 - 1.0) * s
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn trilm_import_is_lossless(rows in 1usize..12, blocks in 1usize..5, tail in 0usize..256,
                                    shards in 1usize..7, along_cols in any::<bool>(), seed in any::<u64>()) {
            let cols = blocks * 256 + tail;
            let w = trilm(rows, cols, shards, along_cols, seed);
            for format in [Format::Tq2_0, Format::Tq1_0] {
                let bytes = import_ternary("layers.0.mlp.up_proj.weight", &w, rows, cols, format).unwrap();
                prop_assert_eq!(bytes.len(), rows * format.row_bytes(cols).unwrap());
                prop_assert_eq!(dequant(format, &bytes, rows, cols), w.clone());
            }
        }

        #[test]
        fn absmean_matches_definition(w in proptest::collection::vec(-2.0f32..2.0, 1..600)) {
            let cols = w.len();
            let gamma = absmean(&w);
            let bytes = quantize("w", &w, 1, cols, Format::Tq2_0).unwrap();
            let got = dequant(Format::Tq2_0, &bytes, 1, cols);
            let d = half::f16::from_f32(gamma).to_f32();
            for (i, (&x, &y)) in w.iter().zip(&got).enumerate() {
                let t = libm::roundf(x / gamma).clamp(-1.0, 1.0);
                prop_assert_eq!(y, t * d, "element {}", i);
            }
        }
    }

    #[test]
    fn non_ternary_tensor_is_named() {
        let mut w = trilm(2, 512, 1, false, 3);
        w[700] = 0.123;
        let e = import_ternary(
            "model.layers.3.self_attn.o_proj.weight",
            &w,
            2,
            512,
            Format::Tq2_0,
        )
        .unwrap_err();
        match e {
            Error::NotTernary { tensor, element } => {
                assert_eq!(tensor.as_str(), "model.layers.3.self_attn.o_proj.weight");
                assert_eq!(element, 700);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(alloc::format!("{e}").contains("o_proj"));
        // A scale that f16 cannot hold is refused too (it would be rounded).
        let w = vec![0.1f32; 256];
        assert!(matches!(
            import_ternary("t", &w, 1, 256, Format::Tq1_0),
            Err(Error::NotTernary { .. })
        ));
    }

    #[test]
    fn every_format_roundtrips_within_its_step() {
        let (rows, cols) = (3, 100);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for (format, tol) in [
            (Format::F32, 0.0),
            (Format::F16, 2e-3),
            (Format::Bf16, 1e-2),
            (Format::Q8_0, 2.0 / 127.0),
            (Format::Q4_0, 2.0 / 7.0 * 1.01),
        ] {
            let bytes = quantize("w", &w, rows, cols, format).unwrap();
            let back = dequant(format, &bytes, rows, cols);
            for (a, b) in w.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{format:?} {a} {b}");
            }
        }
        assert!(quantize("w", &[1.5], 1, 1, Format::I8).is_err());
        assert_eq!(quantize("w", &[-3.0], 1, 1, Format::I8).unwrap(), [253u8]);
        assert!(quantize("w", &[f32::NAN], 1, 1, Format::Q8_0).is_err());
        assert!(quantize("w", &[0.0; 3], 2, 2, Format::Q8_0).is_err());
    }
}
