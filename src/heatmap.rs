//! Heatmaps: one value per cell of a feature map, with the [`CellGrid`] that lays the cells
//! over the image's pixels.
//!
//! An NMF factor's column of `U` is a heatmap ("where" the concept is); so is the average of a
//! region's factors that localization thresholds, and what a report paints over a photograph.
//! A [`Heatmap`] always carries its grid, so boxes move between pixels and cells in one place,
//! and holds exactly one finite value per cell (checked when it is made). Values are normally
//! non-negative (NMF heatmaps are); negative values count as zero wherever mass or strength
//! is measured.
//!
//! What is done with heatmaps is written here once:
//! - scaling to a maximum of 1 ([`Heatmap::unit_max`]) and weighted averages of such scaled
//!   maps ([`Heatmap::average`]);
//! - the share of the mass on cells whose centres lie inside a box ([`Heatmap::mass_inside`]),
//!   and the thesis' factor filter built on it ([`filter_factors`], one threshold
//!   [`DEFAULT_MASS_THRESHOLD`], one edge rule);
//! - binarization ([`Binarize`]: the top fraction of cells, a fraction of the maximum, Otsu's
//!   threshold) and the box around the largest 4-connected group of kept cells
//!   ([`Heatmap::component_box`], or [`Heatmap::region_box`] on a grid refined
//!   [`UPSAMPLE`] times so the box is not limited to whole cells);
//! - bilinear interpolation between cell centres: to a finer grid ([`Heatmap::refine`]), to a
//!   picture of any size ([`Heatmap::upsample`]) or at one point ([`Heatmap::sample`]). Beyond
//!   the outermost centres the edge values hold, so a pixel whose centre is a cell centre gets
//!   exactly that cell's value.
//!
//! ```
//! use deepfactor::heatmap::{Binarize, Heatmap};
//! use deepfactor::{BBox, CellGrid};
//! # fn main() -> deepfactor::Result<()> {
//! let grid = CellGrid { rows: 2, cols: 4, image_width: 400, image_height: 200 };
//! let map = Heatmap::new(grid, vec![0.0, 2.0, 4.0, 0.0, 0.0, 2.0, 4.0, 0.0])?.unit_max();
//! assert_eq!(map.max(), 1.0);
//! // A third of the mass lies on the cells whose centres are in the left half.
//! let left = BBox::new(0.0, 0.0, 200.0, 200.0)?;
//! assert!((map.mass_inside(&left) - 1.0 / 3.0).abs() < 1e-6);
//! // The cells at or above half the maximum form one group: columns 1–2.
//! let b = map.component_box(Binarize::RelativeToMax(0.5)).unwrap();
//! assert_eq!((b.x1, b.x2), (100.0, 300.0));
//! # Ok(()) }
//! ```

use crate::{BBox, CellGrid, Error, Matrix, Result};
use serde::{Deserialize, Serialize};

/// Share of a factor's heatmap mass that must lie inside a box for the factor to be kept
/// (thesis: 75%), for region descriptors and localization alike.
pub const DEFAULT_MASS_THRESHOLD: f32 = 0.75;
/// Sub-cells per cell side when a heatmap is refined before its box is taken
/// ([`Heatmap::region_box`]).
pub const UPSAMPLE: usize = 4;

/// One value per cell of a [`CellGrid`], row-major. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawHeatmap")]
pub struct Heatmap {
    grid: CellGrid,
    values: Vec<f32>,
}

/// The serialised form, checked on the way in.
#[derive(Deserialize)]
struct RawHeatmap {
    grid: CellGrid,
    values: Vec<f32>,
}

impl TryFrom<RawHeatmap> for Heatmap {
    type Error = Error;
    fn try_from(r: RawHeatmap) -> Result<Self> {
        Heatmap::new(r.grid, r.values)
    }
}

impl Heatmap {
    /// A heatmap of `grid`; refuses a grid without cells, a number of values other than the
    /// grid's cells, and a non-finite value (naming its row and column).
    pub fn new(grid: CellGrid, values: Vec<f32>) -> Result<Self> {
        if grid.is_empty() {
            return Err(Error::invalid(format!(
                "heatmap grid {}×{} has no cells",
                grid.rows, grid.cols
            )));
        }
        if values.len() != grid.len() {
            return Err(Error::invalid(format!(
                "heatmap has {} values but its grid is {}×{} = {} cells",
                values.len(),
                grid.rows,
                grid.cols,
                grid.len()
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "heatmap value {i} (row {}, column {}) is {}",
                i / grid.cols,
                i % grid.cols,
                values[i]
            )));
        }
        Ok(Heatmap { grid, values })
    }

    /// The all-zero heatmap of `grid` (which must have cells).
    pub fn zeros(grid: CellGrid) -> Result<Self> {
        Heatmap::new(grid, vec![0.0; grid.len()])
    }

    /// Column `k` of `u` (cells × K, cells row-major over `grid`): factor `k`'s heatmap.
    pub fn from_column(u: &Matrix, k: usize, grid: CellGrid) -> Result<Self> {
        if k >= u.cols() {
            return Err(Error::invalid(format!(
                "factor {k} of a factorization with {} factors",
                u.cols()
            )));
        }
        Heatmap::new(grid, (0..u.rows()).map(|r| u.get(r, k)).collect())
    }

    /// Every column of `u` as a heatmap over `grid`, in order.
    pub fn columns(u: &Matrix, grid: CellGrid) -> Result<Vec<Heatmap>> {
        (0..u.cols())
            .map(|k| Heatmap::from_column(u, k, grid))
            .collect()
    }

    /// The grid.
    pub fn grid(&self) -> &CellGrid {
        &self.grid
    }

    /// The values, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The values, row-major, by value.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// The largest value, or 0 when no value is positive.
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0f32, f32::max)
    }

    /// Whether no value is positive (such a heatmap has no mass anywhere).
    pub fn is_zero(&self) -> bool {
        !self.values.iter().any(|&v| v > 0.0)
    }

    /// The heatmap divided by its maximum, so that its maximum is 1 (one without a positive
    /// value is returned unchanged).
    pub fn unit_max(mut self) -> Self {
        let m = self.max();
        if m > 0.0 {
            self.values.iter_mut().for_each(|x| *x /= m);
        }
        self
    }

    /// Strengths in `[0, 1]`: negative values become 0 and the rest are divided by the
    /// maximum (all zeros when no value is positive). What a report paints.
    pub fn strengths(&self) -> Heatmap {
        let m = self.max();
        let values = if m > 0.0 {
            self.values
                .iter()
                .map(|v| (v.max(0.0) / m).min(1.0))
                .collect()
        } else {
            vec![0.0; self.values.len()]
        };
        Heatmap {
            grid: self.grid,
            values,
        }
    }

    /// The weighted average of `maps` (all over one grid), each first divided by its own
    /// maximum (maps without a positive value add nothing), then scaled to a maximum of 1:
    /// a region's heatmap from the heatmaps of its factors. Zero maps give the zero heatmap.
    pub fn average(grid: CellGrid, maps: &[&Heatmap], weights: &[f32]) -> Result<Heatmap> {
        if maps.len() != weights.len() {
            return Err(Error::invalid(format!(
                "{} heatmaps with {} weights",
                maps.len(),
                weights.len()
            )));
        }
        if let Some(h) = maps.iter().find(|h| h.grid != grid) {
            return Err(Error::invalid(format!(
                "averaging a heatmap of a {}×{} grid into one of {}×{}",
                h.grid.rows, h.grid.cols, grid.rows, grid.cols
            )));
        }
        let mut out = Heatmap::zeros(grid)?;
        for (h, &w) in maps.iter().zip(weights) {
            let m = h.max();
            if m > 0.0 {
                for (o, v) in out.values.iter_mut().zip(&h.values) {
                    *o += w * v / m;
                }
            }
        }
        Ok(out.unit_max())
    }

    /// The share of the heatmap's mass (negative values count as zero) on cells whose
    /// centres lie inside `bbox`; zero for a heatmap without mass.
    pub fn mass_inside(&self, bbox: &BBox) -> f32 {
        let mut inside = 0f64;
        let mut total = 0f64;
        for (v, ins) in self.values.iter().zip(self.grid.centres_inside(bbox)) {
            let v = f64::from(v.max(0.0));
            total += v;
            if ins {
                inside += v;
            }
        }
        if total > 0.0 {
            (inside / total) as f32
        } else {
            0.0
        }
    }

    /// The level at or above which `rule` keeps a cell; `None` when no value is positive
    /// (nothing is kept then).
    pub fn level(&self, rule: Binarize) -> Option<f32> {
        let max = self.max();
        if max <= 0.0 {
            return None;
        }
        Some(match rule {
            Binarize::RelativeToMax(f) => f * max,
            Binarize::Otsu => otsu_level(&self.values, max),
            // Resolved per query by the localizer; on its own, half the maximum.
            Binarize::Calibrated => 0.5 * max,
            Binarize::TopFraction(f) => {
                let n = self.values.len();
                let mut sorted: Vec<f32> = self.values.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let keep = ((f * n as f32).ceil() as usize).clamp(1, n);
                sorted[keep - 1]
            }
        })
    }

    /// For each cell, whether `rule` keeps it: positive and at least [`Heatmap::level`].
    pub fn binarize(&self, rule: Binarize) -> Vec<bool> {
        match self.level(rule) {
            Some(t) => self.values.iter().map(|&v| v > 0.0 && v >= t).collect(),
            None => vec![false; self.values.len()],
        }
    }

    /// The box, in the image's pixels, around the largest 4-connected group of cells kept by
    /// `rule` (ties go to the group with more mass, then to the first found in row-major
    /// order); `None` when no cell is kept.
    pub fn component_box(&self, rule: Binarize) -> Option<BBox> {
        let grid = &self.grid;
        let n = grid.len();
        let on = self.binarize(rule);
        let mut label = vec![usize::MAX; n];
        let mut best: Option<(usize, f32, usize)> = None; // (size, mass, label)
        let mut stack = Vec::new();
        for start in 0..n {
            if !on[start] || label[start] != usize::MAX {
                continue;
            }
            let id = start;
            label[start] = id;
            stack.push(start);
            let (mut size, mut mass) = (0usize, 0f32);
            while let Some(c) = stack.pop() {
                size += 1;
                mass += self.values[c];
                let (r, col) = (c / grid.cols, c % grid.cols);
                let mut visit = |nb: usize| {
                    if on[nb] && label[nb] == usize::MAX {
                        label[nb] = id;
                        stack.push(nb);
                    }
                };
                if r > 0 {
                    visit(c - grid.cols);
                }
                if r + 1 < grid.rows {
                    visit(c + grid.cols);
                }
                if col > 0 {
                    visit(c - 1);
                }
                if col + 1 < grid.cols {
                    visit(c + 1);
                }
            }
            if best.is_none_or(|(s, m, _)| size > s || (size == s && mass > m)) {
                best = Some((size, mass, id));
            }
        }
        let (_, _, id) = best?;
        let (mut r0, mut c0, mut r1, mut c1) = (usize::MAX, usize::MAX, 0, 0);
        for (c, _) in label.iter().enumerate().filter(|(_, &l)| l == id) {
            let (r, col) = (c / grid.cols, c % grid.cols);
            r0 = r0.min(r);
            c0 = c0.min(col);
            r1 = r1.max(r + 1);
            c1 = c1.max(col + 1);
        }
        Some(grid.cells_rect(r0, c0, r1, c1))
    }

    /// [`Heatmap::component_box`] of the heatmap refined [`UPSAMPLE`] times per side, so that
    /// the box is not limited to whole cells; `None` when no cell is kept.
    pub fn region_box(&self, rule: Binarize) -> Option<BBox> {
        self.refine(UPSAMPLE).component_box(rule)
    }

    /// The heatmap on a grid `factor` times finer per side (same image), interpolated
    /// bilinearly between cell centres. A factor of 0 is taken as 1.
    pub fn refine(&self, factor: usize) -> Heatmap {
        let f = factor.max(1);
        let (rows, cols) = (self.grid.rows * f, self.grid.cols * f);
        // Fine cell i's centre in coarse-cell units, where coarse cell c's centre is at c.
        let axis = |n: usize| -> Vec<(usize, usize, f32)> {
            (0..n * f)
                .map(|i| axis_weights((i as f32 + 0.5) / f as f32 - 0.5, n))
                .collect()
        };
        let values = self.interpolate(&axis(self.grid.rows), &axis(self.grid.cols));
        Heatmap {
            grid: CellGrid {
                rows,
                cols,
                ..self.grid
            },
            values,
        }
    }

    /// A `width × height` picture of the heatmap over the whole image (any size: the
    /// original, or a thumbnail of it), row-major. Pixel `(px, py)` samples the image point
    /// `((px + ½)·W/width, (py + ½)·H/height)`, with `W × H` the grid's image size.
    pub fn upsample(&self, width: u32, height: u32) -> Vec<f32> {
        let axis = |n: u32, cells: usize| -> Vec<(usize, usize, f32)> {
            (0..n)
                .map(|p| axis_weights((p as f32 + 0.5) * cells as f32 / n as f32 - 0.5, cells))
                .collect()
        };
        self.interpolate(&axis(height, self.grid.rows), &axis(width, self.grid.cols))
    }

    /// The value at image point `(x, y)` (pixels of the grid's image, continuous
    /// coordinates): bilinear between the four nearest cell centres, clamped at the edges.
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let (cw, ch) = self.grid.cell_size();
        let xs = [axis_weights(x / cw - 0.5, self.grid.cols)];
        let ys = [axis_weights(y / ch - 0.5, self.grid.rows)];
        self.interpolate(&ys, &xs)[0]
    }

    /// Bilinear interpolation at the given row and column positions (each the two cells to
    /// blend and the weight of the second), row-major.
    fn interpolate(&self, ys: &[(usize, usize, f32)], xs: &[(usize, usize, f32)]) -> Vec<f32> {
        let cols = self.grid.cols;
        let h = &self.values;
        let mut out = Vec::with_capacity(ys.len() * xs.len());
        for &(r0, r1, wr) in ys {
            for &(c0, c1, wc) in xs {
                let top = h[r0 * cols + c0] * (1.0 - wc) + h[r0 * cols + c1] * wc;
                let bot = h[r1 * cols + c0] * (1.0 - wc) + h[r1 * cols + c1] * wc;
                out.push(top * (1.0 - wr) + bot * wr);
            }
        }
        out
    }
}

/// For a position `u` in cell units along an axis of `n` cells (cell `c`'s centre at `c`):
/// the two cells to blend and the weight of the second, clamped to the outermost centres.
fn axis_weights(u: f32, n: usize) -> (usize, usize, f32) {
    let last = n.saturating_sub(1) as f32;
    let u = if u.is_nan() { 0.0 } else { u.clamp(0.0, last) };
    let i0 = u.floor() as usize;
    let i1 = (i0 + 1).min(n.saturating_sub(1));
    (i0, i1, u - i0 as f32)
}

/// How a heatmap becomes a set of cells (see [`Heatmap::binarize`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Binarize {
    /// Keep the given fraction of cells with the highest values (ties at the threshold kept).
    TopFraction(f32),
    /// Keep the cells whose value is at least this fraction of the maximum.
    RelativeToMax(f32),
    /// Otsu's threshold: the value that best separates the heatmap's values into two classes
    /// (maximum between-class variance); parameter-free and adaptive to the region's size.
    Otsu,
    /// Calibrated on the query: the fraction of the maximum that, applied to the query's own
    /// averaged heatmap, gives the box closest (IoU) to the query's box; the same fraction is
    /// then applied to every other image. Adapts to the region's size and to how peaked the
    /// region's heatmaps are, with no parameter. The localizer resolves it per query; applied
    /// to a heatmap on its own it keeps the cells at half the maximum or more.
    Calibrated,
}

impl Default for Binarize {
    /// [`Binarize::Calibrated`]. The thesis keeps a fixed top 30% of cells, which overshoots
    /// regions much smaller than a third of the image and undershoots ones that fill it; the
    /// calibrated level follows the region's size.
    fn default() -> Self {
        Binarize::Calibrated
    }
}

/// Otsu's threshold over values in `[0, max]`, computed on a 256-bin histogram.
fn otsu_level(values: &[f32], max: f32) -> f32 {
    const BINS: usize = 256;
    let mut hist = [0usize; BINS];
    for &v in values {
        let b = ((v.max(0.0) / max) * (BINS - 1) as f32).round() as usize;
        hist[b.min(BINS - 1)] += 1;
    }
    let total = values.len() as f64;
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0) = (0f64, 0f64);
    let (mut best, mut best_var) = (0usize, -1f64);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c as f64;
        sum0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let var = w0 * w1 * (m0 - m1) * (m0 - m1);
        if var > best_var {
            best_var = var;
            best = t;
        }
    }
    // Cells strictly above the class boundary form the foreground.
    (best as f32 + 0.5) / (BINS - 1) as f32 * max
}

/// The outcome of [`filter_factors`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorFilter {
    /// Indices of the factors kept, ascending.
    pub kept: Vec<usize>,
    /// For every factor, the share of its heatmap's mass on cells whose centres lie inside
    /// the box ([`Heatmap::mass_inside`]).
    pub mass_inside: Vec<f32>,
    /// `true` when no factor passed the threshold, so that the fallback rule chose.
    pub fallback: bool,
}

/// The thesis' factor filter: keeps the factors whose heatmap puts more than `threshold` of
/// its mass on cells whose centres lie inside `bbox` (normally [`DEFAULT_MASS_THRESHOLD`]).
///
/// **Edge rule** when none does (`fallback` set): the single factor with the largest share is
/// kept, among the factors whose heatmap has mass (a factor without a positive value stands
/// for nothing in the image and is never kept); ties go to the first such factor, i.e. the
/// more energetic one, since factorizations order their factors by decreasing energy. When
/// no heatmap has mass, nothing is kept.
pub fn filter_factors(heatmaps: &[Heatmap], bbox: &BBox, threshold: f32) -> FactorFilter {
    let mass_inside: Vec<f32> = heatmaps.iter().map(|h| h.mass_inside(bbox)).collect();
    let kept: Vec<usize> = (0..heatmaps.len())
        .filter(|&k| mass_inside[k] > threshold)
        .collect();
    if !kept.is_empty() {
        return FactorFilter {
            kept,
            mass_inside,
            fallback: false,
        };
    }
    let mut best: Option<usize> = None;
    for (k, h) in heatmaps.iter().enumerate() {
        if !h.is_zero() && best.is_none_or(|b| mass_inside[k] > mass_inside[b]) {
            best = Some(k);
        }
    }
    FactorFilter {
        kept: best.into_iter().collect(),
        mass_inside,
        fallback: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: usize, cols: usize, w: u32, h: u32) -> CellGrid {
        CellGrid {
            rows,
            cols,
            image_width: w,
            image_height: h,
        }
    }

    /// A grid of 10-pixel cells.
    fn cells(rows: usize, cols: usize) -> CellGrid {
        grid(rows, cols, cols as u32 * 10, rows as u32 * 10)
    }

    fn map(g: CellGrid, v: &[f32]) -> Heatmap {
        Heatmap::new(g, v.to_vec()).unwrap()
    }

    #[test]
    fn mass_inside_a_box() {
        let g = grid(2, 4, 400, 100);
        let b = BBox::new(0.0, 0.0, 200.0, 100.0).unwrap();
        let heat = map(g, &[1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert!((heat.mass_inside(&b) - 0.5).abs() < 1e-6);
        assert_eq!(map(g, &[0.0; 8]).mass_inside(&b), 0.0);
        // Negative values count as zero.
        let heat = map(g, &[1.0, 0.0, -5.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert!((heat.mass_inside(&b) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn unit_max_strengths_and_average() {
        let g = cells(1, 4);
        let h = map(g, &[-1.0, 0.0, 2.0, 4.0]);
        assert_eq!(h.clone().unit_max().values(), &[-0.25, 0.0, 0.5, 1.0]);
        assert_eq!(h.strengths().values(), &[0.0, 0.0, 0.5, 1.0]);
        assert_eq!(
            map(g, &[0.0, -2.0, 0.0, 0.0]).strengths().values(),
            &[0.0; 4]
        );
        assert_eq!(map(g, &[0.0; 4]).unit_max().values(), &[0.0; 4]);
        // Each map counts after scaling to its own maximum.
        let a = map(g, &[2.0, 0.0, 0.0, 0.0]);
        let b = map(g, &[0.0, 10.0, 10.0, 0.0]);
        let avg = Heatmap::average(g, &[&a, &b], &[1.0, 0.5]).unwrap();
        assert_eq!(avg.values(), &[1.0, 0.5, 0.5, 0.0]);
        let zero = Heatmap::average(g, &[], &[]).unwrap();
        assert!(zero.is_zero());
        assert!(Heatmap::average(g, &[&a], &[]).is_err());
        assert!(Heatmap::average(cells(2, 2), &[&a], &[1.0]).is_err());
    }

    #[test]
    fn bad_heatmaps_are_refused() {
        let g = grid(2, 2, 10, 10);
        assert!(Heatmap::new(g, vec![1.0; 3]).is_err());
        let err = Heatmap::new(g, vec![1.0, f32::NAN, 0.0, 0.0]).unwrap_err();
        assert!(err.to_string().contains("row 0, column 1"), "{err}");
        assert!(Heatmap::new(grid(0, 3, 10, 10), Vec::new()).is_err());
        let bad: std::result::Result<Heatmap, _> = serde_json::from_str(
            r#"{"grid":{"rows":1,"cols":2,"image_width":2,"image_height":1},"values":[1.0]}"#,
        );
        assert!(bad.is_err());
        let u = Matrix::zeros(4, 2);
        assert!(Heatmap::from_column(&u, 2, g).is_err());
        assert_eq!(Heatmap::columns(&u, g).unwrap().len(), 2);
    }

    #[test]
    fn box_around_largest_component() {
        let g = cells(4, 5);
        #[rustfmt::skip]
        let h = map(g, &[
            0.0, 0.0, 0.0, 0.0, 0.9,
            0.0, 1.0, 0.8, 0.0, 0.0,
            0.0, 0.7, 0.9, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ]);
        // Top 30% of 20 cells = 6 cells: all five non-zero ones; the 2×2 group wins.
        let b = h.component_box(Binarize::TopFraction(0.3)).unwrap();
        assert_eq!(b, BBox::new(10.0, 10.0, 30.0, 30.0).unwrap());
        // Relative to max 0.85: cells 1.0, 0.9 (top right), 0.9 — no two adjacent; the largest
        // mass single cell wins (1.0 at row 1, col 1).
        let b = h.component_box(Binarize::RelativeToMax(0.85)).unwrap();
        assert_eq!(b, BBox::new(10.0, 10.0, 20.0, 20.0).unwrap());
        assert_eq!(map(g, &[0.0; 20]).region_box(Binarize::default()), None);
        // Refined, the box of the 2×2 group lies inside the coarse one and around its
        // strongest cells.
        let b = h.region_box(Binarize::RelativeToMax(0.6)).unwrap();
        assert!(
            b.x1 >= 10.0 && b.y1 >= 10.0 && b.x2 <= 30.0 && b.y2 <= 30.0,
            "{b:?}"
        );
        assert!(b.contains(15.0, 15.0) && b.contains(25.0, 25.0), "{b:?}");
        // Otsu separates the five strong cells from the zeros.
        assert_eq!(
            h.binarize(Binarize::Otsu).iter().filter(|&&on| on).count(),
            5
        );
    }

    #[test]
    fn refining_is_exact_at_cell_centres() {
        let g = cells(2, 3);
        let h = map(g, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let f = 3; // odd factor: every coarse centre is a fine centre
        let up = h.refine(f);
        assert_eq!(up.grid().rows, 6);
        assert_eq!(up.grid().image_width, g.image_width);
        for r in 0..2 {
            for c in 0..3 {
                let v = up.values()[(r * f + 1) * 3 * f + c * f + 1];
                assert!((v - h.values()[r * 3 + c]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn upsampling_is_exact_at_cell_centres() {
        // 3 × 2 cells of 5 × 5 pixels: cell (r, c) has its centre at pixel (5c + 2, 5r + 2).
        let g = grid(2, 3, 15, 10);
        let v = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
        let h = map(g, &v);
        let up = h.upsample(15, 10);
        for r in 0..2 {
            for c in 0..3 {
                let (px, py) = (5 * c + 2, 5 * r + 2);
                assert_eq!(up[py * 15 + px], v[r * 3 + c], "cell ({r}, {c})");
                let (x, y) = g.cell_center(r, c);
                assert_eq!(h.sample(x, y), v[r * 3 + c]);
            }
        }
        // Beyond the outermost centres the edge value holds.
        assert_eq!(up[0], 1.0);
        assert_eq!(up[9 * 15 + 14], 32.0);
        // Halfway between two centres, the mean.
        assert_eq!(h.sample(5.0, 2.5), 1.5);
        assert_eq!(h.sample(2.5, 5.0), 4.5);
        assert_eq!(h.sample(5.0, 5.0), (1.0 + 2.0 + 8.0 + 16.0) / 4.0);
    }

    #[test]
    fn upsampling_a_thumbnail_and_constant_maps() {
        // Any output size covers the whole grid; a constant map stays constant.
        let g = grid(3, 4, 640, 480);
        let up = map(g, &[0.25; 12]).upsample(33, 17);
        assert_eq!(up.len(), 33 * 17);
        assert!(up.iter().all(|v| (v - 0.25).abs() < 1e-7));
        // A linear ramp along x is reproduced between the outer centres.
        let ramp: Vec<f32> = (0..12).map(|i| (i % 4) as f32).collect();
        let ramp = map(g, &ramp);
        let up = ramp.upsample(640, 1);
        // Cell centres at x = 80, 240, 400, 560: pixel 239 has centre 239.5.
        assert!(
            (up[239] - (239.5 - 80.0) / 160.0).abs() < 1e-5,
            "{}",
            up[239]
        );
        assert!(up.windows(2).all(|w| w[1] >= w[0]));
        assert!(ramp.upsample(0, 0).is_empty());
    }

    fn maps(g: CellGrid, cols: &[&[f32]]) -> Vec<Heatmap> {
        cols.iter().map(|v| map(g, v)).collect()
    }

    #[test]
    fn filter_keeps_exactly_the_factors_inside() {
        // 2 × 4 grid of 10-pixel cells. Box = left half (x < 20).
        let g = cells(2, 4);
        let bbox = BBox::new(0.0, 0.0, 20.0, 20.0).unwrap();
        // Factor 0: all mass on the left (100%). Factor 1: 80% left. Factor 2: exactly 75%
        // left (not more than the threshold). Factor 3: all right.
        #[rustfmt::skip]
        let hs = maps(g, &[
            &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
            &[4.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            &[3.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 0.0],
        ]);
        let f = filter_factors(&hs, &bbox, 0.75);
        assert_eq!(f.kept, vec![0, 1]);
        assert!(!f.fallback);
        assert_eq!(f.mass_inside, vec![1.0, 0.8, 0.75, 0.0]);
        // A box on the right half keeps factor 3 alone.
        let right = BBox::new(20.0, 0.0, 40.0, 20.0).unwrap();
        assert_eq!(filter_factors(&hs, &right, 0.75).kept, vec![3]);
        // A box over nothing but cell (1, 1) (where only factor 0 has mass, 25% of it): no
        // factor passes, and the fallback is the factor with the largest share.
        let cell = BBox::new(10.0, 10.0, 20.0, 20.0).unwrap();
        let f = filter_factors(&hs, &cell, 0.75);
        assert_eq!(f.kept, vec![0]);
        assert!(f.fallback);
    }

    #[test]
    fn factor_selection_and_fallback() {
        let g = cells(2, 2);
        let b = BBox::new(0.0, 0.0, 10.0, 20.0).unwrap(); // left column
        let hs = maps(
            g,
            &[&[1.0, 0.0, 1.0, 0.0], &[0.5, 0.5, 0.5, 0.5], &[0.0; 4]],
        );
        let f = filter_factors(&hs, &b, 0.75);
        assert_eq!((f.kept, f.fallback), (vec![0], false));
        assert_eq!(f.mass_inside, vec![1.0, 0.5, 0.0]);
        let f = filter_factors(&hs[1..], &b, 0.75);
        assert_eq!((f.kept, f.fallback), (vec![0], true));
        let f = filter_factors(&hs[2..], &b, 0.75);
        assert_eq!((f.kept, f.fallback), (vec![], true));
    }

    #[test]
    fn filter_edge_rule_first_factor_with_mass() {
        // 2 × 2 grid; the box (left column) holds no mass of factors 1 and 2.
        let g = cells(2, 2);
        let left = BBox::new(0.0, 0.0, 10.0, 20.0).unwrap();
        let hs = maps(
            g,
            &[
                &[0.0; 4],
                &[0.0, 1.0, 0.0, 1.0],
                &[0.0, 2.0, 0.0, 0.0],
                &[1.0, 0.0, 1.0, 0.0],
            ],
        );
        // Factor 3 passes: no fallback.
        let f = filter_factors(&hs, &left, 0.75);
        assert_eq!((f.kept, f.fallback), (vec![3], false));
        // Without it, factors 0, 1 and 2 all have 0% inside. The all-zero factor 0 is never
        // kept (although it is first); of the tied factors with mass, the first (1) is.
        let f = filter_factors(&hs[..3], &left, 0.75);
        assert_eq!(f.mass_inside, vec![0.0, 0.0, 0.0]);
        assert_eq!((f.kept, f.fallback), (vec![1], true));
        // Only all-zero heatmaps: nothing is kept.
        let f = filter_factors(&hs[..1], &left, 0.75);
        assert_eq!((f.kept, f.fallback), (vec![], true));
        // Equal shares above zero: the first.
        let hs = maps(g, &[&[1.0, 1.0, 0.0, 0.0], &[0.0, 0.0, 1.0, 1.0]]);
        let f = filter_factors(&hs, &left, 0.75);
        assert_eq!(f.mass_inside, vec![0.5, 0.5]);
        assert_eq!((f.kept, f.fallback), (vec![0], true));
    }
}
