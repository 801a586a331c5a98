//! The container shared by segment and manifest files: header, section table, aligned
//! sections, footer. `index-format/README.md` is the normative description; this module is
//! its implementation and follows its section numbering.
//!
//! Everything here works on plain byte slices and is safe code. Parsing checks every field
//! against the length of the bytes before using it, so no size read from a file ever drives
//! an allocation or an index by itself.

use crate::{Error, Result};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// The format version this build writes (2: segments may hold region vectors).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build still reads.
pub const OLDEST_SUPPORTED_FORMAT_VERSION: u32 = 1;

/// Alignment of every section and of the footer, in bytes.
pub const ALIGN: usize = 64;
/// Length of the file header.
pub(crate) const HEADER_LEN: usize = 64;
/// Length of one section-table entry.
pub(crate) const ENTRY_LEN: usize = 64;
/// Length of the footer.
pub(crate) const FOOTER_LEN: usize = 64;
/// How many leading bytes hold the header, the largest table and the padding after it.
pub(crate) const HEAD_READ_LEN: usize = HEADER_LEN + MAX_SECTIONS * ENTRY_LEN;
/// Most sections a file may have.
pub(crate) const MAX_SECTIONS: usize = 32;
/// The endianness mark, written little-endian.
pub(crate) const ENDIAN_MARK: u32 = 0x0A0B_0C0D;
/// First bytes of a segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = [0x89, b'D', b'F', b'S', b'\r', b'\n', 0x1a, b'\n'];
/// First bytes of a manifest file.
pub(crate) const MANIFEST_MAGIC: [u8; 8] = [0x89, b'D', b'F', b'M', b'\r', b'\n', 0x1a, b'\n'];
/// Last bytes of every file.
pub(crate) const FOOTER_MAGIC: [u8; 8] = *b"DFEND\r\n\x1a";

/// A four-byte section kind.
pub(crate) type Kind = [u8; 4];

/// One kind of section a file may hold, in the order the file must hold them.
pub(crate) struct SectionSpec {
    /// Its tag.
    pub kind: Kind,
    /// What it holds, for messages.
    pub what: &'static str,
}

/// What a container is: its magic and the sections it may hold, in order.
pub(crate) struct FileKind {
    /// `segment` or `manifest`, for messages.
    pub name: &'static str,
    /// Its magic.
    pub magic: [u8; 8],
    /// The sections it may hold, in file order.
    pub sections: &'static [SectionSpec],
}

/// Segment section kinds.
pub(crate) mod kind {
    use super::Kind;
    pub const INFO: Kind = *b"INFO";
    pub const VF32: Kind = *b"VF32";
    pub const VF16: Kind = *b"VF16";
    pub const IDS: Kind = *b"IDS ";
    pub const MOFF: Kind = *b"MOFF";
    pub const MDAT: Kind = *b"MDAT";
    pub const GL0: Kind = *b"GL0 ";
    pub const GLVL: Kind = *b"GLVL";
    pub const GUPN: Kind = *b"GUPN";
    pub const GUPL: Kind = *b"GUPL";
    pub const FIDX: Kind = *b"FIDX";
    pub const FDAT: Kind = *b"FDAT";
    pub const RVEC: Kind = *b"RVEC";
    pub const RREF: Kind = *b"RREF";
    pub const RGL0: Kind = *b"RGL0";
    pub const RGLV: Kind = *b"RGLV";
    pub const RGUN: Kind = *b"RGUN";
    pub const RGUL: Kind = *b"RGUL";
    pub const RCPE: Kind = *b"RCPE";
    pub const MANI: Kind = *b"MANI";
}

/// The sections of a segment file, in file order.
pub(crate) const SEGMENT: FileKind = FileKind {
    name: "segment",
    magic: SEGMENT_MAGIC,
    sections: &[
        SectionSpec {
            kind: kind::INFO,
            what: "segment info",
        },
        SectionSpec {
            kind: kind::VF32,
            what: "f32 descriptors",
        },
        SectionSpec {
            kind: kind::VF16,
            what: "f16 descriptors",
        },
        SectionSpec {
            kind: kind::IDS,
            what: "image ids",
        },
        SectionSpec {
            kind: kind::MOFF,
            what: "metadata offsets",
        },
        SectionSpec {
            kind: kind::MDAT,
            what: "metadata records",
        },
        SectionSpec {
            kind: kind::GL0,
            what: "graph layer 0",
        },
        SectionSpec {
            kind: kind::GLVL,
            what: "graph layer sizes",
        },
        SectionSpec {
            kind: kind::GUPN,
            what: "graph upper-layer nodes",
        },
        SectionSpec {
            kind: kind::GUPL,
            what: "graph upper-layer links",
        },
        SectionSpec {
            kind: kind::FIDX,
            what: "factor index",
        },
        SectionSpec {
            kind: kind::FDAT,
            what: "factor data",
        },
        SectionSpec {
            kind: kind::RVEC,
            what: "region vectors",
        },
        SectionSpec {
            kind: kind::RREF,
            what: "region vector owners",
        },
        SectionSpec {
            kind: kind::RGL0,
            what: "region graph layer 0",
        },
        SectionSpec {
            kind: kind::RGLV,
            what: "region graph layer sizes",
        },
        SectionSpec {
            kind: kind::RGUN,
            what: "region graph upper-layer nodes",
        },
        SectionSpec {
            kind: kind::RGUL,
            what: "region graph upper-layer links",
        },
    ],
};

/// The sections of a manifest file, in file order.
pub(crate) const MANIFEST: FileKind = FileKind {
    name: "manifest",
    magic: MANIFEST_MAGIC,
    sections: &[
        SectionSpec {
            kind: kind::RCPE,
            what: "recipe",
        },
        SectionSpec {
            kind: kind::MANI,
            what: "manifest record",
        },
    ],
};

/// The label used in messages for a section: its tag and what it holds.
pub(crate) fn section_label(kind: Kind) -> String {
    let tag = String::from_utf8_lossy(&kind).trim_end().to_string();
    let what = SEGMENT
        .sections
        .iter()
        .chain(MANIFEST.sections)
        .find(|s| s.kind == kind)
        .map(|s| s.what);
    match what {
        Some(w) => format!("section {tag} ({w})"),
        None => format!("section {:?}", String::from_utf8_lossy(&kind)),
    }
}

/// An [`Error::IndexFormat`] for `path`.
pub(crate) fn bad(path: &Path, section: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::IndexFormat {
        path: path.to_path_buf(),
        section: section.into(),
        reason: reason.into(),
    }
}

/// Rounds `n` up to a multiple of [`ALIGN`], or `None` on overflow.
pub(crate) fn align_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// One entry of the section table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Section {
    /// Its tag.
    pub kind: Kind,
    /// Offset of its first byte in the file.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
    /// BLAKE3 of `kind || bytes || len as u64 LE`.
    pub hash: [u8; 32],
}

impl Section {
    /// Its byte range in the file.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// A parsed, structurally valid container.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    /// Format version of the file.
    pub version: u32,
    /// BLAKE3 of header and table, as stored in the footer.
    pub header_hash: [u8; 32],
    /// Its sections, in file order.
    pub sections: Vec<Section>,
    /// Total file length.
    pub file_len: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Computes a section checksum the way the format defines it.
pub(crate) fn section_hash(kind: Kind, bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&kind);
    if bytes.len() >= 1 << 20 {
        // Large sections (descriptors, graph, factors) hash in parallel.
        h.update_rayon(bytes);
    } else {
        h.update(bytes);
    }
    h.update(&(bytes.len() as u64).to_le_bytes());
    *h.finalize().as_bytes()
}

impl Container {
    /// Parses and checks header, table and footer of `bytes` (the whole file `path`).
    ///
    /// Checks: length, magic, endianness mark, version range, file length, section count,
    /// the footer and its checksum of header and table, reserved fields, and that the
    /// sections are known to `kind`, in its order, each at most once, and packed: each starts
    /// at the first multiple of [`ALIGN`] after the previous one, and the footer right after
    /// the last. It does not read section contents (see [`Container::verify`]).
    pub fn parse(bytes: &[u8], path: &Path, kind: &FileKind) -> Result<Container> {
        if bytes.len() < HEADER_LEN + FOOTER_LEN {
            return Self::parse_parts(bytes, &[], bytes.len() as u64, path, kind);
        }
        let footer_at = bytes.len() - FOOTER_LEN;
        let head_len = footer_at.min(HEAD_READ_LEN);
        Self::parse_parts(
            &bytes[..head_len],
            &bytes[footer_at..],
            bytes.len() as u64,
            path,
            kind,
        )
    }

    /// Like [`Container::parse`], from the first `min(file_len - 64, HEAD_READ_LEN)` bytes
    /// of the file (`head`), its last 64 bytes (`footer`) and its length.
    pub fn parse_parts(
        head: &[u8],
        footer: &[u8],
        file_len: u64,
        path: &Path,
        kind: &FileKind,
    ) -> Result<Container> {
        let min = HEADER_LEN + FOOTER_LEN;
        if file_len < min as u64 || footer.len() != FOOTER_LEN || head.len() < HEADER_LEN {
            return Err(bad(
                path,
                "header",
                format!(
                    "file is {file_len} bytes, shorter than the smallest {} file ({min} bytes); it is truncated or not an index file",
                    kind.name
                ),
            ));
        }
        let h = &head[..HEADER_LEN];
        if h[..8] != kind.magic {
            let other = if h[..8] == SEGMENT_MAGIC {
                Some("segment")
            } else if h[..8] == MANIFEST_MAGIC {
                Some("manifest")
            } else {
                None
            };
            return Err(bad(
                path,
                "header",
                match other {
                    Some(o) => format!("this is a {o} file, expected a {} file", kind.name),
                    None => format!("bad magic: not a deepfactor {} file", kind.name),
                },
            ));
        }
        let version = u32_at(h, 8);
        let mark = u32_at(h, 12);
        if mark != ENDIAN_MARK {
            return Err(bad(
                path,
                "header",
                if mark.swap_bytes() == ENDIAN_MARK {
                    "file is big-endian; deepfactor index files are little-endian".to_string()
                } else {
                    format!("bad endianness mark {mark:#010x}")
                },
            ));
        }
        if !(OLDEST_SUPPORTED_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(bad(
                path,
                "header",
                format!(
                    "format version {version} is not supported (this build reads versions {OLDEST_SUPPORTED_FORMAT_VERSION} to {FORMAT_VERSION})"
                ),
            ));
        }
        let stated_len = u64_at(h, 16);
        if stated_len != file_len {
            return Err(bad(
                path,
                "header",
                format!(
                    "header says the file is {stated_len} bytes but it is {file_len} bytes (truncated or extended)"
                ),
            ));
        }
        let Ok(file_len) = usize::try_from(file_len) else {
            return Err(bad(path, "header", "file too large for this machine"));
        };
        if file_len % ALIGN != 0 {
            return Err(bad(
                path,
                "header",
                format!("file length {file_len} is not a multiple of {ALIGN}"),
            ));
        }
        let count = u32_at(h, 24) as usize;
        if count > MAX_SECTIONS {
            return Err(bad(
                path,
                "header",
                format!("section count {count} exceeds the maximum {MAX_SECTIONS}"),
            ));
        }
        if u32_at(h, 28) != 0 || h[32..].iter().any(|&b| b != 0) {
            return Err(bad(path, "header", "reserved header fields are not zero"));
        }
        let table_end = HEADER_LEN + count * ENTRY_LEN;
        let footer_at = file_len - FOOTER_LEN;
        if table_end > footer_at {
            return Err(bad(
                path,
                "section table",
                format!("{count} table entries do not fit in a file of {file_len} bytes"),
            ));
        }
        let first_at = align_up(table_end).unwrap_or(usize::MAX);
        if head.len() < first_at.min(footer_at) {
            return Err(bad(
                path,
                "section table",
                "section table was not read completely",
            ));
        }
        let f = footer;
        if f[56..64] != FOOTER_MAGIC {
            return Err(bad(
                path,
                "footer",
                "footer magic missing: the file is truncated or was not completely written",
            ));
        }
        if u64_at(f, 32) != file_len as u64 {
            return Err(bad(
                path,
                "footer",
                format!(
                    "footer says the file is {} bytes but it is {file_len} bytes",
                    u64_at(f, 32)
                ),
            ));
        }
        if f[40..56].iter().any(|&b| b != 0) {
            return Err(bad(path, "footer", "reserved footer fields are not zero"));
        }
        let mut header_hash = [0u8; 32];
        header_hash.copy_from_slice(&f[..32]);
        if *blake3::hash(&head[..table_end]).as_bytes() != header_hash {
            return Err(bad(
                path,
                "header",
                "checksum of header and section table does not match the footer",
            ));
        }

        if head[table_end..first_at.min(head.len())]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(bad(
                path,
                "section table",
                "padding after the section table is not zero",
            ));
        }
        let mut sections = Vec::with_capacity(count);
        let mut expect_at = first_at;
        let mut spec_pos = 0usize;
        for i in 0..count {
            let e = &head[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
            let mut k = [0u8; 4];
            k.copy_from_slice(&e[..4]);
            let label = section_label(k);
            let Some(pos) = kind.sections[spec_pos..]
                .iter()
                .position(|s| s.kind == k)
                .map(|p| p + spec_pos)
            else {
                let known = kind.sections.iter().any(|s| s.kind == k);
                return Err(bad(
                    path,
                    format!("section table entry {i}"),
                    if known {
                        format!("{label} is out of order or repeated")
                    } else {
                        format!("{label} is not a {} section", kind.name)
                    },
                ));
            };
            spec_pos = pos + 1;
            if u32_at(e, 4) != 0 || e[56..64].iter().any(|&b| b != 0) {
                return Err(bad(path, label, "reserved table-entry fields are not zero"));
            }
            let offset = u64_at(e, 8);
            let len = u64_at(e, 16);
            if offset != expect_at as u64 {
                return Err(bad(
                    path,
                    label,
                    format!("starts at byte {offset}, expected {expect_at}"),
                ));
            }
            let end = offset
                .checked_add(len)
                .filter(|&end| end <= footer_at as u64);
            let Some(end) = end else {
                return Err(bad(
                    path,
                    label,
                    format!("{len} bytes at byte {offset} run past the footer at byte {footer_at}"),
                ));
            };
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&e[24..56]);
            sections.push(Section {
                kind: k,
                offset: offset as usize,
                len: len as usize,
                hash,
            });
            expect_at = align_up(end as usize).unwrap_or(usize::MAX);
        }
        if expect_at != footer_at {
            return Err(bad(
                path,
                "footer",
                format!("footer at byte {footer_at}, expected at byte {expect_at} right after the last section"),
            ));
        }
        Ok(Container {
            version,
            header_hash,
            sections,
            file_len,
        })
    }

    /// Checks that the padding after each section is zero (`bytes` is the whole file).
    pub fn check_padding(&self, bytes: &[u8], path: &Path) -> Result<()> {
        for s in &self.sections {
            check_tail_padding(s, &bytes[s.offset..], path)?;
        }
        Ok(())
    }

    /// Checks every section's checksum and all padding (`bytes` is the whole file).
    pub fn verify(&self, bytes: &[u8], path: &Path) -> Result<()> {
        self.check_padding(bytes, path)?;
        for s in &self.sections {
            check_hash(s, &bytes[s.range()], path)?;
        }
        Ok(())
    }
}

/// Checks that the bytes after section `s` up to the next multiple of [`ALIGN`] are zero;
/// `from_start` starts at the section's first byte and extends at least that far.
pub(crate) fn check_tail_padding(s: &Section, from_start: &[u8], path: &Path) -> Result<()> {
    let padded = s.len.next_multiple_of(ALIGN);
    let tail = from_start.get(s.len..padded).ok_or_else(|| {
        bad(
            path,
            section_label(s.kind),
            "section and its padding were not read completely",
        )
    })?;
    if tail.iter().any(|&b| b != 0) {
        return Err(bad(
            path,
            section_label(s.kind),
            "padding after the section is not zero",
        ));
    }
    Ok(())
}

/// Checks the checksum of section `s` over its bytes.
pub(crate) fn check_hash(s: &Section, bytes: &[u8], path: &Path) -> Result<()> {
    if section_hash(s.kind, bytes) != s.hash {
        return Err(bad(
            path,
            section_label(s.kind),
            "checksum mismatch: the section's bytes were changed or damaged",
        ));
    }
    Ok(())
}

/// Writes a container: reserves header and table, streams sections, then fills in the
/// table and writes the footer.
pub(crate) struct ContainerWriter<W: Write + Seek> {
    out: W,
    magic: [u8; 8],
    count: usize,
    pos: usize,
    sections: Vec<Section>,
    current: Option<(Kind, usize, blake3::Hasher)>,
}

const ZEROS: [u8; ALIGN] = [0u8; ALIGN];

impl<W: Write + Seek> ContainerWriter<W> {
    /// Starts a container with `count` sections; `out` must be positioned at 0.
    pub fn new(mut out: W, magic: [u8; 8], count: usize) -> std::io::Result<Self> {
        if count > MAX_SECTIONS {
            return Err(std::io::Error::other(format!(
                "{count} sections exceed the maximum {MAX_SECTIONS}"
            )));
        }
        let start = HEADER_LEN + count * ENTRY_LEN;
        // Zeros for now; `finish` writes the real header and table.
        let reserve = align_up(start).unwrap_or(start);
        out.write_all(&vec![0u8; reserve])?;
        Ok(ContainerWriter {
            out,
            magic,
            count,
            pos: reserve,
            sections: Vec::with_capacity(count),
            current: None,
        })
    }

    /// Begins the next section.
    pub fn begin(&mut self, kind: Kind) {
        debug_assert!(self.current.is_none());
        let mut h = blake3::Hasher::new();
        h.update(&kind);
        self.current = Some((kind, self.pos, h));
    }

    /// Appends bytes to the current section.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let (_, _, h) = self
            .current
            .as_mut()
            .ok_or_else(|| std::io::Error::other("write outside a section"))?;
        if bytes.len() >= 1 << 20 {
            h.update_rayon(bytes);
        } else {
            h.update(bytes);
        }
        self.out.write_all(bytes)?;
        self.pos += bytes.len();
        Ok(())
    }

    /// Ends the current section and pads to the next multiple of [`ALIGN`].
    pub fn end(&mut self) -> std::io::Result<()> {
        let (kind, offset, mut h) = self
            .current
            .take()
            .ok_or_else(|| std::io::Error::other("end outside a section"))?;
        let len = self.pos - offset;
        h.update(&(len as u64).to_le_bytes());
        self.sections.push(Section {
            kind,
            offset,
            len,
            hash: *h.finalize().as_bytes(),
        });
        let pad = self.pos.next_multiple_of(ALIGN) - self.pos;
        self.out.write_all(&ZEROS[..pad])?;
        self.pos += pad;
        Ok(())
    }

    /// Writes one whole section.
    pub fn section(&mut self, kind: Kind, bytes: &[u8]) -> std::io::Result<()> {
        self.begin(kind);
        self.write(bytes)?;
        self.end()
    }

    /// Writes the footer, header and table; returns the writer, the file length and the
    /// header checksum.
    pub fn finish(mut self) -> std::io::Result<(W, u64, [u8; 32])> {
        if self.sections.len() != self.count || self.current.is_some() {
            return Err(std::io::Error::other(format!(
                "container declared {} sections but {} were written",
                self.count,
                self.sections.len()
            )));
        }
        let file_len = (self.pos + FOOTER_LEN) as u64;
        let mut head = Vec::with_capacity(HEADER_LEN + self.count * ENTRY_LEN);
        head.extend_from_slice(&self.magic);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&ENDIAN_MARK.to_le_bytes());
        head.extend_from_slice(&file_len.to_le_bytes());
        head.extend_from_slice(&(self.count as u32).to_le_bytes());
        head.extend_from_slice(&[0u8; 36]);
        for s in &self.sections {
            head.extend_from_slice(&s.kind);
            head.extend_from_slice(&[0u8; 4]);
            head.extend_from_slice(&(s.offset as u64).to_le_bytes());
            head.extend_from_slice(&(s.len as u64).to_le_bytes());
            head.extend_from_slice(&s.hash);
            head.extend_from_slice(&[0u8; 8]);
        }
        let header_hash = *blake3::hash(&head).as_bytes();
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend_from_slice(&header_hash);
        footer.extend_from_slice(&file_len.to_le_bytes());
        footer.extend_from_slice(&[0u8; 16]);
        footer.extend_from_slice(&FOOTER_MAGIC);
        self.out.write_all(&footer)?;
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&head)?;
        self.out.seek(SeekFrom::Start(file_len))?;
        self.out.flush()?;
        Ok((self.out, file_len, header_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample() -> Vec<u8> {
        let mut w = ContainerWriter::new(Cursor::new(Vec::new()), MANIFEST_MAGIC, 2).unwrap();
        w.section(kind::RCPE, b"{\"a\":1}").unwrap();
        w.section(kind::MANI, &[7u8; 100]).unwrap();
        let (c, len, _) = w.finish().unwrap();
        let v = c.into_inner();
        assert_eq!(v.len() as u64, len);
        v
    }

    #[test]
    fn round_trip_and_checks() {
        let v = sample();
        let p = Path::new("m");
        let c = Container::parse(&v, p, &MANIFEST).unwrap();
        assert_eq!(c.sections.len(), 2);
        assert_eq!(&v[c.sections[0].range()], b"{\"a\":1}");
        c.verify(&v, p).unwrap();
        assert!(Container::parse(&v, p, &SEGMENT)
            .unwrap_err()
            .to_string()
            .contains("manifest file"));
        // Any single-byte change is caught by parse or verify.
        for i in 0..v.len() {
            let mut m = v.clone();
            m[i] ^= 0x10;
            let ok = Container::parse(&m, p, &MANIFEST).and_then(|c| c.verify(&m, p));
            assert!(ok.is_err(), "flip at {i} not detected");
        }
        for n in 0..v.len() {
            assert!(Container::parse(&v[..n], p, &MANIFEST).is_err());
        }
    }
}
