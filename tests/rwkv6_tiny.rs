//! The bundled tiny RWKV-6 (models/rwkv6-tiny.safetensors, trained by tools/rwkv6/train_tiny.py):
//! it fits 1 MiB, its host forward matches the PyTorch training model, greedy generation is
//! the committed lists (plain and with a repetition penalty) the firmware test also checks, and it writes words without looping.
use goldcrest::core::arena::Arena;
use goldcrest::core::models::rwkv6::{Config, Rwkv6, Scratch, State};
use goldcrest::core::ops::sample::{Rng, SamplerConfig, greedy as argmax, sample};
use goldcrest::std::load::ModelFile;
use goldcrest::std::tokenize::Tokenizer;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/rwkv6-tiny.safetensors");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rwkv6-tiny");

/// Max |logit difference| between goldcrest (f32, host kernels) and the float64 PyTorch
/// forward on the file's exact weights. Logits are O(10); f32 accumulation over 3 blocks of
/// 128/448-wide products leaves about 1e-4, so 2e-3 fails on any real semantic difference.
const LOGIT_TOLERANCE: f32 = 2e-3;

/// The prompt of the committed greedy list (host and firmware).
const GREEDY_PROMPT: &str = "JULIET:\nO Romeo, Romeo!";

fn json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Runs `run` with the loaded model, a fresh state and a one-token scratch.
fn with_tiny<R>(run: impl FnOnce(&Rwkv6, &mut State, &mut Scratch, &Tokenizer) -> R) -> R {
    let file = ModelFile::open(MODEL).unwrap();
    let st = file.safetensors().unwrap();
    let tokenizer = Tokenizer::from_model(&st)
        .unwrap()
        .expect("embedded tokenizer");
    let config = Config::from_source(&st).unwrap();
    let mut layers = vec![None; config.n_layer];
    let model = Rwkv6::load(&st, &mut layers, goldcrest::std::kernels::detect()).unwrap();
    let plan = model.memory_plan(1).unwrap();
    let (mut state_mem, mut scratch_mem) = (
        vec![0u8; plan.bytes_unaligned()],
        vec![0u8; plan.bytes_unaligned()],
    );
    let mut state = State::carve(&config, &mut Arena::new_unaligned(&mut state_mem)).unwrap();
    let mut scratch =
        Scratch::carve(&config, 1, &mut Arena::new_unaligned(&mut scratch_mem)).unwrap();
    run(&model, &mut state, &mut scratch, &tokenizer)
}

/// The extra check's decoding: greedy with a repetition penalty, argmax after dividing the
/// (positive) logits of the last `REPEAT_WINDOW` tokens by `REPEAT_PENALTY`. Plain argmax of a
/// model this small falls into a loop within a few lines ("I am not so much as I am a man."
/// over and over); the penalty keeps it deterministic and out of loops.
const REPEAT_PENALTY: f32 = 1.3;
/// Tokens the repetition penalty looks back over (prompt included).
const REPEAT_WINDOW: usize = 64;

/// Argmax continuation of `prompt` for `count` tokens, with `penalty` (repetition penalty over
/// the last `REPEAT_WINDOW` tokens) or without (plain greedy). The firmware runs the same loop.
fn greedy(
    model: &Rwkv6,
    state: &mut State,
    scratch: &mut Scratch,
    prompt: &[u32],
    count: usize,
    penalty: Option<f32>,
) -> Vec<u32> {
    let v = model.config().vocab_size;
    let (mut logits, mut order) = (vec![0.0f32; v], vec![0u32; v]);
    let mut rng = Rng::new(0);
    state.reset();
    for &id in prompt {
        model.step(state, scratch, id, &mut logits).unwrap();
    }
    let sampler = SamplerConfig {
        repetition_penalty: penalty.unwrap_or(1.0),
        ..SamplerConfig::GREEDY
    };
    let mut history = prompt.to_vec();
    for _ in 0..count {
        let recent = &history[history.len().saturating_sub(REPEAT_WINDOW)..];
        let next = sample(&mut logits, &sampler, recent, &mut rng, &mut order).unwrap();
        history.push(next);
        model.step(state, scratch, next, &mut logits).unwrap();
    }
    history.split_off(prompt.len())
}

/// Plain greedy: `ops::sample::greedy`, the first largest logit, with no sampler state, so the
/// committed list pins the model's function and nothing else (the firmware runs the same loop).
fn argmax_greedy(
    model: &Rwkv6,
    state: &mut State,
    scratch: &mut Scratch,
    prompt: &[u32],
    count: usize,
) -> Vec<u32> {
    let mut logits = vec![0.0f32; model.config().vocab_size];
    state.reset();
    for &id in prompt {
        model.step(state, scratch, id, &mut logits).unwrap();
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let next = argmax(&logits).unwrap();
        out.push(next);
        model.step(state, scratch, next, &mut logits).unwrap();
    }
    out
}

#[test]
fn fits_one_mebibyte_of_flash() {
    let len = std::fs::metadata(MODEL).unwrap().len();
    assert!(
        len <= 1 << 20,
        "models/rwkv6-tiny.safetensors is {len} bytes"
    );
}

#[test]
fn host_forward_matches_the_training_model() {
    let golden = json("golden.json");
    let ids = ids_of(&golden["ids"]);
    let want: Vec<Vec<f32>> = golden["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    assert_eq!(want.len(), ids.len());
    with_tiny(|model, state, scratch, tokenizer| {
        assert_eq!(
            tokenizer
                .encode(golden["prompt"].as_str().unwrap())
                .unwrap(),
            ids
        );
        let mut logits = vec![0.0f32; model.config().vocab_size];
        let mut worst = 0.0f32;
        for (pos, &id) in ids.iter().enumerate() {
            model.step(state, scratch, id, &mut logits).unwrap();
            for (g, w) in logits.iter().zip(&want[pos]) {
                worst = worst.max((g - w).abs());
            }
        }
        assert!(worst <= LOGIT_TOLERANCE, "max |logit difference| {worst}");
    });
}

#[test]
fn greedy_generation_is_the_committed_list() {
    // The same lists are compiled into the Cortex-M firmware test, which checks its own
    // generation against them: host and firmware are tied through this file.
    if std::env::var_os("GOLDCREST_BLESS_TINY").is_some() {
        // Regenerates the lists after retraining: `GOLDCREST_BLESS_TINY=1 cargo test --test
        // rwkv6_tiny`, then review the diff (and rerun the firmware test).
        with_tiny(|model, state, scratch, tokenizer| {
            let prompt = tokenizer.encode(GREEDY_PROMPT).unwrap();
            let plain = argmax_greedy(model, state, scratch, &prompt, 32);
            let penalized = greedy(model, state, scratch, &prompt, 32, Some(REPEAT_PENALTY));
            let text = serde_json::json!({
                "prompt": GREEDY_PROMPT,
                "prompt_ids": prompt,
                "greedy_ids": plain,
                "greedy_text": tokenizer.decode_lossy(&plain).unwrap(),
                "repetition_penalty": REPEAT_PENALTY,
                "repeat_window": REPEAT_WINDOW,
                "penalty_ids": penalized,
                "penalty_text": tokenizer.decode_lossy(&penalized).unwrap(),
            });
            std::fs::write(format!("{FIXTURES}/greedy.json"), format!("{text:#}\n")).unwrap();
        });
    }
    let fixture = json("greedy.json");
    let prompt = ids_of(&fixture["prompt_ids"]);
    let (plain, penalized) = (
        ids_of(&fixture["greedy_ids"]),
        ids_of(&fixture["penalty_ids"]),
    );
    assert_eq!(
        fixture["repetition_penalty"].as_f64(),
        Some(REPEAT_PENALTY as f64)
    );
    assert_eq!(
        fixture["repeat_window"].as_u64(),
        Some(REPEAT_WINDOW as u64)
    );
    with_tiny(|model, state, scratch, tokenizer| {
        assert_eq!(
            tokenizer
                .encode(fixture["prompt"].as_str().unwrap())
                .unwrap(),
            prompt
        );
        assert_eq!(
            argmax_greedy(model, state, scratch, &prompt, plain.len()),
            plain
        );
        // The sampler's greedy mode is the same argmax.
        assert_eq!(
            greedy(model, state, scratch, &prompt, plain.len(), None),
            plain
        );
        assert_eq!(
            greedy(
                model,
                state,
                scratch,
                &prompt,
                penalized.len(),
                Some(REPEAT_PENALTY)
            ),
            penalized
        );
    });
}

#[test]
fn greedy_text_is_words_and_does_not_loop() {
    let words = std::fs::read_to_string(format!("{FIXTURES}/words.txt")).unwrap();
    let known: std::collections::HashSet<&str> = words.lines().collect();
    with_tiny(|model, state, scratch, tokenizer| {
        for prompt in ["ROMEO:\nWhat", "KING HENRY:\nNow, my lords,", "Enter"] {
            let ids = tokenizer.encode(prompt).unwrap();
            let out = greedy(model, state, scratch, &ids, 64, Some(REPEAT_PENALTY));
            let distinct: std::collections::HashSet<_> = out.iter().collect();
            let text = tokenizer.decode_lossy(&out).unwrap();
            eprintln!("{prompt:?} -> {text:?}");
            assert!(
                distinct.len() * 2 >= out.len(),
                "{prompt:?}: {} distinct of {} tokens: {text:?}",
                distinct.len(),
                out.len()
            );
            let generated: Vec<String> = text
                .split(|c: char| !c.is_alphabetic() && c != '\'')
                .filter(|w| w.chars().any(char::is_alphabetic))
                .map(str::to_lowercase)
                .collect();
            let real = generated
                .iter()
                .filter(|w| known.contains(w.as_str()))
                .count();
            assert!(
                generated.len() >= 8,
                "{prompt:?}: too few words in {text:?}"
            );
            assert!(
                real * 10 >= generated.len() * 8,
                "{prompt:?}: only {real} of {} words are English: {text:?}",
                generated.len()
            );
        }
    });
}
