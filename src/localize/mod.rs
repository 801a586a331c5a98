//! Localization: where in a retrieved image is the query's region?
//!
//! Three ways, one per [`crate::query::Localize`] variant; each gives a heatmap per hit, which
//! a [`Binarize`] rule turns into a box (by default a level calibrated so that the query's own
//! heatmap gives back the query's box; the thesis' fixed top 30% and Otsu's threshold as
//! options), and a whole-view rule may widen to the whole image.
//!
//! **Stored** (the default; no network on the hits, milliseconds per hit): each hit's own NMF
//! factors, stored in the index, stand in for a joint factorization. The query's kept concepts
//! select the hit's factors ([`Matching`]): by default every factor whose cosine to a kept
//! concept lies well above that concept's typical best match over the index, weighted by its
//! z-score ([`stored`] explains why raw cosines mislead); the first variant took the best
//! match per concept ([`Matching::Best`]). The selected heatmaps are averaged and binarized.
//!
//! **Joint** (the thesis' §5.3.2, after Collins & Süsstrunk, "Deep Feature Factorization for
//! Content-Based Image Retrieval and Localization", ICIP 2019): the query's and the hits'
//! activations are factorized together, so that every factor is one concept with a heatmap in
//! every image. The thesis keeps the joint factors whose *query* heatmap puts more than
//! [`DEFAULT_MASS_THRESHOLD`] of its mass inside the box ([`JointSelection::Mass`]). On small
//! objects in scenes unlike the query's that choice fails: with a rank of 8 shared by half a
//! dozen different scenes, the factors that lie in a small query box are mostly generic ones
//! (texture, "thing on a surface") that the joint factorization spreads over the targets'
//! backgrounds. [`JointSelection::Matched`] (the default) selects instead the joint factors
//! whose concepts best match the query's own kept concepts — the ones its region search used —
//! weighted by the cosine; the joint factorization then runs in the space those concepts live
//! in (the descriptor's CroW-weighted activations). **Joint on stored factors**
//! ([`crate::query::Localize::JointStored`]) factorizes the query with each hit's
//! reconstruction `U·V` from its stored factors instead of re-running the network on the hits.
//!
//! **Whole view**: where the hit's factors that match the region significantly explain at
//! least [`DEFAULT_WHOLE_VIEW`] of its reconstruction ([`region_fill`]), the object fills the
//! frame and the box is the whole image, whichever variant made the heatmap.
//!
//! **Sharpening** ([`mod@sharpen`], [`Sharpen::Colour`] by default): a stride-32 heatmap is too
//! coarse for the box of a small object (10% of the view is about 5 × 7 cells, and the best
//! single stored factor, chosen knowing the truth, reaches only 49.5 IoU on such objects). So
//! the hit's image refines the heatmap before the box is read off it — co-segmentation's
//! colour model and guided filter, one shared function — and the sharpened map is cut at the
//! lower of two levels: the one at which the query's own heatmap, sharpened by the query's
//! image, gives back the query's box (the calibration above, redone on the sharpened map),
//! and Otsu's level of the hit's sharpened map (the query's level transfers imperfectly to
//! another scene; Otsu's alone splits objects that fill much of the view). A hit whose image
//! cannot be read keeps its unsharpened box, with a note ([`Located::note`]).

pub mod sharpen;
pub mod stored;

pub use sharpen::{calibrate_sharpened, sharpen, sharpened_box, Sharpen, SHARPEN_CELL_PIXELS};
pub use stored::{
    reconstruction, region_fill, Baseline, ConceptSample, HitFactors, Matching, QueryConcept,
    DEFAULT_BASELINE_SAMPLE, DEFAULT_WHOLE_VIEW, SIGNIFICANT_Z,
};

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
pub(crate) const CALIBRATION_STEPS: usize = 19;

/// How joint localization picks the joint factors that stand for the query's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JointSelection {
    /// The thesis: the joint factors whose query heatmap lies in the box
    /// ([`filter_factors`]); the joint factorization runs on the raw activations.
    Mass,
    /// Per kept query concept (from the query's own factorization), the joint factor whose
    /// concept matches it best, weighted by the cosine; the joint factorization runs on the
    /// descriptor's (CroW-weighted) activations.
    #[default]
    Matched,
}

impl std::fmt::Display for JointSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JointSelection::Mass => "mass",
            JointSelection::Matched => "matched",
        })
    }
}

impl std::str::FromStr for JointSelection {
    type Err = Error;

    /// `mass` or `matched`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mass" => Ok(JointSelection::Mass),
            "matched" => Ok(JointSelection::Matched),
            other => Err(Error::invalid(format!(
                "joint factor selection {other:?}: expected mass or matched"
            ))),
        }
    }
}

/// The localization settings a result was made with (recorded in search results and
/// evaluation records).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalizationSettings {
    /// Binarization rule.
    pub binarize: Binarize,
    /// Stored-factor matching.
    pub matching: Matching,
    /// Joint factor selection.
    pub selection: JointSelection,
    /// Whole-view threshold on the region fill; `None` when the rule is off.
    pub whole_view: Option<f32>,
    /// Images sampled for the concept baselines.
    pub baseline_sample: usize,
    /// Rank of the joint factorization.
    pub k: usize,
    /// Image-guided sharpening of each hit's heatmap (results made before it: none).
    #[serde(default = "Sharpen::off")]
    pub sharpen: Sharpen,
}

/// Settings of localization; `build()` validates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalizerBuilder {
    k: usize,
    mass_threshold: f32,
    binarize: Binarize,
    max_iter: usize,
    matching: Matching,
    selection: JointSelection,
    whole_view: Option<f32>,
    baseline_sample: usize,
    sharpen: Sharpen,
}

impl Default for LocalizerBuilder {
    fn default() -> Self {
        LocalizerBuilder {
            k: DEFAULT_JOINT_K,
            mass_threshold: DEFAULT_MASS_THRESHOLD,
            binarize: Binarize::default(),
            max_iter: DEFAULT_MAX_ITER,
            matching: Matching::default(),
            selection: JointSelection::default(),
            whole_view: Some(DEFAULT_WHOLE_VIEW),
            baseline_sample: DEFAULT_BASELINE_SAMPLE,
            sharpen: Sharpen::default(),
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

    /// How the query's concepts select a hit's stored factors (default
    /// [`Matching::Standardized`]).
    pub fn matching(mut self, m: Matching) -> Self {
        self.matching = m;
        self
    }

    /// How joint localization selects the region's joint factors (default
    /// [`JointSelection::Matched`]).
    pub fn selection(mut self, s: JointSelection) -> Self {
        self.selection = s;
        self
    }

    /// The whole-view rule: the box is the whole image where the region fill
    /// ([`region_fill`]) is at least this (default [`DEFAULT_WHOLE_VIEW`]); `None` turns the
    /// rule off.
    pub fn whole_view(mut self, threshold: Option<f32>) -> Self {
        self.whole_view = threshold;
        self
    }

    /// Images of the index sampled for the concept baselines (default
    /// [`DEFAULT_BASELINE_SAMPLE`]; 0 turns standardized matching and the whole-view rule
    /// off).
    pub fn baseline_sample(mut self, n: usize) -> Self {
        self.baseline_sample = n;
        self
    }

    /// Image-guided sharpening of each hit's heatmap before its box is taken (default
    /// [`Sharpen::Colour`]; see [`sharpen()`]).
    pub fn sharpen(mut self, s: Sharpen) -> Self {
        self.sharpen = s;
        self
    }

    /// The sharpening set.
    pub fn sharpen_rule(&self) -> Sharpen {
        self.sharpen
    }

    /// The stored-factor matching set.
    pub fn matching_rule(&self) -> Matching {
        self.matching
    }

    /// The joint factor selection set.
    pub fn selection_rule(&self) -> JointSelection {
        self.selection
    }

    /// The whole-view threshold set (`None`: the rule is off).
    pub fn whole_view_rule(&self) -> Option<f32> {
        self.whole_view
    }

    /// The baseline sample size set.
    pub fn baseline_sample_size(&self) -> usize {
        self.baseline_sample
    }

    /// The settings as recorded with results.
    pub fn summary(&self) -> LocalizationSettings {
        LocalizationSettings {
            binarize: self.binarize,
            matching: self.matching,
            selection: self.selection,
            whole_view: self.whole_view,
            baseline_sample: self.baseline_sample,
            k: self.k,
            sharpen: self.sharpen,
        }
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
        if let Some(t) = self.whole_view {
            if !(t > 0.0 && t <= 1.0) {
                return Err(Error::invalid(format!(
                    "whole-view threshold {t} is outside (0, 1]"
                )));
            }
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
    /// Joint localization: the peak of the region's heatmaps here relative to their peak in
    /// the query (1 for the query itself; a small fraction where the region is probably not
    /// there) — with matched selection always, with the thesis' selection under a calibrated
    /// threshold. `None` for stored localization (see `fill`) and otherwise.
    #[serde(default)]
    pub strength: Option<f32>,
    /// The region fill ([`region_fill`]) from the image's stored factors, when known.
    #[serde(default)]
    pub fill: Option<f32>,
    /// Whether the whole-view rule made the box the whole image.
    #[serde(default)]
    pub whole_view: bool,
    /// Whether the box was read off the heatmap sharpened by the image ([`sharpen()`]).
    #[serde(default)]
    pub sharpened: bool,
    /// Why the box is not what the settings asked for, when it is not (an image that could
    /// not be read for sharpening: the unsharpened box stands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Located {
    /// A box read off `heatmap` (with its factor maps and, for joint localization, the
    /// region's strength), before any later rule: no fill recorded, not the whole view, not
    /// sharpened, no note.
    pub(crate) fn new(
        bbox: Option<BBox>,
        heatmap: Heatmap,
        factor_maps: Vec<(usize, Heatmap)>,
        strength: Option<f32>,
    ) -> Self {
        Located {
            bbox,
            heatmap,
            factor_maps,
            strength,
            fill: None,
            whole_view: false,
            sharpened: false,
            note: None,
        }
    }

    /// Applies the whole-view rule with threshold `threshold` to a region fill `fill` (the
    /// box becomes the whole `width × height` image where the fill reaches it); records the
    /// fill either way.
    pub fn apply_whole_view(&mut self, fill: Option<f32>, threshold: Option<f32>) {
        self.fill = fill;
        let g = self.heatmap.grid();
        if let (Some(f), Some(t)) = (fill, threshold) {
            if f >= t && g.image_width > 0 && g.image_height > 0 {
                self.bbox = Some(BBox {
                    x1: 0.0,
                    y1: 0.0,
                    x2: g.image_width as f32,
                    y2: g.image_height as f32,
                });
                self.whole_view = true;
            }
        }
    }
}

impl Located {
    /// Reads the box off the heatmap sharpened by the image at `path` ([`sharpened_box`]: the
    /// coarse region cut by `rule`, the sharpened map by `cut`, with `adaptive` at the lower
    /// of its level and Otsu's), unless `how` is none, the whole-view rule made the box the
    /// whole image, or there is no box; where the image cannot be read the box stays and
    /// [`Located::note`] says why.
    pub fn sharpen_box(
        &mut self,
        path: &std::path::Path,
        how: Sharpen,
        rule: Binarize,
        cut: Binarize,
        adaptive: bool,
    ) {
        if how == Sharpen::None || self.whole_view || self.bbox.is_none() {
            return;
        }
        match sharpened_box(&self.heatmap, path, rule, cut, adaptive, how) {
            Ok(b) => {
                self.bbox = Some(b);
                self.sharpened = true;
            }
            Err(e) => self.note = Some(format!("box not sharpened: {e}")),
        }
    }
}

/// Result of a joint localization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointLocalization {
    /// Factors kept, by index in the joint factorization: their query heatmaps lie in the box
    /// ([`JointSelection::Mass`]), or their concepts match the query's kept concepts
    /// ([`JointSelection::Matched`]).
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
    Ok(kept_maps(u, kept, &vec![1.0; kept.len()], grid)?.0)
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
        equal_channels(query, targets)?;
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
        let raw_sum = |u: &Matrix, grid: CellGrid| kept_sum(u, &kept, &weights, grid);
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
            let (heatmap, factor_maps) = kept_maps(u, &kept, &weights, grid)?;
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
            Ok(Located::new(bbox, heatmap, factor_maps, strength))
        };
        let (query_located, targets_located, query_heatmaps) = locate_all(
            &joint.u_per_image,
            query,
            targets,
            &query_maps,
            &kept,
            locate,
        )?;
        Ok(JointLocalization {
            kept,
            fallback: filter.fallback,
            mass_inside: filter.mass_inside,
            query_heatmaps,
            query: query_located,
            targets: targets_located,
        })
    }

    /// The fast variant: localizes the region in a hit from its stored factors. `concepts` are
    /// the query's kept concepts (with their baselines over the index for
    /// [`Matching::Standardized`] and the whole-view rule); `hit` the hit's stored concepts
    /// (`K × C`) and its `K` heatmaps over `grid`; `binarize` the rule for the hit
    /// ([`Localizer::resolve`] turns a calibrated rule into one).
    pub fn from_stored(
        &self,
        concepts: &[QueryConcept],
        hit: HitFactors<'_>,
        grid: CellGrid,
        binarize: Binarize,
    ) -> Result<Located> {
        if hit.concepts.rows() != hit.heatmaps.len() {
            return Err(Error::invalid(format!(
                "stored factors: {} concept vectors for {} heatmaps",
                hit.concepts.rows(),
                hit.heatmaps.len()
            )));
        }
        if let Some(h) = hit.heatmaps.iter().find(|h| *h.grid() != grid) {
            return Err(Error::invalid(format!(
                "stored heatmap of {}×{} cells for a grid of {}×{}",
                h.grid().rows,
                h.grid().cols,
                grid.rows,
                grid.cols
            )));
        }
        let selected = stored::select(concepts, hit, self.cfg.matching);
        let maps: Vec<&Heatmap> = selected.iter().map(|s| &hit.heatmaps[s.0]).collect();
        let weights: Vec<f32> = selected.iter().map(|s| s.1).collect();
        let heatmap = Heatmap::average(grid, &maps, &weights)?;
        // One map per query factor: the weighted average of the hit's factors it selected.
        let mut labels: Vec<usize> = selected.iter().map(|s| s.2).collect();
        labels.sort_unstable();
        labels.dedup();
        let factor_maps = labels
            .into_iter()
            .map(|label| {
                let (m, w): (Vec<&Heatmap>, Vec<f32>) = selected
                    .iter()
                    .filter(|s| s.2 == label)
                    .map(|s| (&hit.heatmaps[s.0], s.1))
                    .unzip();
                Ok((label, Heatmap::average(grid, &m, &w)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut located = Located::new(heatmap.region_box(binarize), heatmap, factor_maps, None);
        located.apply_whole_view(region_fill(concepts, hit), self.cfg.whole_view);
        Ok(located)
    }

    /// Joint localization with [`JointSelection::Matched`]: the query's and the targets'
    /// activations — all in the space of `concepts` (the descriptor's factorization input,
    /// CroW-weighted when the recipe says so; a target may also be a reconstruction from its
    /// stored factors) — factorized together; per kept query concept the joint factor whose
    /// concept matches it best, weighted by the cosine; each image's weighted average of those
    /// factors' heatmaps binarized with `binarize` (resolve a calibrated rule first with
    /// [`Localizer::resolve`]). `bbox` is the query's region (for the record of each factor's
    /// mass inside it).
    pub fn joint_matched(
        &self,
        query: &Activations,
        bbox: &BBox,
        concepts: &[QueryConcept],
        targets: &[&Activations],
        binarize: Binarize,
    ) -> Result<JointLocalization> {
        let c = equal_channels(query, targets)?;
        if let Some(q) = concepts.iter().find(|q| q.vector.len() != c) {
            return Err(Error::invalid(format!(
                "query concept of {} channels for activations of {c}",
                q.vector.len()
            )));
        }
        let mut refs: Vec<&Matrix> = vec![&query.data];
        refs.extend(targets.iter().map(|t| &t.data));
        let joint = self.nmf.fit_joint(&refs)?;
        let v = &joint.factorization.v;
        let units: Vec<Option<Vec<f32>>> = (0..v.rows()).map(|r| stored::unit(v.row(r))).collect();
        let mut weight = vec![0f32; v.rows()];
        for q in concepts {
            let Some(q) = stored::unit(&q.vector) else {
                continue;
            };
            let best = units
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let t = t.as_ref()?;
                    Some((i, q.iter().zip(t).map(|(a, b)| a * b).sum::<f32>()))
                })
                .filter(|(_, cos)| cos.is_finite())
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, cos)) = best {
                weight[i] += cos.max(0.0);
            }
        }
        let kept: Vec<usize> = (0..v.rows()).filter(|&i| weight[i] > 0.0).collect();
        let weights: Vec<f32> = kept.iter().map(|&i| weight[i]).collect();
        let uq = &joint.u_per_image[0];
        let query_maps = Heatmap::columns(uq, query.grid)?;
        let filter = filter_factors(&query_maps, bbox, self.cfg.mass_threshold);
        // One joint factorization puts every image on one scale: the weighted sum of the kept
        // factors peaks in each image at a level comparable with its peak in the query.
        let query_peak = kept_sum(uq, &kept, &weights, query.grid)?.max();
        let locate = |u: &Matrix, grid: CellGrid| -> Result<Located> {
            let peak = kept_sum(u, &kept, &weights, grid)?.max();
            let strength = (query_peak > 0.0 && peak.is_finite()).then(|| peak / query_peak);
            let (heatmap, factor_maps) = kept_maps(u, &kept, &weights, grid)?;
            Ok(Located::new(
                heatmap.region_box(binarize),
                heatmap,
                factor_maps,
                strength,
            ))
        };
        let (query_located, targets_located, query_heatmaps) = locate_all(
            &joint.u_per_image,
            query,
            targets,
            &query_maps,
            &kept,
            locate,
        )?;
        Ok(JointLocalization {
            kept,
            fallback: false,
            mass_inside: filter.mass_inside,
            query_heatmaps,
            query: query_located,
            targets: targets_located,
        })
    }
}

/// Both joint selections' last step: the query's and every target's [`Located`] by `locate`
/// from their joint factors (`u_per_image`: the query's first, then the targets' in order),
/// and the query's kept factor heatmaps, each scaled to a maximum of 1.
fn locate_all(
    u_per_image: &[Matrix],
    query: &Activations,
    targets: &[&Activations],
    query_maps: &[Heatmap],
    kept: &[usize],
    locate: impl Fn(&Matrix, CellGrid) -> Result<Located>,
) -> Result<(Located, Vec<Located>, Vec<Heatmap>)> {
    let query_located = locate(&u_per_image[0], query.grid)?;
    let targets_located = targets
        .iter()
        .zip(&u_per_image[1..])
        .map(|(t, u)| locate(u, t.grid))
        .collect::<Result<Vec<_>>>()?;
    let query_heatmaps = kept
        .iter()
        .map(|&f| query_maps[f].clone().unit_max())
        .collect();
    Ok((query_located, targets_located, query_heatmaps))
}

/// Checks that every target has the query's channels; returns their number.
fn equal_channels(query: &Activations, targets: &[&Activations]) -> Result<usize> {
    let c = query.data.cols();
    match targets.iter().find(|t| t.data.cols() != c) {
        Some(t) => Err(Error::invalid(format!(
            "localization needs activations with equal channels ({c} for the query, {} for a target)",
            t.data.cols()
        ))),
        None => Ok(c),
    }
}

/// The weighted sum of the `kept` columns of one image's joint `u` (negative entries as 0),
/// unscaled: in one joint factorization every image's sums share one scale.
fn kept_sum(u: &Matrix, kept: &[usize], weights: &[f32], grid: CellGrid) -> Result<Heatmap> {
    let sum = (0..u.rows())
        .map(|r| {
            kept.iter()
                .zip(weights)
                .map(|(&f, &w)| w * u.get(r, f).max(0.0))
                .sum()
        })
        .collect();
    Heatmap::new(grid, sum)
}

/// The weighted average of the `kept` columns of one image's joint `u` as heatmaps over
/// `grid`, and each of them scaled to a maximum of 1, labelled with its factor.
fn kept_maps(
    u: &Matrix,
    kept: &[usize],
    weights: &[f32],
    grid: CellGrid,
) -> Result<(Heatmap, Vec<(usize, Heatmap)>)> {
    let maps = kept
        .iter()
        .map(|&f| Heatmap::from_column(u, f, grid))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Heatmap> = maps.iter().collect();
    let heatmap = Heatmap::average(grid, &refs, weights)?;
    let factor_maps = kept
        .iter()
        .copied()
        .zip(maps.into_iter().map(Heatmap::unit_max))
        .collect();
    Ok((heatmap, factor_maps))
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

    /// A `rows × cols` grid of 10-pixel cells, and a heatmap that is 1 on the cells of rows
    /// `r` and columns `c`, 0 elsewhere.
    fn block(g: CellGrid, r: std::ops::Range<usize>, c: std::ops::Range<usize>) -> Heatmap {
        let v = (0..g.len())
            .map(|i| f32::from(r.contains(&(i / g.cols)) && c.contains(&(i % g.cols))))
            .collect();
        Heatmap::new(g, v).unwrap()
    }

    fn complement(h: &Heatmap) -> Heatmap {
        Heatmap::new(*h.grid(), h.values().iter().map(|x| 1.0 - x).collect()).unwrap()
    }

    #[test]
    fn stored_localization_widens_to_the_whole_view_only_when_the_object_fills_it() {
        let g = grid(8, 8);
        let v = Matrix::from_vec(2, 3, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
        let q = [QueryConcept {
            factor: 5,
            vector: vec![1.0, 0.0, 0.1],
            baseline: Some(Baseline {
                mean: 0.4,
                std: 0.1,
            }),
        }];
        let loc = Localizer::builder().build().unwrap();
        let rule = Binarize::RelativeToMax(0.5);
        // A small object (2×3 cells): its box, no whole view.
        let obj = block(g, 2..4, 3..6);
        let maps = [obj.clone(), complement(&obj)];
        let hit = HitFactors {
            concepts: &v,
            heatmaps: &maps,
        };
        let small = loc.from_stored(&q, hit, g, rule).unwrap();
        assert!(!small.whole_view);
        assert!(
            (small.fill.unwrap() - 6.0 / 64.0).abs() < 1e-5,
            "{:?}",
            small.fill
        );
        let truth = BBox::new(30.0, 20.0, 60.0, 40.0).unwrap();
        assert!(small.bbox.unwrap().iou(&truth) > 0.7, "{:?}", small.bbox);
        assert_eq!(small.factor_maps.len(), 1);
        assert_eq!(small.factor_maps[0].0, 5);
        // An object over 7 of 8 rows: the whole image.
        let big = block(g, 0..7, 0..8);
        let maps = [big.clone(), complement(&big)];
        let hit = HitFactors {
            concepts: &v,
            heatmaps: &maps,
        };
        let whole = loc.from_stored(&q, hit, g, rule).unwrap();
        assert!(whole.whole_view);
        assert_eq!(whole.bbox, Some(BBox::new(0.0, 0.0, 80.0, 80.0).unwrap()));
        // With the rule off, the heatmap's box.
        let off = Localizer::builder().whole_view(None).build().unwrap();
        let b = off.from_stored(&q, hit, g, rule).unwrap();
        assert!(!b.whole_view);
        assert_eq!(b.bbox, Some(BBox::new(0.0, 0.0, 80.0, 70.0).unwrap()));
        assert!(b.fill.unwrap() > 0.8);
        // Bad input is an error, not a panic.
        assert!(loc.from_stored(&q, hit, grid(4, 4), rule).is_err());
        let one = [big];
        let short = HitFactors {
            concepts: &v,
            heatmaps: &one,
        };
        assert!(loc.from_stored(&q, short, g, rule).is_err());
        for t in [0.0, -1.0, 1.5, f32::NAN] {
            assert!(
                Localizer::builder().whole_view(Some(t)).build().is_err(),
                "{t}"
            );
        }
    }

    #[test]
    fn joint_on_the_stored_reconstruction_finds_what_joint_on_the_activations_finds() {
        // Activations that are exactly of rank 2: an object concept on a block, a background
        // concept elsewhere, in the query (4×4 cells) and in a target (8×8 cells).
        let v = Matrix::from_vec(
            2,
            6,
            vec![1.0, 0.8, 0.0, 0.1, 0.0, 0.3, 0.0, 0.1, 1.0, 0.9, 0.7, 0.2],
        )
        .unwrap();
        let acts = |g: CellGrid, obj: &Heatmap| -> (Matrix, Activations) {
            let bg = complement(obj);
            let mut u = Matrix::zeros(g.len(), 2);
            for c in 0..g.len() {
                u.set(c, 0, 2.0 * obj.values()[c]);
                u.set(c, 1, 0.5 + bg.values()[c]);
            }
            let data = u.matmul(&v).unwrap();
            (u, Activations { grid: g, data })
        };
        let (qg, tg) = (grid(4, 4), grid(8, 8));
        let (_, query) = acts(qg, &block(qg, 0..2, 0..2));
        let (ut, target) = acts(tg, &block(tg, 4..7, 2..6));
        // The target's factors as an index stores them (f16 concepts, 8-bit heatmaps), and
        // the activations they reconstruct.
        let sf = crate::index::StoredFactors::quantize(&v, &ut, tg.rows, tg.cols).unwrap();
        let (sv, maps) = (sf.concepts(), sf.heatmaps_over(80, 80).unwrap());
        let hit = HitFactors {
            concepts: &sv,
            heatmaps: &maps,
        };
        let recon = reconstruction(hit, tg).unwrap();
        let scale = target
            .data
            .as_slice()
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()));
        for (a, b) in target.data.as_slice().iter().zip(recon.data.as_slice()) {
            assert!((a - b).abs() <= 0.01 * scale, "{a} vs {b}");
        }
        let concepts = [QueryConcept {
            factor: 0,
            vector: v.row(0).to_vec(),
            baseline: None,
        }];
        let loc = Localizer::builder().k(2).build().unwrap();
        let qbox = BBox::new(0.0, 0.0, 20.0, 20.0).unwrap();
        let rule = Binarize::RelativeToMax(0.5);
        let net = loc
            .joint_matched(&query, &qbox, &concepts, &[&target], rule)
            .unwrap();
        let rec = loc
            .joint_matched(&query, &qbox, &concepts, &[&recon], rule)
            .unwrap();
        let truth = BBox::new(20.0, 40.0, 60.0, 70.0).unwrap();
        let (a, b) = (net.targets[0].bbox.unwrap(), rec.targets[0].bbox.unwrap());
        assert!(a.iou(&truth) > 0.7, "{a:?}");
        assert!(a.iou(&b) > 0.95, "{a:?} vs {b:?}");
        assert_eq!(net.kept, rec.kept);
        // A concept of another width, or a reconstruction of mismatched parts, is an error.
        let wrong = [QueryConcept {
            factor: 0,
            vector: vec![1.0; 5],
            baseline: None,
        }];
        assert!(loc
            .joint_matched(&query, &qbox, &wrong, &[&target], rule)
            .is_err());
        assert!(reconstruction(hit, qg).is_err());
        let half = HitFactors {
            concepts: &sv,
            heatmaps: &maps[..1],
        };
        assert!(reconstruction(half, tg).is_err());
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
