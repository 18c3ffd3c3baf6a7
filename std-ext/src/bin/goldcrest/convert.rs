//! `goldcrest convert <arch> DIR OUT [--weights FORMAT]`: checkpoints from other projects to
//! goldcrest files.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use goldcrest_core::quant::Format;

/// Arguments of `goldcrest convert`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    source: Source,
}

#[derive(clap::Subcommand)]
enum Source {
    /// A Toto checkpoint directory (config.json + model.safetensors, toto-ts or released names).
    Toto(TotoArgs),
}

#[derive(clap::Args)]
struct TotoArgs {
    /// Directory holding config.json and model.safetensors.
    dir: PathBuf,
    /// The goldcrest file to write.
    out: PathBuf,
    /// Format of the transformer matrices and the unembedding: f32, f16, bf16, q8, q4, tq2, tq1.
    #[arg(long, default_value = "f32")]
    weights: String,
    /// Store the unembedding and mixture head as one exact fused matrix (f32).
    #[arg(long)]
    fuse_head: bool,
}

fn parse_format(name: &str) -> anyhow::Result<Format> {
    let full = match name {
        "q8" => "q8_0",
        "q4" => "q4_0",
        "tq2" => "tq2_0",
        "tq1" => "tq1_0",
        other => other,
    };
    match Format::from_name(full) {
        Some(f) if f != Format::U8 && f != Format::I8 => Ok(f),
        _ => Err(anyhow!(
            "--weights {name:?}: use f32, f16, bf16, q8, q4, tq2 or tq1"
        )),
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.source {
        Source::Toto(a) => {
            let weights = parse_format(&a.weights)?;
            let writer = goldcrest_std::convert::toto::convert(
                &a.dir,
                goldcrest_std::convert::toto::Options {
                    weights,
                    fuse_head: a.fuse_head,
                },
            )?;
            writer
                .write_file(&a.out)
                .with_context(|| format!("writing {}", a.out.display()))?;
            let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "wrote {} ({size} bytes, weights {})",
                a.out.display(),
                weights.name()
            );
            Ok(())
        }
    }
}
