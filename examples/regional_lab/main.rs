//! Research bench for region search and localization of small objects (issue 12): factor-level
//! matching, finer factors, and localization variants, measured over cached activations.
//!
//! ```sh
//! # once per data set: activations of every image at two layers, cached under target/
//! cargo run --release --example regional_lab -- extract ../shared/data/instance-loc-dev
//! ```
//!
//! Activations: EfficientNet-Lite0 (real weights), shorter side 512, the `head` layer
//! (1280 channels, stride 32) and `blocks.11.expand` (672 channels, stride 16) from one forward
//! pass, stored as f16 in `target/regional-cache/<set>/s<size>/<layer>/<image>.bin`.
//! Factorizations are cached beside them per (layer, K).

mod cache;
mod localize;
mod retrieval;

use anyhow::{bail, Result};
use std::path::Path;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        bail!("usage: regional_lab extract|retrieval|localize SET...");
    };
    match cmd.as_str() {
        "extract" => {
            let mut size = 512;
            let mut sets = Vec::new();
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--size" => size = it.next().map(|s| s.parse()).transpose()?.unwrap_or(512),
                    s => sets.push(s.to_string()),
                }
            }
            for s in &sets {
                let set = cache::Set::open(Path::new(s))?;
                cache::extract(&set, size, &["head", "blocks.11.expand"])?;
            }
            Ok(())
        }
        "retrieval" => {
            let mut cfgs = Vec::new();
            let mut lambdas = vec![0.0, 0.25, 0.5, 0.75, 1.0];
            let mut sets = Vec::new();
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--factors" => {
                        for c in it.next().map(String::as_str).unwrap_or("").split(',') {
                            cfgs.push(c.parse()?);
                        }
                    }
                    "--lambda" => {
                        lambdas = it
                            .next()
                            .map(String::as_str)
                            .unwrap_or("")
                            .split(',')
                            .map(str::parse)
                            .collect::<std::result::Result<_, _>>()?
                    }
                    s => sets.push(cache::Set::open(Path::new(s))?),
                }
            }
            retrieval::run(&sets, &cfgs, &lambdas)
        }
        "localize" => {
            let mut o = localize::Options {
                k: 8,
                variants: Vec::new(),
            };
            let mut sets = Vec::new();
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--k" => o.k = it.next().map(|s| s.parse()).transpose()?.unwrap_or(8),
                    "--variants" => {
                        o.variants = it
                            .next()
                            .map(String::as_str)
                            .unwrap_or("")
                            .split(',')
                            .map(String::from)
                            .collect()
                    }
                    s => sets.push(cache::Set::open(Path::new(s))?),
                }
            }
            localize::run(&sets, &o)
        }
        "crops" => {
            for s in &args[1..] {
                cache::Set::open(Path::new(s))?.extract_crops(512)?;
            }
            Ok(())
        }
        other => bail!("unknown command {other}"),
    }
}
