//! Symmetric eigendecomposition in `f64`: Householder tridiagonalisation followed by the
//! implicit QL algorithm with Wilkinson shifts (EISPACK `tred2`/`tql2`, as in JAMA), stored
//! transposed so that every inner loop runs along contiguous memory.

use super::kernel::dispatch;
use crate::{Error, Result};

/// Eigenvalues and eigenvectors of a symmetric matrix, eigenvalues in descending order.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// The order `n` of the matrix.
    pub n: usize,
    /// Eigenvalues, largest first.
    pub values: Vec<f64>,
    /// Eigenvectors as the rows of an `n × n` row-major array: row `i` belongs to `values[i]`.
    /// Each vector has unit norm and its entry of largest magnitude positive (the first such
    /// entry on ties), so the decomposition is reproducible.
    pub vectors: Vec<f64>,
}

impl SymmetricEigen {
    /// Eigenvector `i` (unit norm), belonging to `values[i]`.
    pub fn vector(&self, i: usize) -> &[f64] {
        &self.vectors[i * self.n..(i + 1) * self.n]
    }
}

/// Eigendecomposition of the symmetric `n × n` row-major matrix `a` (only its lower triangle
/// is read). Refuses a wrong length and non-finite entries.
pub fn symmetric_eigen(n: usize, a: &[f64]) -> Result<SymmetricEigen> {
    if n.checked_mul(n) != Some(a.len()) {
        return Err(Error::invalid(format!(
            "symmetric eigendecomposition: {} values cannot form a {n}×{n} matrix",
            a.len()
        )));
    }
    if let Some(pos) = a.iter().position(|v| !v.is_finite()) {
        return Err(Error::Numeric(format!(
            "symmetric eigendecomposition: entry ({}, {}) is {}",
            pos / n,
            pos % n,
            a[pos]
        )));
    }
    if n == 0 {
        return Ok(SymmetricEigen {
            n,
            values: Vec::new(),
            vectors: Vec::new(),
        });
    }
    struct Op<'a>(usize, &'a [f64]);
    impl pulp::WithSimd for Op<'_> {
        type Output = Result<SymmetricEigen>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
            // Plain loops over contiguous rows, vectorised for the dispatched instruction set.
            solve(self.0, self.1)
        }
    }
    dispatch(Op(n, a))
}

#[inline(always)]
fn solve(n: usize, a: &[f64]) -> Result<SymmetricEigen> {
    // w holds Vᵀ of the JAMA code: V[r][c] == w[c * n + r]. Start from the symmetric matrix.
    let mut w = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            w[i * n + j] = a[i * n + j];
            w[j * n + i] = a[i * n + j];
        }
    }
    let mut d = vec![0.0f64; n];
    let mut e = vec![0.0f64; n];
    tred2(n, &mut w, &mut d, &mut e);
    tql2(n, &mut w, &mut d, &mut e)?;

    // Sort descending (stable on ties, by index), fix signs.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| d[y].total_cmp(&d[x]));
    let mut values = Vec::with_capacity(n);
    let mut vectors = Vec::with_capacity(n * n);
    for &j in &order {
        values.push(d[j]);
        let v = &w[j * n..(j + 1) * n];
        let mut big = 0usize;
        for (i, x) in v.iter().enumerate() {
            if x.abs() > v[big].abs() {
                big = i;
            }
        }
        let sign = if v[big] < 0.0 { -1.0 } else { 1.0 };
        vectors.extend(v.iter().map(|x| x * sign));
    }
    Ok(SymmetricEigen { n, values, vectors })
}

/// Householder reduction to tridiagonal form; accumulates the transformations in `w` (= Vᵀ).
#[inline(always)]
fn tred2(n: usize, w: &mut [f64], d: &mut [f64], e: &mut [f64]) {
    for j in 0..n {
        d[j] = w[j * n + (n - 1)];
    }
    for i in (1..n).rev() {
        let mut scale = 0.0;
        let mut h = 0.0;
        for x in &d[..i] {
            scale += x.abs();
        }
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = w[j * n + (i - 1)];
                w[j * n + i] = 0.0;
                w[i * n + j] = 0.0;
            }
        } else {
            for x in &mut d[..i] {
                *x /= scale;
                h += *x * *x;
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                f = d[j];
                w[i * n + j] = f;
                let col = &w[j * n..j * n + i];
                g = e[j] + col[j] * f;
                for k in j + 1..i {
                    g += col[k] * d[k];
                    e[k] += col[k] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                let col = &mut w[j * n..j * n + i];
                for k in j..i {
                    col[k] -= f * e[k] + g * d[k];
                }
                d[j] = col[i - 1];
                w[j * n + i] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        w[i * n + (n - 1)] = w[i * n + i];
        w[i * n + i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = w[(i + 1) * n + k] / h;
            }
            for j in 0..=i {
                let (lo, hi) = w.split_at_mut((i + 1) * n);
                let next = &hi[..=i];
                let col = &mut lo[j * n..j * n + i + 1];
                let mut g = 0.0;
                for k in 0..=i {
                    g += next[k] * col[k];
                }
                for k in 0..=i {
                    col[k] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            w[(i + 1) * n + k] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = w[j * n + (n - 1)];
        w[j * n + (n - 1)] = 0.0;
    }
    w[(n - 1) * n + (n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL iterations on the tridiagonal matrix `(d, e)`, rotating the vectors in `w`.
#[inline(always)]
fn tql2(n: usize, w: &mut [f64], d: &mut [f64], e: &mut [f64]) -> Result<()> {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0f64;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n {
            if e[m].abs() <= eps * tst1 {
                break;
            }
            m += 1;
        }
        // e[n - 1] is zero, so m < n always holds here.
        let m = m.min(n - 1);
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                if iter > 60 {
                    return Err(Error::Numeric(format!(
                        "symmetric eigendecomposition did not converge (eigenvalue {l} of {n})"
                    )));
                }
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for x in &mut d[l + 2..n] {
                    *x -= h;
                }
                f += h;
                p = d[m];
                let mut c = 1.0;
                let mut c2 = c;
                let mut c3 = c;
                let el1 = e[l + 1];
                let mut s = 0.0;
                let mut s2 = 0.0;
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = w.split_at_mut((i + 1) * n);
                    let vi = &mut lo[i * n..];
                    let vi1 = &mut hi[..n];
                    for (a, b) in vi[..n].iter_mut().zip(vi1.iter_mut()) {
                        let hk = *b;
                        *b = s * *a + c * hk;
                        *a = c * *a - s * hk;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(n: usize, a: &[f64]) {
        let eig = symmetric_eigen(n, a).unwrap();
        let scale = a.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        for w in eig.values.windows(2) {
            assert!(w[0] >= w[1]);
        }
        // A v = λ v and orthonormality.
        for i in 0..n {
            let v = eig.vector(i);
            for r in 0..n {
                let av: f64 = (0..n).map(|c| a[r * n + c] * v[c]).sum();
                assert!((av - eig.values[i] * v[r]).abs() < 1e-9 * scale * n as f64);
            }
            for j in 0..n {
                let dot: f64 = v.iter().zip(eig.vector(j)).map(|(x, y)| x * y).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-10 * n as f64);
            }
        }
    }

    #[test]
    fn random_symmetric_matrices() {
        for n in [1, 2, 3, 7, 40] {
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let x = ((i * 31 + j * 17 + 7) % 23) as f64 / 7.0 - 1.5;
                    a[i * n + j] = x;
                    a[j * n + i] = x;
                }
            }
            check(n, &a);
        }
    }

    #[test]
    fn degenerate_and_zero_matrices() {
        check(4, &[0.0; 16]);
        let mut id = vec![0.0; 25];
        for i in 0..5 {
            id[i * 5 + i] = 2.0;
        }
        check(5, &id);
        let eig = symmetric_eigen(2, &[2.0, 1.0, 1.0, 2.0]).unwrap();
        assert!((eig.values[0] - 3.0).abs() < 1e-12 && (eig.values[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn refuses_bad_input() {
        assert!(symmetric_eigen(2, &[1.0; 3]).is_err());
        assert!(symmetric_eigen(2, &[1.0, f64::NAN, f64::NAN, 1.0]).is_err());
    }
}
