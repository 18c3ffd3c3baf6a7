//! The `goldcrest` command-line tool: one subcommand per file in this folder.
//!
//! Results go to stdout (JSON where asked), messages and progress to stderr; failures exit
//! non-zero with a message that says what to fix.

use clap::{Parser, Subcommand};

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
    /// Spreadsheet encodings for language models (SpreadsheetLLM).
    #[command(subcommand)]
    Sheet(sheet::SheetCommand),
}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Sheet(c) => sheet::run(c),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
