//! `goldcrest convert toto` on toto-ts checkpoints (tests/fixtures/toto/checkpoint_*, made by
//! tools/toto/make_fixtures.py): the converted file forecasts like the reference to 1e-4
//! relative to max(1, |value|), from f64 module names and from bf16 released names.

use std::path::{Path, PathBuf};

use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::toto::{ForecastSpec, Series, Toto};
use goldcrest_core::quant::Format;
use goldcrest_std::convert::toto::{Options, convert};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/toto")
}

fn golden(key: &str) -> Vec<f64> {
    let bytes = std::fs::read(fixtures().join("sfirst.golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    match t.dtype() {
        safetensors::Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        _ => t.data().iter().map(|&b| b as f64).collect(),
    }
}

/// Mean forecast of the fixture's `plain` case (2 variates, 13 steps, horizon 7).
fn forecast(file: &[u8]) -> Vec<f64> {
    let st = goldcrest_std::load::parse_hosted(file).unwrap();
    let model = Toto::new(st, Kernels::scalar()).unwrap();
    let values = golden("plain.input_series");
    let series = Series {
        values: &values,
        variates: 2,
        groups: None,
    };
    let spec = ForecastSpec {
        variates: 2,
        context: 13,
        horizon: 7,
        batch: 1,
    };
    let mut mem = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
    let mut out = vec![0f64; 14];
    model.forecast_mean(&series, 7, &mut mem, &mut out).unwrap();
    out
}

fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// The converted bytes, copied into u64 storage so tensors are aligned for zero-copy views.
fn converted(dir: &Path, weights: Format) -> Vec<u8> {
    converted_with(
        dir,
        Options {
            weights,
            fuse_head: false,
        },
    )
}

fn converted_with(dir: &Path, options: Options) -> Vec<u8> {
    convert(dir, options).unwrap().to_bytes().unwrap()
}

fn aligned_forecast(bytes: &[u8]) -> Vec<f64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    let view: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    view[..bytes.len()].copy_from_slice(bytes);
    forecast(&view[..bytes.len()])
}

#[test]
fn module_names_in_f64() {
    let out = aligned_forecast(&converted(
        &fixtures().join("checkpoint_sfirst"),
        Format::F32,
    ));
    let err = max_rel_err(&out, &golden("plain.forecast_mean_kvcache"));
    assert!(err < 1e-4, "{err}");
}

/// The fused head is exact: same forecasts, fewer weights.
#[test]
fn fused_head() {
    let dir = fixtures().join("checkpoint_sfirst");
    let plain = converted(&dir, Format::F32);
    let fused = converted_with(
        &dir,
        Options {
            weights: Format::F32,
            fuse_head: true,
        },
    );
    assert!(fused.len() < plain.len());
    let out = aligned_forecast(&fused);
    let err = max_rel_err(&out, &golden("plain.forecast_mean_kvcache"));
    assert!(err < 1e-4, "{err}");
}

#[test]
fn released_names_in_bf16() {
    let dir = fixtures().join("checkpoint_sfirst_released");
    let out = aligned_forecast(&converted(&dir, Format::F32));
    let err = max_rel_err(&out, &golden("bf16.forecast_mean_kvcache"));
    assert!(err < 1e-4, "{err}");
}

#[test]
fn quantized_weights_convert_and_run() {
    let dir = fixtures().join("checkpoint_sfirst");
    let reference = golden("plain.forecast_mean_kvcache");
    let f32_size = converted(&dir, Format::F32).len();
    for format in [
        Format::F16,
        Format::Bf16,
        Format::Q8_0,
        Format::Q4_0,
        Format::Tq2_0,
        Format::Tq1_0,
    ] {
        let bytes = converted(&dir, format);
        assert!(bytes.len() < f32_size, "{format:?}");
        let out = aligned_forecast(&bytes);
        assert!(out.iter().all(|x| x.is_finite()), "{format:?}");
        // Near-lossless formats stay close to the reference; random weights are not trained
        // for ternary, so those only have to run.
        if matches!(format, Format::F16 | Format::Bf16 | Format::Q8_0) {
            let err = max_rel_err(&out, &reference);
            assert!(err < 0.05, "{format:?}: {err}");
        }
    }
}

fn edited_checkpoint(
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let src = fixtures().join("checkpoint_sfirst_released");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn strict_about_names_and_rope() {
    let options = Options {
        weights: Format::F32,
        fuse_head: false,
    };
    let unknown = edited_checkpoint(|t| {
        t.push((
            "model.fusion.weight".into(),
            safetensors::Dtype::F32,
            vec![1],
            vec![0; 4],
        ))
    });
    let err = convert(unknown.path(), options).err().unwrap().to_string();
    assert!(err.contains("fusion.weight"), "{err}");

    let missing =
        edited_checkpoint(|t| t.retain(|(n, ..)| !n.ends_with("layers.1.mlp.0.w3.weight")));
    let err = convert(missing.path(), options).err().unwrap().to_string();
    assert!(err.contains("transformer.layers.1.mlp.2.weight"), "{err}");

    let theta = edited_checkpoint(|t| {
        for (n, _, _, b) in t.iter_mut() {
            if n.ends_with("rotary_emb.freqs") {
                // The second frequency as if the base were 500000.
                let f = 1.0f32 / 500000f32.powf(2.0 / 6.0);
                b[4..8].copy_from_slice(&f.to_le_bytes());
            }
        }
    });
    let err = convert(theta.path(), options).err().unwrap().to_string();
    assert!(err.contains("base 10000"), "{err}");
}
