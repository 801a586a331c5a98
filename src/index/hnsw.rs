//! HNSW graphs (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search
//! using Hierarchical Navigable Small World graphs", TPAMI 2018).
//!
//! [`FlatGraph::build`] builds a graph in parallel straight into fixed-stride `u32` arrays
//! (the `build` submodule) that a segment stores as raw sections, and we search those arrays
//! directly (from memory or a memory map) with our own beam search. [`build_hnsw`] and
//! [`FlatGraph::from_hnsw`], the former build path through `hnsw_rs` (with a distance of our
//! own, [`ClampedDot`]), stay as the baseline the bench measures against. Every link read from a file is range-checked as it is
//! followed, so a damaged graph gives worse results, never a panic.

use super::exact::{Cand, Scorer, TopK, Vectors};
use crate::{Error, Result};
use hnsw_rs::prelude::{Distance, Hnsw};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

mod build;
pub use build::PARALLEL_MIN_ROWS;

/// Default links per node in the upper layers (`m`); layer 0 keeps `2·m`.
pub const DEFAULT_M: usize = 16;
/// Default beam width while building (`ef_construction`).
pub const DEFAULT_EF_CONSTRUCTION: usize = 100;
/// Default beam width while searching (`ef_search`): 160, the smallest width measured to
/// give recall@10 ≥ 0.98 on a 1M × 512 graph (clustered synthetic vectors, `m` 16,
/// `ef_construction` 100: 0.977 at 128, 0.99 at 160, f32 and f16 alike) with p99 under 2 ms
/// on one thread; smaller graphs reach ≥ 0.998 from 64 on (real descriptors and concept
/// vectors ≥ 0.999), so one width serves every segment size.
pub const DEFAULT_EF_SEARCH: usize = 160;
/// Most layers a stored graph may have.
pub const MAX_LEVELS: usize = 16;
/// Largest `m` accepted (hnsw_rs allows at most 256 links in layer 0, i.e. `2·m ≤ 256`).
pub const MAX_M: usize = 128;
/// Marks an empty link slot.
pub(crate) const NO_LINK: u32 = u32::MAX;

/// Distance `1 − a·b`, clamped to `[0, 2]`: the cosine distance of unit vectors, robust to
/// rounding that pushes `a·b` slightly above 1 (hnsw_rs's own `DistDot` asserts on that).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClampedDot;

impl Distance<f32> for ClampedDot {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        let d = 1.0 - super::exact::dot(va, vb);
        // `d > 0.0` is false for NaN, which therefore maps to 0.
        if d > 0.0 {
            d.min(2.0)
        } else {
            0.0
        }
    }
}

/// Builds an hnsw_rs graph over `vectors` (`rows × dim`, row-major; rows become data ids
/// `0..rows`), inserting in parallel: the former build path, kept as the bench's baseline
/// (the index builds with [`FlatGraph::build`]).
pub fn build_hnsw(
    vectors: &[f32],
    dim: usize,
    m: usize,
    ef_construction: usize,
) -> Result<Hnsw<'_, f32, ClampedDot>> {
    check_params(m, ef_construction)?;
    if dim == 0 || !vectors.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "hnsw: {} values are not rows of {dim}",
            vectors.len()
        )));
    }
    let rows = vectors.len() / dim;
    let hnsw = Hnsw::new(m, rows.max(1), MAX_LEVELS, ef_construction, ClampedDot);
    let data: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..rows).collect();
    hnsw.parallel_insert_slice(&data);
    Ok(hnsw)
}

/// Checks graph parameters.
pub(crate) fn check_params(m: usize, ef_construction: usize) -> Result<()> {
    if !(2..=MAX_M).contains(&m) {
        return Err(Error::invalid(format!(
            "hnsw: m = {m} is outside 2..={MAX_M}"
        )));
    }
    if ef_construction < m || ef_construction > 10_000 {
        return Err(Error::invalid(format!(
            "hnsw: ef_construction = {ef_construction} must be between m = {m} and 10000"
        )));
    }
    Ok(())
}

/// An HNSW graph as flat arrays: layer 0 with `m0` slots per row, then for each upper layer
/// the sorted rows it holds and `m` slots per such row. Empty slots hold `u32::MAX` and
/// come after the used ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatGraph {
    pub(crate) rows: usize,
    pub(crate) m0: usize,
    pub(crate) m: usize,
    pub(crate) entry: u32,
    pub(crate) layer0: Vec<u32>,
    pub(crate) layer_sizes: Vec<u32>,
    pub(crate) upper_nodes: Vec<u32>,
    pub(crate) upper_links: Vec<u32>,
}

impl FlatGraph {
    /// Builds the graph of `vectors` (`rows × dim`, row-major, unit length; rows become
    /// rows `0..rows` of the graph) with `m` links per node in the upper layers (`2·m` in
    /// layer 0) and beam width `ef_construction`, inserting in parallel on the current rayon
    /// pool for [`PARALLEL_MIN_ROWS`] rows or more (see the `build` module).
    pub fn build(
        vectors: &[f32],
        dim: usize,
        m: usize,
        ef_construction: usize,
    ) -> Result<FlatGraph> {
        FlatGraph::build_rows(Vectors::F32(vectors, dim), m, ef_construction)
    }

    /// As [`FlatGraph::build`] for f16 rows (an f16 index's stored descriptors): the graph
    /// is built on exactly these values, scored by the fused f16 kernel, without an f32 copy.
    pub fn build_f16(
        vectors: &[half::f16],
        dim: usize,
        m: usize,
        ef_construction: usize,
    ) -> Result<FlatGraph> {
        FlatGraph::build_rows(Vectors::F16(vectors, dim), m, ef_construction)
    }

    /// As [`FlatGraph::build`] for rows in either encoding.
    pub(crate) fn build_rows(
        vectors: Vectors<'_>,
        m: usize,
        ef_construction: usize,
    ) -> Result<FlatGraph> {
        check_params(m, ef_construction)?;
        let dim = match vectors {
            Vectors::F32(_, d) | Vectors::F16(_, d) => d,
        };
        if dim == 0 || !vectors.values().is_multiple_of(dim) {
            return Err(Error::invalid(format!(
                "hnsw: {} values are not rows of {dim}",
                vectors.values()
            )));
        }
        if vectors.rows() > NO_LINK as usize {
            return Err(Error::invalid("hnsw: too many rows for 32-bit links"));
        }
        Ok(build::build(vectors, dim, m, ef_construction))
    }

    /// Flattens an hnsw_rs graph whose data ids are rows `0..rows`.
    pub fn from_hnsw(hnsw: &Hnsw<'_, f32, ClampedDot>, rows: usize) -> Result<FlatGraph> {
        let m = hnsw.get_max_nb_connection() as usize;
        let m0 = 2 * m;
        let top = hnsw.get_max_level_observed() as usize;
        if top >= MAX_LEVELS {
            return Err(Error::invalid(format!(
                "hnsw: graph has {} layers, more than {MAX_LEVELS}",
                top + 1
            )));
        }
        let mut layer0 = vec![NO_LINK; rows * m0];
        // For each upper layer, (row, links) of the rows it holds.
        let mut upper: Vec<Vec<(u32, Vec<u32>)>> = vec![Vec::new(); top];
        let mut seen = vec![false; rows];
        let mut entry = None;
        for p in hnsw.get_point_indexation() {
            let row = p.get_origin_id();
            if row >= rows {
                return Err(Error::invalid(format!(
                    "hnsw: data id {row} is not a row below {rows}"
                )));
            }
            seen[row] = true;
            let level = p.get_point_id().0 as usize;
            let hood = p.get_neighborhood_id();
            for (l, links) in hood.iter().enumerate().take(level.min(top) + 1) {
                let ids: Vec<u32> = links
                    .iter()
                    .map(|n| n.d_id)
                    .filter(|&d| d < rows && d != row)
                    .map(|d| d as u32)
                    .collect();
                if l == 0 {
                    for (slot, id) in layer0[row * m0..(row + 1) * m0].iter_mut().zip(&ids) {
                        *slot = *id;
                    }
                } else {
                    let mut v = vec![NO_LINK; m];
                    for (slot, id) in v.iter_mut().zip(&ids) {
                        *slot = *id;
                    }
                    upper[l - 1].push((row as u32, v));
                }
            }
            if level == top && entry.is_none_or(|e| row < e) {
                entry = Some(row);
            }
        }
        if rows > 0 && !seen.iter().all(|&s| s) {
            return Err(Error::invalid("hnsw: the graph does not hold every row"));
        }
        let mut layer_sizes = Vec::with_capacity(top);
        let mut upper_nodes = Vec::new();
        let mut upper_links = Vec::new();
        for mut layer in upper {
            layer.sort_by_key(|(r, _)| *r);
            layer_sizes.push(layer.len() as u32);
            for (r, links) in layer {
                upper_nodes.push(r);
                upper_links.extend_from_slice(&links);
            }
        }
        // Keep only the links that point into the same layer, so that every stored link
        // can be followed.
        let mut g = FlatGraph {
            rows,
            m0,
            m,
            entry: entry.unwrap_or(0) as u32,
            layer0,
            layer_sizes,
            upper_nodes,
            upper_links,
        };
        g.drop_links_outside_layers();
        Ok(g)
    }

    fn drop_links_outside_layers(&mut self) {
        let mut start = 0usize;
        for &size in &self.layer_sizes {
            let size = size as usize;
            let nodes = self.upper_nodes[start..start + size].to_vec();
            for i in 0..size {
                let slots = &mut self.upper_links[(start + i) * self.m..(start + i + 1) * self.m];
                let kept: Vec<u32> = slots
                    .iter()
                    .copied()
                    .filter(|&l| l != NO_LINK && nodes.binary_search(&l).is_ok())
                    .collect();
                for (j, s) in slots.iter_mut().enumerate() {
                    *s = kept.get(j).copied().unwrap_or(NO_LINK);
                }
            }
            start += size;
        }
    }

    /// Mean number of links per row in layer 0.
    pub fn mean_links0(&self) -> f64 {
        let used = self.layer0.iter().filter(|&&l| l != NO_LINK).count();
        used as f64 / self.rows.max(1) as f64
    }

    /// Number of layers, layer 0 included.
    pub fn levels(&self) -> usize {
        self.layer_sizes.len() + 1
    }

    /// Borrowed view for searching.
    pub(crate) fn view(&self) -> GraphRef<'_> {
        GraphRef::new(
            self.rows,
            self.m0,
            self.m,
            self.entry,
            &self.layer0,
            &self.layer_sizes,
            &self.upper_nodes,
            &self.upper_links,
        )
    }

    /// Searches the graph over `vectors` (`rows × dim` f32, the vectors it was built from)
    /// with beam width `ef`; returns `(row, score)` of the best `k`, best first.
    pub fn search(
        &self,
        vectors: &[f32],
        dim: usize,
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<(u32, f32)> {
        self.view()
            .search(Vectors::F32(vectors, dim), &[], query, k, ef)
            .into_iter()
            .map(|c| (c.row, c.score))
            .collect()
    }
}

/// A graph borrowed from flat arrays (a segment's sections or a [`FlatGraph`]).
#[derive(Clone, Copy)]
pub(crate) struct GraphRef<'a> {
    rows: usize,
    m0: usize,
    m: usize,
    entry: u32,
    layer0: &'a [u32],
    upper_nodes: &'a [u32],
    upper_links: &'a [u32],
    /// `starts[l]..starts[l + 1]` are the positions of upper layer `l + 1` in `upper_nodes`.
    starts: [usize; MAX_LEVELS + 1],
    upper: usize,
}

impl<'a> GraphRef<'a> {
    /// A view; the arrays' sizes must have been checked (see the segment reader), but their
    /// contents need not be.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rows: usize,
        m0: usize,
        m: usize,
        entry: u32,
        layer0: &'a [u32],
        layer_sizes: &[u32],
        upper_nodes: &'a [u32],
        upper_links: &'a [u32],
    ) -> GraphRef<'a> {
        let mut starts = [0usize; MAX_LEVELS + 1];
        let upper = layer_sizes.len().min(MAX_LEVELS - 1);
        for (l, &s) in layer_sizes.iter().take(upper).enumerate() {
            starts[l + 1] = starts[l] + s as usize;
        }
        GraphRef {
            rows,
            m0,
            m,
            entry,
            layer0,
            upper_nodes,
            upper_links,
            starts,
            upper,
        }
    }

    /// The used link slots of `row` in layer 0.
    #[inline]
    fn links0(&self, row: usize) -> &'a [u32] {
        let s = self
            .layer0
            .get(row * self.m0..(row + 1) * self.m0)
            .unwrap_or(&[]);
        let used = s.iter().position(|&l| l == NO_LINK).unwrap_or(s.len());
        &s[..used]
    }

    /// The used link slots of `row` in upper layer `l` (1-based), empty if it is not there.
    #[inline]
    fn links_up(&self, l: usize, row: u32) -> &'a [u32] {
        if l == 0 || l > self.upper {
            return &[];
        }
        let (a, b) = (self.starts[l - 1], self.starts[l]);
        let Some(nodes) = self.upper_nodes.get(a..b) else {
            return &[];
        };
        let Ok(i) = nodes.binary_search(&row) else {
            return &[];
        };
        let s = self
            .upper_links
            .get((a + i) * self.m..(a + i + 1) * self.m)
            .unwrap_or(&[]);
        let used = s.iter().position(|&l| l == NO_LINK).unwrap_or(s.len());
        &s[..used]
    }

    /// Beam search: greedy descent through the upper layers, then a beam of width
    /// `max(ef, k)` in layer 0. Deleted rows (`deleted` bitset) are followed but not
    /// returned. Returns the best `k`, best first.
    pub fn search(
        &self,
        vectors: Vectors<'_>,
        deleted: &[u64],
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<Cand> {
        let n = self.rows.min(vectors.rows());
        if n == 0 || k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        let mut cur = if (self.entry as usize) < n {
            self.entry
        } else {
            0
        };
        let mut scorer = Scorer::new(vectors, query);
        let mut cur_s = scorer.score(cur as usize);
        for l in (1..=self.upper).rev() {
            loop {
                let mut moved = false;
                for &nb in self.links_up(l, cur) {
                    if nb as usize >= n {
                        continue;
                    }
                    let s = scorer.score(nb as usize);
                    if s > cur_s {
                        cur = nb;
                        cur_s = s;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            visited.reset(n);
            let mut cands: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef * 4);
            let mut top: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef + 1);
            let mut fresh: Vec<u32> = Vec::with_capacity(self.m0);
            visited.insert(cur as usize);
            let c0 = Cand {
                score: cur_s,
                row: cur,
            };
            cands.push(c0);
            if !super::exact::is_set(deleted, cur as usize) && !cur_s.is_nan() {
                top.push(Reverse(c0));
            }
            while let Some(c) = cands.pop() {
                if top.len() >= ef {
                    if let Some(Reverse(w)) = top.peek() {
                        if c.score < w.score {
                            break;
                        }
                    }
                }
                // The unvisited links first, so that the next one's row is prefetched
                // while this one's is scored.
                fresh.clear();
                fresh.extend(
                    self.links0(c.row as usize)
                        .iter()
                        .copied()
                        .filter(|&nb| (nb as usize) < n && visited.insert(nb as usize)),
                );
                if let Some(&first) = fresh.first() {
                    scorer.prefetch(first as usize);
                }
                for (i, &nb) in fresh.iter().enumerate() {
                    let nbu = nb as usize;
                    if let Some(&next) = fresh.get(i + 1) {
                        scorer.prefetch(next as usize);
                    }
                    let s = scorer.score(nbu);
                    if s.is_nan() {
                        continue;
                    }
                    let worse =
                        top.len() >= ef && top.peek().is_some_and(|Reverse(w)| s <= w.score);
                    if worse {
                        continue;
                    }
                    let cand = Cand { score: s, row: nb };
                    cands.push(cand);
                    if !super::exact::is_set(deleted, nbu) {
                        top.push(Reverse(cand));
                        if top.len() > ef {
                            top.pop();
                        }
                    }
                }
            }
            let mut best = TopK::new(k);
            for Reverse(c) in top {
                best.push(c);
            }
            best.into_sorted()
        })
    }
}

/// Per-thread visited marks, reused across searches: a mark equal to the current epoch
/// means visited.
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Marks `i`; true if it was not marked before.
    #[inline]
    fn insert(&mut self, i: usize) -> bool {
        match self.marks.get_mut(i) {
            Some(m) if *m != self.epoch => {
                *m = self.epoch;
                true
            }
            _ => false,
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { marks: Vec::new(), epoch: 0 }) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamped_dot_never_negative_or_nan() {
        let a = [0.6f32, 0.8];
        assert_eq!(ClampedDot.eval(&a, &a), 0.0);
        let big = [1.0f32, 1.0];
        assert_eq!(ClampedDot.eval(&big, &big), 0.0);
        assert_eq!(ClampedDot.eval(&[f32::NAN, 0.0], &a), 0.0);
        assert_eq!(ClampedDot.eval(&[-1.0, 0.0], &[1.0, 0.0]), 2.0);
    }

    /// Unit rows of pseudo-random values (a hash of row and column), in 20 clusters.
    fn rows(rows: usize, dim: usize) -> Vec<f32> {
        let u = |x: u64| {
            let mut z = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((z ^ (z >> 29)) >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let mut v = Vec::new();
        for r in 0..rows {
            let c = (r % 20) as u64;
            let row: Vec<f32> = (0..dim as u64)
                .map(|j| u(c << 32 | j) + 0.5 * u((r as u64) << 20 | j | 1 << 62))
                .collect();
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.extend(row.iter().map(|x| x / n));
        }
        v
    }

    /// Fraction of `queries` rows that find themselves first at beam width `ef`.
    fn self_hits(
        g: &FlatGraph,
        v: &[f32],
        dim: usize,
        ef: usize,
        queries: impl Iterator<Item = usize>,
    ) -> f64 {
        let (mut hits, mut n) = (0, 0);
        for r in queries {
            let q = &v[r * dim..(r + 1) * dim];
            if g.search(v, dim, q, 1, ef).first().map(|x| x.0) == Some(r as u32) {
                hits += 1;
            }
            n += 1;
        }
        hits as f64 / n as f64
    }

    /// Every link is a row, no row links to itself or twice to another, used slots come
    /// first, every row has a link.
    fn check_links(g: &FlatGraph) {
        for r in 0..g.rows {
            let s = &g.layer0[r * g.m0..(r + 1) * g.m0];
            let used = s.iter().position(|&l| l == NO_LINK).unwrap_or(s.len());
            assert!(used > 0 || g.rows == 1, "row {r} has no link");
            assert!(s[used..].iter().all(|&l| l == NO_LINK));
            let mut l: Vec<u32> = s[..used].to_vec();
            assert!(l.iter().all(|&x| (x as usize) < g.rows && x as usize != r));
            l.sort_unstable();
            l.dedup();
            assert_eq!(l.len(), used, "row {r} links twice to a row");
        }
    }

    #[test]
    fn flat_graph_finds_itself() {
        let (dim, n) = (8, 300);
        let v = rows(n, dim);
        let g = FlatGraph::build(&v, dim, 8, 64).unwrap();
        assert_eq!(g.layer0.len(), n * 16);
        check_links(&g);
        let hits = self_hits(&g, &v, dim, 32, 0..n);
        assert!(hits >= 0.98, "{hits}");
        // Below PARALLEL_MIN_ROWS the build is sequential: the same graph every time.
        assert_eq!(g, FlatGraph::build(&v, dim, 8, 64).unwrap());
        // The former path (hnsw_rs), on one thread so that it is deterministic too.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let h = one.install(|| build_hnsw(&v, dim, 8, 64)).unwrap();
        let old = FlatGraph::from_hnsw(&h, n).unwrap();
        check_links(&old);
        let hits = self_hits(&old, &v, dim, 32, 0..n);
        assert!(hits >= 0.98, "{hits}");
    }

    #[test]
    fn parallel_build_finds_itself() {
        let (dim, n) = (16, PARALLEL_MIN_ROWS + 1000);
        let v = rows(n, dim);
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let g = two.install(|| FlatGraph::build(&v, dim, 16, 64)).unwrap();
        check_links(&g);
        assert!(g.levels() >= 2);
        let hits = self_hits(&g, &v, dim, 64, (0..n).step_by(41));
        assert!(hits >= 0.98, "{hits}");
    }

    #[test]
    fn f16_graph_finds_itself_and_equals_the_graph_of_the_rounded_rows() {
        let (dim, n) = (24, 400);
        let v = rows(n, dim);
        let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
        let rounded: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let g = one
            .install(|| FlatGraph::build_f16(&h, dim, 8, 64))
            .unwrap();
        check_links(&g);
        // Searched over the f16 rows themselves, each row finds itself.
        let (mut hits, view) = (0, g.view());
        for r in 0..n {
            let q = &rounded[r * dim..(r + 1) * dim];
            let found = view.search(Vectors::F16(&h, dim), &[], q, 1, 32);
            hits += usize::from(found.first().map(|c| c.row) == Some(r as u32));
        }
        assert!(hits as f64 / n as f64 >= 0.98, "{hits} of {n}");
        // Built on one thread, the graph over the f16 rows is the graph over their f32
        // values but for float rounding in the dot products: nearly every link agrees.
        let f = one
            .install(|| FlatGraph::build(&rounded, dim, 8, 64))
            .unwrap();
        let same = g
            .layer0
            .iter()
            .zip(&f.layer0)
            .filter(|(a, b)| a == b)
            .count();
        assert!(
            same as f64 >= 0.95 * g.layer0.len() as f64,
            "{same} of {}",
            g.layer0.len()
        );
    }
}
