//! `goldcrest tokenize`: text on stdin to token ids (or token strings) as JSON.

use anyhow::{Context, Result, bail};
use clap::Args;
use goldcrest_std::tokenize::{Scratch, Tokenizer};
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

/// Encode stdin with a tokenizer.
#[derive(Args)]
pub struct TokenizeArgs {
    /// tokenizer.json, *.tiktoken, rwkv_vocab_*.txt, or a directory with vocab.json + merges.txt.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Parse special/added tokens such as <|im_end|> in the text (default: they are plain text).
    #[arg(long)]
    special: bool,
    /// Print ids (the default).
    #[arg(long, conflicts_with = "tokens")]
    ids: bool,
    /// Print each token's bytes as a JSON string; bytes that are not UTF-8 appear as \xNN.
    #[arg(long)]
    tokens: bool,
    /// Read JSON lines with a "text" field; write one {"ids": [...]} (or {"tokens": [...]}) line each.
    #[arg(long)]
    jsonl: bool,
}

/// A token's bytes as text: valid UTF-8 as is, each invalid byte as `\xNN`.
pub fn escape_token(bytes: &[u8]) -> String {
    let mut s = String::new();
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn render(tok: &Tokenizer, ids: &[u32], as_tokens: bool) -> Result<serde_json::Value> {
    if as_tokens {
        let strings = ids
            .iter()
            .map(|&id| {
                tok.token(id)
                    .map(escape_token)
                    .with_context(|| format!("token {id} has no text"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(serde_json::json!(strings))
    } else {
        Ok(serde_json::json!(ids))
    }
}

/// Runs the subcommand.
pub fn run(args: TokenizeArgs) -> Result<()> {
    let tok = Tokenizer::from_path(&args.tokenizer)
        .with_context(|| format!("loading {}", args.tokenizer.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.jsonl {
        let key = if args.tokens { "tokens" } else { "ids" };
        let mut scratch = Scratch::default();
        let mut ids = Vec::new();
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.with_context(|| format!("reading line {}", n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("line {} is not JSON", n + 1))?;
            let Some(text) = value.get("text").and_then(|t| t.as_str()) else {
                bail!("line {} has no string field \"text\"", n + 1);
            };
            ids.clear();
            tok.encode_into(text, args.special, &mut ids, &mut scratch);
            let mut obj = serde_json::Map::new();
            obj.insert(key.to_string(), render(&tok, &ids, args.tokens)?);
            writeln!(out, "{}", serde_json::Value::Object(obj))?;
        }
    } else {
        let mut input = Vec::new();
        std::io::stdin().lock().read_to_end(&mut input)?;
        let ids = tok.encode_bytes(&input, args.special)?;
        let _ = args.ids;
        writeln!(out, "{}", render(&tok, &ids, args.tokens)?)?;
    }
    out.flush()?;
    Ok(())
}
