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

use crate::heatmap::{filter_factors, Binarize, Heatmap, DEFAULT_MASS_THRESHOLD};
use crate::nmf::{Init, Nmf};
use crate::Activations;
use crate::{BBox, CellGrid, Error, Matrix, Result};
use serde::{Deserialize, Serialize};

/// Rank of the joint factorization.
pub const DEFAULT_JOINT_K: usize = 8;
/// Fraction of the cells kept when binarizing an averaged heatmap (thesis: the top 30%).
pub const DEFAULT_TOP_FRACTION: f32 = 0.3;
/// Iterations of the joint factorization.
pub const DEFAULT_MAX_ITER: usize = 200;

/// Fractions of the maximum tried by [`Binarize::Calibrated`].
const CALIBRATION_STEPS: usize = 19;

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
    /// The averaged heatmap of the kept factors over the image's grid, scaled so its maximum
    /// is 1.
    pub heatmap: Heatmap,
    /// The heatmaps behind the average, each scaled to a maximum of 1 and labelled with the
    /// query factor it stands for (joint: the kept factor; stored: the kept query factor it
    /// was matched to).
    pub factor_maps: Vec<(usize, Heatmap)>,
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
    /// Whether no factor passed the threshold and the fallback rule of
    /// [`filter_factors`] chose.
    pub fallback: bool,
    /// Fraction of each factor's query heatmap inside the box.
    pub mass_inside: Vec<f32>,
    /// The kept factors' heatmaps on the query, each scaled to a maximum of 1.
    pub query_heatmaps: Vec<Heatmap>,
    /// The query image's averaged heatmap and box.
    pub query: Located,
    /// One result per target image, in the order given.
    pub targets: Vec<Located>,
}

/// The average of the `kept` columns of `u` (heatmaps over `grid`), each first scaled to a
/// maximum of 1, scaled to a maximum of 1: a region's heatmap from its factors.
pub fn kept_average(u: &Matrix, grid: CellGrid, kept: &[usize]) -> Result<Heatmap> {
    let maps = kept
        .iter()
        .map(|&f| Heatmap::from_column(u, f, grid))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Heatmap> = maps.iter().collect();
    Heatmap::average(grid, &refs, &vec![1.0; refs.len()])
}

/// The fraction of the maximum (5%, 10%, …, 95%) whose box around the query's averaged
/// `heatmap` ([`Heatmap::region_box`]) best matches the query's `bbox`; ties go to the smaller
/// fraction.
pub fn calibrate(heatmap: &Heatmap, bbox: &BBox) -> Option<f32> {
    let mut best: Option<(f32, f32)> = None;
    for i in 1..=CALIBRATION_STEPS {
        let f = i as f32 / (CALIBRATION_STEPS + 1) as f32;
        let Some(b) = heatmap.region_box(Binarize::RelativeToMax(f)) else {
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
    pub fn resolve(&self, query_heatmap: &Heatmap, bbox: &BBox) -> Binarize {
        match self.cfg.binarize {
            Binarize::Calibrated => calibrate(query_heatmap, bbox).map_or(
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
        let uq = &joint.u_per_image[0];
        let query_maps = Heatmap::columns(uq, query.grid)?;
        let filter = filter_factors(&query_maps, bbox, self.cfg.mass_threshold);
        let kept = filter.kept;
        let weights = vec![1.0; kept.len()];
        // In a joint factorization every image's heatmaps share one scale, so a calibrated
        // threshold carries over as an absolute level: the sum of the kept heatmaps.
        let raw_sum = |u: &Matrix, grid: CellGrid| -> Result<Heatmap> {
            let sum = (0..u.rows())
                .map(|r| kept.iter().map(|&f| u.get(r, f).max(0.0)).sum())
                .collect();
            Heatmap::new(grid, sum)
        };
        let absolute = if self.cfg.binarize == Binarize::Calibrated {
            let qsum = raw_sum(uq, query.grid)?;
            let peak = qsum.max();
            calibrate(&qsum, bbox).map(|g| (g * peak, g, peak))
        } else {
            None
        };
        // Without a calibrated level (another rule, or an all-zero query heatmap, as in
        // `resolve`), the rule applies to each image's averaged heatmap.
        let rule = match self.cfg.binarize {
            Binarize::Calibrated => Binarize::TopFraction(DEFAULT_TOP_FRACTION),
            other => other,
        };
        let locate = |u: &Matrix, grid: CellGrid| -> Result<Located> {
            let maps = kept
                .iter()
                .map(|&f| Heatmap::from_column(u, f, grid))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Heatmap> = maps.iter().collect();
            let heatmap = Heatmap::average(grid, &refs, &weights)?;
            let (bbox, strength) = match absolute {
                Some((level, frac, peak)) => {
                    let sum = raw_sum(u, grid)?;
                    let m = sum.max();
                    // Where the region is at least as strong as in the query's box, the same
                    // absolute level; where it is weaker, the same fraction of its maximum.
                    let f = if m >= level { level / m } else { frac };
                    let strength = if peak > 0.0 { Some(m / peak) } else { None };
                    let bbox = if m > 0.0 {
                        sum.region_box(Binarize::RelativeToMax(f.clamp(1e-6, 1.0)))
                    } else {
                        None
                    };
                    (bbox, strength)
                }
                None => (heatmap.region_box(rule), None),
            };
            let factor_maps = kept
                .iter()
                .copied()
                .zip(maps.into_iter().map(Heatmap::unit_max))
                .collect();
            Ok(Located {
                bbox,
                heatmap,
                factor_maps,
                strength,
            })
        };
        let query_located = locate(uq, query.grid)?;
        let targets_located = targets
            .iter()
            .enumerate()
            .map(|(i, t)| locate(&joint.u_per_image[i + 1], t.grid))
            .collect::<Result<Vec<_>>>()?;
        let query_heatmaps = kept
            .iter()
            .map(|&f| query_maps[f].clone().unit_max())
            .collect();
        Ok(JointLocalization {
            kept,
            fallback: filter.fallback,
            mass_inside: filter.mass_inside,
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
        target_heatmaps: &[Heatmap],
        grid: CellGrid,
        binarize: Binarize,
    ) -> Result<Located> {
        if target_v.len() != target_heatmaps.len() {
            return Err(Error::invalid(
                "stored factors: as many concept vectors as heatmaps are needed",
            ));
        }
        if let Some(h) = target_heatmaps.iter().find(|h| *h.grid() != grid) {
            return Err(Error::invalid(format!(
                "stored heatmap of {}×{} cells for a grid of {}×{}",
                h.grid().rows,
                h.grid().cols,
                grid.rows,
                grid.cols
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
                    maps.push(&target_heatmaps[i]);
                    weights.push(cos);
                    labels.push(*label);
                }
            }
        }
        let heatmap = Heatmap::average(grid, &maps, &weights)?;
        let factor_maps = labels
            .into_iter()
            .zip(maps.into_iter().map(|h| h.clone().unit_max()))
            .collect();
        Ok(Located {
            bbox: heatmap.region_box(binarize),
            heatmap,
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
        let h = Heatmap::new(g, h).unwrap();
        let plateau = BBox::new(20.0, 20.0, 80.0, 60.0).unwrap();
        let f = calibrate(&h, &plateau).unwrap();
        assert!(f <= 0.5, "{f}");
        let b = h.region_box(Binarize::RelativeToMax(f)).unwrap();
        assert!(b.iou(&plateau) > 0.8, "{b:?}");
        let peak = BBox::new(40.0, 30.0, 60.0, 50.0).unwrap();
        let f = calibrate(&h, &peak).unwrap();
        assert!(f > 0.5, "{f}");
        // Resolution: a calibrated localizer turns into a fraction of the maximum; an
        // all-zero heatmap falls back to the thesis' top 30%.
        let loc = Localizer::builder().build().unwrap();
        assert_eq!(
            loc.resolve(&h, &peak),
            Binarize::RelativeToMax(calibrate(&h, &peak).unwrap())
        );
        assert_eq!(
            loc.resolve(&Heatmap::zeros(g).unwrap(), &peak),
            Binarize::TopFraction(DEFAULT_TOP_FRACTION)
        );
    }

    #[test]
    fn region_heatmap_from_kept_columns() {
        let g = grid(1, 3);
        let u = Matrix::from_vec(3, 3, vec![2.0, 0.0, 9.0, 0.0, 4.0, 9.0, 0.0, 0.0, 9.0]).unwrap();
        let h = kept_average(&u, g, &[0, 1]).unwrap();
        assert_eq!(h.values(), &[1.0, 1.0, 0.0]);
        assert!(kept_average(&u, g, &[3]).is_err());
    }
}
