//! The `goldcrest` command-line tool: one subcommand per file in this folder.
//!
//! Results go to stdout (JSON where asked), messages and progress to stderr; failures exit
//! non-zero with a message that says what to fix.

use clap::{Parser, Subcommand};

mod bench;
mod convert;
mod forecast;
mod inspect;
mod logits;
mod sheet;

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
    /// Measure prefill and decode tokens/s on random token ids.
    Bench(bench::Args),
    /// Spreadsheet encodings for language models (SpreadsheetLLM).
    #[command(subcommand)]
    Sheet(sheet::SheetCommand),
}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Forecast(args) => forecast::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Sheet(c) => sheet::run(c),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
