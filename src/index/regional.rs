//! Factor-level (regional) search: a region query's factor concepts matched against the
//! factor vectors every segment stores (format version 2), aggregated per image and mixed
//! with the global descriptor score.
//!
//! An image that shows the query's object small is a small part of its global descriptor,
//! but one of its NMF factors usually covers the object: its concept vector (a row of `V`,
//! unit length) is close to the query's. So each image gets a **factor score** — by default
//! the mean over the query's factors of the best cosine among the image's factor vectors
//! ([`FactorAggregation::Best`]) — and the ranking score is
//! `(1 − λ)·z(global) + λ·z(factor)`, both scores standardized (`z`) with the mean and
//! standard deviation over a fixed sample of the database.
//!
//! Standardizing over a sample, not over the candidates, is what lets the graph search give
//! the exhaustive ranking: the statistics do not depend on which images the shortlist holds.
//! With at most [`DEFAULT_STANDARDIZE_SAMPLE`] live images the sample is the whole database
//! and exact search ranks exactly as the whole-database formula; beyond it, every n-th live
//! image (deterministic, spread over the segments) estimates the statistics.
//!
//! Candidates: every live image in exact mode; with the graphs, the union of the global
//! shortlist and the owners of each query factor's nearest factor vectors, all rescored
//! exactly.
//!
//! **Crop check** ([`CropCheck`], [`Index::search_regional`]): a region query may also bring
//! its cut-out, described on its own at full resolution ([`CropView`]). The cut-out's global
//! and factor scores are mixed the same way into a second score `c`, standardized over the
//! same sample; an image whose `z(c)` passes the outlier level τ (default
//! [`DEFAULT_CROP_OUTLIER`] standard deviations) is lifted by
//! `β·σ(m)·(z(c) − τ)` (β = [`DEFAULT_CROP_WEIGHT`], `σ(m)` the deviation of the region's
//! mixed score `m` over the sample): `score = m + β·σ(m)·max(0, z(c) − τ)`, which ranks as
//! `z(m) + β·max(0, z(c) − τ)`. Images the cut-out recognizes as the same view come first;
//! every other image keeps the region's ranking. When the query path brings the cut-out is
//! the query's business ([`crate::query`]: the region's factor coverage).

use super::exact::{self, dot, Scorer};
use super::options::SearchMode;
use super::reader::{Index, LiveSegment};
use super::SearchOptions;
use crate::{Error, Recipe, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Default weight λ of the factor score.
pub const DEFAULT_FACTOR_WEIGHT: f32 = 0.9;
/// Default number of nearest factor vectors fetched per query factor by the graph search.
pub const DEFAULT_FACTOR_SHORTLIST: usize = 200;
/// Default number of global hits fetched by the graph search before rescoring (at least the
/// hits asked for).
pub const DEFAULT_GLOBAL_SHORTLIST: usize = 200;
/// Default number of live images the standardization statistics are computed over.
pub const DEFAULT_STANDARDIZE_SAMPLE: usize = 4096;
/// Default factor coverage of a region (share of its factor mass held by the factors the
/// filter keeps) below which the query path checks the region's cut-out ([`CropCheck`]).
pub const DEFAULT_CROP_COVERAGE: f32 = 0.7;
/// Default outlier level τ of the crop check, in standard deviations of the cut-out's score.
pub const DEFAULT_CROP_OUTLIER: f32 = 5.0;
/// Default weight β of the crop check's lift, per standard deviation beyond τ.
pub const DEFAULT_CROP_WEIGHT: f32 = 10.0;

/// When a region query also checks its cut-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropCheckMode {
    /// When the region's factor coverage is below [`CropCheck::get_coverage`] (the factors
    /// the filter keeps explain too little of the region: a part of a scene rather than an
    /// object), so one more network run on the cut-out only where it can pay.
    #[default]
    Auto,
    /// Never.
    Off,
    /// For every region query with factor-level search.
    Always,
}

impl std::str::FromStr for CropCheckMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(CropCheckMode::Auto),
            "off" => Ok(CropCheckMode::Off),
            "always" => Ok(CropCheckMode::Always),
            _ => Err(Error::invalid(format!(
                "crop check {s:?}: expected auto, off or always"
            ))),
        }
    }
}

impl std::fmt::Display for CropCheckMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CropCheckMode::Auto => "auto",
            CropCheckMode::Off => "off",
            CropCheckMode::Always => "always",
        })
    }
}

/// The crop check of a region query (see the module documentation): when it runs, and how
/// strongly the cut-out's outliers lift. Defaults: [`CropCheckMode::Auto`] below coverage
/// [`DEFAULT_CROP_COVERAGE`], τ = [`DEFAULT_CROP_OUTLIER`], β = [`DEFAULT_CROP_WEIGHT`].
///
/// ```
/// use deepfactor::index::{CropCheck, CropCheckMode};
/// let c = CropCheck::new().mode(CropCheckMode::Always).outlier(4.0);
/// assert!(c.runs(0.95));
/// assert!(!CropCheck::new().runs(0.95) && CropCheck::new().runs(0.3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropCheck {
    mode: CropCheckMode,
    coverage: f32,
    outlier: f32,
    weight: f32,
}

impl Default for CropCheck {
    fn default() -> Self {
        CropCheck {
            mode: CropCheckMode::Auto,
            coverage: DEFAULT_CROP_COVERAGE,
            outlier: DEFAULT_CROP_OUTLIER,
            weight: DEFAULT_CROP_WEIGHT,
        }
    }
}

impl CropCheck {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// When it runs.
    pub fn mode(mut self, m: CropCheckMode) -> Self {
        self.mode = m;
        self
    }

    /// The coverage below which [`CropCheckMode::Auto`] runs it (0..=1).
    pub fn coverage(mut self, c: f32) -> Self {
        self.coverage = c;
        self
    }

    /// τ: standard deviations of the cut-out's score an image must pass to be lifted.
    pub fn outlier(mut self, t: f32) -> Self {
        self.outlier = t;
        self
    }

    /// β: the lift per standard deviation beyond τ, in deviations of the region's score.
    pub fn weight(mut self, w: f32) -> Self {
        self.weight = w;
        self
    }

    /// See [`CropCheck::mode`].
    pub fn get_mode(&self) -> CropCheckMode {
        self.mode
    }

    /// See [`CropCheck::coverage`].
    pub fn get_coverage(&self) -> f32 {
        self.coverage
    }

    /// See [`CropCheck::outlier`].
    pub fn get_outlier(&self) -> f32 {
        self.outlier
    }

    /// See [`CropCheck::weight`].
    pub fn get_weight(&self) -> f32 {
        self.weight
    }

    /// Whether it runs for a region of factor coverage `coverage` (`None`: unknown, as for a
    /// region without factor mass — then only [`CropCheckMode::Always`] runs it).
    pub fn runs(&self, coverage: impl Into<Option<f32>>) -> bool {
        match self.mode {
            CropCheckMode::Off => false,
            CropCheckMode::Always => true,
            CropCheckMode::Auto => coverage.into().is_some_and(|c| c < self.coverage),
        }
    }

    /// Refuses settings outside their ranges.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.coverage) {
            return Err(Error::invalid(format!(
                "crop check coverage {} is outside 0..=1",
                self.coverage
            )));
        }
        if !self.outlier.is_finite() || !self.weight.is_finite() || self.weight < 0.0 {
            return Err(Error::invalid(format!(
                "crop check outlier level {} and weight {} must be finite, the weight \
                 non-negative",
                self.outlier, self.weight
            )));
        }
        Ok(())
    }

    /// The lifted score of an image: its region score `m`, standardized with `m_stats`
    /// (mean, deviation over the sample), lifted by the cut-out's standardized score `zc`:
    /// `m + β·σ(m)·max(0, zc − τ)`.
    pub fn lift(&self, m: f32, m_stats: (f32, f32), zc: f32) -> f32 {
        m + self.weight * m_stats.1 * (zc - self.outlier).max(0.0)
    }
}

/// A region query's cut-out described on its own: its global descriptor and its factors.
#[derive(Debug, Clone, Copy)]
pub struct CropView<'a> {
    /// The cut-out's global descriptor (made with the index's recipe).
    pub vector: &'a [f32],
    /// The cut-out's factors.
    pub factors: &'a [QueryFactor],
}

/// How an image's factor matches make its factor score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorAggregation {
    /// Mean over the query's factors of the best cosine in the image.
    Best,
    /// Mean over the query's factors of the best cosine, clipped at 0 and cubed (ASMK's
    /// selectivity with α = 3): strong matches count, weak ones hardly.
    #[default]
    Best3,
}

impl FactorAggregation {
    /// The factor score of per-query-factor best cosines.
    pub fn aggregate(self, best: &[f32]) -> f32 {
        if best.is_empty() {
            return 0.0;
        }
        let sum: f32 = match self {
            FactorAggregation::Best => best.iter().sum(),
            FactorAggregation::Best3 => best.iter().map(|x| x.max(0.0).powi(3)).sum(),
        };
        sum / best.len() as f32
    }
}

impl std::str::FromStr for FactorAggregation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "best" => Ok(FactorAggregation::Best),
            "best3" => Ok(FactorAggregation::Best3),
            _ => Err(Error::invalid(format!(
                "factor aggregation {s:?}: expected best or best3"
            ))),
        }
    }
}

impl std::fmt::Display for FactorAggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FactorAggregation::Best => "best",
            FactorAggregation::Best3 => "best3",
        })
    }
}

/// How factor-level search takes part in ranking. Defaults: weight
/// [`DEFAULT_FACTOR_WEIGHT`], [`FactorAggregation::Best`], shortlists
/// [`DEFAULT_FACTOR_SHORTLIST`] and [`DEFAULT_GLOBAL_SHORTLIST`], standardization over
/// [`DEFAULT_STANDARDIZE_SAMPLE`] images.
///
/// ```
/// use deepfactor::index::{FactorAggregation, FactorSearch};
/// let f = FactorSearch::new().weight(1.0).aggregation(FactorAggregation::Best3);
/// assert_eq!(f.get_weight(), 1.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FactorSearch {
    weight: f32,
    aggregation: FactorAggregation,
    factor_shortlist: usize,
    global_shortlist: usize,
    sample: usize,
}

impl Default for FactorSearch {
    fn default() -> Self {
        FactorSearch {
            weight: DEFAULT_FACTOR_WEIGHT,
            aggregation: FactorAggregation::default(),
            factor_shortlist: DEFAULT_FACTOR_SHORTLIST,
            global_shortlist: DEFAULT_GLOBAL_SHORTLIST,
            sample: DEFAULT_STANDARDIZE_SAMPLE,
        }
    }
}

impl FactorSearch {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// λ, the factor score's weight in 0..=1 (0: global ranking, 1: factor score only).
    pub fn weight(mut self, w: f32) -> Self {
        self.weight = w;
        self
    }

    /// How matches aggregate per image.
    pub fn aggregation(mut self, a: FactorAggregation) -> Self {
        self.aggregation = a;
        self
    }

    /// Nearest factor vectors fetched per query factor by the graph search.
    pub fn factor_shortlist(mut self, n: usize) -> Self {
        self.factor_shortlist = n;
        self
    }

    /// Global hits fetched by the graph search before rescoring.
    pub fn global_shortlist(mut self, n: usize) -> Self {
        self.global_shortlist = n;
        self
    }

    /// Live images the standardization statistics are computed over.
    pub fn standardize_sample(mut self, n: usize) -> Self {
        self.sample = n;
        self
    }

    /// λ.
    pub fn get_weight(&self) -> f32 {
        self.weight
    }

    /// The aggregation.
    pub fn get_aggregation(&self) -> FactorAggregation {
        self.aggregation
    }

    /// Factor shortlist per query factor.
    pub fn get_factor_shortlist(&self) -> usize {
        self.factor_shortlist
    }

    /// Global shortlist.
    pub fn get_global_shortlist(&self) -> usize {
        self.global_shortlist
    }

    /// Standardization sample size.
    pub fn get_standardize_sample(&self) -> usize {
        self.sample
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(Error::invalid(format!(
                "factor weight {} is outside 0..=1",
                self.weight
            )));
        }
        if self.factor_shortlist == 0 || self.global_shortlist == 0 || self.sample == 0 {
            return Err(Error::invalid(
                "factor search shortlists and standardization sample must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One query factor's best match in an image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FactorMatch {
    /// The query factor's number in the query's factorization.
    pub query_factor: usize,
    /// The matched factor's number in the image's stored factors.
    pub image_factor: usize,
    /// Cosine of the two concept vectors.
    pub score: f32,
}

/// A hit of a factor-level search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionalHit {
    /// The image's id.
    pub id: u64,
    /// The ranking score, `(1 − λ)·z(global) + λ·z(factor)`.
    pub score: f32,
    /// Cosine of the global descriptors.
    pub global: f32,
    /// The factor score (see [`FactorAggregation`]).
    pub factor: f32,
    /// Each query factor's best match in the image, in query-factor order (empty when the
    /// image has no factor vectors).
    pub matches: Vec<FactorMatch>,
    /// With a crop check: the cut-out's mixed score, standardized (`z(c)`, see
    /// [`CropCheck`]).
    pub crop: Option<f32>,
}

/// A query factor: its number in the query's factorization and its concept vector.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryFactor {
    /// Its number (reported back in [`FactorMatch::query_factor`]).
    pub factor: usize,
    /// Its concept vector, any length (normalized here).
    pub concept: Vec<f32>,
}

/// Mean and standard deviation of `x` (population; the deviation at least 10⁻⁶).
fn moments(x: &[f32]) -> (f32, f32) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, (var.sqrt() as f32).max(1e-6))
}

/// The mix of a global and a factor score standardized with `(mean, sd)` pairs.
pub fn mix_scores(global: f32, factor: f32, g: (f32, f32), f: (f32, f32), weight: f32) -> f32 {
    (1.0 - weight) * (global - g.0) / g.1 + weight * (factor - f.0) / f.1
}

/// Ranks images by the mix of a global score and a factor score, each standardized over all
/// the given images: `scores[i] = (global, per-query-factor best cosines)`. Returns the
/// mixed scores. (What [`Index::search_factors`] computes over the whole database in exact
/// mode; stated separately to be checked by hand.)
pub fn mix_standardized(
    scores: &[(f32, Vec<f32>)],
    aggregation: FactorAggregation,
    weight: f32,
) -> Vec<f32> {
    let g: Vec<f32> = scores.iter().map(|s| s.0).collect();
    let f: Vec<f32> = scores.iter().map(|s| aggregation.aggregate(&s.1)).collect();
    let (gm, fm) = (moments(&g), moments(&f));
    g.iter()
        .zip(&f)
        .map(|(&a, &b)| mix_scores(a, b, gm, fm, weight))
        .collect()
}

/// One live image being scored: segment position and row.
type Slot = (usize, usize);

struct Scored {
    global: f32,
    factor: f32,
    matches: Vec<FactorMatch>,
}

impl Index {
    /// Whether every segment that stores factors also stores their factor vectors (false for
    /// an index written in format version 1 until `deepfactor index compact` rewrites it).
    pub fn has_factor_vectors(&self) -> bool {
        self.live_segments()
            .iter()
            .all(|s| !s.seg.lacks_factor_vectors())
    }

    /// Number of factor vectors in the live segments (deleted images' included).
    pub fn factor_vectors(&self) -> usize {
        self.live_segments().iter().map(|s| s.seg.regions()).sum()
    }

    /// Factor-level search: the `options.get_k()` images ranked by the mix of the global
    /// descriptor score (of `query`, made with `recipe`) and the factor score of
    /// `query_factors` (see the module documentation). Refuses an index without factor
    /// vectors and query factors of another length than the stored concepts.
    pub fn search_factors(
        &self,
        recipe: &Recipe,
        query: &[f32],
        query_factors: &[QueryFactor],
        options: &SearchOptions,
        factor_search: &FactorSearch,
    ) -> Result<Vec<RegionalHit>> {
        self.search_regional(recipe, query, query_factors, None, options, factor_search)
    }

    /// [`Index::search_factors`] with, when given, the crop check: the region's cut-out
    /// (`crop`) scored the same way and its outliers lifted as [`CropCheck`] says (its mode
    /// is the caller's business: given, it runs).
    pub fn search_regional(
        &self,
        recipe: &Recipe,
        query: &[f32],
        query_factors: &[QueryFactor],
        crop: Option<(CropView<'_>, &CropCheck)>,
        options: &SearchOptions,
        factor_search: &FactorSearch,
    ) -> Result<Vec<RegionalHit>> {
        factor_search.validate()?;
        if let Some((_, c)) = crop {
            c.validate()?;
        }
        if !self.has_factor_vectors() {
            return Err(Error::invalid(format!(
                "{}: the index was written in format version 1 and has no factor vectors; \
                 run `deepfactor index compact` on it (rewrites its segments, no image is read)",
                self.dir().display()
            )));
        }
        let qf = self.unit_query_factors(query_factors)?;
        let cf = match crop {
            Some((v, _)) => self.unit_query_factors(v.factors)?,
            None => Vec::new(),
        };
        // The global search checks the recipe and the query; its hits seed the candidates.
        let k = options.get_k();
        let use_graph = match options.get_mode() {
            SearchMode::Exact => false,
            SearchMode::Hnsw => true,
            SearchMode::Auto => self.len() >= options.get_exact_threshold(),
        };
        let global_k = if use_graph {
            k.max(factor_search.global_shortlist)
        } else {
            k
        };
        let global_hits = self.search(recipe, query, &options.clone().k(global_k))?;
        let crop_hits = match crop {
            Some((v, _)) => self.search(recipe, v.vector, &options.clone().k(global_k))?,
            None => Vec::new(),
        };
        let segs = self.live_segments();
        let mut candidates: BTreeSet<Slot> = BTreeSet::new();
        if use_graph {
            for h in global_hits.iter().chain(&crop_hits) {
                candidates.extend(self.locate(h.id));
            }
            for (i, s) in segs.iter().enumerate() {
                for (_, q) in qf.iter().chain(&cf) {
                    for row in nearest_factor_owners(s, q, factor_search, options) {
                        candidates.insert((i, row));
                    }
                }
            }
        } else {
            for (i, s) in segs.iter().enumerate() {
                candidates.extend(
                    (0..s.seg.docs())
                        .filter(|&r| !s.is_deleted(r))
                        .map(|r| (i, r)),
                );
            }
        }
        // Standardization statistics over a fixed sample of live images.
        // Each image is scored once, whether in the sample, the candidates or both.
        let sample = sample_slots(segs, self.len(), factor_search.sample);
        let all: BTreeSet<Slot> = sample
            .iter()
            .copied()
            .chain(candidates.iter().copied())
            .collect();
        let all: Vec<Slot> = all.into_iter().collect();
        let agg = factor_search.aggregation;
        let scored: Vec<(Scored, Option<Scored>)> = all
            .par_iter()
            .map(|&slot| {
                let region = score_slot(segs, slot, query, &qf, agg);
                let cut = crop.map(|(v, _)| score_slot(segs, slot, v.vector, &cf, agg));
                (region, cut)
            })
            .collect();
        let at = |slot: &Slot| all.binary_search(slot).ok().map(|i| &scored[i]);
        let in_sample: Vec<&(Scored, Option<Scored>)> = sample.iter().filter_map(&at).collect();
        let stats = |f: &dyn Fn(&Scored) -> f32, crop_side: bool| -> (f32, f32) {
            let x: Vec<f32> = in_sample
                .iter()
                .filter_map(|(r, c)| if crop_side { c.as_ref() } else { Some(r) })
                .map(f)
                .collect();
            moments(&x)
        };
        let w = factor_search.weight;
        let (gm, fm) = (stats(&|x| x.global, false), stats(&|x| x.factor, false));
        let (cgm, cfm) = (stats(&|x| x.global, true), stats(&|x| x.factor, true));
        let mixed =
            |x: &Scored, g: (f32, f32), f: (f32, f32)| mix_scores(x.global, x.factor, g, f, w);
        let mm = stats(&|x| mixed(x, gm, fm), false);
        let cm = stats(&|x| mixed(x, cgm, cfm), true);
        let mut hits: Vec<RegionalHit> = Vec::with_capacity(candidates.len());
        for slot in candidates {
            let Some(&id) = segs[slot.0].seg.ids().get(slot.1) else {
                continue;
            };
            let Some((sc, cut)) = at(&slot) else {
                continue;
            };
            let m = mixed(sc, gm, fm);
            let zc = cut.as_ref().map(|c| (mixed(c, cgm, cfm) - cm.0) / cm.1);
            let score = match (crop, zc) {
                (Some((_, check)), Some(zc)) => check.lift(m, mm, zc),
                _ => m,
            };
            hits.push(RegionalHit {
                id,
                score,
                global: sc.global,
                factor: sc.factor,
                matches: sc.matches.clone(),
                crop: zc,
            });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits.truncate(k);
        Ok(hits)
    }

    /// The query factors checked against the stored concepts' length, normalized (all-zero
    /// ones left out).
    fn unit_query_factors(&self, query_factors: &[QueryFactor]) -> Result<Vec<(usize, Vec<f32>)>> {
        let channels = self
            .live_segments()
            .iter()
            .map(|s| s.seg.info.factor_channels)
            .find(|&c| c > 0);
        let mut qf: Vec<(usize, Vec<f32>)> = Vec::with_capacity(query_factors.len());
        for f in query_factors {
            if Some(f.concept.len()) != channels {
                return Err(Error::invalid(format!(
                    "query factor {} has {} values, the stored factors {}",
                    f.factor,
                    f.concept.len(),
                    channels.map_or("none".into(), |c| c.to_string())
                )));
            }
            if f.concept.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "query factor {} has a non-finite value",
                    f.factor
                )));
            }
            let n = f.concept.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                qf.push((f.factor, f.concept.iter().map(|x| x / n).collect()));
            }
        }
        Ok(qf)
    }
}

/// The crop check over scores given by hand: `region[i]` and `cut[i]` are image `i`'s mixed
/// scores of the region and of its cut-out; both are standardized over all the images and
/// each region score lifted as [`CropCheck::lift`] says. (What [`Index::search_regional`]
/// computes over the whole database in exact mode; stated separately to be checked by hand.)
pub fn lift_standardized(region: &[f32], cut: &[f32], check: &CropCheck) -> Vec<f32> {
    let (mm, cm) = (moments(region), moments(cut));
    region
        .iter()
        .zip(cut)
        .map(|(&m, &c)| check.lift(m, mm, (c - cm.0) / cm.1))
        .collect()
}

/// Rows owning the factor vectors of segment `s` nearest to `q` (graph when the segment has
/// one, else exact), live ones only.
fn nearest_factor_owners(
    s: &LiveSegment,
    q: &[f32],
    fs: &FactorSearch,
    options: &SearchOptions,
) -> Vec<usize> {
    let vectors = s.seg.region_vectors();
    let n = fs.factor_shortlist;
    let found = match s.seg.region_graph() {
        Some(g) => g.search(vectors, &[], q, n, options.get_ef_search().max(n)),
        None => exact::search(vectors, &[], q, n),
    };
    let refs = s.seg.region_refs();
    found
        .into_iter()
        .filter_map(|c| refs.get(c.row as usize).map(|r| r.row as usize))
        .filter(|&row| row < s.seg.docs() && !s.is_deleted(row))
        .collect()
}

/// Up to `n` live slots spread evenly over all `live` images (all of them when `live ≤ n`).
fn sample_slots(segs: &[LiveSegment], live: usize, n: usize) -> Vec<Slot> {
    let stride = live.div_ceil(n.max(1)).max(1);
    let mut out = Vec::with_capacity(live.min(n));
    let mut at = 0usize;
    for (i, s) in segs.iter().enumerate() {
        for r in 0..s.seg.docs() {
            if s.is_deleted(r) {
                continue;
            }
            if at.is_multiple_of(stride) {
                out.push((i, r));
            }
            at += 1;
        }
    }
    out
}

/// Global and factor score of one live image, with its matches.
fn score_slot(
    segs: &[LiveSegment],
    (i, row): Slot,
    query: &[f32],
    qf: &[(usize, Vec<f32>)],
    aggregation: FactorAggregation,
) -> Scored {
    let seg = &segs[i].seg;
    let global = Scorer::new(seg.vectors(), query).score(row);
    let range = seg.region_range(row);
    let refs = seg.region_refs();
    let vectors = seg.region_vectors();
    let mut matches = Vec::new();
    let mut best = Vec::with_capacity(qf.len());
    if !range.is_empty() {
        let rows: Vec<(usize, Vec<f32>)> = range
            .filter_map(|v| {
                let factor = refs.get(v)?.factor as usize;
                vectors.row(v).map(|x| (factor, x))
            })
            .collect();
        for (qi, q) in qf {
            let m = rows
                .iter()
                .map(|(f, x)| (*f, dot(x, q)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
            if let Some((image_factor, score)) = m {
                matches.push(FactorMatch {
                    query_factor: *qi,
                    image_factor,
                    score,
                });
                best.push(score);
            }
        }
    }
    // An image without factor vectors scores 0 for every query factor.
    if best.is_empty() {
        best = vec![0.0; qf.len()];
    }
    Scored {
        global,
        factor: aggregation.aggregate(&best),
        matches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_by_hand() {
        assert_eq!(FactorAggregation::Best.aggregate(&[0.5, 0.25]), 0.375);
        assert_eq!(FactorAggregation::Best3.aggregate(&[0.5, -0.5]), 0.0625);
        assert_eq!(FactorAggregation::Best.aggregate(&[]), 0.0);
    }

    #[test]
    fn standardized_mix_by_hand() {
        // Globals 1, 2, 3 (mean 2, sd √(2/3)); factor scores 0, 0, 3 (mean 1, sd √2).
        let s = vec![(1.0, vec![0.0]), (2.0, vec![0.0]), (3.0, vec![3.0])];
        let half = mix_standardized(&s, FactorAggregation::Best, 0.5);
        let zg = [
            -1.0 / (2.0f32 / 3.0).sqrt(),
            0.0,
            1.0 / (2.0f32 / 3.0).sqrt(),
        ];
        let zf = [-1.0 / 2f32.sqrt(), -1.0 / 2f32.sqrt(), 2.0 / 2f32.sqrt()];
        for i in 0..3 {
            assert!((half[i] - 0.5 * (zg[i] + zf[i])).abs() < 1e-5, "{half:?}");
        }
        // λ = 1 ranks by the factor score alone; λ = 0 by the global score.
        let only_f = mix_standardized(&s, FactorAggregation::Best, 1.0);
        assert!(only_f[0] == only_f[1] && only_f[2] > only_f[0]);
        let only_g = mix_standardized(&s, FactorAggregation::Best, 0.0);
        assert!(only_g[0] < only_g[1] && only_g[1] < only_g[2]);
    }

    #[test]
    fn crop_lift_by_hand() {
        // Region scores 0, 1, 2, 3 (mean 1.5, sd √1.25); cut-out scores 0, 0, 0, 8 (mean 2,
        // sd √12): only image 3 passes τ = 1 (z = 6/√12 ≈ 1.73), lifted by
        // β·σ(m)·(z − τ); the rest keep their region score.
        let check = CropCheck::new().outlier(1.0).weight(2.0);
        let out = lift_standardized(&[0.0, 1.0, 2.0, 3.0], &[0.0, 0.0, 0.0, 8.0], &check);
        assert_eq!(&out[..3], &[0.0, 1.0, 2.0]);
        let z = 6.0 / 12f32.sqrt();
        let want = 3.0 + 2.0 * 1.25f32.sqrt() * (z - 1.0);
        assert!((out[3] - want).abs() < 1e-5, "{out:?}");
        // A cut-out that stands out lifts a region loser over the region's winner when β is
        // large enough (β·σ(m)·(z − τ) = 5·1.12·0.73 ≈ 4.1 > 3)…
        let out = lift_standardized(
            &[3.0, 0.0, 1.0, 2.0],
            &[0.0, 8.0, 0.0, 0.0],
            &check.weight(5.0),
        );
        assert!(out[1] > out[0], "{out:?}");
        // …and one that does not (τ above every z) changes nothing.
        let out = lift_standardized(
            &[3.0, 0.0, 1.0, 2.0],
            &[0.0, 8.0, 0.0, 0.0],
            &check.outlier(2.0),
        );
        assert_eq!(out, vec![3.0, 0.0, 1.0, 2.0]);
        // β = 0 is the region's ranking.
        let out = lift_standardized(&[3.0, 0.0], &[0.0, 8.0], &check.weight(0.0));
        assert_eq!(out, vec![3.0, 0.0]);
    }

    #[test]
    fn crop_check_rule_and_options() {
        let c = CropCheck::new();
        assert_eq!(c.get_coverage(), DEFAULT_CROP_COVERAGE);
        // Auto: below the coverage only, never when it is unknown.
        assert!(c.runs(0.3) && !c.runs(0.7) && !c.runs(0.95) && !c.runs(None));
        assert!(c.mode(CropCheckMode::Always).runs(None));
        assert!(!c.mode(CropCheckMode::Off).runs(0.0));
        assert!(c.coverage(1.5).validate().is_err());
        assert!(c.weight(-1.0).validate().is_err());
        assert!(c.outlier(f32::NAN).validate().is_err());
        assert!(c.validate().is_ok());
        assert_eq!(
            "always".parse::<CropCheckMode>().ok(),
            Some(CropCheckMode::Always)
        );
        assert!("sometimes".parse::<CropCheckMode>().is_err());
    }

    #[test]
    fn options_checked() {
        assert!(FactorSearch::new().weight(1.5).validate().is_err());
        assert!(FactorSearch::new().factor_shortlist(0).validate().is_err());
        assert!(FactorSearch::new().validate().is_ok());
        assert_eq!(
            "best3".parse::<FactorAggregation>().ok(),
            Some(FactorAggregation::Best3)
        );
        assert!("sum".parse::<FactorAggregation>().is_err());
    }
}
