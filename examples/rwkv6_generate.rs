//! Run an RWKV-6 goldcrest file from Rust: prefill a prompt of token ids, then sample.
//! `cargo run --release --example rwkv6_generate -- [MODEL] [IDS] [N] [TEMPERATURE] [SEED]`
//! (defaults: the tiny test model, "1,2,3", 16 tokens, 0.8, seed 42; temperature 0 is greedy)
use goldcrest::core::arena::Arena;
use goldcrest::core::models::rwkv6::{Config, Rwkv6, Scratch, State};
use goldcrest::core::ops::sample::{Rng, SamplerConfig, sample};
use goldcrest::std::load::ModelFile;

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/rwkv6/tiny_a.safetensors"
);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: &str| std::env::args().nth(i).unwrap_or(default.into());
    let ids = arg(2, "1,2,3");
    let prompt: Vec<u32> = ids
        .split(',')
        .map(|t| t.trim().parse())
        .collect::<Result<_, _>>()?;
    let (count, temperature): (usize, f32) = (arg(3, "16").parse()?, arg(4, "0.8").parse()?);

    // The file is memory-mapped and read in place; only the per-block views are allocated.
    let file = ModelFile::open(arg(1, TINY))?;
    let weights = file.safetensors()?;
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
    for _ in 0..count {
        let recent = &history[history.len().saturating_sub(32)..];
        let next = sample(&mut logits, &sampler, recent, &mut rng, &mut order)?;
        print!("{next} ");
        history.push(next);
        model.step(&mut state, &mut scratch, next, &mut logits)?;
    }
    println!();
    Ok(())
}
