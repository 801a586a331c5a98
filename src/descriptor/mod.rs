//! Global image descriptors from one layer's activations: the thesis' NMF V and NMF V+U, and
//! the classic pooled baselines (MAC, SPoC, GeM, R-MAC, CroW) computed by the same code.
//!
//! A [`Describer`] is built from a [`DescriptorConfig`] and turns [`Activations`] into a
//! [`Description`]: a unit vector for cosine search, plus — for the NMF kinds — the image's
//! factors, which factors the vector was built from, and how much of each heatmap lies inside
//! a query box.
//!
//! ```
//! use deepfactor::Activations;
//! use deepfactor::descriptor::{DescriptorConfig, DescriptorKind};
//! use deepfactor::linalg::Matrix;
//! use deepfactor::{BBox, CellGrid};
//! # fn main() -> deepfactor::Result<()> {
//! // A 4 × 6 grid of 16 channels (a network would give e.g. 16 × 22 × 1280).
//! let grid = CellGrid { rows: 4, cols: 6, image_width: 600, image_height: 400 };
//! let data = (0..24 * 16).map(|i| ((i * 7919) % 13) as f32 / 4.0).collect();
//! let acts = Activations { grid, data: Matrix::from_vec(24, 16, data)? };
//!
//! let describer = DescriptorConfig::new(DescriptorKind::NmfVu).k(4).build()?;
//! let d = describer.describe(&acts)?;
//! assert_eq!(d.vector.len(), 16);
//! assert_eq!(d.kept, vec![0, 1, 2, 3]);
//!
//! // Query side: keep the factors lying in the left half of the image.
//! let q = describer.describe_region(&acts, &BBox::new(0.0, 0.0, 300.0, 400.0)?)?;
//! assert!(!q.kept.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # The descriptors
//! - **NMF V** (`nmf-v`): the activations `A` (cells × channels), each channel multiplied by
//!   its CroW weight (on by default, [`crow::channel_weights`]), are factorized `A ≈ U·V`
//!   with rank `K` (multiplicative updates from NNDSVDa, [`crate::nmf`]). Each row of `V` is
//!   L2-normalised, optionally whitened, and the rows are summed and L2-normalised.
//! - **NMF V+U** (`nmf-vu`): as NMF V with `V′ = U′ᵀU′V` in place of `V`, where `U′` holds
//!   the heatmaps blurred by a 13 × 13 Gaussian of variance 2 (zero padding) with each column
//!   L2-normalised ([`factors::vu_concepts`]): a concept is reinforced by the concepts that lie
//!   next to it.
//! - **Region of interest** ([`Describer::describe_region`]): for the NMF kinds, only the
//!   factors whose heatmap puts more than the threshold (default 75%) of its mass on cells
//!   whose centres lie inside the box are used (for V+U, the rows of the image's `V′` —
//!   formed over all factors — of those factors). When none passes, the factor with the
//!   largest share is used (the edge rule of [`crate::heatmap::filter_factors`]) and
//!   [`Description::fallback`] says so. For the pooled kinds, the pooling runs over the cells
//!   whose centres lie inside the box (the nearest cells when none does, with `fallback`
//!   set). The alternative used by most published numbers — cropping the image to the box
//!   before the network — is [`crop::extract_crop`].
//! - **MAC** / **SPoC** / **GeM** (`mac`, `spoc`, `gem`): max, sum and generalized-mean
//!   (`p` configurable, default 3) pooling ([`pooling`]).
//! - **R-MAC** (`rmac`): the global MAC plus the MACs of square regions at `L = 3` scales
//!   with 40% overlap, each L2-normalised (and whitened, if configured), summed.
//! - **CroW** (`crow`): spatially weighted sum pooling times the channel weights.
//!
//! MAC, SPoC, GeM and R-MAC use the raw activations unless [`DescriptorConfig::crow`] turns
//! the channel weighting on. Every descriptor is L2-normalised; with a [`Whitening`] the local
//! vectors (rows of `V` or `V′`, R-MAC regions) or the pooled vector are whitened before the
//! final normalisation. [`Describer::local_vectors`] gives the vectors a whitening is learned
//! from.

mod crop;
pub mod crow;
mod factors;
pub mod pooling;
mod whitening;

pub use crop::{crop_image, crop_rect, extract_crop};
pub use factors::{blur_heatmaps, gaussian_taps, vu_concepts, BLUR_SIZE, BLUR_VARIANCE};
pub use whitening::{
    Shrinkage, TrainingSet, Whitening, WhiteningLearner, DEFAULT_WHITEN_POWER,
    OLDEST_WHITENING_VERSION, RANK_TOLERANCE, WHITENING_FORMAT, WHITENING_VERSION,
};

use crate::backbone::Backbone;
use crate::heatmap::{filter_factors, Heatmap, DEFAULT_MASS_THRESHOLD};
use crate::nmf::{Factorization, Init, Nmf};
use crate::Activations;
use crate::{BBox, CellGrid, Error, Matrix, Recipe, Result};
use crate::{BackboneSpec, DescriptorSpec, NmfSpec, WhiteningRef};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Default NMF rank.
pub const DEFAULT_K: usize = 8;
/// Default NMF iterations (scikit-learn's and the thesis' 200).
pub const DEFAULT_MAX_ITER: usize = 200;
/// Default NMF tolerance: 0 runs every iteration, so descriptors do not depend on when an
/// early stop happens to trigger.
pub const DEFAULT_TOL: f64 = 0.0;
/// Default GeM power.
pub const DEFAULT_GEM_P: f32 = 3.0;
/// Default number of R-MAC scales.
pub const DEFAULT_RMAC_LEVELS: usize = 3;
/// Largest NMF rank accepted.
pub const MAX_K: usize = 1024;

/// The descriptor kinds, named as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DescriptorKind {
    /// `nmf-v`: the sum of the normalised concept vectors.
    NmfV,
    /// `nmf-vu`: as `nmf-v`, with each concept reinforced by its spatial neighbours.
    NmfVu,
    /// `crow`: cross-dimensional weighting and sum pooling.
    Crow,
    /// `mac`: max pooling.
    Mac,
    /// `spoc`: sum pooling.
    Spoc,
    /// `gem`: generalized-mean pooling.
    Gem,
    /// `rmac`: regional max pooling.
    Rmac,
}

impl DescriptorKind {
    /// Every kind, NMF kinds first.
    pub const ALL: [DescriptorKind; 7] = [
        DescriptorKind::NmfV,
        DescriptorKind::NmfVu,
        DescriptorKind::Crow,
        DescriptorKind::Mac,
        DescriptorKind::Spoc,
        DescriptorKind::Gem,
        DescriptorKind::Rmac,
    ];

    /// The name used on the command line and in recipes.
    pub fn name(self) -> &'static str {
        match self {
            DescriptorKind::NmfV => "nmf-v",
            DescriptorKind::NmfVu => "nmf-vu",
            DescriptorKind::Crow => "crow",
            DescriptorKind::Mac => "mac",
            DescriptorKind::Spoc => "spoc",
            DescriptorKind::Gem => "gem",
            DescriptorKind::Rmac => "rmac",
        }
    }

    /// Whether the kind is built from NMF factors.
    pub fn is_nmf(self) -> bool {
        matches!(self, DescriptorKind::NmfV | DescriptorKind::NmfVu)
    }
}

impl fmt::Display for DescriptorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DescriptorKind {
    type Err = Error;

    /// One of `nmf-v`, `nmf-vu`, `crow`, `mac`, `spoc`, `gem`, `rmac` (any case).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        DescriptorKind::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = DescriptorKind::ALL.iter().map(|k| k.name()).collect();
                Error::invalid(format!(
                    "unknown descriptor {s:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Configuration of a [`Describer`]; every setter documents its default.
#[derive(Debug, Clone)]
pub struct DescriptorConfig {
    kind: DescriptorKind,
    k: usize,
    crow: Option<bool>,
    gem_p: f32,
    rmac_levels: usize,
    max_iter: usize,
    tol: f64,
    box_threshold: f32,
    whitening: Option<Arc<Whitening>>,
    whiten_power: f32,
    whiten_dim: Option<usize>,
}

impl DescriptorConfig {
    /// The defaults for `kind`.
    pub fn new(kind: DescriptorKind) -> Self {
        DescriptorConfig {
            kind,
            k: DEFAULT_K,
            crow: None,
            gem_p: DEFAULT_GEM_P,
            rmac_levels: DEFAULT_RMAC_LEVELS,
            max_iter: DEFAULT_MAX_ITER,
            tol: DEFAULT_TOL,
            box_threshold: DEFAULT_MASS_THRESHOLD,
            whitening: None,
            whiten_power: DEFAULT_WHITEN_POWER,
            whiten_dim: None,
        }
    }

    /// NMF rank (default [`DEFAULT_K`]); NMF kinds only.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// CroW channel weighting of the activations before factorization or pooling. Default:
    /// on for the NMF kinds and CroW, off for MAC, SPoC, GeM and R-MAC (as published).
    pub fn crow(mut self, on: bool) -> Self {
        self.crow = Some(on);
        self
    }

    /// GeM power (default [`DEFAULT_GEM_P`]); GeM only.
    pub fn gem_p(mut self, p: f32) -> Self {
        self.gem_p = p;
        self
    }

    /// Number of R-MAC scales (default [`DEFAULT_RMAC_LEVELS`]); R-MAC only.
    pub fn rmac_levels(mut self, levels: usize) -> Self {
        self.rmac_levels = levels;
        self
    }

    /// NMF iterations (default [`DEFAULT_MAX_ITER`]).
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = n;
        self
    }

    /// NMF tolerance (default [`DEFAULT_TOL`]).
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }

    /// Share of a heatmap's mass that must lie inside a query box (default
    /// [`DEFAULT_MASS_THRESHOLD`]); NMF kinds only.
    pub fn box_threshold(mut self, t: f32) -> Self {
        self.box_threshold = t;
        self
    }

    /// Whiten with `whitening` (default: none). It must have been learned on this
    /// describer's [`Describer::local_vectors`] of a training set.
    pub fn whitening(mut self, whitening: Arc<Whitening>) -> Self {
        self.whitening = Some(whitening);
        self
    }

    /// Power of the variances in whitening (default [`DEFAULT_WHITEN_POWER`]).
    pub fn whiten_power(mut self, p: f32) -> Self {
        self.whiten_power = p;
        self
    }

    /// Output dimension after whitening (default: every axis the whitening has).
    pub fn whiten_dim(mut self, dim: usize) -> Self {
        self.whiten_dim = Some(dim);
        self
    }

    /// The settings a recipe records: its descriptor with its parameters, CroW, and the
    /// whitening it names, which must be `whitening` (with the recipe's dimension). A recipe
    /// of another extractor's descriptor is refused.
    pub fn from_recipe(recipe: &Recipe, whitening: Option<Arc<Whitening>>) -> Result<Self> {
        let d = &recipe.descriptor;
        let kind = d.kind().ok_or_else(|| {
            Error::invalid(format!(
                "the recipe's descriptor {d} is not one deepfactor makes (another extractor's)"
            ))
        })?;
        let mut cfg = DescriptorConfig::new(kind).crow(recipe.crow);
        match d {
            DescriptorSpec::NmfV(n) | DescriptorSpec::NmfVu(n) => {
                cfg = cfg.k(n.k).max_iter(n.max_iter).tol(n.tol);
            }
            DescriptorSpec::Gem { p } => cfg = cfg.gem_p(*p),
            DescriptorSpec::Rmac { levels } => cfg = cfg.rmac_levels(*levels),
            _ => {}
        }
        match (&recipe.whitening, whitening) {
            (Some(r), Some(w)) => {
                if r.id != w.id() {
                    return Err(Error::invalid(format!(
                        "the recipe needs whitening {}, but {} was given",
                        r.id,
                        w.id()
                    )));
                }
                cfg = cfg
                    .whitening(w)
                    .whiten_dim(recipe.dim)
                    .whiten_power(r.power);
            }
            (Some(r), None) => {
                return Err(Error::invalid(format!(
                    "the recipe needs whitening {r}, which was not given"
                )))
            }
            (None, _) => {}
        }
        Ok(cfg)
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Describer> {
        if self.kind.is_nmf() && !(1..=MAX_K).contains(&self.k) {
            return Err(Error::invalid(format!(
                "NMF rank K must lie in 1..={MAX_K}, got {}",
                self.k
            )));
        }
        if !(self.gem_p.is_finite() && self.gem_p > 0.0) {
            return Err(Error::invalid(format!(
                "GeM power p must be finite and positive, got {}",
                self.gem_p
            )));
        }
        if !(1..=10).contains(&self.rmac_levels) {
            return Err(Error::invalid(format!(
                "R-MAC levels must lie in 1..=10, got {}",
                self.rmac_levels
            )));
        }
        if !(0.0..1.0).contains(&self.box_threshold) {
            return Err(Error::invalid(format!(
                "box threshold must lie in [0, 1), got {}",
                self.box_threshold
            )));
        }
        if !(self.whiten_power.is_finite() && self.whiten_power >= 0.0) {
            return Err(Error::invalid(format!(
                "whitening power must be finite and non-negative, got {}",
                self.whiten_power
            )));
        }
        let whiten_dim = match (&self.whitening, self.whiten_dim) {
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "a whitening dimension was given without a whitening",
                ))
            }
            (None, None) => None,
            (Some(w), None) => Some(w.max_output_dim()),
            (Some(w), Some(d)) => {
                if d == 0 || d > w.max_output_dim() {
                    return Err(Error::invalid(format!(
                        "whitening {} (learned on {} vectors of {}) gives 1 to {} dimensions, \
                         {d} were asked",
                        w.id(),
                        w.training().vectors,
                        w.training().name,
                        w.max_output_dim()
                    )));
                }
                Some(d)
            }
        };
        let nmf = if self.kind.is_nmf() {
            Some(
                Nmf::new(self.k)
                    .max_iter(self.max_iter)
                    .tol(self.tol)
                    .init(Init::Nndsvda)
                    .build()?,
            )
        } else {
            None
        };
        let crow = self.crow.unwrap_or(matches!(
            self.kind,
            DescriptorKind::NmfV | DescriptorKind::NmfVu | DescriptorKind::Crow
        ));
        Ok(Describer {
            crow,
            whiten_dim,
            nmf,
            cfg: self,
        })
    }
}

/// What a [`Describer`] makes of one image (or one region of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    /// The descriptor: unit length, compared by dot product.
    pub vector: Vec<f32>,
    /// The activations' grid (the heatmaps' shape and pixel mapping).
    pub grid: CellGrid,
    /// For the NMF kinds, every factor of the (CroW-weighted) activations: `u` is cells × K
    /// (one heatmap per column, cells row-major over `grid`), `v` is K × channels.
    pub factors: Option<Factorization>,
    /// The factors the vector was built from, ascending: all of them without a box (minus
    /// any all-zero concept), those inside the box with one. Empty for the pooled kinds.
    pub kept: Vec<usize>,
    /// With a box and an NMF kind, every factor's share of heatmap mass inside the box.
    pub mass_inside: Vec<f32>,
    /// Whether the region rule fell back: no factor passed the threshold (the one with the
    /// largest share was used), or, for a pooled kind, no cell centre lay inside the box (the
    /// cells nearest to its centre were used).
    pub fallback: bool,
}

impl Description {
    /// The kept factors' heatmaps over [`Description::grid`], each scaled to a maximum of 1
    /// (NMF kinds; empty for the pooled kinds).
    pub fn kept_heatmaps(&self) -> Result<Vec<Heatmap>> {
        let Some(f) = &self.factors else {
            return Ok(Vec::new());
        };
        self.kept
            .iter()
            .map(|&k| Heatmap::from_column(&f.u, k, self.grid).map(Heatmap::unit_max))
            .collect()
    }

    /// The region's factor coverage (NMF kinds, a region description): the share of the
    /// region's factor mass held by the kept factors, `Σ_kept m_k / Σ_all m_k`, where `m_k` is
    /// the mass of factor `k`'s heatmap on the cells inside the region (its share
    /// [`Description::mass_inside`] times the heatmap's total, negative values as zero) times
    /// the length of its concept (row `k` of `V`): how much of what the network sees in the
    /// region the kept factors explain. Near 1 when the region holds one thing the filter
    /// keeps (an object); low when its content belongs to factors that run past the box (a
    /// part of a scene). `None` without a region, for the pooled kinds, or when the region
    /// holds no factor mass.
    pub fn region_coverage(&self) -> Option<f32> {
        let f = self.factors.as_ref()?;
        if self.mass_inside.len() != f.u.cols() || f.v.rows() != f.u.cols() {
            return None;
        }
        let mass: Vec<f64> = (0..f.u.cols())
            .map(|k| {
                let total: f64 = (0..f.u.rows())
                    .map(|r| f64::from(f.u.get(r, k).max(0.0)))
                    .sum();
                let len =
                    f.v.row(k)
                        .iter()
                        .map(|x| f64::from(*x).powi(2))
                        .sum::<f64>()
                        .sqrt();
                f64::from(self.mass_inside[k]) * total * len
            })
            .collect();
        let all: f64 = mass.iter().sum();
        if all.is_nan() || all <= 0.0 {
            return None;
        }
        let kept: f64 = self.kept.iter().filter_map(|&k| mass.get(k)).sum();
        Some((kept / all) as f32)
    }
}

/// Turns activations into descriptors; made by [`DescriptorConfig::build`]. Shareable across
/// threads.
#[derive(Debug, Clone)]
pub struct Describer {
    cfg: DescriptorConfig,
    crow: bool,
    whiten_dim: Option<usize>,
    nmf: Option<Nmf>,
}

impl Describer {
    /// The kind.
    pub fn kind(&self) -> DescriptorKind {
        self.cfg.kind
    }

    /// The NMF rank, for the NMF kinds.
    pub fn k(&self) -> Option<usize> {
        self.nmf.as_ref().map(|n| n.k())
    }

    /// Whether CroW channel weights are applied.
    pub fn crow(&self) -> bool {
        self.crow
    }

    /// The NMF settings, for the NMF kinds.
    pub fn nmf(&self) -> Option<&Nmf> {
        self.nmf.as_ref()
    }

    /// The box threshold of [`Describer::describe_region`].
    pub fn box_threshold(&self) -> f32 {
        self.cfg.box_threshold
    }

    /// The whitening, if any.
    pub fn whitening(&self) -> Option<&Whitening> {
        self.cfg.whitening.as_deref()
    }

    /// The descriptor's dimension for activations of `channels` channels.
    pub fn output_dim(&self, channels: usize) -> usize {
        self.whiten_dim.unwrap_or(channels)
    }

    /// The descriptor with the parameters that change its values, as a recipe records it.
    pub fn spec(&self) -> DescriptorSpec {
        let c = &self.cfg;
        let nmf = NmfSpec {
            k: c.k,
            max_iter: c.max_iter,
            tol: c.tol,
        };
        match c.kind {
            DescriptorKind::NmfV => DescriptorSpec::NmfV(nmf),
            DescriptorKind::NmfVu => DescriptorSpec::NmfVu(nmf),
            DescriptorKind::Crow => DescriptorSpec::Crow,
            DescriptorKind::Mac => DescriptorSpec::Mac,
            DescriptorKind::Spoc => DescriptorSpec::Spoc,
            DescriptorKind::Gem => DescriptorSpec::Gem { p: c.gem_p },
            DescriptorKind::Rmac => DescriptorSpec::Rmac {
                levels: c.rmac_levels,
            },
        }
    }

    /// The recipe of descriptors made from `backbone`'s activations by this describer.
    pub fn recipe(&self, backbone: &Backbone) -> Recipe {
        let pre = backbone.preprocess();
        Recipe {
            backbone: BackboneSpec::Builtin(backbone.kind()),
            weights_fingerprint: backbone.fingerprint().to_string(),
            layer: backbone.layer().name.clone(),
            input_size: pre.input_size,
            max_side: pre.max_side,
            padding: backbone.padding(),
            shift_negative: backbone.shifts_negative(),
            descriptor: self.spec(),
            crow: self.crow,
            whitening: self.whitening().map(|w| WhiteningRef {
                id: w.id().to_string(),
                power: self.cfg.whiten_power,
            }),
            dim: self.output_dim(backbone.layer().channels),
        }
    }

    /// The factorization behind the NMF kinds: `A` times its CroW channel weights (when on),
    /// factorized with rank `K`. An error for the pooled kinds.
    pub fn factorize(&self, acts: &Activations) -> Result<Factorization> {
        let nmf = self.nmf.as_ref().ok_or_else(|| {
            Error::invalid(format!("{} descriptors have no factors", self.cfg.kind))
        })?;
        check_activations(acts)?;
        if self.crow {
            let w = crow::channel_weights(&acts.data);
            nmf.fit(&crow::scale_channels(&acts.data, &w))
        } else {
            nmf.fit(&acts.data)
        }
    }

    /// What [`Describer::factorize`] factorizes: the activations times their CroW channel
    /// weights when those are on, else the activations themselves — the space the concept
    /// vectors (and the index's stored factors) live in.
    pub fn factor_input(&self, acts: &Activations) -> Result<Activations> {
        check_activations(acts)?;
        let data = if self.crow {
            crow::scale_channels(&acts.data, &crow::channel_weights(&acts.data))
        } else {
            acts.data.clone()
        };
        Ok(Activations {
            grid: acts.grid,
            data,
        })
    }

    /// The descriptor of a whole image.
    pub fn describe(&self, acts: &Activations) -> Result<Description> {
        if self.cfg.kind.is_nmf() {
            let f = self.factorize(acts)?;
            return self.describe_factors(&acts.grid, f, None);
        }
        check_activations(acts)?;
        Ok(Description {
            vector: self.pooled(&acts.data, acts.grid.rows, acts.grid.cols)?,
            grid: acts.grid,
            factors: None,
            kept: Vec::new(),
            mass_inside: Vec::new(),
            fallback: false,
        })
    }

    /// The descriptor of the region `bbox` (pixels of the image the activations come from):
    /// the NMF kinds keep the factors inside the box, the pooled kinds pool the cells inside
    /// it (see the module documentation).
    pub fn describe_region(&self, acts: &Activations, bbox: &BBox) -> Result<Description> {
        if self.cfg.kind.is_nmf() {
            let f = self.factorize(acts)?;
            return self.describe_factors(&acts.grid, f, Some(bbox));
        }
        check_activations(acts)?;
        let g = &acts.grid;
        let (rows, cols, fallback) = region_cells(g, bbox);
        let c = acts.data.cols();
        let mut data = Vec::with_capacity(rows.len() * cols.len() * c);
        for r in rows.clone() {
            for col in cols.clone() {
                data.extend_from_slice(acts.data.row(r * g.cols + col));
            }
        }
        let sub = Matrix::from_vec(rows.len() * cols.len(), c, data)?;
        Ok(Description {
            vector: self.pooled(&sub, rows.len(), cols.len())?,
            grid: acts.grid,
            factors: None,
            kept: Vec::new(),
            mass_inside: Vec::new(),
            fallback,
        })
    }

    /// The descriptor of an NMF kind from a factorization already made by
    /// [`Describer::factorize`] (or by a describer with the same rank, CroW setting and NMF
    /// parameters) on activations over `grid`; with `region`, only the factors inside it.
    /// NMF V and NMF V+U can share one factorization this way.
    pub fn describe_factors(
        &self,
        grid: &CellGrid,
        factors: Factorization,
        region: Option<&BBox>,
    ) -> Result<Description> {
        if !self.cfg.kind.is_nmf() {
            return Err(Error::invalid(format!(
                "{} descriptors are not made from factors",
                self.cfg.kind
            )));
        }
        let (cells, k) = factors.u.shape();
        if cells != grid.len() || factors.v.rows() != k {
            return Err(Error::invalid(format!(
                "factors of U {}×{} and V {}×{} do not fit a {}×{} grid",
                cells,
                k,
                factors.v.rows(),
                factors.v.cols(),
                grid.rows,
                grid.cols
            )));
        }
        let (kept, mass_inside, fallback) = match region {
            Some(b) => {
                let maps = Heatmap::columns(&factors.u, *grid)?;
                let f = filter_factors(&maps, b, self.cfg.box_threshold);
                (f.kept, f.mass_inside, f.fallback)
            }
            None => ((0..k).collect(), Vec::new(), false),
        };
        let concepts = self.concepts(grid, &factors, &kept);
        // Unit rows (all-zero concepts left out), whitened together when configured.
        let mut used = Vec::with_capacity(kept.len());
        let mut units = Vec::with_capacity(kept.len() * concepts.cols());
        for (i, &j) in kept.iter().enumerate() {
            if let Some(u) = unit(concepts.row(i)) {
                units.extend(u);
                used.push(j);
            }
        }
        let units = Matrix::from_vec(used.len(), concepts.cols(), units)?;
        let sum = column_sums(&self.whiten_rows(units)?);
        let kept = if region.is_some() { kept } else { used };
        Ok(Description {
            vector: finish(sum, self.cfg.kind)?,
            grid: *grid,
            factors: Some(factors),
            kept,
            mass_inside,
            fallback,
        })
    }

    /// The vectors a whitening for this describer is learned from, one per row, before any
    /// whitening: the unit rows of `V` (NMF V) or `V′` (NMF V+U) of the whole image (all-zero
    /// rows left out), the R-MAC regional vectors, or the single pooled vector (unit length)
    /// for the other kinds.
    pub fn local_vectors(&self, acts: &Activations) -> Result<Matrix> {
        check_activations(acts)?;
        let c = acts.data.cols();
        let rows: Vec<Vec<f32>> = match self.cfg.kind {
            DescriptorKind::NmfV | DescriptorKind::NmfVu => {
                let f = self.factorize(acts)?;
                return self.local_vectors_of_factors(&acts.grid, &f);
            }
            DescriptorKind::Rmac => {
                let a = self.weighted(&acts.data);
                let v =
                    pooling::rmac_vectors(&a, acts.grid.rows, acts.grid.cols, self.cfg.rmac_levels);
                (0..v.rows()).map(|i| v.row(i).to_vec()).collect()
            }
            _ => {
                let v = self.pooled_raw(&acts.data);
                unit(&v).into_iter().collect()
            }
        };
        let n = rows.len();
        Matrix::from_vec(n, c, rows.concat())
    }

    /// [`Describer::local_vectors`] of an NMF kind from a factorization already made by
    /// [`Describer::factorize`] on activations over `grid`.
    pub fn local_vectors_of_factors(&self, grid: &CellGrid, f: &Factorization) -> Result<Matrix> {
        if !self.cfg.kind.is_nmf() {
            return Err(Error::invalid(format!(
                "{} descriptors are not made from factors",
                self.cfg.kind
            )));
        }
        if f.u.rows() != grid.len() || f.u.cols() != f.v.rows() {
            return Err(Error::invalid(format!(
                "factors of U {}×{} and V {}×{} do not fit a {}×{} grid",
                f.u.rows(),
                f.u.cols(),
                f.v.rows(),
                f.v.cols(),
                grid.rows,
                grid.cols
            )));
        }
        let all: Vec<usize> = (0..f.v.rows()).collect();
        let concepts = self.concepts(grid, f, &all);
        let rows: Vec<Vec<f32>> = (0..concepts.rows())
            .filter_map(|i| unit(concepts.row(i)))
            .collect();
        Matrix::from_vec(rows.len(), f.v.cols(), rows.concat())
    }

    /// The concept rows of the factors `kept`: rows of `V` (NMF V) or of `V′ = U′ᵀU′V`
    /// formed over all factors (NMF V+U), so that a kept factor carries its neighbours'
    /// concepts whether or not they are kept themselves.
    fn concepts(&self, grid: &CellGrid, f: &Factorization, kept: &[usize]) -> Matrix {
        let all;
        let source = match self.cfg.kind {
            DescriptorKind::NmfVu => {
                all = factors::vu_concepts(&f.u, &f.v, grid);
                &all
            }
            _ => &f.v,
        };
        let mut m = Matrix::zeros(kept.len(), source.cols());
        for (i, &j) in kept.iter().enumerate() {
            m.row_mut(i).copy_from_slice(source.row(j));
        }
        m
    }

    /// A local vector made ready to sum: unit length, then whitened (unit length again) when a
    /// whitening is set. `None` for an all-zero vector.
    fn local(&self, x: &[f32]) -> Result<Option<Vec<f32>>> {
        let Some(u) = unit(x) else {
            return Ok(None);
        };
        match (&self.cfg.whitening, self.whiten_dim) {
            (Some(w), Some(d)) => Ok(Some(w.apply(&u, self.cfg.whiten_power, d)?)),
            _ => Ok(Some(u)),
        }
    }

    /// Rows whitened (and re-normalised) when a whitening is set, unchanged otherwise.
    fn whiten_rows(&self, rows: Matrix) -> Result<Matrix> {
        match (&self.cfg.whitening, self.whiten_dim) {
            (Some(w), Some(d)) => w.apply_rows(&rows, self.cfg.whiten_power, d),
            _ => Ok(rows),
        }
    }

    /// The activations, CroW channel-weighted when that is on (for the pooled kinds other
    /// than CroW, which weighs inside its pooling).
    fn weighted<'a>(&self, a: &'a Matrix) -> std::borrow::Cow<'a, Matrix> {
        if self.crow && self.cfg.kind != DescriptorKind::Crow {
            std::borrow::Cow::Owned(crow::scale_channels(a, &crow::channel_weights(a)))
        } else {
            std::borrow::Cow::Borrowed(a)
        }
    }

    /// The pooled vector of a non-R-MAC pooled kind, before normalisation.
    fn pooled_raw(&self, a: &Matrix) -> Vec<f32> {
        let a = self.weighted(a);
        match self.cfg.kind {
            DescriptorKind::Mac => pooling::mac(&a),
            DescriptorKind::Spoc => pooling::spoc(&a),
            DescriptorKind::Gem => pooling::gem(&a, self.cfg.gem_p),
            _ => pooling::crow_pool(&a, self.crow),
        }
    }

    /// The final descriptor of a pooled kind on `a` (a `rows × cols` grid).
    fn pooled(&self, a: &Matrix, rows: usize, cols: usize) -> Result<Vec<f32>> {
        // GeM's ε floor would turn all-zero activations into a uniform vector; every kind
        // refuses them alike.
        if a.as_slice().iter().all(|&v| v == 0.0) {
            return finish(Vec::new(), self.cfg.kind);
        }
        if self.cfg.kind == DescriptorKind::Rmac {
            let a = self.weighted(a);
            let regions = pooling::rmac_vectors(&a, rows, cols, self.cfg.rmac_levels);
            // Regions are already unit (up to the authors' ε); whitening re-normalises.
            let sum = column_sums(&self.whiten_rows(regions)?);
            return finish(sum, self.cfg.kind);
        }
        let v = self.pooled_raw(a);
        let v = match self.local(&v)? {
            Some(v) => v,
            None => vec![0.0; self.output_dim(a.cols())],
        };
        finish(v, self.cfg.kind)
    }
}

/// `x / ‖x‖`, or `None` for a zero vector.
fn unit(x: &[f32]) -> Option<Vec<f32>> {
    let norm = x
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    (norm > 0.0).then(|| x.iter().map(|&v| (f64::from(v) / norm) as f32).collect())
}

/// The sum of the rows of `m`.
fn column_sums(m: &Matrix) -> Vec<f32> {
    let mut sum = vec![0f32; m.cols()];
    for i in 0..m.rows() {
        for (s, x) in sum.iter_mut().zip(m.row(i)) {
            *s += x;
        }
    }
    sum
}

/// L2-normalises a descriptor; an error when it is zero (no active feature).
fn finish(v: Vec<f32>, kind: DescriptorKind) -> Result<Vec<f32>> {
    unit(&v).ok_or_else(|| {
        Error::Numeric(format!(
            "the {kind} descriptor is all zeros: the activations have no active feature"
        ))
    })
}

/// Refuses activations whose shape does not match their grid, that are empty, or that hold a
/// negative or non-finite value (descriptors assume a ReLU layer, or a shifted one).
fn check_activations(acts: &Activations) -> Result<()> {
    let (cells, c) = acts.data.shape();
    if cells != acts.grid.len() || cells == 0 || c == 0 {
        return Err(Error::invalid(format!(
            "activations of {cells} cells × {c} channels do not fit a {}×{} grid",
            acts.grid.rows, acts.grid.cols
        )));
    }
    if let Some(i) = acts
        .data
        .as_slice()
        .iter()
        .position(|v| !(v.is_finite() && *v >= 0.0))
    {
        return Err(Error::Numeric(format!(
            "activation (cell {}, channel {}) is {}: descriptors need finite, non-negative \
             activations",
            i / c,
            i % c,
            acts.data.as_slice()[i]
        )));
    }
    Ok(())
}

/// The rows and columns of cells whose centres lie inside `bbox`, and whether the nearest
/// row/column to the box's centre had to stand in for an empty range.
fn region_cells(
    g: &CellGrid,
    bbox: &BBox,
) -> (std::ops::Range<usize>, std::ops::Range<usize>, bool) {
    let (cw, ch) = g.cell_size();
    let axis = |n: usize, size: f32, lo: f32, hi: f32| -> (std::ops::Range<usize>, bool) {
        let inside: Vec<usize> = (0..n)
            .filter(|&i| {
                let c = (i as f32 + 0.5) * size;
                c >= lo && c < hi
            })
            .collect();
        match (inside.first(), inside.last()) {
            (Some(&a), Some(&b)) => (a..b + 1, false),
            _ => {
                let centre = (lo + hi) / 2.0;
                let i = ((centre / size).floor().max(0.0) as usize).min(n - 1);
                (i..i + 1, true)
            }
        }
    };
    let (rows, fr) = axis(g.rows, ch, bbox.y1, bbox.y2);
    let (cols, fc) = axis(g.cols, cw, bbox.x1, bbox.x2);
    (rows, cols, fr || fc)
}

#[cfg(test)]
mod tests;
