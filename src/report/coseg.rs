//! The co-segmentation report: an image set as a grid of overlays, one self-contained HTML
//! page (pictures embedded as JPEG `data:` URIs, no scripts, nothing fetched).
//!
//! Each picture ([`coseg_overlay`]) shows the image with every factor's heatmap in its palette
//! colour (a pixel takes the colour of its strongest factor, opacity by strength), the
//! object's mask outlined in white, its box in white with a dark rim, and — when the true
//! mask is known — the true outline in black. A legend names the factors and marks the
//! object's.

use super::color::blend;
use super::draw::{box_thickness, draw_box, BOX_COLOR};
use super::html::{escape_html, img_tag, swatch, STYLE};
use super::overlay::overlay_factors;
use super::thumbnail;
use crate::eval::Mask;
use crate::heatmap::Heatmap;
use crate::{BBox, Error, Result};
use image::{Rgb, RgbImage};
use std::fmt::Write as _;
use std::path::Path;

/// Colour of the predicted mask's outline.
pub(crate) const MASK_OUTLINE: Rgb<u8> = Rgb([255, 255, 255]);
/// Colour of the true mask's outline.
pub(crate) const TRUTH_OUTLINE: Rgb<u8> = Rgb([0, 0, 0]);

/// One image of a [`CosegReport`].
#[derive(Debug, Clone)]
pub struct CosegView {
    /// The image's name.
    pub name: String,
    /// The rendered picture ([`coseg_overlay`]).
    pub picture: RgbImage,
    /// Lines under the picture (scores, box).
    pub caption: Vec<String>,
}

/// A co-segmentation report: plain data, rendered by [`CosegReport::to_html`].
#[derive(Debug, Clone, Default)]
pub struct CosegReport {
    /// Page title.
    pub title: String,
    /// One line under the title.
    pub subtitle: String,
    /// Factor legend: label and colour, in factor order.
    pub legend: Vec<(String, Rgb<u8>)>,
    /// Scores of the set (name, value).
    pub scores: Vec<(String, String)>,
    /// Settings of the run (name, value).
    pub settings: Vec<(String, String)>,
    /// The images.
    pub views: Vec<CosegView>,
    /// A note at the end (e.g. images left out).
    pub notes: Vec<String>,
}

/// The picture of one image: a thumbnail (longer side at most `max_side`) with the factor
/// heatmaps (each with its colour), the predicted mask's outline, the true mask's outline and
/// the box. Heatmaps, masks and box refer to the whole image, whatever the thumbnail's size.
pub fn coseg_overlay(
    image: &RgbImage,
    factors: &[(&Heatmap, Rgb<u8>)],
    mask: Option<&Mask>,
    truth: Option<&Mask>,
    bbox: Option<&BBox>,
    max_side: u32,
    alpha: f32,
) -> RgbImage {
    let mut pic = thumbnail(image, max_side);
    let (w, h) = pic.dimensions();
    overlay_factors(&mut pic, factors, alpha);
    let t = (box_thickness(w, h) / 2).max(1);
    for (m, colour) in [(truth, TRUTH_OUTLINE), (mask, MASK_OUTLINE)] {
        if let Some(m) = m {
            outline(&mut pic, m, colour, t);
        }
    }
    if let Some(b) = bbox {
        let (sx, sy) = (
            w as f32 / image.width() as f32,
            h as f32 / image.height() as f32,
        );
        draw_box(&mut pic, &b.scale(sx, sy), BOX_COLOR, box_thickness(w, h));
    }
    pic
}

/// Paints the boundary pixels of `mask` (scaled to the picture) `t` pixels wide.
fn outline(pic: &mut RgbImage, mask: &Mask, colour: Rgb<u8>, t: u32) {
    let (w, h) = pic.dimensions();
    let (mw, mh) = (mask.width() as f64, mask.height() as f64);
    let at = |x: i64, y: i64| -> bool {
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
            return false;
        }
        let mx = ((x as f64 + 0.5) * mw / f64::from(w)) as usize;
        let my = ((y as f64 + 0.5) * mh / f64::from(h)) as usize;
        mask.get(mx, my)
    };
    let r = i64::from(t);
    for y in 0..i64::from(h) {
        for x in 0..i64::from(w) {
            if !at(x, y) {
                continue;
            }
            let edge = (-r..=r).any(|dy| (-r..=r).any(|dx| !at(x + dx, y + dy)));
            if edge {
                let p = pic.get_pixel_mut(x as u32, y as u32);
                *p = blend(*p, colour, 0.9);
            }
        }
    }
}

impl CosegReport {
    /// The page; `jpeg_quality` of the embedded pictures (1–100).
    pub fn to_html(&self, jpeg_quality: u8) -> Result<String> {
        if !(1..=100).contains(&jpeg_quality) {
            return Err(Error::invalid(format!(
                "JPEG quality {jpeg_quality} is outside 1..=100"
            )));
        }
        let e = escape_html;
        let mut h = String::new();
        // Writing to a String cannot fail; the results of write! are ignored for that reason.
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"generator\" content=\"deepfactor {}\">\n<title>{}</title>\n<style>{}\
             .grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:12px;align-items:start}}\
             .cols{{display:flex;flex-wrap:wrap;gap:28px}}.cols table{{width:auto}}</style>\n</head>\n<body>\n",
            env!("CARGO_PKG_VERSION"),
            e(&self.title),
            STYLE
        );
        let _ = writeln!(h, "<h1>{}</h1>", e(&self.title));
        let _ = writeln!(h, "<p class=\"sub\">{}</p>", e(&self.subtitle));
        h.push_str("<div class=\"cols\">");
        for (head, rows) in [("Scores", &self.scores), ("Settings", &self.settings)] {
            if rows.is_empty() {
                continue;
            }
            let _ = write!(h, "<div><h3>{head}</h3><table>");
            for (k, v) in rows {
                let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", e(k), e(v));
            }
            h.push_str("</table></div>");
        }
        h.push_str("</div>\n");
        if !self.legend.is_empty() {
            h.push_str("<p class=\"legend\">");
            for (label, c) in &self.legend {
                let _ = write!(h, "<span class=\"item\">{}{}</span>", swatch(*c), e(label));
            }
            h.push_str(
                "<span class=\"item\">white outline and box: object found · black outline: true object</span></p>\n",
            );
        }
        h.push_str("<section class=\"grid\">\n");
        for v in &self.views {
            h.push_str("<figure>");
            h.push_str(&img_tag(&v.picture, &v.name, "r", jpeg_quality)?);
            let _ = write!(h, "<figcaption><span class=\"name\">{}</span>", e(&v.name));
            for line in &v.caption {
                let _ = write!(h, "<div class=\"meta\">{}</div>", e(line));
            }
            h.push_str("</figcaption></figure>\n");
        }
        h.push_str("</section>\n");
        for n in &self.notes {
            let _ = writeln!(h, "<p class=\"meta\">{}</p>", e(n));
        }
        let _ = writeln!(
            h,
            "<footer>deepfactor {} · co-segmentation report</footer>\n</body>\n</html>",
            env!("CARGO_PKG_VERSION")
        );
        Ok(h)
    }

    /// Writes the page to `path`.
    pub fn write_html(&self, path: impl AsRef<Path>, jpeg_quality: u8) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_html(jpeg_quality)?).map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CellGrid;

    #[test]
    fn overlay_shows_factors_outlines_and_box() {
        let img = RgbImage::from_pixel(200, 100, Rgb([128, 128, 128]));
        let grid = CellGrid {
            rows: 1,
            cols: 2,
            image_width: 200,
            image_height: 100,
        };
        let left = Heatmap::new(grid, vec![1.0, 0.0]).unwrap();
        let red = Rgb([230, 25, 75]);
        let mask = Mask::from_fn(200, 100, |x, y| {
            (50..150).contains(&x) && (20..80).contains(&y)
        });
        let b = mask.bbox().unwrap();
        let pic = coseg_overlay(&img, &[(&left, red)], Some(&mask), None, Some(&b), 100, 0.6);
        assert_eq!(pic.dimensions(), (100, 50));
        // Left half tinted red, the right half's far edge untouched.
        let p = pic.get_pixel(5, 25);
        assert!(p[0] > p[1] + 40, "{p:?}");
        assert_eq!(*pic.get_pixel(98, 45), Rgb([128, 128, 128]));
        // The box's white outline at its left edge (x = 25 in the thumbnail).
        assert_eq!(*pic.get_pixel(25, 25), BOX_COLOR);
        // Page: escaped, self-contained.
        let r = CosegReport {
            title: "set <&>".into(),
            views: vec![CosegView {
                name: "a\"b".into(),
                picture: pic,
                caption: vec!["J 50".into()],
            }],
            legend: vec![("factor 0 (object)".into(), red)],
            ..CosegReport::default()
        };
        let page = r.to_html(80).unwrap();
        assert!(page.contains("set &lt;&amp;&gt;") && page.contains("a&quot;b"));
        assert!(page.contains("data:image/jpeg;base64,") && !page.contains("http"));
        assert!(r.to_html(0).is_err());
    }
}
