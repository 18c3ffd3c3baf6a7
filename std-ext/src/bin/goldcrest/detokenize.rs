//! `goldcrest detokenize`: a JSON array of ids on stdin to text on stdout.

use anyhow::{Context, Result};
use clap::Args;
use goldcrest_std::tokenize::Tokenizer;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

/// Decode ids to text.
#[derive(Args)]
pub struct DetokenizeArgs {
    /// tokenizer.json, *.tiktoken, rwkv_vocab_*.txt, or a directory with vocab.json + merges.txt.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Leave out special (control) tokens.
    #[arg(long)]
    skip_special: bool,
    /// Read JSON lines with an "ids" field; write one {"text": ...} line each (invalid UTF-8 as U+FFFD).
    #[arg(long)]
    jsonl: bool,
}

fn ids_of(value: &serde_json::Value) -> Result<Vec<u32>> {
    let list = value.as_array().context("expected a JSON array of ids")?;
    list.iter()
        .map(|v| {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .with_context(|| format!("{v} is not a token id"))
        })
        .collect()
}

/// Runs the subcommand.
pub fn run(args: DetokenizeArgs) -> Result<()> {
    let tok = Tokenizer::from_path(&args.tokenizer)
        .with_context(|| format!("loading {}", args.tokenizer.display()))?;
    let decode = |ids: &[u32]| {
        if args.skip_special {
            tok.decode_skip_special(ids)
        } else {
            tok.decode(ids)
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.jsonl {
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("line {} is not JSON", n + 1))?;
            let ids = ids_of(value.get("ids").context("no \"ids\" field")?)
                .with_context(|| format!("line {}", n + 1))?;
            let bytes = decode(&ids)?;
            let text = String::from_utf8_lossy(&bytes);
            writeln!(out, "{}", serde_json::json!({ "text": text }))?;
        }
    } else {
        let mut input = String::new();
        std::io::stdin().lock().read_to_string(&mut input)?;
        let value: serde_json::Value =
            serde_json::from_str(&input).context("stdin is not a JSON array of ids")?;
        // The exact bytes: a partial character at the end stays as it is.
        out.write_all(&decode(&ids_of(&value)?)?)?;
    }
    out.flush()?;
    Ok(())
}
