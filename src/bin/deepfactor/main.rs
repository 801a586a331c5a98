//! The `deepfactor` command line: a thin layer over the library.
//!
//! Each subcommand lives in its own module beside this file. Human-readable output goes to
//! stdout, progress and diagnostics to stderr; `--json` switches stdout to one JSON document.

// Until the first subcommand lands, `Command` has no variants.
#![allow(unreachable_code, unused_variables)]

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
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {};
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
