//! Index files: build an index over a photo collection once, open it in milliseconds from
//! any program, search it, update it incrementally.
//!
//! An index is a directory (`index-format/README.md` is the normative description):
//!
//! - immutable **segment** files (`seg-<n>.dfs`), each holding a batch of images: raw aligned
//!   sections of descriptors (f32 or f16), image ids, an HNSW graph as flat `u32` arrays,
//!   rkyv metadata records (path, size, modification time, content hash, width, height) and
//!   optional NMF factors, behind a little-endian header and section table, every section
//!   checksummed;
//! - a checksummed **manifest** (`manifest-<generation>.dfm`) naming the live segments with
//!   their tombstones, the [`Recipe`](crate::Recipe) and the index settings;
//! - `CURRENT`, naming the manifest in force. Replacing it by a rename is the commit point;
//! - `LOCK`, locked by the single writer. Readers never lock.
//!
//! The lifecycle reads like a sentence: create or open the index, take a writer, add and
//! delete, commit, open a reader (an immutable snapshot), search.
//!
//! ```
//! # fn main() -> deepfactor::Result<()> {
//! use deepfactor::index::{ImageMeta, Index, IndexOptions, IndexWriter, NewImage, SearchOptions};
//! use deepfactor::{BackboneSpec, DescriptorSpec, Recipe};
//! # let dir = std::env::temp_dir().join(format!("deepfactor-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let recipe = Recipe {
//!     backbone: BackboneSpec::External("example".into()),
//!     weights_fingerprint: "0".into(),
//!     layer: "head".into(),
//!     input_size: 224,
//!     max_side: None,
//!     padding: deepfactor::backbone::Padding::Zero,
//!     shift_negative: false,
//!     descriptor: DescriptorSpec::External("example".into()),
//!     crow: false,
//!     whitening: None,
//!     dim: 2,
//! };
//! let mut writer = IndexWriter::create(&dir, recipe.clone(), IndexOptions::new())?;
//! for (i, v) in [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]].into_iter().enumerate() {
//!     let meta = ImageMeta {
//!         path: format!("/photos/{i}.jpg").into(),
//!         size: 1000,
//!         modified_ns: 0,
//!         content_hash: [i as u8; 32],
//!         width: 640,
//!         height: 480,
//!     };
//!     writer.add(&recipe, NewImage { meta, descriptor: v.to_vec(), factors: None })?;
//! }
//! writer.commit()?;
//!
//! let index = Index::open(&dir)?;
//! let hits = index.search(&recipe, &[0.8, 0.6], &SearchOptions::new().k(2))?;
//! assert_eq!(hits[0].id, 1);
//! let doc = index.document(hits[0].id)?.unwrap();
//! assert_eq!(doc.meta.path, std::path::Path::new("/photos/1.jpg"));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! Modules: `format` (the container every file uses), `storage` (heap or memory-mapped
//! bytes; the crate's only `unsafe`), `segment`, `manifest`, `hnsw` (parallel graph building
//! into flat arrays, our beam search), `exact`, `reader` ([`Index`]), `writer`
//! ([`IndexWriter`]) and `update` (the [`Extractor`] seam and folder updates).
#![warn(missing_docs)]

mod companion;
mod exact;
mod factors;
mod format;
mod hnsw;
mod manifest;
mod options;
mod reader;
mod regional;
mod segment;
mod storage;
mod update;
mod writer;

pub use exact::{dot, dot_f16};
pub use factors::{StoredFactors, MAX_CHANNELS, MAX_FACTORS, MAX_HEATMAP_SIDE};
pub use format::{FORMAT_VERSION, OLDEST_SUPPORTED_FORMAT_VERSION};
pub use hnsw::{
    build_hnsw, ClampedDot, FlatGraph, DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_M,
    MAX_LEVELS, MAX_M, PARALLEL_MIN_ROWS,
};
pub use options::{
    IndexOptions, SearchMode, SearchOptions, DEFAULT_EXACT_THRESHOLD, DEFAULT_GRAPH_MIN_DOCS,
    DEFAULT_K, DEFAULT_MERGE_FACTOR, MAX_K,
};
pub use reader::{Document, Hit, Index, SegmentSummary, VerifyReport};
pub use regional::{
    lift_standardized, mix_scores, mix_standardized, CropCheck, CropCheckMode, CropView,
    FactorAggregation, FactorMatch, FactorSearch, QueryFactor, RegionalHit, DEFAULT_CROP_COVERAGE,
    DEFAULT_CROP_OUTLIER, DEFAULT_CROP_WEIGHT, DEFAULT_FACTOR_SHORTLIST, DEFAULT_FACTOR_WEIGHT,
    DEFAULT_GLOBAL_SHORTLIST, DEFAULT_STANDARDIZE_SAMPLE,
};
pub use segment::{ImageMeta, VectorEncoding, MAX_DIM, MAX_SEGMENT_DOCS};
pub use update::{
    add_files, content_hash, update_from_folder, Extracted, Extractor, Failure, FileStamp,
    UpdateOptions, UpdateProgress, UpdateReport, DEFAULT_BATCH_SIZE, DEFAULT_COMMIT_EVERY,
};
pub use writer::{CommitReport, IndexWriter, NewImage, MAX_DELETED_FRACTION, UNIT_NORM_TOLERANCE};

/// Checks a segment file held in memory as [`Index::open`] checks segment files, then runs
/// the full verification (checksums included). For fuzzing and tools: `path` only names the
/// file in errors.
pub fn check_segment_bytes(bytes: &[u8], path: &std::path::Path) -> crate::Result<()> {
    let seg = segment::Segment::from_bytes(bytes, path)?;
    // Exercise the readers a search uses, then check everything.
    let q = vec![0.0f32; seg.info.dim];
    let _ = exact::search(seg.vectors(), &[], &q, 3);
    if let Some(g) = seg.graph() {
        let _ = g.search(seg.vectors(), &[], &q, 3, 16);
    }
    for row in 0..seg.docs().min(64) {
        let _ = seg.meta(row);
        let _ = seg.factors(row);
    }
    seg.verify()
}

/// Checks a manifest file held in memory as [`Index::open`] checks manifests. For fuzzing
/// and tools: `path` only names the file in errors.
pub fn check_manifest_bytes(bytes: &[u8], path: &std::path::Path) -> crate::Result<()> {
    manifest::decode(bytes, path, None).map(|_| ())
}
