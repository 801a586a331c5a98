//! Co-segmentation and co-localization of image sets (thesis ch. 4, after Collins, Achanta &
//! Süsstrunk, "Deep Feature Factorization for Concept Discovery", ECCV 2018): given photos
//! that share an object class, find the common object in every photo — a mask and a box —
//! with no training, from one joint NMF of the CNN activations of the whole set.
//!
//! The path reads like a sentence: stack the set's activations ([`FeatureStack`]), factorize
//! them jointly and choose the object's factors ([`Coseg::run`], or [`Coseg::one_shot`] with
//! one annotated image), then cut out each image ([`CosegModel::segment`]).
//!
//! ```no_run
//! use deepfactor::backbone::{BackboneBuilder, BackboneKind};
//! use deepfactor::coseg::{Coseg, FeatureStack};
//! # fn main() -> deepfactor::Result<()> {
//! let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0).build()?;
//! let paths = deepfactor::images::image_files("photos".as_ref()).files;
//! let stack = FeatureStack::extract(&backbone, &paths, |_, _| {})?;
//! let model = Coseg::builder().build()?.run(&stack)?;
//! for i in 0..stack.len() {
//!     let image = deepfactor::images::load_rgb(stack.path(i))?;
//!     let seg = model.segment(i, &image)?;
//!     println!("{}: {:?}, {} object pixels", stack.name(i), seg.bbox, seg.mask.area());
//! }
//! # Ok(()) }
//! ```
//!
//! # Joint factorization (thesis §4.2)
//! Every image's activations at the chosen layer, `(rows·cols) × C`, are stacked into one
//! matrix (images of different sizes mix freely) held as its non-zeros
//! ([`FeatureStack`], which also says how memory grows), and factorized once with `K`
//! factors ([`crate::nmf::Nmf::fit_sparse`], NNDSVDa, 200 iterations). Column `k` of `U`,
//! cut into each image's rows, is factor `k`'s heatmap in that image ([`JointFactors`]).
//!
//! # The object's factors ([`Method`], thesis §4.3.2)
//! - [`Method::Single`]: `K = 1`, the only factor (the thesis' choice for VGG's sparse maps).
//! - [`Method::Border`]: `K = 2`, the factor with less heatmap mass on the 1-cell border of
//!   the feature maps, summed over the set (the thesis' choice for ResNet's dense maps).
//! - [`Method::Auto`] (default): `K = 8`; a factor belongs to the object when its *border
//!   ratio* — its share of mass on border cells over the border's share of cells — is below
//!   [`DEFAULT_BORDER_ALPHA`] times the energy-weighted mean ratio of all factors (the
//!   activations' own ratio, since feature maps are weaker at their borders); at least the
//!   factor with the lowest ratio. The object's heatmap in each image is `Σ U_k‖V_k‖` over
//!   its factors.
//!
//! # Masks and boxes
//! The object heatmap is divided by its maximum in the image ([`Normalise::Image`], default)
//! or over the set ([`Normalise::Set`], the thesis), upsampled bilinearly, thresholded
//! ([`Threshold::Otsu`] by default; the thesis' fixed 0.75 as [`Threshold::Fixed`]) and, by
//! default, refined by the image's colours and edges ([`Refine::Colour`], see
//! `refine.rs`). The co-localization box is the box around the mask's largest 8-connected
//! component.
//!
//! # Measured (VOC co-segmentation set of `../shared/data`, 14 classes, EfficientNet-Lite0
//! `head` at 512 px; settings chosen on 7 classes, the other 7 held out)
//! Thesis settings (K = 2 + border, set maximum, τ = 0.75) keep almost nothing on this
//! backbone (Jaccard 0.9, CorLoc 0.3); its best fixed-threshold cell (K = 2 + border, image
//! maximum, τ = 0.2) reaches Jaccard 37.8, CorLoc 50.5. With the default masks, K = 1 gives
//! Jaccard 37.4, CorLoc 41.6; K = 2 + border 46.3, 57.3; the default ([`Method::Auto`])
//! 49.5, 62.3 (held-out half: 48.1, 59.5). One-shot with the first image annotated (scored on
//! the other images, where the default gives 49.3, 61.9; development half 50.6, 65.2,
//! held-out half 48.0, 58.5): [`OneShotMode::Appearance`] (default: a ridge likeness to the
//! annotated object, [`AppearanceModel::Ridge`], weighting the heatmap and the refined score)
//! 50.4, 62.3 (development 52.0, 65.6; held-out 48.9, 59.1 — above the unsupervised result on
//! both halves); with the object-mean cosine on the heatmap only 49.4, 61.6;
//! [`OneShotMode::Matched`] (the thesis) 48.2, 58.8; [`OneShotMode::Select`] 47.3, 57.8;
//! [`OneShotMode::Vote`] 44.6, 53.3 (see `oneshot.rs`). A stride-16 layer (`blocks.11.expand`) is worse than `head`
//! (K = 1: 27.1, 26.8).

mod oneshot;
mod refine;
mod select;
mod stack;

pub use oneshot::{
    AppearanceModel, OneShotChoice, OneShotMode, OneShotRule, OneShotRun, APPEARANCE_AFTER_WEIGHT,
    APPEARANCE_WEIGHT, DEFAULT_ONE_SHOT_KS, DEFAULT_TAU_MERGE, RIDGE_SHRINKAGE,
};
pub(crate) use refine::guided_refine;
pub use refine::{COLOUR_LEVELS, GUIDED_EPS, MAX_MASK_SIDE};
pub use select::FactorStats;
pub use stack::{FeatureStack, Skipped, EXTRACT_CHUNK};

use crate::eval::Mask;
use crate::heatmap::Heatmap;
use crate::nmf::{Init, Nmf};
use crate::{BBox, CellGrid, Error, Matrix, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Factors of [`Method::Auto`].
pub const DEFAULT_AUTO_K: usize = 8;
/// [`Method::Auto`]: a factor is the object's when its border ratio is below this times the
/// energy-weighted mean ratio (chosen on half of the development classes; 0.6–0.9 all land
/// within 2 points).
pub const DEFAULT_BORDER_ALPHA: f32 = 0.75;
/// Iterations of the joint factorization.
pub const DEFAULT_MAX_ITER: usize = 200;
/// The thesis' fixed threshold (fraction of the normaliser).
pub const THESIS_THRESHOLD: f32 = 0.75;

/// How the object's factors are chosen without supervision (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// One factor (thesis, VGG): `K = 1`, or the strongest of `K`.
    Single,
    /// The factor with least border mass (thesis, ResNet): `K = 2` by default.
    Border,
    /// Every factor with a low border ratio: `K = 8` by default.
    #[default]
    Auto,
}

impl Method {
    /// Its name on the command line and in records.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Single => "single",
            Method::Border => "border",
            Method::Auto => "auto",
        }
    }

    /// `single`, `border` or `auto` (also `k1`, `k2`).
    pub fn from_name(s: &str) -> Result<Method> {
        match s.trim().to_ascii_lowercase().as_str() {
            "single" | "k1" => Ok(Method::Single),
            "border" | "k2" => Ok(Method::Border),
            "auto" => Ok(Method::Auto),
            other => Err(Error::invalid(format!(
                "unknown co-segmentation method {other:?}: expected single, border or auto"
            ))),
        }
    }

    /// The rank used when none is given: 1, 2 and [`DEFAULT_AUTO_K`].
    pub fn default_k(&self) -> usize {
        match self {
            Method::Single => 1,
            Method::Border => 2,
            Method::Auto => DEFAULT_AUTO_K,
        }
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::from_name(s)
    }
}

/// What an object heatmap is divided by before thresholding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalise {
    /// Its maximum over the whole set (the thesis).
    Set,
    /// Its maximum in each image.
    #[default]
    Image,
}

/// How the normalised, upsampled object heatmap becomes a coarse mask.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Threshold {
    /// Pixels at or above this value (in `(0, 1]`; the thesis: [`THESIS_THRESHOLD`]).
    Fixed(f32),
    /// Otsu's threshold of the image's values.
    #[default]
    Otsu,
}

/// Whether the coarse mask is corrected by the image's colours and edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Refine {
    /// The coarse mask as is (the thesis).
    None,
    /// Colour model and guided filter (see `refine.rs`).
    #[default]
    Colour,
}

/// Settings of a co-segmentation; `build()` validates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosegBuilder {
    method: Method,
    k: Option<usize>,
    normalise: Normalise,
    threshold: Threshold,
    refine: Refine,
    border_alpha: f32,
    max_iter: usize,
    one_shot: OneShotMode,
    appearance_weight: f32,
    appearance_model: AppearanceModel,
    appearance_after: f32,
}

impl Default for CosegBuilder {
    fn default() -> Self {
        CosegBuilder {
            method: Method::default(),
            k: None,
            normalise: Normalise::default(),
            threshold: Threshold::default(),
            refine: Refine::default(),
            border_alpha: DEFAULT_BORDER_ALPHA,
            max_iter: DEFAULT_MAX_ITER,
            one_shot: OneShotMode::default(),
            appearance_weight: APPEARANCE_WEIGHT,
            appearance_model: AppearanceModel::default(),
            appearance_after: APPEARANCE_AFTER_WEIGHT,
        }
    }
}

impl CosegBuilder {
    /// The thesis' settings for a method: set maximum, τ = 0.75, no refinement; one-shot
    /// chooses among matched factor groups only.
    pub fn thesis(method: Method) -> Self {
        CosegBuilder {
            method,
            normalise: Normalise::Set,
            threshold: Threshold::Fixed(THESIS_THRESHOLD),
            refine: Refine::None,
            one_shot: OneShotMode::Matched,
            ..CosegBuilder::default()
        }
    }

    /// How the object's factors are chosen (default [`Method::Auto`]).
    pub fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    /// The rank (default: the method's, [`Method::default_k`]).
    pub fn k(mut self, k: usize) -> Self {
        self.k = Some(k);
        self
    }

    /// Set or image normalisation (default [`Normalise::Image`]).
    pub fn normalise(mut self, n: Normalise) -> Self {
        self.normalise = n;
        self
    }

    /// The threshold (default [`Threshold::Otsu`]).
    pub fn threshold(mut self, t: Threshold) -> Self {
        self.threshold = t;
        self
    }

    /// Refinement by the image (default [`Refine::Colour`]).
    pub fn refine(mut self, r: Refine) -> Self {
        self.refine = r;
        self
    }

    /// [`Method::Auto`]'s border-ratio factor (default [`DEFAULT_BORDER_ALPHA`]).
    pub fn border_alpha(mut self, a: f32) -> Self {
        self.border_alpha = a;
        self
    }

    /// How one-shot co-segmentation uses the annotated image (default
    /// [`OneShotMode::default`]; the thesis: [`OneShotMode::Matched`]). See [`Coseg::one_shot`].
    pub fn one_shot_mode(mut self, m: OneShotMode) -> Self {
        self.one_shot = m;
        self
    }

    /// [`OneShotMode::Appearance`]'s weight γ of the appearance term, in `[0, 1]` (default
    /// [`APPEARANCE_WEIGHT`]; 0 is the unsupervised heatmap).
    pub fn appearance_weight(mut self, gamma: f32) -> Self {
        self.appearance_weight = gamma;
        self
    }

    /// [`OneShotMode::Appearance`]'s likeness of a cell to the annotated object (default
    /// [`AppearanceModel::default`]).
    pub fn appearance_model(mut self, m: AppearanceModel) -> Self {
        self.appearance_model = m;
        self
    }

    /// [`OneShotMode::Appearance`]'s weight β of the appearance term applied once more
    /// after the refinement, to the refined score (`score · cos^β`, before its threshold), in
    /// `[0, 1]` (default [`APPEARANCE_AFTER_WEIGHT`]; 0: none).
    pub fn appearance_after_refine(mut self, beta: f32) -> Self {
        self.appearance_after = beta;
        self
    }

    /// Iterations of the joint factorization (default [`DEFAULT_MAX_ITER`]).
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = n;
        self
    }

    /// Checks the settings: `K ≥ 1` (`K ≥ 2` for [`Method::Border`]), a fixed threshold in
    /// `(0, 1]`, a positive finite border factor, an appearance weight in `[0, 1]`.
    pub fn build(self) -> Result<Coseg> {
        let k = self.k.unwrap_or(self.method.default_k());
        if k == 0 {
            return Err(Error::invalid("co-segmentation rank k must be at least 1"));
        }
        if self.method == Method::Border && k < 2 {
            return Err(Error::invalid(
                "the border rule compares factors: it needs k of at least 2",
            ));
        }
        if let Threshold::Fixed(t) = self.threshold {
            if !(t > 0.0 && t <= 1.0) {
                return Err(Error::invalid(format!("threshold {t} is not in (0, 1]")));
            }
        }
        if !(0.0..=1.0).contains(&self.appearance_after) {
            return Err(Error::invalid(format!(
                "appearance weight after refinement {} is not in [0, 1]",
                self.appearance_after
            )));
        }
        if !(0.0..=1.0).contains(&self.appearance_weight) {
            return Err(Error::invalid(format!(
                "appearance weight {} is not in [0, 1]",
                self.appearance_weight
            )));
        }
        if let AppearanceModel::Ridge(rho) = self.appearance_model {
            if !(rho.is_finite() && rho > 0.0) {
                return Err(Error::invalid(format!(
                    "ridge shrinkage {rho} must be positive"
                )));
            }
        }
        if !(self.border_alpha.is_finite() && self.border_alpha > 0.0) {
            return Err(Error::invalid(format!(
                "border factor {} must be positive",
                self.border_alpha
            )));
        }
        Ok(Coseg { cfg: self, k })
    }
}

/// A validated co-segmentation configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coseg {
    cfg: CosegBuilder,
    k: usize,
}

/// The settings a result was made with, as recorded in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CosegSettings {
    /// `single`, `border`, `auto`, or `one-shot`.
    pub method: String,
    /// The rank of the factorization used.
    pub k: usize,
    /// `set` or `image`.
    pub normalise: Normalise,
    /// The threshold rule.
    pub threshold: Threshold,
    /// The refinement.
    pub refine: Refine,
}

impl Coseg {
    /// A builder with the defaults.
    pub fn builder() -> CosegBuilder {
        CosegBuilder::default()
    }

    /// The rank.
    pub fn k(&self) -> usize {
        self.k
    }

    /// How [`Coseg::one_shot`] uses the annotated image.
    pub fn one_shot_mode(&self) -> OneShotMode {
        self.cfg.one_shot
    }

    /// The settings.
    pub fn settings(&self) -> &CosegBuilder {
        &self.cfg
    }

    /// One joint factorization of the stack with `k` factors.
    pub fn factorize(&self, stack: &FeatureStack, k: usize) -> Result<JointFactors> {
        if stack.is_empty() {
            return Err(Error::invalid("co-segmentation of an empty image set"));
        }
        let nmf = Nmf::new(k)
            .max_iter(self.cfg.max_iter)
            .tol(0.0)
            .init(Init::Nndsvda)
            .build()?;
        let f = nmf.fit_sparse(stack.matrix())?;
        Ok(JointFactors {
            u: f.u,
            v: f.v,
            grids: stack.grids().to_vec(),
            offsets: (0..stack.len())
                .map(|i| stack.rows(i).start)
                .chain(std::iter::once(stack.matrix().rows()))
                .collect(),
            rel_error: f.rel_error,
        })
    }

    /// The unsupervised co-segmentation: the joint factorization and the object's factors by
    /// the configured [`Method`].
    pub fn run(&self, stack: &FeatureStack) -> Result<CosegModel> {
        let factors = self.factorize(stack, self.k)?;
        let stats = FactorStats::of(&factors);
        let object = match self.cfg.method {
            Method::Single => vec![0],
            Method::Border => stats.least_border_mass().into_iter().collect(),
            Method::Auto => stats.below_mean_ratio(self.cfg.border_alpha),
        };
        Ok(self.model(factors, object, self.cfg.method.name().to_string()))
    }

    pub(crate) fn model(
        &self,
        factors: JointFactors,
        object: Vec<usize>,
        method: String,
    ) -> CosegModel {
        let stats = FactorStats::of(&factors);
        let mut model = CosegModel {
            settings: CosegSettings {
                method,
                k: factors.k(),
                normalise: self.cfg.normalise,
                threshold: self.cfg.threshold,
                refine: self.cfg.refine,
            },
            factors,
            object,
            stats,
            set_max: 0.0,
            appearance: None,
        };
        model.set_max = model.set_max_of(&model.object);
        model
    }
}

/// A joint factorization of a set: `A ≈ U·V` over the stacked cells, with each image's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct JointFactors {
    u: Matrix,
    v: Matrix,
    grids: Vec<CellGrid>,
    offsets: Vec<usize>,
    rel_error: f64,
}

impl JointFactors {
    /// Number of factors.
    pub fn k(&self) -> usize {
        self.v.rows()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.grids.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.grids.is_empty()
    }

    /// `U` over all stacked cells (`cells × K`).
    pub fn u(&self) -> &Matrix {
        &self.u
    }

    /// `V` (`K × channels`).
    pub fn v(&self) -> &Matrix {
        &self.v
    }

    /// `‖A − UV‖ / ‖A‖`.
    pub fn rel_error(&self) -> f64 {
        self.rel_error
    }

    /// The images' grids.
    pub fn grids(&self) -> &[CellGrid] {
        &self.grids
    }

    /// Image `i`'s rows of `U`.
    pub fn rows(&self, i: usize) -> Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }

    /// The L2 norm of factor `k`'s concept vector.
    pub fn concept_norm(&self, k: usize) -> f32 {
        self.v.row(k).iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    /// Factor `k`'s heatmap in image `i`.
    pub fn heatmap(&self, i: usize, k: usize) -> Result<Heatmap> {
        if k >= self.k() || i >= self.len() {
            return Err(Error::invalid(format!(
                "factor {k} of image {i}: the factorization has {} factors and {} images",
                self.k(),
                self.len()
            )));
        }
        Heatmap::new(
            self.grids[i],
            self.rows(i).map(|r| self.u.get(r, k)).collect(),
        )
    }

    /// `Σ U_k ‖V_k‖` over `factors`, in image `i`'s cells.
    fn object_heatmap_values(&self, i: usize, factors: &[usize]) -> Vec<f32> {
        let norms: Vec<f32> = factors.iter().map(|&k| self.concept_norm(k)).collect();
        self.rows(i)
            .map(|r| {
                factors
                    .iter()
                    .zip(&norms)
                    .map(|(&k, n)| self.u.get(r, k) * n)
                    .sum()
            })
            .collect()
    }
}

/// A co-segmentation of a set: its factorization, the object's factors, and how masks are
/// made from them.
#[derive(Debug, Clone, PartialEq)]
pub struct CosegModel {
    /// The settings used.
    pub settings: CosegSettings,
    /// The joint factorization.
    pub factors: JointFactors,
    /// The object's factors (indices into the factorization).
    pub object: Vec<usize>,
    /// Per-factor statistics (border ratios, energies).
    pub stats: FactorStats,
    set_max: f32,
    /// One-shot by appearance ([`OneShotMode::Appearance`]): every stacked cell's likeness
    /// to the annotated object, which weights the object heatmap.
    appearance: Option<oneshot::Appearance>,
}

/// What co-segmentation finds in one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The object's pixels (image size).
    pub mask: Mask,
    /// The box around the mask's largest 8-connected component; `None` for an empty mask.
    pub bbox: Option<BBox>,
    /// The object's heatmap over the feature-map cells (`Σ U_k‖V_k‖` over its factors).
    pub heatmap: Heatmap,
}

impl CosegModel {
    /// What a [`crate::eval::CosegRecord`] records of how this model was made: `backbone`'s
    /// name, layer, input size and fingerprint (the backbone its stack was extracted with)
    /// and the settings.
    pub fn provenance(&self, backbone: &crate::backbone::Backbone) -> crate::eval::CosegProvenance {
        let g = &self.settings;
        crate::eval::CosegProvenance {
            backbone: backbone.kind().name().to_string(),
            layer: backbone.layer().name.clone(),
            input_size: backbone.preprocess().input_size,
            weights_fingerprint: backbone.fingerprint().to_string(),
            method: g.method.clone(),
            k: g.k,
            normalise: match g.normalise {
                Normalise::Set => "set".into(),
                Normalise::Image => "image".into(),
            },
            threshold: match g.threshold {
                Threshold::Otsu => "otsu".into(),
                Threshold::Fixed(t) => t.to_string(),
            },
            refine: match g.refine {
                Refine::Colour => "colour".into(),
                Refine::None => "none".into(),
            },
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.factors.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.factors.is_empty()
    }

    /// The object's heatmap in image `i` (`Σ U_k‖V_k‖` over the object's factors).
    pub fn object_heatmap(&self, i: usize) -> Result<Heatmap> {
        if i >= self.len() {
            return Err(Error::invalid(format!(
                "image {i} of a set of {}",
                self.len()
            )));
        }
        Heatmap::new(self.factors.grids[i], self.object_values(i, &self.object))
    }

    /// The object heatmap's values in image `i`'s cells with `factors` as the object:
    /// `Σ U_k‖V_k‖`, weighted by the cells' likeness to the annotated object when the model
    /// came from [`OneShotMode::Appearance`].
    fn object_values(&self, i: usize, factors: &[usize]) -> Vec<f32> {
        let values = self.factors.object_heatmap_values(i, factors);
        match &self.appearance {
            Some(a) => a.weigh(values, self.factors.rows(i)),
            None => values,
        }
    }

    /// The maximum of the object heatmap with `factors` as the object over the set.
    fn set_max_of(&self, factors: &[usize]) -> f32 {
        (0..self.len())
            .map(|i| {
                self.object_values(i, factors)
                    .into_iter()
                    .fold(0f32, f32::max)
            })
            .fold(0f32, f32::max)
    }

    /// Image `i`'s mask and box; `image` is its decoded picture (as
    /// [`crate::images::load_rgb`] gives it), whose size must be the one its activations
    /// were made from.
    pub fn segment(&self, i: usize, image: &RgbImage) -> Result<Segment> {
        let heatmap = self.object_heatmap(i)?;
        let norm = match self.settings.normalise {
            Normalise::Set => self.set_max,
            Normalise::Image => heatmap.max(),
        };
        let scaled = Heatmap::new(
            *heatmap.grid(),
            heatmap
                .values()
                .iter()
                .map(|&v| if norm > 0.0 { v / norm } else { 0.0 })
                .collect(),
        )?;
        let prior = match &self.appearance {
            Some(a) if a.after > 0.0 => Some((
                Heatmap::new(
                    self.factors.grids[i],
                    a.likeness(self.factors.rows(i)).to_vec(),
                )?,
                a.after,
            )),
            _ => None,
        };
        let mask = refine::mask(
            &scaled,
            image,
            self.settings.threshold,
            self.settings.refine,
            prior.as_ref().map(|(h, b)| (h, *b)),
        )?;
        let bbox = mask.largest_component().bbox();
        Ok(Segment {
            mask,
            bbox,
            heatmap,
        })
    }

    /// The coarse mask (no refinement) that `factors` as the object would give image `i`, at
    /// the image's size: their heatmap normalised as configured (over the set: by these
    /// factors' maximum over the set), upsampled and thresholded.
    pub(crate) fn coarse_mask(&self, i: usize, factors: &[usize]) -> Result<Mask> {
        let values = self.object_values(i, factors);
        let norm = match self.settings.normalise {
            Normalise::Image => values.iter().copied().fold(0f32, f32::max),
            Normalise::Set => self.set_max_of(factors),
        };
        let g = self.factors.grids[i];
        let scaled = Heatmap::new(
            g,
            values
                .iter()
                .map(|&v| if norm > 0.0 { v / norm } else { 0.0 })
                .collect(),
        )?;
        threshold_mask(
            &scaled,
            g.image_width,
            g.image_height,
            self.settings.threshold,
        )
    }

    /// Every factor's heatmap in image `i`, in factor order.
    pub fn factor_heatmaps(&self, i: usize) -> Result<Vec<Heatmap>> {
        (0..self.factors.k())
            .map(|k| self.factors.heatmap(i, k))
            .collect()
    }

    /// Binary masks of each factor in image `i`, at `width × height`: the factor's heatmap
    /// divided by its maximum in the image, upsampled and thresholded like the object's
    /// coarse mask (no refinement). What factor–part matching and one-shot selection compare.
    pub fn factor_masks(&self, i: usize, width: u32, height: u32) -> Result<Vec<Mask>> {
        self.factor_heatmaps(i)?
            .into_iter()
            .map(|h| factor_mask(&h, width, height, self.settings.threshold))
            .collect()
    }
}

/// A heatmap's coarse mask at `width × height`: scaled to its maximum, upsampled, thresholded.
pub(crate) fn factor_mask(h: &Heatmap, width: u32, height: u32, t: Threshold) -> Result<Mask> {
    threshold_mask(&h.clone().unit_max(), width, height, t)
}

/// A (normalised) heatmap's mask at `width × height`: upsampled, thresholded.
fn threshold_mask(h: &Heatmap, width: u32, height: u32, t: Threshold) -> Result<Mask> {
    let up = h.upsample(width, height);
    let level = refine::cut_level(&up, width, height, t);
    Mask::new(
        width as usize,
        height as usize,
        up.iter().map(|&v| v > 0.0 && v >= level).collect(),
    )
}

/// Longer side (pixels) at which factor and part masks are compared in [`CosegModel::match_parts`].
pub const PARTS_SIDE: u32 = 128;

/// Factor–part matching over a set (thesis Table 4.1 style).
#[derive(Debug, Clone, PartialEq)]
pub struct PartsTable {
    /// The parts' names (columns of the matching), sorted.
    pub parts: Vec<String>,
    /// The matching (factor indices are the factorization's; part indices into `parts`).
    pub matching: crate::eval::PartMatching,
    /// Images compared.
    pub images: usize,
}

impl CosegModel {
    /// Matches the factors to annotated parts over the set: for each image `i` with parts
    /// `(name, mask)` (masks of the image's size), every factor's coarse mask
    /// ([`CosegModel::factor_masks`]) and every part's mask at [`PARTS_SIDE`] pixels on the
    /// longer side, pooled over the images (a part missing from an image is empty there),
    /// then [`crate::eval::PartMatcher::match_masks`]: IoU matrix, merging, mutual best
    /// matches.
    pub fn match_parts(
        &self,
        parts: &[(usize, Vec<(String, Mask)>)],
        matcher: &crate::eval::PartMatcher,
    ) -> Result<PartsTable> {
        let mut names: Vec<String> = parts
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(n, _)| n.clone()))
            .collect();
        names.sort();
        names.dedup();
        let k = self.factors.k();
        let mut f_masks: Vec<Vec<Mask>> = vec![Vec::new(); k];
        let mut p_masks: Vec<Vec<Mask>> = vec![Vec::new(); names.len()];
        let mut width = 0;
        for (i, image_parts) in parts {
            let g = self.factors.grids.get(*i).ok_or_else(|| {
                Error::invalid(format!("parts for image {i} of a set of {}", self.len()))
            })?;
            let s = f64::from(PARTS_SIDE) / f64::from(g.image_width.max(g.image_height).max(1));
            let s = s.min(1.0);
            let w = ((f64::from(g.image_width) * s).round() as u32).max(1);
            let h = ((f64::from(g.image_height) * s).round() as u32).max(1);
            width = width.max(w as usize);
            for (fm, m) in f_masks.iter_mut().zip(self.factor_masks(*i, w, h)?) {
                fm.push(m);
            }
            for (j, name) in names.iter().enumerate() {
                let m = match image_parts.iter().find(|(n, _)| n == name) {
                    Some((_, m)) => {
                        if (m.width(), m.height())
                            != (g.image_width as usize, g.image_height as usize)
                        {
                            return Err(Error::invalid(format!(
                                "part {name:?} of image {i} is {}×{}, the image {}×{}",
                                m.width(),
                                m.height(),
                                g.image_width,
                                g.image_height
                            )));
                        }
                        refine::scale_mask(m, w as usize, h as usize)
                    }
                    None => Mask::empty(w as usize, h as usize),
                };
                p_masks[j].push(m);
            }
        }
        let pad = |m: &Mask| Mask::from_fn(width, m.height(), |x, y| m.get(x, y));
        let pool = |ms: &[Mask]| -> Result<Mask> {
            if ms.is_empty() {
                return Ok(Mask::empty(width.max(1), 0));
            }
            Mask::vstack(&ms.iter().map(pad).collect::<Vec<_>>())
        };
        let factors: Vec<Mask> = f_masks.iter().map(|m| pool(m)).collect::<Result<_>>()?;
        let part_masks: Vec<Mask> = p_masks.iter().map(|m| pool(m)).collect::<Result<_>>()?;
        Ok(PartsTable {
            parts: names,
            matching: matcher.match_masks(&factors, &part_masks)?,
            images: parts.len(),
        })
    }
}
