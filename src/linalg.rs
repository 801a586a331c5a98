//! Linear algebra under everything: the dense row-major `f32` [`Matrix`], the common currency
//! between the backbone (activations), the NMF engine (factors) and the descriptors, with
//! cache-blocked SIMD products; [`Csr`] for sparse activations; the symmetric
//! eigendecomposition ([`symmetric_eigen`]) and truncated SVD ([`truncated_svd`]) behind
//! NNDSVD, PCA and whitening.

use crate::{Error, Result};

/// A dense row-major matrix of `f32`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// A matrix from row-major data; refuses a length other than `rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::invalid(format!(
                "matrix of {rows}×{cols} cannot hold {} values",
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
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

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The values, row-major, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the matrix, giving its row-major values.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Row `r`, mutable.
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Element `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }

    /// Sets element `(r, c)`.
    pub fn set(&mut self, r: usize, c: usize, v: f32) {
        self.data[r * self.cols + c] = v;
    }

    /// The transpose.
    pub fn transpose(&self) -> Matrix {
        let mut out = Matrix::zeros(self.cols, self.rows);
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.data[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        out
    }
}

pub(crate) mod blas;
mod eigen;
pub(crate) mod kernel;
mod sparse;
mod svd;

pub use eigen::{symmetric_eigen, SymmetricEigen};
pub use sparse::Csr;
pub(crate) use svd::{batch_svd, truncated_svd_of, BatchOperand, Operand};
pub use svd::{truncated_svd, Svd};

use kernel::View;
use rayon::prelude::*;

/// Products below this many multiply-adds run on the calling thread.
const PAR_MIN_WORK: usize = 1 << 20;
/// Output rows per parallel task (a multiple of the kernel's register tile).
const ROW_TASK: usize = 48;
/// Reduction length per parallel task when the output is too short to split by rows.
const REDUCTION_TASK: usize = 2048;
/// Output columns per parallel task when the output has few rows and a short reduction.
const COL_TASK: usize = 256;

impl Matrix {
    /// `self · b`. Refuses mismatched shapes.
    ///
    /// Runs in parallel over a partition fixed by the shapes alone, so the result is the same
    /// for any number of threads (and for the same inputs on the same machine, bit for bit).
    pub fn matmul(&self, b: &Matrix) -> Result<Matrix> {
        check_inner("matmul", self.cols, b.rows, self.shape(), b.shape())?;
        Ok(par_product(self.view(), b.view()))
    }

    /// `selfᵀ · b`. Refuses mismatched shapes. Deterministic like [`Matrix::matmul`].
    pub fn t_matmul(&self, b: &Matrix) -> Result<Matrix> {
        check_inner("t_matmul", self.rows, b.rows, self.shape(), b.shape())?;
        Ok(par_product(self.view().t(), b.view()))
    }

    /// `self · bᵀ`. Refuses mismatched shapes. Deterministic like [`Matrix::matmul`].
    pub fn matmul_t(&self, b: &Matrix) -> Result<Matrix> {
        check_inner("matmul_t", self.cols, b.cols, self.shape(), b.shape())?;
        Ok(par_product(self.view(), b.view().t()))
    }

    /// Eigendecomposition of this symmetric matrix (lower triangle read, computed in `f64`);
    /// see [`symmetric_eigen`]. Refuses a non-square matrix.
    pub fn symmetric_eigen(&self) -> Result<SymmetricEigen> {
        if self.rows != self.cols {
            return Err(Error::invalid(format!(
                "symmetric eigendecomposition of a non-square {}×{} matrix",
                self.rows, self.cols
            )));
        }
        let a: Vec<f64> = self.data.iter().map(|&v| v as f64).collect();
        symmetric_eigen(self.rows, &a)
    }

    /// The Frobenius norm, accumulated in `f64`.
    pub fn frobenius_norm(&self) -> f64 {
        self.data
            .iter()
            .map(|&v| v as f64 * v as f64)
            .sum::<f64>()
            .sqrt()
    }

    pub(crate) fn view(&self) -> View<'_> {
        View::row_major(&self.data, self.rows, self.cols, self.cols)
    }
}

fn check_inner(
    what: &str,
    a: usize,
    b: usize,
    sa: (usize, usize),
    sb: (usize, usize),
) -> Result<()> {
    if a != b {
        return Err(Error::invalid(format!(
            "{what}: shapes {}×{} and {}×{} do not fit",
            sa.0, sa.1, sb.0, sb.1
        )));
    }
    Ok(())
}

/// `L · R` as a new matrix, in parallel over a partition that depends only on the shapes.
pub(crate) fn par_product(lhs: View<'_>, rhs: View<'_>) -> Matrix {
    let (m, n) = (lhs.rows, rhs.cols);
    let mut out = Matrix::zeros(m, n);
    par_gemm(&mut out.data, lhs, rhs);
    out
}

/// `out = L · R` (`out` row-major `m × n`), parallel over a shape-determined partition.
///
/// Splitting rows or columns leaves every output element's arithmetic unchanged; splitting
/// the reduction (only for short, wide-reduction products) sums fixed chunks in a fixed order.
pub(crate) fn par_gemm(out: &mut [f32], lhs: View<'_>, rhs: View<'_>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // Give the kernels their preferred layout of R once, not once per task.
    let tmp;
    let rhs = match kernel::preferred_rhs(lhs, rhs) {
        Some((v, transposed)) => {
            tmp = v;
            if transposed {
                View::row_major(&tmp, n, k, k).t()
            } else {
                View::row_major(&tmp, k, n, n)
            }
        }
        None => rhs,
    };
    if m.saturating_mul(n).saturating_mul(k) < PAR_MIN_WORK {
        kernel::gemm(out, n, lhs, rhs, false);
    } else if m >= 2 * ROW_TASK {
        out.par_chunks_mut(ROW_TASK * n)
            .enumerate()
            .for_each(|(b, o)| {
                let rows = o.len() / n;
                kernel::gemm(o, n, lhs.rows_range(b * ROW_TASK, rows), rhs, false)
            });
    } else if k >= 2 * REDUCTION_TASK {
        gemm_reduction_chunks(out, lhs, rhs);
    } else if n >= 2 * COL_TASK {
        let blocks: Vec<Vec<f32>> = (0..n.div_ceil(COL_TASK))
            .into_par_iter()
            .map(|b| {
                let j0 = b * COL_TASK;
                let w = COL_TASK.min(n - j0);
                let mut part = vec![0.0f32; m * w];
                kernel::gemm(&mut part, w, lhs, rhs.t().rows_range(j0, w).t(), false);
                part
            })
            .collect();
        for (b, part) in blocks.iter().enumerate() {
            let j0 = b * COL_TASK;
            let w = part.len() / m.max(1);
            for i in 0..m {
                out[i * n + j0..i * n + j0 + w].copy_from_slice(&part[i * w..(i + 1) * w]);
            }
        }
    } else {
        kernel::gemm(out, n, lhs, rhs, false);
    }
}

/// `out = L · R` with the reduction split into fixed chunks of [`REDUCTION_TASK`] that run in
/// parallel and are summed in order: for short-and-wide outputs over a long reduction (`UᵀA`),
/// where splitting rows would make every task read all of `R`.
pub(crate) fn par_gemm_split_k(out: &mut [f32], lhs: View<'_>, rhs: View<'_>) {
    if lhs.cols < 2 * REDUCTION_TASK {
        return par_gemm(out, lhs, rhs);
    }
    gemm_reduction_chunks(out, lhs, rhs);
}

/// `out = L · R` as partial products over chunks of [`REDUCTION_TASK`] of the reduction,
/// computed in parallel and summed in order (so the result does not depend on the threads).
fn gemm_reduction_chunks(out: &mut [f32], lhs: View<'_>, rhs: View<'_>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let chunks = k.div_ceil(REDUCTION_TASK);
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let t0 = c * REDUCTION_TASK;
            let len = REDUCTION_TASK.min(k - t0);
            let mut part = vec![0.0f32; m * n];
            kernel::gemm(
                &mut part,
                n,
                lhs.t().rows_range(t0, len).t(),
                rhs.rows_range(t0, len),
                false,
            );
            part
        })
        .collect();
    sum_in_order(out, &partials);
}

/// `out[i] = Σ_p partials[p][i]`, summing in the order of `partials`, in parallel over `i`.
pub(crate) fn sum_in_order<P: AsRef<[f32]> + Sync>(out: &mut [f32], partials: &[P]) {
    const SPAN: usize = 4096;
    out.par_chunks_mut(SPAN).enumerate().for_each(|(b, o)| {
        let base = b * SPAN;
        let len = o.len();
        o.fill(0.0);
        for part in partials {
            for (x, y) in o.iter_mut().zip(&part.as_ref()[base..base + len]) {
                *x += *y;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(rows: usize, cols: usize, seed: u32) -> Matrix {
        let data = (0..rows * cols)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2654435761).wrapping_add(seed * 97);
                ((x >> 7) % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        Matrix::from_vec(rows, cols, data).unwrap()
    }

    fn naive(a: &Matrix, b: &Matrix) -> Matrix {
        let mut out = Matrix::zeros(a.rows(), b.cols());
        for i in 0..a.rows() {
            for j in 0..b.cols() {
                let s: f64 = (0..a.cols())
                    .map(|t| a.get(i, t) as f64 * b.get(t, j) as f64)
                    .sum();
                out.set(i, j, s as f32);
            }
        }
        out
    }

    fn close(a: &Matrix, b: &Matrix, tol: f32) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
            assert!((x - y).abs() <= tol, "{x} vs {y}");
        }
    }

    #[test]
    fn products_match_naive_on_every_parallel_path() {
        // Shapes that take the row split, the reduction split, the column split and the
        // sequential path.
        for &(m, k, n) in &[(200, 64, 90), (8, 9000, 20), (20, 300, 600), (5, 7, 3)] {
            let a = filled(m, k, 1);
            let b = filled(k, n, 2);
            let want = naive(&a, &b);
            let tol = 1e-5 * k as f32;
            close(&a.matmul(&b).unwrap(), &want, tol);
            close(&a.transpose().t_matmul(&b).unwrap(), &want, tol);
            close(&a.matmul_t(&b.transpose()).unwrap(), &want, tol);
        }
    }

    #[test]
    fn symmetric_eigen_of_a_matrix() {
        let a = filled(30, 8, 5);
        let g = a.t_matmul(&a).unwrap();
        let eig = g.symmetric_eigen().unwrap();
        // Σλ = trace.
        let trace: f64 = (0..8).map(|i| g.get(i, i) as f64).sum();
        assert!((eig.values.iter().sum::<f64>() - trace).abs() < 1e-3);
        assert!(eig.values.iter().all(|v| *v > -1e-4));
        assert!(a.symmetric_eigen().is_err());
    }

    #[test]
    fn refuses_mismatched_shapes() {
        let a = Matrix::zeros(2, 3);
        assert!(a.matmul(&a).is_err());
        assert!(a.t_matmul(&Matrix::zeros(3, 3)).is_err());
        assert!(a.matmul_t(&Matrix::zeros(2, 2)).is_err());
    }

    #[test]
    fn same_result_for_any_thread_count() {
        let a = filled(300, 5000, 3);
        let b = filled(5000, 40, 4);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let x = one.install(|| a.matmul(&b).unwrap());
        let y = two.install(|| a.matmul(&b).unwrap());
        assert_eq!(x, y);
        let x = one.install(|| a.t_matmul(&a).unwrap());
        let y = two.install(|| a.t_matmul(&a).unwrap());
        assert_eq!(x, y);
    }
}
