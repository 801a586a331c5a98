//! The one bench binary: `cargo bench --bench deepfactor -- <group> [options]`.
//!
//! Each group measures speed only and prints one line per case, with a baseline run in the
//! same process where one exists.

mod backbone;
mod descriptor;
mod index;
mod nmf;
mod pipeline;
mod regional;

use std::process::ExitCode;

/// The groups, each `(name, what it measures, entry point)`.
type Group = (
    &'static str,
    &'static str,
    fn(&[String]) -> Result<(), String>,
);

const GROUPS: &[Group] = &[
    (
        "backbone",
        "images/s of feature extraction at 512×683, per backbone (CPU)",
        backbone::run,
    ),
    (
        "descriptor",
        "descriptors per second (activations → descriptor) for every kind at 512 px",
        descriptor::run,
    ),
    (
        "index",
        "index files: build RSS, open, exact vs HNSW latency and recall, vs hnsw_rs",
        index::run,
    ),
    (
        "nmf",
        "NMF milliseconds per iteration: dense, sparse, batched",
        nmf::run,
    ),
    (
        "regional",
        "factor-level search ms per query (exact, HNSW) against global exact search",
        regional::run,
    ),
    (
        "pipeline",
        "images/s of features + NMF + descriptor for a batch of equal-size images (CPU or GPU)",
        pipeline::run,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let name = args.first().map(String::as_str).unwrap_or("");
    match GROUPS.iter().find(|(n, _, _)| *n == name) {
        Some((_, _, run)) => match run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench {name}: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            eprintln!("usage: cargo bench --bench deepfactor -- <group> [options]\ngroups:");
            for (n, what, _) in GROUPS {
                eprintln!("  {n:<12} {what}");
            }
            ExitCode::from(2)
        }
    }
}
