//! From an object heatmap (one value per feature-map cell) to a pixel mask.
//!
//! 1. The heatmap is upsampled bilinearly to the image ([`Heatmap::upsample`]) and
//!    thresholded ([`Threshold`]): the *coarse mask*.
//! 2. With [`Refine::Colour`] (the default) the coarse mask is corrected by the image
//!    itself, the way interactive segmentation (GrabCut) corrects a rough outline, in two
//!    standard steps without parameters to tune per image:
//!    - a **colour model**: colour histograms (16 levels per channel) inside and outside the
//!      coarse mask give every pixel the probability that its colour belongs to the object,
//!      `q = (n_in + 1) / (n_in + n_out + 2)`; the score is `√(q · m)`, the geometric mean of
//!      that colour evidence and the heatmap `m` (scaled to a maximum of 1), so a pixel needs
//!      both;
//!    - an **edge-aware smoothing** of the score: He, Sun & Tang's guided filter ("Guided
//!      Image Filtering", ECCV 2010 / TPAMI 2013) with the colour image as guide, window
//!      radius one feature-map cell, `ε = 10⁻³` (intensities in `[0, 1]`), which pulls the
//!      mask's outline onto the image's edges;
//!
//!    then Otsu's threshold of the smoothed score gives the mask.
//! 3. One-shot by appearance (`oneshot.rs`) weights the last score before its threshold by a
//!    prior, each cell's likeness to the annotated object raised to β (upsampled like the
//!    heatmap): with [`Refine::None`] the upsampled heatmap (rescaled to its maximum in the
//!    image before the threshold), with [`Refine::Colour`] the smoothed score.
//!
//! Masks are computed at the image's resolution up to [`MAX_MASK_SIDE`] pixels on the longer
//! side; larger images are processed scaled down and the mask scaled back (nearest pixel).
//!
//! The refinement itself (colour model and guided filter, [`guided_refine`]) also sharpens
//! localization heatmaps before their box is read ([`crate::localize::sharpen`]).

use super::{Refine, Threshold};
use crate::eval::Mask;
use crate::heatmap::{Binarize, Heatmap};
use crate::{CellGrid, Error, Result};
use image::{imageops::FilterType, RgbImage};

/// Longest side (pixels) at which a mask is computed.
pub const MAX_MASK_SIDE: u32 = 1024;
/// Levels per colour channel of the colour model's histograms.
pub const COLOUR_LEVELS: usize = 16;
/// The guided filter's regularisation `ε` (intensities in `[0, 1]`).
pub const GUIDED_EPS: f32 = 1e-3;

/// The mask of `image` from its object heatmap `map`, whose values are already divided by
/// the normaliser (set or image maximum), so that a fixed threshold applies to them as is;
/// `prior` (a map over the same cells, in `[0, 1]`, and its weight β) weights the last score
/// before its threshold.
pub(crate) fn mask(
    map: &Heatmap,
    image: &RgbImage,
    threshold: Threshold,
    refine: Refine,
    prior: Option<(&Heatmap, f32)>,
) -> Result<Mask> {
    let (w, h) = image.dimensions();
    let g = map.grid();
    if (g.image_width, g.image_height) != (w, h) {
        return Err(Error::invalid(format!(
            "object heatmap is for a {}×{} image, the image is {w}×{h}",
            g.image_width, g.image_height
        )));
    }
    let (ww, wh) = work_size(w, h);
    let up = map.upsample(ww, wh);
    // The prior's weight p^β on a picture of scores.
    let weigh = |values: Vec<f32>| -> Vec<f32> {
        match prior {
            Some((p, beta)) => values
                .into_iter()
                .zip(p.upsample(ww, wh))
                .map(|(v, p)| v * p.max(0.0).powf(beta))
                .collect(),
            None => values,
        }
    };
    let level = cut_level(&up, ww, wh, threshold);
    let coarse: Vec<bool> = up.iter().map(|&v| v > 0.0 && v >= level).collect();
    let bits = match refine {
        Refine::None if prior.is_some() => {
            let up = weigh(up);
            let peak = up.iter().copied().fold(0f32, f32::max);
            let up: Vec<f32> = up
                .iter()
                .map(|&v| if peak > 0.0 { v / peak } else { 0.0 })
                .collect();
            let level = cut_level(&up, ww, wh, threshold);
            up.iter().map(|&v| v > 0.0 && v >= level).collect()
        }
        Refine::None => coarse,
        Refine::Colour => {
            let smooth = weigh(guided_refine(image, (ww, wh), g, &up, &coarse, true));
            let level = cut_level(&smooth, ww, wh, Threshold::Otsu);
            smooth.iter().map(|&v| v > 0.0 && v >= level).collect()
        }
    };
    let m = Mask::new(ww as usize, wh as usize, bits)?;
    Ok(if (ww, wh) == (w, h) {
        m
    } else {
        scale_mask(&m, w as usize, h as usize)
    })
}

/// The image-guided refinement of an object map, shared by co-segmentation's masks and
/// localization's sharpened boxes: `up` is the map (over `grid`'s cells) upsampled to the
/// work size `ww × wh` (values ≥ 0), `coarse` its cut; `image` is scaled to the work size
/// when it is not that size already, and one cell spans `ww / cols` × `wh / rows` of its
/// pixels. With `colour`,
/// the colour model's evidence `q` (colour histograms inside and outside `coarse`) joins the
/// map as `√(q · m)` (`m` scaled to a maximum of 1), so that a pixel needs both; the result
/// (or the scaled map alone) is smoothed by the guided filter with the image as guide, window
/// radius one cell, `ε =` [`GUIDED_EPS`], which pulls the map's outline onto the image's
/// edges. Values are on the scaled map's scale (maximum about 1).
pub(crate) fn guided_refine(
    image: &RgbImage,
    (ww, wh): (u32, u32),
    grid: &CellGrid,
    up: &[f32],
    coarse: &[bool],
    colour: bool,
) -> Vec<f32> {
    let resized;
    let img = if image.dimensions() == (ww, wh) {
        image
    } else {
        resized = image::imageops::resize(image, ww, wh, FilterType::Triangle);
        &resized
    };
    let cell = (ww as f32 / grid.cols as f32).max(wh as f32 / grid.rows as f32);
    let peak = up.iter().copied().fold(0f32, f32::max);
    let scaled = |m: f32| if peak > 0.0 { (m / peak).max(0.0) } else { 0.0 };
    let score: Vec<f32> = if colour {
        let q = colour_posterior(img, coarse);
        q.iter()
            .zip(up)
            .map(|(&q, &m)| (q * scaled(m)).sqrt())
            .collect()
    } else {
        up.iter().map(|&m| scaled(m)).collect()
    };
    let radius = cell.round().max(1.0) as usize;
    guided_filter(img, &score, radius, GUIDED_EPS)
}

/// The size masks are computed at: the image's, scaled down to [`MAX_MASK_SIDE`].
fn work_size(w: u32, h: u32) -> (u32, u32) {
    let long = w.max(h);
    if long <= MAX_MASK_SIDE {
        return (w, h);
    }
    let s = f64::from(MAX_MASK_SIDE) / f64::from(long);
    (
        ((f64::from(w) * s).round() as u32).max(1),
        ((f64::from(h) * s).round() as u32).max(1),
    )
}

/// The level at which a `w × h` picture of (normalised) heatmap values is cut: the fixed one,
/// or Otsu's level of its values (a heatmap whose cells are its pixels; infinite — keep
/// nothing — when no value is positive).
pub(crate) fn cut_level(values: &[f32], w: u32, h: u32, threshold: Threshold) -> f32 {
    match threshold {
        Threshold::Fixed(t) => t,
        Threshold::Otsu => {
            let grid = CellGrid {
                rows: h as usize,
                cols: w as usize,
                image_width: w,
                image_height: h,
            };
            Heatmap::new(grid, values.to_vec())
                .ok()
                .and_then(|m| m.level(Binarize::Otsu))
                .unwrap_or(f32::INFINITY)
        }
    }
}

/// Nearest-pixel rescaling of a mask.
pub(crate) fn scale_mask(m: &Mask, w: usize, h: usize) -> Mask {
    let (sw, sh) = (m.width(), m.height());
    Mask::from_fn(w, h, |x, y| {
        let sx = ((x as f64 + 0.5) * sw as f64 / w as f64) as usize;
        let sy = ((y as f64 + 0.5) * sh as f64 / h as f64) as usize;
        m.get(sx.min(sw.saturating_sub(1)), sy.min(sh.saturating_sub(1)))
    })
}

/// Per pixel, the share of pixels of its colour (quantised to [`COLOUR_LEVELS`] per channel)
/// that lie inside `inside`, with one pseudo-count on each side.
fn colour_posterior(img: &RgbImage, inside: &[bool]) -> Vec<f32> {
    let shift = 8 - COLOUR_LEVELS.trailing_zeros();
    let bits = COLOUR_LEVELS.trailing_zeros();
    let bin = |p: &image::Rgb<u8>| {
        (usize::from(p.0[0] >> shift) << (2 * bits))
            | (usize::from(p.0[1] >> shift) << bits)
            | usize::from(p.0[2] >> shift)
    };
    let n = COLOUR_LEVELS.pow(3);
    let (mut n_in, mut n_out) = (vec![0f32; n], vec![0f32; n]);
    for (p, &on) in img.pixels().zip(inside) {
        if on {
            n_in[bin(p)] += 1.0;
        } else {
            n_out[bin(p)] += 1.0;
        }
    }
    img.pixels()
        .map(|p| {
            let b = bin(p);
            (n_in[b] + 1.0) / (n_in[b] + n_out[b] + 2.0)
        })
        .collect()
}

/// Means over `(2r + 1)²` windows (clipped at the borders) of a `w × h` plane, through an
/// integral image summed in `f64`.
fn box_mean(x: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut ii = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0f64;
        for c in 0..w {
            row += f64::from(x[y * w + c]);
            ii[(y + 1) * (w + 1) + c + 1] = ii[y * (w + 1) + c + 1] + row;
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
        for c in 0..w {
            let (x0, x1) = (c.saturating_sub(r), (c + r + 1).min(w));
            let s = ii[y1 * (w + 1) + x1] - ii[y0 * (w + 1) + x1] - ii[y1 * (w + 1) + x0]
                + ii[y0 * (w + 1) + x0];
            out[y * w + c] = (s / ((y1 - y0) * (x1 - x0)) as f64) as f32;
        }
    }
    out
}

/// The guided filter of `p` with the colour image `img` as guide (He et al., the colour
/// version: a local linear model `q = aᵀI + b` per window, `a = (Σ + εU)⁻¹ cov(I, p)`).
fn guided_filter(img: &RgbImage, p: &[f32], r: usize, eps: f32) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let planes: [Vec<f32>; 3] =
        [0, 1, 2].map(|c| img.pixels().map(|px| f32::from(px.0[c]) / 255.0).collect());
    let mean = |x: &[f32]| box_mean(x, w, h, r);
    let product =
        |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(x, y)| x * y).collect() };
    let mi: Vec<Vec<f32>> = planes.iter().map(|c| mean(c)).collect();
    let mp = mean(p);
    let mip: Vec<Vec<f32>> = planes.iter().map(|c| mean(&product(c, p))).collect();
    const PAIRS: [(usize, usize); 6] = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];
    let mii: Vec<Vec<f32>> = PAIRS
        .iter()
        .map(|&(a, b)| mean(&product(&planes[a], &planes[b])))
        .collect();
    let mut a = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    let mut b = vec![0f32; n];
    for i in 0..n {
        let cov = [0, 1, 2].map(|c| mip[c][i] - mi[c][i] * mp[i]);
        let var = |k: usize| {
            let (x, y) = PAIRS[k];
            mii[k][i] - mi[x][i] * mi[y][i]
        };
        let (s00, s01, s02) = (var(0) + eps, var(1), var(2));
        let (s11, s12, s22) = (var(3) + eps, var(4), var(5) + eps);
        // The inverse of the symmetric 3 × 3 matrix through its adjugate.
        let i00 = s11 * s22 - s12 * s12;
        let i01 = s02 * s12 - s01 * s22;
        let i02 = s01 * s12 - s02 * s11;
        let i11 = s00 * s22 - s02 * s02;
        let i12 = s01 * s02 - s00 * s12;
        let i22 = s00 * s11 - s01 * s01;
        let det = s00 * i00 + s01 * i01 + s02 * i02;
        // ε > 0 keeps the matrix positive definite; det ≥ ε³ barring rounding.
        let det = if det > 0.0 { det } else { eps * eps * eps };
        let ak = [
            (i00 * cov[0] + i01 * cov[1] + i02 * cov[2]) / det,
            (i01 * cov[0] + i11 * cov[1] + i12 * cov[2]) / det,
            (i02 * cov[0] + i12 * cov[1] + i22 * cov[2]) / det,
        ];
        for c in 0..3 {
            a[c][i] = ak[c];
        }
        b[i] = mp[i] - ak[0] * mi[0][i] - ak[1] * mi[1][i] - ak[2] * mi[2][i];
    }
    let ma: Vec<Vec<f32>> = a.iter().map(|x| mean(x)).collect();
    let mb = mean(&b);
    (0..n)
        .map(|i| {
            ma[0][i] * planes[0][i] + ma[1][i] * planes[1][i] + ma[2][i] * planes[2][i] + mb[i]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_mean_by_hand() {
        // 3 × 2 plane, radius 1: every window is clipped.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let m = box_mean(&x, 3, 2, 1);
        assert!((m[0] - (1.0 + 2.0 + 4.0 + 5.0) / 4.0).abs() < 1e-6);
        assert!((m[1] - 21.0 / 6.0).abs() < 1e-6);
        assert!((m[5] - (2.0 + 3.0 + 5.0 + 6.0) / 4.0).abs() < 1e-6);
    }

    #[test]
    fn guided_filter_keeps_constants_and_follows_edges() {
        // Left half black, right half white; a map that is 1 on the white half, shifted by two
        // pixels: the filtered map follows the image's edge.
        let (w, h) = (20u32, 6u32);
        let img = RgbImage::from_fn(w, h, |x, _| {
            if x >= 10 {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let flat = guided_filter(&img, &vec![0.7; (w * h) as usize], 2, 1e-3);
        assert!(flat.iter().all(|v| (v - 0.7).abs() < 1e-4));
        let p: Vec<f32> = (0..w * h)
            .map(|i| if i % w >= 8 { 1.0 } else { 0.0 })
            .collect();
        let q = guided_filter(&img, &p, 3, 1e-3);
        // The map's black pixels are pulled down (He et al.'s filter gives 0.48 and 0.60 there
        // with r = 3, ε = 1e-3), its white ones stay at 1, and the largest step of the filtered
        // map is the image's edge.
        let w = w as usize;
        for y in 0..h as usize {
            let row = &q[y * w..(y + 1) * w];
            assert!(row[8] < 0.5 && row[9] < 0.75, "{row:?}");
            assert!(row[10..].iter().all(|&v| v > 0.95), "{row:?}");
            let step = |x: usize| row[x + 1] - row[x];
            assert!((0..w - 1).all(|x| x == 9 || step(x) < step(9)), "{row:?}");
        }
    }

    #[test]
    fn colour_model_scores_colours_by_where_they_are() {
        let img = RgbImage::from_fn(4, 1, |x, _| {
            if x < 2 {
                image::Rgb([200, 10, 10])
            } else {
                image::Rgb([10, 10, 200])
            }
        });
        let q = colour_posterior(&img, &[true, true, false, false]);
        assert!((q[0] - 3.0 / 4.0).abs() < 1e-6 && (q[3] - 1.0 / 4.0).abs() < 1e-6);
    }

    #[test]
    fn large_images_are_processed_scaled_down() {
        assert_eq!(work_size(800, 600), (800, 600));
        assert_eq!(work_size(4096, 2048), (1024, 512));
        let m = Mask::from_fn(4, 2, |x, _| x >= 2);
        let s = scale_mask(&m, 8, 4);
        assert_eq!(s.area(), 16);
        assert!(s.get(4, 3) && !s.get(3, 0));
    }
}
