//! Compressed sparse rows, for the mostly-zero activation maps that ReLU networks produce.

use super::kernel::{csr_gather, csr_scatter};
use super::Matrix;
use crate::{Error, Result};
use rayon::prelude::*;

/// A sparse matrix in compressed-sparse-row form (`f32` values, `u32` column indices).
///
/// Row `r` holds the columns `indices[indptr[r]..indptr[r + 1]]` (ascending) with the values
/// `values[indptr[r]..indptr[r + 1]]`. Exact zeros are not stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Csr {
    rows: usize,
    cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

/// Rows per parallel task in the sparse products (fixed, so results do not depend on threads).
const ROWS_PER_TASK: usize = 256;

impl Csr {
    /// The non-zero entries of `a`. Refuses a matrix of more than `u32::MAX` columns (column
    /// indices are stored as `u32`).
    pub fn from_dense(a: &Matrix) -> Result<Csr> {
        if a.cols() > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "sparse matrix: {} columns exceed the u32 index range",
                a.cols()
            )));
        }
        let c = a.cols().max(1);
        // Fixed row chunks in parallel, then concatenated in order.
        let parts: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)> = a
            .as_slice()
            .par_chunks(ROWS_PER_TASK * c)
            .map(|chunk| {
                let nnz = chunk.iter().filter(|v| **v != 0.0).count();
                let mut lens = Vec::with_capacity(chunk.len() / c);
                let mut indices = Vec::with_capacity(nnz);
                let mut values = Vec::with_capacity(nnz);
                for row in chunk.chunks_exact(c) {
                    let before = indices.len();
                    for (j, &v) in row.iter().enumerate() {
                        if v != 0.0 {
                            indices.push(j as u32);
                            values.push(v);
                        }
                    }
                    lens.push(indices.len() - before);
                }
                (lens, indices, values)
            })
            .collect();
        let nnz = parts.iter().map(|p| p.1.len()).sum();
        let mut indptr = Vec::with_capacity(a.rows() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut values = Vec::with_capacity(nnz);
        indptr.push(0);
        for (lens, idx, val) in parts {
            for l in lens {
                let last = *indptr.last().unwrap_or(&0);
                indptr.push(last + l);
            }
            indices.extend_from_slice(&idx);
            values.extend_from_slice(&val);
        }
        if a.cols() == 0 {
            indptr.resize(a.rows() + 1, 0);
        }
        Ok(Csr {
            rows: a.rows(),
            cols: a.cols(),
            indptr,
            indices,
            values,
        })
    }

    /// An empty matrix of `cols` columns and no rows, to be grown with [`Csr::push_rows`].
    pub fn with_cols(cols: usize) -> Result<Csr> {
        if cols > u32::MAX as usize {
            return Err(Error::invalid(format!(
                "sparse matrix: {cols} columns exceed the u32 index range"
            )));
        }
        Ok(Csr {
            rows: 0,
            cols,
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Appends the rows of the dense `a` (same number of columns), keeping its non-zeros only:
    /// how a stack of many images' activations is built without ever holding it densely.
    pub fn push_rows(&mut self, a: &Matrix) -> Result<()> {
        if a.cols() != self.cols {
            return Err(Error::invalid(format!(
                "sparse matrix of {} columns: cannot append rows of {} columns",
                self.cols,
                a.cols()
            )));
        }
        let nnz = a.as_slice().iter().filter(|v| **v != 0.0).count();
        self.indices.reserve(nnz);
        self.values.reserve(nnz);
        self.indptr.reserve(a.rows());
        for r in 0..a.rows() {
            for (j, &v) in a.row(r).iter().enumerate() {
                if v != 0.0 {
                    self.indices.push(j as u32);
                    self.values.push(v);
                }
            }
            self.indptr.push(self.values.len());
        }
        self.rows += a.rows();
        Ok(())
    }

    /// Index of row `r`'s first stored value in [`Csr::values`].
    pub fn row_start(&self, r: usize) -> usize {
        self.indptr[r.min(self.rows)]
    }

    /// Multiplies every stored value by `f`.
    pub(crate) fn scale_values(&mut self, f: f32) {
        self.values.iter_mut().for_each(|v| *v *= f);
    }

    /// The stored values, row after row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Bytes held on the heap (index, column and value arrays, at their capacity).
    pub fn heap_bytes(&self) -> usize {
        self.indptr.capacity() * std::mem::size_of::<usize>()
            + self.indices.capacity() * std::mem::size_of::<u32>()
            + self.values.capacity() * std::mem::size_of::<f32>()
    }

    /// Rows `r0..r1` as a dense matrix.
    pub fn rows_dense(&self, r0: usize, r1: usize) -> Matrix {
        let r1 = r1.min(self.rows);
        let r0 = r0.min(r1);
        let mut m = Matrix::zeros(r1 - r0, self.cols);
        for r in r0..r1 {
            let (idx, val) = self.row(r);
            let row = m.row_mut(r - r0);
            for (&c, &v) in idx.iter().zip(val) {
                row[c as usize] = v;
            }
        }
        m
    }

    /// The Gram matrix of the smaller side: `AᵀA` (`cols × cols`) when `rows ≥ cols`, else
    /// `AAᵀ` (`rows × rows`); products in `f32`, summed over fixed row chunks in order (so the
    /// result does not depend on the number of threads). Meant for a small smaller side.
    pub(crate) fn side_gram(&self) -> Matrix {
        const CHUNK_ROWS: usize = 2048;
        if self.rows >= self.cols {
            let c = self.cols;
            let chunks: Vec<usize> = (0..self.rows).step_by(CHUNK_ROWS).collect();
            let partials: Vec<Vec<f32>> = chunks
                .par_iter()
                .map(|&r0| {
                    let mut g = vec![0.0f32; c * c];
                    for r in r0..(r0 + CHUNK_ROWS).min(self.rows) {
                        let (idx, val) = self.row(r);
                        for (&i, &a) in idx.iter().zip(val) {
                            let gi = &mut g[i as usize * c..i as usize * c + c];
                            for (&j, &b) in idx.iter().zip(val) {
                                gi[j as usize] += a * b;
                            }
                        }
                    }
                    g
                })
                .collect();
            let mut out = Matrix::zeros(c, c);
            super::sum_in_order(out.as_mut_slice(), &partials);
            out
        } else {
            let p = self.rows;
            let dense = self.to_dense();
            let mut out = Matrix::zeros(p, p);
            for i in 0..p {
                for j in 0..p {
                    let (idx, val) = self.row(j);
                    let di = dense.row(i);
                    out.set(
                        i,
                        j,
                        idx.iter().zip(val).map(|(&c, &v)| di[c as usize] * v).sum(),
                    );
                }
            }
            out
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Stored entries over all entries (0 for an empty matrix).
    pub fn density(&self) -> f64 {
        let all = self.rows * self.cols;
        if all == 0 {
            0.0
        } else {
            self.nnz() as f64 / all as f64
        }
    }

    /// Row `r`: its column indices and values.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let range = self.indptr[r]..self.indptr[r + 1];
        (&self.indices[range.clone()], &self.values[range])
    }

    /// The dense matrix.
    pub fn to_dense(&self) -> Matrix {
        let mut m = Matrix::zeros(self.rows, self.cols);
        for r in 0..self.rows {
            let (idx, val) = self.row(r);
            let row = m.row_mut(r);
            for (&c, &v) in idx.iter().zip(val) {
                row[c as usize] = v;
            }
        }
        m
    }

    /// The transpose, also in CSR form (i.e. the matrix in compressed-sparse-column form).
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for c in 0..self.cols {
            counts[c + 1] += counts[c];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0.0f32; self.nnz()];
        for r in 0..self.rows {
            let (idx, val) = self.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                let slot = next[c as usize];
                next[c as usize] += 1;
                indices[slot] = r as u32;
                values[slot] = v;
            }
        }
        Csr {
            rows: self.cols,
            cols: self.rows,
            indptr,
            indices,
            values,
        }
    }

    /// `out = self[r0..r0 + n] · X` for the dense row-major `X` (`cols × k`, given as `x`),
    /// `out` row-major `n × k`.
    pub(crate) fn mul_rows_into(&self, r0: usize, x: &[f32], k: usize, out: &mut [f32]) {
        let n = out.len() / k.max(1);
        let (indptr, indices, values) = self.rows_slices(r0, n);
        csr_gather(&indptr, indices, values, x, k, out);
    }

    /// `out[indices] += A[r0..r0 + n]ᵀ · U` scattered into `out` (`cols × k`), `U` the
    /// row-major `n × k` matrix `u`.
    pub(crate) fn t_mul_rows_add(&self, r0: usize, u: &[f32], k: usize, out: &mut [f32]) {
        let n = u.len() / k.max(1);
        let (indptr, indices, values) = self.rows_slices(r0, n);
        csr_scatter(&indptr, indices, values, u, k, out);
    }

    /// Rows `r0..r0 + n` as (relative row offsets, column indices, values).
    fn rows_slices(&self, r0: usize, n: usize) -> (Vec<usize>, &[u32], &[f32]) {
        let base = self.indptr[r0];
        let end = self.indptr[r0 + n];
        let indptr = self.indptr[r0..=r0 + n].iter().map(|p| p - base).collect();
        (indptr, &self.indices[base..end], &self.values[base..end])
    }

    /// `self · X` for a dense `X` (`cols × k`), in parallel over fixed row blocks (the result
    /// does not depend on the number of threads). Refuses mismatched shapes.
    pub fn mul(&self, x: &Matrix) -> Result<Matrix> {
        if x.rows() != self.cols {
            return Err(Error::invalid(format!(
                "sparse product: {}×{} times {}×{} does not fit",
                self.rows,
                self.cols,
                x.rows(),
                x.cols()
            )));
        }
        Ok(self.mul_unchecked(x))
    }

    /// `selfᵀ · X` for a dense `X` (`rows × k`): rows of `X` are scattered through the
    /// non-zeros of the matching rows of `self`, in fixed row chunks whose partial sums are
    /// added in order (so the result does not depend on the number of threads). Refuses
    /// mismatched shapes.
    pub fn t_mul(&self, x: &Matrix) -> Result<Matrix> {
        if x.rows() != self.rows {
            return Err(Error::invalid(format!(
                "sparse transposed product: ({}×{})ᵀ times {}×{} does not fit",
                self.rows,
                self.cols,
                x.rows(),
                x.cols()
            )));
        }
        Ok(self.t_mul_unchecked(x))
    }

    /// [`Csr::t_mul`] for shapes known to fit.
    pub(crate) fn t_mul_unchecked(&self, x: &Matrix) -> Matrix {
        const CHUNK_ROWS: usize = 2048;
        let k = x.cols();
        let mut out = Matrix::zeros(self.cols, k);
        if k == 0 || self.rows == 0 {
            return out;
        }
        let partials: Vec<Vec<f32>> = x
            .as_slice()
            .par_chunks(CHUNK_ROWS * k)
            .enumerate()
            .map(|(b, rows)| {
                let mut part = vec![0.0f32; self.cols * k];
                self.t_mul_rows_add(b * CHUNK_ROWS, rows, k, &mut part);
                part
            })
            .collect();
        super::sum_in_order(out.as_mut_slice(), &partials);
        out
    }

    /// [`Csr::mul`] for shapes known to fit.
    pub(crate) fn mul_unchecked(&self, x: &Matrix) -> Matrix {
        let k = x.cols();
        let mut out = Matrix::zeros(self.rows, k);
        if k == 0 {
            return out;
        }
        out.as_mut_slice()
            .par_chunks_mut(ROWS_PER_TASK * k)
            .enumerate()
            .for_each(|(b, o)| self.mul_rows_into(b * ROWS_PER_TASK, x.as_slice(), k, o));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize, cols: usize) -> Matrix {
        let data = (0..rows * cols)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2654435761) >> 20;
                if x.is_multiple_of(3) {
                    (x % 97) as f32 / 10.0
                } else {
                    0.0
                }
            })
            .collect();
        Matrix::from_vec(rows, cols, data).unwrap()
    }

    #[test]
    fn round_trips_and_transposes() {
        let a = sample(300, 37);
        let s = Csr::from_dense(&a).unwrap();
        assert_eq!(s.to_dense(), a);
        assert_eq!(s.transpose().to_dense(), a.transpose());
        assert_eq!(s.nnz(), a.as_slice().iter().filter(|v| **v != 0.0).count());
        assert!((s.density() - s.nnz() as f64 / (300.0 * 37.0)).abs() < 1e-12);
        let empty = Csr::from_dense(&Matrix::zeros(3, 4)).unwrap();
        assert_eq!((empty.nnz(), empty.row(2).0.len()), (0, 0));
    }

    /// Gather (A·X) and scatter (Aᵀ·U) for every width class of the kernels: scalar, below a
    /// vector, whole vectors held in registers, and wider.
    #[test]
    fn products_match_dense_for_all_widths() {
        let a = sample(300, 37);
        let s = Csr::from_dense(&a).unwrap();
        for k in [1usize, 3, 8, 16, 24, 32, 40, 64, 70] {
            let x = sample(37, k);
            let want = a.matmul(&x).unwrap();
            let got = s.mul(&x).unwrap();
            for (p, q) in got.as_slice().iter().zip(want.as_slice()) {
                assert!((p - q).abs() < 1e-3, "gather k={k}: {p} vs {q}");
            }
            let u = sample(300, k);
            let mut nt = vec![0.0f32; 37 * k];
            s.t_mul_rows_add(0, u.as_slice(), k, &mut nt);
            let want = a.t_matmul(&u).unwrap();
            for (p, q) in nt.iter().zip(want.as_slice()) {
                assert!((p - q).abs() < 1e-3, "scatter k={k}: {p} vs {q}");
            }
        }
        assert!(s.mul(&Matrix::zeros(36, 2)).is_err());
        for k in [1usize, 8, 24] {
            let u = sample(300, k);
            let got = s.t_mul(&u).unwrap();
            let want = a.t_matmul(&u).unwrap();
            for (p, q) in got.as_slice().iter().zip(want.as_slice()) {
                assert!((p - q).abs() < 1e-3);
            }
        }
        assert!(s.t_mul(&Matrix::zeros(5, 2)).is_err());
    }

    #[test]
    fn built_row_by_row_equals_from_dense() {
        let a = sample(300, 37);
        let mut s = Csr::with_cols(37).unwrap();
        s.push_rows(&Matrix::from_vec(100, 37, a.as_slice()[..100 * 37].to_vec()).unwrap())
            .unwrap();
        s.push_rows(&Matrix::zeros(0, 37)).unwrap();
        s.push_rows(&Matrix::from_vec(200, 37, a.as_slice()[100 * 37..].to_vec()).unwrap())
            .unwrap();
        assert_eq!(s, Csr::from_dense(&a).unwrap());
        assert!(s.push_rows(&Matrix::zeros(1, 36)).is_err());
        let want: Vec<f32> = a.as_slice()[10 * 37..20 * 37].to_vec();
        assert_eq!(s.rows_dense(10, 20).as_slice(), &want[..]);
        assert!(s.heap_bytes() >= s.nnz() * 8);
    }

    #[test]
    fn side_gram_matches_dense() {
        for (rows, cols) in [(300usize, 37usize), (20, 37)] {
            let a = sample(rows, cols);
            let g = Csr::from_dense(&a).unwrap().side_gram();
            let want = if rows >= cols {
                a.t_matmul(&a).unwrap()
            } else {
                a.matmul_t(&a).unwrap()
            };
            assert_eq!(g.shape(), want.shape());
            for (p, q) in g.as_slice().iter().zip(want.as_slice()) {
                assert!((p - q).abs() < 1e-2 * q.abs().max(1.0), "{p} vs {q}");
            }
        }
    }
}
