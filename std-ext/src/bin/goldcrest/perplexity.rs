//! `goldcrest perplexity --model M --input text.txt [--ctx N]`: how well the model predicts a
//! text, as JSON `{"perplexity", "bits_per_byte", "tokens", ...}`.
//!
//! The text is split into non-overlapping windows of `--ctx` tokens, each run from an empty
//! context; within a window every token after the first is scored (`tokens` counts them).
//! Without `--ctx`, attention models use their whole context as the window and rwkv6 (or a
//! model that slides its window in every layer) reads the text as one stream; goldfinch, whose
//! files record no trained length, uses windows of 4096 tokens.
//! `perplexity = exp(mean NLL)`; `bits_per_byte = total NLL / ln 2 / bytes of the scored
//! tokens`.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::session::{self, LanguageModel, Options, check_ids, with_model};

/// Arguments of `goldcrest perplexity`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (rwkv6, goldfinch, llama or qwen2).
    #[arg(long)]
    model: PathBuf,
    /// The text to score.
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    input: Option<PathBuf>,
    /// Score these comma-separated token ids instead of a text (no bits per byte then).
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Tokens per window (at least 2).
    #[arg(long)]
    ctx: Option<usize>,
    /// `world` or a vocabulary file; default: the one embedded in the model file.
    #[arg(long, value_name = "world|PATH")]
    tokenizer: Option<String>,
    /// Tokens per prefill chunk.
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// KV cache storage (llama, qwen2; goldfinch f32 or f16); f32 scores the model's exact
    /// function.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "int8", "int4", "i8", "i4"])]
    kv: String,
    #[command(flatten)]
    threads: session::Threads,
}

/// Runs `goldcrest perplexity`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.ctx.is_some_and(|n| n < 2) {
        bail!("--ctx must be at least 2 tokens (the first of a window is not scored)");
    }
    let options = Options {
        // Without --ctx, attention models get their full trained context.
        positions: args.ctx.unwrap_or(usize::MAX / 2),
        chunk: args.chunk,
        kv: session::kv_format(&args.kv)?,
        int8_acts: false,
        threads: args.threads.get(),
    };
    let report = with_model(Some(&args.model), &options, |model, st| {
        let tokenizer = session::tokenizer(args.tokenizer.as_deref(), st)?;
        let ids = match (&args.ids, &args.input) {
            (Some(ids), _) => ids.clone(),
            (None, Some(path)) => {
                let text =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let Some(tok) = &tokenizer else {
                    bail!(
                        "the model file carries no tokenizer: give one with --tokenizer \
                         world|PATH, or the text as --ids"
                    );
                };
                tok.encode_bytes(&text, false)
                    .with_context(|| format!("tokenizing {}", path.display()))?
            }
            (None, None) => bail!("give --input FILE or --ids"),
        };
        if ids.len() < 2 {
            bail!(
                "the text has {} token(s); scoring needs at least 2",
                ids.len()
            );
        }
        check_ids(&ids, model.vocab())?;
        let window = args.ctx.or(model.context()).unwrap_or(ids.len());
        let score = score(model, &ids, window, args.chunk)?;
        let bytes: Option<usize> = match (&tokenizer, &args.ids) {
            (Some(tok), None) => Some(
                score
                    .scored
                    .iter()
                    .map(|&i| tok.token(ids[i]).map_or(0, <[u8]>::len))
                    .sum(),
            ),
            _ => None,
        };
        let n = score.scored.len() as f64;
        Ok(serde_json::json!({
            "model": args.model.display().to_string(),
            "arch": model.arch(),
            "perplexity": (score.nll / n).exp(),
            "bits_per_byte": bytes.map(|b| score.nll / std::f64::consts::LN_2 / b as f64),
            "tokens": score.scored.len(),
            "mean_nll": score.nll / n,
            "windows": score.windows,
            "window_tokens": window,
        }))
    })?;
    println!("{report}");
    Ok(())
}

/// Total negative log-likelihood (nats) and which positions of `ids` were scored.
struct Score {
    nll: f64,
    scored: Vec<usize>,
    windows: usize,
}

fn score(
    model: &mut dyn LanguageModel,
    ids: &[u32],
    window: usize,
    chunk: usize,
) -> anyhow::Result<Score> {
    let v = model.vocab();
    let chunk = chunk.max(1);
    let mut logits = vec![0.0f32; chunk * v];
    let mut score = Score {
        nll: 0.0,
        scored: Vec::with_capacity(ids.len()),
        windows: 0,
    };
    for (w, win) in ids.chunks(window.max(2)).enumerate() {
        if win.len() < 2 {
            continue;
        }
        model.reset();
        score.windows += 1;
        let start = w * window.max(2);
        for (c, part) in win.chunks(chunk).enumerate() {
            let rows = &mut logits[..part.len() * v];
            model.forward(part, rows)?;
            for (j, row) in rows.chunks_exact(v).enumerate() {
                let at = c * chunk + j;
                let Some(&target) = win.get(at + 1) else {
                    break;
                };
                score.nll += nll(row, target as usize);
                score.scored.push(start + at + 1);
            }
        }
    }
    Ok(score)
}

/// `-log softmax(row)[target]`, in f64 so a long text's sum does not drift.
fn nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}
