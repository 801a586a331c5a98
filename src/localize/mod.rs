//! Localization: where in a retrieved image is the query's region?
//!
//! **Joint** (the thesis' §5.3.2, after Collins & Süsstrunk, "Deep Feature Factorization for
//! Content-Based Image Retrieval and Localization", ICIP 2019): the activations of the query
//! and of its retrieved images are factorized together, so that every factor is one concept with
//! a heatmap in every image. The factors whose query heatmap puts more than
//! [`DEFAULT_MASS_THRESHOLD`] of its mass inside the query box are the region's concepts; in
//! each retrieved image their heatmaps are averaged, the strongest cells kept
//! ([`Binarize`]: by default a level calibrated so that the query's own heatmap gives back the
//! query's box — in a joint factorization an absolute level, since all images share one scale;
//! the thesis' fixed top 30% and Otsu's threshold as options), and the
//! box around the largest connected group of kept cells is the predicted region.
//!
//! **Stored** (fast, no network): each retrieved image's own NMF factors, stored in the index,
//! stand in for a joint factorization. Every kept query concept is matched to the stored
//! concept of the retrieved image with the highest cosine similarity; the matched heatmaps,
//! weighted by that similarity, are averaged and binarized as above.

use crate::backbone::Activations;
use crate::nmf::{Init, Nmf};
use crate::{BBox, CellGrid, Error, Matrix, Result};
use serde::{Deserialize, Serialize};

/// Fraction of a factor's query heatmap that must lie inside the query box (thesis: 75%).
pub const DEFAULT_MASS_THRESHOLD: f32 = 0.75;
/// Rank of the joint factorization.
pub const DEFAULT_JOINT_K: usize = 8;
/// Fraction of the cells kept when binarizing an averaged heatmap (thesis: the top 30%).
pub const DEFAULT_TOP_FRACTION: f32 = 0.3;
/// Iterations of the joint factorization.
pub const DEFAULT_MAX_ITER: usize = 200;

/// How an averaged heatmap becomes a set of cells.
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
    /// region's heatmaps are, with no parameter.
    Calibrated,
}

/// Fractions of the maximum tried by [`Binarize::Calibrated`].
const CALIBRATION_STEPS: usize = 19;

/// Otsu's threshold over values in `[0, max]`, computed on a 256-bin histogram.
fn otsu_threshold(values: &[f32], max: f32) -> f32 {
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

impl Default for Binarize {
    /// [`Binarize::Calibrated`]. The thesis keeps a fixed top 30% of cells
    /// (`TopFraction(DEFAULT_TOP_FRACTION)`), which overshoots regions much smaller than a
    /// third of the image and undershoots ones that fill it; the calibrated level follows the
    /// region's size.
    fn default() -> Self {
        Binarize::Calibrated
    }
}

/// Settings of joint localization; `build()` validates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalizerBuilder {
    k: usize,
    mass_threshold: f32,
    binarize: Binarize,
    max_iter: usize,
}

impl Default for LocalizerBuilder {
    fn default() -> Self {
        LocalizerBuilder {
            k: DEFAULT_JOINT_K,
            mass_threshold: DEFAULT_MASS_THRESHOLD,
            binarize: Binarize::default(),
            max_iter: DEFAULT_MAX_ITER,
        }
    }
}

impl LocalizerBuilder {
    /// Rank of the joint factorization (default [`DEFAULT_JOINT_K`]).
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Mass a query heatmap must have inside the box (default [`DEFAULT_MASS_THRESHOLD`]).
    pub fn mass_threshold(mut self, t: f32) -> Self {
        self.mass_threshold = t;
        self
    }

    /// Binarization of averaged heatmaps (default: [`Binarize::Calibrated`]).
    pub fn binarize(mut self, b: Binarize) -> Self {
        self.binarize = b;
        self
    }

    /// The binarization rule set.
    pub fn binarize_rule(&self) -> Binarize {
        self.binarize
    }

    /// Iterations of the joint factorization (default [`DEFAULT_MAX_ITER`]).
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = n;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Localizer> {
        if self.k == 0 {
            return Err(Error::invalid("localization rank k must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.mass_threshold) {
            return Err(Error::invalid(format!(
                "mass threshold {} is outside 0..=1",
                self.mass_threshold
            )));
        }
        match self.binarize {
            Binarize::TopFraction(f) | Binarize::RelativeToMax(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(Error::invalid(format!(
                    "binarization fraction {f} is outside (0, 1]"
                )))
            }
            _ => {}
        }
        let nmf = Nmf::new(self.k)
            .max_iter(self.max_iter)
            .tol(0.0)
            .init(Init::Nndsvda)
            .build()?;
        Ok(Localizer { cfg: self, nmf })
    }
}

/// Joint-NMF localization, configured.
#[derive(Debug, Clone)]
pub struct Localizer {
    cfg: LocalizerBuilder,
    nmf: Nmf,
}

/// Where the region was found in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Located {
    /// Predicted box in the image's pixels; `None` when the averaged heatmap is all zero.
    pub bbox: Option<BBox>,
    /// The averaged heatmap of the kept factors, one value per cell (row-major over `grid`),
    /// scaled so its maximum is 1.
    pub heatmap: Vec<f32>,
    /// The cells' grid over the image.
    pub grid: CellGrid,
    /// The heatmaps behind the average, each scaled to a maximum of 1 and labelled with the
    /// query factor it stands for (joint: the kept factor; stored: the kept query factor it
    /// was matched to).
    pub factor_maps: Vec<(usize, Vec<f32>)>,
    /// Joint localization with a calibrated threshold: the peak of the region's heatmaps here
    /// relative to their peak in the query (1 for the query itself; a small fraction where
    /// the region is probably not there). `None` otherwise.
    #[serde(default)]
    pub strength: Option<f32>,
}

/// Result of a joint localization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointLocalization {
    /// Factors kept (their query heatmaps lie in the box), by index in the joint factorization.
    pub kept: Vec<usize>,
    /// Whether no factor passed the threshold and the one with the largest fraction inside the
    /// box was kept instead.
    pub fallback: bool,
    /// Fraction of each factor's query heatmap inside the box.
    pub mass_inside: Vec<f32>,
    /// The kept factors' heatmaps on the query, each scaled to a maximum of 1.
    pub query_heatmaps: Vec<Vec<f32>>,
    /// The query image's averaged heatmap and box.
    pub query: Located,
    /// One result per target image, in the order given.
    pub targets: Vec<Located>,
}

/// Scales `v` so its maximum is 1 (all-zero stays zero).
fn unit_max(v: &mut [f32]) {
    let m = v.iter().copied().fold(0.0f32, f32::max);
    if m > 0.0 {
        v.iter_mut().for_each(|x| *x /= m);
    }
}

/// A labelled heatmap scaled to a maximum of 1.
fn scaled((label, mut map): (usize, Vec<f32>)) -> (usize, Vec<f32>) {
    unit_max(&mut map);
    (label, map)
}

/// Column `k` of `u`.
fn column(u: &Matrix, k: usize) -> Vec<f32> {
    (0..u.rows()).map(|r| u.get(r, k)).collect()
}

/// Picks the factors whose heatmap has more than `threshold` of its mass inside `bbox`; if
/// none does, the one with the largest fraction (`fallback = true`). Factors whose heatmap is
/// all zero are never kept.
pub fn select_factors(
    heatmaps: &[Vec<f32>],
    grid: &CellGrid,
    bbox: &BBox,
    threshold: f32,
) -> (Vec<usize>, bool, Vec<f32>) {
    let mass: Vec<f32> = heatmaps.iter().map(|h| grid.mass_inside(h, bbox)).collect();
    let kept: Vec<usize> = (0..heatmaps.len())
        .filter(|&k| mass[k] > threshold)
        .collect();
    if !kept.is_empty() {
        return (kept, false, mass);
    }
    let best = (0..heatmaps.len())
        .filter(|&k| heatmaps[k].iter().any(|&v| v > 0.0))
        .max_by(|&a, &b| mass[a].total_cmp(&mass[b]));
    (best.into_iter().collect(), true, mass)
}

/// Averages heatmaps (each first scaled to a maximum of 1, weighted by `weights`) and scales
/// the result to a maximum of 1.
fn average(heatmaps: &[Vec<f32>], weights: &[f32], cells: usize) -> Vec<f32> {
    let mut out = vec![0f32; cells];
    for (h, &w) in heatmaps.iter().zip(weights) {
        let m = h.iter().copied().fold(0.0f32, f32::max);
        if m > 0.0 {
            for (o, v) in out.iter_mut().zip(h) {
                *o += w * v / m;
            }
        }
    }
    unit_max(&mut out);
    out
}

/// The average of the `kept` columns of `u` (heatmaps over `u.rows()` cells), each first
/// scaled to a maximum of 1, scaled to a maximum of 1: a region's heatmap from its factors.
pub fn kept_average(u: &Matrix, kept: &[usize]) -> Vec<f32> {
    let maps: Vec<Vec<f32>> = kept.iter().map(|&f| column(u, f)).collect();
    average(&maps, &vec![1.0; maps.len()], u.rows())
}

/// Sub-cells per cell side when a heatmap is upsampled before binarization.
pub const UPSAMPLE: usize = 4;

/// Bilinear upsampling of a cell heatmap by `f` per side, interpolating between cell centres
/// (values at the border are held constant beyond the outermost centres).
pub fn upsample(heatmap: &[f32], rows: usize, cols: usize, f: usize) -> Vec<f32> {
    let (fr, fc) = (rows * f, cols * f);
    let mut out = vec![0f32; fr * fc];
    let coord = |i: usize, n: usize| -> (usize, usize, f32) {
        // Centre of fine cell i in coarse-cell units, minus ½ to index coarse centres.
        let x = ((i as f32 + 0.5) / f as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let x0 = x.floor() as usize;
        let x1 = (x0 + 1).min(n - 1);
        (x0, x1, x - x0 as f32)
    };
    for r in 0..fr {
        let (r0, r1, wr) = coord(r, rows);
        for c in 0..fc {
            let (c0, c1, wc) = coord(c, cols);
            let top = heatmap[r0 * cols + c0] * (1.0 - wc) + heatmap[r0 * cols + c1] * wc;
            let bot = heatmap[r1 * cols + c0] * (1.0 - wc) + heatmap[r1 * cols + c1] * wc;
            out[r * fc + c] = top * (1.0 - wr) + bot * wr;
        }
    }
    out
}

/// The box, in the image's pixels, around the largest 4-connected group of cells kept by
/// `binarize`, after upsampling the heatmap [`UPSAMPLE`] times per side so that the box is not
/// limited to whole cells; `None` for an all-zero heatmap.
pub fn heatmap_box(heatmap: &[f32], grid: &CellGrid, binarize: Binarize) -> Option<BBox> {
    if heatmap.len() != grid.len() || grid.is_empty() {
        return None;
    }
    let fine = upsample(heatmap, grid.rows, grid.cols, UPSAMPLE);
    let fine_grid = CellGrid {
        rows: grid.rows * UPSAMPLE,
        cols: grid.cols * UPSAMPLE,
        ..*grid
    };
    component_box(&fine, &fine_grid, binarize)
}

/// The box around the largest 4-connected group of cells kept by `binarize` (no upsampling).
pub fn component_box(heatmap: &[f32], grid: &CellGrid, binarize: Binarize) -> Option<BBox> {
    let n = grid.len();
    if heatmap.len() != n || n == 0 {
        return None;
    }
    let max = heatmap.iter().copied().fold(0.0f32, f32::max);
    if max <= 0.0 {
        return None;
    }
    let threshold = match binarize {
        Binarize::RelativeToMax(f) => f * max,
        Binarize::Otsu => otsu_threshold(heatmap, max),
        // Resolved per query by `Localizer::resolve`; uncalibrated, half the maximum.
        Binarize::Calibrated => 0.5 * max,
        Binarize::TopFraction(f) => {
            let mut sorted: Vec<f32> = heatmap.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let keep = ((f * n as f32).ceil() as usize).clamp(1, n);
            sorted[keep - 1]
        }
    };
    let on: Vec<bool> = heatmap.iter().map(|&v| v > 0.0 && v >= threshold).collect();
    // Largest 4-connected component by flood fill; ties go to the one with more mass.
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
            mass += heatmap[c];
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

/// The fraction of the maximum (5%, 10%, …, 95%) whose box around the query's averaged
/// `heatmap` best matches the query's `bbox`; ties go to the smaller fraction.
pub fn calibrate(heatmap: &[f32], grid: &CellGrid, bbox: &BBox) -> Option<f32> {
    let mut best: Option<(f32, f32)> = None;
    for i in 1..=CALIBRATION_STEPS {
        let f = i as f32 / (CALIBRATION_STEPS + 1) as f32;
        let Some(b) = heatmap_box(heatmap, grid, Binarize::RelativeToMax(f)) else {
            continue;
        };
        let iou = b.iou(bbox);
        if best.is_none_or(|(_, s)| iou > s) {
            best = Some((f, iou));
        }
    }
    best.map(|(f, _)| f)
}

/// Scales each image's activations to unit root-mean-square, so that no image dominates a
/// joint factorization by sheer activation magnitude.
fn balanced(a: &Matrix) -> Matrix {
    let n = a.as_slice().len().max(1) as f64;
    let rms = (a
        .as_slice()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        / n)
        .sqrt();
    let mut out = a.clone();
    if rms > 0.0 {
        out.as_mut_slice()
            .iter_mut()
            .for_each(|v| *v = (*v as f64 / rms) as f32);
    }
    out
}

impl Localizer {
    /// Default settings.
    pub fn builder() -> LocalizerBuilder {
        LocalizerBuilder::default()
    }

    /// The settings.
    pub fn settings(&self) -> &LocalizerBuilder {
        &self.cfg
    }

    /// The binarization to apply to the other images of a query whose own averaged heatmap
    /// is `query_heatmap` and whose region is `bbox`: the configured rule, with
    /// [`Binarize::Calibrated`] resolved to a fraction of the maximum (the thesis' top 30%
    /// when no fraction yields a box).
    pub fn resolve(&self, query_heatmap: &[f32], grid: &CellGrid, bbox: &BBox) -> Binarize {
        match self.cfg.binarize {
            Binarize::Calibrated => calibrate(query_heatmap, grid, bbox).map_or(
                Binarize::TopFraction(DEFAULT_TOP_FRACTION),
                Binarize::RelativeToMax,
            ),
            other => other,
        }
    }

    /// Localizes the query's region `bbox` (in the query image's pixels) in every target by a
    /// joint factorization of the query's and the targets' activations (same layer and
    /// channels).
    pub fn joint(
        &self,
        query: &Activations,
        bbox: &BBox,
        targets: &[&Activations],
    ) -> Result<JointLocalization> {
        let c = query.data.cols();
        if let Some(t) = targets.iter().find(|t| t.data.cols() != c) {
            return Err(Error::invalid(format!(
                "localization needs activations with equal channels ({c} for the query, {} for a target)",
                t.data.cols()
            )));
        }
        let mut mats = vec![balanced(&query.data)];
        mats.extend(targets.iter().map(|t| balanced(&t.data)));
        let refs: Vec<&Matrix> = mats.iter().collect();
        let joint = self.nmf.fit_joint(&refs)?;
        let k = joint.factorization.u.cols();
        let uq = &joint.u_per_image[0];
        let query_maps: Vec<Vec<f32>> = (0..k).map(|f| column(uq, f)).collect();
        let (kept, fallback, mass_inside) =
            select_factors(&query_maps, &query.grid, bbox, self.cfg.mass_threshold);
        let weights = vec![1.0; kept.len()];
        // In a joint factorization every image's heatmaps share one scale, so a calibrated
        // threshold carries over as an absolute level: the sum of the kept heatmaps.
        let raw_sum = |u: &Matrix| -> Vec<f32> {
            (0..u.rows())
                .map(|r| kept.iter().map(|&f| u.get(r, f).max(0.0)).sum())
                .collect()
        };
        let max_of = |v: &[f32]| v.iter().copied().fold(0.0f32, f32::max);
        let absolute = if self.cfg.binarize == Binarize::Calibrated {
            let qsum = raw_sum(uq);
            let peak = max_of(&qsum);
            calibrate(&qsum, &query.grid, bbox).map(|g| (g * peak, g, peak))
        } else {
            None
        };
        // Without a calibrated level (another rule, or an all-zero query heatmap, as in
        // `resolve`), the rule applies to each image's averaged heatmap.
        let rule = match self.cfg.binarize {
            Binarize::Calibrated => Binarize::TopFraction(DEFAULT_TOP_FRACTION),
            other => other,
        };
        let locate = |u: &Matrix, grid: &CellGrid| -> Located {
            let maps: Vec<Vec<f32>> = kept.iter().map(|&f| column(u, f)).collect();
            let heatmap = average(&maps, &weights, grid.len());
            let factor_maps = kept.iter().copied().zip(maps).map(scaled).collect();
            let (bbox, strength) = match absolute {
                Some((level, frac, peak)) => {
                    let sum = raw_sum(u);
                    let m = max_of(&sum);
                    // Where the region is at least as strong as in the query's box, the same
                    // absolute level; where it is weaker, the same fraction of its maximum.
                    let f = if m >= level { level / m } else { frac };
                    let strength = if peak > 0.0 { Some(m / peak) } else { None };
                    let bbox = if m > 0.0 {
                        heatmap_box(&sum, grid, Binarize::RelativeToMax(f.clamp(1e-6, 1.0)))
                    } else {
                        None
                    };
                    (bbox, strength)
                }
                None => (heatmap_box(&heatmap, grid, rule), None),
            };
            Located {
                bbox,
                heatmap,
                grid: *grid,
                factor_maps,
                strength,
            }
        };
        let query_located = locate(uq, &query.grid);
        let targets_located = targets
            .iter()
            .enumerate()
            .map(|(i, t)| locate(&joint.u_per_image[i + 1], &t.grid))
            .collect();
        let query_heatmaps = kept
            .iter()
            .map(|&f| {
                let mut h = query_maps[f].clone();
                unit_max(&mut h);
                h
            })
            .collect();
        Ok(JointLocalization {
            kept,
            fallback,
            mass_inside,
            query_heatmaps,
            query: query_located,
            targets: targets_located,
        })
    }

    /// The fast variant: localizes in a target from its stored factors. `query_concepts` are
    /// the kept query concepts (factor number and vector of `C` channels); `target_v` the
    /// target's concept vectors (`K × C`) and `target_heatmaps` its `K` heatmaps over `grid`;
    /// `binarize` is the rule for the target ([`Localizer::resolve`] turns a calibrated rule
    /// into one).
    pub fn from_stored(
        &self,
        query_concepts: &[(usize, Vec<f32>)],
        target_v: &[Vec<f32>],
        target_heatmaps: &[Vec<f32>],
        grid: &CellGrid,
        binarize: Binarize,
    ) -> Result<Located> {
        if target_v.len() != target_heatmaps.len() {
            return Err(Error::invalid(
                "stored factors: as many concept vectors as heatmaps are needed",
            ));
        }
        if let Some(h) = target_heatmaps.iter().find(|h| h.len() != grid.len()) {
            return Err(Error::invalid(format!(
                "stored heatmap of {} cells for a grid of {}",
                h.len(),
                grid.len()
            )));
        }
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut maps = Vec::new();
        let mut weights = Vec::new();
        let mut labels = Vec::new();
        for (label, q) in query_concepts {
            let qn = norm(q);
            let best = target_v
                .iter()
                .enumerate()
                .filter(|(_, t)| t.len() == q.len())
                .map(|(i, t)| {
                    let d = norm(t) * qn;
                    let cos = if d > 0.0 {
                        q.iter().zip(t).map(|(a, b)| a * b).sum::<f32>() / d
                    } else {
                        0.0
                    };
                    (i, cos)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, cos)) = best {
                if cos > 0.0 {
                    maps.push(target_heatmaps[i].clone());
                    weights.push(cos);
                    labels.push(*label);
                }
            }
        }
        let heatmap = average(&maps, &weights, grid.len());
        let factor_maps = labels.into_iter().zip(maps).map(scaled).collect();
        Ok(Located {
            bbox: heatmap_box(&heatmap, grid, binarize),
            heatmap,
            grid: *grid,
            factor_maps,
            strength: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: usize, cols: usize) -> CellGrid {
        CellGrid {
            rows,
            cols,
            image_width: cols as u32 * 10,
            image_height: rows as u32 * 10,
        }
    }

    #[test]
    fn box_around_largest_component() {
        let g = grid(4, 5);
        #[rustfmt::skip]
        let h = [
            0.0, 0.0, 0.0, 0.0, 0.9,
            0.0, 1.0, 0.8, 0.0, 0.0,
            0.0, 0.7, 0.9, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        // Top 30% of 20 cells = 6 cells: all five non-zero ones; the 2×2 group wins.
        let b = component_box(&h, &g, Binarize::TopFraction(0.3)).unwrap();
        assert_eq!(b, BBox::new(10.0, 10.0, 30.0, 30.0).unwrap());
        // Relative to max 0.85: cells 1.0, 0.9 (top right), 0.9 — no two adjacent; the largest
        // mass single cell wins (1.0 at row 1, col 1).
        let b = component_box(&h, &g, Binarize::RelativeToMax(0.85)).unwrap();
        assert_eq!(b, BBox::new(10.0, 10.0, 20.0, 20.0).unwrap());
        assert_eq!(heatmap_box(&[0.0; 20], &g, Binarize::default()), None);
        // Upsampled, the box of the 2×2 group lies inside the coarse one and around its
        // strongest cells.
        let b = heatmap_box(&h, &g, Binarize::RelativeToMax(0.6)).unwrap();
        assert!(
            b.x1 >= 10.0 && b.y1 >= 10.0 && b.x2 <= 30.0 && b.y2 <= 30.0,
            "{b:?}"
        );
        assert!(b.contains(15.0, 15.0) && b.contains(25.0, 25.0), "{b:?}");
    }

    #[test]
    fn upsampling_is_exact_at_cell_centres() {
        let h = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let f = 3; // odd factor: every coarse centre is a fine centre
        let up = upsample(&h, 2, 3, f);
        for r in 0..2 {
            for c in 0..3 {
                assert!((up[(r * f + 1) * 3 * f + c * f + 1] - h[r * 3 + c]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn factor_selection_and_fallback() {
        let g = grid(2, 2);
        let b = BBox::new(0.0, 0.0, 10.0, 20.0).unwrap(); // left column
        let maps = vec![
            vec![1.0, 0.0, 1.0, 0.0],
            vec![0.5, 0.5, 0.5, 0.5],
            vec![0.0; 4],
        ];
        let (kept, fallback, mass) = select_factors(&maps, &g, &b, 0.75);
        assert_eq!((kept, fallback), (vec![0], false));
        assert_eq!(mass, vec![1.0, 0.5, 0.0]);
        let (kept, fallback, _) = select_factors(&maps[1..], &g, &b, 0.75);
        assert_eq!((kept, fallback), (vec![0], true));
        let (kept, fallback, _) = select_factors(&maps[2..], &g, &b, 0.75);
        assert_eq!((kept, fallback), (vec![], true));
    }

    #[test]
    fn calibration_gives_back_the_query_box() {
        // A plateau (0.5) over a 4×6 block with a peak (1.0) in its middle 2×2: the box
        // around the plateau is found at a level at or below one half, the peak's above.
        let g = grid(8, 10);
        let mut h = vec![0.0f32; g.len()];
        for r in 2..6 {
            for c in 2..8 {
                h[r * 10 + c] = if (3..5).contains(&r) && (4..6).contains(&c) {
                    1.0
                } else {
                    0.5
                };
            }
        }
        let plateau = BBox::new(20.0, 20.0, 80.0, 60.0).unwrap();
        let f = calibrate(&h, &g, &plateau).unwrap();
        assert!(f <= 0.5, "{f}");
        let b = heatmap_box(&h, &g, Binarize::RelativeToMax(f)).unwrap();
        assert!(b.iou(&plateau) > 0.8, "{b:?}");
        let peak = BBox::new(40.0, 30.0, 60.0, 50.0).unwrap();
        let f = calibrate(&h, &g, &peak).unwrap();
        assert!(f > 0.5, "{f}");
        // Resolution: a calibrated localizer turns into a fraction of the maximum; an
        // all-zero heatmap falls back to the thesis' top 30%.
        let loc = Localizer::builder().build().unwrap();
        assert_eq!(
            loc.resolve(&h, &g, &peak),
            Binarize::RelativeToMax(calibrate(&h, &g, &peak).unwrap())
        );
        assert_eq!(
            loc.resolve(&vec![0.0; g.len()], &g, &peak),
            Binarize::TopFraction(DEFAULT_TOP_FRACTION)
        );
    }
}
