//! Toto forecasts over random small configurations with random weights: the forecast does not
//! depend on how the context is chunked (with several patches per pass the context pass skips
//! what nobody reads: the last time-wise layer's queries and MLP for all but the last patch,
//! and the variate-wise layers after it) nor on the number of threads, bit for bit, and no
//! shape makes it fail or panic. Golden values against toto-ts are in core/tests/toto_fixtures.rs.

use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::toto::{ForecastSpec, Mode, Series, Toto};
use goldcrest_std::write::ModelWriter;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Config {
    patch: usize,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    layers: usize,
    /// -1: no variate-wise layers.
    spacewise_every: i64,
    spacewise_first: bool,
    components: usize,
}

fn config() -> impl Strategy<Value = Config> {
    (
        (
            prop::sample::select(vec![2usize, 4, 8]),
            1usize..=3,
            prop::sample::select(vec![2usize, 4]),
            1usize..=20,
        ),
        // Layers: a multiple of the variate-wise period (or 1–4 without variate-wise layers).
        prop::sample::select(vec![-1i64, 1, 2, 3]),
        1usize..=4,
        any::<bool>(),
        1usize..=3,
    )
        .prop_map(
            |((patch, heads, head_dim, hidden), every, count, first, components)| {
                let layers = if every > 0 {
                    every as usize * count.min(2)
                } else {
                    count
                };
                Config {
                    patch,
                    heads,
                    head_dim,
                    hidden,
                    layers,
                    spacewise_every: every,
                    spacewise_first: first,
                    components,
                }
            },
        )
}

/// A file's bytes in 8-byte-aligned storage (the f32 tensors are read in place).
struct ModelBytes {
    words: Vec<u64>,
    len: usize,
}

impl ModelBytes {
    fn open(&self, kernels: Kernels, prefill_chunk: usize) -> Toto<'_> {
        let bytes = &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len];
        let st = SafeTensors::parse(bytes).unwrap();
        Toto::new(st, kernels)
            .unwrap()
            .with_prefill_chunk(prefill_chunk)
    }
}

/// A Toto file with weights uniform in ±1/√fan-in.
fn random_model(c: &Config, seed: u64) -> ModelBytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut values = |n: usize, fan_in: usize| -> Vec<f32> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
            })
            .collect()
    };
    let (p, d, h, k) = (c.patch, c.heads * c.head_dim, c.hidden, c.components);
    let mut w = ModelWriter::new();
    w.arch("toto").unwrap();
    for (name, value) in [
        ("patch_size", p.to_string()),
        ("embed_dim", d.to_string()),
        ("num_layers", c.layers.to_string()),
        ("num_heads", c.heads.to_string()),
        ("mlp_hidden_dim", h.to_string()),
        ("spacewise_every_n_layers", c.spacewise_every.to_string()),
        ("spacewise_first", c.spacewise_first.to_string()),
        ("k_components", k.to_string()),
        ("stabilize_with_global", "true".to_string()),
        ("scale_factor_exponent", "10".to_string()),
    ] {
        w.hyperparameter(name, value).unwrap();
    }
    let mut linear = |w: &mut ModelWriter, name: &str, rows: usize, cols: usize| {
        w.f32(
            &format!("{name}.weight"),
            &[rows, cols],
            &values(rows * cols, cols),
        )
        .unwrap();
        w.f32(&format!("{name}.bias"), &[rows], &values(rows, cols))
            .unwrap();
    };
    linear(&mut w, "patch_embed.projection", d, p);
    for l in 0..c.layers {
        let at = |field: &str| format!("transformer.layers.{l}.{field}");
        w.f32(&at("norm1.scale"), &[d], &vec![1.0; d]).unwrap();
        w.f32(&at("norm2.scale"), &[d], &vec![1.0; d]).unwrap();
        linear(&mut w, &at("attention.wQKV"), 3 * d, d);
        linear(&mut w, &at("attention.wO"), d, d);
        linear(&mut w, &at("mlp.0"), 2 * h, d);
        linear(&mut w, &at("mlp.2"), d, h);
    }
    linear(&mut w, "unembed", p * d, d);
    for head in ["df", "loc_proj", "scale_proj", "mixture_weights"] {
        linear(&mut w, &format!("output_distribution.{head}"), k, d);
    }
    let bytes = w.to_bytes().unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    ModelBytes {
        words,
        len: bytes.len(),
    }
}

/// Kernels to compare: portable scalar, and this CPU's best.
fn kernels() -> [Kernels; 2] {
    [Kernels::scalar(), goldcrest_std::kernels::detect()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn forecasts_do_not_depend_on_chunks_or_threads(
        c in config(),
        seed in any::<u64>(),
        variates in 1usize..=3,
        grouped in any::<bool>(),
        context in 1usize..60,
        horizon in 1usize..20,
    ) {
        let file = random_model(&c, seed);
        let values: Vec<f64> = (0..variates * context)
            .map(|i| {
                let t = (i % context) as f64;
                5.0 * (i / context) as f64 + (t * 0.7).sin() * 2.0 + 0.05 * t
            })
            .collect();
        let groups: Vec<u32> = (0..variates as u32).map(|v| v % 2).collect();
        let series = Series {
            values: &values,
            variates,
            groups: grouped.then_some(groups.as_slice()),
        };
        for kernels in kernels() {
            let mean = |chunk: usize| -> Vec<f64> {
                let model = file.open(kernels, chunk);
                let spec = ForecastSpec { variates, context, horizon, batch: 1 };
                let mut mem = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
                let mut out = vec![0f64; variates * horizon];
                model.forecast_mean(&series, horizon, &mut mem, &mut out).unwrap();
                out
            };
            let one = mean(1);
            prop_assert!(one.iter().all(|v| v.is_finite()), "{:?}", c);
            for chunk in [3, 64] {
                let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&one), bits(&mean(chunk)), "{:?} chunk {}", c, chunk);
            }
        }
        // Sampled paths: the same bits on one and two threads.
        let detected = goldcrest_std::kernels::detect();
        let sample = |kernels: Kernels| -> Vec<f32> {
            let model = file.open(kernels, 64);
            let (paths, batch) = (8, 8);
            let spec = ForecastSpec { variates, context, horizon, batch };
            let mut mem = vec![0u8; model.memory_plan(&spec).unwrap().bytes_unaligned()];
            let mut out = vec![0f32; variates * horizon * paths];
            let mode = Mode::Samples { paths, batch, seed: 3 };
            model.forecast_samples(&series, horizon, mode, &mut mem, &mut out).unwrap();
            out
        };
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(
            bits(&sample(detected)),
            bits(&sample(goldcrest_std::kernels::detect_with_threads(2))),
            "{:?}", c
        );
    }
}
