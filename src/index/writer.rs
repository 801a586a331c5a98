//! [`IndexWriter`]: the one writer of an index. Adds and deletes are buffered and become
//! visible atomically at [`IndexWriter::commit`]; a crash before that loses only them.

use super::exact::{Rows, Vectors};
use super::factors::StoredFactors;
use super::hnsw::FlatGraph;
use super::manifest::{self, ManifestRecord, SegmentRecord, SettingsRecord};
use super::options::IndexOptions;
use super::reader::{Index, LiveSegment, OpenMode};
use super::segment::{
    encode_meta, meta_path, region_vectors_of, write_segment, FactorDims, ImageMeta, RegionContent,
    RegionRef, Segment, SegmentContent, VectorEncoding, MAX_DIM, MAX_SEGMENT_DOCS,
};
use crate::{Error, Recipe, Result};
use half::f16;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How far a descriptor's length may be from 1.
pub const UNIT_NORM_TOLERANCE: f32 = 1e-3;
/// A segment with more than this fraction of its images deleted is rewritten at the next
/// commit.
pub const MAX_DELETED_FRACTION: f64 = 0.5;

/// An image to add: its metadata, descriptor (unit length, the recipe's dimension) and
/// optional factors.
#[derive(Debug, Clone, PartialEq)]
pub struct NewImage {
    /// Its metadata.
    pub meta: ImageMeta,
    /// Its descriptor.
    pub descriptor: Vec<f32>,
    /// Its NMF factors, if the recipe keeps them.
    pub factors: Option<StoredFactors>,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct CommitReport {
    /// The generation now current (unchanged if there was nothing to commit).
    pub generation: u64,
    /// Images added.
    pub added: usize,
    /// Images deleted.
    pub deleted: usize,
    /// Segments merged into others.
    pub merged: usize,
    /// Live segments after the commit.
    pub segments: usize,
    /// Live images after the commit.
    pub live: usize,
}

/// An added image waiting for the commit. Its encoded metadata record and factor blob
/// live in [`IndexWriter`]'s `pending_bytes` (one buffer, not two allocations per image:
/// ~130 bytes per image, where the descriptor of a 512-d f16 index is 1 KiB).
struct Pending {
    id: u64,
    meta_at: u64,
    factors_at: u64,
    meta_len: u32,
    factors_len: u32,
    /// Factor layout, `(0, 0, 0)` for none.
    dims: FactorDims,
}

/// A segment being assembled into the next manifest.
struct Working {
    record: SegmentRecord,
    seg: Arc<Segment>,
}

impl Working {
    fn live(&self) -> usize {
        self.seg.docs() - self.record.deleted.len()
    }
}

/// The single writer of an index, holding its lock file until dropped.
pub struct IndexWriter {
    dir: PathBuf,
    _lock: File,
    snapshot: Index,
    pending: Vec<Pending>,
    /// Metadata records and factor blobs of `pending` (those of images deleted before the
    /// commit stay until it).
    pending_bytes: Vec<u8>,
    /// Descriptors of `pending`, one row each, contiguous, in the encoding the index stores
    /// (f16 rows for an f16 index: half the memory): the segment writer and the graph
    /// builder use them in place.
    pending_vectors: Rows,
    /// How the index stores descriptors (fixed when it is created).
    encoding: VectorEncoding,
    deletes: BTreeMap<u64, BTreeSet<u32>>,
    next_id: u64,
    factor_channels: Option<usize>,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriter")
            .field("dir", &self.dir)
            .field("generation", &self.snapshot.generation())
            .field("pending_adds", &self.pending.len())
            .field("pending_deletes", &self.pending_deletes())
            .finish()
    }
}

fn lock(dir: &Path) -> Result<File> {
    let p = dir.join(manifest::LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    match fs2::FileExt::try_lock_exclusive(&f) {
        Ok(()) => Ok(f),
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => Err(Error::Locked { path: p }),
        Err(e) => Err(Error::io(&p, e)),
    }
}

fn is_index_file(name: &str) -> bool {
    manifest::parse_manifest_name(name).is_some()
        || manifest::parse_segment_name(name).is_some()
        || name == manifest::CURRENT_TMP
        || name == manifest::LOCK
        || super::companion::is_companion_name(name)
}

impl IndexWriter {
    /// Creates an index in `dir` (which must not exist, be empty, or hold only the leftovers
    /// of a creation that did not finish) and returns its writer. A recipe that names a
    /// whitening needs [`IndexWriter::create_with_whitening`].
    pub fn create(
        dir: impl AsRef<Path>,
        recipe: Recipe,
        options: IndexOptions,
    ) -> Result<IndexWriter> {
        IndexWriter::create_with_whitening(dir, recipe, options, None)
    }

    /// [`IndexWriter::create`] for a recipe that may name a whitening: `whitening` (the one
    /// the recipe names) is stored beside the index as its companion file `<id>.whitening`
    /// before the first commit.
    pub fn create_with_whitening(
        dir: impl AsRef<Path>,
        recipe: Recipe,
        options: IndexOptions,
        whitening: Option<&crate::descriptor::Whitening>,
    ) -> Result<IndexWriter> {
        let dir = dir.as_ref();
        match (&recipe.whitening, whitening) {
            (Some(r), None) => {
                return Err(Error::invalid(format!(
                    "the recipe names whitening {r}: create the index with it"
                )))
            }
            (None, Some(w)) => {
                return Err(Error::invalid(format!(
                    "whitening {} given for a recipe without whitening",
                    w.id()
                )))
            }
            _ => {}
        }
        options.validate()?;
        recipe.validate()?;
        if recipe.dim == 0 || recipe.dim > MAX_DIM {
            return Err(Error::invalid(format!(
                "recipe: descriptor dimension {} is outside 1..={MAX_DIM}",
                recipe.dim
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name == manifest::CURRENT {
                return Err(Error::invalid(format!(
                    "{}: an index already exists there",
                    dir.display()
                )));
            }
            if !is_index_file(&name) {
                return Err(Error::invalid(format!(
                    "{}: directory is not empty ({name}); an index needs a directory of its own",
                    dir.display()
                )));
            }
        }
        let lock = lock(dir)?;
        // Checked again under the lock: another process may have created it meanwhile.
        if dir.join(manifest::CURRENT).exists() {
            return Err(Error::invalid(format!(
                "{}: an index already exists there",
                dir.display()
            )));
        }
        if let Some(w) = whitening {
            super::companion::store_whitening(dir, &recipe, w)?;
        }
        let record = ManifestRecord {
            generation: 1,
            next_id: 0,
            next_segment: 0,
            settings: SettingsRecord::from_options(&options),
            segments: Vec::new(),
        };
        manifest::write_manifest(dir, &record, &recipe)?;
        crate::durable::sync_dir(dir)?;
        manifest::write_current(dir, 1)?;
        IndexWriter::with_lock(dir, lock)
    }

    /// Opens the writer of the index in `dir`; fails with [`Error::Locked`] while another
    /// writer holds it. Removes files left by commits that did not finish.
    pub fn open(dir: impl AsRef<Path>) -> Result<IndexWriter> {
        let dir = dir.as_ref();
        manifest::read_current(dir)?;
        let lock = lock(dir)?;
        IndexWriter::with_lock(dir, lock)
    }

    /// Opens the index in `dir` if it exists (its recipe must match), else creates it.
    pub fn open_or_create(
        dir: impl AsRef<Path>,
        recipe: Recipe,
        options: IndexOptions,
    ) -> Result<IndexWriter> {
        IndexWriter::open_or_create_with_whitening(dir, recipe, options, None)
    }

    /// [`IndexWriter::open_or_create`] for a recipe that may name a whitening (see
    /// [`IndexWriter::create_with_whitening`]).
    pub fn open_or_create_with_whitening(
        dir: impl AsRef<Path>,
        recipe: Recipe,
        options: IndexOptions,
        whitening: Option<&crate::descriptor::Whitening>,
    ) -> Result<IndexWriter> {
        let dir = dir.as_ref();
        if Index::exists(dir) {
            let w = IndexWriter::open(dir)?;
            w.recipe().check_compatible(&recipe)?;
            Ok(w)
        } else {
            IndexWriter::create_with_whitening(dir, recipe, options, whitening)
        }
    }

    fn with_lock(dir: &Path, lock: File) -> Result<IndexWriter> {
        let snapshot = Index::open_with(dir, OpenMode::Read)?;
        let factor_channels = snapshot
            .live_segments()
            .iter()
            .map(|s| s.seg.info.factor_channels)
            .find(|&c| c > 0);
        let encoding = snapshot
            .manifest()
            .record
            .settings
            .to_options()
            .get_vector_encoding();
        let w = IndexWriter {
            dir: dir.to_path_buf(),
            _lock: lock,
            next_id: snapshot.next_id(),
            snapshot,
            pending: Vec::new(),
            pending_bytes: Vec::new(),
            pending_vectors: Rows::new(encoding),
            encoding,
            deletes: BTreeMap::new(),
            factor_channels,
        };
        w.collect_garbage();
        Ok(w)
    }

    /// The index as of the last commit.
    pub fn index(&self) -> &Index {
        &self.snapshot
    }

    /// The index's recipe.
    pub fn recipe(&self) -> &Recipe {
        self.snapshot.recipe()
    }

    /// The id the next [`IndexWriter::add`] returns.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Images added since the last commit.
    pub fn pending_adds(&self) -> usize {
        self.pending.len()
    }

    /// Deletions since the last commit.
    pub fn pending_deletes(&self) -> usize {
        self.deletes.values().map(BTreeSet::len).sum()
    }

    fn check_descriptor(&self, d: &[f32], path: &str) -> Result<()> {
        let dim = self.recipe().dim;
        if d.len() != dim {
            return Err(Error::invalid(format!(
                "{path}: descriptor has {} dimensions, the index {dim}",
                d.len()
            )));
        }
        if d.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(format!(
                "{path}: descriptor has a non-finite value"
            )));
        }
        let norm = d.iter().map(|x| x * x).sum::<f32>().sqrt();
        if (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
            return Err(Error::invalid(format!(
                "{path}: descriptor has length {norm}; the index stores unit vectors"
            )));
        }
        Ok(())
    }

    fn check_factor_channels(&mut self, channels: usize, path: &str) -> Result<()> {
        match self.factor_channels {
            Some(c) if c != channels => Err(Error::invalid(format!(
                "{path}: factors have {channels} channels, the index stores {c}"
            ))),
            _ => {
                self.factor_channels = Some(channels);
                Ok(())
            }
        }
    }

    /// Buffers `image` for the next commit and returns its id. Refuses an image whose
    /// descriptor was made with another recipe, has the wrong dimension, is not finite or
    /// not of unit length, or whose factors disagree with the index's channel count.
    pub fn add(&mut self, recipe: &Recipe, image: NewImage) -> Result<u64> {
        self.recipe().check_compatible(recipe)?;
        let record = image.meta.to_record()?;
        self.check_descriptor(&image.descriptor, &record.path)?;
        if let Some(f) = &image.factors {
            self.check_factor_channels(f.channels(), &record.path)?;
        }
        let meta = encode_meta(&record)?;
        let id = self.next_id;
        self.push_pending(id, &meta, |out| {
            image.factors.as_ref().map_or((0, 0, 0), |f| {
                f.encode(out);
                (f.k() as u16, f.rows() as u16, f.cols() as u16)
            })
        })?;
        self.pending_vectors.push(&image.descriptor);
        self.next_id += 1;
        Ok(id)
    }

    /// Appends a pending image: its metadata record `meta`, and the factor blob `factors`
    /// writes (returning its layout).
    fn push_pending(
        &mut self,
        id: u64,
        meta: &[u8],
        factors: impl FnOnce(&mut Vec<u8>) -> FactorDims,
    ) -> Result<()> {
        let too_big = || Error::invalid(format!("image {id}: metadata or factors over 4 GiB"));
        let meta_at = self.pending_bytes.len() as u64;
        let meta_len = u32::try_from(meta.len()).map_err(|_| too_big())?;
        self.pending_bytes.extend_from_slice(meta);
        let factors_at = self.pending_bytes.len();
        let dims = factors(&mut self.pending_bytes);
        let factors_len = self.pending_bytes.len() - factors_at;
        let Ok(factors_len) = u32::try_from(factors_len) else {
            self.pending_bytes.truncate(meta_at as usize);
            return Err(too_big());
        };
        self.pending.push(Pending {
            id,
            meta_at,
            factors_at: factors_at as u64,
            meta_len,
            factors_len,
            dims,
        });
        Ok(())
    }

    /// Appends a pending image whose factors are a stored blob (`None`: no factors).
    fn push_pending_stored(
        &mut self,
        id: u64,
        meta: &[u8],
        dims: FactorDims,
        blob: Option<&[u8]>,
    ) -> Result<()> {
        self.push_pending(id, meta, |out| match blob {
            Some(b) => {
                out.extend_from_slice(b);
                dims
            }
            None => (0, 0, 0),
        })
    }

    /// The encoded metadata record of a pending image.
    fn pending_meta(&self, p: &Pending) -> &[u8] {
        let at = p.meta_at as usize;
        &self.pending_bytes[at..at + p.meta_len as usize]
    }

    /// The factor blob of a pending image (empty for none).
    fn pending_factors(&self, p: &Pending) -> &[u8] {
        let at = p.factors_at as usize;
        &self.pending_bytes[at..at + p.factors_len as usize]
    }

    /// Buffers a copy of the live image `from` (descriptor and factors) with new metadata:
    /// under id `from` when `keep_id` (a moved file: the old entry is deleted), else under a
    /// new id (a duplicate). Returns the id.
    pub(crate) fn add_copy(&mut self, from: u64, meta: &ImageMeta, keep_id: bool) -> Result<u64> {
        let (si, row) = self
            .snapshot
            .locate(from)
            .ok_or_else(|| Error::invalid(format!("image {from} is not in the index")))?;
        let s = &self.snapshot.live_segments()[si];
        let (seg, number) = (s.seg.clone(), s.record.number);
        let record = meta.to_record()?;
        let vectors = seg.vectors();
        if vectors.row(row).is_none() {
            return Err(Error::invalid(format!(
                "image {from}: descriptor unreadable"
            )));
        }
        let dims = seg.factor_dims(row)?;
        let blob = seg.factor_blob(row)?;
        if keep_id && self.pending.iter().any(|p| p.id == from) {
            return Err(Error::invalid(format!(
                "image {from} is already being re-added in this commit"
            )));
        }
        let id = if keep_id {
            self.deletes.entry(number).or_default().insert(row as u32);
            from
        } else {
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        let meta = encode_meta(&record)?;
        self.push_pending_stored(id, &meta, dims, blob.as_deref())?;
        // Checked above that the row exists.
        self.pending_vectors.push_stored(vectors, row);
        Ok(id)
    }

    /// Deletes image `id` (committed or pending); false if there is no such live image.
    pub fn delete(&mut self, id: u64) -> Result<bool> {
        let dim = self.recipe().dim;
        let mut removed = false;
        while let Some(i) = self.pending.iter().position(|p| p.id == id) {
            self.pending.remove(i);
            self.pending_vectors.remove(i, dim);
            removed = true;
        }
        if let Some((i, row)) = self.snapshot.locate(id) {
            let number = self.snapshot.live_segments()[i].record.number;
            removed |= self.deletes.entry(number).or_default().insert(row as u32);
        }
        Ok(removed)
    }

    /// Deletes every image stored under `path` (as stored; folder updates store absolute
    /// paths); returns how many.
    pub fn delete_path(&mut self, path: &Path) -> Result<usize> {
        let mut n = 0;
        let want = path.to_str();
        let pending: Vec<u64> = self
            .pending
            .iter()
            .filter(|p| want.is_some() && meta_path(self.pending_meta(p)).as_deref() == want)
            .map(|p| p.id)
            .collect();
        for id in pending.into_iter().chain(self.snapshot.find_path(path)?) {
            if self.delete(id)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops the adds and deletes made since the last commit.
    pub fn rollback(&mut self) {
        self.clear_pending();
        self.deletes.clear();
        self.next_id = self.snapshot.next_id();
    }

    /// Makes the buffered adds and deletes durable and visible: writes a new segment, merges
    /// segments as the merge policy says, writes a new manifest and switches `CURRENT` to it.
    /// A crash at any point leaves the index at this commit or at the previous one.
    pub fn commit(&mut self) -> Result<CommitReport> {
        self.commit_inner(false)
    }

    /// Commits, then merges all segments into one without tombstones. Segments written in
    /// format version 1 are rewritten in the current format, which adds their factor vectors
    /// (made from the stored factors; no image is read again): this is the upgrade of an
    /// older index.
    pub fn compact(&mut self) -> Result<CommitReport> {
        self.commit_inner(true)
    }

    fn commit_inner(&mut self, merge_all: bool) -> Result<CommitReport> {
        let mut fresh = None;
        let result = self.commit_steps(merge_all, &mut fresh);
        if result.is_err() {
            if let Some(seg) = fresh {
                // The new segment was written and read back, which freed the pending adds
                // (see `write_pending`); the commit failed later, so they are pending
                // again: take them back from it (the values it stores).
                self.restore_pending(&seg);
            }
        }
        result
    }

    /// Drops every pending add and frees its memory.
    fn clear_pending(&mut self) {
        self.pending = Vec::new();
        self.pending_bytes = Vec::new();
        self.pending_vectors = Rows::new(self.encoding);
    }

    /// Makes the rows of `seg`, the segment just written from the pending adds (which were
    /// freed then), pending again: ids, metadata, factors and descriptors as it stores them.
    fn restore_pending(&mut self, seg: &Segment) {
        if !self.pending.is_empty() {
            return;
        }
        let v = seg.vectors();
        let mut rows = Rows::new(self.encoding);
        rows.reserve(v.values());
        let ids = seg.ids().to_vec();
        for (r, &id) in ids.iter().enumerate() {
            let restored = (|| -> Result<bool> {
                let meta = seg.meta_bytes(r)?.to_vec();
                let dims = seg.factor_dims(r)?;
                let blob = seg.factor_blob(r)?;
                self.push_pending_stored(id, &meta, dims, blob.as_deref())?;
                Ok(rows.push_stored(v, r))
            })();
            if !matches!(restored, Ok(true)) {
                // Cannot happen for a segment that passed its checks; keep the writer
                // consistent all the same (like a crash, this loses only uncommitted adds).
                self.clear_pending();
                return;
            }
        }
        self.pending_vectors = rows;
    }

    fn commit_steps(
        &mut self,
        merge_all: bool,
        fresh: &mut Option<Arc<Segment>>,
    ) -> Result<CommitReport> {
        let deleted = self.pending_deletes();
        let single_clean = self.snapshot.live_segments().len() <= 1
            && self
                .snapshot
                .live_segments()
                .iter()
                .all(|s| s.record.deleted.is_empty() && !s.seg.lacks_factor_vectors());
        if self.pending.is_empty() && deleted == 0 && (!merge_all || single_clean) {
            return Ok(CommitReport {
                generation: self.snapshot.generation(),
                segments: self.snapshot.live_segments().len(),
                live: self.snapshot.len(),
                ..CommitReport::default()
            });
        }
        let m = &self.snapshot.manifest().record;
        let settings = m.settings.clone();
        let options = settings.to_options();
        let mut next_segment = m.next_segment;
        let mut work: Vec<Working> = Vec::new();
        for s in self.snapshot.live_segments() {
            let mut record = s.record.clone();
            if let Some(d) = self.deletes.get(&record.number) {
                let mut all: BTreeSet<u32> = record.deleted.iter().copied().collect();
                all.extend(d.iter().copied());
                record.deleted = all.into_iter().collect();
            }
            if record.deleted.len() < s.seg.docs() {
                work.push(Working {
                    record,
                    seg: s.seg.clone(),
                });
            }
        }
        let added = self.pending.len();
        if !self.pending.is_empty() {
            let number = next_segment;
            next_segment += 1;
            let w = self.write_pending(number, &options)?;
            *fresh = Some(w.seg.clone());
            work.push(w);
        }
        let mut merged = 0;
        // Each round merges disjoint groups; a merged segment may complete a larger size
        // class, hence the rounds. Every round removes at least one segment or one
        // tombstone-heavy segment's tombstones, so few rounds happen; the bound is a guard.
        for _ in 0..64 {
            let groups = plan_merges(&work, options.get_merge_factor(), merge_all);
            if groups.is_empty() {
                break;
            }
            let mut produced = Vec::with_capacity(groups.len());
            let mut involved = BTreeSet::new();
            for group in &groups {
                let number = next_segment;
                next_segment += 1;
                let sources: Vec<&Working> = group.iter().map(|&i| &work[i]).collect();
                produced.push(self.merge(&sources, number, &options)?);
                involved.extend(group.iter().copied());
            }
            merged += involved.len();
            work = work
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !involved.contains(i))
                .map(|(_, w)| w)
                .collect();
            work.extend(produced.into_iter().flatten());
            if merge_all {
                break;
            }
        }
        let record = ManifestRecord {
            generation: self.snapshot.generation() + 1,
            next_id: self.next_id,
            next_segment,
            settings,
            segments: work.iter().map(|w| w.record.clone()).collect(),
        };
        manifest::write_manifest(&self.dir, &record, self.recipe())?;
        crate::durable::sync_dir(&self.dir)?;
        manifest::write_current(&self.dir, record.generation)?;
        // Committed. Take the new snapshot from what was just written and read back.
        let segments: Vec<LiveSegment> = work
            .into_iter()
            .map(|w| LiveSegment::new(w.record, w.seg))
            .collect();
        let recipe = self.recipe().clone();
        self.snapshot = Index::from_parts(&self.dir, record, recipe, segments);
        self.clear_pending();
        self.deletes.clear();
        self.collect_garbage();
        Ok(CommitReport {
            generation: self.snapshot.generation(),
            added,
            deleted,
            merged,
            segments: self.snapshot.live_segments().len(),
            live: self.snapshot.len(),
        })
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(manifest::segment_name(number))
    }

    fn write_pending(&mut self, number: u64, options: &IndexOptions) -> Result<Working> {
        let n = self.pending.len();
        if n > MAX_SEGMENT_DOCS {
            return Err(Error::invalid(format!(
                "{n} images in one commit exceed the segment maximum {MAX_SEGMENT_DOCS}"
            )));
        }
        let dim = self.recipe().dim;
        if self.pending.windows(2).any(|w| w[0].id > w[1].id) {
            // Moved files keep their older ids: put the rows in id order.
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| self.pending[i].id);
            let mut vectors = Rows::new(self.encoding);
            vectors.reserve(n * dim);
            let view = self.pending_vectors.view(dim);
            for &i in &order {
                vectors.push_stored(view, i);
            }
            let mut old: Vec<Option<Pending>> = self.pending.drain(..).map(Some).collect();
            self.pending = order.iter().filter_map(|&i| old[i].take()).collect();
            self.pending_vectors = vectors;
        }
        let path = self.dir.join(manifest::segment_name(number));
        let written = {
            let ids: Vec<u64> = self.pending.iter().map(|p| p.id).collect();
            let dims: Vec<FactorDims> = self.pending.iter().map(|p| p.dims).collect();
            let this = &*self;
            let meta = |row: usize| -> Result<&[u8]> { Ok(this.pending_meta(&this.pending[row])) };
            let mut blob = |row: usize, out: &mut Vec<u8>| -> Result<()> {
                out.extend_from_slice(this.pending_factors(&this.pending[row]));
                Ok(())
            };
            write_new_segment(
                &path,
                &ids,
                this.pending_vectors.view(dim),
                dim,
                &meta,
                this.factor_channels
                    .filter(|_| dims.iter().any(|d| d.0 > 0)),
                &dims,
                &mut blob,
                options,
            )?
        };
        // The file holds the adds now: free them before reading it back, so that they are
        // never held twice. If the commit fails later, `commit_inner` takes them back from
        // the segment; if it cannot be read back, they are gone, as after a crash.
        self.clear_pending();
        read_back(&path, number, n, written)
    }

    /// Merges the live rows of `sources` into segment `number`; `None` if none is live.
    fn merge(
        &self,
        sources: &[&Working],
        number: u64,
        options: &IndexOptions,
    ) -> Result<Option<Working>> {
        let mut rows: Vec<(u64, usize, usize)> = Vec::new();
        for (si, w) in sources.iter().enumerate() {
            let ids = w.seg.ids();
            let mut del = w.record.deleted.iter().peekable();
            for (r, &id) in ids.iter().enumerate() {
                if del.peek().is_some_and(|&&d| d as usize == r) {
                    del.next();
                    continue;
                }
                rows.push((id, si, r));
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_unstable_by_key(|r| r.0);
        if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(super::format::bad(
                &sources[w[1].1].seg.path,
                super::format::section_label(super::format::kind::IDS),
                format!("image id {} is live in two segments being merged", w[0].0),
            ));
        }
        let dim = self.recipe().dim;
        let mut vectors = Rows::new(options.get_vector_encoding());
        vectors.reserve(rows.len() * dim);
        let mut dims = Vec::with_capacity(rows.len());
        let mut channels = None;
        for &(_, si, r) in &rows {
            let seg = &sources[si].seg;
            let found = vectors.push_stored(seg.vectors(), r);
            found.then_some(()).ok_or_else(|| {
                let k = match seg.info.encoding {
                    VectorEncoding::F32 => super::format::kind::VF32,
                    VectorEncoding::F16 => super::format::kind::VF16,
                };
                super::format::bad(
                    &seg.path,
                    super::format::section_label(k),
                    format!("row {r} unreadable"),
                )
            })?;
            let d = seg.factor_dims(r)?;
            if d.0 > 0 {
                let c = seg.info.factor_channels;
                if channels.is_some_and(|x| x != c) {
                    return Err(super::format::bad(
                        &seg.path,
                        super::format::section_label(super::format::kind::INFO),
                        format!("factors have {c} channels, other segments {channels:?}"),
                    ));
                }
                channels = Some(c);
            }
            dims.push(d);
        }
        let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
        let mut blob = |row: usize, out: &mut Vec<u8>| -> Result<()> {
            let (_, si, r) = rows[row];
            if let Some(b) = sources[si].seg.factor_blob(r)? {
                out.extend_from_slice(&b);
            }
            Ok(())
        };
        let meta = |row: usize| -> Result<&[u8]> {
            let (_, si, r) = rows[row];
            sources[si].seg.meta_bytes(r)
        };
        let path = self.segment_path(number);
        let written = write_new_segment(
            &path,
            &ids,
            vectors.view(dim),
            dim,
            &meta,
            channels,
            &dims,
            &mut blob,
            options,
        )?;
        drop(vectors);
        read_back(&path, number, ids.len(), written).map(Some)
    }

    /// Removes files that the current manifest does not reference: manifests of other
    /// generations, segments merged away or written by commits that did not finish, and a
    /// stray `CURRENT.tmp`. Readers that still use such files keep them open (Unix keeps an
    /// unlinked file while it is open or mapped) or start over from `CURRENT`.
    ///
    /// Best effort: a file that cannot be removed now (a system that refuses to delete open
    /// files, say) is left for the next commit or writer, and never fails a commit that
    /// already happened.
    fn collect_garbage(&self) {
        let keep: BTreeSet<u64> = self
            .snapshot
            .live_segments()
            .iter()
            .map(|s| s.record.number)
            .collect();
        let g = self.snapshot.generation();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let stale = match (
                manifest::parse_manifest_name(&name),
                manifest::parse_segment_name(&name),
            ) {
                (Some(mg), _) => mg != g,
                (_, Some(n)) => !keep.contains(&n),
                _ => name == manifest::CURRENT_TMP,
            };
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Builds the graphs (if the segment is large enough) and writes a segment at `path`;
/// returns its length and header checksum. `vectors` should be in the stored encoding (the
/// graph is built on the stored values; other rows are converted first). The callers free
/// their rows once the file is written, before [`read_back`], so that nothing is held twice.
#[allow(clippy::too_many_arguments)]
fn write_new_segment<'m>(
    path: &Path,
    ids: &[u64],
    vectors: Vectors<'_>,
    dim: usize,
    meta: &'m (dyn Fn(usize) -> Result<&'m [u8]> + 'm),
    factor_channels: Option<usize>,
    dims: &[FactorDims],
    blob: &mut dyn FnMut(usize, &mut Vec<u8>) -> Result<()>,
    options: &IndexOptions,
) -> Result<(u64, [u8; 32])> {
    let n = ids.len();
    let encoding = options.get_vector_encoding();
    let converted;
    let vectors = match (vectors, encoding) {
        (v @ Vectors::F32(..), VectorEncoding::F32)
        | (v @ Vectors::F16(..), VectorEncoding::F16) => v,
        (v, e) => {
            // Not reached (the writer keeps its rows in the index's encoding); convert anyway.
            let mut rows = Rows::new(e);
            rows.reserve(v.values());
            for r in 0..v.rows() {
                rows.push_stored(v, r);
            }
            converted = rows;
            converted.view(dim)
        }
    };
    let graph = if n >= options.get_graph_min_docs() {
        Some(FlatGraph::build_rows(
            vectors,
            options.get_m(),
            options.get_ef_construction(),
        )?)
    } else {
        None
    };
    // Region vectors: the unit concept vectors of the stored factors, rounded to f16 as
    // stored (the graph is built on the stored values).
    let mut region_vectors = Vec::new();
    let mut region_refs = Vec::new();
    if let Some(channels) = factor_channels {
        let mut buf = Vec::new();
        for (row, &(k, r, c)) in dims.iter().enumerate() {
            if k == 0 {
                continue;
            }
            buf.clear();
            blob(row, &mut buf)?;
            let f = StoredFactors::decode(&buf, k.into(), channels, r.into(), c.into())
                .map_err(|e| Error::invalid(format!("factors of row {row}: {e}")))?;
            for (factor, v) in region_vectors_of(&f) {
                region_refs.push(RegionRef {
                    row: row as u32,
                    factor: factor as u16,
                    reserved: 0,
                });
                region_vectors.extend(v.into_iter().map(|x| f16::from_f32(x).to_f32()));
            }
        }
    }
    let region_graph = match factor_channels {
        Some(c) if !region_refs.is_empty() && region_refs.len() >= options.get_graph_min_docs() => {
            Some(FlatGraph::build(
                &region_vectors,
                c,
                options.get_m(),
                options.get_ef_construction(),
            )?)
        }
        _ => None,
    };
    let content = SegmentContent {
        ids,
        vectors,
        dim,
        encoding: options.get_vector_encoding(),
        meta,
        graph: graph.as_ref(),
        factors: factor_channels.map(|c| (c, dims)),
        regions: Some(RegionContent {
            vectors: &region_vectors,
            refs: &region_refs,
            graph: region_graph.as_ref(),
        }),
    };
    write_segment(path, &content, blob)
}

/// Opens segment `number`, just written at `path` (`n` rows, `written` = its length and
/// header checksum), and checks that it reads back as written.
fn read_back(path: &Path, number: u64, n: usize, written: (u64, [u8; 32])) -> Result<Working> {
    let (file_len, header_hash) = written;
    let seg = Segment::open(path, OpenMode::Read)?;
    if seg.container.header_hash != header_hash {
        return Err(super::format::bad(
            path,
            "header",
            "reads back differently from what was written",
        ));
    }
    Ok(Working {
        record: SegmentRecord {
            number,
            file_len,
            header_hash,
            docs: n as u64,
            deleted: Vec::new(),
        },
        seg: Arc::new(seg),
    })
}

/// Size class of a segment: ⌊log_factor(live)⌋.
fn level(live: usize, factor: usize) -> u32 {
    let mut l = 0;
    let mut x = live.max(1);
    while x >= factor {
        x /= factor;
        l += 1;
    }
    l
}

/// Which segments to merge: all of them (`all`), else each group of `factor` or more
/// segments of one size class, and each segment with more than [`MAX_DELETED_FRACTION`] of
/// its images deleted. Groups are sorted position lists, disjoint, in increasing order.
fn plan_merges(work: &[Working], factor: usize, all: bool) -> Vec<Vec<usize>> {
    if all {
        // A segment of format 1 with factors lacks factor vectors: compacting rewrites it.
        let dirty = work.len() > 1
            || work
                .iter()
                .any(|w| !w.record.deleted.is_empty() || w.seg.lacks_factor_vectors());
        return if dirty {
            vec![(0..work.len()).collect()]
        } else {
            Vec::new()
        };
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_level: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, w) in work.iter().enumerate() {
        let frac = w.record.deleted.len() as f64 / w.seg.docs().max(1) as f64;
        if frac > MAX_DELETED_FRACTION {
            groups.push(vec![i]);
        } else {
            by_level.entry(level(w.live(), factor)).or_default().push(i);
        }
    }
    for (_, members) in by_level {
        if members.len() >= factor {
            groups.push(members);
        }
    }
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn size_classes() {
        assert_eq!(level(0, 10), 0);
        assert_eq!(level(9, 10), 0);
        assert_eq!(level(10, 10), 1);
        assert_eq!(level(999, 10), 2);
        assert_eq!(level(1000, 10), 3);
    }
}
