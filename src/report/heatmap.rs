//! Heatmaps at feature-map resolution, brought to pixels and laid over photographs.
//!
//! A heatmap holds one value per cell of a [`CellGrid`], row-major. Upsampling interpolates
//! bilinearly between cell centres as the grid defines them (`((c + ½)·W/cols, (r + ½)·H/rows)`)
//! and holds the edge values constant beyond the outermost centres, so a pixel whose centre
//! is a cell centre gets exactly that cell's value.

use super::color::{blend, viridis};
use crate::{CellGrid, Error, Result};
use image::{Rgb, RgbImage};

/// Checks that `values` is a heatmap of `grid`: one finite value per cell.
pub fn check_heatmap(grid: &CellGrid, values: &[f32]) -> Result<()> {
    if grid.is_empty() {
        return Err(Error::invalid(format!(
            "heatmap grid {}×{} has no cells",
            grid.rows, grid.cols
        )));
    }
    if values.len() != grid.len() {
        return Err(Error::invalid(format!(
            "heatmap has {} values but its grid is {}×{} = {} cells",
            values.len(),
            grid.rows,
            grid.cols,
            grid.len()
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "heatmap value {i} (row {}, column {}) is {}",
            i / grid.cols,
            i % grid.cols,
            values[i]
        )));
    }
    Ok(())
}

/// The heatmap's value at image point `(x, y)` (pixels of the grid's image, continuous
/// coordinates): bilinear between the four nearest cell centres, clamped at the edges.
pub fn sample(grid: &CellGrid, values: &[f32], x: f32, y: f32) -> Result<f32> {
    check_heatmap(grid, values)?;
    let (cw, ch) = grid.cell_size();
    let (c0, c1, wx) = axis_weights(f64::from(x) / f64::from(cw) - 0.5, grid.cols);
    let (r0, r1, wy) = axis_weights(f64::from(y) / f64::from(ch) - 0.5, grid.rows);
    Ok(bilerp(values, grid.cols, (r0, r1, wy), (c0, c1, wx)))
}

/// The heatmap upsampled to a `width × height` picture of the whole image (any size: the
/// original, or a thumbnail of it). Output pixel `(px, py)` samples the image point
/// `((px + ½)·W/width, (py + ½)·H/height)`, with `W × H` the grid's image size. Row-major.
pub fn upsample(grid: &CellGrid, values: &[f32], width: u32, height: u32) -> Result<Vec<f32>> {
    check_heatmap(grid, values)?;
    // Position of each output column/row in cell units, where cell c's centre is at c.
    let axis = |n: u32, cells: usize| -> Vec<(usize, usize, f64)> {
        (0..n)
            .map(|p| {
                axis_weights(
                    (f64::from(p) + 0.5) * cells as f64 / f64::from(n) - 0.5,
                    cells,
                )
            })
            .collect()
    };
    let xs = axis(width, grid.cols);
    let ys = axis(height, grid.rows);
    let mut out = Vec::with_capacity(width as usize * height as usize);
    for &y in &ys {
        for &x in &xs {
            out.push(bilerp(values, grid.cols, y, x));
        }
    }
    Ok(out)
}

/// For a position `u` in cell units along an axis of `n` cells: the two cells to blend and
/// the weight of the second, clamped to the outermost centres.
fn axis_weights(u: f64, n: usize) -> (usize, usize, f64) {
    let last = n.saturating_sub(1) as f64;
    let u = if u.is_nan() { 0.0 } else { u.clamp(0.0, last) };
    let i0 = u.floor() as usize;
    let i1 = (i0 + 1).min(n.saturating_sub(1));
    (i0, i1, u - i0 as f64)
}

fn bilerp(
    values: &[f32],
    cols: usize,
    (r0, r1, wy): (usize, usize, f64),
    (c0, c1, wx): (usize, usize, f64),
) -> f32 {
    let v = |r: usize, c: usize| f64::from(values[r * cols + c]);
    let top = v(r0, c0) * (1.0 - wx) + v(r0, c1) * wx;
    let bottom = v(r1, c0) * (1.0 - wx) + v(r1, c1) * wx;
    (top * (1.0 - wy) + bottom * wy) as f32
}

/// Strengths in `[0, 1]`: negative values become 0 and the rest are divided by the maximum
/// (all zeros when the maximum is not positive).
pub fn normalize(values: &[f32]) -> Vec<f32> {
    let max = values.iter().fold(0f32, |m, v| m.max(*v));
    if max > 0.0 && max.is_finite() {
        values.iter().map(|v| (v.max(0.0) / max).min(1.0)).collect()
    } else {
        vec![0.0; values.len()]
    }
}

/// Lays one heatmap over `img` in viridis at a constant opacity `alpha`, after normalizing it
/// to its maximum; the grid covers the whole of `img`, whatever its size.
pub fn overlay_colormap(
    img: &mut RgbImage,
    grid: &CellGrid,
    values: &[f32],
    alpha: f32,
) -> Result<()> {
    let up = upsample(grid, &normalize(values), img.width(), img.height())?;
    for (p, s) in img.pixels_mut().zip(up) {
        *p = blend(*p, viridis(s), alpha);
    }
    Ok(())
}

/// A heatmap painted over `grid`'s image in viridis, without the photograph.
pub fn colormap_image(
    grid: &CellGrid,
    values: &[f32],
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    let up = upsample(grid, &normalize(values), width, height)?;
    let mut img = RgbImage::new(width, height);
    for (p, s) in img.pixels_mut().zip(up) {
        *p = viridis(s);
    }
    Ok(img)
}

/// Sharpness of the colour mix where factors overlap: weights are strengths to this power, so
/// a pixel takes (almost) the pure colour of its clearly strongest factor and shades smoothly
/// where two are about equal, instead of showing a seam.
const MIX_POWER: i32 = 4;

/// Lays several factor heatmaps over `img`, one colour each. Every heatmap is normalized to its
/// own maximum; a pixel's colour is the mix of the factor colours weighted by strength⁴ (in
/// effect the colour of its strongest factor), laid over the photograph with opacity
/// `max_alpha ×` the strongest strength, so weak activations barely tint the photograph and a
/// factor's peak shows at `max_alpha`. All heatmaps share `grid`, which covers the whole of
/// `img`.
pub fn overlay_factors(
    img: &mut RgbImage,
    grid: &CellGrid,
    factors: &[(&[f32], Rgb<u8>)],
    max_alpha: f32,
) -> Result<()> {
    let ups = factors
        .iter()
        .map(|(v, _)| upsample(grid, &normalize(v), img.width(), img.height()))
        .collect::<Result<Vec<_>>>()?;
    for (i, p) in img.pixels_mut().enumerate() {
        let (mut strongest, mut total) = (0f32, 0f32);
        let mut mix = [0f32; 3];
        for (up, (_, colour)) in ups.iter().zip(factors) {
            let s = up[i].clamp(0.0, 1.0);
            let w = s.powi(MIX_POWER);
            strongest = strongest.max(s);
            total += w;
            for k in 0..3 {
                mix[k] += w * f32::from(colour[k]);
            }
        }
        if total > 0.0 {
            let colour = Rgb(mix.map(|m| (m / total).round().clamp(0.0, 255.0) as u8));
            *p = blend(*p, colour, max_alpha * strongest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: usize, cols: usize, w: u32, h: u32) -> CellGrid {
        CellGrid {
            rows,
            cols,
            image_width: w,
            image_height: h,
        }
    }

    #[test]
    fn upsampling_is_exact_at_cell_centres() {
        // 3 × 2 cells of 5 × 5 pixels: cell (r, c) has its centre at pixel (5c + 2, 5r + 2).
        let g = grid(2, 3, 15, 10);
        let v = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];
        let up = upsample(&g, &v, 15, 10).unwrap();
        for r in 0..2 {
            for c in 0..3 {
                let (px, py) = (5 * c + 2, 5 * r + 2);
                assert_eq!(up[py * 15 + px], v[r * 3 + c], "cell ({r}, {c})");
                let (x, y) = g.cell_center(r, c);
                assert_eq!(sample(&g, &v, x, y).unwrap(), v[r * 3 + c]);
            }
        }
        // Beyond the outermost centres the edge value holds.
        assert_eq!(up[0], 1.0);
        assert_eq!(up[9 * 15 + 14], 32.0);
        // Halfway between two centres, the mean.
        assert_eq!(sample(&g, &v, 5.0, 2.5).unwrap(), 1.5);
        assert_eq!(sample(&g, &v, 2.5, 5.0).unwrap(), 4.5);
        assert_eq!(
            sample(&g, &v, 5.0, 5.0).unwrap(),
            (1.0 + 2.0 + 8.0 + 16.0) / 4.0
        );
    }

    #[test]
    fn upsampling_a_thumbnail_and_constant_maps() {
        // Any output size covers the whole grid; a constant map stays constant.
        let g = grid(3, 4, 640, 480);
        let up = upsample(&g, &[0.25; 12], 33, 17).unwrap();
        assert_eq!(up.len(), 33 * 17);
        assert!(up.iter().all(|v| (v - 0.25).abs() < 1e-7));
        // A linear ramp along x is reproduced between the outer centres.
        let ramp: Vec<f32> = (0..12).map(|i| (i % 4) as f32).collect();
        let up = upsample(&g, &ramp, 640, 1).unwrap();
        // Cell centres at x = 80, 240, 400, 560: pixel 239 has centre 239.5.
        assert!(
            (up[239] - (239.5 - 80.0) / 160.0).abs() < 1e-5,
            "{}",
            up[239]
        );
        assert!(up.windows(2).all(|w| w[1] >= w[0]));
        assert!(upsample(&g, &ramp, 0, 0).unwrap().is_empty());
    }

    #[test]
    fn bad_heatmaps_are_refused() {
        let g = grid(2, 2, 10, 10);
        assert!(upsample(&g, &[1.0; 3], 5, 5).is_err());
        let err = upsample(&g, &[1.0, f32::NAN, 0.0, 0.0], 5, 5).unwrap_err();
        assert!(err.to_string().contains("row 0, column 1"), "{err}");
        assert!(upsample(&grid(0, 3, 10, 10), &[], 5, 5).is_err());
    }

    #[test]
    fn normalizing() {
        assert_eq!(normalize(&[-1.0, 0.0, 2.0, 4.0]), vec![0.0, 0.0, 0.5, 1.0]);
        assert_eq!(normalize(&[0.0, -2.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn factor_overlay_takes_the_strongest_factor() {
        // Two factors on a 1 × 2 grid of 10.5-pixel cells (centres at x = 5.25 and 15.75):
        // left cell belongs to red, right to blue.
        let g = grid(1, 2, 21, 10);
        let red = Rgb([255, 0, 0]);
        let blue = Rgb([0, 0, 255]);
        let mut img = RgbImage::from_pixel(21, 10, Rgb([0, 0, 0]));
        overlay_factors(
            &mut img,
            &g,
            &[(&[1.0, 0.0], red), (&[0.0, 1.0], blue)],
            1.0,
        )
        .unwrap();
        assert_eq!(img.get_pixel(0, 5), &red);
        assert_eq!(img.get_pixel(20, 5), &blue);
        // Pixel 10 (centre 10.5) is midway: both at ½, an even mix at half opacity over black.
        assert_eq!(img.get_pixel(10, 5), &Rgb([64, 0, 64]));
        // Pixel 8 is red 0.69, blue 0.31: red dominates the mix (weights 0.23 vs 0.009).
        let p = img.get_pixel(8, 5);
        assert!(p[0] > 150 && p[1] == 0 && p[2] < 12, "{p:?}");
        // No factor with strength: the photo is untouched.
        let mut img = RgbImage::from_pixel(4, 4, Rgb([9, 9, 9]));
        overlay_factors(&mut img, &grid(1, 1, 4, 4), &[(&[0.0], red)], 1.0).unwrap();
        assert!(img.pixels().all(|p| *p == Rgb([9, 9, 9])));
        // Colour map over black at full opacity is the colour map.
        let mut img = RgbImage::new(2, 1);
        overlay_colormap(&mut img, &grid(1, 2, 2, 1), &[0.0, 1.0], 1.0).unwrap();
        assert_eq!(img.get_pixel(0, 0), &viridis(0.0));
        assert_eq!(img.get_pixel(1, 0), &viridis(1.0));
    }
}
