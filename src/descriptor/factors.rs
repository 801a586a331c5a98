//! The factor side of the NMF descriptors: blurring heatmaps and the V+U concept vectors.
//! (Keeping the factors that lie inside a box is [`crate::heatmap::filter_factors`].)

use crate::{CellGrid, Matrix};

/// Side of the Gaussian kernel that smooths heatmaps for NMF V+U (thesis: 13 × 13).
pub const BLUR_SIZE: usize = 13;
/// Variance of that Gaussian, in cells² (thesis: 2).
pub const BLUR_VARIANCE: f64 = 2.0;

/// The normalised 1-D Gaussian of `size` taps and variance `variance`, centred; the 2-D
/// kernel is its outer product with itself.
pub fn gaussian_taps(size: usize, variance: f64) -> Vec<f32> {
    let half = (size as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..size)
        .map(|i| {
            let x = i as f64 - half;
            (-x * x / (2.0 * variance)).exp()
        })
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| (v / s) as f32).collect()
}

/// Each column of `u` (`cells × K`, cells row-major over a `rows × cols` grid) convolved with
/// the separable 2-D Gaussian of [`BLUR_SIZE`] taps and [`BLUR_VARIANCE`], zero padding,
/// output the same size as the input.
pub fn blur_heatmaps(u: &Matrix, rows: usize, cols: usize) -> Matrix {
    let taps = gaussian_taps(BLUR_SIZE, BLUR_VARIANCE);
    let half = (BLUR_SIZE / 2) as isize;
    let k = u.cols();
    let mut out = Matrix::zeros(u.rows(), k);
    let mut plane = vec![0f32; rows * cols];
    let mut tmp = vec![0f32; rows * cols];
    for j in 0..k {
        for (p, v) in plane.iter_mut().enumerate() {
            *v = u.get(p, j);
        }
        // Along rows (x), then along columns (y).
        for r in 0..rows {
            for c in 0..cols {
                let mut s = 0f32;
                for (t, &g) in taps.iter().enumerate() {
                    let cc = c as isize + t as isize - half;
                    if (0..cols as isize).contains(&cc) {
                        s += g * plane[r * cols + cc as usize];
                    }
                }
                tmp[r * cols + c] = s;
            }
        }
        for r in 0..rows {
            for c in 0..cols {
                let mut s = 0f32;
                for (t, &g) in taps.iter().enumerate() {
                    let rr = r as isize + t as isize - half;
                    if (0..rows as isize).contains(&rr) {
                        s += g * tmp[rr as usize * cols + c];
                    }
                }
                out.set(r * cols + c, j, s);
            }
        }
    }
    out
}

/// The V+U concept vectors of all `K` factors: with `U′` the heatmaps blurred by the Gaussian
/// of [`blur_heatmaps`], each column scaled to unit norm, `V′ = U′ᵀ·U′·V` (`K × C`). Row `k`
/// is concept `k` plus the concepts whose heatmaps overlap its own, weighted by the overlap.
/// A factor whose blurred heatmap is zero contributes nothing (its column of `U′` stays zero).
pub fn vu_concepts(u: &Matrix, v: &Matrix, grid: &CellGrid) -> Matrix {
    let blurred = blur_heatmaps(u, grid.rows, grid.cols);
    let (cells, k) = blurred.shape();
    // U′ as K rows of unit norm (K × cells).
    let mut up = Matrix::zeros(k, cells);
    for j in 0..k {
        let norm = (0..cells)
            .map(|p| f64::from(blurred.get(p, j)).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for p in 0..cells {
                up.set(j, p, (f64::from(blurred.get(p, j)) / norm) as f32);
            }
        }
    }
    // G = U′ᵀU′ (K × K), then V′ = G · V.
    let mut out = Matrix::zeros(k, v.cols());
    for a in 0..k {
        for b in 0..k {
            let g: f32 = up.row(a).iter().zip(up.row(b)).map(|(x, y)| x * y).sum();
            if g == 0.0 {
                continue;
            }
            for (o, &x) in out.row_mut(a).iter_mut().zip(v.row(b)) {
                *o += g * x;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: usize, cols: usize) -> CellGrid {
        CellGrid {
            rows,
            cols,
            image_width: cols as u32 * 10,
            image_height: rows as u32 * 10,
        }
    }

    #[test]
    fn gaussian_of_variance_two() {
        let g = gaussian_taps(13, 2.0);
        assert_eq!(g.len(), 13);
        assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // g(x) ∝ exp(−x²/4).
        assert!((g[7] / g[6] - (-0.25f32).exp()).abs() < 1e-6);
        assert!((g[8] / g[6] - (-1f32).exp()).abs() < 1e-6);
        assert_eq!(g[0], g[12]);
    }

    #[test]
    fn blur_spreads_an_impulse_as_the_kernel_with_zero_padding() {
        // An impulse in the middle of a 15 × 15 grid gives the full 13 × 13 kernel.
        let (rows, cols) = (15, 15);
        let mut u = Matrix::zeros(rows * cols, 1);
        u.set(7 * cols + 7, 0, 1.0);
        let b = blur_heatmaps(&u, rows, cols);
        let g = gaussian_taps(13, 2.0);
        for r in 0..rows {
            for c in 0..cols {
                let (dr, dc) = (r as isize - 7, c as isize - 7);
                let want = if dr.abs() <= 6 && dc.abs() <= 6 {
                    g[(dr + 6) as usize] * g[(dc + 6) as usize]
                } else {
                    0.0
                };
                assert!((b.get(r * cols + c, 0) - want).abs() < 1e-7);
            }
        }
        // In a corner, zero padding loses the mass that falls outside.
        let mut u = Matrix::zeros(rows * cols, 1);
        u.set(0, 0, 1.0);
        let total: f32 = blur_heatmaps(&u, rows, cols).as_slice().iter().sum();
        let inside: f32 = g[6..].iter().sum();
        assert!((total - inside * inside).abs() < 1e-6);
    }

    #[test]
    fn vu_on_two_factors_by_hand() {
        // A 1 × 1 grid makes the blur a multiplication by the kernel's centre tap, which the
        // column normalisation removes: U′ columns are (1) for both factors, so
        // U′ᵀU′ = [[1, 1], [1, 1]] and V′ = [v0 + v1, v0 + v1].
        let g = grid(1, 1);
        let u = Matrix::from_vec(1, 2, vec![2.0, 5.0]).unwrap();
        let v = Matrix::from_vec(2, 3, vec![1.0, 0.0, 2.0, 0.0, 3.0, 1.0]).unwrap();
        let vp = vu_concepts(&u, &v, &g);
        assert_eq!(vp.as_slice(), &[1.0, 3.0, 3.0, 1.0, 3.0, 3.0]);

        // Two factors on a 1 × 2 grid. The blur mixes the two cells with the taps
        // g0 = centre, g1 = neighbour: heatmap (a, b) becomes (g0·a + g1·b, g1·a + g0·b).
        // Factor 0 = (1, 0) → (g0, g1); factor 1 = (0, 1) → (g1, g0). Both have norm
        // n = √(g0² + g1²), and their inner product after normalisation is 2·g0·g1 / n².
        let g = grid(1, 2);
        let u = Matrix::from_vec(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let vp = vu_concepts(&u, &v, &g);
        let t = gaussian_taps(13, 2.0);
        let (g0, g1) = (t[6], t[7]);
        let c = 2.0 * g0 * g1 / (g0 * g0 + g1 * g1);
        let want = [
            1.0 + c * 0.0,
            0.0 + c * 3.0,
            2.0 + c * 1.0,
            c * 1.0 + 0.0,
            c * 0.0 + 3.0,
            c * 2.0 + 1.0,
        ];
        for (x, w) in vp.as_slice().iter().zip(want) {
            assert!((x - w).abs() < 1e-5, "{:?} vs {want:?}", vp.as_slice());
        }
        // A factor with an all-zero heatmap keeps a zero row and adds nothing to the others.
        let u = Matrix::from_vec(2, 2, vec![1.0, 0.0, 0.0, 0.0]).unwrap();
        let vp = vu_concepts(&u, &v, &g);
        assert_eq!(vp.row(1), &[0.0, 0.0, 0.0]);
        for (x, w) in vp.row(0).iter().zip([1.0, 0.0, 2.0]) {
            assert!((x - w).abs() < 1e-6);
        }
    }
}
