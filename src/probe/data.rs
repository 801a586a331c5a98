//! Fashion-MNIST from the standard idx files (LeCun's format), gzip-compressed or not.
//!
//! An idx file is a big-endian header — two zero bytes, a type code (`0x08` = unsigned byte),
//! the number of dimensions, then one `u32` per dimension — followed by the values in
//! row-major order. Images are `n × 28 × 28` (`idx3`), labels `n` (`idx1`). Every check names
//! the file and what is wrong: bad magic, a type or dimension count other than expected,
//! sizes beyond [`MAX_IDX_BYTES`], truncated or trailing data, a damaged gzip stream, labels
//! outside the classes, image and label files that disagree on the count.

use crate::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the Debian package `dataset-fashion-mnist` installs the files.
pub const DEFAULT_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Number of classes in Fashion-MNIST.
pub const CLASSES: usize = 10;
/// The class names, in label order.
pub const CLASS_NAMES: [&str; CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Largest payload an idx file may declare (bytes); larger headers are refused before any
/// allocation. Fashion-MNIST's training images are 47 MB.
pub const MAX_IDX_BYTES: u64 = 1 << 30;
/// Mean of the Fashion-MNIST training pixels (in `[0, 1]`), used to standardize inputs.
pub const PIXEL_MEAN: f32 = 0.2860;
/// Standard deviation of the Fashion-MNIST training pixels (in `[0, 1]`).
pub const PIXEL_STD: f32 = 0.3530;

/// The file names of the standard distribution, without the `.gz` suffix.
const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Greyscale images of equal size, `u8` pixels, image after image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Rows (height) of each image.
    pub rows: usize,
    /// Columns (width) of each image.
    pub cols: usize,
    /// `count · rows · cols` pixels, row-major per image.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels of one image.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Images with one label each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledImages {
    /// The images.
    pub images: Images,
    /// One label per image, each `< CLASSES`.
    pub labels: Vec<u8>,
}

impl LabeledImages {
    /// Pairs `images` and `labels` after checking that the counts agree and every label is a
    /// class (`what` names the pair in errors).
    pub fn new(images: Images, labels: Vec<u8>, what: &Path) -> Result<Self> {
        if images.count != labels.len() {
            return Err(Error::dataset(
                what,
                format!("{} images but {} labels", images.count, labels.len()),
            ));
        }
        if let Some(i) = labels.iter().position(|&l| l as usize >= CLASSES) {
            return Err(Error::dataset(
                what,
                format!(
                    "label {} of item {i} is not a class (0..{CLASSES})",
                    labels[i]
                ),
            ));
        }
        Ok(LabeledImages { images, labels })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The items at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> LabeledImages {
        let n = self.images.rows * self.images.cols;
        let mut pixels = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            pixels.extend_from_slice(self.images.image(i));
        }
        LabeledImages {
            images: Images {
                count: indices.len(),
                rows: self.images.rows,
                cols: self.images.cols,
                pixels,
            },
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// The training and test splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FashionMnist {
    /// The 60,000 training items (or however many the files hold).
    pub train: LabeledImages,
    /// The 10,000 test items.
    pub test: LabeledImages,
}

impl FashionMnist {
    /// Reads the four standard files from `dir` (each as `NAME.gz` or `NAME`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = |name: &str| -> Result<PathBuf> {
            let gz = dir.join(format!("{name}.gz"));
            if gz.is_file() {
                return Ok(gz);
            }
            let plain = dir.join(name);
            if plain.is_file() {
                return Ok(plain);
            }
            Err(Error::dataset(
                &gz,
                format!(
                    "missing (nor is {name} there); install the Debian package \
                     dataset-fashion-mnist or pass the folder holding the four idx files"
                ),
            ))
        };
        let [ti, tl, si, sl] = FILES.map(path);
        let (ti, tl, si, sl) = (ti?, tl?, si?, sl?);
        let train = LabeledImages::new(read_idx_images(&ti)?, read_idx_labels(&tl)?, &tl)?;
        let test = LabeledImages::new(read_idx_images(&si)?, read_idx_labels(&sl)?, &sl)?;
        if (train.images.rows, train.images.cols) != (test.images.rows, test.images.cols) {
            return Err(Error::dataset(
                &si,
                format!(
                    "test images are {}×{}, training images {}×{}",
                    test.images.rows, test.images.cols, train.images.rows, train.images.cols
                ),
            ));
        }
        Ok(FashionMnist { train, test })
    }
}

/// Reads an `idx3-ubyte` image file (`count × rows × cols`, gzip or plain).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Images> {
    let path = path.as_ref();
    let (dims, pixels) = read_idx(path, 3)?;
    Ok(Images {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads an `idx1-ubyte` label file (gzip or plain).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    Ok(read_idx(path.as_ref(), 1)?.1)
}

/// Reads an unsigned-byte idx file with `ndim` dimensions: the dimensions and the payload.
fn read_idx(path: &Path, ndim: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut raw = std::io::BufReader::new(file);
    let mut peek = [0u8; 2];
    let n = read_full(&mut raw, &mut peek).map_err(|e| Error::io(path, e))?;
    let prefix = std::io::Cursor::new(peek[..n].to_vec());
    let gz = n == 2 && peek == [0x1f, 0x8b];
    let mut reader: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(prefix.chain(raw)))
    } else {
        Box::new(prefix.chain(raw))
    };
    let stream = if gz { "gzip stream" } else { "file" };
    let read_err =
        |e: std::io::Error| -> Error { Error::dataset(path, format!("damaged {stream}: {e}")) };
    let mut header = [0u8; 4];
    let got = read_full(&mut reader, &mut header).map_err(read_err)?;
    if got < 4 {
        return Err(Error::dataset(
            path,
            format!("truncated: {got} byte(s), an idx header needs at least 4"),
        ));
    }
    if header[0] != 0 || header[1] != 0 {
        return Err(Error::dataset(
            path,
            format!(
                "bad magic {:02x} {:02x} {:02x} {:02x}: not an idx file (it starts with two zero bytes)",
                header[0], header[1], header[2], header[3]
            ),
        ));
    }
    if header[2] != 0x08 {
        return Err(Error::dataset(
            path,
            format!(
                "value type 0x{:02x}; only unsigned bytes (0x08) are supported",
                header[2]
            ),
        ));
    }
    if header[3] as usize != ndim {
        return Err(Error::dataset(
            path,
            format!(
                "{} dimension(s); expected {ndim} ({})",
                header[3],
                if ndim == 3 { "images" } else { "labels" }
            ),
        ));
    }
    let mut dims_raw = vec![0u8; 4 * ndim];
    let got = read_full(&mut reader, &mut dims_raw).map_err(read_err)?;
    if got < dims_raw.len() {
        return Err(Error::dataset(
            path,
            format!(
                "truncated header: {} of {} dimension bytes",
                got,
                dims_raw.len()
            ),
        ));
    }
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let total = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&t| t <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            Error::dataset(
                path,
                format!("declared size {dims:?} exceeds the limit of {MAX_IDX_BYTES} bytes"),
            )
        })?;
    if ndim == 3 && dims[0] > 0 && (dims[1] == 0 || dims[2] == 0) {
        return Err(Error::dataset(
            path,
            format!("images of {}×{} pixels", dims[1], dims[2]),
        ));
    }
    let total = total as usize;
    let mut payload = Vec::new();
    // Reads at most one byte past the declared size, to tell trailing data from a clean end.
    reader
        .take(total as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(read_err)?;
    if payload.len() < total {
        return Err(Error::dataset(
            path,
            format!(
                "truncated: the header declares {dims:?} = {total} bytes of data, found {}",
                payload.len()
            ),
        ));
    }
    if payload.len() > total {
        return Err(Error::dataset(
            path,
            format!("trailing data after the {total} bytes the header {dims:?} declares"),
        ));
    }
    Ok((dims, payload))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reads_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx(&[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let plain = dir.path().join("a");
        std::fs::write(&plain, &bytes).unwrap();
        let gz = dir.path().join("a.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        for p in [&plain, &gz] {
            let im = read_idx_images(p).unwrap();
            assert_eq!((im.count, im.rows, im.cols), (2, 2, 3));
            assert_eq!(im.image(1), &[6, 7, 8, 9, 10, 11]);
        }
    }

    #[test]
    fn refuses_a_huge_declared_size_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge");
        std::fs::write(&p, idx(&[u32::MAX, u32::MAX, 28], &[])).unwrap();
        let e = read_idx_images(&p).unwrap_err().to_string();
        assert!(e.contains("exceeds the limit"), "{e}");
    }
}
