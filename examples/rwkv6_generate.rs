//! Run an RWKV-6 goldcrest file from Rust: prefill a prompt, then sample and print text.
//! `cargo run --release --example rwkv6_generate -- [MODEL] [PROMPT] [N] [TEMPERATURE] [SEED]`
//! (defaults: the bundled tiny model models/rwkv6-tiny.safetensors, "ROMEO:\n", 64 tokens,
//! 0.8, seed 42; temperature 0 is greedy). The prompt is text, encoded with the tokenizer
//! embedded in the file.
use goldcrest::core::arena::Arena;
use goldcrest::core::models::rwkv6::{Config, Rwkv6, Scratch, State};
use goldcrest::core::ops::sample::{Rng, SamplerConfig, sample};
use goldcrest::std::load::ModelFile;
use goldcrest::std::tokenize::Tokenizer;
use std::io::Write;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/rwkv6-tiny.safetensors");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: &str| std::env::args().nth(i).unwrap_or(default.into());
    let (count, temperature): (usize, f32) = (arg(3, "64").parse()?, arg(4, "0.8").parse()?);

    // The file is memory-mapped and read in place; only the per-block views are allocated.
    let file = ModelFile::open(arg(1, TINY))?;
    let weights = file.safetensors()?;
    let tokenizer = Tokenizer::from_model(&weights)?.ok_or("the model has no tokenizer")?;
    let prompt = tokenizer.encode(&arg(2, "ROMEO:\n"))?;
    let config = Config::from_source(&weights)?;
    let mut layers = vec![None; config.n_layer];
    let model = Rwkv6::load(&weights, &mut layers, goldcrest::std::kernels::detect())?;

    // State and scratch: exactly what the memory plan asks for (prompts run 64 tokens a chunk).
    let plan = model.memory_plan(64)?;
    let mut state_mem = vec![0u8; plan.bytes_unaligned()];
    let mut scratch_mem = vec![0u8; plan.bytes_unaligned()];
    let mut state = State::carve(&config, &mut Arena::new_unaligned(&mut state_mem))?;
    let mut scratch = Scratch::carve(&config, 64, &mut Arena::new_unaligned(&mut scratch_mem))?;
    eprintln!(
        "{config:?}: state {} B, scratch {} B",
        plan.state_bytes, plan.scratch_bytes
    );

    let (mut logits, mut order) = (vec![0.0; config.vocab_size], vec![0; config.vocab_size]);
    let mut rng = Rng::new(arg(5, "42").parse()?);
    let sampler = SamplerConfig {
        temperature,
        top_p: 0.9,
        ..SamplerConfig::default()
    };
    model.prefill(&mut state, &mut scratch, &prompt, &mut logits)?;
    let mut history = prompt;
    let mut text = tokenizer.stream_decoder();
    for _ in 0..count {
        let recent = &history[history.len().saturating_sub(32)..];
        let next = sample(&mut logits, &sampler, recent, &mut rng, &mut order)?;
        print!("{}", text.push(next)?);
        std::io::stdout().flush()?;
        history.push(next);
        model.step(&mut state, &mut scratch, next, &mut logits)?;
    }
    println!("{}", text.finish());
    Ok(())
}
