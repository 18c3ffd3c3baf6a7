//! goldcrest's Toto against golden outputs of the reference `toto-ts` 0.2.0
//! (tests/fixtures/toto, made by tools/toto/make_fixtures.py).
//!
//! Tolerances: the scaler runs in f64 like the reference: 1e-9 relative. The network runs in
//! f32 and the reference in f64 on the same (f32-representable) weights: head parameters and
//! forecasts to 1e-4 relative to max(1, |value|).

use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::toto::{ForecastSpec, Series, Toto};

fn fixture(name: &str) -> Vec<u64> {
    let path = format!(
        "{}/../tests/fixtures/toto/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // A u64 buffer keeps the f32 tensors aligned for zero-copy views.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    words.push(bytes.len() as u64);
    words
}

/// The scalar reference and the fastest kernels this CPU runs (SIMD sums in another order:
/// the tolerances above cover both).
#[allow(unsafe_code)]
fn kernels_under_test() -> Vec<Kernels> {
    #[allow(unused_mut)]
    let mut features = goldcrest_core::kernels::CpuFeatures::default();
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        features.avx2 = has!("avx2");
        features.fma = has!("fma");
        features.f16c = has!("f16c");
        features.avx512f = has!("avx512f");
        features.avx512bw = has!("avx512bw");
        features.avx512vl = has!("avx512vl");
        features.avx512vnni = has!("avx512vnni");
    }
    #[cfg(target_arch = "aarch64")]
    {
        features.neon = std::arch::is_aarch64_feature_detected!("neon");
        features.dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    }
    // SAFETY: the features were detected on this CPU.
    let detected = unsafe { Kernels::from_cpu_features(features) };
    let mut v = vec![Kernels::scalar(), detected];
    v.dedup();
    v
}

fn as_bytes(words: &[u64]) -> &[u8] {
    let len = *words.last().unwrap() as usize;
    &bytemuck::cast_slice::<u64, u8>(&words[..words.len() - 1])[..len]
}

struct Golden {
    file: Vec<u8>,
}

impl Golden {
    fn load(name: &str) -> Golden {
        let path = format!(
            "{}/../tests/fixtures/toto/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Golden {
            file: std::fs::read(path).unwrap(),
        }
    }

    fn get(&self, key: &str) -> (Vec<usize>, Vec<f64>) {
        let st = safetensors::SafeTensors::deserialize(&self.file).unwrap();
        let t = st.tensor(key).unwrap_or_else(|_| panic!("golden {key}"));
        let values = match t.dtype() {
            safetensors::Dtype::F64 => t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::U8 => t.data().iter().map(|&b| b as f64).collect(),
            other => panic!("{key}: {other:?}"),
        };
        (t.shape().to_vec(), values)
    }
}

fn max_rel_err(ours: impl IntoIterator<Item = f64>, theirs: &[f64]) -> f64 {
    ours.into_iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max)
}

struct Case {
    values: Vec<f64>,
    groups: Vec<u32>,
    variates: usize,
    steps: usize,
}

fn case(g: &Golden, name: &str) -> Case {
    let (shape, series) = g.get(&format!("{name}.input_series"));
    let (_, mask) = g.get(&format!("{name}.input_mask"));
    let (_, groups) = g.get(&format!("{name}.id_groups"));
    let values = series
        .iter()
        .zip(&mask)
        .map(|(&x, &m)| if m > 0.0 { x } else { f64::NAN })
        .collect();
    Case {
        values,
        groups: groups.iter().map(|&x| x as u32).collect(),
        variates: shape[0],
        steps: shape[1],
    }
}

fn check_case(model_file: &str, golden_file: &str, name: &str) {
    for kernels in kernels_under_test() {
        check_case_with(model_file, golden_file, name, kernels);
    }
}

fn check_case_with(model_file: &str, golden_file: &str, name: &str, kernels: Kernels) {
    let words = fixture(model_file);
    let st = SafeTensors::parse(as_bytes(&words)).unwrap();
    let model = Toto::new(st, kernels).unwrap();
    let g = Golden::load(golden_file);
    let c = case(&g, name);
    let series = Series {
        values: &c.values,
        variates: c.variates,
        groups: Some(&c.groups),
    };
    let cfg = *model.config();
    let p = cfg.patch_size;
    let nc = c.steps.div_ceil(p);

    // Scaler: the reference repeats each patch's statistics over its steps.
    let (mut loc, mut scale) = (vec![0.0; c.variates * nc], vec![0.0; c.variates * nc]);
    model
        .context_statistics(&series, &mut loc, &mut scale)
        .unwrap();
    let (_, gloc) = g.get(&format!("{name}.scaler_loc"));
    let (_, gscale) = g.get(&format!("{name}.scaler_scale"));
    let pick = |v: &[f64]| -> Vec<f64> {
        (0..c.variates * nc)
            .map(|i| v[(i / nc) * nc * p + (i % nc) * p])
            .collect()
    };
    let loc_err = max_rel_err(loc.iter().copied(), &pick(&gloc));
    let scale_err = max_rel_err(scale.iter().copied(), &pick(&gscale));
    assert!(
        loc_err < 1e-9 && scale_err < 1e-9,
        "{name}: scaler {loc_err} {scale_err}"
    );

    // Head parameters at every context position.
    let k = cfg.k_components;
    let plan = model
        .memory_plan(&ForecastSpec {
            variates: c.variates,
            context: c.steps,
            horizon: 1,
            batch: 1,
        })
        .unwrap();
    let mut mem = vec![0u8; plan.bytes_unaligned()];
    let mut params = vec![0f32; c.variates * nc * p * 4 * k];
    model
        .context_distributions(&series, &mut mem, &mut params)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut head_err = [0f64; 4];
    for (j, part) in ["df", "loc", "scale", "weights"].iter().enumerate() {
        let (shape, gold) = g.get(&format!("{name}.head_{part}"));
        assert_eq!(shape, vec![c.variates, nc * p, k]);
        let ours: Vec<f64> = (0..gold.len())
            .map(|i| {
                let (pos, comp) = (i / k, i % k);
                params[pos * 4 * k + j * k + comp] as f64
            })
            .collect();
        head_err[j] = max_rel_err(ours, &gold);
    }
    assert!(
        head_err.iter().all(|&e| e < 1e-4),
        "{name}: head {head_err:?}"
    );

    // Mean forecasts through the KV cache.
    let (shape, kv) = g.get(&format!("{name}.forecast_mean_kvcache"));
    let (_, full) = g.get(&format!("{name}.forecast_mean_full_recompute"));
    let horizon = shape[1];
    let plan = model
        .memory_plan(&ForecastSpec {
            variates: c.variates,
            context: c.steps,
            horizon,
            batch: 1,
        })
        .unwrap();
    // The exact plan suffices (an aligned buffer of ram_bytes) ...
    let mut words = vec![0u64; plan.ram_bytes().div_ceil(8) + 8];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let skip = bytes.as_ptr().align_offset(64);
    let mem = &mut bytes[skip..skip + plan.ram_bytes()];
    let mut out = vec![0f64; c.variates * horizon];
    model
        .forecast_mean(&series, horizon, mem, &mut out)
        .unwrap();
    let kv_err = max_rel_err(out.iter().copied(), &kv);
    let full_err = max_rel_err(out.iter().copied(), &full);
    eprintln!(
        "{name} ({:?}): scaler {loc_err:.1e}/{scale_err:.1e}, head {head_err:?}, mean vs kv {kv_err:.1e}, vs full recompute {full_err:.1e}",
        kernels.isa()
    );
    assert!(kv_err < 1e-4, "{name}: forecast {kv_err}");
    // Where the reference's two paths differ, goldcrest follows the cached one.
    if full_err > 1e-6 {
        assert!(kv_err < full_err / 10.0, "{name}: closer to full recompute");
    }
    // ... and one byte less is refused, not overrun.
    let mut out2 = vec![0f64; c.variates * horizon];
    let short = &mut bytes[skip..skip + plan.ram_bytes() - 1];
    assert!(
        model
            .forecast_mean(&series, horizon, short, &mut out2)
            .is_err()
    );
}

#[test]
fn small_multivariate_two_groups() {
    check_case(
        "small.model.safetensors",
        "small.golden.safetensors",
        "plain",
    );
}

#[test]
fn small_missing_values() {
    check_case(
        "small.model.safetensors",
        "small.golden.safetensors",
        "missing",
    );
}

#[test]
fn small_single_variate() {
    check_case(
        "small.model.safetensors",
        "small.golden.safetensors",
        "single",
    );
}

#[test]
fn spacewise_first_four_heads() {
    check_case(
        "sfirst.model.safetensors",
        "sfirst.golden.safetensors",
        "plain",
    );
}

/// Sample mode against the reference's 4000 sampled paths (different RNGs, so statistically):
/// our 4000 paths' empirical 10/50/90% quantiles per variate and step must lie within 10% of the
/// reference's 10–90% spread. Calibration: two reference runs with different seeds differ by up
/// to 0.056 of the spread on the `plain` case (60 steps × 3 quantiles); goldcrest vs the reference
/// gives 0.046–0.064. The draws are seeded, so the test is deterministic.
fn check_samples(model_file: &str, golden_file: &str, name: &str) {
    use goldcrest_core::models::toto::{Mode, quantile_sorted, sort_samples};
    let words = fixture(model_file);
    let st = SafeTensors::parse(as_bytes(&words)).unwrap();
    let model = Toto::new(st, Kernels::for_target()).unwrap();
    let g = Golden::load(golden_file);
    let c = case(&g, name);
    let series = Series {
        values: &c.values,
        variates: c.variates,
        groups: Some(&c.groups),
    };
    let (shape, q10) = g.get(&format!("{name}.sample_q10"));
    let (_, q50) = g.get(&format!("{name}.sample_q50"));
    let (_, q90) = g.get(&format!("{name}.sample_q90"));
    let horizon = shape[1];
    let (paths, batch) = (4000, 64);
    let plan = model
        .memory_plan(&ForecastSpec {
            variates: c.variates,
            context: c.steps,
            horizon,
            batch,
        })
        .unwrap();
    let mut mem = vec![0u8; plan.bytes_unaligned()];
    let mut out = vec![0f32; c.variates * horizon * paths];
    let mode = Mode::Samples {
        paths,
        batch,
        seed: 0,
    };
    model
        .forecast_samples(&series, horizon, mode, &mut mem, &mut out)
        .unwrap();
    let mut worst = 0.0f64;
    for (i, run) in out.chunks_exact_mut(paths).enumerate() {
        sort_samples(run);
        let spread = q90[i] - q10[i];
        assert!(spread > 0.0);
        for (q, gold) in [(0.1, q10[i]), (0.5, q50[i]), (0.9, q90[i])] {
            let ours = quantile_sorted(run, q).unwrap() as f64;
            worst = worst.max((ours - gold).abs() / spread);
        }
    }
    eprintln!("{name}: worst quantile gap {worst:.3} of the 10-90% spread");
    assert!(worst < 0.1, "{name}: {worst}");
}

#[test]
fn samples_match_reference_quantiles() {
    check_samples(
        "small.model.safetensors",
        "small.golden.safetensors",
        "plain",
    );
    check_samples(
        "small.model.safetensors",
        "small.golden.safetensors",
        "missing",
    );
    check_samples(
        "sfirst.model.safetensors",
        "sfirst.golden.safetensors",
        "plain",
    );
}

/// Path `i` draws from stream `i` of the seed, so the batch size does not change the samples,
/// and the shared context is computed once however many batches follow. Exact with the SIMD
/// kernels too: dense products give a token the same result whatever the number of tokens.
#[test]
fn samples_do_not_depend_on_batching() {
    for kernels in kernels_under_test() {
        samples_do_not_depend_on_batching_with(kernels);
    }
}

fn samples_do_not_depend_on_batching_with(kernels: Kernels) {
    use goldcrest_core::models::toto::Mode;
    let words = fixture("small.model.safetensors");
    let st = SafeTensors::parse(as_bytes(&words)).unwrap();
    let model = Toto::new(st, kernels).unwrap();
    let g = Golden::load("small.golden.safetensors");
    let c = case(&g, "plain");
    let series = Series {
        values: &c.values,
        variates: c.variates,
        groups: Some(&c.groups),
    };
    let (paths, horizon) = (12, 20);
    let run = |batch: usize, seed: u64| {
        let spec = ForecastSpec {
            variates: c.variates,
            context: c.steps,
            horizon,
            batch,
        };
        let mut mem = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
        let mut out = vec![0f32; c.variates * horizon * paths];
        let mode = Mode::Samples { paths, batch, seed };
        model
            .forecast_samples(&series, horizon, mode, &mut mem, &mut out)
            .unwrap();
        out
    };
    let one = run(1, 5);
    assert_eq!(one, run(5, 5));
    assert_eq!(one, run(12, 5));
    assert_ne!(one, run(12, 6));
    assert!(one.iter().all(|x| x.is_finite()));
}

fn small_model_bytes() -> Vec<u64> {
    fixture("small.model.safetensors")
}

fn forecast_once(
    model: &Toto<'_>,
    values: &[f64],
    variates: usize,
    horizon: usize,
) -> Result<Vec<f64>, goldcrest_core::Error> {
    let series = Series {
        values,
        variates,
        groups: None,
    };
    let steps = values.len().checked_div(variates).unwrap_or(0);
    let spec = ForecastSpec {
        variates,
        context: steps,
        horizon,
        batch: 1,
    };
    let plan = model.memory_plan(&spec)?;
    let mut mem = vec![0u8; plan.bytes_unaligned()];
    let mut out = vec![0f64; variates * horizon];
    model.forecast_mean(&series, horizon, &mut mem, &mut out)?;
    Ok(out)
}

#[test]
fn awkward_series_give_finite_forecasts_or_errors() {
    let words = small_model_bytes();
    let model = Toto::new(
        SafeTensors::parse(as_bytes(&words)).unwrap(),
        Kernels::scalar(),
    )
    .unwrap();
    let finite = |r: Result<Vec<f64>, _>| r.unwrap().iter().all(|x| x.is_finite());
    assert!(finite(forecast_once(&model, &[5.0], 1, 3)), "single point");
    assert!(finite(forecast_once(&model, &[7.0; 40], 1, 10)), "constant");
    assert!(
        finite(forecast_once(&model, &[f64::NAN; 20], 2, 10)),
        "all missing"
    );
    assert!(
        finite(forecast_once(&model, &[1e25, -1e25, 3e24, 0.0], 1, 9)),
        "huge"
    );
    assert!(
        forecast_once(&model, &[1e30, 0.0], 1, 3).is_err(),
        "too huge"
    );
    assert!(forecast_once(&model, &[], 1, 3).is_err(), "empty");
    assert!(
        forecast_once(&model, &[1.0, 2.0, 3.0], 2, 3).is_err(),
        "ragged"
    );
    assert!(
        forecast_once(&model, &[1.0, 2.0], 0, 3).is_err(),
        "no variates"
    );
    assert!(
        forecast_once(&model, &[1.0, 2.0], 1, 0).is_err(),
        "no horizon"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(64))]
    #[test]
    fn never_panics_on_any_series(
        variates in 1usize..4,
        steps in 1usize..30,
        horizon in 1usize..20,
        seed in proptest::prelude::any::<u64>(),
    ) {
        let words = small_model_bytes();
        let model = Toto::new(SafeTensors::parse(as_bytes(&words)).unwrap(), Kernels::scalar()).unwrap();
        let mut state = seed | 1;
        let values: Vec<f64> = (0..variates * steps).map(|_| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            match state % 9 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => -1e29,
                3 => 0.0,
                _ => (state >> 11) as f64 / (1u64 << 53) as f64 * 200.0 - 100.0,
            }
        }).collect();
        match forecast_once(&model, &values, variates, horizon) {
            Ok(out) => proptest::prop_assert!(out.iter().all(|x| x.is_finite())),
            Err(e) => proptest::prop_assert!(false, "valid series refused: {e}"),
        }
    }
}

/// Rewrites the small model's file with `edit` applied to its tensor list and metadata.
fn edited_model(
    edit: impl FnOnce(
        &mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
        &mut std::collections::HashMap<String, String>,
    ),
) -> Vec<u64> {
    let words = small_model_bytes();
    let bytes = as_bytes(&words);
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut tensors, &mut meta);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, Some(meta)).unwrap();
    let mut w = vec![0u64; out.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..out.len()].copy_from_slice(&out);
    w.push(out.len() as u64);
    w
}

#[test]
fn bad_files_are_refused_with_the_culprit_named() {
    use goldcrest_core::Error;
    let open = |w: &[u64]| {
        SafeTensors::parse(as_bytes(w))
            .and_then(|st| Toto::new(st, Kernels::scalar()))
            .map(|_| ())
    };
    let missing = edited_model(|t, _| t.retain(|(n, ..)| n != "transformer.layers.2.mlp.0.bias"));
    assert!(
        matches!(open(&missing), Err(Error::MissingTensor { tensor }) if tensor.as_str() == "transformer.layers.2.mlp.0.bias")
    );
    let extra = edited_model(|t, _| {
        t.push((
            "transformer.rotary_emb.freqs".into(),
            safetensors::Dtype::F32,
            vec![4],
            vec![0; 16],
        ))
    });
    assert!(
        matches!(open(&extra), Err(Error::UnexpectedTensor { tensor }) if tensor.as_str() == "transformer.rotary_emb.freqs")
    );
    let reshaped = edited_model(|t, _| {
        for (n, _, s, _) in t.iter_mut() {
            if n == "unembed.bias" {
                *s = vec![32, 8];
            }
        }
    });
    assert!(matches!(open(&reshaped), Err(Error::ShapeMismatch { .. })));
    let arch = edited_model(|_, m| {
        m.insert("goldcrest.arch".into(), "llama".into());
    });
    assert!(matches!(open(&arch), Err(Error::BadMetadata { .. })));
    let heads = edited_model(|_, m| {
        m.insert("goldcrest.toto.num_heads".into(), "3".into());
    });
    assert!(matches!(open(&heads), Err(Error::BadMetadata { .. })));
    let newer = edited_model(|_, m| {
        m.insert("goldcrest.format_version".into(), "2.0".into());
    });
    assert!(matches!(
        open(&newer),
        Err(Error::UnsupportedVersion { .. })
    ));
}

/// The context pass gives the same forecast whether its patches go through the network one at
/// a time (firmware) or all together (the CLI's matrix-matrix prefill), bit for bit, with every
/// kernel: each token's products and attention do not depend on the other tokens of the pass.
/// (With several patches per pass the model's trailing variate-wise layer runs on the last
/// patch alone, so this also checks that shortcut.)
#[test]
fn prefill_chunk_does_not_change_the_forecast() {
    let words = fixture("small.model.safetensors");
    let g = Golden::load("small.golden.safetensors");
    let c = case(&g, "plain");
    let series = Series {
        values: &c.values,
        variates: c.variates,
        groups: Some(&c.groups),
    };
    let horizon = 40;
    for kernels in kernels_under_test() {
        let run = |chunk: usize| {
            let st = SafeTensors::parse(as_bytes(&words)).unwrap();
            let model = Toto::new(st, kernels).unwrap().with_prefill_chunk(chunk);
            let spec = ForecastSpec {
                variates: c.variates,
                context: c.steps,
                horizon,
                batch: 1,
            };
            let mut mem = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
            let mut out = vec![0f64; c.variates * horizon];
            model
                .forecast_mean(&series, horizon, &mut mem, &mut out)
                .unwrap();
            out
        };
        let st = SafeTensors::parse(as_bytes(&words)).unwrap();
        let patch = Toto::new(st, kernels).unwrap().config().patch_size;
        assert!(
            c.steps.div_ceil(patch) >= 4,
            "the context spans several patches"
        );
        let one = run(1);
        for chunk in [2, 3, 8, 64] {
            assert_eq!(one, run(chunk), "{:?} chunk {chunk}", kernels.isa());
        }
    }
}

/// A long context (50 patches) on the model whose SwiGLU is narrower than its width (hidden
/// 20 < width 24): the context pass keeps only the last patch past the last time-wise layer's
/// keys and values, and whatever scratch that uses must hold every dropped position's keys and
/// values. The forecast equals the one computed a patch at a time (which drops nothing).
#[test]
fn long_context_on_a_narrow_mlp_prunes_without_overflow() {
    let words = fixture("sfirst.model.safetensors");
    let (variates, steps, horizon) = (2usize, 200usize, 12usize);
    let values: Vec<f64> = (0..variates * steps)
        .map(|i| {
            let t = (i % steps) as f64;
            10.0 + (t / 7.0).sin() * 3.0 + (i / steps) as f64 + 0.01 * t
        })
        .collect();
    let series = Series {
        values: &values,
        variates,
        groups: None,
    };
    for kernels in kernels_under_test() {
        let run = |chunk: usize| {
            let st = SafeTensors::parse(as_bytes(&words)).unwrap();
            let model = Toto::new(st, kernels).unwrap().with_prefill_chunk(chunk);
            assert!(model.config().mlp_hidden_dim < model.config().embed_dim);
            let spec = ForecastSpec {
                variates,
                context: steps,
                horizon,
                batch: 1,
            };
            let mut mem = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
            let mut out = vec![0f64; variates * horizon];
            model
                .forecast_mean(&series, horizon, &mut mem, &mut out)
                .unwrap();
            out
        };
        let one = run(1);
        assert!(one.iter().all(|v| v.is_finite()));
        for chunk in [7, 64] {
            assert_eq!(one, run(chunk), "{:?} chunk {chunk}", kernels.isa());
        }
    }
}

/// A pool whose `run` spawns one scoped thread per task, in reverse order, so parts really run
/// concurrently and out of order.
struct SpawningPool(usize);

// SAFETY: every index runs exactly once and the scope joins all threads before `run` returns.
#[allow(unsafe_code)]
unsafe impl goldcrest_core::kernels::Parallel for SpawningPool {
    fn workers(&self) -> usize {
        self.0
    }
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in (0..tasks).rev() {
                s.spawn(move || task(i));
            }
        });
    }
}

/// Large batches decode in parts on the workers; every path's samples are the same bits as on
/// one thread, for 2 and 3 workers (parts of 128 + 72 and 64 + 64 + 72 paths), with the
/// small f32 fixture (two variates) and the bundled ternary/q8_0 tiny model.
#[test]
fn samples_do_not_depend_on_the_thread_count() {
    use goldcrest_core::models::toto::Mode;
    let tiny = {
        let path = format!(
            "{}/../models/toto-tiny.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap();
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        words.push(bytes.len() as u64);
        words
    };
    let small = fixture("small.model.safetensors");
    let pools: [&'static SpawningPool; 2] = [
        Box::leak(Box::new(SpawningPool(2))),
        Box::leak(Box::new(SpawningPool(3))),
    ];
    let wave: Vec<f64> = (0..2 * 100)
        .map(|i| 10.0 + (i as f64 * 0.3).sin() + (i / 100) as f64)
        .collect();
    for (words, variates) in [(&tiny, 1usize), (&small, 2)] {
        let st = SafeTensors::parse(as_bytes(words)).unwrap();
        let series = Series {
            values: &wave[..variates * 100],
            variates,
            groups: None,
        };
        let (paths, horizon) = (200, 40);
        for kernels in kernels_under_test() {
            let run = |kernels: Kernels| {
                let model = Toto::new(st, kernels).unwrap();
                let spec = ForecastSpec {
                    variates,
                    context: 100,
                    horizon,
                    batch: paths,
                };
                let mut mem = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
                let mut out = vec![0f32; variates * horizon * paths];
                let mode = Mode::Samples {
                    paths,
                    batch: paths,
                    seed: 9,
                };
                model
                    .forecast_samples(&series, horizon, mode, &mut mem, &mut out)
                    .unwrap();
                out
            };
            let one = run(kernels);
            assert!(one.iter().all(|x| x.is_finite()));
            for pool in pools {
                let got = run(kernels.with_parallel(pool));
                let same = one
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{kernels:?} with {} workers", pool.0);
            }
        }
    }
}
