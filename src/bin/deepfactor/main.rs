//! The `deepfactor` command line: a thin layer over the library.
//!
//! Each subcommand lives in its own module beside this file. Human-readable output goes to
//! stdout, progress and diagnostics to stderr; `--json` switches stdout to one JSON document.

mod coseg;
mod index;
mod probe;
mod recipe_args;
mod search;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod eval;
mod whiten;

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
    /// Co-segment and co-localize an image set (or every class of a data set): the common
    /// object's mask and box in each image, from one joint factorization.
    Coseg(coseg::CosegArgs),
    /// Score ranked result lists against a ground truth (Oxford/Paris, revisited, mAP@k).
    Eval(eval::EvalArgs),
    /// Build, update, look at, check and maintain index directories.
    Index(index::IndexArgs),
    /// Memorization probes: train small nets with randomized labels, compress their
    /// activations (NMF, PCA, k-means, random ablation), AuC vs memorization.
    Probe(probe::ProbeArgs),
    /// Search an index with an image or a region of it.
    Search(search::SearchArgs),
    /// Learn a PCA whitening from training images, or describe a whitening file.
    Whiten(whiten::WhitenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Coseg(args) => coseg::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Index(args) => index::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Search(args) => search::run(args),
        Command::Whiten(args) => whiten::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
