//! Evaluation: ground truth, retrieval metrics under the official protocols, localization
//! and segmentation metrics, and a reproducible results record.
//!
//! The retrieval path reads like a sentence: load the ground truth, rank every query, score
//! the rankings under a protocol, record the result with how it was produced.
//!
//! ```
//! use deepfactor::eval::{evaluate, GroundTruth, Protocol, Provenance, Rankings, ResultsRecord};
//! # fn main() -> deepfactor::Result<()> {
//! # let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval");
//! let gt = GroundTruth::load(root.join("oxford"))?;
//! let rankings = Rankings::load(root.join("rankings_oxford.txt"))?;
//! let evaluation = evaluate(&gt, &rankings, Protocol::Classic)?;
//! println!("mAP {:.2}", evaluation.map);
//! let record = ResultsRecord::new(&evaluation, Provenance::default());
//! assert!(record.to_json().contains("\"per_query\""));
//! # Ok(())
//! # }
//! ```
//!
//! - [`GroundTruth`]: Oxford5k / Paris6k folders (and `../shared/data`'s dev sets) and the
//!   revisited ROxford / RParis pickles, read natively.
//! - Metrics: AP exactly as the official [`compute_ap`] (trapezoids, junk skipped), the
//!   revisited mP@k, and AP@k for category retrieval ([`average_precision_at_k`]).
//! - [`evaluate()`]: the classic, revisited (Easy / Medium / Hard) and `map@K` protocols.
//! - Box IoU and [`corloc`], mask [`jaccard`], and the factor–part matching used with
//!   PASCAL-Part ([`PartMatcher`]).
//! - [`CosegGroundTruth`]: co-segmentation / co-localization sets (images, masks, boxes, parts);
//!   [`SetScores`]: their scores (Jaccard, pooled Jaccard, pixel accuracy, CorLoc).
//! - [`ResultsRecord`]: the JSON results record; [`CosegRecord`] and [`CosegDatasetRecord`] for
//!   co-segmentation.

mod coseg;
mod evaluate;
mod ground_truth;
mod localization;
mod mask;
mod metrics;
mod parts;
mod ranking;
mod record;
mod segmentation;

pub use coseg::{load_image_list, CosegClass, CosegGroundTruth, CosegImage};
pub use evaluate::{
    evaluate, evaluate_with, Evaluation, Protocol, QueryScore, RevisitedScores, SetupScores,
    REVISITED_KS,
};
pub use ground_truth::{
    GroundTruth, GroundTruthKind, GroundTruthQuery, Relevance, Setup, OXFORD_QUERY_PREFIX,
};
pub use localization::{
    corloc, evaluate_localization, is_correct_localization, BoxPrediction, LocalizationEvaluation,
    LocalizationScore, CORLOC_IOU,
};
pub use mask::{jaccard, Mask};
pub use metrics::{
    average_precision, average_precision_at_k, compute_ap, junk_free_ranks, precision_at_k,
    rank_by_score,
};
pub use parts::{
    PartMatch, PartMatcher, PartMatcherBuilder, PartMatching, DEFAULT_FACTOR_MERGE_THRESHOLD,
    DEFAULT_PART_MERGE_THRESHOLD,
};
pub use ranking::{Ranking, Rankings};
pub use record::{
    rfc3339_utc, BoxHandling, CosegDatasetRecord, CosegImageRecord, CosegProvenance, CosegRecord,
    CosegTimings, OneShotRecord, PrecisionAtK, Provenance, ResultsRecord, RevisitedRecord,
    SetupRecord, SkippedRecord,
};
pub use segmentation::{score_box, score_mask, ImageScore, SetScores};
