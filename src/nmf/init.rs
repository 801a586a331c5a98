//! Initial factors: NNDSVD, NNDSVDa and seeded random, as scikit-learn defines them.
//!
//! NNDSVD (Boutsidis & Gallopoulos 2008): from the top `K` singular triplets `(σ_j, x_j, y_j)`
//! of `A`, factor 0 is `√σ₀·(|x₀|, |y₀|)`; factor `j ≥ 1` keeps whichever of the positive or
//! negative parts of `(x_j, y_j)` has the larger product of norms, scaled by `√(σ_j·that
//! product)`. Entries below `1e-6` become zero. NNDSVDa then replaces every zero by the mean of
//! `A`. A triplet with `σ = 0` (past the rank of `A`) gives a zero factor.

use crate::linalg::{truncated_svd_of, Operand, Svd};
use crate::{Matrix, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Entries of the NNDSVD factors below this become zero (scikit-learn's `eps`).
pub(crate) const NNDSVD_ZERO: f64 = 1e-6;

/// NNDSVD factors `(U: P×K, V: K×C)`; with `fill`, zeros become `mean`.
pub(crate) fn nndsvd(op: &Operand<'_>, k: usize, fill: Option<f64>) -> Result<(Matrix, Matrix)> {
    Ok(from_svd(&truncated_svd_of(op, k)?, fill))
}

/// NNDSVD factors from the top `K` singular triplets of `A`.
pub(crate) fn from_svd(svd: &Svd, fill: Option<f64>) -> (Matrix, Matrix) {
    let zero_below = NNDSVD_ZERO;
    let (p, c, k) = (svd.u.rows(), svd.vt.cols(), svd.s.len());
    let mut u = Matrix::zeros(p, k);
    let mut v = Matrix::zeros(k, c);
    for j in 0..k {
        let s = svd.s[j] as f64;
        if s <= 0.0 {
            continue;
        }
        let x: Vec<f64> = (0..p).map(|r| svd.u.get(r, j) as f64).collect();
        let y: Vec<f64> = svd.vt.row(j).iter().map(|&t| t as f64).collect();
        let (xs, ys, scale) = if j == 0 {
            let root = s.sqrt();
            (
                x.iter().map(|t| t.abs()).collect::<Vec<_>>(),
                y.iter().map(|t| t.abs()).collect::<Vec<_>>(),
                (root, root),
            )
        } else {
            let norm = |it: &mut dyn Iterator<Item = f64>| it.map(|t| t * t).sum::<f64>().sqrt();
            let xp_n = norm(&mut x.iter().map(|t| t.max(0.0)));
            let yp_n = norm(&mut y.iter().map(|t| t.max(0.0)));
            let xn_n = norm(&mut x.iter().map(|t| (-t).max(0.0)));
            let yn_n = norm(&mut y.iter().map(|t| (-t).max(0.0)));
            let (mp, mn) = (xp_n * yp_n, xn_n * yn_n);
            let (xs, ys, xnrm, ynrm, sigma) = if mp > mn {
                (
                    x.iter().map(|t| t.max(0.0)).collect::<Vec<_>>(),
                    y.iter().map(|t| t.max(0.0)).collect::<Vec<_>>(),
                    xp_n,
                    yp_n,
                    mp,
                )
            } else {
                (
                    x.iter().map(|t| (-t).max(0.0)).collect(),
                    y.iter().map(|t| (-t).max(0.0)).collect(),
                    xn_n,
                    yn_n,
                    mn,
                )
            };
            if sigma <= 0.0 {
                continue;
            }
            let lbd = (s * sigma).sqrt();
            (xs, ys, (lbd / xnrm, lbd / ynrm))
        };
        for (r, t) in xs.iter().enumerate() {
            let w = t * scale.0;
            u.set(r, j, if w < zero_below { 0.0 } else { w as f32 });
        }
        for (col, t) in ys.iter().enumerate() {
            let h = t * scale.1;
            v.set(j, col, if h < zero_below { 0.0 } else { h as f32 });
        }
    }
    if let Some(mean) = fill {
        let mean = mean as f32;
        for x in u.as_mut_slice().iter_mut().chain(v.as_mut_slice()) {
            if *x == 0.0 {
                *x = mean;
            }
        }
    }
    (u, v)
}

/// Random factors as scikit-learn draws them: `|N(0, 1)| · √(mean(A) / K)`, reproducible for
/// a seed (ChaCha8 stream; `V` is drawn first, then `U`, row-major).
pub(crate) fn random(p: usize, c: usize, k: usize, mean: f64, seed: u64) -> (Matrix, Matrix) {
    let avg = (mean / k as f64).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |n: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            let rad = (-2.0 * u1.ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
            out.push((avg * (rad * c).abs()) as f32);
            if out.len() < n {
                out.push((avg * (rad * s).abs()) as f32);
            }
        }
        out
    };
    let v = draw(k * c);
    let u = draw(p * k);
    // `draw(n)` returns exactly n values, so both shapes fit.
    (
        Matrix::from_vec(p, k, u).expect("draw(p·k) has p·k values"),
        Matrix::from_vec(k, c, v).expect("draw(k·c) has k·c values"),
    )
}
