//! `deepfactor search`: query an index with an image or a region of it; print the hits, and
//! optionally localize the region in them and write a visual report.

use crate::recipe_args::{device, LocalizeArgs};
use anyhow::Context;
use clap::Args;
use deepfactor::backbone::WeightSource;
use deepfactor::index::{CropCheck, CropCheckMode, FactorAggregation, FactorSearch};
use deepfactor::query::{
    describe_matches, BoxMode, Expansion, FactorMode, FactorSource, Localize, Query, Searcher,
    SearcherOptions,
};
use deepfactor::report::SearchReport;
use deepfactor::BBox;
use std::path::PathBuf;

/// Arguments of `deepfactor search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The index directory.
    index: PathBuf,
    /// The query image.
    image: PathBuf,
    /// Region of the query image, `x1,y1,x2,y2` in its pixels.
    #[arg(long = "box", value_name = "X1,Y1,X2,Y2")]
    region: Option<String>,
    /// How the region is used: filter (keep factors inside it; default) or crop.
    #[arg(long, default_value = "filter")]
    box_mode: BoxMode,
    /// Number of hits.
    #[arg(short = 'k', long, default_value_t = deepfactor::query::DEFAULT_TOP_K)]
    top: usize,
    /// Average query expansion over the first N hits (0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    qe: usize,
    /// Use α-query expansion with this exponent instead of the plain average.
    #[arg(long, value_name = "ALPHA")]
    alpha_qe: Option<f32>,
    /// Localize the query's region in the hits: stored (from the index's stored factors, no
    /// network on the hits; default when a report is written and the index stores factors),
    /// joint (joint NMF; re-runs the network on them), joint-stored (joint NMF of the hits'
    /// stored factors' reconstructions), or none.
    #[arg(long)]
    localize: Option<String>,
    /// How many hits to localize.
    #[arg(long, default_value_t = 10, value_name = "N")]
    localize_top: usize,
    #[command(flatten)]
    loc: LocalizeArgs,
    /// Drop hits scoring below this.
    #[arg(long)]
    min_score: Option<f32>,
    /// Beam width of the graph search.
    #[arg(long)]
    ef_search: Option<usize>,
    /// Search exhaustively instead of with the graph.
    #[arg(long)]
    exact: bool,
    /// Factor-level search: auto (region queries on an index with factor vectors; default),
    /// off, or on (every query).
    #[arg(long, default_value = "auto", value_name = "MODE")]
    factors: FactorMode,
    /// Weight λ of the factor score in the ranking (0..=1).
    #[arg(long, value_name = "W", default_value_t = deepfactor::index::DEFAULT_FACTOR_WEIGHT)]
    factor_weight: f32,
    /// How an image's factor matches aggregate: best3 (mean best cosine, clipped at 0 and
    /// cubed; default) or best (mean best cosine).
    #[arg(long, value_name = "AGG", default_value = "best3")]
    factor_agg: FactorAggregation,
    /// Query factors: query (those of the region) or with-crop (plus the cut-out's factors).
    #[arg(long, value_name = "SOURCE", default_value = "query")]
    factor_source: FactorSource,
    /// Crop check of a region query: auto (describe the cut-out too when the kept factors
    /// explain less than --crop-coverage of the region, and lift the images it recognizes
    /// as the same view; default), off, or always.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    crop_check: CropCheckMode,
    /// Factor coverage of the region below which `--crop-check auto` checks the cut-out.
    #[arg(long, value_name = "C", default_value_t = deepfactor::index::DEFAULT_CROP_COVERAGE)]
    crop_coverage: f32,
    /// Weights file, if not the backbone's default (it must be the one the index was built
    /// with).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write an HTML report (self-contained, works offline).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write a PNG result sheet.
    #[arg(long, value_name = "FILE")]
    sheet: Option<PathBuf>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `deepfactor search`.
pub fn run(a: SearchArgs) -> anyhow::Result<()> {
    let weights = a
        .weights
        .clone()
        .map_or(WeightSource::Default, WeightSource::File);
    let loc = a.loc.builder()?;
    let options = SearcherOptions::default()
        .weights(weights)
        .device(device(&a.device)?)
        .localizer(loc);
    let searcher = Searcher::open(&a.index, options)
        .with_context(|| format!("opening {}", a.index.display()))?;
    let mut q = Query::new(&a.image)
        .box_mode(a.box_mode)
        .top_k(a.top)
        .factor_mode(a.factors)
        .factor_search(
            FactorSearch::new()
                .weight(a.factor_weight)
                .aggregation(a.factor_agg),
        )
        .factor_source(a.factor_source)
        .crop_check(
            CropCheck::new()
                .mode(a.crop_check)
                .coverage(a.crop_coverage),
        );
    if let Some(r) = &a.region {
        q = q.region(BBox::parse(r)?);
    }
    if a.qe > 0 {
        q = q.expansion(match a.alpha_qe {
            Some(alpha) => Expansion::Alpha { n: a.qe, alpha },
            None => Expansion::Average(a.qe),
        });
    } else if let Some(alpha) = a.alpha_qe {
        q = q.expansion(Expansion::Alpha {
            n: deepfactor::query::DEFAULT_EXPANSION_DEPTH,
            alpha,
        });
    }
    let wants_pictures = a.report.is_some() || a.sheet.is_some();
    let localize = match a.localize.as_deref() {
        Some(name) => Localize::parse(name, a.localize_top)?,
        None if wants_pictures => {
            let stores_factors = match searcher.index().documents().next() {
                Some(d) => searcher.index().factors(d?.id)?.is_some(),
                None => false,
            };
            if stores_factors {
                Localize::Stored(a.localize_top)
            } else {
                Localize::Joint(a.localize_top)
            }
        }
        None => Localize::None,
    };
    q = q.localize(localize);
    if let Some(s) = a.min_score {
        q = q.min_score(s);
    }
    if let Some(ef) = a.ef_search {
        q = q.ef_search(ef);
    }
    if a.exact {
        q = q.exact(true);
    }
    let results = searcher.search(&q)?;

    if wants_pictures {
        let settings = vec![
            ("index".to_string(), a.index.display().to_string()),
            ("expansion".to_string(), format!("{:?}", q.get_expansion())),
            (
                "localization".to_string(),
                match &results.query.localization {
                    Some((how, s)) => format!(
                        "{} on {} hits: binarize {:?}, matching {}, selection {}, whole view {}",
                        how.name(),
                        how.hits(),
                        s.binarize,
                        s.matching,
                        s.selection,
                        s.whole_view
                            .map_or_else(|| "off".to_string(), |t| format!("at fill ≥ {t}"))
                    ),
                    None => "none".to_string(),
                },
            ),
        ];
        let report =
            SearchReport::from_results(&results, &a.image, searcher.index().recipe(), settings);
        if let Some(p) = &a.report {
            report.write_html(p)?;
            eprintln!("report: {}", p.display());
        }
        if let Some(p) = &a.sheet {
            report.write_sheet(p)?;
            eprintln!("sheet: {}", p.display());
        }
    }

    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    if results.query.fallback {
        eprintln!(
            "note: no factor of the query lies mostly inside the box; the closest one was used"
        );
    }
    if let Some(note) = &results.query.factor_note {
        eprintln!("note: {note}");
    }
    if let Some(c) = results.query.region_coverage {
        eprintln!(
            "region factor coverage {c:.2}: {}",
            match results.query.crop_check {
                Some(check) => format!(
                    "cut-out checked (images beyond {} sd of its score lifted; crop score after the matches)",
                    check.get_outlier()
                ),
                None => "cut-out not checked".to_string(),
            }
        );
    }
    let regional = results.query.factor_search.is_some();
    println!(
        "rank  score   box (x1,y1,x2,y2)       strength  fill   path{}",
        if regional {
            "  [global, factor score; factor matches query→image cosine]"
        } else {
            ""
        }
    );
    for h in &results.hits {
        let b = h.location.as_ref().and_then(|l| l.bbox).map_or_else(
            || "-".to_string(),
            |b| format!("{:.0},{:.0},{:.0},{:.0}", b.x1, b.y1, b.x2, b.y2),
        );
        let strength = h
            .location
            .as_ref()
            .and_then(|l| l.strength)
            .map_or_else(|| "-".to_string(), |s| format!("{s:.2}"));
        let fill = h.location.as_ref().map_or_else(
            || "-".to_string(),
            |l| match l.fill {
                Some(f) if l.whole_view => format!("{f:.2}*"),
                Some(f) => format!("{f:.2}"),
                None => "-".to_string(),
            },
        );
        let factor = match (h.global_score, h.factor_score) {
            (Some(g), Some(f)) => format!(
                "  [{g:.4}, {f:.4}; {}{}]",
                describe_matches(&h.factor_matches),
                h.crop_score
                    .map_or_else(String::new, |c| format!("; crop z {c:.1}"))
            ),
            _ => String::new(),
        };
        println!(
            "{:>4}  {:.4}  {:<22}  {:>8}  {:<5}  {}{factor}",
            h.rank,
            h.score,
            b,
            strength,
            fill,
            h.path.display()
        );
    }
    if results
        .hits
        .iter()
        .any(|h| h.location.as_ref().is_some_and(|l| l.whole_view))
    {
        eprintln!("*: the region fills the view; the box is the whole image");
    }
    let t = &results.timings;
    eprintln!(
        "{} hits in {:.0} ms (features {:.0}, describe {:.0}, cut-out {:.0}, search {:.0}, localize {:.0})",
        results.hits.len(),
        t.total_ms,
        t.features_ms,
        t.describe_ms,
        t.crop_ms,
        t.search_ms,
        t.localize_ms
    );
    Ok(())
}
