//! `goldcrest generate --model M --prompt "..."`: runs the prompt, then samples tokens one at a
//! time and streams their text to stdout as they arrive (whole UTF-8 characters only).
//! Prefill and decode speeds and the reason generation stopped go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use goldcrest_core::Error;
use goldcrest_core::models::goldfinch;
use goldcrest_core::ops::sample::{Rng, SamplerConfig, sample};
use goldcrest_std::tokenize::Tokenizer;
use goldcrest_std::tokenize::chat::{ChatMl, Message, encode_chatml};

use crate::session::{self, LanguageModel, Options, check_ids, with_model};

/// Tokens the repetition penalty looks back over.
const REPEAT_WINDOW: usize = 64;

/// Arguments of `goldcrest generate`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file (rwkv6, goldfinch, llama or qwen2); default: the bundled tiny RWKV-6, a ternary
    /// 3-block model trained on Shakespeare's plays (models/rwkv6-tiny.safetensors).
    #[arg(long)]
    model: Option<PathBuf>,
    /// `world` (the bundled RWKV World vocabulary) or a vocabulary file; default: the one
    /// embedded in the model file.
    #[arg(long, value_name = "world|PATH")]
    tokenizer: Option<String>,
    /// The prompt text.
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    prompt: Option<String>,
    /// The prompt as comma-separated token ids (models without a tokenizer).
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Divides the logits before sampling (0 is greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1 disables).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Keep only the K most likely tokens (0 disables).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Penalty on tokens among the last 64 (1 disables).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Seed of the sampler's random numbers (default: from the clock, printed on stderr).
    #[arg(long)]
    seed: Option<u64>,
    /// Always take the most likely token.
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k", "seed"])]
    greedy: bool,
    /// Stop when the generated text contains this string (which is not printed); repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Wrap the prompt in the ChatML template (Qwen2) as a user turn.
    #[arg(long, requires = "prompt")]
    chat: bool,
    /// System prompt for --chat (default: Qwen2's).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Print token ids (comma-separated) instead of text.
    #[arg(long)]
    emit_ids: bool,
    /// Start from a state saved by --state-out (rwkv6: the recurrent state; goldfinch: the
    /// whole context, states and compressed cache).
    #[arg(long, value_name = "FILE")]
    state_in: Option<PathBuf>,
    /// Save the state after the last printed token (rwkv6, goldfinch).
    #[arg(long, value_name = "FILE")]
    state_out: Option<PathBuf>,
    /// Tokens per prefill chunk.
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// KV cache storage (llama, qwen2; goldfinch: f32 or f16 GOLD keys and values).
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "int8", "int4", "i8", "i4"])]
    kv: String,
    #[command(flatten)]
    threads: session::Threads,
}

/// Runs `goldcrest generate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    // A restored GoldFinch context brings its tokens along: room for them too.
    let restored = match &args.state_in {
        Some(path) => std::fs::read(path)
            .ok()
            .and_then(|b| goldfinch::saved_context_tokens(&b))
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        None => 0,
    };
    let prompt_len_hint =
        (args.ids.as_ref().map_or(0, Vec::len) + args.prompt.as_ref().map_or(0, String::len) + 64)
            .saturating_add(restored);
    let options = Options {
        positions: prompt_len_hint.saturating_add(args.max_tokens),
        chunk: args.chunk,
        kv: session::kv_format(&args.kv)?,
        int8_acts: false,
        threads: args.threads.get(),
    };
    with_model(args.model.as_deref(), &options, |model, st| {
        let tokenizer = session::tokenizer(args.tokenizer.as_deref(), st)?;
        generate(&args, model, tokenizer.as_ref())
    })
}

fn prompt_ids(args: &Args, tokenizer: Option<&Tokenizer>) -> anyhow::Result<Vec<u32>> {
    if let Some(ids) = &args.ids {
        return Ok(ids.clone());
    }
    let text = args.prompt.as_deref().unwrap_or_default();
    let Some(tok) = tokenizer else {
        bail!(
            "the model file carries no tokenizer: give one with --tokenizer world|PATH, \
             or the prompt as --ids 1,2,3"
        );
    };
    if !args.chat {
        return Ok(tok.encode(text)?);
    }
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message {
            role: "system",
            content: system,
        });
    }
    messages.push(Message {
        role: "user",
        content: text,
    });
    encode_chatml(tok, &ChatMl::QWEN2, &messages, true)
        .context("--chat needs a tokenizer with ChatML control tokens (Qwen2)")
}

/// End-of-sequence ids of a tokenizer: the usual named control tokens for BPE vocabularies,
/// id 0 for RWKV World.
pub(crate) fn end_ids(tokenizer: Option<&Tokenizer>) -> Vec<u32> {
    match tokenizer {
        Some(Tokenizer::World(_)) => vec![0],
        Some(t) => ["<|endoftext|>", "<|im_end|>", "</s>", "<|end_of_text|>"]
            .iter()
            .filter_map(|name| t.added_token_id(name))
            .collect(),
        None => Vec::new(),
    }
}

fn generate(
    args: &Args,
    model: &mut dyn LanguageModel,
    tokenizer: Option<&Tokenizer>,
) -> anyhow::Result<()> {
    let vocab = model.vocab();
    let prompt = prompt_ids(args, tokenizer)?;
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    check_ids(&prompt, vocab)?;
    if let Some(path) = &args.state_in {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        model
            .restore_state(&bytes)
            .with_context(|| format!("restoring the state in {}", path.display()))?;
    }
    let sampler = if args.greedy {
        SamplerConfig {
            repetition_penalty: args.repeat_penalty,
            ..SamplerConfig::GREEDY
        }
    } else {
        SamplerConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repeat_penalty,
        }
    };
    let seed = args.seed.unwrap_or_else(clock_seed);
    if !args.greedy && args.seed.is_none() {
        eprintln!("seed {seed}");
    }
    let mut rng = Rng::new(seed);
    let ends = end_ids(tokenizer);
    let mut out = Output::new(args, tokenizer);

    let mut logits = vec![0.0f32; vocab];
    let mut order = vec![0u32; vocab];
    let t = Instant::now();
    match model.forward(&prompt, &mut logits) {
        Err(Error::ContextFull { capacity }) => bail!(
            "the prompt's {} tokens do not fit the model's context of {capacity} positions",
            prompt.len()
        ),
        other => other?,
    }
    let prefill_s = t.elapsed().as_secs_f64();

    let mut history = prompt.clone();
    let mut generated = 0usize;
    let t = Instant::now();
    let mut reason = "the token limit was reached";
    while generated < args.max_tokens {
        let recent = &history[history.len().saturating_sub(REPEAT_WINDOW)..];
        let next = sample(&mut logits, &sampler, recent, &mut rng, &mut order)?;
        if ends.contains(&next) {
            reason = "the end-of-sequence token was generated";
            break;
        }
        generated += 1;
        history.push(next);
        if out.push(next)? {
            reason = "the stop string was generated";
            break;
        }
        let last = generated == args.max_tokens;
        if last && args.state_out.is_none() {
            break;
        }
        match model.forward(&[next], &mut logits) {
            Err(Error::ContextFull { capacity }) => {
                out.finish()?;
                eprintln!(
                    "\nstopped: the context limit of {capacity} positions is reached \
                     (the model has no sliding window in every layer)"
                );
                return report_and_save(args, model, prompt.len(), prefill_s, generated, t);
            }
            other => other?,
        }
    }
    out.finish()?;
    eprintln!("\nstopped: {reason}");
    report_and_save(args, model, prompt.len(), prefill_s, generated, t)
}

fn report_and_save(
    args: &Args,
    model: &mut dyn LanguageModel,
    prompt_tokens: usize,
    prefill_s: f64,
    generated: usize,
    decode_start: Instant,
) -> anyhow::Result<()> {
    let decode_s = decode_start.elapsed().as_secs_f64();
    eprintln!(
        "prefill {prompt_tokens} tokens: {:.1} tokens/s; decode {generated} tokens: {:.1} tokens/s ({})",
        prompt_tokens as f64 / prefill_s.max(1e-9),
        generated as f64 / decode_s.max(1e-9),
        model.describe()
    );
    if let Some(cache) = model.cache_use() {
        let at_rest = cache
            .at_rest_per_token
            .map(|per| {
                format!(
                    "; {} bytes at rest ({per} per token, what --state-out keeps per token)",
                    cache.tokens * per
                )
            })
            .unwrap_or_default();
        eprintln!(
            "cache in use: {} tokens, {} bytes working ({} per token){at_rest}",
            cache.tokens,
            cache.bytes,
            cache.bytes.checked_div(cache.tokens).unwrap_or(0)
        );
    }
    if let Some(path) = &args.state_out {
        let bytes = model.save_state()?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Streams generated tokens to stdout: ids, or text that holds back anything that could be the
/// start of a stop string.
struct Output<'t> {
    decoder: Option<goldcrest_std::tokenize::StreamDecoder<'t>>,
    stops: Vec<String>,
    held: String,
    first: bool,
    stdout: std::io::Stdout,
}

impl<'t> Output<'t> {
    fn new(args: &Args, tokenizer: Option<&'t Tokenizer>) -> Self {
        Output {
            decoder: tokenizer
                .filter(|_| !args.emit_ids)
                .map(Tokenizer::stream_decoder),
            stops: args.stop.clone(),
            held: String::new(),
            first: true,
            stdout: std::io::stdout(),
        }
    }

    /// Emits `id`; returns whether a stop string has appeared.
    fn push(&mut self, id: u32) -> anyhow::Result<bool> {
        let Some(decoder) = &mut self.decoder else {
            let sep = if self.first { "" } else { "," };
            self.first = false;
            write!(self.stdout, "{sep}{id}")?;
            self.stdout.flush()?;
            return Ok(false);
        };
        self.held.push_str(&decoder.push(id)?);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            self.held.truncate(at);
            self.flush_held(self.held.len())?;
            return Ok(true);
        }
        let keep = self.stop_prefix_len();
        self.flush_held(self.held.len() - keep)?;
        Ok(false)
    }

    /// Length of the longest suffix of the held text that begins some stop string.
    fn stop_prefix_len(&self) -> usize {
        (1..=self.held.len())
            .rev()
            .filter(|&n| self.held.is_char_boundary(self.held.len() - n))
            .find(|&n| {
                let tail = &self.held[self.held.len() - n..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(0)
    }

    fn flush_held(&mut self, n: usize) -> anyhow::Result<()> {
        self.stdout.write_all(&self.held.as_bytes()[..n])?;
        self.stdout.flush()?;
        self.held.drain(..n);
        Ok(())
    }

    /// Writes what is still held (text that turned out not to be a stop string, and bytes of
    /// an unfinished character as U+FFFD).
    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(decoder) = &mut self.decoder {
            let rest = decoder.finish();
            self.held.push_str(&rest);
        }
        self.flush_held(self.held.len())?;
        if self.decoder.is_none() && !self.first {
            writeln!(self.stdout)?;
        }
        Ok(())
    }
}
