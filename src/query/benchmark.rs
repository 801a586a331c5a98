//! End-to-end evaluation: every query of a ground truth run through a [`Searcher`], scored
//! with the official protocols, and — with localization — the query's region predicted in
//! every relevant image that has a ground-truth box (the thesis' Table 5.2 protocol), by each
//! of a list of [`LocalizationVariant`]s, each timed per image localized. The hits'
//! activations are extracted once per query and shared by the joint variants (each joint
//! variant's time includes that network pass); the whole-view rule is scored both off and on
//! from one run of each variant.

use super::{BoxMode, Expansion, FactorMode, FactorSource, Localize, Query, SearchHit, Searcher};
use crate::eval::{
    evaluate_localization, evaluate_with, BoxPrediction, Evaluation, GroundTruth,
    LocalizationEvaluation, Protocol, Rankings,
};
use crate::heatmap::Binarize;
use crate::index::CropCheck;
use crate::index::{FactorMatch, FactorSearch};
use crate::localize::{
    JointSelection, LocalizationSettings, Localizer, LocalizerBuilder, Matching,
};
use crate::{BBox, Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One way of localizing, evaluated by a benchmark run.
#[derive(Debug, Clone)]
pub struct LocalizationVariant {
    /// Its name in the tables.
    pub name: String,
    /// The variant (its hit count is ignored: every relevant image with a box is localized).
    pub how: Localize,
    /// Its settings. A whole-view threshold adds a second row with the rule on; the first
    /// row has it off.
    pub localizer: LocalizerBuilder,
}

impl LocalizationVariant {
    /// A variant named after `how` and the settings that matter for it.
    pub fn new(how: Localize, localizer: LocalizerBuilder) -> Self {
        let detail = match how {
            Localize::Stored(_) => localizer.matching_rule().to_string(),
            Localize::Joint(_) | Localize::JointStored(_) => localizer.selection_rule().to_string(),
            Localize::None => String::new(),
        };
        LocalizationVariant {
            name: format!("{} ({detail})", how.name()),
            how,
            localizer,
        }
    }

    /// The before/after set of issue 12, with each of `rules`: joint with the thesis'
    /// selection (mass in the box), joint with matched concepts on the network's and on the
    /// stored factors' activations, stored with the best match (the first stored variant),
    /// and stored with standardized matching.
    pub fn comparison(base: LocalizerBuilder, rules: &[Binarize]) -> Vec<Self> {
        let mut out = Vec::new();
        for &rule in rules {
            let b = base.binarize(rule);
            for (how, b) in [
                (
                    Localize::Joint(1),
                    b.selection(JointSelection::Mass).whole_view(None),
                ),
                (Localize::Joint(1), b.selection(JointSelection::Matched)),
                (
                    Localize::JointStored(1),
                    b.selection(JointSelection::Matched),
                ),
                (
                    Localize::Stored(1),
                    b.matching(Matching::Best).whole_view(None),
                ),
                (Localize::Stored(1), b.matching(Matching::Standardized)),
            ] {
                out.push(LocalizationVariant::new(how, b));
            }
        }
        out
    }
}

/// The score of one localization variant.
#[derive(Debug, Clone)]
pub struct LocalizationRow {
    /// The variant's name (with "+ whole view" for the row with the rule on).
    pub name: String,
    /// The variant.
    pub how: Localize,
    /// Its settings (the whole-view threshold `None` on the row without the rule).
    pub settings: LocalizationSettings,
    /// The scores.
    pub evaluation: LocalizationEvaluation,
    /// Images localized (with a prediction).
    pub localized: usize,
    /// Images the whole-view rule turned into the whole image.
    pub whole_view: usize,
    /// Mean time per image localized, milliseconds (joint: the hits' network pass included).
    pub ms_per_hit: f64,
}

/// How each query is run.
#[derive(Debug, Clone)]
pub struct BenchmarkOptions {
    /// The query box: used as `Some(mode)`, ignored (whole query image) with `None`.
    pub box_mode: Option<BoxMode>,
    /// Query expansion.
    pub expansion: Expansion,
    /// Localization variants to evaluate (none: no localization).
    pub localize: Vec<LocalizationVariant>,
    /// Folder of the images (default: the ground truth's [`GroundTruth::images_dir`], else
    /// `jpg/` beside the ground truth).
    pub images: Option<PathBuf>,
    /// Scoring protocol.
    pub protocol: Protocol,
    /// Joint localization factorizes the query with at most this many images at a time.
    pub localize_batch: usize,
    /// Exact search (default), else the index's graphs.
    pub exact: bool,
    /// Factor-level search: whether it runs, its settings, its query factors.
    pub factor_mode: FactorMode,
    /// See [`BenchmarkOptions::factor_mode`].
    pub factor_search: FactorSearch,
    /// See [`BenchmarkOptions::factor_mode`].
    pub factor_source: FactorSource,
    /// The crop check of region queries ([`Query::crop_check`]).
    pub crop_check: CropCheck,
    /// Hits per query whose scores and factor matches [`BenchmarkRun::top_hits`] keeps.
    pub report_hits: usize,
}

impl Default for BenchmarkOptions {
    fn default() -> Self {
        BenchmarkOptions {
            box_mode: Some(BoxMode::Filter),
            expansion: Expansion::None,
            localize: Vec::new(),
            images: None,
            protocol: Protocol::Classic,
            localize_batch: 10,
            exact: true,
            factor_mode: FactorMode::Auto,
            factor_search: FactorSearch::default(),
            factor_source: FactorSource::Query,
            crop_check: CropCheck::default(),
            report_hits: 10,
        }
    }
}

/// What a benchmark run produced.
#[derive(Debug, Clone)]
pub struct BenchmarkRun {
    /// The ranked lists, one per query.
    pub rankings: Rankings,
    /// Retrieval scores.
    pub evaluation: Evaluation,
    /// One row per localization variant asked for (two for one with a whole-view rule: off,
    /// then on), in order.
    pub localization: Vec<LocalizationRow>,
    /// Mean number of query factors kept (NMF descriptors, filter mode).
    pub mean_kept: f64,
    /// Queries whose region rule fell back.
    pub fallbacks: usize,
    /// Mean time per query (everything: network, description, search), milliseconds.
    pub mean_query_ms: f64,
    /// Mean time of the index search per query (global and factor-level), milliseconds.
    pub mean_search_ms: f64,
    /// Queries that ran factor-level search.
    pub factor_queries: usize,
    /// Queries that checked their cut-out ([`Query::crop_check`]).
    pub crop_checks: usize,
    /// Mean time per query of the cut-out's network run and description (crop check and
    /// with-crop factors), milliseconds.
    pub mean_crop_ms: f64,
    /// Why factor-level search did not run, when it did not (the first query's note).
    pub factor_note: Option<String>,
    /// The first [`BenchmarkOptions::report_hits`] hits of every query with their scores and
    /// factor matches.
    pub top_hits: Vec<QueryHits>,
}

/// The first hits of one query, as [`BenchmarkRun::top_hits`] keeps them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryHits {
    /// The query's name.
    pub query: String,
    /// The query factors matched (numbers in the query's factorization).
    pub query_factors: Vec<usize>,
    /// The region's factor coverage (filter mode).
    pub region_coverage: Option<f32>,
    /// Whether the cut-out was checked.
    pub crop_check: bool,
    /// Its first hits, best first.
    pub hits: Vec<HitRecord>,
}

/// One hit with its scores and factor matches.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HitRecord {
    /// The image's name (file stem).
    pub image: String,
    /// The ranking score.
    pub score: f32,
    /// The global descriptor cosine (factor-level search only).
    pub global_score: Option<f32>,
    /// The factor score (factor-level search only).
    pub factor_score: Option<f32>,
    /// Each query factor's best match in the image.
    pub factor_matches: Vec<FactorMatch>,
    /// The cut-out's standardized score (crop check only).
    pub crop_score: Option<f32>,
}

/// Finds `<images>/<name>.<ext>` for the [`crate::images::IMAGE_EXTENSIONS`], in lower or
/// upper case.
pub fn image_file(images: &Path, name: &str) -> Result<PathBuf> {
    let exts = crate::images::IMAGE_EXTENSIONS;
    for ext in exts
        .iter()
        .map(|e| e.to_string())
        .chain(exts.iter().map(|e| e.to_ascii_uppercase()))
    {
        let p = images.join(format!("{name}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::io(
        images.join(format!("{name}.jpg")),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "image of the ground truth not found",
        ),
    ))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// Runs every query of `gt` against `searcher`'s index; `progress(done, total)` after each.
pub fn run_benchmark(
    searcher: &Searcher,
    gt: &GroundTruth,
    options: &BenchmarkOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchmarkRun> {
    let images = match options.images.as_deref().or(gt.images_dir()) {
        Some(d) => d.to_path_buf(),
        None => {
            let src = gt.source();
            let base = if src.is_dir() {
                src.to_path_buf()
            } else {
                src.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            base.join("jpg")
        }
    };
    let total = searcher.index().len();
    let mut rankings = Rankings::new();
    let (mut kept_sum, mut kept_n, mut fallbacks) = (0usize, 0usize, 0usize);
    let mut query_ms = 0.0;
    let localizers = options
        .localize
        .iter()
        .map(|v| v.localizer.whole_view(None).build())
        .collect::<Result<Vec<Localizer>>>()?;
    let mut acc: Vec<VariantRun> = options
        .localize
        .iter()
        .map(|_| VariantRun::default())
        .collect();
    // The indexed images by file stem, for the stored variants.
    let mut by_name: HashMap<String, (u64, PathBuf)> = HashMap::new();
    if !options.localize.is_empty() {
        for d in searcher.index().documents() {
            let d = d?;
            by_name.insert(stem(&d.meta.path), (d.id, d.meta.path));
        }
    }
    let mut search_ms = 0.0;
    let mut factor_queries = 0usize;
    let (mut crop_checks, mut crop_ms) = (0usize, 0.0);
    let mut factor_note = None;
    let mut top_hits = Vec::new();
    let n_queries = gt.queries().len();
    for (qi, q) in gt.queries().iter().enumerate() {
        let path = image_file(&images, &q.image)?;
        let mut query = Query::new(&path)
            .top_k(total.max(1))
            .exact(options.exact)
            .expansion(options.expansion)
            .factor_mode(options.factor_mode)
            .factor_search(options.factor_search)
            .factor_source(options.factor_source)
            .crop_check(options.crop_check);
        if let (Some(mode), Some(b)) = (options.box_mode, q.bbox) {
            query = query.region(b).box_mode(mode);
        }
        let t = Instant::now();
        let res = searcher.search(&query)?;
        query_ms += t.elapsed().as_secs_f64() * 1000.0;
        search_ms += res.timings.search_ms;
        factor_queries += usize::from(res.query.factor_search.is_some());
        crop_checks += usize::from(res.query.crop_check.is_some());
        crop_ms += res.timings.crop_ms;
        if factor_note.is_none() {
            factor_note.clone_from(&res.query.factor_note);
        }
        top_hits.push(QueryHits {
            query: q.name.clone(),
            query_factors: res.query.query_factors.clone(),
            region_coverage: res.query.region_coverage,
            crop_check: res.query.crop_check.is_some(),
            hits: res
                .hits
                .iter()
                .take(options.report_hits)
                .map(|h| HitRecord {
                    image: stem(&h.path),
                    score: h.score,
                    global_score: h.global_score,
                    factor_score: h.factor_score,
                    factor_matches: h.factor_matches.clone(),
                    crop_score: h.crop_score,
                })
                .collect(),
        });
        if !res.query.kept.is_empty() {
            kept_sum += res.query.kept.len();
            kept_n += 1;
        }
        fallbacks += usize::from(res.query.fallback);
        rankings.insert(
            q.name.clone(),
            res.hits.iter().map(|h| stem(&h.path)).collect(),
        )?;
        if !options.localize.is_empty() && !q.boxes.is_empty() {
            localize_query(
                searcher,
                options,
                &localizers,
                &mut acc,
                &images,
                &by_name,
                gt,
                q,
                &path,
                res.query.grid,
            )?;
        }
        progress(qi + 1, n_queries);
    }
    let evaluation = evaluate_with(gt, &rankings, options.protocol, true)?;
    let mut localization = Vec::new();
    for (v, run) in options.localize.iter().zip(&acc) {
        let threshold = v.localizer.whole_view_rule();
        let hits = run.preds.iter().filter(|p| p.0.bbox.is_some()).count();
        let ms_per_hit = run.ms / run.preds.len().max(1) as f64;
        let off: Vec<BoxPrediction> = run.preds.iter().map(|p| p.0.clone()).collect();
        localization.push(LocalizationRow {
            name: v.name.clone(),
            how: v.how,
            settings: v.localizer.whole_view(None).summary(),
            evaluation: evaluate_localization(gt, &off)?,
            localized: hits,
            whole_view: 0,
            ms_per_hit,
        });
        if let Some(t) = threshold {
            let mut whole = 0;
            let on: Vec<BoxPrediction> = run
                .preds
                .iter()
                .map(|(p, fill, full)| {
                    let mut p = p.clone();
                    if fill.is_some_and(|f| f >= t) {
                        p.bbox = Some(*full);
                        whole += 1;
                    }
                    p
                })
                .collect();
            localization.push(LocalizationRow {
                name: format!("{} + whole view ≥ {t}", v.name),
                how: v.how,
                settings: v.localizer.summary(),
                evaluation: evaluate_localization(gt, &on)?,
                localized: hits,
                whole_view: whole,
                ms_per_hit,
            });
        }
    }
    Ok(BenchmarkRun {
        rankings,
        evaluation,
        localization,
        mean_kept: if kept_n > 0 {
            kept_sum as f64 / kept_n as f64
        } else {
            0.0
        },
        fallbacks,
        mean_query_ms: query_ms / n_queries.max(1) as f64,
        mean_search_ms: search_ms / n_queries.max(1) as f64,
        factor_queries,
        crop_checks,
        mean_crop_ms: crop_ms / n_queries.max(1) as f64,
        factor_note,
        top_hits,
    })
}

/// What one localization variant predicted so far: per image, the box (whole-view rule off),
/// the region fill, and the whole image's box; and the time spent.
#[derive(Debug, Default)]
struct VariantRun {
    preds: Vec<(BoxPrediction, Option<f32>, BBox)>,
    ms: f64,
}

/// Localizes query `q`'s region in its relevant images with boxes, by every variant.
#[allow(clippy::too_many_arguments)]
fn localize_query(
    searcher: &Searcher,
    options: &BenchmarkOptions,
    localizers: &[Localizer],
    acc: &mut [VariantRun],
    images: &Path,
    by_name: &HashMap<String, (u64, PathBuf)>,
    gt: &GroundTruth,
    q: &crate::eval::GroundTruthQuery,
    path: &Path,
    grid: crate::CellGrid,
) -> Result<()> {
    let region = q.bbox.unwrap_or(BBox {
        x1: 0.0,
        y1: 0.0,
        x2: grid.image_width as f32,
        y2: grid.image_height as f32,
    });
    let backbone = searcher.pipeline().backbone();
    let acts = backbone.extract_path(path)?;
    let desc = searcher
        .pipeline()
        .describer()
        .describe_region(&acts, &region)?;
    let mut targets: Vec<(String, SearchHit)> = Vec::with_capacity(q.boxes.len());
    for (i, _) in &q.boxes {
        let name = gt.images()[*i].clone();
        let (id, path) = match by_name.get(&name) {
            Some((id, p)) => (*id, p.clone()),
            None => (u64::MAX, image_file(images, &name)?),
        };
        targets.push((
            name,
            SearchHit {
                rank: 0,
                id,
                path,
                score: 0.0,
                global_score: None,
                factor_score: None,
                factor_matches: Vec::new(),
                crop_score: None,
                location: None,
            },
        ));
    }
    let needs_network = options
        .localize
        .iter()
        .any(|v| matches!(v.how, Localize::Joint(_)));
    for chunk in targets.chunks(options.localize_batch.max(1)) {
        let (net, net_ms) = if needs_network {
            let t = Instant::now();
            let paths: Vec<PathBuf> = chunk.iter().map(|(_, h)| h.path.clone()).collect();
            let a: Vec<_> = backbone
                .extract_paths(&paths)
                .into_iter()
                .map(Result::ok)
                .collect();
            (a, t.elapsed().as_secs_f64() * 1000.0)
        } else {
            (Vec::new(), 0.0)
        };
        for ((v, loc), run) in options.localize.iter().zip(localizers).zip(acc.iter_mut()) {
            let mut hits: Vec<SearchHit> = chunk.iter().map(|(_, h)| h.clone()).collect();
            let is_joint = matches!(v.how, Localize::Joint(_));
            let t = Instant::now();
            searcher.localize_hits(
                loc,
                v.how,
                &acts,
                &desc,
                &region,
                &mut hits,
                is_joint.then_some(&net[..]),
            )?;
            run.ms += t.elapsed().as_secs_f64() * 1000.0 + if is_joint { net_ms } else { 0.0 };
            for ((name, _), h) in chunk.iter().zip(hits) {
                let (bbox, fill, full) = match &h.location {
                    Some(l) => {
                        let g = l.heatmap.grid();
                        let full = BBox {
                            x1: 0.0,
                            y1: 0.0,
                            x2: g.image_width as f32,
                            y2: g.image_height as f32,
                        };
                        (l.bbox, l.fill, full)
                    }
                    None => (
                        None,
                        None,
                        BBox {
                            x1: 0.0,
                            y1: 0.0,
                            x2: 0.0,
                            y2: 0.0,
                        },
                    ),
                };
                run.preds.push((
                    BoxPrediction {
                        query: q.name.clone(),
                        image: name.clone(),
                        bbox,
                    },
                    fill,
                    full,
                ));
            }
        }
    }
    Ok(())
}
