//! Per-image NMF factors as an index stores them: the K concept vectors (rows of `V`) in
//! f16, and the K heatmaps (columns of `U`, one value per feature-map cell) in u8 with one
//! scale per heatmap. The query path reads them to draw "why did this match" heatmaps and to
//! localize without running the network again.

use crate::heatmap::Heatmap;
use crate::{CellGrid, Error, Matrix, Result};
use half::f16;

/// Largest number of factors stored per image.
pub const MAX_FACTORS: usize = 1024;
/// Largest number of channels of a concept vector.
pub const MAX_CHANNELS: usize = 65_536;
/// Largest number of rows or columns of a stored heatmap.
pub const MAX_HEATMAP_SIDE: usize = 4096;

/// One image's NMF factors, quantized for storage. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFactors {
    k: usize,
    channels: usize,
    rows: usize,
    cols: usize,
    concepts: Vec<f16>,
    scales: Vec<f32>,
    heatmaps: Vec<u8>,
}

impl StoredFactors {
    /// Quantizes the factors of `A ≈ U·V` for one image: `v` is `K × C` (concept vectors),
    /// `u` is `cells × K` with `cells = rows × cols` in row-major cell order (see
    /// [`crate::CellGrid`]). Heatmap values below zero are stored as zero; each heatmap is
    /// scaled so that its maximum becomes 255.
    pub fn quantize(v: &Matrix, u: &Matrix, rows: usize, cols: usize) -> Result<StoredFactors> {
        let (k, channels) = v.shape();
        if u.cols() != k {
            return Err(Error::invalid(format!(
                "factors: U has {} columns but V has {k} rows",
                u.cols()
            )));
        }
        if u.rows() != rows * cols {
            return Err(Error::invalid(format!(
                "factors: U has {} rows but the grid has {rows} × {cols} cells",
                u.rows()
            )));
        }
        check_dims(k, channels, rows, cols)?;
        let mut concepts = Vec::with_capacity(k * channels);
        for &x in v.as_slice() {
            let h = f16::from_f32(x);
            if !x.is_finite() || !h.is_finite() {
                return Err(Error::invalid(format!(
                    "factors: concept value {x} is not finite or exceeds the f16 range (±65504)"
                )));
            }
            concepts.push(h);
        }
        let cells = rows * cols;
        let mut scales = Vec::with_capacity(k);
        let mut heatmaps = vec![0u8; k * cells];
        for j in 0..k {
            let mut max = 0f32;
            for c in 0..cells {
                let x = u.get(c, j);
                if !x.is_finite() {
                    return Err(Error::invalid(format!(
                        "factors: heatmap {j} has a non-finite value"
                    )));
                }
                max = max.max(x);
            }
            let scale = max / 255.0;
            scales.push(scale);
            if scale > 0.0 {
                for c in 0..cells {
                    let q = (u.get(c, j).max(0.0) / scale).round().min(255.0);
                    heatmaps[j * cells + c] = q as u8;
                }
            }
        }
        Ok(StoredFactors {
            k,
            channels,
            rows,
            cols,
            concepts,
            scales,
            heatmaps,
        })
    }

    /// Assembles stored factors from their stored form: `concepts` is `K × C` row-major,
    /// `scales` has K finite non-negative values, `heatmaps` is `K × rows × cols`.
    pub fn from_parts(
        channels: usize,
        rows: usize,
        cols: usize,
        concepts: Vec<f16>,
        scales: Vec<f32>,
        heatmaps: Vec<u8>,
    ) -> Result<StoredFactors> {
        let k = scales.len();
        check_dims(k, channels, rows, cols)?;
        if concepts.len() != k * channels {
            return Err(Error::invalid(format!(
                "factors: {} concept values for {k} × {channels}",
                concepts.len()
            )));
        }
        if heatmaps.len() != k * rows * cols {
            return Err(Error::invalid(format!(
                "factors: {} heatmap values for {k} × {rows} × {cols}",
                heatmaps.len()
            )));
        }
        if let Some(s) = scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return Err(Error::invalid(format!(
                "factors: heatmap scale {s} is not a finite non-negative number"
            )));
        }
        Ok(StoredFactors {
            k,
            channels,
            rows,
            cols,
            concepts,
            scales,
            heatmaps,
        })
    }

    /// Number of factors K.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Channels C of each concept vector.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Rows of each heatmap (feature-map height).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of each heatmap (feature-map width).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Concept vector `i` (a row of `V`) as f32, or `None` when `i >= K`.
    pub fn concept(&self, i: usize) -> Option<Vec<f32>> {
        let row = self
            .concepts
            .get(i * self.channels..(i + 1) * self.channels)?;
        Some(row.iter().map(|h| h.to_f32()).collect())
    }

    /// All concept vectors as a `K × C` matrix.
    pub fn concepts(&self) -> Matrix {
        let data = self.concepts.iter().map(|h| h.to_f32()).collect();
        // The length is K × C by construction.
        Matrix::from_vec(self.k, self.channels, data).unwrap_or_else(|_| Matrix::zeros(0, 0))
    }

    /// Heatmap `i` (a column of `U`), dequantized, `rows × cols` row-major; `None` when
    /// `i >= K`.
    pub fn heatmap(&self, i: usize) -> Option<Vec<f32>> {
        let cells = self.rows * self.cols;
        let q = self.heatmaps.get(i * cells..(i + 1) * cells)?;
        let s = *self.scales.get(i)?;
        Some(q.iter().map(|&v| f32::from(v) * s).collect())
    }

    /// The heatmaps' grid over an image of `image_width × image_height` pixels.
    pub fn grid(&self, image_width: u32, image_height: u32) -> CellGrid {
        CellGrid {
            rows: self.rows,
            cols: self.cols,
            image_width,
            image_height,
        }
    }

    /// Every heatmap (dequantized) as a [`Heatmap`] over [`StoredFactors::grid`].
    pub fn heatmaps_over(&self, image_width: u32, image_height: u32) -> Result<Vec<Heatmap>> {
        let grid = self.grid(image_width, image_height);
        (0..self.k)
            .filter_map(|i| self.heatmap(i))
            .map(|v| Heatmap::new(grid, v))
            .collect()
    }

    /// All heatmaps as the `cells × K` matrix `U` (dequantized).
    pub fn heatmaps(&self) -> Matrix {
        let cells = self.rows * self.cols;
        let mut m = Matrix::zeros(cells, self.k);
        for j in 0..self.k {
            for c in 0..cells {
                m.set(
                    c,
                    j,
                    f32::from(self.heatmaps[j * cells + c]) * self.scales[j],
                );
            }
        }
        m
    }

    /// The stored concept values, `K × C` row-major.
    pub fn concepts_f16(&self) -> &[f16] {
        &self.concepts
    }

    /// The stored heatmap scales (value = byte × scale), one per factor.
    pub fn heatmap_scales(&self) -> &[f32] {
        &self.scales
    }

    /// The stored heatmap bytes, `K × rows × cols`.
    pub fn heatmaps_u8(&self) -> &[u8] {
        &self.heatmaps
    }

    /// Length of the stored blob (see the format specification, section FDAT).
    pub(crate) fn blob_len(k: usize, channels: usize, rows: usize, cols: usize) -> usize {
        ((2 * k * channels).next_multiple_of(4) + 4 * k + k * rows * cols).next_multiple_of(8)
    }

    /// Appends the stored blob to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        for h in &self.concepts {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out.resize(start + (2 * self.k * self.channels).next_multiple_of(4), 0);
        for s in &self.scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&self.heatmaps);
        out.resize(
            start + Self::blob_len(self.k, self.channels, self.rows, self.cols),
            0,
        );
    }

    /// Decodes a stored blob of exactly [`StoredFactors::blob_len`] bytes.
    pub(crate) fn decode(
        blob: &[u8],
        k: usize,
        channels: usize,
        rows: usize,
        cols: usize,
    ) -> std::result::Result<StoredFactors, String> {
        check_dims(k, channels, rows, cols).map_err(|e| e.to_string())?;
        if blob.len() != Self::blob_len(k, channels, rows, cols) {
            return Err(format!(
                "factor blob is {} bytes, expected {}",
                blob.len(),
                Self::blob_len(k, channels, rows, cols)
            ));
        }
        let nc = 2 * k * channels;
        let concepts: Vec<f16> = blob[..nc]
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        let s0 = nc.next_multiple_of(4);
        let scales: Vec<f32> = blob[s0..s0 + 4 * k]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let h0 = s0 + 4 * k;
        let heatmaps = blob[h0..h0 + k * rows * cols].to_vec();
        if blob[h0 + k * rows * cols..].iter().any(|&b| b != 0)
            || blob[nc..s0].iter().any(|&b| b != 0)
        {
            return Err("padding in factor blob is not zero".into());
        }
        StoredFactors::from_parts(channels, rows, cols, concepts, scales, heatmaps)
            .map_err(|e| e.to_string())
    }
}

fn check_dims(k: usize, channels: usize, rows: usize, cols: usize) -> Result<()> {
    if k == 0 || k > MAX_FACTORS {
        return Err(Error::invalid(format!(
            "factors: K = {k} is outside 1..={MAX_FACTORS}"
        )));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(Error::invalid(format!(
            "factors: {channels} channels is outside 1..={MAX_CHANNELS}"
        )));
    }
    if rows == 0 || cols == 0 || rows > MAX_HEATMAP_SIDE || cols > MAX_HEATMAP_SIDE {
        return Err(Error::invalid(format!(
            "factors: heatmap {rows} × {cols} is outside 1..={MAX_HEATMAP_SIDE} per side"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_round_trip() {
        let v = Matrix::from_vec(2, 3, vec![0.5, 1.0, 0.0, 2.0, 0.25, 3.0]).unwrap();
        let u = Matrix::from_vec(4, 2, vec![0.0, 1.0, 1.0, 0.5, 2.0, 0.0, -1.0, 0.25]).unwrap();
        let f = StoredFactors::quantize(&v, &u, 2, 2).unwrap();
        assert_eq!(f.concept(1).unwrap(), vec![2.0, 0.25, 3.0]);
        let h0 = f.heatmap(0).unwrap();
        assert!((h0[2] - 2.0).abs() < 1e-6 && h0[3] == 0.0 && (h0[1] - 1.0).abs() < 0.01);
        let mut blob = Vec::new();
        f.encode(&mut blob);
        assert_eq!(blob.len(), StoredFactors::blob_len(2, 3, 2, 2));
        let g = StoredFactors::decode(&blob, 2, 3, 2, 2).unwrap();
        assert_eq!(f, g);
        assert!(StoredFactors::decode(&blob[1..], 2, 3, 2, 2).is_err());
        let big = Matrix::from_vec(2, 3, vec![1e6; 6]).unwrap();
        assert!(StoredFactors::quantize(&big, &u, 2, 2).is_err());
    }
}
