//! [`Index`]: an immutable snapshot of one commit, for searching and reading.

use super::exact::{self, Cand};
use super::factors::StoredFactors;
use super::manifest::{self, Manifest, SegmentRecord};
use super::options::{IndexOptions, SearchMode, SearchOptions};
use super::segment::{ImageMeta, Segment};
use super::storage::Trusted;
use crate::{Error, Recipe, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How an index's segment files are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Read into memory and validated (the safe default).
    Read,
    /// Memory-mapped; see [`Index::open_mmap`].
    Mapped(Trusted),
}

/// How many times an open starts over when a file of the generation named by `CURRENT`
/// vanished because a writer committed a newer one and removed it meanwhile.
const OPEN_ATTEMPTS: usize = 100;

/// A search result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The image's id.
    pub id: u64,
    /// Similarity to the query: the dot product of the descriptors (their cosine, as
    /// descriptors are unit vectors).
    pub score: f32,
}

/// An indexed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its id, stable across commits and merges.
    pub id: u64,
    /// Its metadata.
    pub meta: ImageMeta,
    /// Whether NMF factors are stored for it.
    pub has_factors: bool,
}

/// One segment of an index, described.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentSummary {
    /// Its number (file `seg-<16 hex digits>.dfs`).
    pub number: u64,
    /// Its file.
    pub path: PathBuf,
    /// Images it holds, deleted ones included.
    pub docs: usize,
    /// Deleted images.
    pub deleted: usize,
    /// File size in bytes.
    pub bytes: u64,
    /// Layers of its HNSW graph, 0 for none.
    pub graph_levels: usize,
    /// Whether it stores NMF factors.
    pub has_factors: bool,
    /// Its descriptor encoding.
    pub encoding: super::VectorEncoding,
    /// The format version it was written with.
    pub format_version: u32,
}

/// What [`Index::verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// The generation checked.
    pub generation: u64,
    /// Segments checked.
    pub segments: usize,
    /// Live images.
    pub documents: usize,
    /// Bytes of segment files checked.
    pub bytes: u64,
}

/// A live segment with its tombstones.
#[derive(Clone)]
pub(crate) struct LiveSegment {
    pub record: SegmentRecord,
    pub seg: Arc<Segment>,
    /// Tombstones as a bitset over rows.
    pub deleted_bits: Arc<Vec<u64>>,
}

impl LiveSegment {
    pub fn new(record: SegmentRecord, seg: Arc<Segment>) -> LiveSegment {
        LiveSegment {
            deleted_bits: Arc::new(bitset(seg.docs(), &record.deleted)),
            record,
            seg,
        }
    }

    pub fn live(&self) -> usize {
        self.seg.docs() - self.record.deleted.len()
    }

    pub fn is_deleted(&self, row: usize) -> bool {
        exact::is_set(&self.deleted_bits, row)
    }
}

/// An index at one commit: its segments, tombstones and recipe. Cheap to clone; searches may
/// run on many threads at once. A writer's later commits do not change it: call
/// [`Index::reopen`] to see them.
#[derive(Clone)]
pub struct Index {
    dir: PathBuf,
    mode: OpenMode,
    manifest: Arc<Manifest>,
    segments: Vec<LiveSegment>,
    live: usize,
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// The error for a file that the current generation needs but that does not exist.
fn missing(dir: &Path, g: u64, e: Error) -> Error {
    let Error::Io { path, .. } = &e else {
        return e;
    };
    let name = manifest::manifest_name(g);
    if path.file_name().is_some_and(|f| f == name.as_str()) {
        super::format::bad(
            &dir.join(manifest::CURRENT),
            "CURRENT",
            format!("names {name}, which does not exist"),
        )
    } else {
        super::format::bad(
            path,
            "file",
            format!("is listed by {name} but does not exist"),
        )
    }
}

fn bitset(rows: usize, deleted: &[u32]) -> Vec<u64> {
    let mut b = vec![0u64; rows.div_ceil(64)];
    for &d in deleted {
        if let Some(w) = b.get_mut(d as usize / 64) {
            *w |= 1 << (d % 64);
        }
    }
    b
}

impl Index {
    /// Whether `dir` holds an index: its `CURRENT` file exists (whether the index opens is
    /// another matter; [`Index::open`] says).
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        dir.as_ref().join(manifest::CURRENT).exists()
    }

    /// The PCA whitening the recipe names, read from the index's companion file
    /// `<id>.whitening`; `None` when the recipe names none. A missing, damaged or different
    /// file is an error naming it.
    pub fn whitening(&self) -> Result<Option<Arc<crate::descriptor::Whitening>>> {
        super::companion::load_whitening(&self.dir, self.recipe())
    }

    /// Opens the index at `dir`: reads `CURRENT`, the manifest and every live segment into
    /// memory and validates their structure and contents (checksums are left to
    /// [`Index::verify`]). Large descriptor sets take a while to read: see
    /// [`Index::open_mmap`] for the fast path on trusted files. Readers take no lock.
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Index::open_with(dir.as_ref(), OpenMode::Read)
    }

    pub(crate) fn open_with(dir: &Path, mode: OpenMode) -> Result<Index> {
        Index::open_reusing(dir, mode, None)
    }

    fn open_reusing(dir: &Path, mode: OpenMode, previous: Option<&Index>) -> Result<Index> {
        let mut g = manifest::read_current(dir)?;
        for _ in 0..OPEN_ATTEMPTS {
            match Index::try_open(dir, g, mode, previous) {
                Err(e) if is_not_found(&e) => {
                    // Either a writer committed a newer generation and removed files of the
                    // one we read (then CURRENT moved on: start over), or a file is missing.
                    let now = manifest::read_current(dir)?;
                    if now == g {
                        return Err(missing(dir, g, e));
                    }
                    g = now;
                }
                r => return r,
            }
        }
        Err(Error::invalid(format!(
            "{}: the index changed {OPEN_ATTEMPTS} times while being opened",
            dir.display()
        )))
    }

    fn try_open(dir: &Path, g: u64, mode: OpenMode, previous: Option<&Index>) -> Result<Index> {
        if cfg!(target_endian = "big") {
            return Err(Error::invalid(
                "deepfactor index files are little-endian and are read in place; this build runs on a big-endian machine",
            ));
        }
        if let Some(p) = previous {
            if p.generation() == g {
                return Ok(p.clone());
            }
        }
        let m = manifest::read_manifest(dir, g)?;
        let mut segments = Vec::with_capacity(m.record.segments.len());
        for r in &m.record.segments {
            let reuse = previous.and_then(|p| {
                p.segments
                    .iter()
                    .find(|s| s.record.number == r.number && s.record.header_hash == r.header_hash)
                    .map(|s| s.seg.clone())
            });
            let seg = match reuse {
                Some(s) => s,
                None => {
                    let path = dir.join(manifest::segment_name(r.number));
                    let seg = Segment::open(&path, mode)?;
                    if seg.container.header_hash != r.header_hash
                        || seg.container.file_len as u64 != r.file_len
                    {
                        return Err(super::format::bad(
                            &path,
                            "header",
                            format!(
                                "is not the file manifest {} lists (length or checksum differs)",
                                manifest::manifest_name(g)
                            ),
                        ));
                    }
                    if seg.docs() as u64 != r.docs {
                        return Err(super::format::bad(
                            &path,
                            super::format::section_label(super::format::kind::INFO),
                            format!("holds {} images, the manifest says {}", seg.docs(), r.docs),
                        ));
                    }
                    if seg.info.dim != m.recipe.dim {
                        return Err(super::format::bad(
                            &path,
                            super::format::section_label(super::format::kind::INFO),
                            format!(
                                "descriptors have {} dimensions, the recipe says {}",
                                seg.info.dim, m.recipe.dim
                            ),
                        ));
                    }
                    Arc::new(seg)
                }
            };
            segments.push(LiveSegment::new(r.clone(), seg));
        }
        Ok(Index::assemble(dir, mode, m, segments))
    }

    fn assemble(dir: &Path, mode: OpenMode, m: Manifest, segments: Vec<LiveSegment>) -> Index {
        let live = segments.iter().map(LiveSegment::live).sum();
        Index {
            dir: dir.to_path_buf(),
            mode,
            manifest: Arc::new(m),
            segments,
            live,
        }
    }

    /// The snapshot a writer just committed, from the segments it wrote and read back.
    pub(crate) fn from_parts(
        dir: &Path,
        record: super::manifest::ManifestRecord,
        recipe: Recipe,
        segments: Vec<LiveSegment>,
    ) -> Index {
        Index::assemble(dir, OpenMode::Read, Manifest { record, recipe }, segments)
    }

    /// The index as of the latest commit: `self` again if nothing was committed since,
    /// otherwise a new snapshot that reuses the segments the two share. Opens files the same
    /// way `self` was opened.
    pub fn reopen(&self) -> Result<Index> {
        Index::open_reusing(&self.dir, self.mode, Some(self))
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The commit this snapshot shows.
    pub fn generation(&self) -> u64 {
        self.manifest.record.generation
    }

    /// The recipe all descriptors were made with.
    pub fn recipe(&self) -> &Recipe {
        &self.manifest.recipe
    }

    /// The settings chosen at creation.
    pub fn options(&self) -> IndexOptions {
        self.manifest.record.settings.to_options()
    }

    /// Number of live (not deleted) images.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the index holds no live image.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Whether the segment files are memory-mapped.
    pub fn is_mapped(&self) -> bool {
        matches!(self.mode, OpenMode::Mapped(_))
    }

    /// The id the next added image would get.
    pub fn next_id(&self) -> u64 {
        self.manifest.record.next_id
    }

    /// The live segments, described.
    pub fn segments(&self) -> Vec<SegmentSummary> {
        self.segments
            .iter()
            .map(|s| SegmentSummary {
                number: s.record.number,
                path: s.seg.path.clone(),
                docs: s.seg.docs(),
                deleted: s.record.deleted.len(),
                bytes: s.record.file_len,
                graph_levels: s.seg.info.graph_levels,
                has_factors: s.seg.info.factor_channels > 0,
                encoding: s.seg.info.encoding,
                format_version: s.seg.container.version,
            })
            .collect()
    }

    pub(crate) fn live_segments(&self) -> &[LiveSegment] {
        &self.segments
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Finds the live row of `id`: (segment position, row).
    pub(crate) fn locate(&self, id: u64) -> Option<(usize, usize)> {
        self.segments.iter().enumerate().find_map(|(i, s)| {
            s.seg
                .row_of(id)
                .filter(|&r| !s.is_deleted(r))
                .map(|r| (i, r))
        })
    }

    /// The `k` images most similar to `query` (a descriptor made with `recipe`), best first;
    /// ties go to the smaller id. Refuses a query made with another recipe.
    pub fn search(
        &self,
        recipe: &Recipe,
        query: &[f32],
        options: &SearchOptions,
    ) -> Result<Vec<Hit>> {
        self.recipe().check_compatible(recipe)?;
        options.validate()?;
        if query.len() != self.recipe().dim {
            return Err(Error::invalid(format!(
                "query has {} dimensions, the index {}",
                query.len(),
                self.recipe().dim
            )));
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid("query has a non-finite value"));
        }
        let k = options.get_k();
        let use_graph = match options.get_mode() {
            SearchMode::Exact => false,
            SearchMode::Hnsw => true,
            SearchMode::Auto => self.live >= options.get_exact_threshold(),
        };
        let mut all: Vec<Hit> = Vec::with_capacity(k * self.segments.len());
        for s in &self.segments {
            if s.live() == 0 {
                continue;
            }
            let graph = if use_graph { s.seg.graph() } else { None };
            let found: Vec<Cand> = match graph {
                Some(g) => g.search(
                    s.seg.vectors(),
                    &s.deleted_bits,
                    query,
                    k,
                    options.get_ef_search(),
                ),
                None => exact::search(s.seg.vectors(), &s.deleted_bits, query, k),
            };
            let ids = s.seg.ids();
            all.extend(found.into_iter().filter_map(|c| {
                ids.get(c.row as usize)
                    .map(|&id| Hit { id, score: c.score })
            }));
        }
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        all.truncate(k);
        Ok(all)
    }

    /// The live image `id`, if any.
    pub fn document(&self, id: u64) -> Result<Option<Document>> {
        let Some((i, row)) = self.locate(id) else {
            return Ok(None);
        };
        let s = &self.segments[i];
        Ok(Some(Document {
            id,
            meta: s.seg.meta(row)?,
            has_factors: s.seg.factor_dims(row)?.0 > 0,
        }))
    }

    /// The stored descriptor of the live image `id`, if any.
    pub fn descriptor(&self, id: u64) -> Result<Option<Vec<f32>>> {
        Ok(self
            .locate(id)
            .and_then(|(i, row)| self.segments[i].seg.vectors().row(row)))
    }

    /// The stored NMF factors of the live image `id`, if any.
    pub fn factors(&self, id: u64) -> Result<Option<StoredFactors>> {
        match self.locate(id) {
            Some((i, row)) => self.segments[i].seg.factors(row),
            None => Ok(None),
        }
    }

    /// Every live image, in segment order.
    pub fn documents(&self) -> impl Iterator<Item = Result<Document>> + '_ {
        self.segments.iter().flat_map(|s| {
            let ids = s.seg.ids();
            (0..s.seg.docs())
                .filter(move |&r| !s.is_deleted(r))
                .map(move |r| {
                    Ok(Document {
                        id: ids.get(r).copied().unwrap_or(u64::MAX),
                        meta: s.seg.meta(r)?,
                        has_factors: s.seg.factor_dims(r)?.0 > 0,
                    })
                })
        })
    }

    /// Ids of the live images stored under `path` (compared as given, not canonicalized).
    pub fn find_path(&self, path: &Path) -> Result<Vec<u64>> {
        let want = path.to_str();
        let mut out = Vec::new();
        for s in &self.segments {
            let ids = s.seg.ids();
            for r in 0..s.seg.docs() {
                if s.is_deleted(r) {
                    continue;
                }
                if Some(s.seg.meta_record(r)?.path.as_str()) == want {
                    out.extend(ids.get(r));
                }
            }
        }
        Ok(out)
    }

    /// Checks everything: each segment's contents, checksums and padding, finite
    /// descriptors, factor data, that no id is live twice, and the whitening companion file
    /// the recipe names. The manifest's checksums were checked when the index was opened.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.whitening()?;
        let mut bytes = 0u64;
        for s in &self.segments {
            s.seg.verify()?;
            bytes += s.record.file_len;
        }
        let mut ids: Vec<u64> = Vec::with_capacity(self.live);
        for s in &self.segments {
            let seg_ids = s.seg.ids();
            ids.extend(
                (0..s.seg.docs())
                    .filter(|&r| !s.is_deleted(r))
                    .map(|r| seg_ids[r]),
            );
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(super::format::bad(
                &self.dir.join(manifest::manifest_name(self.generation())),
                super::format::section_label(super::format::kind::MANI),
                format!("image id {} is live in two segments", w[0]),
            ));
        }
        if let Some(&max) = ids.last() {
            if max >= self.next_id() {
                return Err(super::format::bad(
                    &self.dir.join(manifest::manifest_name(self.generation())),
                    super::format::section_label(super::format::kind::MANI),
                    format!("image id {max} is not below the next id {}", self.next_id()),
                ));
            }
        }
        Ok(VerifyReport {
            generation: self.generation(),
            segments: self.segments.len(),
            documents: self.live,
            bytes,
        })
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("generation", &self.generation())
            .field("segments", &self.segments.len())
            .field("live", &self.live)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}
