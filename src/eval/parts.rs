//! Matching NMF factors to annotated object parts (thesis §4.3.2, PASCAL-Part).
//!
//! Factorization is unsupervised, so before a factor can be scored against a part annotation
//! the two must be paired. Given binary factor masks `F_1..F_K` (thresholded heatmaps) and
//! part masks `P_1..P_M` over the same pixels (one image, or several stacked with
//! [`Mask::vstack`]):
//!
//! 1. **IoU matrix** `IoU(F_i, P_j) = |F_i ∩ P_j| / |F_i ∪ P_j|` (0 when the union is empty).
//! 2. **Merging.** A part split over several factors, or a factor spanning several parts,
//!    would otherwise match poorly. Factors are merged when they lie inside the same part:
//!    `F_i` joins part `P_j`'s factor group when the intersection over factor
//!    `|F_i ∩ P_j| / |F_i|` exceeds the factor threshold. Parts are merged when they lie
//!    inside the same factor: `P_j` joins `F_i`'s part group when the intersection over part
//!    `|F_i ∩ P_j| / |P_j|` exceeds the part threshold. Groups are the connected components of
//!    these relations (union–find), computed on the original masks, and each group's mask is
//!    the union of its members. A threshold of 1 disables that merging.
//! 3. **Mutual-best matching.** With the IoU matrix of the merged groups, a factor group and a
//!    part group match when each is the other's best (highest IoU, lowest index on a tie)
//!    and their IoU is positive. Each group is in at most one match.
//!
//! The score of a part group is the IoU of its match (0 when unmatched); [`PartMatching::mean_part_iou`]
//! averages it over part groups. The thresholds' defaults (0.5: "more than half of it lies
//! inside") are ours; the thesis does not fix them here.

use super::mask::Mask;
use crate::{Error, Result};

/// Default intersection-over-factor threshold for merging factors inside one part.
pub const DEFAULT_FACTOR_MERGE_THRESHOLD: f64 = 0.5;
/// Default intersection-over-part threshold for merging parts inside one factor.
pub const DEFAULT_PART_MERGE_THRESHOLD: f64 = 0.5;

/// Builder for a [`PartMatcher`].
#[derive(Debug, Clone)]
pub struct PartMatcherBuilder {
    factor_merge: f64,
    part_merge: f64,
}

impl Default for PartMatcherBuilder {
    fn default() -> Self {
        PartMatcherBuilder {
            factor_merge: DEFAULT_FACTOR_MERGE_THRESHOLD,
            part_merge: DEFAULT_PART_MERGE_THRESHOLD,
        }
    }
}

impl PartMatcherBuilder {
    /// Intersection-over-factor above which a factor joins a part's factor group
    /// (default [`DEFAULT_FACTOR_MERGE_THRESHOLD`]; 1 disables factor merging).
    pub fn factor_merge_threshold(mut self, t: f64) -> Self {
        self.factor_merge = t;
        self
    }

    /// Intersection-over-part above which a part joins a factor's part group
    /// (default [`DEFAULT_PART_MERGE_THRESHOLD`]; 1 disables part merging).
    pub fn part_merge_threshold(mut self, t: f64) -> Self {
        self.part_merge = t;
        self
    }

    /// Checks the thresholds (each in `(0, 1]`).
    pub fn build(self) -> Result<PartMatcher> {
        for (name, t) in [
            ("factor merge threshold", self.factor_merge),
            ("part merge threshold", self.part_merge),
        ] {
            if !(t > 0.0 && t <= 1.0) {
                return Err(Error::invalid(format!("{name} {t} is not in (0, 1]")));
            }
        }
        Ok(PartMatcher {
            factor_merge: self.factor_merge,
            part_merge: self.part_merge,
        })
    }
}

/// Matches factor masks to part masks (see the module docs).
#[derive(Debug, Clone)]
pub struct PartMatcher {
    factor_merge: f64,
    part_merge: f64,
}

impl Default for PartMatcher {
    fn default() -> Self {
        PartMatcher {
            factor_merge: DEFAULT_FACTOR_MERGE_THRESHOLD,
            part_merge: DEFAULT_PART_MERGE_THRESHOLD,
        }
    }
}

/// A matched factor group and part group.
#[derive(Debug, Clone, PartialEq)]
pub struct PartMatch {
    /// Index into [`PartMatching::factor_groups`].
    pub factor_group: usize,
    /// Index into [`PartMatching::part_groups`].
    pub part_group: usize,
    /// IoU of the two groups' masks.
    pub iou: f64,
}

/// The outcome of [`PartMatcher::match_masks`].
#[derive(Debug, Clone, PartialEq)]
pub struct PartMatching {
    /// `iou[i][j]`: IoU of factor `i` and part `j` (before merging).
    pub iou: Vec<Vec<f64>>,
    /// Factor groups after merging: sorted factor indices, groups ordered by first member.
    pub factor_groups: Vec<Vec<usize>>,
    /// Part groups after merging, likewise.
    pub part_groups: Vec<Vec<usize>>,
    /// `group_iou[a][b]`: IoU of factor group `a` and part group `b`.
    pub group_iou: Vec<Vec<f64>>,
    /// Mutual-best matches, ordered by factor group.
    pub matches: Vec<PartMatch>,
}

impl PartMatching {
    /// Per part group, the IoU of its match (0 when unmatched).
    pub fn part_scores(&self) -> Vec<f64> {
        let mut s = vec![0.0; self.part_groups.len()];
        for m in &self.matches {
            s[m.part_group] = m.iou;
        }
        s
    }

    /// Mean of [`part_scores`](Self::part_scores); 0 when there are no parts.
    pub fn mean_part_iou(&self) -> f64 {
        let s = self.part_scores();
        if s.is_empty() {
            0.0
        } else {
            s.iter().sum::<f64>() / s.len() as f64
        }
    }
}

impl PartMatcher {
    /// A builder with the default thresholds.
    pub fn builder() -> PartMatcherBuilder {
        PartMatcherBuilder::default()
    }

    /// Matches `factors` to `parts`; all masks must have the same size.
    pub fn match_masks(&self, factors: &[Mask], parts: &[Mask]) -> Result<PartMatching> {
        let all: Vec<&Mask> = factors.iter().chain(parts).collect();
        if let Some(first) = all.first() {
            for m in &all {
                if (m.width(), m.height()) != (first.width(), first.height()) {
                    return Err(Error::invalid(format!(
                        "factor and part masks differ in size: {}×{} and {}×{}",
                        first.width(),
                        first.height(),
                        m.width(),
                        m.height()
                    )));
                }
            }
        }
        let inter = intersections(factors, parts);
        let f_area: Vec<usize> = factors.iter().map(Mask::area).collect();
        let p_area: Vec<usize> = parts.iter().map(Mask::area).collect();
        let iou = iou_matrix(&inter, &f_area, &p_area);

        let mut f_sets = UnionFind::new(factors.len());
        let mut p_sets = UnionFind::new(parts.len());
        for j in 0..parts.len() {
            let inside: Vec<usize> = inter
                .iter()
                .zip(&f_area)
                .enumerate()
                .filter(|(_, (row, &a))| a > 0 && ratio(row[j], a) > self.factor_merge)
                .map(|(i, _)| i)
                .collect();
            for w in inside.windows(2) {
                f_sets.union(w[0], w[1]);
            }
        }
        for row in &inter {
            let inside: Vec<usize> = row
                .iter()
                .zip(&p_area)
                .enumerate()
                .filter(|(_, (&n, &a))| a > 0 && ratio(n, a) > self.part_merge)
                .map(|(j, _)| j)
                .collect();
            for w in inside.windows(2) {
                p_sets.union(w[0], w[1]);
            }
        }
        let factor_groups = f_sets.groups();
        let part_groups = p_sets.groups();
        let gf = group_masks(factors, &factor_groups)?;
        let gp = group_masks(parts, &part_groups)?;
        let g_inter = intersections(&gf, &gp);
        let gf_area: Vec<usize> = gf.iter().map(Mask::area).collect();
        let gp_area: Vec<usize> = gp.iter().map(Mask::area).collect();
        let group_iou = iou_matrix(&g_inter, &gf_area, &gp_area);

        let best_part: Vec<Option<usize>> = group_iou.iter().map(|row| argmax(row)).collect();
        let best_factor: Vec<Option<usize>> = (0..gp.len())
            .map(|b| argmax(&group_iou.iter().map(|row| row[b]).collect::<Vec<_>>()))
            .collect();
        let mut matches = Vec::new();
        for (a, bp) in best_part.iter().enumerate() {
            if let Some(b) = *bp {
                if best_factor[b] == Some(a) && group_iou[a][b] > 0.0 {
                    matches.push(PartMatch {
                        factor_group: a,
                        part_group: b,
                        iou: group_iou[a][b],
                    });
                }
            }
        }
        Ok(PartMatching {
            iou,
            factor_groups,
            part_groups,
            group_iou,
            matches,
        })
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    num as f64 / den as f64
}

/// `out[i][j] = |a_i ∩ b_j|`, visiting each foreground pixel of each `b_j` once.
fn intersections(a: &[Mask], b: &[Mask]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![0usize; b.len()]; a.len()];
    for (j, bm) in b.iter().enumerate() {
        for (p, _) in bm.bits().iter().enumerate().filter(|(_, &on)| on) {
            for (i, am) in a.iter().enumerate() {
                if am.bits()[p] {
                    out[i][j] += 1;
                }
            }
        }
    }
    out
}

fn iou_matrix(inter: &[Vec<usize>], a_area: &[usize], b_area: &[usize]) -> Vec<Vec<f64>> {
    inter
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(|(j, &n)| {
                    let union = a_area[i] + b_area[j] - n;
                    if union == 0 {
                        0.0
                    } else {
                        ratio(n, union)
                    }
                })
                .collect()
        })
        .collect()
}

/// Index of the largest value (first on a tie); `None` for an empty slice.
fn argmax(v: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &x) in v.iter().enumerate() {
        if best.is_none_or(|b| x > v[b]) {
            best = Some(i);
        }
    }
    best
}

fn group_masks(masks: &[Mask], groups: &[Vec<usize>]) -> Result<Vec<Mask>> {
    groups
        .iter()
        .map(|g| {
            let mut m = masks[g[0]].clone();
            for &i in &g[1..] {
                m = m.union(&masks[i])?;
            }
            Ok(m)
        })
        .collect()
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // Keep the smaller index as root so groups are ordered by first member.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi] = lo;
        }
    }

    /// Groups of indices (each sorted), ordered by smallest member.
    fn groups(&mut self) -> Vec<Vec<usize>> {
        let n = self.parent.len();
        let mut by_root: Vec<Vec<usize>> = vec![Vec::new(); n];
        for i in 0..n {
            let r = self.find(i);
            by_root[r].push(i);
        }
        let mut groups: Vec<Vec<usize>> = by_root.into_iter().filter(|g| !g.is_empty()).collect();
        groups.sort_by_key(|g| g[0]);
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_find_groups() {
        let mut u = UnionFind::new(5);
        u.union(3, 1);
        u.union(4, 3);
        assert_eq!(u.groups(), vec![vec![0], vec![1, 3, 4], vec![2]]);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[0.5, 0.5, 0.1]), Some(0));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn thresholds_are_validated() {
        assert!(PartMatcher::builder()
            .factor_merge_threshold(0.0)
            .build()
            .is_err());
        assert!(PartMatcher::builder()
            .part_merge_threshold(1.5)
            .build()
            .is_err());
        assert!(PartMatcher::builder()
            .factor_merge_threshold(f64::NAN)
            .build()
            .is_err());
        assert!(PartMatcher::builder()
            .part_merge_threshold(1.0)
            .build()
            .is_ok());
    }
}
