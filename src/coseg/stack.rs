//! The activations of a whole image set, stacked compactly for one joint factorization.

use crate::backbone::Backbone;
use crate::linalg::Csr;
use crate::{Activations, CellGrid, Error, Matrix, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Images decoded and run through the network per step of [`FeatureStack::extract`]: the
/// pipeline holds at most this many decoded images and their dense activations at a time.
pub const EXTRACT_CHUNK: usize = 8;

/// An image that was left out of the set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The image file.
    pub path: PathBuf,
    /// What was wrong with it (the error, naming the file).
    pub reason: String,
}

/// The activations of every image of a set at one layer, stacked row after row into one
/// sparse matrix (compressed sparse rows: only the non-zeros, 8 bytes each), with each
/// image's rows and cell grid.
///
/// # Memory
/// ReLU activations are mostly zero (EfficientNet-Lite0's `head` at 512 px: about 4% of its
/// 1280 channels per cell; a stride-16 expansion layer about 15–25%), so the stack holds
/// `8 · density · cells · channels` bytes instead of `4 · cells · channels` dense: for 2,000
/// VOC photos at 512 px (≈ 700k cells × 1280 channels) about 270 MB instead of 3.6 GB. The
/// joint factorization ([`crate::nmf::Nmf::fit_sparse`]) adds the transpose (the same size
/// again) and the factors (`4·K` bytes per cell); extraction holds at most
/// [`EXTRACT_CHUNK`] decoded images and their dense activations at once. Memory therefore
/// grows linearly with the number of cells (images × cells per image) times the density.
#[derive(Debug, Clone)]
pub struct FeatureStack {
    paths: Vec<PathBuf>,
    names: Vec<String>,
    grids: Vec<CellGrid>,
    /// Row offsets: image `i` has rows `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
    matrix: Csr,
    skipped: Vec<Skipped>,
}

impl FeatureStack {
    /// An empty stack for activations of `channels` channels.
    pub fn new(channels: usize) -> Result<Self> {
        if channels == 0 {
            return Err(Error::invalid("a feature stack needs at least one channel"));
        }
        Ok(FeatureStack {
            paths: Vec::new(),
            names: Vec::new(),
            grids: Vec::new(),
            offsets: vec![0],
            matrix: Csr::with_cols(channels)?,
            skipped: Vec::new(),
        })
    }

    /// Appends one image's activations; `name` is how outputs and scores call it (usually the
    /// file stem). Refuses activations with another number of channels, or whose grid does
    /// not match their rows, or with a negative or non-finite value (named by cell).
    pub fn push(&mut self, name: impl Into<String>, path: &Path, acts: &Activations) -> Result<()> {
        let a = &acts.data;
        if a.rows() != acts.grid.len() || acts.grid.is_empty() {
            return Err(Error::invalid(format!(
                "{}: {} rows of activations for a {}×{} grid",
                path.display(),
                a.rows(),
                acts.grid.rows,
                acts.grid.cols
            )));
        }
        if let Some(i) = a
            .as_slice()
            .iter()
            .position(|v| !(v.is_finite() && *v >= 0.0))
        {
            return Err(Error::Numeric(format!(
                "{}: activation at cell {} channel {} is {}; factorization needs finite \
                 non-negative values",
                path.display(),
                i / a.cols(),
                i % a.cols(),
                a.as_slice()[i]
            )));
        }
        self.matrix.push_rows(a).map_err(|_| {
            Error::invalid(format!(
                "{}: {} channels, the set has {}",
                path.display(),
                a.cols(),
                self.matrix.cols()
            ))
        })?;
        self.paths.push(path.to_path_buf());
        self.names.push(name.into());
        self.grids.push(acts.grid);
        self.offsets.push(self.matrix.rows());
        Ok(())
    }

    /// Records an image that could not be used.
    pub fn skip(&mut self, path: &Path, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason: reason.into(),
        });
    }

    /// Runs `backbone` over `paths` in a bounded pipeline ([`EXTRACT_CHUNK`] images at a
    /// time, decoded in parallel) and stacks the activations. An image that cannot be read,
    /// decoded or run is skipped and listed in [`FeatureStack::skipped`] with the reason;
    /// `progress(done, total)` is called after each step. Names are the file stems, made
    /// unique with a `#n` suffix where two files share a stem.
    pub fn extract(
        backbone: &Backbone,
        paths: &[PathBuf],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let mut stack = FeatureStack::new(backbone.layer().channels)?;
        let names = unique_stems(paths);
        let mut done = 0;
        for (chunk, chunk_names) in paths.chunks(EXTRACT_CHUNK).zip(names.chunks(EXTRACT_CHUNK)) {
            for ((path, name), acts) in chunk
                .iter()
                .zip(chunk_names)
                .zip(backbone.extract_paths(chunk))
            {
                match acts.and_then(|a| stack.push(name.clone(), path, &a)) {
                    Ok(()) => {}
                    Err(e) => stack.skip(path, e.to_string()),
                }
            }
            done += chunk.len();
            progress(done, paths.len());
        }
        Ok(stack)
    }

    /// Number of images in the stack.
    pub fn len(&self) -> usize {
        self.grids.len()
    }

    /// Whether the stack holds no image.
    pub fn is_empty(&self) -> bool {
        self.grids.is_empty()
    }

    /// Channels per cell.
    pub fn channels(&self) -> usize {
        self.matrix.cols()
    }

    /// Image `i`'s file.
    pub fn path(&self, i: usize) -> &Path {
        &self.paths[i]
    }

    /// Image `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The index of the image called `name`, if any.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Image `i`'s cell grid.
    pub fn grid(&self, i: usize) -> &CellGrid {
        &self.grids[i]
    }

    /// Every image's cell grid, in order.
    pub fn grids(&self) -> &[CellGrid] {
        &self.grids
    }

    /// Image `i`'s rows in the stacked matrix.
    pub fn rows(&self, i: usize) -> Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }

    /// The stacked matrix (all images' cells × channels).
    pub fn matrix(&self) -> &Csr {
        &self.matrix
    }

    /// Image `i`'s activations as a dense matrix (cells × channels).
    pub fn dense(&self, i: usize) -> Matrix {
        let r = self.rows(i);
        self.matrix.rows_dense(r.start, r.end)
    }

    /// The images left out, in the order met.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Bytes the stack holds on the heap (about; the matrix dominates).
    pub fn heap_bytes(&self) -> usize {
        self.matrix.heap_bytes()
            + self.offsets.capacity() * std::mem::size_of::<usize>()
            + self.grids.capacity() * std::mem::size_of::<CellGrid>()
    }
}

/// File stems, with `#2`, `#3`, … appended to repeats so that every name is unique.
fn unique_stems(paths: &[PathBuf]) -> Vec<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    paths
        .iter()
        .map(|p| {
            let stem = p.file_stem().map_or_else(
                || p.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            );
            let n = seen.entry(stem.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                stem
            } else {
                format!("{stem}#{n}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acts(rows: usize, cols: usize, channels: usize, seed: u32) -> Activations {
        let data = (0..rows * cols * channels)
            .map(|i| {
                let x = (i as u32 ^ seed).wrapping_mul(2654435761) >> 24;
                if x.is_multiple_of(3) {
                    x as f32 / 64.0
                } else {
                    0.0
                }
            })
            .collect();
        Activations {
            grid: CellGrid {
                rows,
                cols,
                image_width: cols as u32 * 10,
                image_height: rows as u32 * 10,
            },
            data: Matrix::from_vec(rows * cols, channels, data).unwrap(),
        }
    }

    #[test]
    fn images_of_different_sizes_stack_and_come_back() {
        let mut s = FeatureStack::new(5).unwrap();
        let (a, b) = (acts(2, 3, 5, 1), acts(4, 2, 5, 2));
        s.push("a", Path::new("a.jpg"), &a).unwrap();
        s.push("b", Path::new("b.jpg"), &b).unwrap();
        assert_eq!((s.len(), s.rows(0), s.rows(1)), (2, 0..6, 6..14));
        assert_eq!(s.dense(0), a.data);
        assert_eq!(s.dense(1), b.data);
        assert_eq!(s.position("b"), Some(1));
        // Wrong channels, a grid that does not fit, a negative value: refused, stack unchanged.
        assert!(s.push("c", Path::new("c.jpg"), &acts(1, 1, 4, 0)).is_err());
        let mut bad = acts(2, 2, 5, 3);
        bad.grid.rows = 3;
        assert!(s.push("d", Path::new("d.jpg"), &bad).is_err());
        let mut neg = acts(1, 2, 5, 4);
        neg.data.set(1, 2, -1.0);
        let msg = s
            .push("e", Path::new("e.jpg"), &neg)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("e.jpg") && msg.contains("cell 1 channel 2"),
            "{msg}"
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s.matrix().rows(), 14);
    }

    #[test]
    fn stems_are_made_unique() {
        let p: Vec<PathBuf> = ["x/a.jpg", "y/a.png", "b.jpg", "z/a.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(unique_stems(&p), vec!["a", "a#2", "b", "a#3"]);
    }
}
