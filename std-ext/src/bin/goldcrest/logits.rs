//! `goldcrest logits --model M --ids 1,2,3`: the logits after every position of one prompt, as
//! JSON lines `{"pos": i, "logits": [...]}`, so any other implementation can be checked against
//! goldcrest. Floats are printed in the shortest form that parses back to the same f32.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use goldcrest_core::arena::Arena;
use goldcrest_core::models::rwkv6::{self, Config, Rwkv6, Scratch, State};
use goldcrest_std::load::ModelFile;

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
}

/// One output line; f32 values go through serde_json's shortest round-trip formatting.
#[derive(serde::Serialize)]
struct Line<'a> {
    pos: usize,
    logits: &'a [f32],
}

/// Runs `goldcrest logits`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let file = ModelFile::open(&args.model)?;
    let weights = file.safetensors()?;
    let arch = weights
        .metadata()
        .arch()
        .and_then(|a| a.as_str())
        .unwrap_or("");
    if arch != rwkv6::ARCH {
        bail!("logits: architecture {arch:?} is not supported by this command yet (rwkv6 is)");
    }
    let config = Config::from_source(&weights)?;
    let mut layers = vec![None; config.n_layer];
    let model = Rwkv6::load(&weights, &mut layers, goldcrest_std::kernels::detect())
        .with_context(|| format!("loading {}", args.model.display()))?;
    if let Some((pos, id)) = args
        .ids
        .iter()
        .enumerate()
        .find(|(_, id)| **id as usize >= config.vocab_size)
    {
        bail!(
            "token id {id} at position {pos} is outside the vocabulary (0..{})",
            config.vocab_size
        );
    }
    let chunk = args.chunk.max(1);
    let plan = model.memory_plan(chunk)?;
    let mut state_mem = vec![0u8; plan.bytes_unaligned()];
    let mut scratch_mem = vec![0u8; plan.bytes_unaligned()];
    let mut state = State::carve(&config, &mut Arena::new_unaligned(&mut state_mem))?;
    let mut scratch = Scratch::carve(&config, chunk, &mut Arena::new_unaligned(&mut scratch_mem))?;
    let v = config.vocab_size;
    let mut logits = vec![0.0f32; args.ids.len() * v];
    model.prefill(&mut state, &mut scratch, &args.ids, &mut logits)?;

    let mut out = BufWriter::new(std::io::stdout().lock());
    for (pos, logits) in logits.chunks_exact(v).enumerate() {
        serde_json::to_writer(&mut out, &Line { pos, logits })?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
