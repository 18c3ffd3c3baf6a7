//! The `goldcrest` command-line tool: one subcommand per file in this folder.
//!
//! Results go to stdout (JSON where asked), messages and progress to stderr; failures exit
//! non-zero with a message that says what to fix.

use clap::{Parser, Subcommand};

mod bench;
mod convert;
mod detokenize;
mod forecast;
mod generate;
mod inspect;
mod logits;
mod perplexity;
mod session;
mod sheet;
mod sheet_ask;
mod tokenize;
mod train_bpe;
mod vocab_size;

#[derive(Parser)]
#[command(
    name = "goldcrest",
    version,
    about = "Embeddable inference for edge devices and bare metal"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model file's metadata, tensors and memory plan.
    Inspect(inspect::Args),
    /// Convert a checkpoint into a goldcrest file.
    Convert(convert::Args),
    /// Forecast the series in a CSV file with a Toto model.
    Forecast(forecast::Args),
    /// Print the logits after every position of a prompt of token ids, as JSON lines.
    Logits(logits::Args),
    /// Generate text from a prompt with a language model, streamed to stdout.
    Generate(generate::Args),
    /// Score a text with a language model: perplexity and bits per byte, as JSON.
    Perplexity(perplexity::Args),
    /// Measure prefill and decode tokens/s on random token ids.
    Bench(bench::Args),
    /// Spreadsheet encodings for language models (SpreadsheetLLM).
    #[command(subcommand)]
    Sheet(sheet::SheetCommand),
    /// Encode stdin to token ids (JSON).
    Tokenize(tokenize::TokenizeArgs),
    /// Decode a JSON array of ids to text.
    Detokenize(detokenize::DetokenizeArgs),
    /// Train a byte-level BPE vocabulary and write tokenizer.json.
    TrainBpe(train_bpe::TrainBpeArgs),
    /// Predict the optimal vocabulary size (Tao et al. 2024).
    VocabSize(vocab_size::VocabSizeArgs),
}

fn main() {
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Forecast(args) => forecast::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Sheet(c) => sheet::run(c),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Detokenize(a) => detokenize::run(a),
        Command::TrainBpe(a) => train_bpe::run(a),
        Command::VocabSize(a) => vocab_size::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Rust starts programs with SIGPIPE ignored, so `println!` panics when stdout is a closed pipe
/// (`goldcrest inspect m.safetensors | head`). Restoring the default disposition makes the tool
/// end quietly when its reader goes away, as Unix filters do.
#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: runs first in `main`, before any other thread exists; `SIG_DFL` is a valid
    // disposition for SIGPIPE and no Rust code relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_sigpipe() {}
