//! Scoring a set of rankings against a ground truth under a protocol.

use super::ground_truth::{GroundTruth, GroundTruthKind, Setup};
use super::metrics::{average_precision_at_k, compute_ap, junk_free_ranks, precision_at_k};
use super::ranking::Rankings;
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The k of the revisited protocol's mean precision at k (mP@k).
pub const REVISITED_KS: [usize; 3] = [1, 5, 10];

/// How rankings are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Oxford / Paris: mean over queries of the official trapezoid AP, positives good ∪ ok,
    /// junk skipped. On revisited ground truth this is the Medium setup.
    Classic,
    /// ROxford / RParis: mAP and mP@k (k = 1, 5, 10) for the Easy, Medium and Hard setups;
    /// the headline mAP is Medium's. Needs revisited ground truth.
    Revisited,
    /// Category retrieval: mean over queries of AP truncated at rank k and normalised by
    /// min(k, number of positives) (thesis eq. 5.8), positives as in `Classic`.
    MapAt(usize),
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Classic => write!(f, "classic"),
            Protocol::Revisited => write!(f, "revisited"),
            Protocol::MapAt(k) => write!(f, "map@{k}"),
        }
    }
}

impl FromStr for Protocol {
    type Err = Error;

    /// `classic`, `revisited` or `map@K` with K ≥ 1.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(Protocol::Classic),
            "revisited" => Ok(Protocol::Revisited),
            other => match other.strip_prefix("map@").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 1 => Ok(Protocol::MapAt(k)),
                _ => Err(Error::invalid(format!(
                    "unknown protocol {s:?}: expected classic, revisited or map@K (K ≥ 1)"
                ))),
            },
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One query's score.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryScore {
    /// The query's name.
    pub query: String,
    /// AP in percent; `None` when the query has no positive (left out of the mean, as in
    /// the official code).
    pub ap: Option<f64>,
    /// Number of positives.
    pub positives: usize,
}

/// The scores of one revisited setup.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupScores {
    /// mAP in percent over the queries with at least one positive; `None` if there is none.
    pub map: Option<f64>,
    /// `(k, mP@k in percent)` for k in [`REVISITED_KS`], over the same queries; `None`
    /// where no query has a positive.
    pub mp_at_k: Vec<(usize, Option<f64>)>,
    /// Per query, in ground-truth order.
    pub queries: Vec<QueryScore>,
}

/// Easy, Medium and Hard scores.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisitedScores {
    /// Easy setup.
    pub easy: SetupScores,
    /// Medium setup.
    pub medium: SetupScores,
    /// Hard setup.
    pub hard: SetupScores,
}

impl RevisitedScores {
    /// The scores of a setup.
    pub fn setup(&self, setup: Setup) -> &SetupScores {
        match setup {
            Setup::Easy => &self.easy,
            Setup::Medium => &self.medium,
            Setup::Hard => &self.hard,
        }
    }
}

/// The outcome of [`evaluate`]. Every number is in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The ground truth's dataset name.
    pub dataset: String,
    /// The protocol used.
    pub protocol: Protocol,
    /// The headline mean (mAP, mAP@k, or Medium mAP for the revisited protocol), over the
    /// queries with at least one positive.
    pub map: f64,
    /// Per-query scores behind `map`, in ground-truth order.
    pub queries: Vec<QueryScore>,
    /// Number of queries in `map` (those with at least one positive).
    pub evaluated: usize,
    /// Easy / Medium / Hard scores, for the revisited protocol.
    pub revisited: Option<RevisitedScores>,
}

/// Scores `rankings` against `gt` under `protocol`.
///
/// Every query of `gt` must be ranked, and every ranked query and image must be in `gt`
/// (ranking the query image of a revisited query, which is not in the database, is an error
/// too) — unless `gt` does not list its whole database ([`GroundTruth::lists_database`]), when
/// other ranked images count as irrelevant. Queries without positives are reported with `ap: None` and left out of the means.
/// Fails when no query has a positive, since the mean is then undefined.
pub fn evaluate(gt: &GroundTruth, rankings: &Rankings, protocol: Protocol) -> Result<Evaluation> {
    evaluate_with(gt, rankings, protocol, !gt.lists_database())
}

/// As [`evaluate`]; with `distractors`, ranked images that the ground truth does not list
/// count as irrelevant (as the 1M distractors of R1M do) instead of being refused as unknown.
pub fn evaluate_with(
    gt: &GroundTruth,
    rankings: &Rankings,
    protocol: Protocol,
    distractors: bool,
) -> Result<Evaluation> {
    if protocol == Protocol::Revisited && gt.kind() != GroundTruthKind::Revisited {
        return Err(Error::invalid(format!(
            "the revisited protocol needs easy/hard/junk ground truth; {} ({}) has classic \
             good/ok/junk lists — use --protocol classic",
            gt.name(),
            gt.source().display()
        )));
    }
    let ranked = resolve(gt, rankings, distractors)?;
    let (map, queries, evaluated, revisited) = match protocol {
        Protocol::Classic | Protocol::MapAt(_) => {
            let mut queries = Vec::with_capacity(ranked.len());
            for (q, ranking) in gt.queries().iter().zip(&ranked) {
                let (pos, junk) = q.relevance.standard();
                let ap = match protocol {
                    Protocol::MapAt(k) => average_precision_at_k(ranking, &pos, &junk, k),
                    _ => compute_ap(&junk_free_ranks(ranking, &pos, &junk), pos.len()),
                };
                queries.push(QueryScore {
                    query: q.name.clone(),
                    ap: ap.map(|v| v * 100.0),
                    positives: pos.len(),
                });
            }
            let (map, n) = mean_defined(queries.iter().map(|q| q.ap));
            (map, queries, n, None)
        }
        Protocol::Revisited => {
            let [easy, medium, hard] = Setup::ALL.map(|s| setup_scores(gt, &ranked, s));
            let (map, n) = mean_defined(medium.queries.iter().map(|q| q.ap));
            let queries = medium.queries.clone();
            (
                map,
                queries,
                n,
                Some(RevisitedScores { easy, medium, hard }),
            )
        }
    };
    let Some(map) = map else {
        return Err(Error::invalid(format!(
            "no query of {} has a relevant image under the {protocol} protocol; mAP is undefined",
            gt.name()
        )));
    };
    Ok(Evaluation {
        dataset: gt.name().to_string(),
        protocol,
        map,
        queries,
        evaluated,
        revisited,
    })
}

fn setup_scores(gt: &GroundTruth, ranked: &[Vec<usize>], setup: Setup) -> SetupScores {
    let mut queries = Vec::with_capacity(ranked.len());
    let mut pr_sum = vec![0.0; REVISITED_KS.len()];
    for (q, ranking) in gt.queries().iter().zip(ranked) {
        let (pos, junk) = q
            .relevance
            .revisited(setup)
            .unwrap_or_else(|| q.relevance.standard());
        let ranks = junk_free_ranks(ranking, &pos, &junk);
        let ap = compute_ap(&ranks, pos.len());
        if ap.is_some() {
            for (sum, &k) in pr_sum.iter_mut().zip(&REVISITED_KS) {
                *sum += precision_at_k(&ranks, k);
            }
        }
        queries.push(QueryScore {
            query: q.name.clone(),
            ap: ap.map(|v| v * 100.0),
            positives: pos.len(),
        });
    }
    let (map, n) = mean_defined(queries.iter().map(|q| q.ap));
    let mp_at_k = REVISITED_KS
        .iter()
        .zip(&pr_sum)
        .map(|(&k, &s)| (k, (n > 0).then(|| 100.0 * s / n as f64)))
        .collect();
    SetupScores {
        map,
        mp_at_k,
        queries,
    }
}

fn mean_defined(values: impl Iterator<Item = Option<f64>>) -> (Option<f64>, usize) {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.flatten() {
        sum += v;
        n += 1;
    }
    ((n > 0).then(|| sum / n as f64), n)
}

/// Each ground-truth query's ranking as database indices.
/// Ranked image indices; a distractor (with `distractors`) becomes `usize::MAX`, an index no
/// relevance list holds.
fn resolve(gt: &GroundTruth, rankings: &Rankings, distractors: bool) -> Result<Vec<Vec<usize>>> {
    for r in rankings.iter() {
        if gt.query(&r.query).is_none() {
            return Err(Error::invalid(format!(
                "the rankings hold query {:?}, which {} does not have",
                r.query,
                gt.name()
            )));
        }
    }
    let mut out = Vec::with_capacity(gt.queries().len());
    for q in gt.queries() {
        let names = rankings.get(&q.name).ok_or_else(|| {
            Error::invalid(format!(
                "no ranking for query {:?} of {}",
                q.name,
                gt.name()
            ))
        })?;
        let mut idx = Vec::with_capacity(names.len());
        for n in names {
            if distractors && gt.image_index(n).is_none() {
                idx.push(usize::MAX);
                continue;
            }
            idx.push(gt.image_index(n).ok_or_else(|| {
                Error::invalid(format!(
                    "the ranking of query {:?} names {n:?}, which is not a database image of {}",
                    q.name,
                    gt.name()
                ))
            })?);
        }
        out.push(idx);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        for p in [Protocol::Classic, Protocol::Revisited, Protocol::MapAt(30)] {
            assert_eq!(p.to_string().parse::<Protocol>().unwrap(), p);
        }
        assert_eq!("MAP@5".parse::<Protocol>().unwrap(), Protocol::MapAt(5));
        for bad in ["map@0", "map@", "map@x", "oxford", ""] {
            assert!(bad.parse::<Protocol>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&Protocol::MapAt(30)).unwrap();
        assert_eq!(json, "\"map@30\"");
        assert_eq!(
            serde_json::from_str::<Protocol>(&json).unwrap(),
            Protocol::MapAt(30)
        );
    }

    #[test]
    fn mean_skips_undefined() {
        let (m, n) = mean_defined([Some(1.0), None, Some(3.0)].into_iter());
        assert_eq!((m, n), (Some(2.0), 2));
        assert_eq!(mean_defined([None].into_iter()), (None, 0));
    }
}
