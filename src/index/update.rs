//! Indexing files: the [`Extractor`] seam to the feature pipeline, and
//! [`update_from_folder`] / [`add_files`], which decide what needs extracting, run the
//! extractor in batches, and commit as they go so that an interrupted run loses at most one
//! batch and the next run resumes.

use super::factors::StoredFactors;
use super::segment::ImageMeta;
use super::writer::{IndexWriter, NewImage};
use crate::{Error, Recipe, Result};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Default number of images per extractor call.
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// Default number of added images per commit.
pub const DEFAULT_COMMIT_EVERY: usize = 1000;

/// What an extractor makes of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The image's descriptor (unit length, `recipe().dim` values).
    pub descriptor: Vec<f32>,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The image's NMF factors, if the recipe keeps them.
    pub factors: Option<StoredFactors>,
    /// Something wrong with the file that did not stop it from being indexed (e.g. a
    /// truncated JPEG whose missing part the decoder filled in); reported and counted.
    pub warning: Option<String>,
}

/// Turns image files into what the index stores. The feature pipeline implements it; it may
/// decode and run the network on a whole batch at once.
pub trait Extractor: Sync {
    /// The recipe of the descriptors it makes.
    fn recipe(&self) -> &Recipe;

    /// One result per path, in order. An image that cannot be read gives an error for that
    /// image only (usually [`Error::Image`]).
    fn extract(&self, paths: &[PathBuf]) -> Vec<Result<Extracted>>;
}

/// Options of [`update_from_folder`] and [`add_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOptions {
    batch_size: usize,
    commit_every: usize,
    remove_missing: bool,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            batch_size: DEFAULT_BATCH_SIZE,
            commit_every: DEFAULT_COMMIT_EVERY,
            remove_missing: false,
        }
    }
}

impl UpdateOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Images per extractor call (default [`DEFAULT_BATCH_SIZE`]).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Commit once this many images were added since the last commit, checked after each
    /// batch (default [`DEFAULT_COMMIT_EVERY`]): a crash loses at most this many plus one
    /// batch.
    pub fn commit_every(mut self, n: usize) -> Self {
        self.commit_every = n;
        self
    }

    /// Whether indexed images under the folder whose files are gone are deleted (default
    /// false: they stay until asked).
    pub fn remove_missing(mut self, yes: bool) -> Self {
        self.remove_missing = yes;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.commit_every == 0 {
            return Err(Error::invalid(
                "batch_size and commit_every must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A file that could not be indexed (or was indexed with a warning), and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// The file.
    pub path: PathBuf,
    /// Why, as a message that names the file once (print it alone).
    pub reason: String,
}

impl Failure {
    /// The failure of `path` by `error`.
    fn new(path: PathBuf, error: &Error) -> Failure {
        let reason = error.naming(&path);
        Failure { path, reason }
    }

    /// A failure or warning of `path` for a reason that does not name it.
    fn with_reason(path: PathBuf, why: &str) -> Failure {
        let reason = format!("{}: {why}", path.display());
        Failure { path, reason }
    }
}

/// Counts so far, passed to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct UpdateProgress {
    /// Files to look at.
    pub total: usize,
    /// Files looked at.
    pub done: usize,
    /// Files run through the extractor and added.
    pub indexed: usize,
    /// Files added by reusing the stored descriptor of the same content (moved or copied
    /// files).
    pub reused: usize,
    /// Files already indexed and unchanged.
    pub unchanged: usize,
    /// Files that could not be indexed.
    pub failed: usize,
    /// Files indexed with a warning (e.g. truncated JPEGs); also counted as indexed.
    pub warned: usize,
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct UpdateReport {
    /// Final counts.
    pub counts: UpdateProgress,
    /// Indexed images deleted because their files are gone (only with `remove_missing`).
    pub removed: usize,
    /// Indexed images replaced because their files changed.
    pub replaced: usize,
    /// The failures, with reasons.
    pub failures: Vec<Failure>,
    /// The files indexed with a warning, with the warning.
    pub warnings: Vec<Failure>,
    /// Commits made.
    pub commits: usize,
    /// The generation current at the end.
    pub generation: u64,
}

/// One file's size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
}

impl FileStamp {
    /// Reads the stamp of `path`.
    pub fn of(path: &Path) -> Result<FileStamp> {
        let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let modified_ns = md
            .modified()
            .ok()
            .map(|t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
            })
            .unwrap_or(0);
        Ok(FileStamp {
            size: md.len(),
            modified_ns,
        })
    }
}

/// BLAKE3 hash of a file's bytes.
pub fn content_hash(path: &Path) -> Result<[u8; 32]> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f).map_err(|e| Error::io(path, e))?;
    Ok(*h.finalize().as_bytes())
}

/// What is known of an indexed image, for deciding what to do with a file.
struct Known {
    id: u64,
    path: PathBuf,
    size: u64,
    modified_ns: i64,
    hash: [u8; 32],
}

/// Brings the index up to date with the image files under `folder` (recursively, those
/// [`crate::images::image_files`] finds): adds new
/// files, replaces changed ones (size or modification time differ and the content hash too),
/// skips unchanged ones, reuses the stored descriptor of files whose content is already
/// indexed (moved or copied files; a moved file keeps its id), and with
/// [`UpdateOptions::remove_missing`] deletes indexed images under `folder` whose files are
/// gone. Paths are stored absolute. Commits every [`UpdateOptions::commit_every`] added
/// images and at the end, so an interrupted run resumes where it stopped.
pub fn update_from_folder(
    writer: &mut IndexWriter,
    folder: &Path,
    extractor: &dyn Extractor,
    options: &UpdateOptions,
    progress: &mut dyn FnMut(&UpdateProgress),
) -> Result<UpdateReport> {
    options.validate()?;
    let root = folder.canonicalize().map_err(|e| Error::io(folder, e))?;
    if !root.is_dir() {
        return Err(Error::invalid(format!(
            "{}: not a directory",
            folder.display()
        )));
    }
    let found = crate::images::image_files(&root);
    let failures = found
        .unreadable
        .into_iter()
        .map(|(path, why)| Failure::with_reason(path, &why))
        .collect();
    let files = found.files;
    run(
        writer,
        &files,
        Some(&root),
        extractor,
        options,
        progress,
        failures,
    )
}

/// Indexes the given image files, as [`update_from_folder`] does for the files it finds
/// (relative paths are made absolute against the current directory); never deletes
/// anything but the entries of changed files.
pub fn add_files(
    writer: &mut IndexWriter,
    files: &[PathBuf],
    extractor: &dyn Extractor,
    options: &UpdateOptions,
    progress: &mut dyn FnMut(&UpdateProgress),
) -> Result<UpdateReport> {
    options.validate()?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let files: Vec<PathBuf> = files
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                cwd.join(p)
            }
        })
        .collect();
    let options = options.clone().remove_missing(false);
    run(
        writer,
        &files,
        None,
        extractor,
        &options,
        progress,
        Vec::new(),
    )
}

/// What to do with one file.
enum Plan {
    Unchanged,
    /// Same content at the same path with a new stamp: store the new stamp.
    Refresh(u64),
    /// Content already indexed under `from`; `keep_id` for a moved file.
    Copy {
        from: u64,
        keep_id: bool,
        replaces: Option<u64>,
    },
    /// Run the extractor; `replaces` the entry of the changed file.
    Extract {
        replaces: Option<u64>,
    },
}

#[allow(clippy::too_many_arguments)]
fn run(
    writer: &mut IndexWriter,
    files: &[PathBuf],
    root: Option<&Path>,
    extractor: &dyn Extractor,
    options: &UpdateOptions,
    progress: &mut dyn FnMut(&UpdateProgress),
    mut failures: Vec<Failure>,
) -> Result<UpdateReport> {
    let recipe = extractor.recipe().clone();
    writer.recipe().check_compatible(&recipe)?;
    let mut known: HashMap<PathBuf, Known> = HashMap::new();
    let mut by_hash: HashMap<[u8; 32], Vec<u64>> = HashMap::new();
    let mut path_of: HashMap<u64, PathBuf> = HashMap::new();
    for d in writer.index().documents() {
        let d = d?;
        by_hash.entry(d.meta.content_hash).or_default().push(d.id);
        path_of.insert(d.id, d.meta.path.clone());
        known.insert(
            d.meta.path.clone(),
            Known {
                id: d.id,
                path: d.meta.path,
                size: d.meta.size,
                modified_ns: d.meta.modified_ns,
                hash: d.meta.content_hash,
            },
        );
    }
    let on_disk: HashSet<&Path> = files.iter().map(PathBuf::as_path).collect();
    let mut counts = UpdateProgress {
        total: files.len(),
        failed: failures.len(),
        ..UpdateProgress::default()
    };
    let mut report = UpdateReport::default();
    let mut warnings = Vec::new();
    // Ids claimed by moved files in this run: each old entry moves at most once.
    let mut claimed: HashSet<u64> = HashSet::new();
    let mut since_commit = 0usize;
    progress(&counts);
    for chunk in files.chunks(options.batch_size) {
        // Stamps, and hashes where the stamp does not settle it, in parallel.
        let looked: Vec<Result<(FileStamp, Option<[u8; 32]>)>> = chunk
            .par_iter()
            .map(|p| {
                let st = FileStamp::of(p)?;
                let settled = known
                    .get(p)
                    .is_some_and(|k| k.size == st.size && k.modified_ns == st.modified_ns);
                let hash = if settled {
                    None
                } else {
                    Some(content_hash(p)?)
                };
                Ok((st, hash))
            })
            .collect();
        let mut to_extract: Vec<(usize, FileStamp, [u8; 32], Option<u64>)> = Vec::new();
        for (i, (path, r)) in chunk.iter().zip(looked).enumerate() {
            let (stamp, hash) = match r {
                Ok(x) => x,
                Err(e) => {
                    failures.push(Failure::new(path.clone(), &e));
                    counts.failed += 1;
                    continue;
                }
            };
            let plan = match (known.get(path), hash) {
                (Some(_), None) => Plan::Unchanged,
                (Some(k), Some(h)) if k.hash == h => Plan::Refresh(k.id),
                (old, Some(h)) => {
                    let replaces = old.map(|k| k.id);
                    let same = by_hash
                        .get(&h)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|id| Some(*id) != replaces);
                    let mut moved = None;
                    let mut copy = None;
                    for id in same {
                        let gone = path_of
                            .get(&id)
                            .is_some_and(|p| !on_disk.contains(p.as_path()) && !p.exists());
                        if gone && !claimed.contains(&id) {
                            moved = Some(id);
                            break;
                        }
                        copy.get_or_insert(id);
                    }
                    match (moved, copy) {
                        (Some(from), _) => Plan::Copy {
                            from,
                            keep_id: true,
                            replaces,
                        },
                        (None, Some(from)) => Plan::Copy {
                            from,
                            keep_id: false,
                            replaces,
                        },
                        (None, None) => Plan::Extract { replaces },
                    }
                }
                (None, None) => Plan::Extract { replaces: None },
            };
            let meta = |width, height, hash| ImageMeta {
                path: path.clone(),
                size: stamp.size,
                modified_ns: stamp.modified_ns,
                content_hash: hash,
                width,
                height,
            };
            match plan {
                Plan::Unchanged => counts.unchanged += 1,
                Plan::Refresh(id) => {
                    let h = hash.unwrap_or_default();
                    // Absent if this run deleted it meanwhile: nothing to refresh then.
                    if let Some(d) = writer.index().document(id)? {
                        writer.add_copy(id, &meta(d.meta.width, d.meta.height, h), true)?;
                        since_commit += 1;
                    }
                    counts.unchanged += 1;
                }
                Plan::Copy {
                    from,
                    keep_id,
                    replaces,
                } => {
                    let h = hash.unwrap_or_default();
                    match writer.index().document(from)? {
                        Some(d) => {
                            if let Some(old) = replaces {
                                writer.delete(old)?;
                                report.replaced += 1;
                            }
                            if keep_id {
                                claimed.insert(from);
                            }
                            writer.add_copy(
                                from,
                                &meta(d.meta.width, d.meta.height, h),
                                keep_id,
                            )?;
                            counts.reused += 1;
                            since_commit += 1;
                        }
                        // The source was deleted by an earlier commit of this run.
                        None => to_extract.push((i, stamp, h, replaces)),
                    }
                }
                Plan::Extract { replaces } => {
                    to_extract.push((i, stamp, hash.unwrap_or_default(), replaces));
                }
            }
        }
        if !to_extract.is_empty() {
            let paths: Vec<PathBuf> = to_extract.iter().map(|t| chunk[t.0].clone()).collect();
            let results = extractor.extract(&paths);
            if results.len() != paths.len() {
                return Err(Error::invalid(format!(
                    "the extractor returned {} results for {} images",
                    results.len(),
                    paths.len()
                )));
            }
            for ((_, stamp, hash, replaces), (path, r)) in
                to_extract.into_iter().zip(paths.into_iter().zip(results))
            {
                let mut warning = None;
                let added = r.and_then(|x| {
                    warning = x.warning;
                    writer.add(
                        &recipe,
                        NewImage {
                            meta: ImageMeta {
                                path: path.clone(),
                                size: stamp.size,
                                modified_ns: stamp.modified_ns,
                                content_hash: hash,
                                width: x.width,
                                height: x.height,
                            },
                            descriptor: x.descriptor,
                            factors: x.factors,
                        },
                    )
                });
                match added {
                    Ok(_) => {
                        if let Some(old) = replaces {
                            writer.delete(old)?;
                            report.replaced += 1;
                        }
                        counts.indexed += 1;
                        since_commit += 1;
                        if let Some(why) = warning {
                            warnings.push(Failure::with_reason(path, &why));
                            counts.warned += 1;
                        }
                    }
                    Err(e) => {
                        failures.push(Failure::new(path, &e));
                        counts.failed += 1;
                    }
                }
            }
        }
        counts.done += chunk.len();
        if since_commit >= options.commit_every {
            writer.commit()?;
            report.commits += 1;
            since_commit = 0;
        }
        progress(&counts);
    }
    if options.remove_missing {
        if let Some(root) = root {
            for k in known.values() {
                if k.path.starts_with(root)
                    && !on_disk.contains(k.path.as_path())
                    && !claimed.contains(&k.id)
                    && writer.delete(k.id)?
                {
                    report.removed += 1;
                }
            }
        }
    }
    if writer.pending_adds() > 0 || writer.pending_deletes() > 0 {
        writer.commit()?;
        report.commits += 1;
    }
    report.counts = counts;
    report.failures = failures;
    report.warnings = warnings;
    report.generation = writer.index().generation();
    progress(&report.counts);
    Ok(report)
}
