//! The `goldcrest` command-line tool: one subcommand per file in this folder.
//!
//! Results go to stdout (JSON where asked), messages and progress to stderr; failures exit
//! non-zero with a message that says what to fix.

use clap::{Parser, Subcommand};

mod convert;
mod forecast;
mod inspect;

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
    /// Convert a checkpoint from another project into a goldcrest file.
    Convert(convert::Args),
    /// Forecast the series in a CSV file with a Toto model.
    Forecast(forecast::Args),
}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Forecast(args) => forecast::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
