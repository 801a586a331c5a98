//! The results record: the numbers of an evaluation and everything needed to reproduce them.
//!
//! Serialised as one JSON object. Its top level always has `"map"` (percent) and
//! `"per_query"` (query name → AP in percent, `null` for a query without positives), then
//! the protocol and provenance fields below. Provenance that does not apply or is unknown is
//! written as `null`, never left out, so that a record says explicitly what it does not know.

use super::evaluate::{Evaluation, Protocol, SetupScores};
use super::segmentation::{ImageScore, SetScores};
use crate::Recipe;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a query's region of interest was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxHandling {
    /// The query image was cut to its box before description (the usual protocol).
    Crop,
    /// The whole query image was described and factors were kept by their mass in the box.
    Filter,
    /// The box was ignored (full query image).
    Ignore,
}

/// How the rankings were produced: what a [`ResultsRecord`] cannot infer from the
/// evaluation itself. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// The descriptor recipe (backbone, weights fingerprint, layer, descriptor, …).
    pub recipe: Option<Recipe>,
    /// Crop or filter handling of the query box.
    pub box_handling: Option<BoxHandling>,
    /// Where the whitening was learned (a dataset name or file), if any.
    pub whitening: Option<String>,
    /// Query-expansion depth (0 for none).
    pub query_expansion: Option<usize>,
    /// Backbone weights fingerprint; taken from the recipe when not given.
    pub weights_fingerprint: Option<String>,
    /// Mean localization IoU in percent, where localization was evaluated.
    pub localization_iou: Option<f64>,
}

/// mP@k of one setup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecisionAtK {
    /// The rank cut-off.
    pub k: usize,
    /// Mean precision at k, percent; `null` when no query has a positive.
    pub mp: Option<f64>,
}

/// The numbers of one revisited setup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupRecord {
    /// mAP in percent; `null` when no query has a positive in this setup.
    pub map: Option<f64>,
    /// mP@k for k = 1, 5, 10.
    pub mp_at_k: Vec<PrecisionAtK>,
    /// Query name → AP in percent (`null` without positives).
    pub per_query: BTreeMap<String, Option<f64>>,
}

/// Easy / Medium / Hard numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisitedRecord {
    /// Easy setup.
    pub easy: SetupRecord,
    /// Medium setup.
    pub medium: SetupRecord,
    /// Hard setup.
    pub hard: SetupRecord,
}

/// A complete, reproducible record of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsRecord {
    /// Headline mean in percent (mAP; mAP@k; Medium mAP for the revisited protocol).
    pub map: f64,
    /// Query name → AP in percent (AP@k for `map@k`), `null` for a query without positives.
    pub per_query: BTreeMap<String, Option<f64>>,
    /// The protocol: `classic`, `revisited` or `map@K`.
    pub protocol: Protocol,
    /// The dataset (ground truth) name.
    pub dataset: String,
    /// The queries evaluated, in ground-truth order.
    pub queries: Vec<String>,
    /// How many of them have positives and so enter the mean.
    pub evaluated_queries: usize,
    /// Easy / Medium / Hard numbers, for the revisited protocol.
    pub revisited: Option<RevisitedRecord>,
    /// Mean localization IoU in percent, where localization was evaluated.
    pub localization_iou: Option<f64>,
    /// The descriptor recipe.
    pub recipe: Option<Recipe>,
    /// How the query box was used.
    pub box_handling: Option<BoxHandling>,
    /// Where the whitening was learned.
    pub whitening: Option<String>,
    /// Query-expansion depth (0 for none).
    pub query_expansion: Option<usize>,
    /// Backbone weights fingerprint.
    pub weights_fingerprint: Option<String>,
    /// Software that produced the record (`deepfactor`).
    pub software: String,
    /// Its version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// When the record was made: UTC, RFC 3339 (`2024-05-01T12:34:56Z`).
    pub date: String,
}

impl ResultsRecord {
    /// A record of `evaluation` with `provenance`, stamped with this crate's version and the
    /// current time.
    pub fn new(evaluation: &Evaluation, provenance: Provenance) -> Self {
        let weights_fingerprint = provenance.weights_fingerprint.or_else(|| {
            provenance
                .recipe
                .as_ref()
                .map(|r| r.weights_fingerprint.clone())
        });
        ResultsRecord {
            map: evaluation.map,
            per_query: evaluation
                .queries
                .iter()
                .map(|q| (q.query.clone(), q.ap))
                .collect(),
            protocol: evaluation.protocol,
            dataset: evaluation.dataset.clone(),
            queries: evaluation.queries.iter().map(|q| q.query.clone()).collect(),
            evaluated_queries: evaluation.evaluated,
            revisited: evaluation.revisited.as_ref().map(|r| RevisitedRecord {
                easy: setup_record(&r.easy),
                medium: setup_record(&r.medium),
                hard: setup_record(&r.hard),
            }),
            localization_iou: provenance.localization_iou,
            recipe: provenance.recipe,
            box_handling: provenance.box_handling,
            whitening: provenance.whitening,
            query_expansion: provenance.query_expansion,
            weights_fingerprint,
            software: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            date: rfc3339_utc(SystemTime::now()),
        }
    }

    /// The record as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers, options, vectors and string-keyed maps always
        // serialises; non-finite floats become null.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

fn setup_record(s: &SetupScores) -> SetupRecord {
    SetupRecord {
        map: s.map,
        mp_at_k: s
            .mp_at_k
            .iter()
            .map(|&(k, mp)| PrecisionAtK { k, mp })
            .collect(),
        per_query: s.queries.iter().map(|q| (q.query.clone(), q.ap)).collect(),
    }
}

/// How a co-segmentation was made: what a [`CosegRecord`] cannot infer from its scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CosegProvenance {
    /// The backbone (`efficientnet-lite0`, …).
    pub backbone: String,
    /// The layer factorized.
    pub layer: String,
    /// Shorter side of the network input, pixels.
    pub input_size: u32,
    /// Backbone weights fingerprint.
    pub weights_fingerprint: String,
    /// `single`, `border`, `auto` or `one-shot`.
    pub method: String,
    /// Rank of the factorization the masks come from.
    pub k: usize,
    /// `set` or `image`.
    pub normalise: String,
    /// `otsu` or the fixed fraction.
    pub threshold: String,
    /// `colour` or `none`.
    pub refine: String,
}

/// One image of a [`CosegRecord`]. Scores in percent (CorLoc 100 or 0), `null` where the
/// ground truth does not give them or the image is not scored (the one-shot annotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CosegImageRecord {
    /// The image's name (file stem).
    pub name: String,
    /// Mask IoU.
    pub jaccard: Option<f64>,
    /// The same for one image (the set's pooled figure sums its parts).
    pub jaccard_pooled: Option<f64>,
    /// Pixel accuracy.
    pub precision: Option<f64>,
    /// 100 when the box localizes the object, else 0.
    pub corloc: Option<f64>,
    /// IoU of the box with the true box, percent.
    pub box_iou: Option<f64>,
    /// The predicted box `[x1, y1, x2, y2]` in pixels; `null` for an empty mask.
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// Whether the image is the one-shot annotation (left out of the set's scores).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub annotated: bool,
}

impl CosegImageRecord {
    /// The line of an image with its scores (`None`: not scored).
    pub fn new(name: &str, bbox: Option<&crate::BBox>, score: Option<&ImageScore>) -> Self {
        let pct = |x: Option<f64>| x.map(|v| 100.0 * v);
        CosegImageRecord {
            name: name.to_string(),
            jaccard: pct(score.and_then(|s| s.jaccard)),
            jaccard_pooled: pct(score.and_then(|s| s.jaccard)),
            precision: pct(score.and_then(|s| s.precision)),
            corloc: score.map(|s| if s.corloc { 100.0 } else { 0.0 }),
            box_iou: score.map(|s| 100.0 * s.box_iou),
            bbox: bbox.map(|b| [b.x1, b.y1, b.x2, b.y2]),
            annotated: false,
        }
    }
}

/// An image left out of a set (unreadable, no mask, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The record of one co-segmented set: the set's scores (percent, `null` without the ground
/// truth for them), every image's, and how they were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CosegRecord {
    /// The set's name (class or folder).
    pub set: String,
    /// Mean per-image Jaccard.
    pub jaccard: Option<f64>,
    /// Σ intersections / Σ unions over the set.
    pub jaccard_pooled: Option<f64>,
    /// Mean pixel accuracy.
    pub precision: Option<f64>,
    /// CorLoc.
    pub corloc: Option<f64>,
    /// Images scored.
    pub scored_images: usize,
    /// Every image, in order.
    pub images: Vec<CosegImageRecord>,
    /// Images left out.
    pub skipped: Vec<SkippedRecord>,
    /// The object's factors.
    pub object_factors: Vec<usize>,
    /// Every factor's border ratio (see `coseg`), in factor order.
    pub border_ratios: Vec<f32>,
    /// `‖A − UV‖ / ‖A‖` of the factorization.
    pub rel_error: f64,
    /// How it was made.
    pub provenance: CosegProvenance,
    /// One-shot: the annotated image, and the chosen rank's IoU on it (percent).
    pub one_shot: Option<OneShotRecord>,
    /// Wall-clock seconds: features, factorization, masks.
    pub seconds: CosegTimings,
    /// Software that produced the record (`deepfactor`).
    pub software: String,
    /// Its version.
    pub version: String,
    /// When (UTC, RFC 3339).
    pub date: String,
}

/// One-shot details of a [`CosegRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneShotRecord {
    /// The annotated image.
    pub annotated: String,
    /// The rank chosen.
    pub k: usize,
    /// How the chosen factors were found: `matched` (merged and matched to the annotation,
    /// the thesis) or `auto` (the run's unsupervised choice).
    pub rule: String,
    /// The chosen factors.
    pub factors: Vec<usize>,
    /// The chosen factors' IoU with the annotation, percent.
    pub iou: f64,
    /// Every candidate: `(k, rule, iou percent)`.
    pub runs: Vec<(usize, String, f64)>,
}

/// Wall-clock seconds of the stages of a co-segmentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CosegTimings {
    /// Decoding and the network.
    pub features: f64,
    /// The joint factorization(s).
    pub factorization: f64,
    /// Masks, boxes, scores and outputs.
    pub masks: f64,
}

impl CosegRecord {
    /// A record of `images` (scored ones count in the set's scores), stamped with this
    /// crate's version and the current time.
    pub fn new(
        set: impl Into<String>,
        scores: &SetScores,
        images: Vec<CosegImageRecord>,
        provenance: CosegProvenance,
    ) -> Self {
        CosegRecord {
            set: set.into(),
            jaccard: scores.jaccard,
            jaccard_pooled: scores.jaccard_pooled,
            precision: scores.precision,
            corloc: scores.corloc,
            scored_images: scores.images,
            images,
            skipped: Vec::new(),
            object_factors: Vec::new(),
            border_ratios: Vec::new(),
            rel_error: 0.0,
            provenance,
            one_shot: None,
            seconds: CosegTimings::default(),
            software: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            date: rfc3339_utc(SystemTime::now()),
        }
    }

    /// The set's scores again.
    pub fn scores(&self) -> SetScores {
        SetScores {
            jaccard: self.jaccard,
            jaccard_pooled: self.jaccard_pooled,
            precision: self.precision,
            corloc: self.corloc,
            images: self.scored_images,
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Strings, numbers, options and vectors always serialise; non-finite floats become null.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// A data set of co-segmentation classes: one record per class and their mean (each class
/// counts once, as in the thesis' Table 4.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CosegDatasetRecord {
    /// Where the data set was read from.
    pub dataset: String,
    /// Per class.
    pub classes: Vec<CosegRecord>,
    /// The mean over classes.
    pub mean: SetScores,
    /// Wall-clock seconds over all classes.
    pub seconds: CosegTimings,
    /// Software that produced the record (`deepfactor`).
    pub software: String,
    /// Its version.
    pub version: String,
    /// When (UTC, RFC 3339).
    pub date: String,
}

impl CosegDatasetRecord {
    /// The record of `classes`, with their mean.
    pub fn new(dataset: impl Into<String>, classes: Vec<CosegRecord>) -> Self {
        let scores: Vec<SetScores> = classes.iter().map(CosegRecord::scores).collect();
        let mut seconds = CosegTimings::default();
        for c in &classes {
            seconds.features += c.seconds.features;
            seconds.factorization += c.seconds.factorization;
            seconds.masks += c.seconds.masks;
        }
        CosegDatasetRecord {
            dataset: dataset.into(),
            mean: SetScores::mean(&scores),
            classes,
            seconds,
            software: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            date: rfc3339_utc(SystemTime::now()),
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // As CosegRecord::to_json.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// `t` as an RFC 3339 UTC timestamp with whole seconds, e.g. `2000-02-29T23:59:59Z`. Times
/// before 1970 are clamped to the epoch.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn dates_by_hand() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day in a year divisible by 400): 11016 days after the epoch.
        assert_eq!(at(11_016 * 86_400 + 86_399), "2000-02-29T23:59:59Z");
        assert_eq!(at(11_017 * 86_400), "2000-03-01T00:00:00Z");
        // 2100 is not a leap year: 2100-02-28 is day 47540, the next day is March 1st.
        assert_eq!(at(47_541 * 86_400), "2100-03-01T00:00:00Z");
        // The largest 32-bit time_t.
        assert_eq!(at(2_147_483_647), "2038-01-19T03:14:07Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }
}
