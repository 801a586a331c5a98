//! Image files: finding them, decoding them, noticing what is wrong with them.
//!
//! - [`IMAGE_EXTENSIONS`] is the one list of file extensions treated as images, and
//!   [`image_files`] the one folder walker, used by index builds, whitening and evaluation.
//! - [`load_rgb`] / [`decode_rgb`] decode with the `image` crate (JPEG, PNG, WebP, TIFF, BMP,
//!   recognised by content, never by file name) under limits on dimensions and memory, so a
//!   hostile header cannot make us allocate gigabytes; the EXIF orientation is applied;
//!   grayscale, 16-bit, alpha and CMYK inputs all become 8-bit RGB. Errors name the file.
//! - [`truncation`] tells a JPEG that decodes but whose data stops before its end (the decoder
//!   fills the missing rows) from a complete one, so that callers can warn about it.

use crate::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::path::{Path, PathBuf};

/// Largest width or height accepted from a file, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 20_000;
/// Largest decoded image accepted, in bytes (a 16-bit RGBA image of 8192×8192 fits).
pub const MAX_DECODE_BYTES: u64 = 1 << 30;
/// File extensions (lower case; matched without case) of the image files looked at in
/// folders: the formats [`load_rgb`] reads.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp"];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] (any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| IMAGE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(x)))
}

/// What [`image_files`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFiles {
    /// The image files, sorted.
    pub files: Vec<PathBuf>,
    /// Directories that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// The files under `root` (recursively) with one of the [`IMAGE_EXTENSIONS`], sorted.
/// Symbolic links to files are followed, to directories not; directories that cannot be read
/// are listed in [`ImageFiles::unreadable`] (`root` itself included).
pub fn image_files(root: &Path) -> ImageFiles {
    let mut found = ImageFiles::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                found
                    .unreadable
                    .push((dir, format!("cannot read directory: {e}")));
                continue;
            }
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if has_image_extension(&p) && (ft.is_file() || p.is_file()) {
                found.files.push(p);
            }
        }
    }
    found.files.sort();
    found
}

/// Decodes an image file into 8-bit RGB, with the EXIF orientation applied.
///
/// Errors name the file: unreadable, unknown format, corrupt or truncated data, or dimensions
/// beyond [`MAX_IMAGE_SIDE`] / [`MAX_DECODE_BYTES`].
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let head = std::io::BufRead::fill_buf(&mut reader).map_err(|e| Error::io(path, e))?;
    let format = sniff(head, path)?;
    decode(ImageReader::with_format(reader, format), path)
}

/// Decodes an image held in memory; `name` is used in error messages.
pub fn decode_rgb(bytes: &[u8], name: &Path) -> Result<RgbImage> {
    let format = sniff(bytes, name)?;
    decode(
        ImageReader::with_format(std::io::Cursor::new(bytes), format),
        name,
    )
}

/// The format of an image from its first bytes (never from its file name).
fn sniff(head: &[u8], path: &Path) -> Result<image::ImageFormat> {
    use image::ImageFormat as F;
    match image::guess_format(head) {
        Ok(f @ (F::Jpeg | F::Png | F::WebP | F::Tiff | F::Bmp)) => Ok(f),
        Ok(other) => Err(Error::image(
            path,
            format!("unsupported image format {other:?} (JPEG, PNG, WebP, TIFF and BMP are read)"),
        )),
        Err(_) if head.is_empty() => Err(Error::image(path, "not an image: the file is empty")),
        Err(_) => Err(Error::image(
            path,
            "not an image in a supported format (JPEG, PNG, WebP, TIFF, BMP)",
        )),
    }
}

fn decode<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
) -> Result<RgbImage> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| describe(path, e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::image(path, format!("image has no pixels ({w}×{h})")));
    }
    // A missing or unreadable orientation tag means "as stored".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| describe(path, e))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn describe(path: &Path, e: image::ImageError) -> Error {
    use image::ImageError as E;
    let reason = match e {
        E::Limits(l) => format!(
            "image too large to decode (limit {MAX_IMAGE_SIDE} pixels a side, {} MiB): {l}",
            MAX_DECODE_BYTES >> 20
        ),
        E::Unsupported(u) => format!("unsupported image: {u}"),
        E::Decoding(d) => format!("corrupt or truncated image: {d}"),
        E::IoError(io) => format!("corrupt or truncated image: {io}"),
        other => other.to_string(),
    };
    Error::image(path, reason)
}

/// Why a JPEG file that decodes is still incomplete: its data ends before the end-of-image
/// marker that must close its last scan, so the decoder filled the missing part (usually grey
/// or repeated rows). `Ok(None)` for a complete JPEG and for every other format (their
/// decoders refuse truncated data).
pub fn truncation(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(jpeg_truncation(&bytes))
}

/// [`truncation`] of a file held in memory.
pub fn jpeg_truncation(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    // Inside entropy-coded data a 0xFF byte is followed by 0x00 or a restart marker, so the
    // end-of-image marker can only follow the last start-of-scan as the real end.
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA])?;
    let complete = bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9]);
    (!complete).then(|| {
        format!(
            "truncated JPEG: the data ends ({} bytes) before the end-of-image marker; the \
             missing part of the picture was filled in by the decoder",
            bytes.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_ends() {
        let scan = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 0x12, 0xFF, 0x00, 0x34];
        assert!(jpeg_truncation(&scan).is_some());
        let mut whole = scan.to_vec();
        whole.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(jpeg_truncation(&whole), None);
        // Bytes after the end (camera trailers) do not matter.
        whole.extend_from_slice(&[0, 0, 7]);
        assert_eq!(jpeg_truncation(&whole), None);
        // An end marker before the last scan (an EXIF thumbnail's) does not count.
        let mut thumb = vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xD8, 0xFF, 0xD9];
        thumb.extend_from_slice(&scan[2..]);
        assert!(jpeg_truncation(&thumb).is_some());
        // Not a JPEG: nothing to say.
        assert_eq!(jpeg_truncation(b"\x89PNG\r\n"), None);
    }

    #[test]
    fn one_extension_list() {
        for name in [
            "a.jpg", "b.JPEG", "c.png", "d.webp", "e.tif", "f.TIFF", "g.bmp",
        ] {
            assert!(has_image_extension(Path::new(name)), "{name}");
        }
        for name in ["a.gif", "b.txt", "c", "jpg"] {
            assert!(!has_image_extension(Path::new(name)), "{name}");
        }
    }
}
