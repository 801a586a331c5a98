//! End-to-end evaluation: every query of a ground truth run through a [`Searcher`], scored
//! with the official protocols, and — with localization — the query's region predicted in
//! every relevant image that has a ground-truth box (the thesis' Table 5.2 protocol).

use super::{BoxMode, Expansion, FactorMode, FactorSource, Localize, Query, Searcher};
use crate::eval::{
    evaluate_localization, evaluate_with, BoxPrediction, Evaluation, GroundTruth,
    LocalizationEvaluation, Protocol, Rankings,
};
use crate::index::{FactorMatch, FactorSearch};
use crate::{BBox, Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How each query is run.
#[derive(Debug, Clone)]
pub struct BenchmarkOptions {
    /// The query box: used as `Some(mode)`, ignored (whole query image) with `None`.
    pub box_mode: Option<BoxMode>,
    /// Query expansion.
    pub expansion: Expansion,
    /// Evaluate localization too.
    pub localize: bool,
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
    /// Hits per query whose scores and factor matches [`BenchmarkRun::top_hits`] keeps.
    pub report_hits: usize,
}

impl Default for BenchmarkOptions {
    fn default() -> Self {
        BenchmarkOptions {
            box_mode: Some(BoxMode::Filter),
            expansion: Expansion::None,
            localize: false,
            images: None,
            protocol: Protocol::Classic,
            localize_batch: 10,
            exact: true,
            factor_mode: FactorMode::Auto,
            factor_search: FactorSearch::default(),
            factor_source: FactorSource::Query,
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
    /// Joint-NMF localization, when asked for.
    pub localization: Option<LocalizationEvaluation>,
    /// Localization from the index's stored factors, when asked for and stored.
    pub localization_stored: Option<LocalizationEvaluation>,
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
    let mut search_ms = 0.0;
    let mut factor_queries = 0usize;
    let mut factor_note = None;
    let mut top_hits = Vec::new();
    let mut joint_preds = Vec::new();
    let mut stored_preds = Vec::new();
    let n_queries = gt.queries().len();
    for (qi, q) in gt.queries().iter().enumerate() {
        let path = image_file(&images, &q.image)?;
        let mut query = Query::new(&path)
            .top_k(total.max(1))
            .exact(options.exact)
            .expansion(options.expansion)
            .factor_mode(options.factor_mode)
            .factor_search(options.factor_search)
            .factor_source(options.factor_source);
        if let (Some(mode), Some(b)) = (options.box_mode, q.bbox) {
            query = query.region(b).box_mode(mode);
        }
        let t = Instant::now();
        let res = searcher.search(&query)?;
        query_ms += t.elapsed().as_secs_f64() * 1000.0;
        search_ms += res.timings.search_ms;
        factor_queries += usize::from(res.query.factor_search.is_some());
        if factor_note.is_none() {
            factor_note.clone_from(&res.query.factor_note);
        }
        top_hits.push(QueryHits {
            query: q.name.clone(),
            query_factors: res.query.query_factors.clone(),
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

        if options.localize && !q.boxes.is_empty() {
            let region = q.bbox.unwrap_or(BBox {
                x1: 0.0,
                y1: 0.0,
                x2: res.query.grid.image_width as f32,
                y2: res.query.grid.image_height as f32,
            });
            let backbone = searcher.pipeline().backbone();
            let query_acts = backbone.extract_path(&path)?;
            let targets: Vec<(String, PathBuf)> = q
                .boxes
                .iter()
                .map(|(i, _)| {
                    let name = gt.images()[*i].clone();
                    image_file(&images, &name).map(|p| (name, p))
                })
                .collect::<Result<_>>()?;
            for chunk in targets.chunks(options.localize_batch.max(1)) {
                let paths: Vec<PathBuf> = chunk.iter().map(|(_, p)| p.clone()).collect();
                let acts: Vec<_> = backbone
                    .extract_paths(&paths)
                    .into_iter()
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&_> = acts.iter().collect();
                let joint = searcher.localizer().joint(&query_acts, &region, &refs)?;
                for ((name, _), loc) in chunk.iter().zip(&joint.targets) {
                    joint_preds.push(BoxPrediction {
                        query: q.name.clone(),
                        image: name.clone(),
                        bbox: loc.bbox,
                    });
                }
            }
            // The fast variant, from the stored factors of the same images.
            let stored = Query::from_activations(query_acts)
                .region(region)
                .box_mode(BoxMode::Filter)
                .top_k(total.max(1))
                .exact(true)
                .localize(Localize::Stored(total.max(1)));
            if searcher.index().documents().next().is_some() {
                let res = searcher.search(&stored)?;
                for (name, _) in &targets {
                    if let Some(h) = res.hits.iter().find(|h| stem(&h.path) == *name) {
                        if let Some(loc) = &h.location {
                            stored_preds.push(BoxPrediction {
                                query: q.name.clone(),
                                image: name.clone(),
                                bbox: loc.bbox,
                            });
                        }
                    }
                }
            }
        }
        progress(qi + 1, n_queries);
    }
    let evaluation = evaluate_with(gt, &rankings, options.protocol, true)?;
    let localization = if options.localize {
        Some(evaluate_localization(gt, &joint_preds)?)
    } else {
        None
    };
    let localization_stored = if options.localize && !stored_preds.is_empty() {
        Some(evaluate_localization(gt, &stored_preds)?)
    } else {
        None
    };
    Ok(BenchmarkRun {
        rankings,
        evaluation,
        localization,
        localization_stored,
        mean_kept: if kept_n > 0 {
            kept_sum as f64 / kept_n as f64
        } else {
            0.0
        },
        fallbacks,
        mean_query_ms: query_ms / n_queries.max(1) as f64,
        mean_search_ms: search_ms / n_queries.max(1) as f64,
        factor_queries,
        factor_note,
        top_hits,
    })
}
