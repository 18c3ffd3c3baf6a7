//! The LLaMA/Qwen2 decoder against transformers 5.24.0 fixtures (tools/decoder/make_fixtures.py):
//! convert the committed Hugging Face checkpoints, run them, compare logits and greedy tokens.

use std::path::{Path, PathBuf};

use goldcrest_core::arena::Arena;
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::Kernels;
use goldcrest_core::models::decoder::{Arch, Decoder, KvCache, KvFormat, Scratch, Weights};
use goldcrest_core::quant::Format;
use goldcrest_std::convert::decoder::{Options, convert};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/decoder")
        .join(name)
}

struct Golden {
    prompt: Vec<u32>,
    generated: Vec<u32>,
    vocab: usize,
    logits_prompt: Vec<f32>,
    logits_steps: Vec<f32>,
}

fn floats(path: PathBuf) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn golden(name: &str) -> Golden {
    let dir = fixture(name);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u32> {
        json[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    Golden {
        prompt: ids("prompt"),
        generated: ids("generated"),
        vocab: json["vocab"].as_u64().unwrap() as usize,
        logits_prompt: floats(dir.join("logits_prompt.f32")),
        logits_steps: floats(dir.join("logits_steps.f32")),
    }
}

/// The converted file's bytes at an 8-aligned address.
fn converted(name: &str, arch: Arch, weights: Format) -> Vec<u64> {
    let options = Options {
        weights,
        head_weights: None,
    };
    let bytes = convert(&fixture(name), arch, options, &mut |_, _, _| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    // The last word records the exact length (the u64 backing keeps the alignment).
    words.push(bytes.len() as u64);
    words
}

fn file_bytes(words: &[u64]) -> &[u8] {
    let (len, data) = words.split_last().unwrap();
    &bytemuck::cast_slice::<u64, u8>(data)[..*len as usize]
}

struct Run {
    /// Logits of every prompt position (one forward pass), token-major.
    prompt_logits: Vec<f32>,
    /// Logits at each greedy step (step 0 = prompt's last position).
    step_logits: Vec<Vec<f32>>,
    generated: Vec<u32>,
}

/// Prompt logits in one prefill (chunks of `chunk` tokens), then 16 greedy cached steps.
fn run(words: &[u64], kv: KvFormat, steps: usize, chunk: usize) -> Run {
    run_forced(words, kv, steps, chunk, None)
}

/// As [`run`], but when `forced` is given, feeds those tokens instead of the argmax (teacher
/// forcing, so logits stay comparable with the golden ones after a greedy divergence).
fn run_forced(
    words: &[u64],
    kv: KvFormat,
    steps: usize,
    chunk: usize,
    forced: Option<&[u32]>,
) -> Run {
    let st = SafeTensors::parse(file_bytes(words)).unwrap();
    let mut layers = vec![None; 8];
    let weights = Weights::load(&st, &mut layers).unwrap();
    let decoder = Decoder::new(weights, Kernels::for_target());
    let cfg = *decoder.config();
    let context = 64.min(cfg.max_positions);
    let plan = decoder.memory_plan(context, kv, chunk).unwrap();
    let mut state = vec![0u8; plan.state_bytes + 64];
    let mut scratch = vec![0u8; plan.scratch_bytes + 64];
    let mut state_arena = Arena::new_unaligned(&mut state);
    let mut cache = KvCache::carve(&cfg, context, kv, &mut state_arena).unwrap();
    let mut scratch_arena = Arena::new_unaligned(&mut scratch);
    let mut s = Scratch::carve(&cfg, context, chunk, &mut scratch_arena).unwrap();
    assert!(state_arena.used() <= plan.state_bytes + 63);

    let prompt: Vec<u32> = golden_prompt();
    let mut prompt_logits = vec![0.0; prompt.len() * cfg.vocab];
    decoder
        .forward(&mut cache, &mut s, &prompt, &mut prompt_logits)
        .unwrap();
    let mut last = prompt_logits[(prompt.len() - 1) * cfg.vocab..].to_vec();
    let mut generated = Vec::new();
    let mut step_logits = Vec::new();
    for i in 0..steps {
        let next = forced.map_or_else(|| argmax(&last), |f| f[i]);
        step_logits.push(last.clone());
        generated.push(next);
        decoder
            .forward(&mut cache, &mut s, &[next], &mut last)
            .unwrap();
    }
    Run {
        prompt_logits,
        step_logits,
        generated,
    }
}

fn golden_prompt() -> Vec<u32> {
    vec![1, 17, 42, 99, 200, 7, 255, 64]
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// f32 weights, f32 cache: every prompt logit and every step's logits within 1e-4, and the
/// 16 greedy tokens equal to transformers' cached generation.
fn check_exact(name: &str, arch: Arch, weights: Format, tol: f32) {
    let g = golden(name);
    assert_eq!(g.prompt, golden_prompt());
    let words = converted(name, arch, weights);
    for chunk in [1, 3, 16] {
        let r = run(&words, KvFormat::F32, g.generated.len(), chunk);
        let prompt_err = max_abs_diff(&r.prompt_logits, &g.logits_prompt);
        assert!(
            prompt_err <= tol,
            "{name} chunk {chunk}: prompt logits off by {prompt_err}"
        );
        assert_eq!(r.generated, g.generated, "{name}: greedy tokens differ");
        for (i, step) in r.step_logits.iter().enumerate() {
            let want = &g.logits_steps[i * g.vocab..(i + 1) * g.vocab];
            let err = max_abs_diff(step, want);
            assert!(err <= tol, "{name} step {i}: logits off by {err}");
        }
    }
}

#[test]
fn llama_f32_matches_transformers() {
    check_exact("llama", Arch::Llama, Format::F32, 1e-4);
}

#[test]
fn qwen2_f32_matches_transformers() {
    check_exact("qwen2", Arch::Qwen2, Format::F32, 1e-4);
}

#[test]
fn trilm_f16_checkpoint_as_f32_matches_transformers() {
    check_exact("trilm", Arch::Llama, Format::F32, 1e-4);
}

/// Packed ternary weights with f32 activations equal the float model whose weights are
/// ternary, up to summation order.
#[test]
fn trilm_tq2_0_and_tq1_0_match_the_float_ternary_model() {
    check_exact("trilm", Arch::Llama, Format::Tq2_0, 1e-4);
    check_exact("trilm", Arch::Llama, Format::Tq1_0, 1e-4);
}

#[test]
fn float_model_is_refused_as_ternary_naming_the_tensor() {
    let err = convert(
        &fixture("qwen2"),
        Arch::Qwen2,
        Options {
            weights: Format::Tq2_0,
            head_weights: None,
        },
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model.layers.0.self_attn.q_proj.weight"),
        "{err}"
    );
    assert!(err.contains("not ternary"), "{err}");
}

/// Accuracy cost of reduced-precision KV caches (printed with --nocapture), with bounds that
/// fail on a broken cache: teacher-forced logits within 2e-3 (f16) and 0.1 (int8) of the
/// largest |logit|, and the first 2 greedy tokens equal (the random fixtures have near-ties,
/// so a small change can flip a later token; agreement is printed).
#[test]
fn kv_cache_f16_and_int8_accuracy() {
    for (name, arch) in [
        ("llama", Arch::Llama),
        ("qwen2", Arch::Qwen2),
        ("trilm", Arch::Llama),
    ] {
        let g = golden(name);
        let words = converted(name, arch, Format::F32);
        for (kv, tol) in [(KvFormat::F16, 2e-3), (KvFormat::I8, 0.1)] {
            let free = run(&words, kv, g.generated.len(), 4);
            let r = run_forced(&words, kv, g.generated.len(), 4, Some(&g.generated));
            let mut err = max_abs_diff(&r.prompt_logits, &g.logits_prompt);
            for (i, step) in r.step_logits.iter().enumerate() {
                err = err.max(max_abs_diff(
                    step,
                    &g.logits_steps[i * g.vocab..(i + 1) * g.vocab],
                ));
            }
            let agree = free
                .generated
                .iter()
                .zip(&g.generated)
                .take_while(|(a, b)| a == b)
                .count();
            let scale = g.logits_steps.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            println!(
                "{name} kv {}: max |logit error| {err:.2e} of max |logit| {scale:.1} (teacher-forced), greedy agreement {agree}/{}",
                kv.name(),
                g.generated.len()
            );
            assert!(err <= tol * scale, "{name} kv {}: {err}", kv.name());
            assert!(
                agree >= 2,
                "{name} kv {}: only {agree} greedy tokens agree",
                kv.name()
            );
        }
    }
}

#[test]
fn full_context_is_an_error_and_changes_nothing() {
    let words = converted("qwen2", Arch::Qwen2, Format::F32);
    let st = SafeTensors::parse(file_bytes(&words)).unwrap();
    let mut layers = vec![None; 2];
    let decoder = Decoder::new(Weights::load(&st, &mut layers).unwrap(), Kernels::scalar());
    let cfg = *decoder.config();
    let plan = decoder.memory_plan(4, KvFormat::F16, 2).unwrap();
    let mut state = vec![0u8; plan.bytes_unaligned()];
    let mut arena = Arena::new_unaligned(&mut state);
    let mut cache = KvCache::carve(&cfg, 4, KvFormat::F16, &mut arena).unwrap();
    let mut s = Scratch::carve(&cfg, 4, 2, &mut arena).unwrap();
    let mut logits = vec![0.0; cfg.vocab];
    decoder
        .forward(&mut cache, &mut s, &[1, 2, 3], &mut logits)
        .unwrap();
    let err = decoder.forward(&mut cache, &mut s, &[4, 5], &mut logits);
    assert!(matches!(
        err,
        Err(goldcrest_core::Error::ContextFull { capacity: 4 })
    ));
    assert_eq!(cache.len(), 3);
    decoder
        .forward(&mut cache, &mut s, &[4], &mut logits)
        .unwrap();
    assert_eq!(cache.len(), 4);
    assert!(
        decoder
            .forward(&mut cache, &mut s, &[5], &mut logits)
            .is_err()
    );
    assert!(
        decoder
            .forward(&mut cache, &mut s, &[], &mut logits)
            .is_err()
    );
    cache.clear();
    assert!(
        decoder
            .forward(&mut cache, &mut s, &[cfg.vocab as u32], &mut logits)
            .is_err()
    );
}

#[test]
fn memory_plan_is_exact() {
    let words = converted("llama", Arch::Llama, Format::Q8_0);
    let st = SafeTensors::parse(file_bytes(&words)).unwrap();
    let mut layers = vec![None; 2];
    let decoder = Decoder::new(Weights::load(&st, &mut layers).unwrap(), Kernels::scalar());
    let cfg = *decoder.config();
    for kv in [KvFormat::F32, KvFormat::F16, KvFormat::I8] {
        let plan = decoder.memory_plan(32, kv, 5).unwrap();
        let mut state = goldcrest_core::arena::Aligned([0u8; 1 << 16]);
        let mut arena = Arena::new(&mut state.0[..plan.state_bytes]).unwrap();
        KvCache::carve(&cfg, 32, kv, &mut arena).unwrap();
        assert_eq!(arena.remaining(), 0);
        let mut arena = Arena::new(&mut state.0[..plan.scratch_bytes]).unwrap();
        Scratch::carve(&cfg, 32, 5, &mut arena).unwrap();
        assert_eq!(arena.remaining(), 0);
        let mut short = Arena::new(&mut state.0[..plan.state_bytes - 1]).unwrap();
        assert!(KvCache::carve(&cfg, 32, kv, &mut short).is_err());
    }
}
