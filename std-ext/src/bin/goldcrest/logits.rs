//! `goldcrest logits --model M --ids 1,2,3`: the logits after every position of one prompt, as
//! JSON lines `{"pos": i, "logits": [...]}`, so any other implementation can be checked against
//! goldcrest. Floats are printed in the shortest form that parses back to the same f32.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::session::{self, Options, check_ids, kv_format, with_model};

/// Arguments of `goldcrest logits`.
#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids, run as one prompt.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// Tokens per prefill chunk (results do not depend on it).
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// KV cache storage (llama, qwen2); the default f32 gives the model's exact function, the
    /// others show what a reduced cache changes.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "int8", "int4", "i8", "i4"])]
    kv: String,
    #[command(flatten)]
    threads: session::Threads,
}

/// One output line; f32 values go through serde_json's shortest round-trip formatting.
#[derive(serde::Serialize)]
struct Line<'a> {
    pos: usize,
    logits: &'a [f32],
}

/// Runs `goldcrest logits`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let options = Options {
        positions: args.ids.len(),
        chunk: args.chunk.max(1),
        kv: kv_format(&args.kv)?,
        int8_acts: false,
        threads: args.threads.get(),
    };
    let (logits, v) = with_model(Some(&args.model), &options, |model, _| {
        let v = model.vocab();
        check_ids(&args.ids, v)?;
        let mut logits = vec![0.0f32; args.ids.len() * v];
        model.forward(&args.ids, &mut logits)?;
        Ok((logits, v))
    })?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (pos, logits) in logits.chunks_exact(v).enumerate() {
        serde_json::to_writer(&mut out, &Line { pos, logits })?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
