//! Exact search: every stored descriptor against the query, in parallel chunks, keeping the
//! best `k` of each chunk and merging them.

use super::segment::VectorEncoding;
use super::simd::{dot_f32 as simd_dot, F16Dot};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Rows scored per parallel task.
const CHUNK_ROWS: usize = 2048;

/// Dot product written so that the compiler vectorizes it: 16 independent accumulators.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    let mut h = [0f32; 8];
    for i in 0..8 {
        h[i] = acc[i] + acc[i + 8];
    }
    s + ((h[0] + h[4]) + (h[1] + h[5])) + ((h[2] + h[6]) + (h[3] + h[7]))
}

/// Dot product of f16 stored values with an f32 query (the fused kernel of
/// `simd` module: no conversion pass, no allocation).
#[inline]
pub fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    F16Dot::new().dot(a, b)
}

/// Scores rows of one segment against one query (f16 rows with the fused f16 dot: no
/// conversion pass, no buffer).
pub(crate) struct Scorer<'a> {
    vectors: Vectors<'a>,
    query: &'a [f32],
    kernel: F16Dot,
}

impl<'a> Scorer<'a> {
    /// A scorer of `vectors` against `query`.
    pub fn new(vectors: Vectors<'a>, query: &'a [f32]) -> Scorer<'a> {
        Scorer {
            vectors,
            query,
            kernel: F16Dot::new(),
        }
    }

    /// Score of row `r` against another query `q` (`None` for a row that does not exist).
    #[inline]
    pub fn score_with(&self, r: usize, q: &[f32]) -> Option<f32> {
        match self.vectors {
            Vectors::F32(v, d) => v
                .get(r * d..(r + 1) * d)
                .map(|x| simd_dot(self.kernel.arch(), x, q)),
            Vectors::F16(v, d) => v.get(r * d..(r + 1) * d).map(|x| self.kernel.dot(x, q)),
        }
    }

    /// Starts loading row `r` into cache (see [`F16Dot::prefetch`]).
    #[inline]
    pub fn prefetch(&self, r: usize) {
        match self.vectors {
            Vectors::F32(v, d) => {
                if let Some(x) = v.get(r * d..(r + 1) * d) {
                    self.kernel.prefetch(x);
                }
            }
            Vectors::F16(v, d) => {
                if let Some(x) = v.get(r * d..(r + 1) * d) {
                    self.kernel.prefetch(x);
                }
            }
        }
    }

    /// Score of row `r` (0 for a row that does not exist).
    #[inline]
    pub fn score(&mut self, r: usize) -> f32 {
        self.score_with(r, self.query).unwrap_or(0.0)
    }
}

/// Stored descriptors of one segment, `rows × dim`, in either encoding.
#[derive(Clone, Copy)]
pub(crate) enum Vectors<'a> {
    /// f32 values.
    F32(&'a [f32], usize),
    /// f16 values.
    F16(&'a [f16], usize),
}

impl<'a> Vectors<'a> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        match *self {
            Vectors::F32(v, d) => v.len() / d.max(1),
            Vectors::F16(v, d) => v.len() / d.max(1),
        }
    }

    /// Row `r` as f32.
    pub fn row(&self, r: usize) -> Option<Vec<f32>> {
        match *self {
            Vectors::F32(v, d) => v.get(r * d..(r + 1) * d).map(<[f32]>::to_vec),
            Vectors::F16(v, d) => v.get(r * d..(r + 1) * d).map(|x| {
                let mut out = vec![0f32; d];
                x.convert_to_f32_slice(&mut out);
                out
            }),
        }
    }
}

impl Vectors<'_> {
    /// Number of values (`rows × dim`).
    pub fn values(&self) -> usize {
        match *self {
            Vectors::F32(v, _) => v.len(),
            Vectors::F16(v, _) => v.len(),
        }
    }
}

/// Descriptors held in memory in the encoding they are stored in (the writer's pending rows
/// and a merge's rows): an f16 index keeps half the bytes, and its graph is built on
/// exactly the values the file stores.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    /// f32 values.
    F32(Vec<f32>),
    /// f16 values.
    F16(Vec<f16>),
}

impl Rows {
    /// No rows, to be stored in `encoding`.
    pub fn new(encoding: VectorEncoding) -> Rows {
        match encoding {
            VectorEncoding::F32 => Rows::F32(Vec::new()),
            VectorEncoding::F16 => Rows::F16(Vec::new()),
        }
    }

    /// Room for `values` more values.
    pub fn reserve(&mut self, values: usize) {
        match self {
            Rows::F32(v) => v.reserve(values),
            Rows::F16(v) => v.reserve(values),
        }
    }

    /// Appends a row (rounded to f16 for an f16 index).
    pub fn push(&mut self, row: &[f32]) {
        match self {
            Rows::F32(v) => v.extend_from_slice(row),
            Rows::F16(v) => {
                let at = v.len();
                v.resize(at + row.len(), f16::ZERO);
                v[at..].convert_from_f32_slice(row);
            }
        }
    }

    /// Appends row `r` of `from` (copied as is when the encodings agree); false if there is
    /// no such row.
    pub fn push_stored(&mut self, from: Vectors<'_>, r: usize) -> bool {
        match (self, from) {
            (Rows::F32(v), Vectors::F32(f, d)) => f
                .get(r * d..(r + 1) * d)
                .map(|x| v.extend_from_slice(x))
                .is_some(),
            (Rows::F16(v), Vectors::F16(f, d)) => f
                .get(r * d..(r + 1) * d)
                .map(|x| v.extend_from_slice(x))
                .is_some(),
            (this, from) => from.row(r).map(|x| this.push(&x)).is_some(),
        }
    }

    /// Removes row `i` of `dim` values.
    pub fn remove(&mut self, i: usize, dim: usize) {
        match self {
            Rows::F32(v) => drop(v.drain(i * dim..(i + 1) * dim)),
            Rows::F16(v) => drop(v.drain(i * dim..(i + 1) * dim)),
        }
    }

    /// The rows, `dim` values each.
    pub fn view(&self, dim: usize) -> Vectors<'_> {
        match self {
            Rows::F32(v) => Vectors::F32(v, dim),
            Rows::F16(v) => Vectors::F16(v, dim),
        }
    }
}

/// A scored row; orders by score, ties going to the lower row (rows follow id order).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    /// Similarity (dot product).
    pub score: f32,
    /// Row in its segment.
    pub row: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.row.cmp(&self.row))
    }
}

/// Keeps the best `k` candidates seen.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Cand>>,
}

impl TopK {
    /// An empty collector of the best `k`.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers a candidate; NaN scores are ignored.
    #[inline]
    pub fn push(&mut self, c: Cand) {
        if c.score.is_nan() || self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Reverse(c));
        } else if let Some(Reverse(w)) = self.heap.peek() {
            if c > *w {
                self.heap.pop();
                self.heap.push(Reverse(c));
            }
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Cand> {
        let mut v: Vec<Cand> = self.heap.into_iter().map(|Reverse(c)| c).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

/// The best `k` live rows of `vectors` for `query`, best first; `deleted` is a bitset over
/// rows (bit set = deleted).
pub(crate) fn search(vectors: Vectors<'_>, deleted: &[u64], query: &[f32], k: usize) -> Vec<Cand> {
    let rows = vectors.rows();
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let partial: Vec<Vec<Cand>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut top = TopK::new(k);
            let mut scorer = Scorer::new(vectors, query);
            let end = ((c + 1) * CHUNK_ROWS).min(rows);
            for r in c * CHUNK_ROWS..end {
                if is_set(deleted, r) {
                    continue;
                }
                top.push(Cand {
                    score: scorer.score(r),
                    row: r as u32,
                });
            }
            top.into_sorted()
        })
        .collect();
    let mut top = TopK::new(k);
    for c in partial.into_iter().flatten() {
        top.push(c);
    }
    top.into_sorted()
}

/// Whether bit `i` is set.
#[inline]
pub(crate) fn is_set(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        for n in [0usize, 1, 7, 16, 33, 512] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4);
            let ah: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
            assert!((dot_f16(&ah, &b) - naive).abs() < 1e-2 * (n as f32).sqrt().max(1.0));
        }
    }

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = super::super::simd::f16_bits_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} != {want}"
            );
        }
    }

    #[test]
    fn exact_top_k_skips_deleted_and_orders_ties_by_row() {
        let v = vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 0.6, 0.8];
        let vecs = Vectors::F32(&v, 2);
        let r = search(vecs, &[], &[1.0, 0.0], 3);
        assert_eq!(r.iter().map(|c| c.row).collect::<Vec<_>>(), vec![0, 2, 3]);
        let r = search(vecs, &[0b1], &[1.0, 0.0], 2);
        assert_eq!(r.iter().map(|c| c.row).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn rows_keep_the_stored_encoding() {
        let dim = 3;
        let a = [0.6f32, 0.8, 0.0];
        let b = [0.0f32, 0.6, 0.8];
        for enc in [VectorEncoding::F32, VectorEncoding::F16] {
            let mut r = Rows::new(enc);
            assert_eq!(r.view(dim).rows(), 0);
            r.push(&a);
            r.push(&b);
            r.push(&a);
            r.remove(0, dim);
            assert_eq!(r.view(dim).rows(), 2);
            let want: Vec<f32> = b
                .iter()
                .map(|&x| match enc {
                    VectorEncoding::F32 => x,
                    VectorEncoding::F16 => f16::from_f32(x).to_f32(),
                })
                .collect();
            assert_eq!(r.view(dim).row(0).unwrap(), want);
            // Copies between encodings round as storing does.
            for other in [VectorEncoding::F32, VectorEncoding::F16] {
                let mut c = Rows::new(other);
                assert!(c.push_stored(r.view(dim), 1));
                assert!(!c.push_stored(r.view(dim), 2));
                let mut direct = Rows::new(other);
                direct.push(&r.view(dim).row(1).unwrap());
                assert_eq!(c.view(dim).row(0), direct.view(dim).row(0));
            }
        }
    }
}
