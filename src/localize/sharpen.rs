//! Image-guided sharpening of a localization heatmap: the hit's own pixels refine where the
//! stride-32 object map says the region is, before the box is read off it.
//!
//! A heatmap of the `head` layer has one value per 32 × 32 input pixels; an object covering a
//! tenth of the view spans about 5 × 7 cells, and bilinear upsampling spreads its map half a
//! cell or more beyond its outline. Co-segmentation faces the same problem and solves it with
//! the image ([`crate::coseg`]'s colour model and guided filter); sharpening reuses that
//! refinement (one shared function) on the averaged heatmap of the localized factors:
//!
//! 1. the hit image is decoded (the usual limits of [`crate::images::load_rgb`]) and scaled to
//!    at most [`SHARPEN_CELL_PIXELS`] pixels per cell (≈ 16 × 21 cells → ≤ 336 pixels a side);
//! 2. the heatmap is upsampled bilinearly to those pixels and cut at the binarization rule's
//!    level (the calibrated fraction of the maximum by default): the coarse region;
//! 3. [`Sharpen::Guided`]: the map is smoothed by the guided filter with the image as guide
//!    (window radius one cell), which pulls its outline onto the image's edges;
//!    [`Sharpen::Colour`]: first the colour model (colour histograms inside and outside the
//!    coarse region) joins the map as `√(q · m)`, then the guided filter;
//! 4. the box is the one around the largest connected group of pixels at or above the same
//!    rule's level of the sharpened map.
//!
//! A hit whose image cannot be read (missing, corrupt, another size than the index recorded)
//! keeps its unsharpened box, with a note saying why ([`super::Located::note`]).

use crate::heatmap::{Binarize, Heatmap};
use crate::{BBox, CellGrid, Error, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Pixels per heatmap cell (per side) at which a heatmap is sharpened: a sixteenth of a cell
/// is finer than any box needs, and keeps the guided filter to a few milliseconds.
pub const SHARPEN_CELL_PIXELS: usize = 16;

/// Largest relative difference between the aspect ratio of the decoded image and that of the
/// image the heatmap was made for (the index's record) before sharpening refuses the image.
const MAX_ASPECT_MISMATCH: f32 = 0.02;

/// Whether, and how, a hit's heatmap is refined by its image before its box is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sharpen {
    /// The box of the heatmap as is (no image is read).
    None,
    /// The guided filter of the heatmap, the image as guide.
    Guided,
    /// The colour model of the coarse region, then the guided filter (co-segmentation's
    /// refinement; the default).
    #[default]
    Colour,
}

impl Sharpen {
    /// The variant recorded by results made before sharpening existed.
    pub fn off() -> Self {
        Sharpen::None
    }
}

impl std::fmt::Display for Sharpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sharpen::None => "none",
            Sharpen::Guided => "guided",
            Sharpen::Colour => "colour",
        })
    }
}

impl std::str::FromStr for Sharpen {
    type Err = Error;

    /// `none` (alias `off`), `guided` or `colour` (alias `color`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(Sharpen::None),
            "guided" => Ok(Sharpen::Guided),
            "colour" | "color" => Ok(Sharpen::Colour),
            other => Err(Error::invalid(format!(
                "sharpening {other:?}: expected none, guided or colour"
            ))),
        }
    }
}

/// The heatmap `map` sharpened by `image` (the picture `map` was made for, at any scale), as
/// a heatmap over a grid of about [`SHARPEN_CELL_PIXELS`] pixels per cell of `map`'s grid
/// (same image size); `rule` is the binarization whose level cuts the coarse region.
/// [`Sharpen::None`] gives `map` refined to that grid, unfiltered. Errors: an image of
/// another aspect ratio than `map`'s image, an all-zero map.
pub fn sharpen(map: &Heatmap, image: &RgbImage, rule: Binarize, how: Sharpen) -> Result<Heatmap> {
    let g = *map.grid();
    let (iw, ih) = image.dimensions();
    if g.image_width == 0 || g.image_height == 0 || iw == 0 || ih == 0 {
        return Err(Error::invalid("sharpening needs images with pixels"));
    }
    let want = g.image_width as f32 / g.image_height as f32;
    let have = iw as f32 / ih as f32;
    if ((have - want) / want).abs() > MAX_ASPECT_MISMATCH {
        return Err(Error::invalid(format!(
            "the image is {iw}×{ih}, the heatmap was made for {}×{}",
            g.image_width, g.image_height
        )));
    }
    let level = map
        .level(rule)
        .ok_or_else(|| Error::invalid("an all-zero heatmap has no region to sharpen"))?;
    // Work at ≤ SHARPEN_CELL_PIXELS pixels per cell, never above the image's own size.
    let scale = ((g.cols * SHARPEN_CELL_PIXELS) as f32 / iw as f32)
        .min((g.rows * SHARPEN_CELL_PIXELS) as f32 / ih as f32)
        .min(1.0);
    let ww = ((iw as f32 * scale).round() as u32).max(1);
    let wh = ((ih as f32 * scale).round() as u32).max(1);
    let up = map.upsample(ww, wh);
    let values = match how {
        Sharpen::None => up,
        _ => {
            let coarse: Vec<bool> = up.iter().map(|&v| v > 0.0 && v >= level).collect();
            let colour = how == Sharpen::Colour;
            crate::coseg::guided_refine(image, (ww, wh), &g, &up, &coarse, colour)
        }
    };
    Heatmap::new(
        CellGrid {
            rows: wh as usize,
            cols: ww as usize,
            image_width: g.image_width,
            image_height: g.image_height,
        },
        values,
    )
}

/// The box of `map` sharpened by the image at `path` ([`sharpen`], the coarse region cut by
/// `rule`), cut by `cut` — with `adaptive`, at the lower of `cut`'s level and Otsu's level of
/// the sharpened map: a pixel either keeps stays — the box around the largest connected group
/// of pixels kept. Errors: the image cannot be read (naming the file), or [`sharpen`]'s.
pub fn sharpened_box(
    map: &Heatmap,
    path: &Path,
    rule: Binarize,
    cut: Binarize,
    adaptive: bool,
    how: Sharpen,
) -> Result<BBox> {
    let image = crate::images::load_rgb(path)?;
    let fine = sharpen(map, &image, rule, how).map_err(|e| Error::image(path, e.to_string()))?;
    let cut = match (adaptive, fine.level(Binarize::Otsu), fine.level(cut)) {
        (true, Some(a), Some(b)) => Binarize::RelativeToMax(a.min(b) / fine.max()),
        _ => cut,
    };
    fine.component_box(cut)
        .ok_or_else(|| Error::image(path, "the sharpened heatmap keeps no pixel"))
}

/// The cut of sharpened maps calibrated on the query, as [`super::calibrate`] calibrates the
/// coarse one: the fraction of the maximum (5%, 10%, …, 95%) at which the query's own
/// heatmap `map`, sharpened by the query's image at `path` (coarse region cut by `rule`),
/// gives back the query's `bbox` best; ties go to the smaller fraction. `None` where no
/// fraction gives a box. Errors: the image cannot be read, or [`sharpen`]'s.
pub fn calibrate_sharpened(
    map: &Heatmap,
    path: &Path,
    rule: Binarize,
    how: Sharpen,
    bbox: &BBox,
) -> Result<Option<f32>> {
    let image = crate::images::load_rgb(path)?;
    let fine = sharpen(map, &image, rule, how).map_err(|e| Error::image(path, e.to_string()))?;
    let mut best: Option<(f32, f32)> = None;
    for i in 1..=super::CALIBRATION_STEPS {
        let f = i as f32 / (super::CALIBRATION_STEPS + 1) as f32;
        let Some(b) = fine.component_box(Binarize::RelativeToMax(f)) else {
            continue;
        };
        let iou = b.iou(bbox);
        if best.is_none_or(|(_, s)| iou > s) {
            best = Some((f, iou));
        }
    }
    Ok(best.map(|(f, _)| f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{imageops::FilterType, Rgb};

    /// A 320 × 256 picture (a 10 × 8 grid of 32-pixel cells) of a red 56 × 48 object at
    /// (110, 90) on a two-tone green background, and the object's stride-32 heatmap as a
    /// network would see it: each cell's share of object pixels, blurred over its neighbours.
    fn scene() -> (RgbImage, Heatmap, BBox) {
        let truth = BBox::new(110.0, 90.0, 166.0, 138.0).unwrap();
        let inside = |x: u32, y: u32| {
            (x as f32 + 0.5) > truth.x1
                && (x as f32 + 0.5) < truth.x2
                && (y as f32 + 0.5) > truth.y1
                && (y as f32 + 0.5) < truth.y2
        };
        let image = RgbImage::from_fn(320, 256, |x, y| {
            if inside(x, y) {
                Rgb([200, 30, 40])
            } else if (x / 7 + y / 5) % 2 == 0 {
                Rgb([40, 120, 50])
            } else {
                Rgb([60, 140, 70])
            }
        });
        let grid = CellGrid {
            rows: 8,
            cols: 10,
            image_width: 320,
            image_height: 256,
        };
        let share: Vec<f32> = (0..grid.len())
            .map(|c| {
                let (r, k) = ((c / 10) as u32, (c % 10) as u32);
                let n = (0..32 * 32)
                    .filter(|i| inside(k * 32 + i % 32, r * 32 + i / 32))
                    .count();
                n as f32 / 1024.0
            })
            .collect();
        // A 3 × 3 blur: the receptive fields of a deep layer spread the object over its
        // neighbours.
        let blurred = (0..grid.len())
            .map(|c| {
                let (r, k) = ((c / 10) as i64, (c % 10) as i64);
                let mut s = 0.0;
                for dr in -1..=1i64 {
                    for dk in -1..=1i64 {
                        let (rr, kk) = (r + dr, k + dk);
                        if (0..8).contains(&rr) && (0..10).contains(&kk) {
                            let w = if dr == 0 && dk == 0 { 1.0 } else { 0.35 };
                            s += w * share[(rr * 10 + kk) as usize];
                        }
                    }
                }
                s
            })
            .collect();
        (
            image,
            Heatmap::new(grid, blurred).unwrap().unit_max(),
            truth,
        )
    }

    #[test]
    fn a_small_object_is_boxed_more_tightly_with_sharpening() {
        let (image, map, truth) = scene();
        let rule = Binarize::RelativeToMax(0.3);
        let coarse = map.region_box(rule).unwrap().iou(&truth);
        // The colour model (the default) recovers the object; the guided filter alone only
        // moves the outline onto edges, and the map's halo over the flat background stays.
        for (how, better) in [(Sharpen::Colour, 0.4), (Sharpen::Guided, -0.02)] {
            let fine = sharpen(&map, &image, rule, how).unwrap();
            // At most 16 pixels per cell, never above the image's own size.
            assert_eq!((fine.grid().cols, fine.grid().rows), (160, 128));
            let b = fine.component_box(rule).unwrap();
            let iou = b.iou(&truth);
            assert!(
                iou > coarse + better,
                "{how}: {iou:.3} sharpened vs {coarse:.3} coarse, {b:?}"
            );
            if how == Sharpen::Colour {
                assert!(iou > 0.8, "{iou:.3}, {b:?}");
            }
        }
        // Without a filter the upsampled map's box is the coarse one, give or take a pixel.
        let plain = sharpen(&map, &image, rule, Sharpen::None).unwrap();
        let b = plain.component_box(rule).unwrap();
        assert!((b.iou(&truth) - coarse).abs() < 0.05, "{b:?}");
        // A downscaled copy of the image (a thumbnail) serves as well.
        let small = image::imageops::resize(&image, 160, 128, FilterType::Triangle);
        let b = sharpen(&map, &small, rule, Sharpen::Colour)
            .unwrap()
            .component_box(rule)
            .unwrap();
        assert!(b.iou(&truth) > 0.8, "{b:?}");
    }

    #[test]
    fn an_unreadable_image_leaves_the_box_with_a_note() {
        let (image, map, _) = scene();
        let rule = Binarize::RelativeToMax(0.3);
        let before = map.region_box(rule);
        let located = || super::super::Located::new(before, map.clone(), Vec::new(), None);
        let dir = tempfile::tempdir().unwrap();
        let corrupt = dir.path().join("corrupt.jpg");
        std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
        let other = dir.path().join("other.png");
        image::imageops::resize(&image, 100, 100, FilterType::Nearest)
            .save(&other)
            .unwrap();
        for path in [dir.path().join("missing.jpg"), corrupt, other] {
            let mut l = located();
            l.sharpen_box(&path, Sharpen::Colour, rule, rule, true);
            assert_eq!(l.bbox, before);
            assert!(!l.sharpened);
            let note = l.note.unwrap_or_default();
            assert!(
                note.contains("not sharpened") && note.contains(&*path.to_string_lossy()),
                "{note}"
            );
        }
        // The readable image sharpens; none leaves everything as it was.
        let good = dir.path().join("good.png");
        image.save(&good).unwrap();
        let mut l = located();
        l.sharpen_box(&good, Sharpen::Colour, rule, rule, true);
        assert!(l.sharpened && l.note.is_none() && l.bbox != before);
        let mut l = located();
        l.sharpen_box(&good, Sharpen::None, rule, rule, true);
        assert_eq!(l, located());
        // Bad names and an all-zero map are errors, not panics.
        assert!("sharp".parse::<Sharpen>().is_err());
        assert_eq!("color".parse::<Sharpen>().unwrap(), Sharpen::Colour);
        let zero = Heatmap::zeros(*map.grid()).unwrap();
        assert!(sharpen(&zero, &image, rule, Sharpen::Guided).is_err());
    }
}
