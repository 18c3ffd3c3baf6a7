//! `goldcrest bench --model M`: prefill and decode tokens/s on random token ids, as llama-bench
//! measures them (one untimed warm-up run, then the median of `--repeat` runs). `--threads N`
//! splits the large matrix products across N threads (default: all cores); the rest of the
//! model (attention, norms, recurrences) runs on the calling thread.
//!
//! `--context N` measures both after N tokens are already in the sequence (untimed), so
//! attention's cost at long context shows: llama/qwen2 get a KV cache of N positions filled
//! with random keys and values (`KvCache::fill_synthetic`, stored as the forward pass stores
//! them; attention's cost does not depend on the values, and a real prefill of 16k tokens
//! through a 24-layer model takes hours single-threaded); goldfinch restores a saved context
//! of N random tokens and compressed keys (the exact path of `--state-in`, which computes every
//! GOLD layer's keys and values, and far cheaper than a prefill of the Finch-C2 layers); rwkv6
//! has no per-token cache, so N changes nothing and is not run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use goldcrest_core::models::{goldfinch, rwkv6};
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
    /// Tokens already in the sequence when prefill and decode are timed.
    #[arg(long, default_value_t = 0)]
    context: usize,
    /// Tokens per prefill chunk (memory grows with it).
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Measured runs after the warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// KV cache storage (llama, qwen2; goldfinch: f32 or f16 GOLD keys and values).
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "int8", "int4", "i8", "i4"])]
    kv: String,
    /// Int8 activations for tq2_0/tq1_0/i8/q8_0/q4_0 layers and head (llama, qwen2), as
    /// llama.cpp quantizes them for its TQ and Q8_0/Q4_0 products.
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
    /// Working cache bytes per token and the at-rest form's, when the model keeps a cache.
    cache_per_token: Option<(usize, Option<usize>)>,
    /// How the context was filled before timing.
    filled: &'static str,
}

/// Brings a reset sequence to `args.context` tokens without timing it; returns how.
fn fill_context(
    args: &Args,
    model: &mut dyn LanguageModel,
    rng: &mut Rng,
) -> anyhow::Result<&'static str> {
    let n = args.context;
    if n == 0 {
        return Ok("empty");
    }
    let vocab = model.vocab() as u32;
    let ids: Vec<u32> = (0..n).map(|_| rng.next_u32() % vocab).collect();
    match model.arch() {
        rwkv6::ARCH => Ok("not filled (recurrent state, the same size at any context)"),
        goldfinch::ARCH => {
            let bytes = synthetic_goldfinch_context(model, &ids, rng)?;
            model.restore_state(&bytes)?;
            Ok("restored from a saved context of random ids and compressed keys")
        }
        _ => {
            // Attention reads every cached key and value whatever they hold, so random ones of
            // the magnitude of a trained model's cost exactly what computed ones would.
            let mut uniform = || {
                let unit = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                2.0 * unit - 1.0
            };
            if model.fill_synthetic(n, &mut uniform)? {
                return Ok("filled with random keys and values in [-1, 1] (not computed)");
            }
            let mut logits = vec![0.0f32; model.vocab()];
            for part in ids.chunks(args.chunk) {
                model.forward(part, &mut logits)?;
            }
            Ok("prefilled with random ids")
        }
    }
}

/// A saved GoldFinch context (see `GoldFinch::save`) holding `ids` with random compressed keys
/// in [-1, 1] and the empty context's constant-size state.
fn synthetic_goldfinch_context(
    model: &mut dyn LanguageModel,
    ids: &[u32],
    rng: &mut Rng,
) -> anyhow::Result<Vec<u8>> {
    const HEADER: usize = 40;
    let empty = model.save_state()?;
    let c_dim = u32::from_le_bytes(empty[28..32].try_into()?) as usize;
    let mut out = Vec::with_capacity(empty.len() + ids.len() * 4 * (1 + c_dim));
    out.extend_from_slice(&empty[..32]);
    out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    out.extend_from_slice(&empty[HEADER..empty.len() - 4]);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for _ in 0..ids.len() * c_dim {
        let unit = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
        out.extend_from_slice(&(2.0 * unit - 1.0).to_le_bytes());
    }
    let crc = rwkv6::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
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
    let mut fill_rng = Rng::new(0xC0_47E7);
    let mut filled = "empty";
    for run in 0..=args.repeat {
        model.reset();
        filled = fill_context(args, model, &mut fill_rng)?;
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
    let cache_per_token = model.cache_use().and_then(|c| {
        let per = c.bytes.checked_div(c.tokens)?;
        Some((per, c.at_rest_per_token))
    });
    Ok(Measured {
        cache_per_token,
        filled,
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
        positions: args.context + args.prompt_tokens + args.gen_tokens,
        chunk: args.chunk,
        kv: session::kv_format(&args.kv)?,
        int8_acts: args.int8_acts,
        threads: args.threads.get(),
    };
    let kernels = session::kernels();
    let (arch, measured) = with_model(Some(&args.model), &options, |model, _| {
        if let Some(context) = model.context()
            && context < options.positions
        {
            bail!(
                "--context + --prompt-tokens + --gen-tokens = {} exceeds the model's {context} positions",
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
            "context": args.context,
            "context_filled": measured.filled,
            "cache_bytes_per_token": measured.cache_per_token.map(|c| c.0),
            "cache_at_rest_bytes_per_token": measured.cache_per_token.and_then(|c| c.1),
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
        if args.context > 0 {
            println!("context {:>5} tokens: {}", args.context, measured.filled);
        }
        if let Some((per, at_rest)) = measured.cache_per_token {
            let at_rest = at_rest
                .map(|b| format!(", {b} at rest"))
                .unwrap_or_default();
            println!("cache   {per} bytes per token{at_rest}");
        }
        println!(
            "prefill {:>5} tokens: {p:10.1} tokens/s",
            args.prompt_tokens
        );
        println!("decode  {:>5} tokens: {d:10.1} tokens/s", args.gen_tokens);
    }
    Ok(())
}
