//! `goldcrest convert <arch> IN OUT [...]`: checkpoints from other layouts into goldcrest files.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use goldcrest_core::format::SafeTensors;
use goldcrest_core::models::decoder::{self, Weights};
use goldcrest_std::convert::decoder::{Options, convert, parse_format};
use goldcrest_std::load::ModelFile;

/// Arguments of `goldcrest convert`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    arch: Arch,
}

#[derive(clap::Subcommand)]
enum Arch {
    /// A Hugging Face `LlamaForCausalLM` directory (Llama-2-style, Spectra TriLM "Unpacked").
    Llama(DecoderArgs),
    /// A Hugging Face `Qwen2ForCausalLM` directory (Qwen2, Qwen2.5).
    Qwen2(DecoderArgs),
}

#[derive(clap::Args)]
struct DecoderArgs {
    /// Checkpoint directory: config.json and model.safetensors (or shards with
    /// model.safetensors.index.json).
    input: PathBuf,
    /// Output goldcrest file.
    output: PathBuf,
    /// Format of the seven linear layers per block. tq2/tq1 import already-ternary weights
    /// exactly (TriLM) and refuse any other tensor, naming it.
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "bf16", "q8", "q4", "tq2", "tq1"])]
    weights: String,
    /// Format of the embedding and untied head (default: f32 for f32 checkpoints, else f16).
    #[arg(long, value_parser = ["f32", "f16", "bf16", "q8", "q4"])]
    head_weights: Option<String>,
    /// tokenizer.json to embed (kind `hf-json`).
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
}

/// Runs `goldcrest convert`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.arch {
        Arch::Llama(a) => decoder_command(decoder::Arch::Llama, a),
        Arch::Qwen2(a) => decoder_command(decoder::Arch::Qwen2, a),
    }
}

fn format_arg(name: &str) -> anyhow::Result<goldcrest_core::quant::Format> {
    match parse_format(name) {
        Some(f) => Ok(f),
        None => bail!("unknown format {name:?}"),
    }
}

fn decoder_command(arch: decoder::Arch, a: DecoderArgs) -> anyhow::Result<()> {
    let options = Options {
        weights: format_arg(&a.weights)?,
        head_weights: a.head_weights.as_deref().map(format_arg).transpose()?,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |done: usize, total: usize, name: &str| {
        if terminal {
            eprint!("\r\x1b[K[{done}/{total}] {name}");
        }
    };
    let mut writer = convert(&a.input, arch, options, &mut progress)
        .with_context(|| format!("converting {}", a.input.display()))?;
    if terminal {
        eprintln!();
    }
    if let Some(path) = &a.tokenizer {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        writer.tokenizer("hf-json", bytes)?;
    }
    writer.write_file(&a.output)?;

    // Read back what was written, as a user would, and load it strictly.
    let file = ModelFile::open(&a.output)?;
    let st: SafeTensors<'_> = file.safetensors()?;
    let config = decoder::Config::from_safetensors(&st)?;
    let mut layers = vec![None; config.n_layer];
    let weights = Weights::load(&st, &mut layers)
        .with_context(|| format!("loading the written {}", a.output.display()))?;
    eprintln!(
        "{}: {}, {} layers, hidden {}, {} heads ({} kv) of {}, ffn {}, vocabulary {}{}; {} bytes ({} linear weights)",
        a.output.display(),
        arch.name(),
        config.n_layer,
        config.hidden,
        config.n_head,
        config.n_kv_head,
        config.head_dim,
        config.intermediate,
        config.vocab,
        if config.tied { ", tied head" } else { "" },
        weights.bytes(),
        options.weights.name()
    );
    Ok(())
}
