//! Toto 2.0: `goldcrest convert toto2` on the reference's checkpoints
//! (tests/fixtures/toto2/{gqa,xpos}, made by tools/toto/make_fixtures_v2.py with toto-2 2.0.0),
//! then the core model's quantile forecasts against the reference's.
//!
//! Tolerances (f32 model, f64 scaler, as the reference), relative to max(1, |value|): forecasts
//! and scaler statistics within 1e-5 (goldcrest is at about 1e-7, f32 rounding). The long case
//! (about 100 patches) is there because xPos's effect grows with distance: dropping the key's
//! inverse xPos moves its forecast by about 1e-3 but the short cases' by only 1e-4.

use std::path::{Path, PathBuf};

use goldcrest_core::Error;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::toto::Series;
use goldcrest_core::models::toto::v2::{
    ForecastOptions, ForecastShape, NUM_QUANTILES, Toto2, Toto2Config,
};
use goldcrest_core::quant::Format;
use goldcrest_std::convert::toto2::{Options, convert};

const CONTEXT: usize = 22;
const HORIZON: usize = 10;
const LONG_CONTEXT: usize = 397;
const LONG_HORIZON: usize = 30;
const CASES: [&str; 5] = ["multi", "multi_raw", "groups", "uni", "long"];
const TOLERANCE: f64 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/toto2")
        .join(name)
}

fn golden(config: &str, key: &str) -> Vec<f64> {
    let bytes = std::fs::read(fixture(config).join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap_or_else(|_| panic!("{key}"));
    let d = t.data();
    match t.dtype() {
        safetensors::Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("{key}: {other:?}"),
    }
}

/// Converted bytes in u64 storage so tensors are aligned for zero-copy views.
fn converted(dir: &Path, weights: Format) -> Vec<u64> {
    let bytes = convert(dir, Options { weights })
        .unwrap()
        .to_bytes()
        .unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    let view: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    view[..bytes.len()].copy_from_slice(&bytes);
    // `trim` recovers the exact length from the header.
    words
}

fn model(words: &[u64]) -> Toto2<'_> {
    let bytes: &[u8] = bytemuck::cast_slice(words);
    let st = goldcrest_std::load::parse_hosted(trim(bytes)).unwrap();
    Toto2::new(st, Kernels::scalar()).unwrap()
}

/// The file without the zero padding of its last word.
fn trim(bytes: &[u8]) -> &[u8] {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let json: serde_json::Value = serde_json::from_str(header).unwrap();
    let end = json
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["data_offsets"][1].as_u64().unwrap() as usize)
        .max()
        .unwrap_or(0);
    &bytes[..8 + header_len + end]
}

struct Case {
    context: usize,
    horizon: usize,
    values: Vec<f64>,
    variates: usize,
    ids: Vec<u32>,
    options: ForecastOptions,
}

fn case(config: &str, name: &str) -> Case {
    let (key, context, horizon) = if name == "long" {
        ("long_values", LONG_CONTEXT, LONG_HORIZON)
    } else {
        ("values", CONTEXT, HORIZON)
    };
    let all = golden(config, key);
    let vars: Vec<usize> = golden(config, &format!("{name}.variates"))
        .iter()
        .map(|&v| v as usize)
        .collect();
    let mut values = Vec::new();
    for &v in &vars {
        values.extend_from_slice(&all[v * context..(v + 1) * context]);
    }
    let settings = golden(config, &format!("{name}.settings"));
    Case {
        context,
        horizon,
        values,
        variates: vars.len(),
        ids: golden(config, &format!("{name}.series_ids"))
            .iter()
            .map(|&v| v as u32)
            .collect(),
        options: ForecastOptions {
            scaler_fallback_min_obs: settings[0] as usize,
            quantile_cap: settings[1],
        },
    }
}

fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Forecast in the reference's layout (quantile, variate, step).
fn forecast(m: &Toto2<'_>, c: &Case) -> Vec<f64> {
    let series = Series {
        values: &c.values,
        variates: c.variates,
        groups: Some(&c.ids),
    };
    let h = c.horizon;
    let shape = ForecastShape {
        variates: c.variates,
        context: c.context,
        horizon: h,
    };
    let mut memory = vec![0u8; m.memory_plan(&shape).unwrap().bytes_unaligned()];
    let mut out = vec![0f32; c.variates * h * NUM_QUANTILES];
    m.forecast(&series, h, &c.options, &mut memory, &mut out)
        .unwrap();
    let mut reordered = vec![0f64; out.len()];
    for v in 0..c.variates {
        for t in 0..h {
            for q in 0..NUM_QUANTILES {
                reordered[(q * c.variates + v) * h + t] =
                    out[(v * h + t) * NUM_QUANTILES + q] as f64;
            }
        }
    }
    reordered
}

fn check_config(config: &str) {
    let words = converted(&fixture(config), Format::F32);
    let m = model(&words);
    for name in CASES {
        let c = case(config, name);
        let out = forecast(&m, &c);
        let err = max_rel_err(&out, &golden(config, &format!("{name}.quantiles")));
        assert!(err < TOLERANCE, "{config} {name}: forecast error {err}");

        let series = Series {
            values: &c.values,
            variates: c.variates,
            groups: Some(&c.ids),
        };
        let shape = ForecastShape {
            variates: c.variates,
            context: c.context,
            horizon: c.horizon,
        };
        let mut memory = vec![0u8; m.memory_plan(&shape).unwrap().bytes_unaligned()];
        let p = m.config().patch_size;
        let padded = c.context.div_ceil(p) * p;
        let len = padded + c.horizon.div_ceil(p) * p;
        let mut scaled = vec![0f32; c.variates * padded];
        let mut loc = vec![0f32; c.variates * len];
        let mut scale = vec![0f32; c.variates * len];
        m.scaled_inputs(
            &series,
            c.horizon,
            &c.options,
            &mut memory,
            &mut scaled,
            &mut loc,
            &mut scale,
        )
        .unwrap();
        let f = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        for (key, ours) in [
            ("scaled", f(&scaled)),
            ("loc", f(&loc)),
            ("scale", f(&scale)),
        ] {
            let err = max_rel_err(&ours, &golden(config, &format!("{name}.{key}")));
            assert!(err < TOLERANCE, "{config} {name}: {key} error {err}");
        }
    }
}

#[test]
fn gqa_qk_norm_matches_reference() {
    check_config("gqa");
}

#[test]
fn xpos_per_dim_scale_matches_reference() {
    check_config("xpos");
}

#[test]
fn config_is_read_from_the_checkpoint() {
    let words = converted(&fixture("gqa"), Format::F32);
    let c: Toto2Config = *model(&words).config();
    assert_eq!((c.num_heads, c.num_groups, c.qk_dim, c.d_ff), (4, 2, 8, 88));
    assert!(c.qk_norm && c.norm_include_weight && !c.use_xpos);
    assert!(c.is_variate_layer(1) && !c.is_variate_layer(2));
    let words = converted(&fixture("xpos"), Format::F32);
    let c = *model(&words).config();
    assert!(c.use_xpos && c.per_dim_scale && !c.qk_norm && c.variate_layer_first);
    assert!(c.is_variate_layer(0) && !c.is_variate_layer(1));
}

/// Quantized layer matrices stay close to the f32 forecast (not a golden: q8_0 rounds).
#[test]
fn q8_layers_forecast_close() {
    let words = converted(&fixture("gqa"), Format::Q8_0);
    let m = model(&words);
    let c = case("gqa", "multi");
    let err = max_rel_err(&forecast(&m, &c), &golden("gqa", "multi.quantiles"));
    assert!(err < 2e-2, "{err}");
}

/// A copy of a fixture directory with the state dict edited.
fn edited_checkpoint(
    tag: &str,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> PathBuf {
    let src = fixture("gqa");
    let dir = std::env::temp_dir().join(format!("goldcrest-toto2-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let values = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, t.shape().to_vec(), values)
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let data: &[u8] = bytemuck::cast_slice(values);
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir
}

fn convert_error(dir: &Path) -> String {
    let Err(err) = convert(
        dir,
        Options {
            weights: Format::F32,
        },
    ) else {
        panic!("conversion must fail");
    };
    let _ = std::fs::remove_dir_all(dir);
    format!("{err:#}")
}

#[test]
fn converter_names_a_missing_tensor() {
    let dir = edited_checkpoint("missing", |t| {
        t.retain(|(n, _, _)| n != "transformer.layers.2.attn.k_norm.weight")
    });
    let msg = convert_error(&dir);
    assert!(
        msg.contains("transformer.layers.2.attn.k_norm.weight"),
        "{msg}"
    );
}

#[test]
fn converter_names_an_extra_tensor() {
    let dir = edited_checkpoint("extra", |t| {
        t.push((
            "transformer.layers.0.attn.rotary.freqs".into(),
            vec![2],
            vec![1.0, 0.5],
        ))
    });
    let msg = convert_error(&dir);
    assert!(
        msg.contains("transformer.layers.0.attn.rotary.freqs"),
        "{msg}"
    );
}

#[test]
fn converter_names_a_misshapen_tensor() {
    let dir = edited_checkpoint("shape", |t| {
        let e = t
            .iter_mut()
            .find(|(n, _, _)| n == "transformer.layers.1.ffn.fc2.weight")
            .unwrap();
        // 32×88 → 88×32: same element count, wrong shape.
        e.1 = vec![e.1[1], e.1[0]];
    });
    let msg = convert_error(&dir);
    assert!(msg.contains("transformer.layers.1.ffn.fc2.weight"), "{msg}");
}

#[test]
fn converter_refuses_unsupported_config() {
    let src = fixture("gqa");
    let dir = std::env::temp_dir().join(format!("goldcrest-toto2-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["num_output_patches"] = 2.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let msg = convert_error(&dir);
    assert!(msg.contains("num_output_patches"), "{msg}");
}

#[test]
fn bad_inputs_are_errors() {
    let words = converted(&fixture("gqa"), Format::F32);
    let m = model(&words);
    let values = vec![1.0f64; 2 * 12];
    let shape = ForecastShape {
        variates: 2,
        context: 12,
        horizon: 5,
    };
    let mut memory = vec![0u8; m.memory_plan(&shape).unwrap().bytes_unaligned()];
    let good = Series {
        values: &values,
        variates: 2,
        groups: None,
    };
    let options = ForecastOptions::default();
    let mut out = vec![0f32; 2 * 5 * NUM_QUANTILES];
    m.forecast(&good, 5, &options, &mut memory, &mut out)
        .unwrap();
    assert!(out.iter().all(|x| x.is_finite()));
    // Output of the wrong length.
    let mut short = vec![0f32; 7];
    assert!(matches!(
        m.forecast(&good, 5, &options, &mut memory, &mut short),
        Err(Error::LengthMismatch { .. })
    ));
    // Too little memory.
    let mut small = vec![0u8; memory.len() / 2];
    assert!(
        m.forecast(&good, 5, &options, &mut small, &mut out)
            .is_err()
    );
    // Zero horizon, values not a whole number of steps, wrong group count, huge values,
    // a negative cap.
    assert!(
        m.forecast(&good, 0, &options, &mut memory, &mut [])
            .is_err()
    );
    let ragged = Series {
        values: &values[..23],
        variates: 2,
        groups: None,
    };
    assert!(
        m.forecast(&ragged, 5, &options, &mut memory, &mut out)
            .is_err()
    );
    let groups = [0u32];
    let bad_groups = Series {
        values: &values,
        variates: 2,
        groups: Some(&groups),
    };
    assert!(
        m.forecast(&bad_groups, 5, &options, &mut memory, &mut out)
            .is_err()
    );
    let mut huge = values.clone();
    huge[3] = 1e35;
    let huge = Series {
        values: &huge,
        variates: 2,
        groups: None,
    };
    assert!(
        m.forecast(&huge, 5, &options, &mut memory, &mut out)
            .is_err()
    );
    let negative = ForecastOptions {
        quantile_cap: -1.0,
        ..options
    };
    assert!(
        m.forecast(&good, 5, &negative, &mut memory, &mut out)
            .is_err()
    );
    // All values missing still forecasts (the scaler falls back to loc 0, scale 1e-6 → capped).
    let missing = vec![f64::NAN; 24];
    let missing = Series {
        values: &missing,
        variates: 2,
        groups: None,
    };
    m.forecast(&missing, 5, &options, &mut memory, &mut out)
        .unwrap();
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn words() -> &'static [u64] {
        static WORDS: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
        WORDS.get_or_init(|| converted(&fixture("xpos"), Format::F32))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any context length, horizon, variate count and missing pattern forecasts without
        /// error, and each step's nine quantiles come out ascending and finite.
        #[test]
        fn forecasts_are_sorted_and_finite(
            variates in 1usize..4,
            steps in 1usize..40,
            horizon in 1usize..12,
            seed in any::<u64>(),
            missing_every in 0usize..6,
        ) {
            let m = model(words());
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 10_000) as f64 / 100.0 - 50.0
            };
            let values: Vec<f64> = (0..variates * steps)
                .map(|i| if missing_every > 0 && i % (missing_every + 1) == 0 { f64::NAN } else { next() })
                .collect();
            let series = Series { values: &values, variates, groups: None };
            let shape = ForecastShape { variates, context: steps, horizon };
            let mut memory = vec![0u8; m.memory_plan(&shape).unwrap().bytes_unaligned()];
            let mut out = vec![0f32; variates * horizon * NUM_QUANTILES];
            m.forecast(&series, horizon, &ForecastOptions::default(), &mut memory, &mut out).unwrap();
            for step in out.chunks_exact(NUM_QUANTILES) {
                prop_assert!(step.iter().all(|x| x.is_finite()), "{step:?}");
                prop_assert!(step.windows(2).all(|w| w[0] <= w[1]), "{step:?}");
            }
        }

        /// Corrupting a byte of the file gives an error or a working model, never a panic.
        #[test]
        fn corrupted_files_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut words = words().to_vec();
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
            let len = trim(bytes).len();
            bytes[at.index(len)] = byte;
            let bytes: &[u8] = bytemuck::cast_slice(&words);
            let Ok(st) = goldcrest_std::load::parse_hosted(&bytes[..len]) else { return Ok(()) };
            let Ok(m) = Toto2::new(st, Kernels::scalar()) else { return Ok(()) };
            let values = [1.0, 2.0, f64::NAN, 4.0, 5.0, 3.0];
            let series = Series { values: &values, variates: 1, groups: None };
            let shape = ForecastShape { variates: 1, context: 6, horizon: 3 };
            let Ok(plan) = m.memory_plan(&shape) else { return Ok(()) };
            let mut memory = vec![0u8; plan.bytes_unaligned()];
            let mut out = vec![0f32; 3 * NUM_QUANTILES];
            let _ = m.forecast(&series, 3, &ForecastOptions::default(), &mut memory, &mut out);
        }
    }
}

/// The converted gqa file with one metadata value replaced, loaded by the core model.
fn load_with_metadata(key: &str, value: &str) -> Result<(), Error> {
    let words = converted(&fixture("gqa"), Format::F32);
    let bytes = trim(bytemuck::cast_slice(&words)).to_vec();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut map = meta.metadata().clone().unwrap();
    map.insert(key.to_string(), value.to_string());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors();
    let edited = safetensors::serialize(tensors, Some(map)).unwrap();
    let mut words = vec![0u64; edited.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..edited.len()].copy_from_slice(&edited);
    let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..edited.len()];
    // The file parser refuses a newer format version before the model sees it.
    let st = goldcrest_std::load::parse_hosted(bytes)?;
    Toto2::new(st, Kernels::scalar()).map(|_| ())
}

#[test]
fn bad_metadata_names_the_key() {
    assert!(load_with_metadata("goldcrest.toto2.use_xpos", "false").is_ok());
    let key_of = |e: Error| match e {
        Error::BadMetadata { key } => key.to_string(),
        other => panic!("{other:?}"),
    };
    for (key, value) in [
        ("goldcrest.toto2.use_xpos", "maybe"),
        ("goldcrest.toto2.num_groups", "3"),
        ("goldcrest.toto2.layer_group_size", "3"),
        ("goldcrest.toto2.patch_size", "0"),
        ("goldcrest.toto2.norm_eps", "-1"),
        ("goldcrest.arch", "toto"),
    ] {
        let err = load_with_metadata(key, value).unwrap_err();
        assert_eq!(key_of(err), key, "{key} = {value}");
    }
    assert!(matches!(
        load_with_metadata("goldcrest.format_version", "2.0"),
        Err(Error::UnsupportedVersion { .. })
    ));
    // A consistent but different shape: the first tensor that disagrees is named.
    match load_with_metadata("goldcrest.toto2.d_ff", "96") {
        Err(Error::ShapeMismatch { tensor, .. }) => {
            assert!(tensor.to_string().contains("ffn.fc1"), "{tensor}")
        }
        other => panic!("{other:?}"),
    }
}
