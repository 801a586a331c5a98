//! Truncated singular value decomposition: the top `k` singular triplets of a matrix.
//!
//! Two deterministic methods, picked from the shapes alone:
//! - randomized subspace iteration (Halko, Martinsson & Tropp 2011, the method behind
//!   scikit-learn's `randomized_svd`): a seeded Gaussian test matrix, `k + 10` columns,
//!   7 power iterations (4 when `k` is at least a tenth of the smaller side), re-orthonormalised
//!   after every product; then an exact SVD of the small projected matrix. Its cost is a few
//!   dozen products with a thin matrix, and it reads a sparse matrix through its non-zeros only.
//! - the Gram matrix (`AᵀA` or `AAᵀ`, whichever is smaller) and its full eigendecomposition,
//!   when `k` is so close to the smaller side that the subspace would be nearly all of it.
//!
//! Small dense problems (Gram matrices, orthonormalisation) run in `f64`.

use super::kernel::View;
use super::{par_gemm, symmetric_eigen, Csr, Matrix};
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Extra columns of the randomized range finder (scikit-learn's default).
const OVERSAMPLE: usize = 10;
/// Power iterations for small `k` (scikit-learn's `n_iter='auto'`).
const POWER_ITERS_SMALL_K: usize = 7;
/// Power iterations when `k >= min(rows, cols) / 10`.
const POWER_ITERS_LARGE_K: usize = 4;
/// Seed of the Gaussian test matrix: fixed, so the decomposition is reproducible.
const TEST_MATRIX_SEED: u64 = 0x5eed_5fd0;
/// Directions whose squared singular value falls below this fraction of the largest are
/// treated as exactly zero (they are below `f32` resolution).
const RELATIVE_RANK_CUTOFF: f64 = 1e-10;

/// The top singular triplets `A ≈ U · diag(s) · Vᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Svd {
    /// Left singular vectors as columns, `rows × k`.
    pub u: Matrix,
    /// Singular values, largest first; exactly zero beyond the numerical rank.
    pub s: Vec<f32>,
    /// Right singular vectors as rows, `k × cols`.
    pub vt: Matrix,
}

/// The top `k` singular triplets of `a`. Triplets beyond the numerical rank of `a` (including
/// all of them for a zero matrix, and those past `min(rows, cols)`) have `s = 0` and zero
/// vectors. Signs follow no convention. Refuses non-finite entries.
pub fn truncated_svd(a: &Matrix, k: usize) -> Result<Svd> {
    if let Some(pos) = a.as_slice().iter().position(|v| !v.is_finite()) {
        return Err(Error::Numeric(format!(
            "truncated SVD: entry ({}, {}) is {}",
            pos / a.cols().max(1),
            pos % a.cols().max(1),
            a.as_slice()[pos]
        )));
    }
    truncated_svd_of(
        &Operand {
            dense: a,
            sparse: None,
        },
        k,
    )
}

/// A matrix to decompose, with its sparse form (and the transpose of that) when it has one.
pub(crate) struct Operand<'a> {
    pub dense: &'a Matrix,
    pub sparse: Option<(&'a Csr, &'a Csr)>,
}

impl Operand<'_> {
    /// `A · X`.
    fn mul(&self, x: &Matrix) -> Matrix {
        match self.sparse {
            Some((a, _)) => a.mul(x),
            None => product(self.dense.view(), x.view()),
        }
    }

    /// `Aᵀ · X`.
    fn t_mul(&self, x: &Matrix) -> Matrix {
        match self.sparse {
            Some((_, at)) => at.mul(x),
            None => product(self.dense.view().t(), x.view()),
        }
    }
}

fn product(l: View<'_>, r: View<'_>) -> Matrix {
    let mut out = Matrix::zeros(l.rows, r.cols);
    par_gemm(out.as_mut_slice(), l, r);
    out
}

/// [`truncated_svd`] on an operand whose entries are known to be finite.
pub(crate) fn truncated_svd_of(op: &Operand<'_>, k: usize) -> Result<Svd> {
    let (p, c) = op.dense.shape();
    let small = p.min(c);
    let mut out = Svd {
        u: Matrix::zeros(p, k),
        s: vec![0.0; k],
        vt: Matrix::zeros(k, c),
    };
    if k == 0 || small == 0 {
        return Ok(out);
    }
    let l = (k + OVERSAMPLE).min(small);
    let q = if 4 * l >= small {
        gram_basis(op.dense, l)?
    } else {
        randomized_basis(op, k, l)?
    };
    // Rayleigh–Ritz: Bᵀ = AᵀQ (c × r); the SVD of B from the eigenvectors of BBᵀ in f64.
    let r = q.cols();
    if r == 0 {
        return Ok(out);
    }
    let bt = op.t_mul(&q);
    let eig = symmetric_eigen(r, &gram_f64(&bt))?;
    let top = eig.values[0].max(0.0);
    for i in 0..k.min(r) {
        let lam = eig.values[i];
        if !(lam > top * RELATIVE_RANK_CUTOFF && lam > 0.0) {
            break;
        }
        let sigma = lam.sqrt();
        let w = eig.vector(i);
        out.s[i] = sigma as f32;
        for row in 0..p {
            let u = q
                .row(row)
                .iter()
                .zip(w)
                .map(|(a, b)| *a as f64 * b)
                .sum::<f64>();
            out.u.set(row, i, u as f32);
        }
        for (col, dst) in out.vt.row_mut(i).iter_mut().enumerate() {
            let v = bt
                .row(col)
                .iter()
                .zip(w)
                .map(|(a, b)| *a as f64 * b)
                .sum::<f64>();
            *dst = (v / sigma) as f32;
        }
    }
    Ok(out)
}

/// An orthonormal basis (`rows × ≤ l`) of the top-`l` left singular subspace, from the
/// eigenvectors of the `f32` Gram matrix of the smaller side.
fn gram_basis(a: &Matrix, l: usize) -> Result<Matrix> {
    let (p, c) = a.shape();
    let tall = p >= c;
    let g = if tall {
        product(a.view().t(), a.view())
    } else {
        product(a.view(), a.view().t())
    };
    let n = g.rows();
    let g64: Vec<f64> = g.as_slice().iter().map(|&v| v as f64).collect();
    let eig = symmetric_eigen(n, &g64)?;
    let mut basis = Matrix::zeros(n, l);
    for i in 0..l {
        for (r, x) in eig.vector(i).iter().enumerate() {
            basis.set(r, i, *x as f32);
        }
    }
    if tall {
        orthonormalize(&product(a.view(), basis.view()))
    } else {
        orthonormalize(&basis)
    }
}

/// An orthonormal basis (`rows × ≤ l`) of the range of `A·Ω` after the power iterations.
fn randomized_basis(op: &Operand<'_>, k: usize, l: usize) -> Result<Matrix> {
    let (p, c) = op.dense.shape();
    let iters = if 10 * k < p.min(c) {
        POWER_ITERS_SMALL_K
    } else {
        POWER_ITERS_LARGE_K
    };
    let omega = gaussian(c, l, TEST_MATRIX_SEED);
    let mut q = orthonormalize(&op.mul(&omega))?;
    for _ in 0..iters {
        if q.cols() == 0 {
            break;
        }
        let z = orthonormalize(&op.t_mul(&q))?;
        if z.cols() == 0 {
            return Ok(Matrix::zeros(p, 0));
        }
        q = orthonormalize(&op.mul(&z))?;
    }
    Ok(q)
}

/// `XᵀX` in `f64` (`X` is `n × r`, `r` small), in parallel over fixed row blocks.
fn gram_f64(x: &Matrix) -> Vec<f64> {
    const BLOCK: usize = 1024;
    let r = x.cols();
    let partials: Vec<Vec<f64>> = x
        .as_slice()
        .par_chunks(BLOCK * r.max(1))
        .map(|chunk| {
            let mut g = vec![0.0f64; r * r];
            for row in chunk.chunks_exact(r) {
                for i in 0..r {
                    let a = row[i] as f64;
                    if a == 0.0 {
                        continue;
                    }
                    for j in 0..=i {
                        g[i * r + j] += a * row[j] as f64;
                    }
                }
            }
            g
        })
        .collect();
    let mut g = vec![0.0f64; r * r];
    for part in &partials {
        for (a, b) in g.iter_mut().zip(part) {
            *a += b;
        }
    }
    for i in 0..r {
        for j in 0..i {
            g[j * r + i] = g[i * r + j];
        }
    }
    g
}

/// An orthonormal basis of the column space of `y` (`n × l`), via the eigendecomposition of
/// `yᵀy` in `f64`, applied twice for orthogonality to working precision. Columns whose
/// singular value is below resolution are dropped, so the result may have fewer columns.
fn orthonormalize(y: &Matrix) -> Result<Matrix> {
    let mut q = orthonormalize_once(y)?;
    if q.cols() > 0 {
        q = orthonormalize_once(&q)?;
    }
    Ok(q)
}

fn orthonormalize_once(y: &Matrix) -> Result<Matrix> {
    let l = y.cols();
    if l == 0 {
        return Ok(Matrix::zeros(y.rows(), 0));
    }
    let g = gram_f64(y);
    let eig = symmetric_eigen(l, &g)?;
    let top = eig.values[0].max(0.0);
    let keep: Vec<usize> = (0..l)
        .filter(|&i| eig.values[i] > top * RELATIVE_RANK_CUTOFF && eig.values[i] > 0.0)
        .collect();
    // M = W Λ^{-1/2} (l × kept); Q = Y M.
    let mut m = Matrix::zeros(l, keep.len());
    for (j, &i) in keep.iter().enumerate() {
        let scale = 1.0 / eig.values[i].sqrt();
        for (r, x) in eig.vector(i).iter().enumerate() {
            m.set(r, j, (x * scale) as f32);
        }
    }
    Ok(product(y.view(), m.view()))
}

/// A `rows × cols` matrix of independent standard normal values from `seed` (Box–Muller).
fn gaussian(rows: usize, cols: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(rows * cols);
    while data.len() < rows * cols {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let rad = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        data.push((rad * c) as f32);
        if data.len() < rows * cols {
            data.push((rad * s) as f32);
        }
    }
    Matrix { rows, cols, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `p × c` matrix with singular values 10, 5, 2, 1, 0.5, … built from known factors.
    fn planted(p: usize, c: usize, rank: usize) -> Matrix {
        let u = gaussian(p, rank, 1);
        let v = gaussian(rank, c, 2);
        let qu = orthonormalize(&u).unwrap();
        let qv = orthonormalize(&v.transpose()).unwrap();
        let mut us = qu.clone();
        for r in 0..p {
            for i in 0..rank {
                us.set(r, i, qu.get(r, i) * 10.0 / (1u32 << i) as f32);
            }
        }
        us.matmul_t(&qv).unwrap()
    }

    fn check(a: &Matrix, k: usize, rank: usize) {
        let svd = truncated_svd(a, k).unwrap();
        for i in 0..k {
            let want = if i < rank {
                10.0 / (1u32 << i) as f32
            } else {
                0.0
            };
            assert!(
                (svd.s[i] - want).abs() < 1e-3,
                "σ{i} = {} vs {want}",
                svd.s[i]
            );
            if i < rank {
                // A v = σ u.
                let v = Matrix::from_vec(a.cols(), 1, svd.vt.row(i).to_vec()).unwrap();
                let av = a.matmul(&v).unwrap();
                for r in 0..a.rows() {
                    assert!((av.get(r, 0) - svd.s[i] * svd.u.get(r, i)).abs() < 1e-3);
                }
            }
        }
    }

    #[test]
    fn randomized_and_gram_methods_find_planted_spectrum() {
        // 4·(k+10) < min → randomized; otherwise Gram (tall and wide).
        check(&planted(300, 200, 5), 3, 5);
        check(&planted(60, 40, 5), 6, 5);
        check(&planted(30, 80, 4), 6, 4);
    }

    #[test]
    fn zero_matrix_and_oversized_k() {
        let svd = truncated_svd(&Matrix::zeros(5, 4), 3).unwrap();
        assert!(svd.s.iter().all(|&s| s == 0.0));
        assert!(svd.u.as_slice().iter().all(|&s| s == 0.0));
        let a = planted(6, 5, 2);
        let svd = truncated_svd(&a, 9).unwrap();
        assert_eq!(svd.s.len(), 9);
        assert!(svd.s[5..].iter().all(|&s| s == 0.0));
    }

    #[test]
    fn sparse_operand_agrees_with_dense() {
        let mut a = planted(400, 120, 6);
        for v in a.as_mut_slice() {
            *v = v.max(0.0);
        }
        let csr = Csr::from_dense(&a);
        let csr_t = csr.transpose();
        let dense = truncated_svd(&a, 4).unwrap();
        let sparse = truncated_svd_of(
            &Operand {
                dense: &a,
                sparse: Some((&csr, &csr_t)),
            },
            4,
        )
        .unwrap();
        for (x, y) in dense.s.iter().zip(&sparse.s) {
            assert!((x - y).abs() < 1e-3 * dense.s[0]);
        }
    }
}
