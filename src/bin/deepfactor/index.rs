//! `deepfactor index …`: build, update, look at, check and maintain index directories.

use crate::recipe_args::RecipeArgs;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use deepfactor::index::{Index, IndexWriter, VectorEncoding};
use deepfactor::index::{UpdateOptions, UpdateProgress, UpdateReport};
use deepfactor::pipeline::Pipeline;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Arguments of `deepfactor index`.
#[derive(Args)]
pub struct IndexArgs {
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Index a folder of photos (recursively). On an existing index: adds new and changed
    /// files, skips unchanged ones, and resumes an interrupted build.
    Build {
        /// The folder of photos.
        photos: PathBuf,
        /// The index directory (created if absent).
        #[arg(short, long)]
        out: PathBuf,
        #[command(flatten)]
        recipe: RecipeArgs,
        /// Delete indexed images whose files are gone from the folder.
        #[arg(long)]
        remove_missing: bool,
        /// Commit after this many images (a crash loses at most the uncommitted ones).
        #[arg(long, default_value_t = 256)]
        commit_every: usize,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Add image files to an index, with the index's recipe.
    Add {
        /// The index directory.
        index: PathBuf,
        /// Image files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Weights file, if not the backbone's default.
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// Device: cpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
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
        IndexCommand::Build {
            photos,
            out,
            recipe,
            remove_missing,
            commit_every,
            json,
        } => build(&photos, &out, &recipe, remove_missing, commit_every, json),
        IndexCommand::Add {
            index,
            files,
            weights,
            device,
            json,
        } => {
            let recipe = RecipeArgs {
                weights,
                device,
                ..RecipeArgs::default()
            };
            add(&index, &files, &recipe, json)
        }
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
            "factor_vectors": ix.factor_vectors(),
            "factor_search": ix.has_factor_vectors(),
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
        "factors     {} factor vectors{}",
        ix.factor_vectors(),
        if ix.has_factor_vectors() {
            ""
        } else {
            " (format 1 segments without them: `deepfactor index compact` adds them)"
        }
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

/// The pipeline for an index: its recipe when it exists (options that contradict it are
/// refused), else the options.
fn pipeline_for(dir: &Path, args: &RecipeArgs) -> anyhow::Result<Pipeline> {
    if Index::exists(dir) {
        let index = Index::open(dir)?;
        let pipeline = Pipeline::for_index(&index, args.weight_source(), args.device()?)
            .with_context(|| format!("rebuilding the pipeline of {}", dir.display()))?;
        if args.shapes_recipe() {
            let asked = args.pipeline()?;
            index.recipe().check_compatible(asked.recipe())?;
        }
        Ok(pipeline)
    } else {
        Ok(args.pipeline()?)
    }
}

fn progress_bar(json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  ETA {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn on_progress(bar: &ProgressBar) -> impl FnMut(&UpdateProgress) + '_ {
    move |p: &UpdateProgress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(format!(
            "indexed {} · unchanged {} · reused {} · failed {} · warnings {}",
            p.indexed, p.unchanged, p.reused, p.failed, p.warned
        ));
    }
}

fn summary(report: &UpdateReport, dir: &Path, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let c = &report.counts;
    println!(
        "{}: {} files looked at: {} indexed, {} reused (moved or copied), {} unchanged, {} failed; \
         {} replaced, {} removed; {} commits, generation {}",
        dir.display(),
        c.total,
        c.indexed,
        c.reused,
        c.unchanged,
        c.failed,
        report.replaced,
        report.removed,
        report.commits,
        report.generation
    );
    if c.warned > 0 {
        println!("{} indexed with a warning:", c.warned);
    }
    for f in &report.warnings {
        println!("  warning: {}", f.reason);
    }
    for f in &report.failures {
        println!("  failed: {}", f.reason);
    }
    Ok(())
}

fn build(
    photos: &Path,
    dir: &Path,
    args: &RecipeArgs,
    remove_missing: bool,
    commit_every: usize,
    json: bool,
) -> anyhow::Result<()> {
    if !photos.is_dir() {
        bail!("{}: not a directory of photos", photos.display());
    }
    let pipeline = pipeline_for(dir, args)?;
    let mut writer = IndexWriter::open_or_create_with_whitening(
        dir,
        pipeline.recipe().clone(),
        deepfactor::index::IndexOptions::new(),
        pipeline.describer().whitening(),
    )?;
    let options = UpdateOptions::new()
        .remove_missing(remove_missing)
        .commit_every(commit_every);
    let bar = progress_bar(json);
    let report = deepfactor::index::update_from_folder(
        &mut writer,
        photos,
        &pipeline,
        &options,
        &mut on_progress(&bar),
    )?;
    bar.finish_and_clear();
    summary(&report, dir, json)
}

fn add(dir: &Path, files: &[PathBuf], args: &RecipeArgs, json: bool) -> anyhow::Result<()> {
    let index = Index::open(dir)?;
    let pipeline = Pipeline::for_index(&index, args.weight_source(), args.device()?)?;
    drop(index);
    let mut writer = IndexWriter::open(dir)?;
    let bar = progress_bar(json);
    let report = deepfactor::index::add_files(
        &mut writer,
        files,
        &pipeline,
        &UpdateOptions::new(),
        &mut on_progress(&bar),
    )?;
    bar.finish_and_clear();
    summary(&report, dir, json)
}
