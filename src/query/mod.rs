//! Queries: an image (or a region of it) in, ranked and localized hits out.
//!
//! A [`Query`] is an options value — the image, an optional region and how to use it
//! ([`BoxMode`]), how many hits, query expansion, localization, a minimum score — with
//! documented defaults. A [`Searcher`] runs queries against an [`Index`] with the
//! [`Pipeline`] the index was built with.
//!
//! ```no_run
//! use deepfactor::query::{Query, Searcher, SearcherOptions};
//! use deepfactor::BBox;
//! # fn main() -> deepfactor::Result<()> {
//! let searcher = Searcher::open("photos.dfi", SearcherOptions::default())?;
//! let query = Query::new("query.jpg").region(BBox::new(90.0, 150.0, 255.0, 280.0)?).top_k(5);
//! for hit in searcher.search(&query)?.hits {
//!     println!("{:.3} {}", hit.score, hit.path.display());
//! }
//! # Ok(()) }
//! ```

mod benchmark;

pub use benchmark::{
    image_file, run_benchmark, BenchmarkOptions, BenchmarkRun, HitRecord, LocalizationRow,
    LocalizationVariant, QueryHits,
};

use crate::backbone::WeightSource;
use crate::descriptor::{extract_crop, Description};
use crate::heatmap::Heatmap;
use crate::index::{
    CropCheck, CropView, FactorMatch, FactorSearch, Index, QueryFactor, RegionalHit, SearchMode,
    SearchOptions,
};
use crate::localize::{
    kept_average, ConceptSample, HitFactors, JointLocalization, JointSelection,
    LocalizationSettings, Localizer, Located, QueryConcept,
};
use crate::pipeline::Pipeline;
use crate::Activations;
use crate::{BBox, Error, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Hits returned when the query does not say.
pub const DEFAULT_TOP_K: usize = 10;
/// Results averaged into the query by [`Expansion::Average`] in the thesis (QE-5).
pub const DEFAULT_EXPANSION_DEPTH: usize = 5;
/// Exponent of α-query expansion (Radenović et al.).
pub const DEFAULT_ALPHA: f32 = 3.0;

/// How a query's region is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BoxMode {
    /// The thesis' filter: describe the whole image, keep only the factors whose heatmap has
    /// more than the threshold (75%) of its mass inside the box. Pooled descriptors pool the
    /// cells whose centres lie inside the box.
    #[default]
    Filter,
    /// Cut the image to the box and describe the cut-out, as most published methods do.
    Crop,
}

impl std::str::FromStr for BoxMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "filter" => Ok(BoxMode::Filter),
            "crop" => Ok(BoxMode::Crop),
            _ => Err(Error::invalid(format!(
                "box mode {s:?}: expected filter or crop"
            ))),
        }
    }
}

impl std::fmt::Display for BoxMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BoxMode::Filter => "filter",
            BoxMode::Crop => "crop",
        })
    }
}

/// Query expansion: search again with the query blended with its first results.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Expansion {
    /// One search.
    #[default]
    None,
    /// Average query expansion: the query plus the top `n` results' descriptors, summed and
    /// re-normalised (Chum et al.; the thesis uses `n = 5`).
    Average(usize),
    /// α-query expansion: the top `n` results weighted by `score^alpha` (Radenović et al.).
    Alpha {
        /// Results blended in.
        n: usize,
        /// Exponent of the weights.
        alpha: f32,
    },
}

/// Where to localize the query's region in the first `n` hits (see [`crate::localize`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Localize {
    /// No localization.
    #[default]
    None,
    /// Joint NMF of the query with its first `n` hits (the thesis' method; re-runs the
    /// network on those images).
    Joint(usize),
    /// Joint NMF of the query with the first `n` hits' reconstructions `U·V` from their
    /// stored factors (no network run on the hits; hits without stored factors are not
    /// localized).
    JointStored(usize),
    /// From the factors stored in the index (fastest; no network run on the hits; hits
    /// without stored factors are not localized).
    Stored(usize),
}

impl Localize {
    /// How many hits are localized.
    pub fn hits(&self) -> usize {
        match *self {
            Localize::None => 0,
            Localize::Joint(n) | Localize::JointStored(n) | Localize::Stored(n) => n,
        }
    }

    /// The variant's name: `none`, `joint`, `joint-stored` or `stored`.
    pub fn name(&self) -> &'static str {
        match self {
            Localize::None => "none",
            Localize::Joint(_) => "joint",
            Localize::JointStored(_) => "joint-stored",
            Localize::Stored(_) => "stored",
        }
    }

    /// The variant named `name` (see [`Localize::name`]) on the first `n` hits.
    pub fn parse(name: &str, n: usize) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Localize::None),
            "joint" => Ok(Localize::Joint(n)),
            "joint-stored" => Ok(Localize::JointStored(n)),
            "stored" => Ok(Localize::Stored(n)),
            other => Err(Error::invalid(format!(
                "localization {other:?}: expected joint, joint-stored, stored or none"
            ))),
        }
    }
}

/// Whether the query's factors are also matched against the index's factor vectors
/// (factor-level search, [`crate::index::FactorSearch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorMode {
    /// For a region query on an index with factor vectors (format version 2); a region
    /// query on an older index searches globally and says so in
    /// [`QuerySummary::factor_note`].
    #[default]
    Auto,
    /// Never: the global descriptor alone ranks.
    Off,
    /// Always (whole-image queries too); an index without factor vectors is an error.
    On,
}

impl std::str::FromStr for FactorMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(FactorMode::Auto),
            "off" => Ok(FactorMode::Off),
            "on" => Ok(FactorMode::On),
            _ => Err(Error::invalid(format!(
                "factor search {s:?}: expected auto, off or on"
            ))),
        }
    }
}

/// Which of the query's factors are matched against the factor vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FactorSource {
    /// The factors the descriptor was built from: those inside the region (filter), the
    /// cut-out's (crop), all (no region).
    #[default]
    Query,
    /// With a region in filter mode, also the factors of the cut-out region (one more
    /// network run, on the crop).
    WithCrop,
}

impl std::str::FromStr for FactorSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "query" => Ok(FactorSource::Query),
            "with-crop" => Ok(FactorSource::WithCrop),
            _ => Err(Error::invalid(format!(
                "factor source {s:?}: expected query or with-crop"
            ))),
        }
    }
}

/// The query image.
#[derive(Debug, Clone)]
pub enum QueryImage {
    /// An image file.
    Path(PathBuf),
    /// Activations already extracted with the index's backbone (whole image).
    Activations(Arc<Activations>),
}

/// A query: the image, an optional region, and how to search. Defaults: no region, filter box
/// mode, [`DEFAULT_TOP_K`] hits, the index's default search mode, no expansion, no
/// localization, no minimum score, factor-level search for region queries
/// ([`FactorMode::Auto`], [`FactorSearch`]'s defaults, the query's own factors).
#[derive(Debug, Clone)]
pub struct Query {
    image: QueryImage,
    region: Option<BBox>,
    box_mode: BoxMode,
    top_k: usize,
    ef_search: Option<usize>,
    exact: Option<bool>,
    expansion: Expansion,
    localize: Localize,
    min_score: Option<f32>,
    factor_mode: FactorMode,
    factor_search: FactorSearch,
    factor_source: FactorSource,
    crop_check: CropCheck,
}

impl Query {
    /// A query by an image file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Query::with_image(QueryImage::Path(path.into()))
    }

    /// A query by precomputed activations (of the whole image; `BoxMode::Crop` needs a file).
    pub fn from_activations(acts: Activations) -> Self {
        Query::with_image(QueryImage::Activations(Arc::new(acts)))
    }

    fn with_image(image: QueryImage) -> Self {
        Query {
            image,
            region: None,
            box_mode: BoxMode::default(),
            top_k: DEFAULT_TOP_K,
            ef_search: None,
            exact: None,
            expansion: Expansion::None,
            localize: Localize::None,
            min_score: None,
            factor_mode: FactorMode::Auto,
            factor_search: FactorSearch::default(),
            factor_source: FactorSource::Query,
            crop_check: CropCheck::default(),
        }
    }

    /// Searches for this region of the image (pixels of the image as stored, EXIF orientation
    /// applied).
    pub fn region(mut self, bbox: BBox) -> Self {
        self.region = Some(bbox);
        self
    }

    /// How the region is used (default [`BoxMode::Filter`]).
    pub fn box_mode(mut self, mode: BoxMode) -> Self {
        self.box_mode = mode;
        self
    }

    /// Number of hits (default [`DEFAULT_TOP_K`]).
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// Beam width of the HNSW search (default: the index's).
    pub fn ef_search(mut self, ef: usize) -> Self {
        self.ef_search = Some(ef);
        self
    }

    /// Force exact (`true`) or graph (`false`) search (default: by index size).
    pub fn exact(mut self, exact: bool) -> Self {
        self.exact = Some(exact);
        self
    }

    /// Query expansion (default none).
    pub fn expansion(mut self, e: Expansion) -> Self {
        self.expansion = e;
        self
    }

    /// Localization of the region in the hits (default none).
    pub fn localize(mut self, l: Localize) -> Self {
        self.localize = l;
        self
    }

    /// Drop hits scoring below this (default: keep all).
    pub fn min_score(mut self, s: f32) -> Self {
        self.min_score = Some(s);
        self
    }

    /// Whether factor-level search runs (default [`FactorMode::Auto`]).
    pub fn factor_mode(mut self, m: FactorMode) -> Self {
        self.factor_mode = m;
        self
    }

    /// Settings of factor-level search (default [`FactorSearch::default`]).
    pub fn factor_search(mut self, f: FactorSearch) -> Self {
        self.factor_search = f;
        self
    }

    /// The crop check of a region query in filter mode with factor-level search (default
    /// [`CropCheck`]'s: when the region's factor coverage is below 0.7, the cut-out is
    /// described on its own and the images it recognizes as the same view are lifted; see
    /// [`crate::index::CropCheck`]).
    pub fn crop_check(mut self, c: CropCheck) -> Self {
        self.crop_check = c;
        self
    }

    /// See [`Query::crop_check`].
    pub fn get_crop_check(&self) -> CropCheck {
        self.crop_check
    }

    /// Which query factors are matched (default [`FactorSource::Query`]).
    pub fn factor_source(mut self, s: FactorSource) -> Self {
        self.factor_source = s;
        self
    }

    /// The factor mode.
    pub fn get_factor_mode(&self) -> FactorMode {
        self.factor_mode
    }

    /// The factor search settings.
    pub fn get_factor_search(&self) -> FactorSearch {
        self.factor_search
    }

    /// The factor source.
    pub fn get_factor_source(&self) -> FactorSource {
        self.factor_source
    }

    /// The query image.
    pub fn image(&self) -> &QueryImage {
        &self.image
    }

    /// The region, if any.
    pub fn get_region(&self) -> Option<&BBox> {
        self.region.as_ref()
    }

    /// The box mode.
    pub fn get_box_mode(&self) -> BoxMode {
        self.box_mode
    }

    /// Hits asked for.
    pub fn get_top_k(&self) -> usize {
        self.top_k
    }

    /// Expansion.
    pub fn get_expansion(&self) -> Expansion {
        self.expansion
    }

    /// Localization.
    pub fn get_localize(&self) -> Localize {
        self.localize
    }

    fn validate(&self) -> Result<()> {
        if self.top_k == 0 {
            return Err(Error::invalid("top_k must be at least 1"));
        }
        if let Some(s) = self.min_score {
            if !s.is_finite() {
                return Err(Error::invalid("min_score must be finite"));
            }
        }
        match self.expansion {
            Expansion::Average(0) | Expansion::Alpha { n: 0, .. } => {
                return Err(Error::invalid("query expansion needs at least one result"))
            }
            Expansion::Alpha { alpha, .. } if !alpha.is_finite() || alpha < 0.0 => {
                return Err(Error::invalid(
                    "α of query expansion must be finite and non-negative",
                ))
            }
            _ => {}
        }
        self.factor_search.validate()?;
        self.crop_check.validate()?;
        if self.crop_check.get_mode() == crate::index::CropCheckMode::Always
            && self.region.is_some()
            && self.box_mode == BoxMode::Filter
            && matches!(self.image, QueryImage::Activations(_))
        {
            return Err(Error::invalid(
                "the crop check needs the image file, not activations",
            ));
        }
        if self.factor_source == FactorSource::WithCrop
            && self.region.is_some()
            && matches!(self.image, QueryImage::Activations(_))
        {
            return Err(Error::invalid(
                "query factors with the crop's need the image file, not activations",
            ));
        }
        if self.localize != Localize::None && self.localize.hits() == 0 {
            return Err(Error::invalid("localization needs at least one hit"));
        }
        if self.box_mode == BoxMode::Crop
            && self.region.is_some()
            && matches!(self.image, QueryImage::Activations(_))
        {
            return Err(Error::invalid(
                "a crop query needs the image file, not activations",
            ));
        }
        Ok(())
    }
}

/// One hit.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// Rank, from 1.
    pub rank: usize,
    /// Id in the index.
    pub id: u64,
    /// The image file.
    pub path: PathBuf,
    /// The ranking score: the cosine similarity to the (expanded) query, or with
    /// factor-level search the standardized mix of [`SearchHit::global_score`] and
    /// [`SearchHit::factor_score`] (see [`crate::index::FactorSearch`]).
    pub score: f32,
    /// With factor-level search: the cosine of the global descriptors.
    pub global_score: Option<f32>,
    /// With factor-level search: the image's factor score.
    pub factor_score: Option<f32>,
    /// With factor-level search: each query factor's best-matching factor in this image
    /// (query factor numbers as in [`QuerySummary::query_factors`], image factor numbers as
    /// in the image's stored factors).
    pub factor_matches: Vec<FactorMatch>,
    /// With the crop check: the cut-out's own mixed score for this image, standardized over
    /// the database (images beyond the outlier level were lifted; see
    /// [`crate::index::CropCheck`]).
    pub crop_score: Option<f32>,
    /// Where the query's region is in this image, when localization was asked for and this
    /// hit was among those localized.
    pub location: Option<Located>,
}

/// What the query was made of.
#[derive(Debug, Clone, Serialize)]
pub struct QuerySummary {
    /// The region, if any.
    pub region: Option<BBox>,
    /// Box mode used.
    pub box_mode: BoxMode,
    /// The query's activations grid (whole image).
    pub grid: crate::CellGrid,
    /// Factors the descriptor was built from (NMF kinds).
    pub kept: Vec<usize>,
    /// Whether the region rule fell back (see `descriptor::Description::fallback`).
    pub fallback: bool,
    /// Every factor's share of heatmap mass inside the region (NMF kinds, filter mode).
    pub mass_inside: Vec<f32>,
    /// The kept factors' heatmaps over `grid` (NMF kinds, filter mode or no region), each
    /// scaled to a maximum of 1.
    pub heatmaps: Vec<Heatmap>,
    /// The joint localization's view of the query, when joint localization ran.
    pub joint: Option<JointLocalization>,
    /// How the hits were localized, and with which settings (`None` without localization).
    pub localization: Option<(Localize, LocalizationSettings)>,
    /// Factor-level search as it ran (`None`: global search only).
    pub factor_search: Option<FactorSearch>,
    /// The query factors matched against the factor vectors: numbers in the query's
    /// factorization (with [`FactorSource::WithCrop`], the crop's factors follow, numbered
    /// from K).
    pub query_factors: Vec<usize>,
    /// Why factor-level search did not run although [`FactorMode::Auto`] would have used it
    /// (an index without factor vectors), if so.
    pub factor_note: Option<String>,
    /// The region's factor coverage ([`Description::region_coverage`]; filter mode).
    pub region_coverage: Option<f32>,
    /// The crop check as it ran (`None`: the cut-out was not checked).
    pub crop_check: Option<CropCheck>,
}

/// Time spent in each stage, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Decoding, preprocessing and the network on the query.
    pub features_ms: f64,
    /// NMF and descriptor of the query.
    pub describe_ms: f64,
    /// The cut-out's network run, NMF and descriptor (crop check or
    /// [`FactorSource::WithCrop`]; 0 when neither ran).
    pub crop_ms: f64,
    /// Index search, expansion included.
    pub search_ms: f64,
    /// Localization (network on the hits included, for joint).
    pub localize_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// Result of a query.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    /// Hits, best first.
    pub hits: Vec<SearchHit>,
    /// The query, described.
    pub query: QuerySummary,
    /// Time per stage.
    pub timings: Timings,
}

/// How to open a [`Searcher`]: where the weights come from and which device runs the network.
#[derive(Debug, Clone)]
pub struct SearcherOptions {
    weights: WeightSource,
    device: Device,
    localizer: crate::localize::LocalizerBuilder,
}

impl Default for SearcherOptions {
    fn default() -> Self {
        SearcherOptions {
            weights: WeightSource::Default,
            device: Device::Cpu,
            localizer: Localizer::builder(),
        }
    }
}

impl SearcherOptions {
    /// Weights of the backbone (default: the backbone's default; their fingerprint must match
    /// the index's recipe).
    pub fn weights(mut self, w: WeightSource) -> Self {
        self.weights = w;
        self
    }

    /// Device for the network.
    pub fn device(mut self, d: Device) -> Self {
        self.device = d;
        self
    }

    /// Localization settings.
    pub fn localizer(mut self, l: crate::localize::LocalizerBuilder) -> Self {
        self.localizer = l;
        self
    }
}

/// Runs queries against an index.
#[derive(Debug)]
pub struct Searcher {
    index: Index,
    pipeline: Pipeline,
    localizer: Localizer,
    /// Concept samples for the localization baselines, by sample size (made on first use).
    samples: Mutex<HashMap<usize, Arc<ConceptSample>>>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The expanded query: `query` plus the first neighbours' descriptors (given with their
/// scores, best first), weighted by 1 ([`Expansion::Average`]) or `score^α`
/// ([`Expansion::Alpha`]), re-normalised to unit length. [`Expansion::None`] returns the query.
pub fn expand(query: &[f32], neighbours: &[(f32, Vec<f32>)], expansion: Expansion) -> Vec<f32> {
    let (n, alpha) = match expansion {
        Expansion::None => return query.to_vec(),
        Expansion::Average(n) => (n, None),
        Expansion::Alpha { n, alpha } => (n, Some(alpha)),
    };
    let mut out = query.to_vec();
    for (score, v) in neighbours.iter().take(n) {
        let w = alpha.map_or(1.0, |a| score.max(0.0).powf(a));
        out.iter_mut().zip(v).for_each(|(e, x)| *e += w * x);
    }
    normalize(&mut out);
    out
}

impl Searcher {
    /// A searcher over `index` with `pipeline`, which must make the index's recipe.
    pub fn new(index: Index, pipeline: Pipeline, localizer: Localizer) -> Result<Self> {
        index.recipe().check_compatible(pipeline.recipe())?;
        Ok(Searcher {
            index,
            pipeline,
            localizer,
            samples: Mutex::new(HashMap::new()),
        })
    }

    /// Opens the index in `dir` and rebuilds its pipeline from its recipe.
    pub fn open(dir: impl AsRef<Path>, options: SearcherOptions) -> Result<Self> {
        let index = Index::open(dir.as_ref())?;
        let pipeline = Pipeline::for_index(&index, options.weights, options.device)?;
        let localizer = options.localizer.build()?;
        Searcher::new(index, pipeline, localizer)
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The localizer.
    pub fn localizer(&self) -> &Localizer {
        &self.localizer
    }

    /// Runs a query: features, description, retrieval (with expansion), localization — each
    /// stage a call into its module, each timed.
    pub fn search(&self, q: &Query) -> Result<SearchResults> {
        q.validate()?;
        let start = Instant::now();
        let mut timings = Timings::default();
        let acts = timed(&mut timings.features_ms, || self.features(q))?;
        let desc = timed(&mut timings.describe_ms, || self.describe(q, &acts))?;
        let (mut factors, factor_note) =
            timed(&mut timings.describe_ms, || self.query_factors(q, &desc))?;
        let region_coverage = match (q.region, q.box_mode) {
            (Some(_), BoxMode::Filter) => desc.region_coverage(),
            _ => None,
        };
        let crop = self.cut_out(
            q,
            &desc,
            factors.as_mut(),
            region_coverage,
            &mut timings.crop_ms,
        )?;
        let crop_view = crop
            .as_ref()
            .map(|(vector, factors)| CropView { vector, factors });
        let mut hits = timed(&mut timings.search_ms, || {
            self.retrieve(q, &desc.vector, factors.as_deref(), crop_view)
        })?;
        let region = q.region.unwrap_or(BBox {
            x1: 0.0,
            y1: 0.0,
            x2: acts.grid.image_width as f32,
            y2: acts.grid.image_height as f32,
        });
        let joint = timed(&mut timings.localize_ms, || {
            let n = q.localize.hits().min(hits.len());
            self.localize_hits(
                &self.localizer,
                q.localize,
                &acts,
                &desc,
                &region,
                &mut hits[..n],
                None,
            )
        })?;
        timings.total_ms = ms(start);
        // The query's heatmaps: the kept factors of its own factorization (a crop's factors
        // lie on the crop, not on the query image).
        let heatmaps = match (q.region, q.box_mode) {
            (Some(_), BoxMode::Crop) => Vec::new(),
            _ => desc.kept_heatmaps()?,
        };
        Ok(SearchResults {
            hits,
            query: QuerySummary {
                region: q.region,
                box_mode: q.box_mode,
                grid: acts.grid,
                kept: desc.kept,
                fallback: desc.fallback,
                mass_inside: desc.mass_inside,
                heatmaps,
                joint,
                localization: (q.localize != Localize::None)
                    .then(|| (q.localize, self.localizer.settings().summary())),
                factor_search: factors.as_ref().map(|_| q.factor_search),
                query_factors: factors
                    .as_ref()
                    .map_or_else(Vec::new, |f| f.iter().map(|x| x.factor).collect()),
                factor_note,
                region_coverage,
                crop_check: crop.is_some().then_some(q.crop_check),
            },
            timings,
        })
    }

    /// Stage 1: the query image's activations (whole image), and its region checked against
    /// them.
    fn features(&self, q: &Query) -> Result<Arc<Activations>> {
        let acts: Arc<Activations> = match &q.image {
            QueryImage::Path(p) => Arc::new(self.pipeline.backbone().extract_path(p)?),
            QueryImage::Activations(a) => a.clone(),
        };
        if let Some(b) = &q.region {
            let (w, h) = (acts.grid.image_width as f32, acts.grid.image_height as f32);
            if b.clip(w, h).area() <= 0.0 {
                return Err(Error::invalid(format!(
                    "the region ({}, {}, {}, {}) lies outside the {w}×{h} query image",
                    b.x1, b.y1, b.x2, b.y2
                )));
            }
        }
        Ok(acts)
    }

    /// Stage 2: the query's descriptor, made as the index's descriptors are made — of the
    /// whole image, of its region by the factor filter, or of the cut-out.
    fn describe(&self, q: &Query, acts: &Activations) -> Result<Description> {
        let d = self.pipeline.describer();
        match (q.region, q.box_mode) {
            (None, _) => d.describe(acts),
            (Some(b), BoxMode::Filter) => d.describe_region(acts, &b),
            (Some(b), BoxMode::Crop) => {
                let QueryImage::Path(path) = &q.image else {
                    return Err(Error::invalid("a crop query needs the image file"));
                };
                d.describe(&extract_crop(self.pipeline.backbone(), path, &b)?)
            }
        }
    }

    /// Stage 2b: the query factors factor-level search matches, `None` when it does not run
    /// (with the reason when [`FactorMode::Auto`] would have run it).
    fn query_factors(
        &self,
        q: &Query,
        desc: &Description,
    ) -> Result<(Option<Vec<QueryFactor>>, Option<String>)> {
        let wanted = match q.factor_mode {
            FactorMode::Off => false,
            FactorMode::On => true,
            FactorMode::Auto => q.region.is_some(),
        };
        if !wanted {
            return Ok((None, None));
        }
        if !self.index.has_factor_vectors() {
            let note = format!(
                "{} has no factor vectors (format version 1): searched with the global \
                 descriptor only; `deepfactor index compact` adds them",
                self.index.dir().display()
            );
            return match q.factor_mode {
                FactorMode::On => Err(Error::invalid(note)),
                _ => Ok((None, Some(note))),
            };
        }
        match kept_factors(desc) {
            Some(out) => Ok((Some(out), None)),
            None => match q.factor_mode {
                FactorMode::On => Err(Error::invalid(
                    "factor-level search needs an NMF descriptor kind",
                )),
                _ => Ok((None, None)),
            },
        }
    }

    /// Stage 2c: the region's cut-out, run through the network once when either needs it —
    /// [`FactorSource::WithCrop`] (its factors are appended to `factors`, numbered from K) or
    /// the crop check ([`Query::crop_check`]: factor-level search runs and the check's mode
    /// and the region's `coverage` call for it). Returns the cut-out's descriptor and factors
    /// for the crop check, `None` when it does not run; the time spent on the cut-out is
    /// added to `ms` (nothing when it is not needed).
    fn cut_out(
        &self,
        q: &Query,
        desc: &Description,
        factors: Option<&mut Vec<QueryFactor>>,
        coverage: Option<f32>,
        ms: &mut f64,
    ) -> Result<Option<(Vec<f32>, Vec<QueryFactor>)>> {
        let (Some(b), BoxMode::Filter, QueryImage::Path(path), Some(factors)) =
            (q.region, q.box_mode, &q.image, factors)
        else {
            return Ok(None);
        };
        let with_crop = q.factor_source == FactorSource::WithCrop;
        let check = q.crop_check.runs(coverage);
        if !with_crop && !check {
            return Ok(None);
        }
        let cd = timed(ms, || {
            let crop = extract_crop(self.pipeline.backbone(), path, &b)?;
            self.pipeline.describer().describe(&crop)
        })?;
        let (Some(cf), Some(cut)) = (&cd.factors, kept_factors(&cd)) else {
            return Ok(None);
        };
        if with_crop {
            let k0 = desc.factors.as_ref().map_or(0, |f| f.v.rows());
            factors.extend((0..cf.v.rows()).map(|k| QueryFactor {
                factor: k0 + k,
                concept: cf.v.row(k).to_vec(),
            }));
        }
        Ok(check.then_some((cd.vector, cut)))
    }

    /// Stage 3: the index searched with the descriptor (again with the expanded query when
    /// asked) and, when given, the query factors; the hits cut to `top_k` and `min_score`,
    /// with their files.
    fn retrieve(
        &self,
        q: &Query,
        vector: &[f32],
        factors: Option<&[QueryFactor]>,
        crop: Option<CropView<'_>>,
    ) -> Result<Vec<SearchHit>> {
        let depth = match q.expansion {
            Expansion::None => 0,
            Expansion::Average(n) | Expansion::Alpha { n, .. } => n,
        };
        let mut hits = self.run_search(vector, q.top_k.max(depth), q, factors, crop)?;
        if depth > 0 && !hits.is_empty() {
            let mut neighbours = Vec::with_capacity(depth);
            for h in hits.iter().take(depth) {
                if let Some(v) = self.index.descriptor(h.id)? {
                    neighbours.push((h.global, v));
                }
            }
            let expanded = expand(vector, &neighbours, q.expansion);
            hits = self.run_search(&expanded, q.top_k, q, factors, crop)?;
        }
        hits.truncate(q.top_k);
        if let Some(min) = q.min_score {
            hits.retain(|h| h.score >= min);
        }
        hits.iter()
            .enumerate()
            .map(|(i, h)| {
                let doc = self.index.document(h.id)?.ok_or_else(|| {
                    Error::invalid(format!("hit {} vanished from the index", h.id))
                })?;
                let regional = factors.is_some();
                Ok(SearchHit {
                    rank: i + 1,
                    id: h.id,
                    path: doc.meta.path,
                    score: h.score,
                    global_score: regional.then_some(h.global),
                    factor_score: regional.then_some(h.factor),
                    factor_matches: h.matches.clone(),
                    crop_score: h.crop,
                    location: None,
                })
            })
            .collect()
    }

    /// One search: global, or factor-level when `factors` are given (global hits come back
    /// as [`RegionalHit`]s with their cosine as every score and no matches).
    fn run_search(
        &self,
        vector: &[f32],
        k: usize,
        q: &Query,
        factors: Option<&[QueryFactor]>,
        crop: Option<CropView<'_>>,
    ) -> Result<Vec<RegionalHit>> {
        let mut opts = SearchOptions::new().k(k);
        if let Some(ef) = q.ef_search {
            opts = opts.ef_search(ef);
        }
        if let Some(exact) = q.exact {
            opts = opts.mode(if exact {
                SearchMode::Exact
            } else {
                SearchMode::Hnsw
            });
        }
        let recipe = self.pipeline.recipe();
        match factors {
            Some(f) => self.index.search_regional(
                recipe,
                vector,
                f,
                crop.map(|c| (c, &q.crop_check)),
                &opts,
                &q.factor_search,
            ),
            None => Ok(self
                .index
                .search(recipe, vector, &opts)?
                .into_iter()
                .map(|h| RegionalHit {
                    id: h.id,
                    score: h.score,
                    global: h.score,
                    factor: 0.0,
                    matches: Vec::new(),
                    crop: None,
                })
                .collect()),
        }
    }

    /// Stage 4: where `region` of the query (its activations `acts`, its description `desc`)
    /// is in `hits`, localized by `localizer` as `how` says (its hit count is not applied
    /// here: every hit given is localized); the joint factorization's view of the query when
    /// one ran. `hit_acts`, when given, holds the hits' activations already extracted (one per
    /// hit, `None` for one that could not be read) for [`Localize::Joint`]; otherwise they are
    /// extracted here. A hit whose file is unreadable (joint) or that has no stored factors
    /// (stored, joint-stored) is left unlocalized.
    #[allow(clippy::too_many_arguments)]
    pub fn localize_hits(
        &self,
        localizer: &Localizer,
        how: Localize,
        acts: &Activations,
        desc: &Description,
        region: &BBox,
        hits: &mut [SearchHit],
        hit_acts: Option<&[Option<Activations>]>,
    ) -> Result<Option<JointLocalization>> {
        if how == Localize::None || hits.is_empty() {
            return Ok(None);
        }
        let (concepts, rule) = self.query_concepts(localizer, acts, desc, region)?;
        // The hits' stored factors, for the stored variants and the whole-view rule.
        let mut stored = Vec::with_capacity(hits.len());
        for hit in hits.iter() {
            stored.push(self.hit_factors(hit.id)?);
        }
        let joint = match how {
            Localize::None => None,
            Localize::Stored(_) => {
                for (hit, sf) in hits.iter_mut().zip(&stored) {
                    if let Some((grid, v, maps)) = sf {
                        let h = HitFactors {
                            concepts: v,
                            heatmaps: maps,
                        };
                        hit.location = Some(localizer.from_stored(&concepts, h, *grid, rule)?);
                    }
                }
                None
            }
            Localize::Joint(_) => {
                let extracted;
                let hit_acts = match hit_acts {
                    Some(a) if a.len() == hits.len() => a,
                    Some(a) => {
                        return Err(Error::invalid(format!(
                            "{} activations for {} hits",
                            a.len(),
                            hits.len()
                        )))
                    }
                    None => {
                        let paths: Vec<PathBuf> = hits.iter().map(|h| h.path.clone()).collect();
                        extracted = self
                            .pipeline
                            .backbone()
                            .extract_paths(&paths)
                            .into_iter()
                            .map(Result::ok)
                            .collect::<Vec<_>>();
                        &extracted[..]
                    }
                };
                let slots: Vec<usize> =
                    (0..hits.len()).filter(|&i| hit_acts[i].is_some()).collect();
                let targets: Vec<&Activations> =
                    hit_acts.iter().filter_map(Option::as_ref).collect();
                if targets.is_empty() {
                    return Ok(None);
                }
                let selection = if concepts.is_empty() {
                    JointSelection::Mass
                } else {
                    localizer.settings().selection_rule()
                };
                let joint = match selection {
                    JointSelection::Mass => localizer.joint(acts, region, &targets)?,
                    JointSelection::Matched => {
                        let d = self.pipeline.describer();
                        let q = d.factor_input(acts)?;
                        let t = targets
                            .iter()
                            .map(|a| d.factor_input(a))
                            .collect::<Result<Vec<_>>>()?;
                        let refs: Vec<&Activations> = t.iter().collect();
                        localizer.joint_matched(&q, region, &concepts, &refs, rule)?
                    }
                };
                for (slot, loc) in slots.iter().zip(&joint.targets) {
                    hits[*slot].location = Some(loc.clone());
                }
                Some(joint)
            }
            Localize::JointStored(_) => {
                let slots: Vec<usize> = (0..hits.len()).filter(|&i| stored[i].is_some()).collect();
                let mut recon = Vec::with_capacity(slots.len());
                for (grid, v, maps) in stored.iter().flatten() {
                    let h = HitFactors {
                        concepts: v,
                        heatmaps: maps,
                    };
                    recon.push(crate::localize::reconstruction(h, *grid)?);
                }
                if recon.is_empty() {
                    return Ok(None);
                }
                let refs: Vec<&Activations> = recon.iter().collect();
                let q = self.pipeline.describer().factor_input(acts)?;
                let selection = if concepts.is_empty() {
                    JointSelection::Mass
                } else {
                    localizer.settings().selection_rule()
                };
                let joint = match selection {
                    JointSelection::Mass => localizer.joint(&q, region, &refs)?,
                    JointSelection::Matched => {
                        localizer.joint_matched(&q, region, &concepts, &refs, rule)?
                    }
                };
                for (slot, loc) in slots.iter().zip(&joint.targets) {
                    hits[*slot].location = Some(loc.clone());
                }
                Some(joint)
            }
        };
        // The whole-view rule, from the stored factors, for the joint variants (the stored
        // variant applied it already).
        if !matches!(how, Localize::Stored(_)) {
            let threshold = localizer.settings().whole_view_rule();
            for (hit, sf) in hits.iter_mut().zip(&stored) {
                if let (Some(loc), Some((_, v, maps))) = (hit.location.as_mut(), sf) {
                    let h = HitFactors {
                        concepts: v,
                        heatmaps: maps,
                    };
                    loc.apply_whole_view(crate::localize::region_fill(&concepts, h), threshold);
                }
            }
        }
        Ok(joint)
    }

    /// The query's kept concepts with their baselines over the index, and the binarization
    /// rule for the hits (a calibrated rule resolved on the query's own heatmap).
    fn query_concepts(
        &self,
        localizer: &Localizer,
        acts: &Activations,
        desc: &Description,
        region: &BBox,
    ) -> Result<(Vec<QueryConcept>, crate::heatmap::Binarize)> {
        let f = match &desc.factors {
            Some(f) => f.clone(),
            // A pooled descriptor has no concepts: only the thesis' joint selection applies.
            None if !self.pipeline.describer().kind().is_nmf() => {
                return Ok((
                    Vec::new(),
                    localizer.resolve(&Heatmap::zeros(acts.grid)?, region),
                ))
            }
            None => self.pipeline.describer().factorize(acts)?,
        };
        let kept: Vec<usize> = if desc.kept.is_empty() {
            (0..f.v.rows()).collect()
        } else {
            desc.kept.clone()
        };
        // A crop's factors lie on the crop: no calibration on the query image then.
        let query_map = if f.u.rows() == acts.grid.len() {
            kept_average(&f.u, acts.grid, &kept)?
        } else {
            Heatmap::zeros(acts.grid)?
        };
        let rule = localizer.resolve(&query_map, region);
        let vectors: Vec<&[f32]> = kept
            .iter()
            .filter(|&&k| k < f.v.rows())
            .map(|&k| f.v.row(k))
            .collect();
        let sample = self.concept_sample(localizer.settings().baseline_sample_size())?;
        let baselines = sample.baselines(&vectors);
        let concepts = kept
            .iter()
            .zip(vectors)
            .zip(baselines)
            .map(|((&factor, v), baseline)| QueryConcept {
                factor,
                vector: v.to_vec(),
                baseline,
            })
            .collect();
        Ok((concepts, rule))
    }

    /// The concepts of up to `n` indexed images, evenly spaced over the index, made once per
    /// size.
    fn concept_sample(&self, n: usize) -> Result<Arc<ConceptSample>> {
        let mut cache = self
            .samples
            .lock()
            .map_err(|_| Error::invalid("the concept sample cache was poisoned by a panic"))?;
        if let Some(s) = cache.get(&n) {
            return Ok(s.clone());
        }
        let ids: Vec<u64> = if n == 0 {
            Vec::new()
        } else {
            let all = self
                .index
                .documents()
                .map(|d| d.map(|d| d.id))
                .collect::<Result<Vec<_>>>()?;
            let step = all.len().div_ceil(n).max(1);
            all.into_iter().step_by(step).collect()
        };
        let mut mats = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(sf) = self.index.factors(id)? {
                mats.push(sf.concepts());
            }
        }
        let s = Arc::new(ConceptSample::new(mats.iter()));
        cache.insert(n, s.clone());
        Ok(s)
    }

    /// A hit's stored factors as localization reads them: the grid over its image, its
    /// concepts (`K × C`) and its heatmaps; `None` when the index stores none for it.
    fn hit_factors(
        &self,
        id: u64,
    ) -> Result<Option<(crate::CellGrid, crate::Matrix, Vec<Heatmap>)>> {
        let Some(sf) = self.index.factors(id)? else {
            return Ok(None);
        };
        let doc = self.index.document(id)?;
        let (w, h) = doc.map_or((0, 0), |d| (d.meta.width, d.meta.height));
        Ok(Some((
            sf.grid(w, h),
            sf.concepts(),
            sf.heatmaps_over(w, h)?,
        )))
    }
}

/// Factor matches as text: `q3→f5 0.82, q1→f2 0.71` (query factor → image factor, cosine).
pub fn describe_matches(matches: &[FactorMatch]) -> String {
    matches
        .iter()
        .map(|m| format!("q{}→f{} {:.2}", m.query_factor, m.image_factor, m.score))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `f`, adding its duration in milliseconds to `slot`.
/// The kept factors of a description as query factors (`None` for the pooled kinds).
fn kept_factors(desc: &Description) -> Option<Vec<QueryFactor>> {
    let f = desc.factors.as_ref()?;
    Some(
        desc.kept
            .iter()
            .map(|&k| QueryFactor {
                factor: k,
                concept: f.v.row(k).to_vec(),
            })
            .collect(),
    )
}

fn timed<T>(slot: &mut f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let out = f();
    *slot += ms(t);
    out
}
