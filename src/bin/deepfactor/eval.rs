//! `deepfactor eval`: score ranked lists against a ground truth.

use anyhow::Context;
use clap::Args;
use deepfactor::eval::{
    evaluate, Evaluation, GroundTruth, GroundTruthKind, Protocol, Provenance, Rankings,
    ResultsRecord, Setup,
};
use std::path::PathBuf;

/// Arguments of `deepfactor eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Ranking file: one line per query, the query name then the ranked database image names,
    /// separated by spaces.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "index",
        conflicts_with = "index"
    )]
    ranking: Option<PathBuf>,
    /// Run every query of the ground truth against this index instead (its images must be
    /// named as the ground truth names them; others count as distractors).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// With --index: use the query box as a filter (default), by cropping, or not at all.
    #[arg(long = "box", value_name = "MODE", default_value = "filter")]
    box_mode: String,
    /// With --index: average query expansion over the first N results.
    #[arg(long, value_name = "N", default_value_t = 0)]
    qe: usize,
    /// With --index: also evaluate localization of the query box in the relevant images that
    /// have ground-truth boxes, by the variants of --localize-with, each timed per image.
    #[arg(long)]
    localize: bool,
    /// With --localize: the variants, comma-separated, among stored, joint and joint-stored
    /// (joint NMF of the stored factors' reconstructions); default joint,stored (with
    /// --compare: all three).
    #[arg(long, value_name = "LIST")]
    localize_with: Option<String>,
    /// With --localize: the before/after set — joint with the thesis' factor selection and
    /// with matched concepts (network and stored reconstructions), stored with the best match
    /// and standardized — each with every binarization (calibrated, top30, otsu), the
    /// whole-view rule off and on; --localize-with keeps only the variants it names.
    #[arg(long)]
    compare: bool,
    #[command(flatten)]
    loc: crate::recipe_args::LocalizeArgs,
    /// Folder of the database images (default: jpg/ beside the ground truth's gt/ folder;
    /// with a bare folder of *_query.txt files and no jpg/ beside it, the images its files
    /// name).
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// With --index: weights file, if not the backbone's default.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// With --index: factor-level search — auto (region queries on an index with factor
    /// vectors), off, or on (every query).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    factors: String,
    /// With --index: weight λ of the factor score in the ranking (0..=1).
    #[arg(long, value_name = "W", default_value_t = deepfactor::index::DEFAULT_FACTOR_WEIGHT)]
    factor_weight: f32,
    /// With --index: how an image's factor matches aggregate: best3 (mean best cosine, clipped
    /// at 0 and cubed; default) or best (mean best cosine).
    #[arg(long, value_name = "AGG", default_value = "best3")]
    factor_agg: String,
    /// With --index: query factors: query (those of the region) or with-crop (plus the
    /// cut-out's factors).
    #[arg(long, value_name = "SOURCE", default_value = "query")]
    factor_source: String,
    /// With --index: crop check of region queries: auto (describe the cut-out too when the
    /// kept factors explain less than --crop-coverage of the region, and lift the images it
    /// recognizes as the same view; default), off, or always.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    crop_check: String,
    /// With --index: factor coverage of the region below which `--crop-check auto` checks
    /// the cut-out.
    #[arg(long, value_name = "C", default_value_t = deepfactor::index::DEFAULT_CROP_COVERAGE)]
    crop_coverage: f32,
    /// With --index: hits per query written with their scores and factor matches under
    /// `top_hits` in the JSON record.
    #[arg(long, value_name = "N", default_value_t = 10)]
    report_hits: usize,
    /// With --index: search with the HNSW graphs (global and factor vectors) instead of
    /// exactly.
    #[arg(long)]
    hnsw: bool,
    /// With --index: write the rankings to this file.
    #[arg(long, value_name = "FILE")]
    save_ranking: Option<PathBuf>,
    /// Ground truth: an Oxford-layout folder (gt/ and jpg/), the folder of *_query.txt files
    /// itself (as Oxford and Paris distribute it), a revisited gnd_*.pkl, or a folder holding
    /// one.
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// classic (Oxford/Paris mAP), revisited (Easy/Medium/Hard mAP and mP@1,5,10) or map@K
    /// (AP truncated at K). Default: revisited for revisited ground truth, classic otherwise.
    #[arg(long, value_name = "PROTOCOL")]
    protocol: Option<Protocol>,
    /// Print the results record as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `deepfactor eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let gt = GroundTruth::load_with_images(&args.gt, args.images.as_deref())
        .with_context(|| format!("loading ground truth {}", args.gt.display()))?;
    let protocol = args.protocol.unwrap_or(match gt.kind() {
        GroundTruthKind::Revisited => Protocol::Revisited,
        GroundTruthKind::Classic => Protocol::Classic,
    });
    if let Some(index) = &args.index {
        return run_index(&args, index, &gt, protocol);
    }
    let ranking = args
        .ranking
        .as_ref()
        .context("--ranking or --index is needed")?;
    let rankings = Rankings::load(ranking)?;
    let evaluation = evaluate(&gt, &rankings, protocol)?;
    if args.json {
        println!(
            "{}",
            ResultsRecord::new(&evaluation, Provenance::default()).to_json()
        );
    } else {
        print!("{}", table(&evaluation));
    }
    Ok(())
}

fn run_index(
    args: &EvalArgs,
    index: &std::path::Path,
    gt: &GroundTruth,
    protocol: Protocol,
) -> anyhow::Result<()> {
    use deepfactor::backbone::WeightSource;
    use deepfactor::eval::BoxHandling;
    use deepfactor::heatmap::Binarize;
    use deepfactor::index::FactorSearch;
    use deepfactor::localize::DEFAULT_TOP_FRACTION;
    use deepfactor::query::{run_benchmark, BenchmarkOptions, LocalizationVariant};
    use deepfactor::query::{
        BoxMode, Expansion, FactorMode, FactorSource, Localize, Searcher, SearcherOptions,
    };
    let (box_mode, handling) = match args.box_mode.as_str() {
        "filter" => (Some(BoxMode::Filter), BoxHandling::Filter),
        "crop" => (Some(BoxMode::Crop), BoxHandling::Crop),
        "none" => (None, BoxHandling::Ignore),
        other => anyhow::bail!("--box {other:?}: expected filter, crop or none"),
    };
    let loc = args.loc.builder()?;
    let named = args
        .localize_with
        .as_deref()
        .unwrap_or(if args.compare {
            "joint,joint-stored,stored"
        } else {
            "joint,stored"
        })
        .split(',')
        .map(|name| Localize::parse(name, 1))
        .collect::<deepfactor::Result<Vec<_>>>()?;
    let variants = match (args.localize, args.compare) {
        (false, _) => Vec::new(),
        (true, true) => LocalizationVariant::comparison(
            loc,
            &[
                Binarize::Calibrated,
                Binarize::TopFraction(DEFAULT_TOP_FRACTION),
                Binarize::Otsu,
            ],
        )
        .into_iter()
        .filter(|v| named.iter().any(|n| n.name() == v.how.name()))
        .collect(),
        (true, false) => named
            .into_iter()
            .map(|how| LocalizationVariant::new(how, loc))
            .collect(),
    };
    let weights = args
        .weights
        .clone()
        .map_or(WeightSource::Default, WeightSource::File);
    let searcher = Searcher::open(
        index,
        SearcherOptions::default().weights(weights).localizer(loc),
    )
    .with_context(|| format!("opening {}", index.display()))?;
    let options = BenchmarkOptions {
        box_mode,
        expansion: if args.qe > 0 {
            Expansion::Average(args.qe)
        } else {
            Expansion::None
        },
        localize: variants,
        images: args.images.clone(),
        protocol,
        exact: !args.hnsw,
        factor_mode: args.factors.parse::<FactorMode>()?,
        factor_search: FactorSearch::new()
            .weight(args.factor_weight)
            .aggregation(args.factor_agg.parse()?),
        factor_source: args.factor_source.parse::<FactorSource>()?,
        crop_check: deepfactor::index::CropCheck::new()
            .mode(args.crop_check.parse()?)
            .coverage(args.crop_coverage),
        report_hits: args.report_hits,
        ..BenchmarkOptions::default()
    };
    options.factor_search.validate()?;
    options.crop_check.validate()?;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(gt.queries().len() as u64)
    };
    let run = run_benchmark(&searcher, gt, &options, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if let Some(p) = &args.save_ranking {
        std::fs::write(p, run.rankings.to_text())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    // The first variant's score stands for localization in the record's provenance.
    let localization_iou = run.localization.first().map(|l| l.evaluation.mean_iou);
    let provenance = Provenance {
        recipe: Some(searcher.index().recipe().clone()),
        box_handling: Some(handling),
        whitening: searcher
            .index()
            .recipe()
            .whitening
            .as_ref()
            .map(|w| w.to_string()),
        query_expansion: Some(args.qe),
        weights_fingerprint: None,
        localization_iou,
    };
    if args.json {
        let record = ResultsRecord::new(&run.evaluation, provenance);
        let mut value = serde_json::to_value(&record)?;
        if let Some(obj) = value.as_object_mut() {
            if !run.localization.is_empty() {
                let rows: Vec<_> = run
                    .localization
                    .iter()
                    .map(|r| {
                        let per_box: Vec<_> = r
                            .evaluation
                            .boxes
                            .iter()
                            .map(|b| serde_json::json!({"query": b.query, "image": b.image, "iou": b.iou}))
                            .collect();
                        serde_json::json!({
                            "variant": r.name,
                            "localize": r.how.name(),
                            "settings": r.settings,
                            "mean_iou": r.evaluation.mean_iou,
                            "corloc": r.evaluation.corloc,
                            "boxes": r.evaluation.boxes.len(),
                            "localized": r.localized,
                            "whole_view": r.whole_view,
                            "ms_per_hit": r.ms_per_hit,
                            "per_box_iou": per_box,
                        })
                    })
                    .collect();
                obj.insert("localization".into(), serde_json::json!(rows));
            }
            obj.insert("mean_kept_factors".into(), serde_json::json!(run.mean_kept));
            obj.insert("region_fallbacks".into(), serde_json::json!(run.fallbacks));
            obj.insert("mean_query_ms".into(), serde_json::json!(run.mean_query_ms));
            obj.insert("mean_crop_ms".into(), serde_json::json!(run.mean_crop_ms));
            obj.insert(
                "mean_search_ms".into(),
                serde_json::json!(run.mean_search_ms),
            );
            obj.insert(
                "search_mode".into(),
                serde_json::json!(if args.hnsw { "hnsw" } else { "exact" }),
            );
            obj.insert(
                "factor_search".into(),
                if run.factor_queries > 0 {
                    serde_json::json!({
                        "mode": options.factor_mode,
                        "source": options.factor_source,
                        "options": options.factor_search,
                        "factor_vectors": "stored factor concepts (rows of V), unit length",
                        "queries": run.factor_queries,
                        "crop_check": options.crop_check,
                        "crop_checks": run.crop_checks,
                    })
                } else {
                    serde_json::Value::Null
                },
            );
            obj.insert("factor_note".into(), serde_json::json!(run.factor_note));
            obj.insert("top_hits".into(), serde_json::to_value(&run.top_hits)?);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", table(&run.evaluation));
        println!(
            "box {}, QE {}, mean factors kept {:.2}, fallbacks {}, {:.0} ms per query ({:.1} ms search, {})",
            args.box_mode,
            args.qe,
            run.mean_kept,
            run.fallbacks,
            run.mean_query_ms,
            run.mean_search_ms,
            if args.hnsw { "hnsw" } else { "exact" }
        );
        if run.factor_queries > 0 {
            println!(
                "factor-level search on {} queries: λ {}, {}, query factors: {}; crop check {} \
                 (coverage < {}) on {} queries, {:.0} ms per query for cut-outs",
                run.factor_queries,
                options.factor_search.get_weight(),
                options.factor_search.get_aggregation(),
                args.factor_source,
                options.crop_check.get_mode(),
                options.crop_check.get_coverage(),
                run.crop_checks,
                run.mean_crop_ms
            );
        }
        if let Some(note) = &run.factor_note {
            println!("note: {note}");
        }
        if !run.localization.is_empty() {
            println!(
                "\n| localization | binarize | IoU | CorLoc | whole view | ms per image |\n|---|---|---|---|---|---|"
            );
            for r in &run.localization {
                println!(
                    "| {} | {} | {:.1} | {:.1} | {}/{} | {:.1} |",
                    r.name,
                    binarize_name(r.settings.binarize),
                    r.evaluation.mean_iou,
                    r.evaluation.corloc,
                    r.whole_view,
                    r.evaluation.boxes.len(),
                    r.ms_per_hit
                );
            }
        }
    }
    Ok(())
}

fn binarize_name(b: deepfactor::heatmap::Binarize) -> String {
    use deepfactor::heatmap::Binarize;
    match b {
        Binarize::Calibrated => "calibrated".into(),
        Binarize::Otsu => "otsu".into(),
        Binarize::TopFraction(f) => format!("top{:.0}", f * 100.0),
        Binarize::RelativeToMax(f) => format!("{:.0}% of max", f * 100.0),
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

fn table(e: &Evaluation) -> String {
    let width = e
        .queries
        .iter()
        .map(|q| q.query.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    match &e.revisited {
        None => {
            let head = match e.protocol {
                Protocol::MapAt(k) => format!("AP@{k}"),
                _ => "AP".to_string(),
            };
            s.push_str(&format!("{:<width$}  {head:>7}\n", "query"));
            for q in &e.queries {
                s.push_str(&format!("{:<width$}  {:>7}\n", q.query, pct(q.ap)));
            }
            let name = match e.protocol {
                Protocol::MapAt(k) => format!("mAP@{k}"),
                _ => "mAP".to_string(),
            };
            s.push_str(&format!("{:<width$}  {:>7.2}\n", name, e.map));
            s.push_str(&format!(
                "{} protocol on {}: {} of {} queries have relevant images\n",
                e.protocol,
                e.dataset,
                e.evaluated,
                e.queries.len()
            ));
        }
        Some(r) => {
            s.push_str(&format!(
                "{:<width$}  {:>7}  {:>7}  {:>7}\n",
                "query", "E", "M", "H"
            ));
            for (i, q) in e.queries.iter().enumerate() {
                s.push_str(&format!("{:<width$}", q.query));
                for setup in Setup::ALL {
                    s.push_str(&format!("  {:>7}", pct(r.setup(setup).queries[i].ap)));
                }
                s.push('\n');
            }
            s.push_str(&format!("{:<width$}", "mAP"));
            for setup in Setup::ALL {
                s.push_str(&format!("  {:>7}", pct(r.setup(setup).map)));
            }
            s.push('\n');
            for (j, &(k, _)) in r.medium.mp_at_k.iter().enumerate() {
                s.push_str(&format!("{:<width$}", format!("mP@{k}")));
                for setup in Setup::ALL {
                    s.push_str(&format!("  {:>7}", pct(r.setup(setup).mp_at_k[j].1)));
                }
                s.push('\n');
            }
            s.push_str(&format!(
                "revisited protocol on {} ({} queries); '-': no positives in that setup\n",
                e.dataset,
                e.queries.len()
            ));
        }
    }
    s
}
