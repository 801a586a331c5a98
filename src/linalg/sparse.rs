//! Compressed sparse rows, for the mostly-zero activation maps that ReLU networks produce.

use super::kernel::vectorized;
use super::Matrix;
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
    /// The non-zero entries of `a`.
    ///
    /// Panics if `a` has more than `u32::MAX` columns (no activation map comes near).
    pub fn from_dense(a: &Matrix) -> Csr {
        assert!(
            a.cols() <= u32::MAX as usize,
            "Csr::from_dense: too many columns"
        );
        let mut indptr = Vec::with_capacity(a.rows() + 1);
        indptr.push(0);
        let nnz = a.as_slice().iter().filter(|v| **v != 0.0).count();
        let mut indices = Vec::with_capacity(nnz);
        let mut values = Vec::with_capacity(nnz);
        for r in 0..a.rows() {
            for (c, &v) in a.row(r).iter().enumerate() {
                if v != 0.0 {
                    indices.push(c as u32);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Csr {
            rows: a.rows(),
            cols: a.cols(),
            indptr,
            indices,
            values,
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
        vectorized(|| {
            for (i, o) in out.chunks_exact_mut(k).enumerate() {
                o.fill(0.0);
                let (idx, val) = self.row(r0 + i);
                for (&c, &v) in idx.iter().zip(val) {
                    let xr = &x[c as usize * k..c as usize * k + k];
                    for (a, b) in o.iter_mut().zip(xr) {
                        *a = v.mul_add(*b, *a);
                    }
                }
            }
        })
    }

    /// `self · X` for a dense `X` (`cols × k`), in parallel over fixed row blocks.
    ///
    /// Panics if `x.rows() != self.cols()`.
    pub fn mul(&self, x: &Matrix) -> Matrix {
        assert_eq!(x.rows(), self.cols, "Csr::mul: shapes differ");
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
