//! Greedy generation with a converted LLaMA/TriLM/Qwen2 file, token ids in and out:
//!
//! ```text
//! goldcrest convert qwen2 tests/fixtures/decoder/qwen2 /tmp/qwen2.gc --weights q8
//! cargo run --release --example decoder_generate -- /tmp/qwen2.gc 16 1 17 42 99
//! ```
use goldcrest::core::arena::Arena;
use goldcrest::core::models::decoder::{Config, Decoder, KvCache, KvFormat, Scratch, Weights};
use goldcrest::std::load::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, steps, prompt @ ..] = args.as_slice() else {
        return Err("usage: decoder_generate MODEL STEPS TOKEN_ID...".into());
    };
    let steps: usize = steps.parse()?;
    let prompt: Vec<u32> = prompt.iter().map(|t| t.parse()).collect::<Result<_, _>>()?;

    // Weights stay in the memory-mapped file; only views are resolved.
    let file = ModelFile::open(path)?;
    let st = file.safetensors()?;
    let config = Config::from_safetensors(&st)?;
    let mut layers = vec![None; config.n_layer];
    let weights = Weights::load(&st, &mut layers)?;
    let decoder = Decoder::new(weights, goldcrest::std::kernels::detect());

    // One buffer for the KV cache and scratch, sized exactly by the plan.
    let context = (prompt.len() + steps).min(config.max_positions);
    let chunk = prompt.len().clamp(1, 64);
    let plan = decoder.memory_plan(context, KvFormat::F16, chunk)?;
    let mut ram = vec![0u8; plan.bytes_unaligned()];
    let mut arena = Arena::new_unaligned(&mut ram);
    let mut cache = KvCache::carve(&config, context, KvFormat::F16, &mut arena)?;
    let mut scratch = Scratch::carve(&config, chunk, &mut arena)?;
    eprintln!(
        "weights {} B in place, RAM {} B",
        plan.weight_bytes,
        plan.ram_bytes()
    );

    let mut logits = vec![0.0f32; config.vocab];
    decoder.forward(&mut cache, &mut scratch, &prompt, &mut logits)?;
    for _ in 0..steps {
        let next = goldcrest::core::ops::sample::greedy(&logits)?;
        print!("{next} ");
        match decoder.forward(&mut cache, &mut scratch, &[next], &mut logits) {
            Err(goldcrest::core::Error::ContextFull { capacity }) => {
                eprintln!("\ncontext full ({capacity} positions); stopping");
                break;
            }
            other => other?,
        }
    }
    println!();
    Ok(())
}
