//! Our own HNSW construction, straight into the flat arrays a segment stores.
//!
//! The algorithm is the paper's: each row draws a level from a geometric law of ratio
//! `1/m` (from a hash of the row, so levels never depend on threads); an insertion descends
//! greedily from the entry point to its level, then, layer by layer, runs a beam search of
//! width `ef_construction` and keeps up to `m` neighbours (`2·m` in layer 0) chosen by the
//! diversity heuristic (a candidate is kept only if it is more similar to the new row than
//! to every neighbour already kept). Each kept neighbour links back; a full list keeps its
//! most similar links, as hnsw_rs does. Re-running the heuristic on a full list, as hnswlib
//! does, cost about 16 × 200 dot products per insertion and gave lower recall per visited
//! node on real NMF concept vectors; the similarity of every link is kept while building, so
//! updating a full list needs no dot product at all.
//!
//! Why not hnsw_rs (which built the graphs before): it keeps 24-byte neighbour records
//! behind per-point locks, reference counts and a copy of every vector, and ran at
//! 250–430 insertions/s on 2 threads; here a link is a `u32` in a fixed-stride array of
//! atomics (the layout [`FlatGraph`] stores), a descriptor is read in place, and dot products
//! run in SIMD (AVX2/AVX-512 picked at run time by `pulp`): 4–5× fewer CPU seconds for the
//! same parameters, and the same recall (`cargo bench --bench deepfactor -- index`).
//!
//! Parallelism: the threads of the current rayon pool take rows from a shared counter.
//! Link lists are read without locks (atomics: a reader racing a writer sees some mix of old
//! and new links, each a valid row, as in hnswlib) and written under a per-row mutex.
//! With one thread, or fewer than [`PARALLEL_MIN_ROWS`] rows, rows are inserted in order and
//! the graph is a pure function of the input; with more threads the order of insertion, and
//! so the graph, varies from run to run — its recall does not measurably, which is what the
//! tests check.

use super::{FlatGraph, Visited, MAX_LEVELS, NO_LINK};
use crate::index::exact::{Cand, Vectors};
use crate::index::simd::{dot_f32 as simd_dot, F16Dot};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Below this many rows the graph is built on one thread, so that small segments (and the
/// tests) get the same graph on every run.
pub const PARALLEL_MIN_ROWS: usize = 20_000;

/// A graph under construction over `rows × dim` vectors.
struct Builder<'a> {
    vectors: Vectors<'a>,
    dim: usize,
    rows: usize,
    m: usize,
    m0: usize,
    ef: usize,
    kernel: F16Dot,
    levels: Vec<u8>,
    /// Layer 0: `m0` slots per row, used slots first, then [`NO_LINK`].
    layer0: Vec<AtomicU32>,
    /// For a row above layer 0, where its upper slots start in `upper` (`m` per layer,
    /// layer 1 first); [`NO_LINK`] otherwise.
    upper_at: Vec<u32>,
    upper: Vec<AtomicU32>,
    locks: Vec<Mutex<()>>,
    /// Entry row and its level.
    entry: Mutex<(u32, usize)>,
    /// Held through the insertion of a row that becomes the new entry.
    grow: Mutex<()>,
}

thread_local! {
    /// A row converted to f32 (f16 rows), for [`Builder::link_back`].
    static ROW_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUILD_VISITED: RefCell<Visited> =
        const { RefCell::new(Visited { marks: Vec::new(), epoch: 0 }) };
}

/// Level of `row`: ⌊−ln(u)/ln(m)⌋ with `u` uniform in (0, 1] from a hash of the row, so the
/// levels are the same on every run.
fn draw_level(row: usize, m: usize) -> usize {
    // splitmix64
    let mut z = (row as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let l = (-u.ln() / (m as f64).ln()).floor();
    (l as usize).min(MAX_LEVELS - 1)
}

/// Locks `m`, going on if another thread panicked while holding it (the data it guards is
/// `()`; the link lists stay valid rows whatever happened).
fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<'a> Builder<'a> {
    fn new(vectors: Vectors<'a>, dim: usize, m: usize, ef: usize) -> Builder<'a> {
        let rows = vectors.rows();
        let m0 = 2 * m;
        let levels: Vec<u8> = (0..rows).map(|r| draw_level(r, m) as u8).collect();
        let mut upper_at = vec![NO_LINK; rows];
        let mut at = 0usize;
        for (r, &l) in levels.iter().enumerate() {
            if l > 0 {
                upper_at[r] = at as u32;
                at += l as usize * m;
            }
        }
        Builder {
            vectors,
            dim,
            rows,
            m,
            m0,
            ef,
            kernel: F16Dot::new(),
            levels,
            layer0: (0..rows * m0).map(|_| AtomicU32::new(NO_LINK)).collect(),
            upper_at,
            upper: (0..at).map(|_| AtomicU32::new(NO_LINK)).collect(),
            locks: (0..rows).map(|_| Mutex::new(())).collect(),
            entry: Mutex::new((0, 0)),
            grow: Mutex::new(()),
        }
    }

    #[inline]
    fn row<'b>(&'b self, r: u32, buf: &'b mut Vec<f32>) -> &'b [f32] {
        row_f32(self.vectors, self.dim, r as usize, buf)
    }

    #[inline]
    fn sim(&self, q: &[f32], r: u32) -> f32 {
        sim_to(self.vectors, self.dim, self.kernel, q, r as usize)
    }

    /// The slots of `row` in `layer`.
    #[inline]
    fn slots(&self, row: u32, layer: usize) -> &[AtomicU32] {
        let r = row as usize;
        if layer == 0 {
            &self.layer0[r * self.m0..(r + 1) * self.m0]
        } else {
            let a = self.upper_at[r] as usize + (layer - 1) * self.m;
            &self.upper[a..a + self.m]
        }
    }

    /// Greedy walk in `layer` from `cur`: moves to the best neighbour while one is better.
    fn greedy(&self, q: &[f32], mut cur: u32, mut cur_s: f32, layer: usize) -> (u32, f32) {
        loop {
            let mut moved = false;
            for slot in self.slots(cur, layer) {
                let nb = slot.load(Relaxed);
                if nb == NO_LINK {
                    break;
                }
                let s = self.sim(q, nb);
                if s > cur_s {
                    cur = nb;
                    cur_s = s;
                    moved = true;
                }
            }
            if !moved {
                return (cur, cur_s);
            }
        }
    }

    /// Beam search of width `ef` in `layer` from `ep`; returns the best found, best first,
    /// without `skip` (the row being inserted).
    fn search_layer(
        &self,
        q: &[f32],
        ep: Cand,
        layer: usize,
        skip: u32,
        visited: &mut Visited,
    ) -> Vec<Cand> {
        visited.reset(self.rows);
        visited.insert(ep.row as usize);
        visited.insert(skip as usize);
        let mut cands: BinaryHeap<Cand> = BinaryHeap::with_capacity(self.ef * 4);
        let mut top: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(self.ef + 1);
        cands.push(ep);
        if ep.row != skip {
            top.push(Reverse(ep));
        }
        while let Some(c) = cands.pop() {
            if top.len() >= self.ef && top.peek().is_some_and(|Reverse(w)| c.score < w.score) {
                break;
            }
            for slot in self.slots(c.row, layer) {
                let nb = slot.load(Relaxed);
                if nb == NO_LINK {
                    break;
                }
                if !visited.insert(nb as usize) {
                    continue;
                }
                let s = self.sim(q, nb);
                if top.len() >= self.ef && top.peek().is_some_and(|Reverse(w)| s <= w.score) {
                    continue;
                }
                let cand = Cand { score: s, row: nb };
                cands.push(cand);
                top.push(Reverse(cand));
                if top.len() > self.ef {
                    top.pop();
                }
            }
        }
        let mut v: Vec<Cand> = top.into_iter().map(|Reverse(c)| c).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }

    /// The diversity heuristic: from `cands` (best first, scored against the base), keeps
    /// up to `max` rows, each closer to the base than to any row kept before it.
    fn select(&self, cands: &[Cand], max: usize) -> Vec<Cand> {
        let mut kept: Vec<Cand> = Vec::with_capacity(max);
        let mut buf = Vec::new();
        for &c in cands {
            if kept.len() >= max {
                break;
            }
            if kept.is_empty() {
                kept.push(c);
                continue;
            }
            let v = self.row(c.row, &mut buf);
            if kept.iter().all(|k| self.sim(v, k.row) < c.score) {
                kept.push(c);
            }
        }
        kept
    }

    /// Adds `new`, of similarity `sim` to `row`, to the links of `row` in `layer`; a full
    /// list keeps its `max` most similar links (hnsw_rs's rule: measured here to give better
    /// recall per visited node than re-running the heuristic). The similarities of a full
    /// list are recomputed (one dot product per link, the same values the searches had
    /// computed): keeping them beside the links cost 4 bytes per slot, an eighth of a
    /// 512-d f16 row's graph-build memory budget.
    fn link_back(&self, row: u32, new: u32, sim: f32, layer: usize) {
        let _g = lock(&self.locks[row as usize]);
        let slots = self.slots(row, layer);
        for slot in slots {
            let l = slot.load(Relaxed);
            if l == new {
                return;
            }
            if l == NO_LINK {
                slot.store(new, Relaxed);
                return;
            }
        }
        let worst = ROW_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let v = self.row(row, &mut buf);
            let mut worst = (f32::INFINITY, slots.len());
            for (i, slot) in slots.iter().enumerate() {
                let s = self.sim(v, slot.load(Relaxed));
                if s < worst.0 {
                    worst = (s, i);
                }
            }
            worst
        });
        if sim > worst.0 {
            slots[worst.1].store(new, Relaxed);
        }
    }

    fn insert(&self, row: u32, visited: &mut Visited) {
        let level = self.levels[row as usize] as usize;
        let (mut ep, mut top) = *lock_entry(&self.entry);
        let _grow = if level > top {
            let g = lock(&self.grow);
            (ep, top) = *lock_entry(&self.entry);
            Some(g)
        } else {
            None
        };
        let mut qbuf = Vec::new();
        let q = self.row(row, &mut qbuf);
        let mut cur = Cand {
            score: self.sim(q, ep),
            row: ep,
        };
        for l in (level + 1..=top).rev() {
            let (r, s) = self.greedy(q, cur.row, cur.score, l);
            cur = Cand { score: s, row: r };
        }
        for l in (0..=level.min(top)).rev() {
            let found = self.search_layer(q, cur, l, row, visited);
            if let Some(&best) = found.first() {
                cur = best;
            }
            let max = if l == 0 { self.m0 } else { self.m };
            let kept = self.select(&found, max);
            {
                let _g = lock(&self.locks[row as usize]);
                let slots = self.slots(row, l);
                for (i, l) in slots.iter().enumerate() {
                    l.store(kept.get(i).map_or(NO_LINK, |c| c.row), Relaxed);
                }
            }
            for c in &kept {
                self.link_back(c.row, row, c.score, l);
            }
        }
        if level > top {
            *lock_entry(&self.entry) = (row, level);
        }
    }

    fn into_flat(self) -> FlatGraph {
        let (entry, top) = *lock_entry(&self.entry);
        // Each list most similar first, as hnsw_rs keeps them: a search then fills its beam
        // with the best links of a row first and pushes fewer of the others.
        let m0 = self.m0;
        let mut layer0: Vec<u32> = self.layer0.into_iter().map(AtomicU32::into_inner).collect();
        let (vectors, dim, kernel) = (self.vectors, self.dim, self.kernel);
        let sort = |r: usize, list: &mut [u32], buf: &mut Vec<f32>| {
            sort_list(vectors, dim, kernel, r, list, buf)
        };
        layer0
            .par_chunks_mut(m0.max(1))
            .enumerate()
            .for_each_init(Vec::new, |buf, (r, list)| sort(r, list, buf));
        let mut upper: Vec<u32> = self.upper.into_iter().map(AtomicU32::into_inner).collect();
        let mut buf = Vec::new();
        for (r, &lv) in self.levels.iter().enumerate() {
            for l in 1..=lv as usize {
                let at = self.upper_at[r] as usize + (l - 1) * self.m;
                sort(r, &mut upper[at..at + self.m], &mut buf);
            }
        }
        let mut layer_sizes = Vec::with_capacity(top);
        let mut upper_nodes = Vec::new();
        let mut upper_links = Vec::new();
        for l in 1..=top {
            let mut size = 0u32;
            for (r, &lv) in self.levels.iter().enumerate() {
                if lv as usize >= l {
                    size += 1;
                    upper_nodes.push(r as u32);
                    let at = self.upper_at[r] as usize + (l - 1) * self.m;
                    upper_links.extend_from_slice(&upper[at..at + self.m]);
                }
            }
            layer_sizes.push(size);
        }
        FlatGraph {
            rows: self.rows,
            m0: self.m0,
            m: self.m,
            entry,
            layer0,
            layer_sizes,
            upper_nodes,
            upper_links,
        }
    }
}

/// Row `r` as f32: in place for f32 rows, converted into `buf` for f16 ones.
#[inline]
fn row_f32<'b>(vectors: Vectors<'b>, dim: usize, r: usize, buf: &'b mut Vec<f32>) -> &'b [f32] {
    let at = r * dim..(r + 1) * dim;
    match vectors {
        Vectors::F32(v, _) => &v[at],
        Vectors::F16(v, _) => {
            buf.resize(dim, 0.0);
            v[at].convert_to_f32_slice(buf);
            buf
        }
    }
}

/// Similarity of the f32 vector `q` to row `r` (f16 rows scored by the fused kernel).
#[inline]
fn sim_to(vectors: Vectors<'_>, dim: usize, kernel: F16Dot, q: &[f32], r: usize) -> f32 {
    let at = r * dim..(r + 1) * dim;
    match vectors {
        Vectors::F32(v, _) => simd_dot(kernel.arch(), q, &v[at]),
        Vectors::F16(v, _) => kernel.dot(&v[at], q),
    }
}

/// Sorts the links of row `r` (used slots first) by decreasing similarity to it.
fn sort_list(
    vectors: Vectors<'_>,
    dim: usize,
    kernel: F16Dot,
    r: usize,
    list: &mut [u32],
    buf: &mut Vec<f32>,
) {
    let used = list
        .iter()
        .position(|&l| l == NO_LINK)
        .unwrap_or(list.len());
    let q = row_f32(vectors, dim, r, buf);
    let mut pairs: Vec<(f32, u32)> = list[..used]
        .iter()
        .map(|&l| (sim_to(vectors, dim, kernel, q, l as usize), l))
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (slot, p) in list.iter_mut().zip(&pairs) {
        *slot = p.1;
    }
}

fn lock_entry(m: &Mutex<(u32, usize)>) -> std::sync::MutexGuard<'_, (u32, usize)> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds the graph of `vectors` (`rows × dim`, row-major, unit length); see the module
/// documentation. Parameters must have passed [`super::check_params`].
pub(super) fn build(
    vectors: Vectors<'_>,
    dim: usize,
    m: usize,
    ef_construction: usize,
) -> FlatGraph {
    let b = Builder::new(vectors, dim, m, ef_construction);
    let rows = b.rows;
    if rows == 0 {
        return b.into_flat();
    }
    *lock_entry(&b.entry) = (0, b.levels[0] as usize);
    let threads = rayon::current_num_threads();
    if threads <= 1 || rows < PARALLEL_MIN_ROWS {
        BUILD_VISITED.with(|v| {
            let mut v = v.borrow_mut();
            for r in 1..rows {
                b.insert(r as u32, &mut v);
            }
        });
    } else {
        let next = AtomicUsize::new(1);
        rayon::broadcast(|_| {
            BUILD_VISITED.with(|v| {
                let mut v = v.borrow_mut();
                loop {
                    let r = next.fetch_add(1, Relaxed);
                    if r >= rows {
                        break;
                    }
                    b.insert(r as u32, &mut v);
                }
            })
        });
    }
    b.into_flat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_dot_matches_plain_sum() {
        let arch = pulp::Arch::new();
        for n in [0usize, 1, 7, 8, 31, 64, 100, 512, 515] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7) as f32).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 3) as f32).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = simd_dot(arch, &a, &b);
            assert!(
                (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{n}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn levels_are_geometric() {
        let n = 100_000;
        let above: usize = (0..n).filter(|&r| draw_level(r, 16) > 0).count();
        // P(level > 0) = 1/m.
        assert!(
            (above as f64 / n as f64 - 1.0 / 16.0).abs() < 0.005,
            "{above}"
        );
    }
}
