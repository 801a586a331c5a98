//! Exact search: every stored descriptor against the query, in parallel chunks, keeping the
//! best `k` of each chunk and merging them.

use super::hnsw::simd_dot;
use half::f16;
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

/// Converts binary16 bits to f32 without branches, so that loops over it vectorize:
/// shifting the exponent and mantissa into place and scaling by 2¹¹² is exact for normal and
/// subnormal values and zero; infinities and NaNs get the all-ones exponent back.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let em = h & 0x7fff;
    let scaled = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000);
    let bits = if em >= 0x7c00 {
        scaled.to_bits() | 0x7f80_0000
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | (h & 0x8000) << 16)
}

/// Dot product of f16 stored values with an f32 query.
#[inline]
pub fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    let mut buf = vec![0f32; a.len().min(b.len())];
    f16_into(&a[..buf.len()], &mut buf);
    dot(&buf, b)
}

/// Converts `src` into `dst` (same length) with a plain map, which the compiler vectorizes.
#[inline]
fn f16_into(src: &[f16], dst: &mut [f32]) {
    for (o, h) in dst.iter_mut().zip(src) {
        *o = f16_to_f32(h.to_bits());
    }
}

/// Scores rows of one segment against one query, with a scratch row for converting f16
/// descriptors (allocated once per scorer, not per row).
pub(crate) struct Scorer<'a> {
    vectors: Vectors<'a>,
    query: &'a [f32],
    scratch: Vec<f32>,
    arch: pulp::Arch,
}

impl<'a> Scorer<'a> {
    /// A scorer of `vectors` against `query`.
    pub fn new(vectors: Vectors<'a>, query: &'a [f32]) -> Scorer<'a> {
        let scratch = match vectors {
            Vectors::F16(_, d) => vec![0f32; d],
            Vectors::F32(..) => Vec::new(),
        };
        Scorer {
            vectors,
            query,
            scratch,
            arch: pulp::Arch::new(),
        }
    }

    /// Score of row `r` (0 for a row that does not exist).
    #[inline]
    pub fn score(&mut self, r: usize) -> f32 {
        match self.vectors {
            Vectors::F32(v, d) => v
                .get(r * d..(r + 1) * d)
                .map_or(0.0, |x| simd_dot(self.arch, x, self.query)),
            Vectors::F16(v, d) => match v.get(r * d..(r + 1) * d) {
                Some(x) => {
                    f16_into(x, &mut self.scratch);
                    simd_dot(self.arch, &self.scratch, self.query)
                }
                None => 0.0,
            },
        }
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
            Vectors::F16(v, d) => v
                .get(r * d..(r + 1) * d)
                .map(|x| x.iter().map(|h| h.to_f32()).collect()),
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
            let got = f16_to_f32(bits);
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
}
