//! `goldcrest train-bpe`: learn a byte-level BPE vocabulary and write tokenizer.json.

use anyhow::{Context, Result};
use clap::Args;
use goldcrest_std::tokenize::train::{PieceCounts, TrainConfig, train};
use std::path::PathBuf;
use std::time::Instant;

/// Train a byte-level BPE tokenizer (Qwen2 pre-tokenisation, NFC) on a text file.
#[derive(Args)]
pub struct TrainBpeArgs {
    /// Vocabulary size including the 256 byte tokens and the special tokens.
    #[arg(long)]
    vocab_size: u32,
    /// UTF-8 text to learn from ("-" for stdin); read as a stream.
    #[arg(long)]
    input: PathBuf,
    /// Where to write tokenizer.json.
    #[arg(long)]
    output: PathBuf,
    /// Special tokens to append (repeatable); default <|endoftext|>.
    #[arg(long = "special-token")]
    special_tokens: Vec<String>,
    /// Do not NFC-normalise.
    #[arg(long)]
    no_nfc: bool,
    /// Never merge pairs seen fewer times than this.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
}

/// Runs the subcommand.
pub fn run(args: TrainBpeArgs) -> Result<()> {
    let mut config = TrainConfig {
        vocab_size: args.vocab_size,
        nfc: !args.no_nfc,
        min_frequency: args.min_frequency,
        ..TrainConfig::default()
    };
    if !args.special_tokens.is_empty() {
        config.special_tokens = args.special_tokens;
    }
    let start = Instant::now();
    let counts = if args.input.as_os_str() == "-" {
        PieceCounts::from_reader(std::io::stdin().lock(), config.pattern, config.nfc)?
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?;
        PieceCounts::from_reader(std::io::BufReader::new(file), config.pattern, config.nfc)
            .with_context(|| format!("reading {}", args.input.display()))?
    };
    let counted = start.elapsed();
    let trained = train(&counts, &config)?;
    std::fs::write(&args.output, trained.to_tokenizer_json())
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "{} bytes, {} distinct pieces counted in {:.2?}; {} merges in {:.2?}; vocabulary {} -> {}",
        counts.bytes_read,
        counts.distinct(),
        counted,
        trained.merges.len(),
        start.elapsed() - counted,
        trained.tokens.len() + trained.special_tokens.len(),
        args.output.display()
    );
    Ok(())
}
