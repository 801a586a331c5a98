//! Which factors of a joint factorization are the common object, without supervision.
//!
//! Everything here rests on one statistic per factor, measured over the whole set: its
//! **border ratio**, the share of its heatmap mass that lies on the 1-cell border of the
//! feature maps divided by the border's share of all cells. A factor spread evenly over the
//! images has a ratio of about 1; the backgrounds of photographs reach their borders, objects
//! mostly do not, so object factors have low ratios.

use super::JointFactors;

/// Per-factor statistics over the set.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorStats {
    /// Heatmap mass on the 1-cell border of every image's feature map.
    pub border_mass: Vec<f64>,
    /// Heatmap mass over all cells.
    pub mass: Vec<f64>,
    /// Energy: heatmap mass times the L2 norm of the factor's concept vector (how much of
    /// the set's activation the factor accounts for).
    pub energy: Vec<f64>,
    /// Border ratio: `(border_mass / mass) / (border cells / cells)`; infinite for a factor
    /// without mass.
    pub border_ratio: Vec<f32>,
    /// The energy-weighted mean of the border ratios (the ratio of the activations as a
    /// whole): feature maps are weaker at their borders, so this is usually below 1.
    pub mean_border_ratio: f32,
}

/// Whether cell `i` of a `rows × cols` grid lies on its 1-cell border.
pub(crate) fn on_border(i: usize, rows: usize, cols: usize) -> bool {
    let (r, c) = (i / cols, i % cols);
    r == 0 || c == 0 || r + 1 == rows || c + 1 == cols
}

impl FactorStats {
    /// The statistics of `factors`.
    pub fn of(factors: &JointFactors) -> FactorStats {
        let k = factors.k();
        let mut border_mass = vec![0f64; k];
        let mut mass = vec![0f64; k];
        let (mut border_cells, mut cells) = (0usize, 0usize);
        for (i, g) in factors.grids().iter().enumerate() {
            let rows = factors.rows(i);
            for (cell, r) in rows.enumerate() {
                let border = on_border(cell, g.rows, g.cols);
                border_cells += usize::from(border);
                cells += 1;
                for (j, &x) in factors.u().row(r).iter().enumerate() {
                    mass[j] += f64::from(x);
                    if border {
                        border_mass[j] += f64::from(x);
                    }
                }
            }
        }
        let share = border_cells as f64 / cells.max(1) as f64;
        let energy: Vec<f64> = (0..k)
            .map(|j| mass[j] * f64::from(factors.concept_norm(j)))
            .collect();
        let border_ratio: Vec<f32> = (0..k)
            .map(|j| {
                if mass[j] > 0.0 && share > 0.0 {
                    (border_mass[j] / mass[j] / share) as f32
                } else {
                    f32::INFINITY
                }
            })
            .collect();
        let total: f64 = energy.iter().sum();
        let mean_border_ratio = if total > 0.0 {
            ((0..k)
                .filter(|&j| border_ratio[j].is_finite())
                .map(|j| energy[j] * f64::from(border_ratio[j]))
                .sum::<f64>()
                / total) as f32
        } else {
            1.0
        };
        FactorStats {
            border_mass,
            mass,
            energy,
            border_ratio,
            mean_border_ratio,
        }
    }

    /// The factor with the least border mass (the thesis' rule for K = 2); ties go to the
    /// lower index. `None` without factors.
    pub fn least_border_mass(&self) -> Option<usize> {
        (0..self.border_mass.len())
            .min_by(|&a, &b| self.border_mass[a].total_cmp(&self.border_mass[b]))
    }

    /// The factors whose border ratio is below `alpha` times the mean border ratio; when none
    /// is, the one with the lowest ratio. Factors without mass are never chosen (an empty
    /// result means no factor has mass).
    pub fn below_mean_ratio(&self, alpha: f32) -> Vec<usize> {
        let k = self.border_ratio.len();
        let level = alpha * self.mean_border_ratio;
        let chosen: Vec<usize> = (0..k)
            .filter(|&j| self.mass[j] > 0.0 && self.border_ratio[j] < level)
            .collect();
        if !chosen.is_empty() {
            return chosen;
        }
        (0..k)
            .filter(|&j| self.mass[j] > 0.0)
            .min_by(|&a, &b| self.border_ratio[a].total_cmp(&self.border_ratio[b]))
            .into_iter()
            .collect()
    }
}
