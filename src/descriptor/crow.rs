//! CroW weighting (Kalantidis, Mellina & Osindero, "Cross-dimensional Weighting for
//! Aggregated Deep Convolutional Features", ECCV workshops 2016), as in the authors' code.
//!
//! - **Channel weights** (thesis eq. 5.4): `Q_c` is the fraction of cells where channel `c` is
//!   positive, and `W_c = ln(Σ_c' Q_c' / Q_c)`: rare channels weigh more. A channel that is
//!   never active gets weight 0 (its activations are all zero anyway, and the logarithm would
//!   be infinite).
//! - **Spatial weights**: `S_p = Σ_c A_pc`, the total activation of cell `p`, normalised as
//!   `(S_p / ‖S‖₂)^½` (the paper's `a = 2, b = 2`).

use crate::Matrix;

/// CroW channel weights of `a` (cells × channels): `ln(Σ Q / Q_c)`, 0 for never-active
/// channels. All zeros when no channel is ever active.
pub fn channel_weights(a: &Matrix) -> Vec<f32> {
    let (cells, channels) = a.shape();
    let mut positive = vec![0usize; channels];
    for p in 0..cells {
        for (n, &v) in positive.iter_mut().zip(a.row(p)) {
            if v > 0.0 {
                *n += 1;
            }
        }
    }
    channel_weights_from_counts(&positive, cells)
}

/// [`channel_weights`] from each channel's number of positive cells among `cells` (for
/// activations counted elsewhere, e.g. on a GPU).
pub(crate) fn channel_weights_from_counts(positive: &[usize], cells: usize) -> Vec<f32> {
    let q: Vec<f64> = positive
        .iter()
        .map(|&n| n as f64 / cells.max(1) as f64)
        .collect();
    let total: f64 = q.iter().sum();
    q.iter()
        .map(|&qc| {
            if qc > 0.0 {
                (total / qc).ln() as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// CroW spatial weights of `a` (cells × channels), one per cell: `(S_p / ‖S‖₂)^½` with `S_p`
/// the sum of cell `p`'s (non-negative) activations. All zeros for an all-zero `a`.
pub fn spatial_weights(a: &Matrix) -> Vec<f32> {
    let s: Vec<f64> = (0..a.rows())
        .map(|p| a.row(p).iter().map(|&v| f64::from(v.max(0.0))).sum())
        .collect();
    let norm = s.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        s.iter().map(|v| (v / norm).sqrt() as f32).collect()
    } else {
        vec![0.0; s.len()]
    }
}

/// `a` with each column `c` multiplied by `weights[c]`.
pub(crate) fn scale_channels(a: &Matrix, weights: &[f32]) -> Matrix {
    debug_assert_eq!(a.cols(), weights.len());
    let mut out = a.clone();
    for p in 0..out.rows() {
        for (v, w) in out.row_mut(p).iter_mut().zip(weights) {
            *v *= w;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_weights_by_hand() {
        // 4 cells × 3 channels. Channel 0 active in 4/4 cells, channel 1 in 1/4, channel 2
        // never: Q = (1, 0.25, 0), ΣQ = 1.25, W = (ln 1.25, ln 5, 0).
        let a = Matrix::from_vec(
            4,
            3,
            vec![
                1.0, 0.0, 0.0, //
                2.0, 3.0, 0.0, //
                0.5, 0.0, 0.0, //
                4.0, 0.0, 0.0,
            ],
        )
        .unwrap();
        let w = channel_weights(&a);
        assert!((w[0] - 1.25f32.ln()).abs() < 1e-6, "{w:?}");
        assert!((w[1] - 5f32.ln()).abs() < 1e-6, "{w:?}");
        assert_eq!(w[2], 0.0);
        assert_eq!(channel_weights(&Matrix::zeros(4, 3)), vec![0.0; 3]);
    }

    #[test]
    fn spatial_weights_by_hand() {
        // Cell sums S = (3, 4, 0): ‖S‖ = 5, weights (√0.6, √0.8, 0).
        let a = Matrix::from_vec(3, 2, vec![1.0, 2.0, 4.0, 0.0, 0.0, 0.0]).unwrap();
        let s = spatial_weights(&a);
        assert!((s[0] - 0.6f32.sqrt()).abs() < 1e-6);
        assert!((s[1] - 0.8f32.sqrt()).abs() < 1e-6);
        assert_eq!(s[2], 0.0);
        assert_eq!(spatial_weights(&Matrix::zeros(2, 2)), vec![0.0; 2]);
    }
}
