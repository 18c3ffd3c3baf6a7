//! `goldcrest bench --model M`: prefill and decode tokens/s on random token ids, as llama-bench
//! measures them (one warm-up run, then the median of `--repeat` runs). `--threads N` splits
//! the large matrix products across N threads (default: all cores); the rest of the model
//! (attention, norms, recurrences) runs on the calling thread.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use goldcrest_core::ops::sample::Rng;

use crate::session::{self, LanguageModel, Options, with_model};

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
    #[command(flatten)]
    threads: session::Threads,
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

/// Times prefill of the prompt and decode of the generated ids, `repeat` times after a warm-up.
fn measure(args: &Args, model: &mut dyn LanguageModel) -> anyhow::Result<Measured> {
    let (prompt, generated) = random_ids(args, model.vocab());
    let mut logits = vec![0.0f32; model.vocab()];
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for run in 0..=args.repeat {
        model.reset();
        let t = Instant::now();
        model.forward(&prompt, &mut logits)?;
        let p = args.prompt_tokens as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for &tok in &generated {
            model.forward(&[tok], &mut logits)?;
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
        weight_bytes: model.plan().weight_bytes,
        describe: format!(
            "{}{}",
            model.describe(),
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
    let options = Options {
        positions: args.prompt_tokens + args.gen_tokens,
        chunk: args.chunk,
        kv: session::kv_format(&args.kv)?,
        int8_acts: args.int8_acts,
        threads: args.threads.get(),
    };
    let kernels = session::kernels();
    let (arch, measured) = with_model(&args.model, &options, |model, _| {
        if let Some(context) = model.context()
            && context < options.positions
        {
            bail!(
                "--prompt-tokens + --gen-tokens = {} exceeds the model's {context} positions",
                options.positions
            );
        }
        Ok((model.arch(), measure(&args, model)?))
    })?;
    let (p, d) = (measured.prefill, measured.decode);
    let weight_mib = measured.weight_bytes as f64 / (1 << 20) as f64;
    if args.json {
        let report = serde_json::json!({
            "model": args.model.display().to_string(),
            "arch": arch,
            "isa": format!("{:?}", kernels.isa()),
            "threads": options.threads,
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
            "{}: {}, {weight_mib:.1} MiB of weights, kernels {:?}, {} thread(s)",
            args.model.display(),
            measured.describe,
            kernels.isa(),
            options.threads
        );
        println!(
            "prefill {:>5} tokens: {p:10.1} tokens/s",
            args.prompt_tokens
        );
        println!("decode  {:>5} tokens: {d:10.1} tokens/s", args.gen_tokens);
    }
    Ok(())
}
