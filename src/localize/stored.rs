//! Localization from stored factors: which of a hit's factors are the query's region, and
//! whether the region is the whole view.
//!
//! A cosine between a query concept and a stored concept means little on its own: a concept
//! of "foliage" or "sky" matches some factor of almost every photo at 0.8, while an object's
//! concept may match its own instance at 0.6. So every kept query concept is first measured
//! against the index: over a sample of its images ([`ConceptSample`]), the mean and standard
//! deviation of the concept's best match per image ([`Baseline`]). A hit's factor then counts
//! by how many standard deviations its cosine lies above that baseline (its z-score;
//! [`Matching::Standardized`]): background concepts that match everywhere count little, the
//! object's own concept much, and several of the hit's factors can share the region (an object
//! split into parts by the hit's own factorization).
//!
//! The same z-scores say where the region is the whole view ([`region_fill`]): the share of the
//! hit's reconstruction `U·V` explained by factors that match a kept query concept
//! significantly (z ≥ [`SIGNIFICANT_Z`]), averaged over the cells. An object that fills the
//! frame explains most of it; a small object a small share. Above
//! [`DEFAULT_WHOLE_VIEW`] the box is the whole image — a heatmap cut at any level would cut
//! off part of an object that is everywhere.

use crate::heatmap::Heatmap;
use crate::{Activations, CellGrid, Error, Matrix, Result};
use serde::{Deserialize, Serialize};

/// A stored factor matches a query concept significantly when its cosine lies this many
/// standard deviations above the concept's baseline.
pub const SIGNIFICANT_Z: f32 = 2.0;
/// Region fill at or above which the region is taken to be the whole view.
pub const DEFAULT_WHOLE_VIEW: f32 = 0.4;
/// Images of the index sampled for the baselines (all of them in a smaller index).
pub const DEFAULT_BASELINE_SAMPLE: usize = 256;
/// Fewer sampled images than this give no baseline (matching falls back to
/// [`Matching::Best`] and the whole-view rule does not fire).
pub const MIN_BASELINE_IMAGES: usize = 8;

/// How a query's kept concepts select a hit's stored factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Matching {
    /// Per kept query concept, the stored factor with the highest cosine, weighted by that
    /// cosine (the first stored variant).
    Best,
    /// Every stored factor whose cosine to a kept query concept lies above the concept's
    /// baseline in the index, weighted by the z-score (summed over the query concepts).
    #[default]
    Standardized,
}

impl std::fmt::Display for Matching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Matching::Best => "best",
            Matching::Standardized => "standardized",
        })
    }
}

impl std::str::FromStr for Matching {
    type Err = Error;

    /// `best` or `standardized` (alias `z`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "best" => Ok(Matching::Best),
            "standardized" | "z" => Ok(Matching::Standardized),
            other => Err(Error::invalid(format!(
                "factor matching {other:?}: expected best or standardized"
            ))),
        }
    }
}

/// One query concept's best-match cosines over the index: their mean and standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Mean best-match cosine per image.
    pub mean: f32,
    /// Their standard deviation (at least `1e-6`).
    pub std: f32,
}

impl Baseline {
    /// How many standard deviations `cos` lies above the mean.
    pub fn z(&self, cos: f32) -> f32 {
        (cos - self.mean) / self.std
    }
}

/// Unit concept vectors of a sample of indexed images, for the baselines.
#[derive(Debug, Clone, Default)]
pub struct ConceptSample {
    channels: usize,
    /// Unit vectors, `channels` each, concatenated.
    vectors: Vec<f32>,
    /// Image (0-based within the sample) of each vector.
    owner: Vec<u32>,
    images: usize,
}

/// `x / ‖x‖`, or `None` for a zero or non-finite vector.
pub(crate) fn unit(x: &[f32]) -> Option<Vec<f32>> {
    let n = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    (n > 0.0 && n.is_finite()).then(|| x.iter().map(|v| v / n).collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl ConceptSample {
    /// The sample of the images whose concept matrices (`K × C` each, any `K`) are given;
    /// matrices of another channel count than the first are skipped.
    pub fn new<'a>(images: impl IntoIterator<Item = &'a Matrix>) -> Self {
        let mut s = ConceptSample::default();
        for v in images {
            if s.images == 0 && s.vectors.is_empty() {
                s.channels = v.cols();
            }
            if v.cols() != s.channels || v.cols() == 0 {
                continue;
            }
            let owner = s.images as u32;
            let mut any = false;
            for r in 0..v.rows() {
                if let Some(u) = unit(v.row(r)) {
                    s.vectors.extend(u);
                    s.owner.push(owner);
                    any = true;
                }
            }
            if any {
                s.images += 1;
            }
        }
        s
    }

    /// Images in the sample.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Channels of the sampled concepts.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The baseline of each of `concepts` (any length; `None` for one of another channel count,
    /// a zero one, or when fewer than [`MIN_BASELINE_IMAGES`] images are sampled).
    pub fn baselines(&self, concepts: &[&[f32]]) -> Vec<Option<Baseline>> {
        concepts
            .iter()
            .map(|c| {
                if self.images < MIN_BASELINE_IMAGES || c.len() != self.channels {
                    return None;
                }
                let q = unit(c)?;
                let mut best = vec![f32::NEG_INFINITY; self.images];
                for (v, &o) in self.vectors.chunks_exact(self.channels).zip(&self.owner) {
                    let b = &mut best[o as usize];
                    *b = b.max(dot(&q, v));
                }
                let n = best.len() as f32;
                let mean = best.iter().sum::<f32>() / n;
                let var = best.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n;
                Some(Baseline {
                    mean,
                    std: var.sqrt().max(1e-6),
                })
            })
            .collect()
    }
}

/// One kept query concept: its factor number, its vector, and its baseline when known.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryConcept {
    /// Factor number in the query's factorization (the label of the maps it selects).
    pub factor: usize,
    /// The concept vector (`C` channels).
    pub vector: Vec<f32>,
    /// Its baseline over the index; `None` leaves [`Matching::Best`] as the only choice.
    pub baseline: Option<Baseline>,
}

/// The stored factors of one hit, as localization reads them.
#[derive(Debug, Clone, Copy)]
pub struct HitFactors<'a> {
    /// Concept vectors, `K × C`.
    pub concepts: &'a Matrix,
    /// Heatmaps over the hit's grid, `K` of them.
    pub heatmaps: &'a [Heatmap],
}

/// Cosine of `q` (unit) with each row of `v` (0 for a zero row or another length).
fn cosines(q: &[f32], v: &Matrix) -> Vec<f32> {
    (0..v.rows())
        .map(|r| match unit(v.row(r)) {
            Some(t) if t.len() == q.len() => dot(q, &t),
            _ => 0.0,
        })
        .collect()
}

/// The hit's factors selected by the query's concepts, with their weights, each labelled with
/// the query factor that weighs most on it. Standardized matching needs every concept's
/// baseline; without them, or where no factor of the hit lies above any baseline (the region
/// is probably not there), it falls back to [`Matching::Best`], so that a box is always
/// predicted.
pub fn select(
    concepts: &[QueryConcept],
    hit: HitFactors<'_>,
    matching: Matching,
) -> Vec<(usize, f32, usize)> {
    let standardized =
        matching == Matching::Standardized && concepts.iter().all(|c| c.baseline.is_some());
    let picked = pick(concepts, hit, standardized);
    if standardized && picked.is_empty() {
        return pick(concepts, hit, false);
    }
    picked
}

fn pick(
    concepts: &[QueryConcept],
    hit: HitFactors<'_>,
    standardized: bool,
) -> Vec<(usize, f32, usize)> {
    let k = hit.concepts.rows().min(hit.heatmaps.len());
    // Per hit factor: summed weight, and the label with the largest share.
    let mut weight = vec![0f32; k];
    let mut label: Vec<(f32, usize)> = vec![(0.0, 0); k];
    for c in concepts {
        let Some(q) = unit(&c.vector) else { continue };
        let cos = cosines(&q, hit.concepts);
        let mut add = |i: usize, w: f32| {
            if w > 0.0 && w.is_finite() && i < k {
                weight[i] += w;
                if w > label[i].0 {
                    label[i] = (w, c.factor);
                }
            }
        };
        match (standardized, c.baseline) {
            (true, Some(b)) => {
                for (i, &x) in cos.iter().enumerate() {
                    add(i, b.z(x));
                }
            }
            _ => {
                if let Some((i, &x)) = cos
                    .iter()
                    .enumerate()
                    .take(k)
                    .max_by(|a, b| a.1.total_cmp(b.1))
                {
                    add(i, x);
                }
            }
        }
    }
    (0..k)
        .filter(|&i| weight[i] > 0.0)
        .map(|i| (i, weight[i], label[i].1))
        .collect()
}

/// The share of the hit's reconstruction explained by its factors that match some query concept
/// significantly (z ≥ [`SIGNIFICANT_Z`]), averaged over the cells: about 1 where the region
/// fills the view, small where it is a small part of it. `None` without baselines. Factor `i`
/// contributes `u_i(c)·‖v_i‖` at cell `c` (the size of its part of the reconstruction there).
pub fn region_fill(concepts: &[QueryConcept], hit: HitFactors<'_>) -> Option<f32> {
    let k = hit.concepts.rows().min(hit.heatmaps.len());
    if k == 0 || concepts.is_empty() || concepts.iter().any(|c| c.baseline.is_none()) {
        return None;
    }
    let units: Vec<Option<Vec<f32>>> = concepts.iter().map(|c| unit(&c.vector)).collect();
    let significant: Vec<bool> = (0..k)
        .map(|i| {
            let Some(t) = unit(hit.concepts.row(i)) else {
                return false;
            };
            concepts
                .iter()
                .zip(&units)
                .any(|(c, q)| match (q, c.baseline) {
                    (Some(q), Some(b)) if q.len() == t.len() => b.z(dot(q, &t)) >= SIGNIFICANT_Z,
                    _ => false,
                })
        })
        .collect();
    let cells = hit.heatmaps[0].values().len();
    if hit.heatmaps[..k].iter().any(|h| h.values().len() != cells) || cells == 0 {
        return None;
    }
    let mut num = vec![0f64; cells];
    let mut den = vec![0f64; cells];
    for (i, &sig) in significant.iter().enumerate() {
        let vn = f64::from(dot(hit.concepts.row(i), hit.concepts.row(i)).sqrt());
        for (c, &u) in hit.heatmaps[i].values().iter().enumerate() {
            let x = f64::from(u.max(0.0)) * vn;
            if !x.is_finite() {
                continue;
            }
            den[c] += x;
            if sig {
                num[c] += x;
            }
        }
    }
    let share: f64 = num
        .iter()
        .zip(&den)
        .map(|(n, d)| if *d > 0.0 { n / d } else { 0.0 })
        .sum();
    Some((share / cells as f64) as f32)
}

/// The hit's activations as its stored factors reconstruct them: `U·V` over `grid` (cells ×
/// channels, in the space the factors were made in) — what joint localization on stored
/// factors factorizes in place of a network pass.
pub fn reconstruction(hit: HitFactors<'_>, grid: CellGrid) -> Result<Activations> {
    let cells = grid.len();
    if hit.concepts.rows() != hit.heatmaps.len() {
        return Err(Error::invalid(format!(
            "stored factors: {} concept vectors for {} heatmaps",
            hit.concepts.rows(),
            hit.heatmaps.len()
        )));
    }
    let mut u = Matrix::zeros(cells, hit.heatmaps.len());
    for (k, m) in hit.heatmaps.iter().enumerate() {
        if m.values().len() != cells {
            return Err(Error::invalid(format!(
                "stored heatmap of {} cells for a grid of {cells}",
                m.values().len()
            )));
        }
        for (c, &x) in m.values().iter().enumerate() {
            u.set(c, k, x);
        }
    }
    Ok(Activations {
        grid,
        data: u.matmul(hit.concepts)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CellGrid;

    fn grid() -> CellGrid {
        CellGrid {
            rows: 4,
            cols: 4,
            image_width: 40,
            image_height: 40,
        }
    }

    fn basis(c: usize, i: usize) -> Vec<f32> {
        let mut v = vec![0.0; c];
        v[i] = 1.0;
        v
    }

    #[test]
    fn baselines_from_a_sample() {
        // 10 images: each with a factor along axis 0 at cosine 0.5 or 1.0 alternately.
        let mats: Vec<Matrix> = (0..10)
            .map(|i| {
                let a = if i % 2 == 0 { 1.0 } else { 0.5 };
                let b = (1.0f32 - a * a).sqrt();
                Matrix::from_vec(2, 3, vec![a, b, 0.0, 0.0, 0.0, 1.0]).unwrap()
            })
            .collect();
        let s = ConceptSample::new(mats.iter());
        assert_eq!(s.images(), 10);
        let b = s.baselines(&[&[2.0, 0.0, 0.0]])[0].unwrap();
        assert!((b.mean - 0.75).abs() < 1e-5, "{b:?}");
        assert!((b.std - 0.25).abs() < 1e-5, "{b:?}");
        // Wrong length, zero vector, too small a sample: no baseline.
        assert!(s.baselines(&[&[1.0, 0.0]])[0].is_none());
        assert!(s.baselines(&[&[0.0, 0.0, 0.0]])[0].is_none());
        let small = ConceptSample::new(mats.iter().take(MIN_BASELINE_IMAGES - 1));
        assert!(small.baselines(&[&[1.0, 0.0, 0.0]])[0].is_none());
        // A matrix of another channel count is skipped.
        let odd = Matrix::from_vec(1, 2, vec![1.0, 0.0]).unwrap();
        let s2 = ConceptSample::new(mats.iter().chain(std::iter::once(&odd)));
        assert_eq!(s2.images(), 10);
    }

    /// A hit with two factors: factor 0 (axis 0) on `object_cells`, factor 1 (axis 1) on the
    /// rest, equal concept norms.
    fn hit(object_cells: usize) -> (Matrix, Vec<Heatmap>) {
        let v = Matrix::from_vec(2, 3, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
        let g = grid();
        let obj: Vec<f32> = (0..16).map(|c| f32::from(c < object_cells)).collect();
        let rest: Vec<f32> = obj.iter().map(|x| 1.0 - x).collect();
        let maps = vec![
            Heatmap::new(g, obj).unwrap(),
            Heatmap::new(g, rest).unwrap(),
        ];
        (v, maps)
    }

    fn concept(vector: Vec<f32>, mean: f32) -> QueryConcept {
        QueryConcept {
            factor: 3,
            vector,
            baseline: Some(Baseline { mean, std: 0.1 }),
        }
    }

    #[test]
    fn whole_view_rule_fires_only_when_the_object_fills_the_view() {
        let q = [concept(basis(3, 0), 0.5)];
        for (cells, expect) in [(16usize, 1.0f32), (14, 14.0 / 16.0), (2, 2.0 / 16.0)] {
            let (v, maps) = hit(cells);
            let h = HitFactors {
                concepts: &v,
                heatmaps: &maps,
            };
            let fill = region_fill(&q, h).unwrap();
            assert!((fill - expect).abs() < 1e-5, "{cells} cells: {fill}");
            assert_eq!(
                fill >= DEFAULT_WHOLE_VIEW,
                cells > 8,
                "{cells} cells: {fill}"
            );
        }
        // A concept that matches nothing significantly (the baseline is already high):
        // nothing fills the view.
        let (v, maps) = hit(16);
        let h = HitFactors {
            concepts: &v,
            heatmaps: &maps,
        };
        assert_eq!(region_fill(&[concept(basis(3, 0), 0.95)], h), Some(0.0));
        // Without baselines there is no rule.
        let mut nb = concept(basis(3, 0), 0.5);
        nb.baseline = None;
        assert_eq!(region_fill(&[nb], h), None);
        assert_eq!(region_fill(&[], h), None);
    }

    #[test]
    fn standardized_matching_discounts_concepts_that_match_everywhere() {
        // The hit's factor 1 matches the query's "background" concept perfectly, but that
        // concept's baseline is just as high; factor 0 matches the object concept at 0.8,
        // far above its baseline of 0.3.
        let (v, maps) = hit(4);
        let h = HitFactors {
            concepts: &v,
            heatmaps: &maps,
        };
        let object = QueryConcept {
            factor: 0,
            vector: vec![0.8, 0.0, 0.6],
            baseline: Some(Baseline {
                mean: 0.3,
                std: 0.1,
            }),
        };
        let background = QueryConcept {
            factor: 1,
            vector: basis(3, 1),
            baseline: Some(Baseline {
                mean: 1.0,
                std: 0.05,
            }),
        };
        let q = [object.clone(), background.clone()];
        let sel = select(&q, h, Matching::Standardized);
        assert_eq!(sel.len(), 1, "{sel:?}");
        assert_eq!((sel[0].0, sel[0].2), (0, 0));
        assert!((sel[0].1 - 5.0).abs() < 1e-4, "{sel:?}");
        // Best matching weighs both by cosine.
        let sel = select(&q, h, Matching::Best);
        assert_eq!(sel.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1]);
        // Where nothing lies above the baselines, the best match stands in.
        let high = QueryConcept {
            baseline: Some(Baseline {
                mean: 0.99,
                std: 0.01,
            }),
            ..object.clone()
        };
        let sel = select(&[high], h, Matching::Standardized);
        assert_eq!(sel.len(), 1);
        assert!((sel[0].1 - 0.8).abs() < 1e-5, "{sel:?}");
        // Without a baseline standardized matching falls back to the best match.
        let mut nb = background;
        nb.baseline = None;
        assert_eq!(select(&[object, nb], h, Matching::Standardized).len(), 2);
    }

    #[test]
    fn hostile_factors_do_not_panic() {
        let (v, maps) = hit(4);
        let nan = Matrix::from_vec(2, 3, vec![f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
        let short = Matrix::from_vec(1, 2, vec![1.0, 1.0]).unwrap();
        let q = [
            concept(basis(3, 0), 0.5),
            concept(vec![f32::INFINITY; 3], 0.1),
        ];
        for m in [&v, &nan, &short] {
            for heat in [&maps[..], &maps[..1], &[]] {
                let h = HitFactors {
                    concepts: m,
                    heatmaps: heat,
                };
                let _ = select(&q, h, Matching::Standardized);
                let _ = select(&q, h, Matching::Best);
                let _ = region_fill(&q, h);
            }
        }
        assert!(ConceptSample::new(std::iter::empty()).baselines(&[&[1.0]])[0].is_none());
    }

    #[test]
    fn matching_names_round_trip() {
        for m in [Matching::Best, Matching::Standardized] {
            assert_eq!(m.to_string().parse::<Matching>().unwrap(), m);
        }
        assert!("nearest".parse::<Matching>().is_err());
    }
}
