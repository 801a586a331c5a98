//! `deepfactor index …`: look at, check and maintain index directories.
//!
//! `index build` and `index add` need the feature extractor and are wired where it lives;
//! the library side is `deepfactor::index::update_from_folder` / `add_files`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use deepfactor::index::{Index, IndexWriter, VectorEncoding};
use std::path::{Path, PathBuf};

/// Arguments of `deepfactor index`.
#[derive(Args)]
pub struct IndexArgs {
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Show an index: generation, recipe, settings, segments, image counts.
    Info {
        /// The index directory.
        index: PathBuf,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Check every file of an index (structure, contents, checksums); exits non-zero with
    /// a message naming the file and section at the first problem.
    Verify {
        /// The index directory.
        index: PathBuf,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Delete images by id or by path, and commit.
    Rm {
        /// The index directory.
        index: PathBuf,
        /// Image id to delete (repeatable).
        #[arg(long = "id")]
        ids: Vec<u64>,
        /// Image path to delete (repeatable); relative paths are taken from the current
        /// directory.
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Merge all segments into one without deleted images.
    Compact {
        /// The index directory.
        index: PathBuf,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `deepfactor index …`.
pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    match args.command {
        IndexCommand::Info { index, json } => info(&index, json),
        IndexCommand::Verify { index, json } => verify(&index, json),
        IndexCommand::Rm {
            index,
            ids,
            paths,
            json,
        } => rm(&index, &ids, &paths, json),
        IndexCommand::Compact { index, json } => compact(&index, json),
    }
}

fn info(dir: &Path, json: bool) -> anyhow::Result<()> {
    let ix = Index::open(dir)?;
    let o = ix.options();
    let segments = ix.segments();
    let stored: usize = segments.iter().map(|s| s.docs).sum();
    let deleted: usize = segments.iter().map(|s| s.deleted).sum();
    let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    if json {
        let doc = serde_json::json!({
            "index": dir,
            "generation": ix.generation(),
            "recipe": ix.recipe(),
            "live": ix.len(),
            "stored": stored,
            "deleted": deleted,
            "bytes": bytes,
            "next_id": ix.next_id(),
            "settings": {
                "vector_encoding": o.get_vector_encoding(),
                "m": o.get_m(),
                "ef_construction": o.get_ef_construction(),
                "graph_min_docs": o.get_graph_min_docs(),
                "merge_factor": o.get_merge_factor(),
            },
            "segments": segments,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("index       {}", dir.display());
    println!("generation  {}", ix.generation());
    println!("recipe      {}", ix.recipe().describe());
    println!(
        "images      {} live ({stored} stored, {deleted} deleted) in {} segments, {}",
        ix.len(),
        segments.len(),
        human_bytes(bytes)
    );
    println!(
        "settings    {} descriptors, m={}, ef_construction={}, graph from {} images, merge factor {}",
        match o.get_vector_encoding() {
            VectorEncoding::F32 => "f32",
            VectorEncoding::F16 => "f16",
        },
        o.get_m(),
        o.get_ef_construction(),
        o.get_graph_min_docs(),
        o.get_merge_factor()
    );
    if !segments.is_empty() {
        println!(
            "{:<26} {:>9} {:>9} {:>10} {:>6} {:>7} {:>7}",
            "segment", "images", "deleted", "size", "graph", "factors", "format"
        );
    }
    for s in &segments {
        println!(
            "{:<26} {:>9} {:>9} {:>10} {:>6} {:>7} {:>7}",
            s.path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
            s.docs,
            s.deleted,
            human_bytes(s.bytes),
            if s.graph_levels > 0 {
                format!("{}L", s.graph_levels)
            } else {
                "-".into()
            },
            if s.has_factors { "yes" } else { "-" },
            format!("v{}", s.format_version),
        );
    }
    Ok(())
}

fn verify(dir: &Path, json: bool) -> anyhow::Result<()> {
    let ix = Index::open(dir).with_context(|| format!("{} is not a sound index", dir.display()))?;
    let r = ix
        .verify()
        .with_context(|| format!("{} is damaged", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "ok: generation {}, {} segments, {} images, {} checked",
            r.generation,
            r.segments,
            r.documents,
            human_bytes(r.bytes)
        );
    }
    Ok(())
}

fn rm(dir: &Path, ids: &[u64], paths: &[PathBuf], json: bool) -> anyhow::Result<()> {
    if ids.is_empty() && paths.is_empty() {
        bail!("nothing to delete: give --id or --path");
    }
    let mut w = IndexWriter::open(dir)?;
    let mut deleted = 0usize;
    let mut missing: Vec<String> = Vec::new();
    for &id in ids {
        if w.delete(id)? {
            deleted += 1;
        } else {
            missing.push(format!("id {id}"));
        }
    }
    let cwd = std::env::current_dir()?;
    for p in paths {
        let mut candidates = vec![p.clone()];
        if p.is_relative() {
            candidates.push(cwd.join(p));
        }
        if let Ok(c) = p.canonicalize() {
            candidates.push(c);
        }
        candidates.dedup();
        let mut n = 0;
        for c in &candidates {
            n += w.delete_path(c)?;
        }
        if n == 0 {
            missing.push(p.display().to_string());
        }
        deleted += n;
    }
    let report = w.commit()?;
    if json {
        let doc = serde_json::json!({
            "deleted": deleted,
            "not_found": missing,
            "commit": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "deleted {deleted} images; generation {}, {} live",
            report.generation, report.live
        );
        for m in &missing {
            eprintln!("not in the index: {m}");
        }
    }
    if !missing.is_empty() && deleted == 0 {
        bail!("none of the given images is in the index");
    }
    Ok(())
}

fn compact(dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut w = IndexWriter::open(dir)?;
    let before = w.index().segments().len();
    let report = w.compact()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{before} segments → {}; generation {}, {} live images",
            report.segments, report.generation, report.live
        );
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
