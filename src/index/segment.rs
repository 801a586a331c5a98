//! Segment files: one immutable batch of images — descriptors, ids, metadata, an optional
//! HNSW graph and optional NMF factors — in the container of [`super::format`].

use super::exact::Vectors;
use super::factors::{StoredFactors, MAX_CHANNELS, MAX_FACTORS, MAX_HEATMAP_SIDE};
use super::format::{self, bad, kind, section_label, Container, ContainerWriter, Kind};
use super::hnsw::{FlatGraph, GraphRef, MAX_LEVELS, MAX_M, NO_LINK};
use super::reader::OpenMode;
use super::storage::{self, Store};
use crate::{Error, Result};
use half::f16;
use rkyv::rancor;
use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Largest descriptor dimension.
pub const MAX_DIM: usize = 65_536;
/// Most images in one segment (rows are `u32`, and `u32::MAX` marks empty graph slots).
pub const MAX_SEGMENT_DOCS: usize = u32::MAX as usize - 1;
/// Length of the INFO section.
const INFO_LEN: usize = 64;
/// Length of one FIDX entry.
const FIDX_ENTRY: usize = 16;
/// How far a stored region vector's components may be from the normalized stored concept
/// (f16 rounding of a unit vector's components is below 5·10⁻⁴).
pub(crate) const REGION_TOLERANCE: f32 = 2e-3;

/// The region vectors of one image's stored factors: `(factor, unit concept)` for every
/// factor whose concept is not all zero, in factor order.
pub(crate) fn region_vectors_of(f: &StoredFactors) -> Vec<(usize, Vec<f32>)> {
    (0..f.k())
        .filter_map(|i| {
            let c = f.concept(i)?;
            let norm = c
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt();
            (norm > 0.0).then(|| (i, c.iter().map(|&x| (f64::from(x) / norm) as f32).collect()))
        })
        .collect()
}

/// How a segment stores descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorEncoding {
    /// 32-bit floats, exact.
    #[default]
    F32,
    /// 16-bit floats: half the size, about three significant digits.
    F16,
}

impl VectorEncoding {
    fn code(self) -> u32 {
        match self {
            VectorEncoding::F32 => 1,
            VectorEncoding::F16 => 2,
        }
    }
}

/// The fixed fields of a segment (section INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub docs: usize,
    pub dim: usize,
    pub encoding: VectorEncoding,
    /// Layers of the graph, 0 when the segment has none.
    pub graph_levels: usize,
    pub graph_m0: usize,
    pub graph_m: usize,
    pub graph_entry: u32,
    /// Channels of stored concept vectors, 0 when the segment stores no factors.
    pub factor_channels: usize,
    /// Region vectors (format 2): unit concept vectors of the stored factors, one per
    /// non-zero factor, 0 when the segment has none.
    pub regions: usize,
    /// The region vectors' graph: layers (0 for none), link slots, entry.
    pub region_graph_levels: usize,
    pub region_m0: usize,
    pub region_m: usize,
    pub region_entry: u32,
}

impl SegmentInfo {
    fn encode(&self) -> [u8; INFO_LEN] {
        let mut b = [0u8; INFO_LEN];
        b[0..8].copy_from_slice(&(self.docs as u64).to_le_bytes());
        b[8..12].copy_from_slice(&(self.dim as u32).to_le_bytes());
        b[12..16].copy_from_slice(&self.encoding.code().to_le_bytes());
        b[16..20].copy_from_slice(&(self.graph_levels as u32).to_le_bytes());
        b[20..24].copy_from_slice(&(self.graph_m0 as u32).to_le_bytes());
        b[24..28].copy_from_slice(&(self.graph_m as u32).to_le_bytes());
        b[28..32].copy_from_slice(&self.graph_entry.to_le_bytes());
        b[32..36].copy_from_slice(&(self.factor_channels as u32).to_le_bytes());
        b[36..40].copy_from_slice(&(self.regions as u32).to_le_bytes());
        b[40..44].copy_from_slice(&(self.region_graph_levels as u32).to_le_bytes());
        b[44..48].copy_from_slice(&(self.region_m0 as u32).to_le_bytes());
        b[48..52].copy_from_slice(&(self.region_m as u32).to_le_bytes());
        b[52..56].copy_from_slice(&self.region_entry.to_le_bytes());
        b
    }

    /// Decodes INFO of a file of format `version` (fields 36..56 are reserved, zero, in
    /// version 1).
    fn decode(b: &[u8], path: &Path, version: u32) -> Result<SegmentInfo> {
        let e = |r: String| bad(path, section_label(kind::INFO), r);
        if b.len() != INFO_LEN {
            return Err(e(format!("is {} bytes, expected {INFO_LEN}", b.len())));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let docs = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        if docs > MAX_SEGMENT_DOCS as u64 {
            return Err(e(format!(
                "{docs} images exceed the maximum {MAX_SEGMENT_DOCS}"
            )));
        }
        let reserved_from = if version < 2 { 36 } else { 56 };
        if b[reserved_from..].iter().any(|&x| x != 0) {
            return Err(e(format!(
                "reserved fields (bytes {reserved_from}..64 in format version {version}) are not zero"
            )));
        }
        let dim = u32_at(8);
        if dim == 0 || dim > MAX_DIM {
            return Err(e(format!("dimension {dim} is outside 1..={MAX_DIM}")));
        }
        let encoding = match u32_at(12) {
            1 => VectorEncoding::F32,
            2 => VectorEncoding::F16,
            c => return Err(e(format!("unknown vector encoding {c}"))),
        };
        let info = SegmentInfo {
            docs: docs as usize,
            dim,
            encoding,
            graph_levels: u32_at(16),
            graph_m0: u32_at(20),
            graph_m: u32_at(24),
            graph_entry: u32_at(28) as u32,
            factor_channels: u32_at(32),
            regions: u32_at(36),
            region_graph_levels: u32_at(40),
            region_m0: u32_at(44),
            region_m: u32_at(48),
            region_entry: u32_at(52) as u32,
        };
        check_graph_fields(
            "graph",
            info.docs,
            info.graph_levels,
            info.graph_m0,
            info.graph_m,
            info.graph_entry,
        )
        .map_err(e)?;
        if info.factor_channels > MAX_CHANNELS {
            return Err(e(format!(
                "{} factor channels exceed the maximum {MAX_CHANNELS}",
                info.factor_channels
            )));
        }
        if info.regions > MAX_SEGMENT_DOCS {
            return Err(e(format!(
                "{} region vectors exceed the maximum {MAX_SEGMENT_DOCS}",
                info.regions
            )));
        }
        if info.regions > 0 && info.factor_channels == 0 {
            return Err(e(
                "region vectors are declared but the segment stores no factors".into(),
            ));
        }
        check_graph_fields(
            "region graph",
            info.regions,
            info.region_graph_levels,
            info.region_m0,
            info.region_m,
            info.region_entry,
        )
        .map_err(e)?;
        Ok(info)
    }
}

/// Checks the fields of a graph over `rows` rows: all zero without layers, else slots in
/// range and the entry row below `rows`.
fn check_graph_fields(
    what: &str,
    rows: usize,
    levels: usize,
    m0: usize,
    m: usize,
    entry: u32,
) -> std::result::Result<(), String> {
    if levels > MAX_LEVELS {
        return Err(format!(
            "{levels} {what} layers exceed the maximum {MAX_LEVELS}"
        ));
    }
    if levels == 0 {
        if m0 != 0 || m != 0 || entry != 0 {
            return Err(format!(
                "{what} fields are set but the segment has no {what}"
            ));
        }
        return Ok(());
    }
    if m0 == 0 || m0 > 2 * MAX_M {
        return Err(format!("{what} m0 = {m0} is outside 1..={}", 2 * MAX_M));
    }
    if m == 0 || m > MAX_M {
        return Err(format!("{what} m = {m} is outside 1..={MAX_M}"));
    }
    if rows == 0 || entry as usize >= rows {
        return Err(format!(
            "{what} entry row {entry} is not below its {rows} rows"
        ));
    }
    Ok(())
}

/// The metadata of one image as stored (one rkyv archive per image, section MDAT).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct MetaRecord {
    pub path: String,
    pub size: u64,
    pub modified_ns: i64,
    pub content_hash: [u8; 32],
    pub width: u32,
    pub height: u32,
}

/// What is known about an indexed image besides its descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageMeta {
    /// The file, as it was given to the writer (folder updates store absolute paths).
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    /// BLAKE3 hash of the file's bytes.
    pub content_hash: [u8; 32],
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

impl ImageMeta {
    pub(crate) fn to_record(&self) -> Result<MetaRecord> {
        let path = self.path.to_str().ok_or_else(|| {
            Error::invalid(format!(
                "{}: path is not valid UTF-8, which the index cannot store",
                self.path.display()
            ))
        })?;
        if path.is_empty() {
            return Err(Error::invalid("an image path is empty"));
        }
        Ok(MetaRecord {
            path: path.to_string(),
            size: self.size,
            modified_ns: self.modified_ns,
            content_hash: self.content_hash,
            width: self.width,
            height: self.height,
        })
    }

    pub(crate) fn from_archived(a: &ArchivedMetaRecord) -> ImageMeta {
        ImageMeta {
            path: PathBuf::from(a.path.as_str()),
            size: a.size.to_native(),
            modified_ns: a.modified_ns.to_native(),
            content_hash: a.content_hash,
            width: a.width.to_native(),
            height: a.height.to_native(),
        }
    }
}

/// Serializes one metadata record; its length is a multiple of 8 (see the spec, MDAT).
pub(crate) fn encode_meta(r: &MetaRecord) -> Result<Vec<u8>> {
    let b = rkyv::to_bytes::<rancor::Error>(r)
        .map_err(|e| Error::invalid(format!("cannot serialize metadata of {}: {e}", r.path)))?;
    if b.len() % 8 != 0 {
        return Err(Error::invalid(format!(
            "metadata record of {} is {} bytes, not a multiple of 8",
            r.path,
            b.len()
        )));
    }
    Ok(b.to_vec())
}

/// The path in an encoded [`MetaRecord`] (`None` if the bytes are not one).
pub(crate) fn meta_path(bytes: &[u8]) -> Option<String> {
    // Copied so that the archive is aligned as rkyv requires.
    let mut a = rkyv::util::AlignedVec::<8>::with_capacity(bytes.len());
    a.extend_from_slice(bytes);
    rkyv::access::<ArchivedMetaRecord, rancor::Error>(&a)
        .ok()
        .map(|m| m.path.as_str().to_owned())
}

/// A segment's stored factor layout for one row: `(k, rows, cols)`, k = 0 for none.
pub(crate) type FactorDims = (u16, u16, u16);

/// Which stored factor a region vector was made from (section RREF, 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct RegionRef {
    /// The image's row.
    pub row: u32,
    /// The factor's number in the row's stored factors.
    pub factor: u16,
    /// Zero.
    pub reserved: u16,
}

/// The region vectors of a segment being written: `refs.len() × channels` values (unit
/// concept vectors, stored as f16), their owners, and optionally their graph.
pub(crate) struct RegionContent<'a> {
    pub vectors: &'a [f32],
    pub refs: &'a [RegionRef],
    pub graph: Option<&'a FlatGraph>,
}

/// Everything needed to write a segment. Rows must be in increasing id order.
pub(crate) struct SegmentContent<'a, 'm> {
    pub ids: &'a [u64],
    /// `ids.len() × dim` values (converted if their encoding is not `encoding`).
    pub vectors: Vectors<'a>,
    pub dim: usize,
    pub encoding: VectorEncoding,
    /// The encoded [`MetaRecord`] of a row.
    pub meta: &'m (dyn Fn(usize) -> Result<&'m [u8]> + 'm),
    pub graph: Option<&'a FlatGraph>,
    /// Channels and per-row factor layout, when any row has factors.
    pub factors: Option<(usize, &'a [FactorDims])>,
    /// Region vectors over the factors' channels (only with factors).
    pub regions: Option<RegionContent<'a>>,
}

/// Writes a segment file at `path` and syncs it; returns its length and header checksum.
/// `blob(row, out)` appends the stored factor blob of `row` (called in row order, only for
/// rows with factors).
pub(crate) fn write_segment(
    path: &Path,
    content: &SegmentContent<'_, '_>,
    blob: &mut dyn FnMut(usize, &mut Vec<u8>) -> Result<()>,
) -> Result<(u64, [u8; 32])> {
    let n = content.ids.len();
    let io = |e: std::io::Error| Error::io(path, e);
    if n > MAX_SEGMENT_DOCS || content.vectors.values() != n * content.dim {
        return Err(Error::invalid(format!(
            "{}: inconsistent segment content",
            path.display()
        )));
    }
    let channels = content.factors.map_or(0, |f| f.0);
    let regions = content.regions.as_ref().filter(|r| !r.refs.is_empty());
    if let Some(r) = regions {
        if channels == 0
            || r.vectors.len() != r.refs.len() * channels
            || r.graph.is_some_and(|g| g.rows != r.refs.len())
        {
            return Err(Error::invalid(format!(
                "{}: inconsistent region vectors",
                path.display()
            )));
        }
    }
    let rgraph = regions.and_then(|r| r.graph);
    let info = SegmentInfo {
        docs: n,
        dim: content.dim,
        encoding: content.encoding,
        graph_levels: content.graph.map_or(0, |g| g.levels()),
        graph_m0: content.graph.map_or(0, |g| g.m0),
        graph_m: content.graph.map_or(0, |g| g.m),
        graph_entry: content.graph.map_or(0, |g| g.entry),
        factor_channels: channels,
        regions: regions.map_or(0, |r| r.refs.len()),
        region_graph_levels: rgraph.map_or(0, |g| g.levels()),
        region_m0: rgraph.map_or(0, |g| g.m0),
        region_m: rgraph.map_or(0, |g| g.m),
        region_entry: rgraph.map_or(0, |g| g.entry),
    };
    let count = 5
        + if content.graph.is_some() { 4 } else { 0 }
        + if content.factors.is_some() { 2 } else { 0 }
        + if regions.is_some() { 2 } else { 0 }
        + if rgraph.is_some() { 4 } else { 0 };
    let file = File::create(path).map_err(io)?;
    let mut w = ContainerWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        format::SEGMENT_MAGIC,
        count,
    )
    .map_err(io)?;
    w.section(kind::INFO, &info.encode()).map_err(io)?;
    const CHUNK: usize = 1 << 16;
    match (content.encoding, content.vectors) {
        (VectorEncoding::F32, Vectors::F32(v, _)) => {
            w.begin(kind::VF32);
            for chunk in v.chunks(CHUNK) {
                w.write(bytemuck::cast_slice(chunk)).map_err(io)?;
            }
        }
        (VectorEncoding::F16, Vectors::F16(v, _)) => {
            w.begin(kind::VF16);
            for chunk in v.chunks(CHUNK) {
                w.write(bytemuck::cast_slice(chunk)).map_err(io)?;
            }
        }
        (VectorEncoding::F16, Vectors::F32(v, _)) => {
            w.begin(kind::VF16);
            let mut buf: Vec<f16> = Vec::with_capacity(CHUNK);
            for chunk in v.chunks(CHUNK) {
                buf.clear();
                buf.extend(chunk.iter().map(|&x| f16::from_f32(x)));
                w.write(bytemuck::cast_slice(&buf)).map_err(io)?;
            }
        }
        (VectorEncoding::F32, Vectors::F16(v, _)) => {
            w.begin(kind::VF32);
            let mut buf: Vec<f32> = Vec::with_capacity(CHUNK);
            for chunk in v.chunks(CHUNK) {
                buf.clear();
                buf.extend(chunk.iter().map(|x| x.to_f32()));
                w.write(bytemuck::cast_slice(&buf)).map_err(io)?;
            }
        }
    }
    w.end().map_err(io)?;
    w.section(kind::IDS, bytemuck::cast_slice(content.ids))
        .map_err(io)?;
    let mut offsets = Vec::with_capacity(n + 1);
    let mut at = 0u64;
    offsets.push(0u64);
    for row in 0..n {
        at += (content.meta)(row)?.len() as u64;
        offsets.push(at);
    }
    w.section(kind::MOFF, bytemuck::cast_slice(&offsets))
        .map_err(io)?;
    w.begin(kind::MDAT);
    for row in 0..n {
        w.write((content.meta)(row)?).map_err(io)?;
    }
    w.end().map_err(io)?;
    if let Some(g) = content.graph {
        w.section(kind::GL0, bytemuck::cast_slice(&g.layer0))
            .map_err(io)?;
        w.section(kind::GLVL, bytemuck::cast_slice(&g.layer_sizes))
            .map_err(io)?;
        w.section(kind::GUPN, bytemuck::cast_slice(&g.upper_nodes))
            .map_err(io)?;
        w.section(kind::GUPL, bytemuck::cast_slice(&g.upper_links))
            .map_err(io)?;
    }
    if let Some((channels, dims)) = content.factors {
        let mut fidx = Vec::with_capacity(n * FIDX_ENTRY);
        let mut off = 0u64;
        for &(k, r, c) in dims {
            let at = if k > 0 { off } else { 0 };
            fidx.extend_from_slice(&at.to_le_bytes());
            fidx.extend_from_slice(&k.to_le_bytes());
            fidx.extend_from_slice(&r.to_le_bytes());
            fidx.extend_from_slice(&c.to_le_bytes());
            fidx.extend_from_slice(&[0, 0]);
            if k > 0 {
                off += StoredFactors::blob_len(k.into(), channels, r.into(), c.into()) as u64;
            }
        }
        w.section(kind::FIDX, &fidx).map_err(io)?;
        w.begin(kind::FDAT);
        let mut buf = Vec::new();
        for (row, &(k, r, c)) in dims.iter().enumerate() {
            if k == 0 {
                continue;
            }
            buf.clear();
            blob(row, &mut buf)?;
            if buf.len() != StoredFactors::blob_len(k.into(), channels, r.into(), c.into()) {
                return Err(Error::invalid(format!(
                    "{}: factor blob of row {row} has the wrong length",
                    path.display()
                )));
            }
            w.write(&buf).map_err(io)?;
        }
        w.end().map_err(io)?;
    }
    if let Some(r) = regions {
        w.begin(kind::RVEC);
        let mut buf: Vec<f16> = Vec::with_capacity(1 << 16);
        for chunk in r.vectors.chunks(1 << 16) {
            buf.clear();
            buf.extend(chunk.iter().map(|&x| f16::from_f32(x)));
            w.write(bytemuck::cast_slice(&buf)).map_err(io)?;
        }
        w.end().map_err(io)?;
        w.section(kind::RREF, bytemuck::cast_slice(r.refs))
            .map_err(io)?;
        if let Some(g) = r.graph {
            w.section(kind::RGL0, bytemuck::cast_slice(&g.layer0))
                .map_err(io)?;
            w.section(kind::RGLV, bytemuck::cast_slice(&g.layer_sizes))
                .map_err(io)?;
            w.section(kind::RGUN, bytemuck::cast_slice(&g.upper_nodes))
                .map_err(io)?;
            w.section(kind::RGUL, bytemuck::cast_slice(&g.upper_links))
                .map_err(io)?;
        }
    }
    let (out, len, hash) = w.finish().map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok((len, hash))
}

/// Positions of a segment's sections in its container.
#[derive(Debug, Clone, Copy, Default)]
struct Slots {
    vectors: usize,
    ids: usize,
    moff: usize,
    mdat: usize,
    graph: Option<[usize; 4]>,
    factors: Option<[usize; 2]>,
    /// RVEC, RREF.
    regions: Option<[usize; 2]>,
    /// RGL0, RGLV, RGUN, RGUL.
    region_graph: Option<[usize; 4]>,
}

/// The doc graph's and the region graph's section kinds.
const GRAPH_KINDS: [Kind; 4] = [kind::GL0, kind::GLVL, kind::GUPN, kind::GUPL];
const REGION_GRAPH_KINDS: [Kind; 4] = [kind::RGL0, kind::RGLV, kind::RGUN, kind::RGUL];

/// One of a segment's two graphs, as its INFO fields and section slots describe it.
#[derive(Clone, Copy)]
struct GraphSlots {
    kinds: [Kind; 4],
    slots: [usize; 4],
    rows: usize,
    levels: usize,
    m0: usize,
    m: usize,
    entry: u32,
}

/// An open segment file.
pub(crate) struct Segment {
    pub path: PathBuf,
    pub info: SegmentInfo,
    pub container: Container,
    store: Store,
    slots: Slots,
}

/// Sections left on disk by a reading open (read on demand).
const ON_DISK: &[Kind] = &[kind::FDAT];

impl Segment {
    /// Opens `path`: checks the container and section sizes; with [`OpenMode::Read`], also
    /// the contents (see [`Segment::check_contents`]).
    pub fn open(path: &Path, mode: OpenMode) -> Result<Segment> {
        let (store, container) = storage::open_store(path, &format::SEGMENT, mode, ON_DISK)?;
        let seg = Segment::from_store(path, store, container)?;
        if !seg.store.is_mapped() {
            seg.check_contents()?;
        }
        Ok(seg)
    }

    /// Opens a segment held in memory and checks everything but checksums.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Segment> {
        let (store, container) = Store::from_bytes(bytes, path, &format::SEGMENT)?;
        let seg = Segment::from_store(path, store, container)?;
        seg.check_contents()?;
        Ok(seg)
    }

    fn index_of(c: &Container, k: Kind) -> Option<usize> {
        c.sections.iter().position(|s| s.kind == k)
    }

    fn from_store(path: &Path, store: Store, c: Container) -> Result<Segment> {
        let pb = path.to_path_buf();
        let req = |k: Kind| -> Result<usize> {
            Segment::index_of(&c, k)
                .ok_or_else(|| bad(path, section_label(k), "required section is missing"))
        };
        let info_i = req(kind::INFO)?;
        let info_bytes = store
            .section(&c, info_i)
            .ok_or_else(|| bad(path, section_label(kind::INFO), "not readable"))?;
        let info = SegmentInfo::decode(info_bytes, path, c.version)?;
        let (vk, other) = match info.encoding {
            VectorEncoding::F32 => (kind::VF32, kind::VF16),
            VectorEncoding::F16 => (kind::VF16, kind::VF32),
        };
        if Segment::index_of(&c, other).is_some() {
            return Err(bad(
                path,
                section_label(other),
                "present, but INFO declares the other vector encoding",
            ));
        }
        // Sections present iff INFO declares what they hold.
        let optional = |present: bool, kinds: &[Kind], what: &str| -> Result<Option<Vec<usize>>> {
            if present {
                kinds
                    .iter()
                    .map(|&k| req(k))
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            } else {
                match kinds.iter().find(|k| Segment::index_of(&c, **k).is_some()) {
                    Some(k) => Err(bad(
                        path,
                        section_label(*k),
                        format!("present, but INFO declares no {what}"),
                    )),
                    None => Ok(None),
                }
            }
        };
        let four = |v: Vec<usize>| [v[0], v[1], v[2], v[3]];
        let graph = optional(info.graph_levels > 0, &GRAPH_KINDS, "graph")?.map(four);
        let factors = optional(
            info.factor_channels > 0,
            &[kind::FIDX, kind::FDAT],
            "factors",
        )?
        .map(|v| [v[0], v[1]]);
        let regions = optional(
            info.regions > 0,
            &[kind::RVEC, kind::RREF],
            "region vectors",
        )?
        .map(|v| [v[0], v[1]]);
        let region_graph = optional(
            info.region_graph_levels > 0,
            &REGION_GRAPH_KINDS,
            "region graph",
        )?
        .map(four);
        let slots = Slots {
            vectors: req(vk)?,
            ids: req(kind::IDS)?,
            moff: req(kind::MOFF)?,
            mdat: req(kind::MDAT)?,
            graph,
            factors,
            regions,
            region_graph,
        };
        let seg = Segment {
            path: pb,
            info,
            container: c,
            store,
            slots,
        };
        seg.check_sizes()?;
        Ok(seg)
    }

    fn err(&self, k: Kind, reason: impl Into<String>) -> Error {
        bad(&self.path, section_label(k), reason)
    }

    /// The in-memory bytes of section slot `i` (empty if on disk).
    fn bytes(&self, i: usize) -> &[u8] {
        self.store.section(&self.container, i).unwrap_or(&[])
    }

    /// The bytes of slot `i` as `T`s; checked by [`Segment::check_sizes`] at open, so the
    /// fallback to an empty slice is never taken.
    fn typed<T: bytemuck::Pod>(&self, i: usize) -> &[T] {
        bytemuck::try_cast_slice(self.bytes(i)).unwrap_or(&[])
    }

    fn expect_len(&self, i: usize, want: Option<usize>, what: &str) -> Result<()> {
        let s = &self.container.sections[i];
        match want {
            Some(w) if w == s.len => Ok(()),
            Some(w) => Err(self.err(s.kind, format!("is {} bytes, expected {w} ({what})", s.len))),
            None => Err(self.err(s.kind, format!("size of {what} overflows"))),
        }
    }

    fn check_cast<T: bytemuck::Pod>(&self, i: usize) -> Result<()> {
        let k = self.container.sections[i].kind;
        bytemuck::try_cast_slice::<u8, T>(self.bytes(i))
            .map(|_| ())
            .map_err(|e| self.err(k, format!("cannot be read as an array: {e:?}")))
    }

    /// O(1) checks: every section's size agrees with INFO, arrays are aligned, offsets
    /// arrays start and end where they must, the graph's layer sizes add up.
    fn check_sizes(&self) -> Result<()> {
        let n = self.info.docs;
        let d = self.info.dim;
        let esize = match self.info.encoding {
            VectorEncoding::F32 => 4,
            VectorEncoding::F16 => 2,
        };
        let s = &self.slots;
        self.expect_len(
            s.vectors,
            n.checked_mul(d).and_then(|x| x.checked_mul(esize)),
            &format!("{n} descriptors of {d} values"),
        )?;
        match self.info.encoding {
            VectorEncoding::F32 => self.check_cast::<f32>(s.vectors)?,
            VectorEncoding::F16 => self.check_cast::<f16>(s.vectors)?,
        }
        self.expect_len(s.ids, n.checked_mul(8), &format!("{n} ids"))?;
        self.check_cast::<u64>(s.ids)?;
        self.expect_len(
            s.moff,
            (n + 1).checked_mul(8),
            &format!("{} offsets", n + 1),
        )?;
        self.check_cast::<u64>(s.moff)?;
        let moff: &[u64] = self.typed(s.moff);
        let mdat_len = self.container.sections[s.mdat].len as u64;
        if moff.first() != Some(&0) || moff.last() != Some(&mdat_len) {
            return Err(self.err(
                kind::MOFF,
                format!("must start at 0 and end at the metadata length {mdat_len}"),
            ));
        }
        for g in self.graphs() {
            self.check_graph_sizes(g)?;
        }
        if let Some([fidx, _]) = s.factors {
            self.expect_len(fidx, n.checked_mul(FIDX_ENTRY), "factor index entries")?;
        }
        if let Some([rvec, rref]) = s.regions {
            let (r, c) = (self.info.regions, self.info.factor_channels);
            self.expect_len(
                rvec,
                r.checked_mul(c).and_then(|x| x.checked_mul(2)),
                &format!("{r} region vectors of {c} values"),
            )?;
            self.check_cast::<f16>(rvec)?;
            self.expect_len(rref, r.checked_mul(8), &format!("{r} region owners"))?;
            self.check_cast::<RegionRef>(rref)?;
        }
        Ok(())
    }

    /// The segment's graphs: over the descriptors, and over the region vectors.
    fn graphs(&self) -> impl Iterator<Item = GraphSlots> + '_ {
        let i = &self.info;
        let doc = self.slots.graph.map(|slots| GraphSlots {
            kinds: GRAPH_KINDS,
            slots,
            rows: i.docs,
            levels: i.graph_levels,
            m0: i.graph_m0,
            m: i.graph_m,
            entry: i.graph_entry,
        });
        let region = self.slots.region_graph.map(|slots| GraphSlots {
            kinds: REGION_GRAPH_KINDS,
            slots,
            rows: i.regions,
            levels: i.region_graph_levels,
            m0: i.region_m0,
            m: i.region_m,
            entry: i.region_entry,
        });
        doc.into_iter().chain(region)
    }

    /// O(1) checks of one graph's sections: sizes agree with INFO, layer sizes add up, the
    /// entry row is in the top layer.
    fn check_graph_sizes(&self, g: GraphSlots) -> Result<()> {
        let [gl0, glvl, gupn, gupl] = g.slots;
        let n = g.rows;
        self.expect_len(
            gl0,
            n.checked_mul(g.m0).and_then(|x| x.checked_mul(4)),
            "layer-0 links",
        )?;
        self.check_cast::<u32>(gl0)?;
        let upper = g.levels - 1;
        self.expect_len(glvl, Some(upper * 4), "upper layer sizes")?;
        self.check_cast::<u32>(glvl)?;
        let sizes: &[u32] = self.typed(glvl);
        let mut total = 0usize;
        let mut prev = n;
        for (l, &sz) in sizes.iter().enumerate() {
            let sz = sz as usize;
            if sz == 0 || sz > prev {
                return Err(self.err(
                    g.kinds[1],
                    format!(
                        "layer {} holds {sz} rows; each layer must hold 1 to {prev} (the layer below)",
                        l + 1
                    ),
                ));
            }
            prev = sz;
            total += sz;
        }
        self.expect_len(gupn, total.checked_mul(4), "upper layer nodes")?;
        self.check_cast::<u32>(gupn)?;
        self.expect_len(
            gupl,
            total.checked_mul(g.m).and_then(|x| x.checked_mul(4)),
            "upper layer links",
        )?;
        self.check_cast::<u32>(gupl)?;
        if upper > 0 {
            let nodes: &[u32] = self.typed(gupn);
            let top = &nodes[total - prev..];
            if !top.contains(&g.entry) {
                return Err(self.err(
                    kind::INFO,
                    format!(
                        "entry row {} of the graph in {} is not in its top layer",
                        g.entry,
                        section_label(g.kinds[0])
                    ),
                ));
            }
        }
        Ok(())
    }

    /// O(n) checks of the contents: ids strictly increasing; metadata offsets increasing
    /// multiples of 8 and each record a valid archive; graph links in range, empty slots
    /// last, upper layers sorted and nested, links pointing into their layer; factor index
    /// entries consistent with the factor data. Checksums are [`Segment::verify`]'s job.
    pub fn check_contents(&self) -> Result<()> {
        let ids = self.ids();
        if let Some(i) = ids.windows(2).position(|w| w[0] >= w[1]) {
            return Err(self.err(
                kind::IDS,
                format!("ids are not strictly increasing at row {}", i + 1),
            ));
        }
        let moff: &[u64] = self.typed(self.slots.moff);
        for (row, w) in moff.windows(2).enumerate() {
            if w[0] > w[1] || w[0] % 8 != 0 {
                return Err(self.err(
                    kind::MOFF,
                    format!("offset of row {row} is not a multiple of 8 at or before the next"),
                ));
            }
            self.meta_record(row)?;
        }
        for g in self.graphs() {
            self.check_graph(g)?;
        }
        if let Some([fidx, fdat]) = self.slots.factors {
            let mut expect = 0u64;
            let channels = self.info.factor_channels;
            for row in 0..self.info.docs {
                let (off, k, r, c) = self.factor_entry(row, fidx)?;
                if k == 0 {
                    continue;
                }
                if off != expect {
                    return Err(self.err(
                        kind::FIDX,
                        format!("factors of row {row} start at byte {off}, expected {expect}"),
                    ));
                }
                expect += StoredFactors::blob_len(k, channels, r, c) as u64;
            }
            let fdat_len = self.container.sections[fdat].len as u64;
            if expect != fdat_len {
                return Err(self.err(
                    kind::FDAT,
                    format!("is {fdat_len} bytes, but the factor index describes {expect}"),
                ));
            }
        }
        if let Some([_, rref]) = self.slots.regions {
            let Some([fidx, _]) = self.slots.factors else {
                return Err(self.err(kind::RREF, "region vectors without factors"));
            };
            let mut prev: Option<RegionRef> = None;
            for (i, r) in self.typed::<RegionRef>(rref).iter().enumerate() {
                if r.reserved != 0 {
                    return Err(self.err(kind::RREF, format!("entry {i}: reserved bytes not zero")));
                }
                if prev.is_some_and(|p| (p.row, p.factor) >= (r.row, r.factor)) {
                    return Err(self.err(
                        kind::RREF,
                        format!("entry {i} is not after the one before it (row, then factor)"),
                    ));
                }
                let row = r.row as usize;
                if row >= self.info.docs {
                    return Err(self.err(
                        kind::RREF,
                        format!("entry {i} names row {row} of {} rows", self.info.docs),
                    ));
                }
                let (_, k, _, _) = self.factor_entry(row, fidx)?;
                if usize::from(r.factor) >= k {
                    return Err(self.err(
                        kind::RREF,
                        format!(
                            "entry {i} names factor {} of row {row}, which stores {k}",
                            r.factor
                        ),
                    ));
                }
                prev = Some(*r);
            }
        }
        Ok(())
    }

    fn check_graph(&self, g: GraphSlots) -> Result<()> {
        let [gl0, glvl, gupn, gupl] = g.slots;
        let [kl0, _, kun, kul] = g.kinds;
        let n = g.rows as u32;
        let check_slots = |slots: &[u32], k: Kind, row: u32, member: &dyn Fn(u32) -> bool| {
            let used = slots
                .iter()
                .position(|&l| l == NO_LINK)
                .unwrap_or(slots.len());
            if slots[used..].iter().any(|&l| l != NO_LINK) {
                return Err(self.err(k, format!("row {row} has a link after an empty slot")));
            }
            if let Some(&l) = slots[..used].iter().find(|&&l| l >= n || !member(l)) {
                return Err(self.err(
                    k,
                    format!("row {row} links to row {l}, which is not a row of its layer"),
                ));
            }
            Ok(())
        };
        let l0: &[u32] = self.typed(gl0);
        for (row, slots) in l0.chunks_exact(g.m0).enumerate() {
            check_slots(slots, kl0, row as u32, &|_| true)?;
        }
        let sizes: &[u32] = self.typed(glvl);
        let nodes: &[u32] = self.typed(gupn);
        let links: &[u32] = self.typed(gupl);
        let m = g.m;
        let mut start = 0usize;
        let mut below: Option<&[u32]> = None;
        for (l, &sz) in sizes.iter().enumerate() {
            let layer = &nodes[start..start + sz as usize];
            if let Some(i) = layer.windows(2).position(|w| w[0] >= w[1]) {
                return Err(self.err(
                    kun,
                    format!(
                        "rows of layer {} are not strictly increasing at {}",
                        l + 1,
                        i + 1
                    ),
                ));
            }
            if let Some(&r) = layer
                .iter()
                .find(|&&r| r >= n || below.is_some_and(|b| b.binary_search(&r).is_err()))
            {
                return Err(self.err(
                    kun,
                    format!("row {r} of layer {} is not a row of the layer below", l + 1),
                ));
            }
            for (i, &row) in layer.iter().enumerate() {
                let slots = &links[(start + i) * m..(start + i + 1) * m];
                check_slots(slots, kul, row, &|t| layer.binary_search(&t).is_ok())?;
            }
            below = Some(layer);
            start += sz as usize;
        }
        Ok(())
    }

    /// Everything: [`Segment::check_contents`], all checksums and padding, finite
    /// descriptors, and every factor blob decodable.
    pub fn verify(&self) -> Result<()> {
        self.check_contents()?;
        // Padding was checked at open for the other stores.
        if let Store::Mapped(m) = &self.store {
            self.container.check_padding(m, &self.path)?;
        }
        self.store.verify_checksums(&self.container, &self.path)?;
        let nonfinite = match self.vectors() {
            Vectors::F32(v, d) => v.iter().position(|x| !x.is_finite()).map(|i| i / d),
            Vectors::F16(v, d) => v.iter().position(|x| !x.is_finite()).map(|i| i / d),
        };
        if let Some(row) = nonfinite {
            return Err(self.err(
                self.container.sections[self.slots.vectors].kind,
                format!("descriptor of row {row} has a non-finite value"),
            ));
        }
        if self.slots.factors.is_some() {
            for row in 0..self.info.docs {
                self.factors(row)?;
            }
        }
        self.verify_regions()
    }

    /// Region vectors are the unit concept vectors of the stored factors: one per factor
    /// whose concept is not all zero, each within [`REGION_TOLERANCE`] of the normalized
    /// concept. (Segments of format 1 have none.)
    fn verify_regions(&self) -> Result<()> {
        let Some([rvec, _]) = self.slots.regions else {
            return Ok(());
        };
        let vectors = self.region_vectors();
        let refs = self.region_refs();
        let mut at = 0usize;
        for row in 0..self.info.docs {
            let Some(f) = self.factors(row)? else {
                continue;
            };
            for (factor, want) in region_vectors_of(&f) {
                let r = refs.get(at).copied();
                if r != Some(RegionRef {
                    row: row as u32,
                    factor: factor as u16,
                    reserved: 0,
                }) {
                    return Err(self.err(
                        kind::RREF,
                        format!(
                            "entry {at} should name factor {factor} of row {row} (every non-zero stored concept has one region vector, in order)"
                        ),
                    ));
                }
                let got = vectors.row(at).unwrap_or_default();
                if got.len() != want.len()
                    || got
                        .iter()
                        .zip(&want)
                        .any(|(a, b)| !a.is_finite() || (a - b).abs() > REGION_TOLERANCE)
                {
                    return Err(self.err(
                        kind::RVEC,
                        format!(
                            "region vector {at} is not the unit concept of factor {factor} of row {row}"
                        ),
                    ));
                }
                at += 1;
            }
        }
        if at != refs.len() {
            return Err(self.err(
                kind::RREF,
                format!(
                    "{} region vectors, but the stored factors have {at} non-zero concepts",
                    refs.len()
                ),
            ));
        }
        let _ = rvec;
        Ok(())
    }

    /// Number of region vectors (0 for a segment of format 1).
    pub fn regions(&self) -> usize {
        self.info.regions
    }

    /// Whether the segment stores factors but, written in format version 1, no factor
    /// vectors (compaction rewrites it with them).
    pub fn lacks_factor_vectors(&self) -> bool {
        self.container.version < 2 && self.info.factor_channels > 0
    }

    /// The region vectors of `row`: the positions of its entries in RVEC/RREF.
    pub fn region_range(&self, row: usize) -> std::ops::Range<usize> {
        let refs = self.region_refs();
        let start = refs.partition_point(|r| (r.row as usize) < row);
        let end = start + refs[start..].partition_point(|r| r.row as usize == row);
        start..end
    }

    /// The region vectors, `regions × factor channels`, f16.
    pub fn region_vectors(&self) -> Vectors<'_> {
        match self.slots.regions {
            Some([rvec, _]) => Vectors::F16(self.typed(rvec), self.info.factor_channels),
            None => Vectors::F16(&[], self.info.factor_channels.max(1)),
        }
    }

    /// The owner of each region vector, ordered by row then factor.
    pub fn region_refs(&self) -> &[RegionRef] {
        match self.slots.regions {
            Some([_, rref]) => self.typed(rref),
            None => &[],
        }
    }

    /// The graph over the region vectors, if the segment has one.
    pub fn region_graph(&self) -> Option<GraphRef<'_>> {
        let [gl0, glvl, gupn, gupl] = self.slots.region_graph?;
        Some(GraphRef::new(
            self.info.regions,
            self.info.region_m0,
            self.info.region_m,
            self.info.region_entry,
            self.typed(gl0),
            self.typed(glvl),
            self.typed(gupn),
            self.typed(gupl),
        ))
    }

    /// Number of images.
    pub fn docs(&self) -> usize {
        self.info.docs
    }

    /// Ids, one per row.
    pub fn ids(&self) -> &[u64] {
        self.typed(self.slots.ids)
    }

    /// The row holding `id`, if any.
    pub fn row_of(&self, id: u64) -> Option<usize> {
        self.ids().binary_search(&id).ok()
    }

    /// Descriptors.
    pub fn vectors(&self) -> Vectors<'_> {
        match self.info.encoding {
            VectorEncoding::F32 => Vectors::F32(self.typed(self.slots.vectors), self.info.dim),
            VectorEncoding::F16 => Vectors::F16(self.typed(self.slots.vectors), self.info.dim),
        }
    }

    /// The graph, if the segment has one.
    pub fn graph(&self) -> Option<GraphRef<'_>> {
        let [gl0, glvl, gupn, gupl] = self.slots.graph?;
        Some(GraphRef::new(
            self.info.docs,
            self.info.graph_m0,
            self.info.graph_m,
            self.info.graph_entry,
            self.typed(gl0),
            self.typed(glvl),
            self.typed(gupn),
            self.typed(gupl),
        ))
    }

    /// The validated metadata archive of `row`.
    pub fn meta_record(&self, row: usize) -> Result<&ArchivedMetaRecord> {
        let moff: &[u64] = self.typed(self.slots.moff);
        let (Some(&a), Some(&b)) = (moff.get(row), moff.get(row + 1)) else {
            return Err(self.err(kind::MOFF, format!("no row {row}")));
        };
        let mdat = self.bytes(self.slots.mdat);
        if a % 8 != 0 || a > b || b > mdat.len() as u64 {
            return Err(self.err(
                kind::MOFF,
                format!("record of row {row} at bytes {a}..{b} is misplaced"),
            ));
        }
        rkyv::access::<ArchivedMetaRecord, rancor::Error>(&mdat[a as usize..b as usize])
            .map_err(|e| self.err(kind::MDAT, format!("record of row {row} is invalid: {e}")))
    }

    /// The metadata of `row`.
    pub fn meta(&self, row: usize) -> Result<ImageMeta> {
        self.meta_record(row).map(ImageMeta::from_archived)
    }

    /// The raw metadata record bytes of `row` (for copying into a merged segment).
    pub fn meta_bytes(&self, row: usize) -> Result<&[u8]> {
        self.meta_record(row)?;
        let moff: &[u64] = self.typed(self.slots.moff);
        Ok(&self.bytes(self.slots.mdat)[moff[row] as usize..moff[row + 1] as usize])
    }

    fn factor_entry(&self, row: usize, fidx: usize) -> Result<(u64, usize, usize, usize)> {
        let e = self
            .bytes(fidx)
            .get(row * FIDX_ENTRY..(row + 1) * FIDX_ENTRY)
            .ok_or_else(|| self.err(kind::FIDX, format!("no entry for row {row}")))?;
        let off = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        let k = u16::from_le_bytes([e[8], e[9]]) as usize;
        let r = u16::from_le_bytes([e[10], e[11]]) as usize;
        let c = u16::from_le_bytes([e[12], e[13]]) as usize;
        if e[14] != 0 || e[15] != 0 {
            return Err(self.err(
                kind::FIDX,
                format!("entry of row {row}: reserved bytes not zero"),
            ));
        }
        let ok = if k == 0 {
            r == 0 && c == 0 && off == 0
        } else {
            k <= MAX_FACTORS
                && (1..=MAX_HEATMAP_SIDE).contains(&r)
                && (1..=MAX_HEATMAP_SIDE).contains(&c)
        };
        if !ok {
            return Err(self.err(
                kind::FIDX,
                format!("entry of row {row} has impossible sizes K={k}, {r} × {c}"),
            ));
        }
        Ok((off, k, r, c))
    }

    /// The stored layout `(k, rows, cols)` of `row`'s factors; k = 0 for none.
    pub fn factor_dims(&self, row: usize) -> Result<FactorDims> {
        let Some([fidx, _]) = self.slots.factors else {
            return Ok((0, 0, 0));
        };
        let (_, k, r, c) = self.factor_entry(row, fidx)?;
        Ok((k as u16, r as u16, c as u16))
    }

    /// The stored factor blob of `row`, if it has factors.
    pub fn factor_blob(&self, row: usize) -> Result<Option<Cow<'_, [u8]>>> {
        let Some([fidx, fdat]) = self.slots.factors else {
            return Ok(None);
        };
        let (off, k, r, c) = self.factor_entry(row, fidx)?;
        if k == 0 {
            return Ok(None);
        }
        let len = StoredFactors::blob_len(k, self.info.factor_channels, r, c);
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let end = start.saturating_add(len);
        let b = self
            .store
            .read_section_range(&self.container, fdat, start..end, &self.path)?;
        Ok(Some(b))
    }

    /// The factors of `row`, if stored.
    pub fn factors(&self, row: usize) -> Result<Option<StoredFactors>> {
        let Some(blob) = self.factor_blob(row)? else {
            return Ok(None);
        };
        let (k, r, c) = self.factor_dims(row)?;
        StoredFactors::decode(
            &blob,
            k.into(),
            self.info.factor_channels,
            r.into(),
            c.into(),
        )
        .map(Some)
        .map_err(|e| self.err(kind::FDAT, format!("factors of row {row}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archived layouts the specification describes.
    #[test]
    fn archived_layouts() {
        assert_eq!(std::mem::size_of::<ArchivedMetaRecord>(), 64);
        assert_eq!(std::mem::align_of::<ArchivedMetaRecord>(), 8);
        let r = MetaRecord {
            path: "/a/b.jpg".into(),
            size: 1,
            modified_ns: -2,
            content_hash: [3; 32],
            width: 4,
            height: 5,
        };
        let b = encode_meta(&r).unwrap();
        // An 8-byte path is stored inline: the record is exactly the root.
        assert_eq!(b.len(), 64);
        let long = MetaRecord {
            path: "/a/much/longer/path.jpg".into(),
            ..r.clone()
        };
        let b = encode_meta(&long).unwrap();
        assert_eq!(b.len(), 24 + 64);
        assert_eq!(&b[..23], long.path.as_bytes());
        assert_eq!(&b[24 + 8..24 + 16], &1u64.to_le_bytes());
    }
}
