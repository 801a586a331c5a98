//! Heatmaps painted for reports: one map in viridis, or several factors laid over a photograph
//! one colour each.
//!
//! A [`Heatmap`]'s grid covers the whole picture, whatever its size (the original image or a
//! thumbnail of it); [`Heatmap::upsample`] brings it to the picture's pixels.

use super::color::{blend, viridis};
use crate::heatmap::Heatmap;
use image::{Rgb, RgbImage};

/// A heatmap painted over its image in viridis, without the photograph.
pub fn colormap_image(heatmap: &Heatmap, width: u32, height: u32) -> RgbImage {
    let up = heatmap.strengths().upsample(width, height);
    let mut img = RgbImage::new(width, height);
    for (p, s) in img.pixels_mut().zip(up) {
        *p = viridis(s);
    }
    img
}

/// Sharpness of the colour mix where factors overlap: weights are strengths to this power, so
/// a pixel takes (almost) the pure colour of its clearly strongest factor and shades smoothly
/// where two are about equal, instead of showing a seam.
const MIX_POWER: i32 = 4;

/// Lays several factor heatmaps over `img`, one colour each. Every heatmap is normalized to its
/// own maximum; a pixel's colour is the mix of the factor colours weighted by strength⁴ (in
/// effect the colour of its strongest factor), laid over the photograph with opacity
/// `max_alpha ×` the strongest strength, so weak activations barely tint the photograph and a
/// factor's peak shows at `max_alpha`. Each heatmap's grid covers the whole of `img`.
pub fn overlay_factors(img: &mut RgbImage, factors: &[(&Heatmap, Rgb<u8>)], max_alpha: f32) {
    let ups: Vec<Vec<f32>> = factors
        .iter()
        .map(|(h, _)| h.strengths().upsample(img.width(), img.height()))
        .collect();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CellGrid;

    fn map(rows: usize, cols: usize, w: u32, h: u32, v: &[f32]) -> Heatmap {
        let g = CellGrid {
            rows,
            cols,
            image_width: w,
            image_height: h,
        };
        Heatmap::new(g, v.to_vec()).unwrap()
    }

    #[test]
    fn factor_overlay_takes_the_strongest_factor() {
        // Two factors on a 1 × 2 grid of 10.5-pixel cells (centres at x = 5.25 and 15.75):
        // left cell belongs to red, right to blue.
        let red = Rgb([255, 0, 0]);
        let blue = Rgb([0, 0, 255]);
        let mut img = RgbImage::from_pixel(21, 10, Rgb([0, 0, 0]));
        let (l, r) = (
            map(1, 2, 21, 10, &[1.0, 0.0]),
            map(1, 2, 21, 10, &[0.0, 1.0]),
        );
        overlay_factors(&mut img, &[(&l, red), (&r, blue)], 1.0);
        assert_eq!(img.get_pixel(0, 5), &red);
        assert_eq!(img.get_pixel(20, 5), &blue);
        // Pixel 10 (centre 10.5) is midway: both at ½, an even mix at half opacity over black.
        assert_eq!(img.get_pixel(10, 5), &Rgb([64, 0, 64]));
        // Pixel 8 is red 0.69, blue 0.31: red dominates the mix (weights 0.23 vs 0.009).
        let p = img.get_pixel(8, 5);
        assert!(p[0] > 150 && p[1] == 0 && p[2] < 12, "{p:?}");
        // No factor with strength: the photo is untouched.
        let mut img = RgbImage::from_pixel(4, 4, Rgb([9, 9, 9]));
        overlay_factors(&mut img, &[(&map(1, 1, 4, 4, &[0.0]), red)], 1.0);
        assert!(img.pixels().all(|p| *p == Rgb([9, 9, 9])));
        // The colour map alone: viridis of the strengths.
        let img = colormap_image(&map(1, 2, 2, 1, &[0.0, 1.0]), 2, 1);
        assert_eq!(img.get_pixel(0, 0), &viridis(0.0));
        assert_eq!(img.get_pixel(1, 0), &viridis(1.0));
    }
}
