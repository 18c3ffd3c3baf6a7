//! `goldcrest bench --model M`: prefill and decode tokens/s on random token ids, as llama-bench
//! measures them (one warm-up run, then the median of `--repeat` runs). Single-threaded: the
//! kernels do not split work across threads yet.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use goldcrest_core::arena::Arena;
use goldcrest_core::format::SafeTensors;
use goldcrest_core::kernels::{ActScale, Kernels};
use goldcrest_core::models::decoder::{self, Decoder, KvCache, KvFormat};
use goldcrest_core::models::rwkv6::{self, Config, Rwkv6, Scratch, State};
use goldcrest_core::ops::sample::Rng;
use goldcrest_std::load::ModelFile;

/// Arguments of `goldcrest bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    #[arg(long)]
    model: PathBuf,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens generated one by one for the decode measurement.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Tokens per prefill chunk (memory grows with it).
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Measured runs after the warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// KV cache storage (llama, qwen2).
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "i8"])]
    kv: String,
    /// Int8 activations for ternary layers (llama, qwen2).
    #[arg(long)]
    int8_acts: bool,
}

/// Median prefill and decode tokens/s, weight bytes, and a one-line description.
struct Measured {
    prefill: f64,
    decode: f64,
    weight_bytes: usize,
    describe: String,
}

/// Token ids for the prompt and for the decode steps.
fn random_ids(args: &Args, vocab: usize) -> (Vec<u32>, Vec<u32>) {
    let mut rng = Rng::new(0x5EED);
    let vocab = vocab as u32;
    let prompt = (0..args.prompt_tokens)
        .map(|_| rng.next_u32() % vocab)
        .collect();
    let generated = (0..args.gen_tokens)
        .map(|_| rng.next_u32() % vocab)
        .collect();
    (prompt, generated)
}

fn bench_decoder(args: &Args, st: &SafeTensors<'_>, kernels: Kernels) -> anyhow::Result<Measured> {
    let config = decoder::Config::from_safetensors(st)?;
    let mut layers = vec![None; config.n_layer];
    let mut model = Decoder::new(decoder::Weights::load(st, &mut layers)?, kernels);
    if args.int8_acts {
        model = model.with_int8_activations(ActScale::PerBlock);
    }
    let kv = KvFormat::from_name(&args.kv).unwrap_or(KvFormat::F16);
    let context = args.prompt_tokens + args.gen_tokens;
    if context > config.max_positions {
        bail!(
            "--prompt-tokens + --gen-tokens = {context} exceeds the model's {} positions",
            config.max_positions
        );
    }
    let plan = model.memory_plan(context, kv, args.chunk)?;
    let mut ram = vec![0u8; plan.bytes_unaligned()];
    let mut arena = Arena::new_unaligned(&mut ram);
    let mut cache = KvCache::carve(&config, context, kv, &mut arena)?;
    let mut scratch = decoder::Scratch::carve(&config, context, args.chunk, &mut arena)?;
    let mut logits = vec![0.0f32; config.vocab];
    let (prompt, generated) = random_ids(args, config.vocab);
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for run in 0..=args.repeat {
        cache.clear();
        let t = Instant::now();
        model.forward(&mut cache, &mut scratch, &prompt, &mut logits)?;
        let p = args.prompt_tokens as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for &tok in &generated {
            model.forward(&mut cache, &mut scratch, &[tok], &mut logits)?;
        }
        let d = args.gen_tokens as f64 / t.elapsed().as_secs_f64();
        if run > 0 {
            prefill.push(p);
            decode.push(d);
        }
    }
    Ok(Measured {
        prefill: median(prefill),
        decode: median(decode),
        weight_bytes: plan.weight_bytes,
        describe: format!(
            "{} {}x{}, {} KV cache{}",
            config.arch.name(),
            config.n_layer,
            config.hidden,
            kv.name(),
            if args.int8_acts {
                ", int8 activations"
            } else {
                ""
            }
        ),
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs `goldcrest bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.repeat == 0 || args.chunk == 0 {
        bail!("--prompt-tokens, --gen-tokens, --chunk and --repeat must be positive");
    }
    let file = ModelFile::open(&args.model)?;
    let weights = file.safetensors()?;
    let arch = weights
        .metadata()
        .arch()
        .and_then(|a| a.as_str())
        .unwrap_or("");
    let kernels = goldcrest_std::kernels::detect();
    let measured = match arch {
        "llama" | "qwen2" => bench_decoder(&args, &weights, kernels)?,
        a if a == rwkv6::ARCH => bench_rwkv6(&args, &weights, kernels)?,
        _ => bail!("bench: architecture {arch:?} is not supported (rwkv6, llama, qwen2 are)"),
    };
    let (p, d) = (measured.prefill, measured.decode);
    let weight_mib = measured.weight_bytes as f64 / (1 << 20) as f64;
    if args.json {
        let report = serde_json::json!({
            "model": args.model.display().to_string(),
            "arch": arch,
            "isa": format!("{:?}", kernels.isa()),
            "threads": 1,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "repeat": args.repeat,
            "weight_bytes": measured.weight_bytes,
            "prefill_tokens_per_s": p,
            "decode_tokens_per_s": d,
        });
        println!("{report}");
    } else {
        println!(
            "{}: {}, {weight_mib:.1} MiB of weights, kernels {:?}, 1 thread",
            args.model.display(),
            measured.describe,
            kernels.isa()
        );
        println!(
            "prefill {:>5} tokens: {p:10.1} tokens/s",
            args.prompt_tokens
        );
        println!("decode  {:>5} tokens: {d:10.1} tokens/s", args.gen_tokens);
    }
    Ok(())
}

fn bench_rwkv6(
    args: &Args,
    weights: &SafeTensors<'_>,
    kernels: Kernels,
) -> anyhow::Result<Measured> {
    let config = Config::from_source(weights)?;
    let mut layers = vec![None; config.n_layer];
    let model = Rwkv6::load(weights, &mut layers, kernels)?;
    let plan = model.memory_plan(args.chunk)?;
    let mut state_mem = vec![0u8; plan.bytes_unaligned()];
    let mut scratch_mem = vec![0u8; plan.bytes_unaligned()];
    let mut state = State::carve(&config, &mut Arena::new_unaligned(&mut state_mem))?;
    let mut scratch = Scratch::carve(
        &config,
        args.chunk,
        &mut Arena::new_unaligned(&mut scratch_mem),
    )?;
    let mut logits = vec![0.0f32; config.vocab_size];
    let (prompt, generated) = random_ids(args, config.vocab_size);

    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for run in 0..=args.repeat {
        state.reset();
        let t = Instant::now();
        model.prefill(&mut state, &mut scratch, &prompt, &mut logits)?;
        let p = args.prompt_tokens as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for &tok in &generated {
            model.step(&mut state, &mut scratch, tok, &mut logits)?;
        }
        let d = args.gen_tokens as f64 / t.elapsed().as_secs_f64();
        if run > 0 {
            prefill.push(p);
            decode.push(d);
        }
    }
    Ok(Measured {
        prefill: median(prefill),
        decode: median(decode),
        weight_bytes: plan.weight_bytes,
        describe: format!("rwkv6 {}x{}", config.n_layer, config.n_embd),
    })
}
