//! Pooled descriptors of one activation map (cells × channels): MAC, SPoC, GeM, CroW and the
//! regions of R-MAC. Every function returns the raw pooled vector; normalisation, whitening
//! and the sum over regions are the caller's.

use super::crow;
use crate::Matrix;

/// Floor applied before GeM's power (as `clamp(min=eps)` in the authors' code), so a zero
/// activation does not make the root of a sum of zeros undefined.
pub const GEM_EPS: f32 = 1e-6;
/// Desired overlap of neighbouring R-MAC regions (Tolias et al.).
pub const RMAC_OVERLAP: f64 = 0.4;
/// Added to a region's norm before normalising it, as in the authors' code.
pub const REGION_NORM_EPS: f32 = 1e-6;

/// MAC: the maximum of each channel over the cells (Tolias, Sicre & Jégou, ICLR 2016).
pub fn mac(a: &Matrix) -> Vec<f32> {
    // All cells as one row of `rows` columns.
    max_over(a, 0, 0, 1, a.rows(), a.rows())
}

/// SPoC: the sum of each channel over the cells (Babenko & Lempitsky, ICCV 2015, without the
/// centre prior).
pub fn spoc(a: &Matrix) -> Vec<f32> {
    let mut out = vec![0f64; a.cols()];
    for p in 0..a.rows() {
        for (o, &v) in out.iter_mut().zip(a.row(p)) {
            *o += f64::from(v);
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// GeM: `(mean_p max(A_pc, ε)^p)^(1/p)` per channel (Radenović, Tolias & Chum, TPAMI 2018).
pub fn gem(a: &Matrix, p: f32) -> Vec<f32> {
    let p = f64::from(p);
    // Small integer powers (the usual p = 3) by multiplication: equal up to rounding, and
    // several times faster than powf.
    let int_p = (p.fract() == 0.0 && (1.0..=16.0).contains(&p)).then_some(p as i32);
    let mut out = vec![0f64; a.cols()];
    for r in 0..a.rows() {
        for (o, &v) in out.iter_mut().zip(a.row(r)) {
            let x = f64::from(v.max(GEM_EPS));
            *o += match int_p {
                Some(i) => x.powi(i),
                None => x.powf(p),
            };
        }
    }
    let n = a.rows().max(1) as f64;
    out.into_iter()
        .map(|s| (s / n).powf(1.0 / p) as f32)
        .collect()
}

/// CroW: the sum of the cells weighted by the spatial weights, each channel then multiplied by
/// its channel weight when `channel_weighting` is set (see [`crow`]).
pub fn crow_pool(a: &Matrix, channel_weighting: bool) -> Vec<f32> {
    let s = crow::spatial_weights(a);
    let mut out = vec![0f64; a.cols()];
    for (p, &w) in s.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        for (o, &v) in out.iter_mut().zip(a.row(p)) {
            *o += f64::from(w) * f64::from(v);
        }
    }
    let mut out: Vec<f32> = out.into_iter().map(|v| v as f32).collect();
    if channel_weighting {
        for (o, w) in out.iter_mut().zip(crow::channel_weights(a)) {
            *o *= w;
        }
    }
    out
}

/// One square R-MAC region: rows `row..row + size`, columns `col..col + size` of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First row.
    pub row: usize,
    /// First column.
    pub col: usize,
    /// Side, in cells.
    pub size: usize,
}

/// The R-MAC regions of a `rows × cols` grid at `levels` scales, exactly as the authors' code
/// (`rmac` in cnnimageretrieval-pytorch, after Tolias et al.'s MATLAB): at scale `l` square
/// regions of side `⌊2·min(rows, cols)/(l + 1)⌋`, spread uniformly with about 40% overlap,
/// with one extra region along the longer side chosen so that the overlap at the coarsest
/// scale is closest to 40%. Regions of side 0 are left out.
pub fn rmac_regions(rows: usize, cols: usize, levels: usize) -> Vec<Region> {
    let mut out = Vec::new();
    if rows == 0 || cols == 0 {
        return out;
    }
    let (h, w) = (rows as f64, cols as f64);
    let side = h.min(w);
    let long = h.max(w);
    // Number of extra regions along the longer side: argmin over steps 2..=7.
    let mut best = (f64::INFINITY, 0usize);
    for (i, steps) in (2..=7).enumerate() {
        let b = (long - side) / (steps as f64 - 1.0);
        let err = ((side * side - side * b) / (side * side) - RMAC_OVERLAP).abs();
        if err < best.0 {
            best = (err, i);
        }
    }
    let (wd, hd) = match rows.cmp(&cols) {
        std::cmp::Ordering::Less => (best.1 + 1, 0),
        std::cmp::Ordering::Greater => (0, best.1 + 1),
        std::cmp::Ordering::Equal => (0, 0),
    };
    for l in 1..=levels {
        let wl = (2.0 * side / (l as f64 + 1.0)).floor();
        if wl < 1.0 {
            continue;
        }
        let starts = |extent: f64, extra: usize| -> Vec<usize> {
            let n = l + extra;
            let b = if n == 1 {
                0.0
            } else {
                (extent - wl) / (n as f64 - 1.0)
            };
            (0..n).map(|k| (k as f64 * b).floor() as usize).collect()
        };
        let (cs, rs) = (starts(w, wd), starts(h, hd));
        for &r in &rs {
            for &c in &cs {
                out.push(Region {
                    row: r,
                    col: c,
                    size: wl as usize,
                });
            }
        }
    }
    out
}

/// The R-MAC vectors of `a` on a `rows × cols` grid: first the global MAC, then one MAC per
/// region of [`rmac_regions`], each divided by its norm plus [`REGION_NORM_EPS`]. Summed and
/// normalised (after whitening each, if any) they give the R-MAC descriptor.
pub fn rmac_vectors(a: &Matrix, rows: usize, cols: usize, levels: usize) -> Matrix {
    let regions = rmac_regions(rows, cols, levels);
    let c = a.cols();
    let mut out = Matrix::zeros(regions.len() + 1, c);
    let mut put = |i: usize, v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt() + REGION_NORM_EPS;
        for (o, x) in out.row_mut(i).iter_mut().zip(v) {
            *o = x / norm;
        }
    };
    put(0, max_over(a, 0, 0, rows, cols, cols));
    for (i, reg) in regions.iter().enumerate() {
        put(
            i + 1,
            max_over(a, reg.row, reg.col, reg.size, reg.size, cols),
        );
    }
    out
}

/// Channel-wise maximum over the cells `(r, c)` with `r in r0..r0 + nr`, `c in c0..c0 + nc`
/// of a grid with `cols` columns. Empty regions give zeros.
fn max_over(a: &Matrix, r0: usize, c0: usize, nr: usize, nc: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![f32::NEG_INFINITY; a.cols()];
    let mut any = false;
    for r in r0..r0 + nr {
        for c in c0..c0 + nc {
            any = true;
            for (o, &v) in out.iter_mut().zip(a.row(r * cols + c)) {
                *o = o.max(v);
            }
        }
    }
    if !any {
        out.fill(0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: usize, cols: usize, ch: usize) -> Matrix {
        let data = (0..rows * cols * ch)
            .map(|i| ((i * 37) % 11) as f32 * 0.5)
            .collect();
        Matrix::from_vec(rows * cols, ch, data).unwrap()
    }

    #[test]
    fn mac_spoc_gem_by_hand() {
        let a = Matrix::from_vec(3, 2, vec![1.0, 0.0, 3.0, 2.0, 2.0, 4.0]).unwrap();
        assert_eq!(mac(&a), vec![3.0, 4.0]);
        assert_eq!(spoc(&a), vec![6.0, 6.0]);
        let g = gem(&a, 1.0);
        assert!((g[0] - 2.0).abs() < 1e-5 && (g[1] - 2.0).abs() < 1e-5);
        // p = 2: sqrt((1 + 9 + 4) / 3).
        assert!((gem(&a, 2.0)[0] - (14f32 / 3.0).sqrt()).abs() < 1e-5);
        // A large p approaches the maximum.
        assert!((gem(&a, 200.0)[1] - 4.0).abs() < 0.03);
    }

    #[test]
    fn rmac_regions_of_the_lite0_head_grid() {
        // 16 × 22 (a 512 × 704 input at stride 32): one extra column of regions; scale 1 has
        // 2 regions of 16, scale 2 has 2 × 3 of 10, scale 3 has 3 × 4 of 8.
        let r = rmac_regions(16, 22, 3);
        assert_eq!(r.len(), 2 + 6 + 12);
        assert_eq!(
            &r[..2],
            &[
                Region {
                    row: 0,
                    col: 0,
                    size: 16
                },
                Region {
                    row: 0,
                    col: 6,
                    size: 16
                }
            ]
        );
        let l2: Vec<(usize, usize)> = r[2..8].iter().map(|g| (g.row, g.col)).collect();
        assert_eq!(l2, vec![(0, 0), (0, 6), (0, 12), (6, 0), (6, 6), (6, 12)]);
        assert!(r[2..8].iter().all(|g| g.size == 10));
        let l3: Vec<(usize, usize)> = r[8..].iter().map(|g| (g.row, g.col)).collect();
        assert_eq!(
            l3,
            vec![
                (0, 0),
                (0, 4),
                (0, 9),
                (0, 14),
                (4, 0),
                (4, 4),
                (4, 9),
                (4, 14),
                (8, 0),
                (8, 4),
                (8, 9),
                (8, 14)
            ]
        );
        assert!(r[8..].iter().all(|g| g.size == 8));
        // Every region lies inside the grid, for many shapes.
        for rows in 1..30 {
            for cols in 1..30 {
                for g in rmac_regions(rows, cols, 3) {
                    assert!(g.size >= 1 && g.row + g.size <= rows && g.col + g.size <= cols);
                }
            }
        }
        // A square grid has no extra regions: 1 + 4 + 9.
        assert_eq!(rmac_regions(12, 12, 3).len(), 14);
    }

    #[test]
    fn rmac_vectors_are_unit_maxima() {
        let a = grid(4, 6, 3);
        let v = rmac_vectors(&a, 4, 6, 3);
        assert_eq!(v.rows(), 1 + rmac_regions(4, 6, 3).len());
        let global = mac(&a);
        let n = global.iter().map(|x| x * x).sum::<f32>().sqrt() + REGION_NORM_EPS;
        for (x, g) in v.row(0).iter().zip(&global) {
            assert!((x - g / n).abs() < 1e-6);
        }
        for i in 0..v.rows() {
            let n: f32 = v.row(i).iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn crow_pool_by_hand() {
        // Cells sums S = (3, 4): spatial weights (√0.6, √0.8).
        let a = Matrix::from_vec(2, 2, vec![1.0, 2.0, 4.0, 0.0]).unwrap();
        let s = [0.6f32.sqrt(), 0.8f32.sqrt()];
        let plain = crow_pool(&a, false);
        assert!((plain[0] - (s[0] + 4.0 * s[1])).abs() < 1e-5);
        assert!((plain[1] - 2.0 * s[0]).abs() < 1e-5);
        // Q = (1, 0.5): W = (ln 1.5, ln 3).
        let weighted = crow_pool(&a, true);
        assert!((weighted[0] - plain[0] * 1.5f32.ln()).abs() < 1e-5);
        assert!((weighted[1] - plain[1] * 3f32.ln()).abs() < 1e-5);
    }
}
