//! Where the bytes of a segment live: in aligned heap buffers read from the file (the safe
//! default), or in a memory map of the file (an explicit, `unsafe` choice for trusted files).
//!
//! This is the only module of the crate that contains `unsafe` code: creating a memory map,
//! and the `unsafe fn` that lets a caller ask for one. Nothing else reinterprets bytes
//! without a check: typed views go through `bytemuck`, which checks length and alignment.
#![allow(unsafe_code)]

use super::format::{self, Container, Section, FOOTER_LEN, HEAD_READ_LEN};
use super::reader::{Index, OpenMode};
use crate::{Error, Result};
use std::fs::File;
use std::path::Path;

/// 64 bytes aligned to 64, the unit of our heap buffers, so that every section that starts at
/// a multiple of 64 in the file also starts at a multiple of 64 in memory.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Block([u8; 64]);

/// A heap buffer whose first byte is aligned to 64.
pub(crate) struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            blocks: vec![Block([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<Block, u8>(&self.blocks)[..self.len]
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<Block, u8>(&mut self.blocks)[..self.len]
    }
}

/// Reads `len` bytes at `offset` of `file` into an aligned buffer.
pub(crate) fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<AlignedBuf> {
    let mut buf = AlignedBuf::zeroed(len);
    read_exact_at(file, path, offset, buf.as_mut_slice())?;
    Ok(buf)
}

/// Fills `out` from `file` at `offset` with positioned reads, which leave the file position
/// alone, so that threads may read one file at once; a short file is a format error.
pub(crate) fn read_exact_at(file: &File, path: &Path, offset: u64, out: &mut [u8]) -> Result<()> {
    let mut done = 0usize;
    while done < out.len() {
        let at = offset + done as u64;
        #[cfg(unix)]
        let r = std::os::unix::fs::FileExt::read_at(file, &mut out[done..], at);
        #[cfg(windows)]
        let r = std::os::windows::fs::FileExt::seek_read(file, &mut out[done..], at);
        match r {
            Ok(0) => {
                return Err(format::bad(
                    path,
                    "file",
                    format!(
                        "file ended before byte {} (it shrank while being read?)",
                        offset + out.len() as u64
                    ),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(())
}

/// The bytes of one segment or manifest file.
pub(crate) enum Store {
    /// The whole file in one buffer (manifests, fuzzing, tests).
    Memory(AlignedBuf),
    /// The whole file memory-mapped (trusted files only; see [`Index::open_mmap`]).
    Mapped(memmap2::Mmap),
    /// Each section in its own buffer, except the ones left on disk and read on demand.
    Sections {
        /// One buffer per section of the container, in table order; empty for those left on
        /// disk.
        buffers: Vec<AlignedBuf>,
        /// The open file, for sections left on disk.
        file: File,
    },
}

/// Proof that a caller accepted the contract of [`Index::open_mmap`]. Only this module can
/// make one, and only inside that `unsafe fn`, so safe code elsewhere in the crate cannot
/// select memory mapping by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trusted(());

impl Store {
    /// Opens `path` as a container of `kind`, checks its header, table and footer and the
    /// padding after each section, and reads every section into memory except the kinds in
    /// `on_disk`, which [`Store::read_section_range`] reads on demand.
    pub fn open_read(
        path: &Path,
        kind: &format::FileKind,
        on_disk: &[format::Kind],
    ) -> Result<(Store, Container)> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let Ok(len) = usize::try_from(file_len) else {
            return Err(format::bad(path, "file", "too large for this machine"));
        };
        if len < format::HEADER_LEN + FOOTER_LEN {
            let head = read_at(&file, path, 0, len)?;
            return Err(Container::parse(head.as_slice(), path, kind)
                .err()
                .unwrap_or_else(|| format::bad(path, "header", "file too short")));
        }
        let footer_at = len - FOOTER_LEN;
        let head = read_at(&file, path, 0, footer_at.min(HEAD_READ_LEN))?;
        let footer = read_at(&file, path, footer_at as u64, FOOTER_LEN)?;
        let c = Container::parse_parts(head.as_slice(), footer.as_slice(), file_len, path, kind)?;
        let mut buffers = Vec::with_capacity(c.sections.len());
        for s in &c.sections {
            let padded = s.len.next_multiple_of(format::ALIGN);
            if on_disk.contains(&s.kind) {
                let tail = read_at(&file, path, (s.offset + s.len) as u64, padded - s.len)?;
                if tail.as_slice().iter().any(|&b| b != 0) {
                    return Err(format::bad(
                        path,
                        format::section_label(s.kind),
                        "padding after the section is not zero",
                    ));
                }
                buffers.push(AlignedBuf::zeroed(0));
            } else {
                // The table was checked against the real file length, so this allocation is
                // bounded by the size of the file.
                let mut buf = read_at(&file, path, s.offset as u64, padded)?;
                format::check_tail_padding(s, buf.as_slice(), path)?;
                buf.len = s.len;
                buffers.push(buf);
            }
        }
        Ok((Store::Sections { buffers, file }, c))
    }

    /// Memory-maps `path` and checks it as a container of `kind` (header, table, footer;
    /// not the padding or contents).
    ///
    /// # Safety
    ///
    /// The caller promises what [`Index::open_mmap`] asks; `_trusted` records that it did.
    unsafe fn open_mapped(
        path: &Path,
        kind: &format::FileKind,
        _trusted: Trusted,
    ) -> Result<(Store, Container)> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the caller of this `unsafe fn` promises that nothing modifies or truncates
        // the file while the map lives (the contract of `Index::open_mmap`). Every read of
        // the mapped bytes is bounds-checked and validated like any other bytes, so their
        // content cannot cause memory unsafety.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let c = Container::parse(&map, path, kind)?;
        Ok((Store::Mapped(map), c))
    }

    /// Opens in memory: the whole of `bytes`, checked as a container of `kind` with padding.
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        kind: &format::FileKind,
    ) -> Result<(Store, Container)> {
        let buf = AlignedBuf::copy_from(bytes);
        let c = Container::parse(buf.as_slice(), path, kind)?;
        c.check_padding(buf.as_slice(), path)?;
        Ok((Store::Memory(buf), c))
    }

    /// The bytes of section number `i` of `c`, if they are in memory.
    pub fn section<'a>(&'a self, c: &Container, i: usize) -> Option<&'a [u8]> {
        let s = c.sections.get(i)?;
        match self {
            Store::Memory(b) => b.as_slice().get(s.range()),
            Store::Mapped(m) => m.get(s.range()),
            Store::Sections { buffers, .. } => {
                let b = buffers.get(i)?;
                (b.len == s.len).then(|| b.as_slice())
            }
        }
    }

    /// Reads `range` (relative to the section's start) of section `s`, from memory or disk.
    pub fn read_section_range(
        &self,
        c: &Container,
        i: usize,
        range: std::ops::Range<usize>,
        path: &Path,
    ) -> Result<std::borrow::Cow<'_, [u8]>> {
        let s: &Section = c
            .sections
            .get(i)
            .ok_or_else(|| format::bad(path, "section table", "no such section"))?;
        if range.start > range.end || range.end > s.len {
            return Err(format::bad(
                path,
                format::section_label(s.kind),
                format!(
                    "range {}..{} is outside the section's {} bytes",
                    range.start, range.end, s.len
                ),
            ));
        }
        if let Some(b) = self.section(c, i) {
            return Ok(std::borrow::Cow::Borrowed(&b[range]));
        }
        match self {
            Store::Sections { file, .. } => {
                let mut out = vec![0u8; range.end - range.start];
                read_exact_at(file, path, (s.offset + range.start) as u64, &mut out)?;
                Ok(std::borrow::Cow::Owned(out))
            }
            _ => Err(format::bad(
                path,
                format::section_label(s.kind),
                "section bytes unavailable",
            )),
        }
    }

    /// Checks the checksum of every section, reading those left on disk in chunks.
    pub fn verify_checksums(&self, c: &Container, path: &Path) -> Result<()> {
        for (i, s) in c.sections.iter().enumerate() {
            match self.section(c, i) {
                Some(b) => format::check_hash(s, b, path)?,
                None => {
                    let mut h = blake3::Hasher::new();
                    h.update(&s.kind);
                    const CHUNK: usize = 8 << 20;
                    let mut at = 0;
                    while at < s.len {
                        let end = (at + CHUNK).min(s.len);
                        let b = self.read_section_range(c, i, at..end, path)?;
                        h.update_rayon(&b);
                        at = end;
                    }
                    h.update(&(s.len as u64).to_le_bytes());
                    if *h.finalize().as_bytes() != s.hash {
                        return Err(format::bad(
                            path,
                            format::section_label(s.kind),
                            "checksum mismatch: the section's bytes were changed or damaged",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the bytes come from a memory map.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Store::Mapped(_))
    }
}

impl Index {
    /// Opens the index at `dir` by memory-mapping its segment files: opening takes about as
    /// long as reading the manifest, whatever the size of the index, and pages are read
    /// when searches touch them.
    ///
    /// The manifest, headers, section tables and the sizes of all sections are validated as
    /// by [`Index::open`], and every read of the mapped bytes is bounds-checked, so damaged
    /// bytes give errors or wrong results, never memory unsafety. What this open skips is the
    /// scan of the contents (sorted ids, graph links in range, metadata records), which
    /// [`Index::open`] does eagerly and this mode does as each item is read; run
    /// [`Index::verify`] to check everything, checksums included.
    ///
    /// # Safety
    ///
    /// The segment files must not be modified or truncated by anyone while this `Index` (or
    /// anything borrowed from it) lives: a memory map reflects such changes, which breaks
    /// Rust's guarantee that borrowed bytes do not change, and truncation makes reads fault
    /// (SIGBUS). deepfactor's own writers never modify a segment file once written (they
    /// write new files and delete old ones, which leaves existing maps intact), so the
    /// condition holds when only deepfactor writes the directory. Use [`Index::open`] for
    /// files that others may change.
    pub unsafe fn open_mmap(dir: impl AsRef<Path>) -> Result<Index> {
        Index::open_with(dir.as_ref(), OpenMode::Mapped(Trusted(())))
    }
}

/// Opens a segment file as `mode` says.
pub(crate) fn open_store(
    path: &Path,
    kind: &format::FileKind,
    mode: OpenMode,
    on_disk: &[format::Kind],
) -> Result<(Store, Container)> {
    match mode {
        // SAFETY: a `Trusted` exists only inside `Index::open_mmap`, whose caller accepted
        // the contract `open_mapped` needs; `Index::reopen` passes on the mode of the index
        // it reopens, so the promise covers the same directory.
        OpenMode::Mapped(t) => unsafe { Store::open_mapped(path, kind, t) },
        OpenMode::Read => Store::open_read(path, kind, on_disk),
    }
}

/// Reads a whole file into an aligned buffer.
pub(crate) fn read_whole(path: &Path) -> Result<AlignedBuf> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let Ok(len) = usize::try_from(len) else {
        return Err(format::bad(path, "file", "too large for this machine"));
    };
    read_at(&file, path, 0, len)
}
