//! Retrieval metrics on one ranked list: average precision, precision at k, AP at k.
//!
//! Everything here works on a ranking (database items, best first) and two sets of items: the
//! *positives* (relevant images) and the *junk* (images that count neither way, e.g. the query
//! image itself or a barely visible landmark). The functions return fractions in `[0, 1]`;
//! reports multiply by 100.
//!
//! # Average precision (the official Oxford / revisitop `compute_ap`)
//!
//! Junk items are removed from the ranking first (equivalently, each positive's position is
//! reduced by the number of junk items ranked before it). With `n` positives in total and the
//! `j`-th positive found (0-based) at junk-free position `r_j` (0-based), precision just before
//! it is `j / r_j` (1 when `r_j = 0`) and just after it `(j + 1) / (r_j + 1)`, and
//!
//! ```text
//! AP = Σ_j  (1/n) · ( j / r_j + (j + 1) / (r_j + 1) ) / 2
//! ```
//!
//! — the area under the precision–recall curve by trapezoids, one per recall step of `1/n`.
//! Positives missing from the ranking contribute nothing (their recall step is never reached).
//! This is the algorithm of the Oxford Buildings `compute_ap.cpp` and of revisitop's
//! `compute_ap`; the two agree whenever positives and junk are disjoint (our loaders refuse
//! ground truth where they are not). Where an item is both, we follow revisitop: it counts as a
//! positive, and as junk for the items after it.
//!
//! # AP at k (category retrieval, thesis eq. 5.8)
//!
//! With junk removed and `rel(i)` = 1 when the item at junk-free rank `i` (1-based) is positive,
//! `P(i)` the precision of the first `i` items and `R` the number of positives,
//!
//! ```text
//! AP@k = ( Σ_{i=1..k} P(i) · rel(i) ) / min(k, R)
//! ```
//!
//! the usual "AP truncated at rank k", normalised so that a ranking with `min(k, R)` positives
//! on top scores 1. It is the non-interpolated sum of precisions (no trapezoids), as in the
//! definition of mAP@k used for category-level retrieval.
//!
//! # Ties
//!
//! A ranking is an order; where it comes from scores, [`rank_by_score`] sorts by descending
//! score and breaks ties by ascending database index (a stable sort), so results are
//! reproducible. (numpy's default `argsort` is not stable, so the official Python code may
//! order tied items differently.)

use std::collections::HashSet;
use std::hash::Hash;

/// The 0-based positions of the positives in `ranking` once junk items are skipped: for each
/// positive, its position minus the number of junk items ranked strictly before it.
///
/// `ranking` should hold distinct items; a repeated positive is counted at each occurrence,
/// as the official code would.
pub fn junk_free_ranks<T: Eq + Hash>(ranking: &[T], positives: &[T], junk: &[T]) -> Vec<usize> {
    let pos: HashSet<&T> = positives.iter().collect();
    let junk: HashSet<&T> = junk.iter().collect();
    let mut junk_before = 0usize;
    let mut ranks = Vec::new();
    for (p, item) in ranking.iter().enumerate() {
        if pos.contains(item) {
            ranks.push(p - junk_before);
        }
        if junk.contains(item) {
            junk_before += 1;
        }
    }
    ranks
}

/// Average precision from the junk-free 0-based ranks of the positives found (increasing) and
/// the total number of positives, by trapezoids (see the module docs). `None` when
/// `n_positives` is zero: AP is undefined and such a query is left out of the mean.
pub fn compute_ap(ranks: &[usize], n_positives: usize) -> Option<f64> {
    if n_positives == 0 {
        return None;
    }
    let step = 1.0 / n_positives as f64;
    let mut ap = 0.0;
    for (j, &r) in ranks.iter().enumerate() {
        let before = if r == 0 { 1.0 } else { j as f64 / r as f64 };
        let after = (j + 1) as f64 / (r + 1) as f64;
        ap += (before + after) * step / 2.0;
    }
    Some(ap)
}

/// Average precision of `ranking` (official `compute_ap`, junk skipped). `None` when there
/// are no positives. Positives are counted once each, whether or not the ranking holds them.
pub fn average_precision<T: Eq + Hash>(ranking: &[T], positives: &[T], junk: &[T]) -> Option<f64> {
    let n = positives.iter().collect::<HashSet<&T>>().len();
    compute_ap(&junk_free_ranks(ranking, positives, junk), n)
}

/// Precision at `k` as the revisitop protocol computes it for mP@k, from the junk-free 0-based
/// ranks of the positives found: with `last` the 1-based rank of the last positive found,
/// `k' = min(k, last)` and the result is the fraction of the first `k'` items that are
/// positive. (So when every positive found lies above rank `k`, the precision is taken at
/// the last of them rather than at `k`.) Zero when no positive was found or `k` is zero.
pub fn precision_at_k(ranks: &[usize], k: usize) -> f64 {
    let Some(last) = ranks.iter().max() else {
        return 0.0;
    };
    let kq = k.min(last + 1);
    if kq == 0 {
        return 0.0;
    }
    let hits = ranks.iter().filter(|&&r| r < kq).count();
    hits as f64 / kq as f64
}

/// AP truncated at rank `k` and normalised by `min(k, number of positives)` (thesis eq. 5.8,
/// see the module docs), junk skipped. `None` when there are no positives or `k` is zero.
pub fn average_precision_at_k<T: Eq + Hash>(
    ranking: &[T],
    positives: &[T],
    junk: &[T],
    k: usize,
) -> Option<f64> {
    let n = positives.iter().collect::<HashSet<&T>>().len();
    if n == 0 || k == 0 {
        return None;
    }
    let mut sum = 0.0;
    for (j, &r) in junk_free_ranks(ranking, positives, junk).iter().enumerate() {
        if r >= k {
            break;
        }
        sum += (j + 1) as f64 / (r + 1) as f64;
    }
    Some(sum / k.min(n) as f64)
}

/// Database indices ordered by descending score; ties keep ascending index order, NaN scores
/// go last.
pub fn rank_by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a], scores[b]);
        match (sa.is_nan(), sb.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            // Neither is NaN, so partial_cmp is total here.
            (false, false) => sb.partial_cmp(&sa).unwrap_or(std::cmp::Ordering::Equal),
        }
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn junk_shifts_later_positives_only() {
        // P J N P J P  →  junk-free: P N P P
        let ranking = ["p1", "j1", "n1", "p2", "j2", "p3"];
        let ranks = junk_free_ranks(&ranking, &["p1", "p2", "p3"], &["j1", "j2"]);
        assert_eq!(ranks, vec![0, 2, 3]);
    }

    #[test]
    fn compute_ap_by_hand() {
        // One positive at rank 0: (1 + 1)/2 = 1.
        assert!(close(compute_ap(&[0], 1).unwrap(), 1.0));
        // One positive at rank 2: (0/2 + 1/3)/2 = 1/6.
        assert!(close(compute_ap(&[2], 1).unwrap(), 1.0 / 6.0));
        // Two positives at ranks 0 and 2: ½·(1+1)/2 + ½·(1/2 + 2/3)/2 = 1/2 + 7/24 = 19/24.
        assert!(close(compute_ap(&[0, 2], 2).unwrap(), 19.0 / 24.0));
        // Half of the positives never found: only the first recall step counts.
        assert!(close(compute_ap(&[0], 2).unwrap(), 0.5));
        assert_eq!(compute_ap(&[], 0), None);
        assert!(close(compute_ap(&[], 3).unwrap(), 0.0));
    }

    #[test]
    fn precision_at_k_follows_revisitop() {
        // Positives at 1-based ranks 1, 3, 6.
        let ranks = [0, 2, 5];
        assert!(close(precision_at_k(&ranks, 1), 1.0));
        assert!(close(precision_at_k(&ranks, 5), 2.0 / 5.0));
        // k beyond the last positive: precision at rank 6, not 10.
        assert!(close(precision_at_k(&ranks, 10), 3.0 / 6.0));
        assert_eq!(precision_at_k(&[], 5), 0.0);
        assert_eq!(precision_at_k(&ranks, 0), 0.0);
    }

    #[test]
    fn ap_at_k_by_hand() {
        let ranking = ["a", "x", "b", "y", "c"];
        let pos3 = ["a", "b", "c"];
        // k = 3: (1 + 2/3) / 3.
        let v = average_precision_at_k(&ranking, &pos3, &[], 3).unwrap();
        assert!(close(v, (1.0 + 2.0 / 3.0) / 3.0));
        // k = 1: 1/1.
        assert!(close(
            average_precision_at_k(&ranking, &pos3, &[], 1).unwrap(),
            1.0
        ));
        // k = 10: (1 + 2/3 + 3/5) / min(10, 3).
        let v = average_precision_at_k(&ranking, &pos3, &[], 10).unwrap();
        assert!(close(v, (1.0 + 2.0 / 3.0 + 0.6) / 3.0));
        // Five positives, two never retrieved: normalised by min(10, 5) = 5.
        let pos5 = ["a", "b", "c", "d", "e"];
        let v = average_precision_at_k(&ranking, &pos5, &[], 10).unwrap();
        assert!(close(v, (1.0 + 2.0 / 3.0 + 0.6) / 5.0));
        // Junk is skipped: x is junk, so b moves to rank 2.
        let v = average_precision_at_k(&ranking, &pos3, &["x"], 2).unwrap();
        assert!(close(v, 1.0));
        assert_eq!(
            average_precision_at_k(&ranking, &[] as &[&str], &[], 3),
            None
        );
        assert_eq!(average_precision_at_k(&ranking, &pos3, &[], 0), None);
    }

    /// The Oxford `compute_ap.cpp` formulation, written independently: walk the ranking,
    /// skip junk, and add a trapezoid (recall step × mean of the previous and current
    /// precision) at every item.
    fn oxford_cpp_ap(ranking: &[u32], pos: &HashSet<u32>, junk: &HashSet<u32>) -> f64 {
        let (mut old_recall, mut old_precision, mut ap) = (0.0, 1.0, 0.0);
        let (mut hits, mut j) = (0usize, 0usize);
        for item in ranking {
            if junk.contains(item) {
                continue;
            }
            if pos.contains(item) {
                hits += 1;
            }
            let recall = hits as f64 / pos.len() as f64;
            let precision = hits as f64 / (j + 1) as f64;
            ap += (recall - old_recall) * (old_precision + precision) / 2.0;
            old_recall = recall;
            old_precision = precision;
            j += 1;
        }
        ap
    }

    proptest::proptest! {
        /// Random rankings of 0..n with each item a positive, junk or negative (positives and
        /// junk disjoint, as the loaders guarantee).
        #[test]
        fn ap_agrees_with_the_oxford_formulation(
            labels in proptest::collection::vec(0u8..3, 1..40),
            seed in 0u64..1000,
        ) {
            let n = labels.len() as u32;
            let mut ranking: Vec<u32> = (0..n).collect();
            // A deterministic shuffle from the seed.
            let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            for i in (1..ranking.len()).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ranking.swap(i, (x >> 33) as usize % (i + 1));
            }
            let pos: Vec<u32> = (0..n).filter(|&i| labels[i as usize] == 0).collect();
            let junk: Vec<u32> = (0..n).filter(|&i| labels[i as usize] == 1).collect();
            let ap = average_precision(&ranking, &pos, &junk);
            if pos.is_empty() {
                proptest::prop_assert_eq!(ap, None);
                return Ok(());
            }
            let ap = ap.unwrap();
            proptest::prop_assert!((0.0..=1.0 + 1e-12).contains(&ap));
            let (ps, js): (HashSet<u32>, HashSet<u32>) =
                (pos.iter().copied().collect(), junk.iter().copied().collect());
            proptest::prop_assert!((ap - oxford_cpp_ap(&ranking, &ps, &js)).abs() < 1e-9);
            // Junk skipped = junk removed from the ranking.
            let without: Vec<u32> = ranking.iter().copied().filter(|i| !js.contains(i)).collect();
            let ap2 = average_precision(&without, &pos, &[]).unwrap();
            proptest::prop_assert!((ap - ap2).abs() < 1e-12);
            // AP@k stays within [0, 1].
            let apk = average_precision_at_k(&ranking, &pos, &junk, ranking.len()).unwrap();
            proptest::prop_assert!((0.0..=1.0 + 1e-12).contains(&apk));
        }
    }

    #[test]
    fn rank_by_score_breaks_ties_by_index() {
        let scores = [0.5, 0.9, 0.5, f32::NAN, 0.1, 0.9];
        assert_eq!(rank_by_score(&scores), vec![1, 5, 0, 2, 4, 3]);
    }
}
