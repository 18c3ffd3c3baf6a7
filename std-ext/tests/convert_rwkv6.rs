//! `convert::rwkv6` on the golden fixtures: official and Hugging Face names give the same
//! model, which reproduces the reference logits; the fp16 rescale trick is undone; strictness.

use std::collections::HashMap;

use goldcrest_core::arena::Arena;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::rwkv6::{Rwkv6, Scratch, State};
use goldcrest_core::quant::Format;
use goldcrest_std::convert::Converted;
use goldcrest_std::convert::rwkv6::{Options, convert, official_name};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixture(file: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/fixtures/rwkv6/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Rewrites the (f16) fixture as f32 with renamed tensors (`None` drops one) and each tensor
/// multiplied by `scale(name)`.
fn rewrite(
    input: &[u8],
    rename: impl Fn(&str) -> Option<String>,
    scale: impl Fn(&str) -> f32,
) -> Vec<u8> {
    let st = SafeTensors::deserialize(input).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let Some(new_name) = rename(&name) else {
            continue;
        };
        let s = scale(&name);
        let data: Vec<u8> = view
            .data()
            .chunks_exact(2)
            .flat_map(|b| (half::f16::from_le_bytes([b[0], b[1]]).to_f32() * s).to_le_bytes())
            .collect();
        owned.push((new_name, view.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn to_hf(name: &str) -> String {
    let hf = name
        .replace("blocks.0.ln0.", "blocks.0.pre_ln.")
        .replace(".att.", ".attention.")
        .replace(".ffn.", ".feed_forward.");
    match hf.as_str() {
        "emb.weight" => "rwkv.embeddings.weight".into(),
        "head.weight" => hf,
        _ => format!("rwkv.{hf}"),
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn golden_step_logits() -> (Vec<u32>, Vec<f32>) {
    let bytes = fixture("tiny_a.golden.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tokens = st
        .tensor("tokens")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
        .collect();
    (tokens, f32s(st.tensor("step_logits").unwrap().data()))
}

fn run(model: &Converted, tokens: &[u32]) -> Vec<f32> {
    let src = model;
    let mut m_layers = vec![None; 32];
    let m = Rwkv6::load(&src, &mut m_layers, Kernels::for_target()).unwrap();
    let plan = m.memory_plan(tokens.len()).unwrap();
    let mut state_buf = vec![0u8; plan.bytes_unaligned()];
    let mut scratch_buf = vec![0u8; plan.bytes_unaligned()];
    let mut sa = Arena::new_unaligned(&mut state_buf);
    let mut state = State::carve(m.config(), &mut sa).unwrap();
    let mut sb = Arena::new_unaligned(&mut scratch_buf);
    let mut scratch = Scratch::carve(m.config(), tokens.len(), &mut sb).unwrap();
    let mut logits = vec![0.0; tokens.len() * m.config().vocab_size];
    m.prefill(&mut state, &mut scratch, tokens, &mut logits)
        .unwrap();
    logits
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn f32_options() -> Options {
    Options {
        weights: Format::F32,
        embeddings: Format::F32,
        ..Options::default()
    }
}

#[test]
fn official_and_hf_names_convert_to_the_reference_model() {
    let official = fixture("tiny_a.safetensors");
    let hf = rewrite(&official, |n| Some(to_hf(n)), |_| 1.0);
    let a = convert(&official, &f32_options()).unwrap();
    let b = convert(&hf, &f32_options()).unwrap();
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.metadata["goldcrest.rwkv6.n_layer"], "2");
    assert_eq!(a.metadata["goldcrest.rwkv6.head_size"], "16");
    assert_eq!(a.metadata["goldcrest.rwkv6.dim_ffn"], "224");
    let names_a: Vec<_> = a.tensors.keys().collect();
    let names_b: Vec<_> = b.tensors.keys().collect();
    assert_eq!(names_a, names_b);
    for (name, t) in &a.tensors {
        assert_eq!(t.bytes(), b.tensors[name].bytes(), "{name}");
    }
    let (tokens, golden) = golden_step_logits();
    let d = max_abs_diff(&run(&a, &tokens), &golden);
    assert!(
        d <= 1e-4,
        "converted model differs from the reference by {d}"
    );
}

#[test]
fn formats_follow_the_options() {
    let official = fixture("tiny_a.safetensors");
    let c = convert(&official, &Options::default()).unwrap();
    let f = |n: &str| c.tensors[n].format;
    assert_eq!(f("blocks.1.att.key.weight"), Format::F16);
    assert_eq!(f("emb.weight"), Format::F16);
    assert_eq!(f("blocks.1.att.time_maa_w1"), Format::F32);
    assert_eq!(f("blocks.0.ln0.weight"), Format::F32);
    // The fixture stores f16, so an f16 conversion is lossless and matches the reference.
    let (tokens, golden) = golden_step_logits();
    assert!(max_abs_diff(&run(&c, &tokens), &golden) <= 1e-4);

    let bf = Options {
        weights: Format::Bf16,
        ..Options::default()
    };
    let c = convert(&official, &bf).unwrap();
    assert_eq!(c.tensors["blocks.0.ffn.value.weight"].format, Format::Bf16);
    let d = max_abs_diff(&run(&c, &tokens), &golden);
    // bf16 keeps 8 bits of mantissa: a visible but bounded change on O(1) logits.
    assert!(d > 1e-4 && d < 0.1, "bf16 logits differ by {d}");
}

#[test]
fn rescaled_fp16_exports_are_undone() {
    let official = fixture("tiny_a.safetensors");
    let every = 1; // the fixture has two layers; real exports use 6
    let layer_of = |n: &str| -> i32 {
        n.strip_prefix("blocks.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok())
            .unwrap_or(0)
    };
    let rescaled = rewrite(
        &official,
        |n| Some(n.to_string()),
        |n| {
            if n.ends_with(".att.output.weight") || n.ends_with(".ffn.value.weight") {
                0.5f32.powi(layer_of(n) / every)
            } else {
                1.0
            }
        },
    );
    let plain = convert(&official, &f32_options()).unwrap();
    let undone = convert(
        &rescaled,
        &Options {
            rescale_every: Some(every as usize),
            ..f32_options()
        },
    )
    .unwrap();
    for (name, t) in &plain.tensors {
        assert_eq!(t.bytes(), undone.tensors[name].bytes(), "{name}");
    }
    let not_undone = convert(&rescaled, &f32_options()).unwrap();
    assert_ne!(
        plain.tensors["blocks.1.att.output.weight"].bytes(),
        not_undone.tensors["blocks.1.att.output.weight"].bytes()
    );
}

#[test]
fn conversion_is_strict() {
    let official = fixture("tiny_a.safetensors");
    let err = |bytes: &[u8]| format!("{:#}", convert(bytes, &Options::default()).unwrap_err());

    let missing = rewrite(
        &official,
        |n| (n != "blocks.1.ffn.time_maa_r").then(|| n.to_string()),
        |_| 1.0,
    );
    let e = err(&missing);
    assert!(
        e.contains("missing tensor 'blocks.1.ffn.time_maa_r'"),
        "{e}"
    );

    let renames: HashMap<&str, &str> =
        [("blocks.1.att.time_faaaa", "blocks.1.att.time_first")].into();
    let unknown = rewrite(
        &official,
        |n| Some(renames.get(n).map_or(n.to_string(), |r| r.to_string())),
        |_| 1.0,
    );
    let e = err(&unknown);
    assert!(e.contains("time_faaaa") || e.contains("time_first"), "{e}");

    let mixed = rewrite(
        &official,
        |n| {
            Some(if n == "ln_out.bias" {
                to_hf(n)
            } else {
                n.to_string()
            })
        },
        |_| 1.0,
    );
    let e = err(&mixed);
    assert!(e.contains("one scheme"), "{e}");

    let nan = rewrite(
        &official,
        |n| Some(n.to_string()),
        |n| {
            if n == "blocks.0.att.time_decay" {
                f32::NAN
            } else {
                1.0
            }
        },
    );
    let e = err(&nan);
    assert!(e.contains("blocks.0.att.time_decay"), "{e}");

    assert!(convert(b"not a safetensors file", &Options::default()).is_err());
}

#[test]
fn hf_name_mapping() {
    let o = |n: &str| official_name(n).0;
    assert_eq!(
        o("rwkv.blocks.3.attention.time_maa_w1"),
        "blocks.3.att.time_maa_w1"
    );
    assert_eq!(o("rwkv.blocks.0.pre_ln.bias"), "blocks.0.ln0.bias");
    assert_eq!(
        o("rwkv.blocks.2.feed_forward.value.weight"),
        "blocks.2.ffn.value.weight"
    );
    assert_eq!(o("rwkv.ln_out.weight"), "ln_out.weight");
    assert_eq!(o("rwkv.embeddings.weight"), "emb.weight");
    assert_eq!(
        official_name("head.weight"),
        ("head.weight".to_string(), None)
    );
}

/// Serializes a converted model with goldcrest's writer and reads it back with goldcrest's
/// parser, as `goldcrest convert` does.
fn written_and_reread(c: &Converted) -> Vec<u64> {
    let bytes = c.writer().unwrap().to_bytes().unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8) + 1];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    words.push(bytes.len() as u64);
    words
}

fn logits_from_file(words: &[u64], tokens: &[u32]) -> Vec<f32> {
    let len = *words.last().unwrap() as usize;
    let bytes = &bytemuck::cast_slice::<u64, u8>(words)[..len];
    let file = goldcrest_core::format::SafeTensors::parse(bytes).unwrap();
    let mut layers = vec![None; 8];
    let m = Rwkv6::load(&file, &mut layers, goldcrest_std::kernels::detect()).unwrap();
    let plan = m.memory_plan(1).unwrap();
    let mut state_buf = vec![0u8; plan.bytes_unaligned()];
    let mut scratch_buf = vec![0u8; plan.bytes_unaligned()];
    let mut state = State::carve(m.config(), &mut Arena::new_unaligned(&mut state_buf)).unwrap();
    let mut scratch =
        Scratch::carve(m.config(), 1, &mut Arena::new_unaligned(&mut scratch_buf)).unwrap();
    let v = m.config().vocab_size;
    let mut logits = vec![0.0; tokens.len() * v];
    for (t, &tok) in tokens.iter().enumerate() {
        m.step(
            &mut state,
            &mut scratch,
            tok,
            &mut logits[t * v..(t + 1) * v],
        )
        .unwrap();
    }
    logits
}

#[test]
fn every_weight_format_writes_a_file_that_runs() {
    let official = fixture("tiny_a.safetensors");
    let (tokens, golden) = golden_step_logits();
    let mut results = Vec::new();
    // Bounds: f32/f16 are exact conversions of the f16 fixture (reference tolerance); the
    // lossy formats get sanity bounds on these random, untrained weights (measured: bf16 0.04,
    // q8_0 0.05, q4_0 1.2 on logits of magnitude ~3), and must rank by precision below.
    for (weights, bound) in [
        (Format::F32, 1e-4),
        (Format::F16, 1e-4),
        (Format::Bf16, 0.2),
        (Format::Q8_0, 0.2),
        (Format::Q4_0, 2.5),
        (Format::Tq2_0, f32::INFINITY),
        (Format::Tq1_0, f32::INFINITY),
    ] {
        let options = Options {
            weights,
            ..Options::default()
        };
        let c = convert(&official, &options).unwrap();
        let logits = logits_from_file(&written_and_reread(&c), &tokens);
        assert!(logits.iter().all(|v| v.is_finite()));
        let d = max_abs_diff(&logits, &golden);
        println!("{}: max |logit - reference| {d:.2e}", weights.name());
        assert!(d <= bound, "{}: {d}", weights.name());
        results.push(logits);
    }
    let err = |i: usize| max_abs_diff(&results[i], &golden);
    assert!(err(1) < err(3) && err(3) < err(4), "q8_0 must beat q4_0");
    // tq2_0 and tq1_0 hold the same trits and scales.
    assert!(max_abs_diff(&results[5], &results[6]) <= 1e-4);
}

/// Weights that already are `d·{-1, 0, 1}` per block (a ternary-trained model exported as
/// floats) convert to ternary without loss: converting the dequantized ternary model again
/// gives the same bytes.
#[test]
fn ternary_trained_weights_convert_losslessly() {
    let official = fixture("tiny_a.safetensors");
    let tq2 = Options {
        weights: Format::Tq2_0,
        embeddings: Format::F32,
        ..Options::default()
    };
    let first = convert(&official, &tq2).unwrap();
    // Back to f32 floats, official names.
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in &first.tensors {
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let values: Vec<f32> = if t.format == Format::Tq2_0 {
            let (rows, cols) = (shape[0], shape[1]);
            let rb = t.format.row_bytes(cols).unwrap();
            let mut out = vec![0.0f32; rows * cols];
            for r in 0..rows {
                goldcrest_core::quant::dequantize_row(
                    t.format,
                    &t.bytes()[r * rb..(r + 1) * rb],
                    cols,
                    &mut out[r * cols..(r + 1) * cols],
                )
                .unwrap();
            }
            out
        } else {
            f32s(t.bytes())
        };
        owned.push((
            name.clone(),
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let floats = safetensors::serialize(views, None).unwrap();
    let second = convert(&floats, &tq2).unwrap();
    for (name, t) in &first.tensors {
        assert_eq!(t.bytes(), second.tensors[name].bytes(), "{name}");
    }
}
