//! The manifest (which segments are live, with their tombstones, the recipe and the index
//! settings), the `CURRENT` pointer, file names, and the durable-write helpers of the commit
//! protocol (`index-format/README.md`, "Commit protocol").

use super::format::{self, bad, kind, section_label, ContainerWriter};
use super::options::IndexOptions;
use super::segment::{VectorEncoding, MAX_SEGMENT_DOCS};
use super::storage::{self, Store};
use crate::{Error, Recipe, Result};
use rkyv::rancor;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Name of the pointer file.
pub(crate) const CURRENT: &str = "CURRENT";
/// Name of the temporary pointer file written before the rename.
pub(crate) const CURRENT_TMP: &str = "CURRENT.tmp";
/// Name of the writer's lock file.
pub(crate) const LOCK: &str = "LOCK";

/// File name of the manifest of generation `g`.
pub(crate) fn manifest_name(g: u64) -> String {
    format!("manifest-{g:016x}.dfm")
}

/// File name of segment number `n`.
pub(crate) fn segment_name(n: u64) -> String {
    format!("seg-{n:016x}.dfs")
}

fn parse_hex_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if hex.len() != 16
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The generation named by a manifest file name.
pub(crate) fn parse_manifest_name(name: &str) -> Option<u64> {
    parse_hex_name(name, "manifest-", ".dfm")
}

/// The number named by a segment file name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    parse_hex_name(name, "seg-", ".dfs")
}

/// The index settings as stored.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct SettingsRecord {
    pub f16_vectors: bool,
    pub m: u32,
    pub ef_construction: u32,
    pub graph_min_docs: u64,
    pub merge_factor: u32,
}

/// One live segment as the manifest lists it.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct SegmentRecord {
    /// Its number (file `seg-<number>.dfs`).
    pub number: u64,
    /// Its file length.
    pub file_len: u64,
    /// The header checksum in its footer: ties the manifest to the exact file.
    pub header_hash: [u8; 32],
    /// Images it holds, deleted ones included.
    pub docs: u64,
    /// Deleted rows (tombstones), strictly increasing.
    pub deleted: Vec<u32>,
}

/// The manifest's record (section MANI).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ManifestRecord {
    /// This commit's generation; equals the number in the file name.
    pub generation: u64,
    /// The id the next added image gets.
    pub next_id: u64,
    /// The number the next segment file gets.
    pub next_segment: u64,
    /// Settings chosen at creation.
    pub settings: SettingsRecord,
    /// Live segments.
    pub segments: Vec<SegmentRecord>,
}

/// A manifest read from disk.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub record: ManifestRecord,
    pub recipe: Recipe,
}

impl SettingsRecord {
    pub fn from_options(o: &IndexOptions) -> SettingsRecord {
        SettingsRecord {
            f16_vectors: o.get_vector_encoding() == VectorEncoding::F16,
            m: o.get_m() as u32,
            ef_construction: o.get_ef_construction() as u32,
            graph_min_docs: o.get_graph_min_docs() as u64,
            merge_factor: o.get_merge_factor() as u32,
        }
    }

    pub fn to_options(&self) -> IndexOptions {
        IndexOptions::new()
            .vector_encoding(if self.f16_vectors {
                VectorEncoding::F16
            } else {
                VectorEncoding::F32
            })
            .m(self.m as usize)
            .ef_construction(self.ef_construction as usize)
            .graph_min_docs(self.graph_min_docs as usize)
            .merge_factor(self.merge_factor as usize)
    }
}

/// Reads the generation named by `dir/CURRENT`.
pub(crate) fn read_current(dir: &Path) -> Result<u64> {
    let p = dir.join(CURRENT);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(
                &p,
                "CURRENT",
                if dir.is_dir() {
                    "missing: this directory is not a deepfactor index (or its creation did not finish)"
                } else {
                    "missing: the index directory does not exist"
                },
            ));
        }
        Err(e) => return Err(Error::io(&p, e)),
    };
    let text = std::str::from_utf8(&bytes).ok();
    text.and_then(|t| t.strip_suffix('\n'))
        .and_then(parse_manifest_name)
        .ok_or_else(|| {
            bad(
                &p,
                "CURRENT",
                "must hold one line `manifest-<16 hex digits>.dfm`",
            )
        })
}

/// Reads, checks and decodes the manifest of generation `g` in `dir`.
pub(crate) fn read_manifest(dir: &Path, g: u64) -> Result<Manifest> {
    let path = dir.join(manifest_name(g));
    let buf = storage::read_whole(&path)?;
    decode(buf.as_slice(), &path, Some(g))
}

/// Decodes manifest bytes; checks checksums and every field. `expect_gen` is the generation
/// the file name promises.
pub(crate) fn decode(bytes: &[u8], path: &Path, expect_gen: Option<u64>) -> Result<Manifest> {
    let (store, c) = Store::from_bytes(bytes, path, &format::MANIFEST)?;
    c.verify(bytes, path)?;
    let section = |k| -> Result<&[u8]> {
        let i = c
            .sections
            .iter()
            .position(|s| s.kind == k)
            .ok_or_else(|| bad(path, section_label(k), "required section is missing"))?;
        store
            .section(&c, i)
            .ok_or_else(|| bad(path, section_label(k), "not readable"))
    };
    let recipe: Recipe = serde_json::from_slice(section(kind::RCPE)?).map_err(|e| {
        bad(
            path,
            section_label(kind::RCPE),
            format!("invalid recipe JSON: {e}"),
        )
    })?;
    let archived = rkyv::access::<ArchivedManifestRecord, rancor::Error>(section(kind::MANI)?)
        .map_err(|e| {
            bad(
                path,
                section_label(kind::MANI),
                format!("invalid record: {e}"),
            )
        })?;
    let record: ManifestRecord = rkyv::deserialize::<ManifestRecord, rancor::Error>(archived)
        .map_err(|e| {
            bad(
                path,
                section_label(kind::MANI),
                format!("invalid record: {e}"),
            )
        })?;
    check_record(&record, &recipe, path, expect_gen)?;
    Ok(Manifest { record, recipe })
}

fn check_record(
    r: &ManifestRecord,
    recipe: &Recipe,
    path: &Path,
    expect_gen: Option<u64>,
) -> Result<()> {
    let e = |reason: String| bad(path, section_label(kind::MANI), reason);
    if let Some(g) = expect_gen {
        if r.generation != g {
            return Err(e(format!(
                "holds generation {}, but its file name says {g}",
                r.generation
            )));
        }
    }
    if recipe.dim == 0 || recipe.dim > super::segment::MAX_DIM {
        return Err(bad(
            path,
            section_label(kind::RCPE),
            format!("descriptor dimension {} is not supported", recipe.dim),
        ));
    }
    r.settings
        .to_options()
        .validate()
        .map_err(|x| e(format!("invalid settings: {x}")))?;
    let mut numbers: Vec<u64> = r.segments.iter().map(|s| s.number).collect();
    numbers.sort_unstable();
    if numbers.windows(2).any(|w| w[0] == w[1]) {
        return Err(e("a segment is listed twice".into()));
    }
    for s in &r.segments {
        if s.number >= r.next_segment {
            return Err(e(format!(
                "segment {} is not below the next segment number {}",
                s.number, r.next_segment
            )));
        }
        if s.docs == 0 || s.docs > MAX_SEGMENT_DOCS as u64 {
            return Err(e(format!("segment {} holds {} images", s.number, s.docs)));
        }
        if s.deleted.windows(2).any(|w| w[0] >= w[1])
            || s.deleted.last().is_some_and(|&d| u64::from(d) >= s.docs)
        {
            return Err(e(format!(
                "deleted rows of segment {} are not increasing rows below {}",
                s.number, s.docs
            )));
        }
    }
    Ok(())
}

/// Writes the manifest of `record.generation` into `dir` and syncs it.
pub(crate) fn write_manifest(
    dir: &Path,
    record: &ManifestRecord,
    recipe: &Recipe,
) -> Result<PathBuf> {
    let path = dir.join(manifest_name(record.generation));
    let io = |e: std::io::Error| Error::io(&path, e);
    let json = serde_json::to_vec_pretty(recipe)
        .map_err(|e| Error::invalid(format!("cannot serialize the recipe: {e}")))?;
    let rec = rkyv::to_bytes::<rancor::Error>(record)
        .map_err(|e| Error::invalid(format!("cannot serialize the manifest: {e}")))?;
    let file = File::create(&path).map_err(io)?;
    let mut w =
        ContainerWriter::new(BufWriter::new(file), format::MANIFEST_MAGIC, 2).map_err(io)?;
    w.section(kind::RCPE, &json).map_err(io)?;
    w.section(kind::MANI, &rec).map_err(io)?;
    let (out, _, _) = w.finish().map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(path)
}

/// Points `dir/CURRENT` at generation `g`: writes `CURRENT.tmp`, syncs it, renames it over
/// `CURRENT`, syncs the directory. The rename is the commit point.
pub(crate) fn write_current(dir: &Path, g: u64) -> Result<()> {
    crate::durable::write_atomic(
        &dir.join(CURRENT),
        &dir.join(CURRENT_TMP),
        format!("{}\n", manifest_name(g)).as_bytes(),
    )
}
