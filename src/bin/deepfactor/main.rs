//! The `deepfactor` command line: a thin layer over the library.
//!
//! Each subcommand lives in its own module beside this file. Human-readable output goes to
//! stdout, progress and diagnostics to stderr; `--json` switches stdout to one JSON document.

mod index;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "deepfactor",
    version,
    about = "Image search by deep feature factorization"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Look at, check and maintain index directories.
    Index(index::IndexArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Index(args) => index::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
