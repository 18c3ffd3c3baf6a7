//! `goldcrest bench --model M`: prefill and decode tokens/s on random token ids, as llama-bench
//! measures them (one warm-up run, then the median of `--repeat` runs). Single-threaded: the
//! kernels do not split work across threads yet.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use goldcrest_core::arena::Arena;
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
    if arch != rwkv6::ARCH {
        bail!("bench: architecture {arch:?} is not supported by this command yet (rwkv6 is)");
    }
    let config = Config::from_source(&weights)?;
    let mut layers = vec![None; config.n_layer];
    let kernels = goldcrest_std::kernels::detect();
    let model = Rwkv6::load(&weights, &mut layers, kernels)?;
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
    let mut rng = Rng::new(0x5EED);
    let vocab = config.vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prompt_tokens)
        .map(|_| rng.next_u32() % vocab)
        .collect();
    let generated: Vec<u32> = (0..args.gen_tokens)
        .map(|_| rng.next_u32() % vocab)
        .collect();

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
    let (p, d) = (median(prefill), median(decode));
    let weight_mib = plan.weight_bytes as f64 / (1 << 20) as f64;
    if args.json {
        let report = serde_json::json!({
            "model": args.model.display().to_string(),
            "arch": arch,
            "isa": format!("{:?}", kernels.isa()),
            "threads": 1,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "repeat": args.repeat,
            "weight_bytes": plan.weight_bytes,
            "prefill_tokens_per_s": p,
            "decode_tokens_per_s": d,
        });
        println!("{report}");
    } else {
        println!(
            "{}: rwkv6 {}x{}, {weight_mib:.1} MiB of weights, kernels {:?}, 1 thread",
            args.model.display(),
            config.n_layer,
            config.n_embd,
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
