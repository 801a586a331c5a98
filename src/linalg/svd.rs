//! Truncated singular value decomposition: the top `k` singular triplets of a matrix.
//!
//! Two deterministic methods, picked from the shapes alone:
//! - randomized subspace iteration (Halko, Martinsson & Tropp 2011, the method behind
//!   scikit-learn's `randomized_svd`): a seeded Gaussian test matrix, `k + 10` columns
//!   rounded up to a multiple of 8, 7 power iterations (4 when `k` is at least a tenth of the smaller side), re-orthonormalised
//!   after every product; then an exact SVD of the small projected matrix. Its cost is a few
//!   dozen products with a thin matrix, and it reads a sparse matrix through its non-zeros only.
//! - the Gram matrix (`AᵀA` or `AAᵀ`, whichever is smaller) and its full eigendecomposition,
//!   when `k` is so close to the smaller side that the subspace would be nearly all of it.
//!   This method resolves singular values down to about `1e-3` of the largest (the Gram
//!   matrix is formed in `f32`); smaller ones are reported as zero.
//!
//! Small dense problems (Gram matrices, orthonormalisation) run in `f64`.

use super::kernel::{dispatch, View};
use super::{par_gemm, symmetric_eigen, Csr, Matrix};
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Extra columns of the randomized range finder (scikit-learn's default) …
const OVERSAMPLE: usize = 10;
/// … rounded up to a multiple of this (whole SIMD vectors in the sparse products).
const COLUMN_MULTIPLE: usize = 8;
/// Power iterations for small `k` (scikit-learn's `n_iter='auto'`).
const POWER_ITERS_SMALL_K: usize = 7;
/// Power iterations when `k >= min(rows, cols) / 10`.
const POWER_ITERS_LARGE_K: usize = 4;
/// Seed of the Gaussian test matrix: fixed, so the decomposition is reproducible.
const TEST_MATRIX_SEED: u64 = 0x5eed_5fd0;
/// Directions whose squared singular value falls below this fraction of the largest are
/// treated as exactly zero (they are below `f32` resolution).
const RELATIVE_RANK_CUTOFF: f64 = 1e-10;
/// The same cutoff for a Gram matrix formed in `f32` (its resolution is about 1e-7).
const RELATIVE_RANK_CUTOFF_F32: f64 = 1e-6;

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
            dense: Some(a),
            sparse: None,
        },
        k,
    )
}

/// A batch of `B` matrices (`P × C` each) as the SVD sees them: the products it needs, on
/// whatever backend holds the matrices. The CPU [`Operand`] is a batch of one; the candle
/// tensor path implements it for a `B × P × C` tensor. Small per-item matrices (`l × l`) live
/// on the host in `f64`.
pub(crate) trait BatchOperand {
    /// A batch of tall matrices (`P × l` or `C × l` per item).
    type Tall;
    /// `B`.
    fn batch(&self) -> usize;
    /// `(P, C)`.
    fn shape(&self) -> (usize, usize);
    /// Puts one host matrix per item onto the backend (all of one shape).
    fn upload(&self, items: &[Matrix]) -> Result<Self::Tall>;
    /// The items back on the host.
    fn download(&self, y: &Self::Tall) -> Result<Vec<Matrix>>;
    /// Columns of `y`.
    fn width(&self, y: &Self::Tall) -> usize;
    /// `A · X`.
    fn mul(&self, x: &Self::Tall) -> Result<Self::Tall>;
    /// `Aᵀ · X`.
    fn t_mul(&self, x: &Self::Tall) -> Result<Self::Tall>;
    /// `YᵀY` per item (row-major `l × l`), accumulated in `f64` when `exact`.
    fn gram(&self, y: &Self::Tall, exact: bool) -> Result<Vec<Vec<f64>>>;
    /// `Y · M_b` for each item `b` (`M_b` all of one shape).
    fn right_mul(&self, y: &Self::Tall, m: &[Matrix]) -> Result<Self::Tall>;
    /// The Gram matrix of the smaller side per item: `AᵀA` when `P ≥ C`, else `AAᵀ`.
    fn side_gram(&self) -> Result<Vec<Vec<f64>>>;
}

/// A matrix to decompose: its dense entries, its sparse form, or both (the products then go
/// through the non-zeros). With neither it is the empty `0 × 0` matrix.
pub(crate) struct Operand<'a> {
    pub dense: Option<&'a Matrix>,
    pub sparse: Option<&'a Csr>,
}

impl BatchOperand for Operand<'_> {
    type Tall = Matrix;

    fn batch(&self) -> usize {
        1
    }

    fn shape(&self) -> (usize, usize) {
        match (self.dense, self.sparse) {
            (Some(d), _) => d.shape(),
            (None, Some(s)) => (s.rows(), s.cols()),
            (None, None) => (0, 0),
        }
    }

    fn upload(&self, items: &[Matrix]) -> Result<Matrix> {
        Ok(items[0].clone())
    }

    fn download(&self, y: &Matrix) -> Result<Vec<Matrix>> {
        Ok(vec![y.clone()])
    }

    fn width(&self, y: &Matrix) -> usize {
        y.cols()
    }

    fn mul(&self, x: &Matrix) -> Result<Matrix> {
        Ok(match (self.sparse, self.dense) {
            (Some(a), _) => a.mul_unchecked(x),
            (None, Some(d)) => product(d.view(), x.view()),
            (None, None) => Matrix::zeros(0, x.cols()),
        })
    }

    /// Computed as `(Xᵀ A)ᵀ` for dense `A`, so that `A` is read along its rows.
    fn t_mul(&self, x: &Matrix) -> Result<Matrix> {
        Ok(match (self.sparse, self.dense) {
            (Some(a), _) => a.t_mul_unchecked(x),
            (None, Some(d)) => product(x.view().t(), d.view()).transpose(),
            (None, None) => Matrix::zeros(0, x.cols()),
        })
    }

    fn gram(&self, y: &Matrix, exact: bool) -> Result<Vec<Vec<f64>>> {
        Ok(vec![if exact {
            gram_f64(y)
        } else {
            symmetric_f64(&product(y.view().t(), y.view()))
        }])
    }

    fn right_mul(&self, y: &Matrix, m: &[Matrix]) -> Result<Matrix> {
        Ok(product(y.view(), m[0].view()))
    }

    fn side_gram(&self) -> Result<Vec<Vec<f64>>> {
        let g = match (self.dense, self.sparse) {
            (Some(a), _) if a.rows() >= a.cols() => product(a.view().t(), a.view()),
            (Some(a), _) => product(a.view(), a.view().t()),
            (None, Some(s)) => s.side_gram(),
            (None, None) => Matrix::zeros(0, 0),
        };
        Ok(vec![symmetric_f64(&g)])
    }
}

/// A square `f32` matrix as `f64`, symmetrised (products are symmetric only up to rounding).
pub(crate) fn symmetric_f64(g: &Matrix) -> Vec<f64> {
    let l = g.rows();
    let mut g64: Vec<f64> = g.as_slice().iter().map(|&v| v as f64).collect();
    for i in 0..l {
        for j in 0..i {
            let m = 0.5 * (g64[i * l + j] + g64[j * l + i]);
            g64[i * l + j] = m;
            g64[j * l + i] = m;
        }
    }
    g64
}

fn product(l: View<'_>, r: View<'_>) -> Matrix {
    let mut out = Matrix::zeros(l.rows, r.cols);
    par_gemm(out.as_mut_slice(), l, r);
    out
}

/// [`truncated_svd`] on an operand whose entries are known to be finite.
pub(crate) fn truncated_svd_of(op: &Operand<'_>, k: usize) -> Result<Svd> {
    let mut all = batch_svd(op, k)?;
    // A batch of one gives one decomposition.
    Ok(all.remove(0))
}

/// The top `k` singular triplets of every item of `op` (see the module docs).
pub(crate) fn batch_svd<O: BatchOperand>(op: &O, k: usize) -> Result<Vec<Svd>> {
    let (p, c) = op.shape();
    let batch = op.batch();
    let small = p.min(c);
    let mut out: Vec<Svd> = (0..batch)
        .map(|_| Svd {
            u: Matrix::zeros(p, k),
            s: vec![0.0; k],
            vt: Matrix::zeros(k, c),
        })
        .collect();
    if k == 0 || small == 0 || batch == 0 {
        return Ok(out);
    }
    let l = (k + OVERSAMPLE)
        .next_multiple_of(COLUMN_MULTIPLE)
        .min(small);
    if 4 * l >= small {
        return gram_method(op, k);
    }
    let q = randomized_basis(op, k, l)?;
    // Rayleigh–Ritz: Bᵀ = AᵀQ (c × r); the SVD of B from the eigenvectors of BBᵀ in f64.
    let r = op.width(&q);
    if r == 0 {
        return Ok(out);
    }
    let bt = op.t_mul(&q)?;
    let grams = op.gram(&bt, true)?;
    // W_b (r × k): the leading eigenvectors as columns (zero past the numerical rank).
    let mut ws = Vec::with_capacity(batch);
    let mut sigmas = Vec::with_capacity(batch);
    for g in &grams {
        let eig = symmetric_eigen(r, g)?;
        let top = eig.values[0].max(0.0);
        let kept = (0..k.min(r))
            .take_while(|&i| eig.values[i] > top * RELATIVE_RANK_CUTOFF && eig.values[i] > 0.0)
            .count();
        let mut w = Matrix::zeros(r, k);
        for i in 0..kept {
            for (row, x) in eig.vector(i).iter().enumerate() {
                w.set(row, i, *x as f32);
            }
        }
        ws.push(w);
        sigmas.push(
            eig.values[..kept]
                .iter()
                .map(|v| v.sqrt())
                .collect::<Vec<f64>>(),
        );
    }
    let us = op.download(&op.right_mul(&q, &ws)?)?;
    let vs = op.download(&op.right_mul(&bt, &ws)?)?;
    for (b, o) in out.iter_mut().enumerate() {
        for (i, &sigma) in sigmas[b].iter().enumerate() {
            o.s[i] = sigma as f32;
            for row in 0..p {
                o.u.set(row, i, us[b].get(row, i));
            }
            for (col, dst) in o.vt.row_mut(i).iter_mut().enumerate() {
                *dst = (vs[b].get(col, i) as f64 / sigma) as f32;
            }
        }
    }
    Ok(out)
}

/// The triplets from the eigendecomposition of the `f32` Gram matrix of the smaller side:
/// its eigenvectors are the singular vectors of that side, `σ = √λ`, and the other side is
/// `A v / σ` (or `Aᵀ u / σ`). The Gram matrix resolves eigenvalues to about `1e-6` of the
/// largest, so singular values below about `1e-3` of the largest are reported as zero.
fn gram_method<O: BatchOperand>(op: &O, k: usize) -> Result<Vec<Svd>> {
    let (p, c) = op.shape();
    let n = p.min(c);
    let kk = k.min(n);
    let mut bases = Vec::with_capacity(op.batch());
    let mut sigmas = Vec::with_capacity(op.batch());
    for g in op.side_gram()? {
        let eig = symmetric_eigen(n, &g)?;
        let top = eig.values[0].max(0.0);
        let kept = (0..kk)
            .take_while(|&i| eig.values[i] > top * RELATIVE_RANK_CUTOFF_F32 && eig.values[i] > 0.0)
            .count();
        let mut basis = Matrix::zeros(n, k);
        for i in 0..kept {
            for (r, x) in eig.vector(i).iter().enumerate() {
                basis.set(r, i, *x as f32);
            }
        }
        bases.push(basis);
        sigmas.push(
            eig.values[..kept]
                .iter()
                .map(|v| v.sqrt())
                .collect::<Vec<f64>>(),
        );
    }
    let basis = op.upload(&bases)?;
    let other = op.download(&if p >= c {
        op.mul(&basis)?
    } else {
        op.t_mul(&basis)?
    })?;
    Ok(bases
        .iter()
        .zip(&other)
        .zip(&sigmas)
        .map(|((basis, other), sig)| {
            let mut svd = Svd {
                u: Matrix::zeros(p, k),
                s: vec![0.0; k],
                vt: Matrix::zeros(k, c),
            };
            for (i, &sigma) in sig.iter().enumerate() {
                svd.s[i] = sigma as f32;
                for r in 0..n {
                    let x = basis.get(r, i);
                    if p >= c {
                        svd.vt.set(i, r, x);
                    } else {
                        svd.u.set(r, i, x);
                    }
                }
                for r in 0..other.rows() {
                    let y = (other.get(r, i) as f64 / sigma) as f32;
                    if p >= c {
                        svd.u.set(r, i, y);
                    } else {
                        svd.vt.set(i, r, y);
                    }
                }
            }
            svd
        })
        .collect())
}

/// An orthonormal basis (`rows × ≤ l`) of the range of `A·Ω` after the power iterations.
fn randomized_basis<O: BatchOperand>(op: &O, k: usize, l: usize) -> Result<O::Tall> {
    let (p, c) = op.shape();
    let iters = if 10 * k < p.min(c) {
        POWER_ITERS_SMALL_K
    } else {
        POWER_ITERS_LARGE_K
    };
    let omega = gaussian(c, l, TEST_MATRIX_SEED);
    // Between products a single pass from the f32 Gram matrix keeps the columns independent
    // (scikit-learn uses an LU factorization there); the final basis gets two f64 passes.
    let mut y = op.mul(&op.upload(&vec![omega; op.batch()])?)?;
    for _ in 0..iters {
        let q = orthonormalize_once(op, &y, false)?;
        if op.width(&q) == 0 {
            return Ok(q);
        }
        let z = orthonormalize_once(op, &op.t_mul(&q)?, false)?;
        if op.width(&z) == 0 {
            return op.upload(&vec![Matrix::zeros(p, 0); op.batch()]);
        }
        y = op.mul(&z)?;
    }
    orthonormalize(op, &y)
}

/// `XᵀX` in `f64` (`X` is `n × r`, `r` small), in parallel over fixed row blocks.
fn gram_f64(x: &Matrix) -> Vec<f64> {
    const BLOCK: usize = 1024;
    struct Op<'a> {
        rows: &'a [f32],
        r: usize,
    }
    impl pulp::WithSimd for Op<'_> {
        type Output = Vec<f64>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<f64> {
            // Lower triangle by rank-1 updates; plain loops, vectorised by the dispatch.
            let r = self.r;
            let mut g = vec![0.0f64; r * r];
            let mut row64 = vec![0.0f64; r];
            for row in self.rows.chunks_exact(r) {
                for (d, s) in row64.iter_mut().zip(row) {
                    *d = *s as f64;
                }
                for i in 0..r {
                    let a = row64[i];
                    if a == 0.0 {
                        continue;
                    }
                    for (gj, xj) in g[i * r..i * r + i + 1].iter_mut().zip(&row64[..=i]) {
                        *gj += a * xj;
                    }
                }
            }
            g
        }
    }
    let r = x.cols();
    if r == 0 {
        return Vec::new();
    }
    let partials: Vec<Vec<f64>> = x
        .as_slice()
        .par_chunks(BLOCK * r)
        .map(|rows| dispatch(Op { rows, r }))
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

/// An orthonormal basis of the column space of every item of `y` (`n × l`), via the
/// eigendecomposition of `yᵀy` in `f64`. Directions whose singular value is below resolution
/// are dropped; items of a batch keep a common width, padded with zero columns.
fn orthonormalize<O: BatchOperand>(op: &O, y: &O::Tall) -> Result<O::Tall> {
    // One pass suffices: the f64 Gram matrix of a well-conditioned Y (every product is
    // re-orthonormalised, and directions below resolution are dropped) yields columns
    // orthonormal to the f32 precision in which Q is stored.
    orthonormalize_once(op, y, true)
}

/// One pass of [`orthonormalize`]; the Gram matrix in `f64` (`exact`) or from the `f32`
/// product (fast, enough between power iterations).
fn orthonormalize_once<O: BatchOperand>(op: &O, y: &O::Tall, exact: bool) -> Result<O::Tall> {
    let l = op.width(y);
    let cutoff = if exact {
        RELATIVE_RANK_CUTOFF
    } else {
        RELATIVE_RANK_CUTOFF_F32
    };
    let mut kept_per_item = Vec::new();
    for g in op.gram(y, exact)? {
        if l == 0 {
            kept_per_item.push((Vec::new(), Vec::new()));
            continue;
        }
        let eig = symmetric_eigen(l, &g)?;
        let top = eig.values[0].max(0.0);
        let keep: Vec<usize> = (0..l)
            .filter(|&i| eig.values[i] > top * cutoff && eig.values[i] > 0.0)
            .collect();
        let cols: Vec<Vec<f32>> = keep
            .iter()
            .map(|&i| {
                let scale = 1.0 / eig.values[i].sqrt();
                eig.vector(i).iter().map(|x| (x * scale) as f32).collect()
            })
            .collect();
        kept_per_item.push((keep, cols));
    }
    // M_b = W Λ^{-1/2} (l × width), zero-padded to the widest item; Q = Y M.
    let width = kept_per_item.iter().map(|k| k.0.len()).max().unwrap_or(0);
    let ms: Vec<Matrix> = kept_per_item
        .iter()
        .map(|(_, cols)| {
            let mut m = Matrix::zeros(l, width);
            for (j, col) in cols.iter().enumerate() {
                for (r, x) in col.iter().enumerate() {
                    m.set(r, j, *x);
                }
            }
            m
        })
        .collect();
    op.right_mul(y, &ms)
}

/// A `rows × cols` matrix of independent standard normal values from `seed` (Box–Muller).
pub(crate) fn gaussian(rows: usize, cols: usize, seed: u64) -> Matrix {
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
        let op = Operand {
            dense: Some(&u),
            sparse: None,
        };
        let qu = orthonormalize(&op, &u).unwrap();
        let qv = orthonormalize(&op, &v.transpose()).unwrap();
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
        let csr = Csr::from_dense(&a).unwrap();
        let dense = truncated_svd(&a, 4).unwrap();
        let sparse = truncated_svd_of(
            &Operand {
                dense: Some(&a),
                sparse: Some(&csr),
            },
            4,
        )
        .unwrap();
        let only_sparse = truncated_svd_of(
            &Operand {
                dense: None,
                sparse: Some(&csr),
            },
            4,
        )
        .unwrap();
        assert_eq!(sparse, only_sparse);
        for (x, y) in dense.s.iter().zip(&sparse.s) {
            assert!((x - y).abs() < 1e-3 * dense.s[0]);
        }
    }
}
