//! Boxes, and the mapping between image pixels and feature-map cells.
//!
//! Every activation map covers its source image with a uniform grid: a map of `rows × cols`
//! cells over an image of `width × height` pixels gives each cell a rectangle of
//! `width / cols × height / rows` pixels, and its centre at `((c + ½)·width/cols,
//! (r + ½)·height/rows)`. The backbones resize with one scale per axis and their feature maps
//! cover the whole resized input, so this grid is exact up to the sub-cell offset of the
//! network's receptive fields, the same convention used by the published DFF and CroW code.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// An axis-aligned box `[x1, x2) × [y1, y2)` in pixel coordinates of an image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge (exclusive).
    pub x2: f32,
    /// Bottom edge (exclusive).
    pub y2: f32,
}

impl BBox {
    /// A box from its edges; refuses non-finite coordinates and `x2 < x1` or `y2 < y1`.
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Result<Self> {
        if ![x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
            return Err(Error::invalid(format!(
                "box ({x1}, {y1}, {x2}, {y2}) has a non-finite coordinate"
            )));
        }
        if x2 < x1 || y2 < y1 {
            return Err(Error::invalid(format!(
                "box ({x1}, {y1}, {x2}, {y2}) has x2 < x1 or y2 < y1"
            )));
        }
        Ok(BBox { x1, y1, x2, y2 })
    }

    /// Parses `"x1,y1,x2,y2"` (commas or spaces).
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() != 4 {
            return Err(Error::invalid(format!(
                "box {s:?}: expected four numbers x1,y1,x2,y2"
            )));
        }
        let mut v = [0f32; 4];
        for (slot, p) in v.iter_mut().zip(&parts) {
            *slot = p
                .parse::<f32>()
                .map_err(|_| Error::invalid(format!("box {s:?}: {p:?} is not a number")))?;
        }
        BBox::new(v[0], v[1], v[2], v[3])
    }

    /// Width (never negative).
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    /// Height (never negative).
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    /// Area (zero for a degenerate box).
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// The overlap of two boxes, if it has positive area.
    pub fn intersection(&self, other: &BBox) -> Option<BBox> {
        let b = BBox {
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
            x2: self.x2.min(other.x2),
            y2: self.y2.min(other.y2),
        };
        (b.x2 > b.x1 && b.y2 > b.y1).then_some(b)
    }

    /// Intersection over union; 0 when either box is degenerate or they do not overlap.
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = self.intersection(other).map_or(0.0, |b| b.area());
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// Whether the point lies inside `[x1, x2) × [y1, y2)`.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        x >= self.x1 && x < self.x2 && y >= self.y1 && y < self.y2
    }

    /// The box clipped to `[0, width) × [0, height)`.
    pub fn clip(&self, width: f32, height: f32) -> BBox {
        BBox {
            x1: self.x1.clamp(0.0, width),
            y1: self.y1.clamp(0.0, height),
            x2: self.x2.clamp(0.0, width),
            y2: self.y2.clamp(0.0, height),
        }
    }

    /// The box scaled by `sx` horizontally and `sy` vertically.
    pub fn scale(&self, sx: f32, sy: f32) -> BBox {
        BBox {
            x1: self.x1 * sx,
            y1: self.y1 * sy,
            x2: self.x2 * sx,
            y2: self.y2 * sy,
        }
    }
}

/// A feature map's grid of cells laid over the pixels of its source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellGrid {
    /// Rows of cells (feature-map height).
    pub rows: usize,
    /// Columns of cells (feature-map width).
    pub cols: usize,
    /// Width of the source image, in its own pixels.
    pub image_width: u32,
    /// Height of the source image, in its own pixels.
    pub image_height: u32,
}

impl CellGrid {
    /// Number of cells.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Whether the grid has no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of one cell in image pixels, `(width, height)`.
    pub fn cell_size(&self) -> (f32, f32) {
        (
            self.image_width as f32 / self.cols.max(1) as f32,
            self.image_height as f32 / self.rows.max(1) as f32,
        )
    }

    /// Centre of cell `(row, col)` in image pixels, `(x, y)`.
    pub fn cell_center(&self, row: usize, col: usize) -> (f32, f32) {
        let (w, h) = self.cell_size();
        ((col as f32 + 0.5) * w, (row as f32 + 0.5) * h)
    }

    /// The pixel rectangle covered by cells `rows r0..r1`, `cols c0..c1` (half-open).
    pub fn cells_rect(&self, r0: usize, c0: usize, r1: usize, c1: usize) -> BBox {
        // Each edge as `index · size / count`, in f64 and clamped to the image, so that the
        // last cell's edge is exactly the image's (`c · (w / n)` in f32 can overshoot it).
        let edge = |i: usize, size: u32, n: usize| -> f32 {
            ((i as f64 * f64::from(size) / n.max(1) as f64) as f32).min(size as f32)
        };
        BBox {
            x1: edge(c0, self.image_width, self.cols),
            y1: edge(r0, self.image_height, self.rows),
            x2: edge(c1, self.image_width, self.cols),
            y2: edge(r1, self.image_height, self.rows),
        }
    }

    /// For each cell in row-major order, whether its centre lies inside `bbox`.
    pub fn centres_inside(&self, bbox: &BBox) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.len());
        for r in 0..self.rows {
            for c in 0..self.cols {
                let (x, y) = self.cell_center(r, c);
                out.push(bbox.contains(x, y));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_rectangles_end_exactly_at_the_image_edge() {
        // 480 / 19 is not exact in f32: 19 · (480 / 19) = 480.00003 there.
        for (w, h, cols, rows) in [(480u32, 360u32, 19usize, 23usize), (683, 512, 21, 16)] {
            let g = CellGrid {
                rows,
                cols,
                image_width: w,
                image_height: h,
            };
            let all = g.cells_rect(0, 0, rows, cols);
            assert_eq!(
                (all.x1, all.y1, all.x2, all.y2),
                (0.0, 0.0, w as f32, h as f32)
            );
            for c in 0..=cols {
                let x = g.cells_rect(0, 0, rows, c).x2;
                assert!(x <= w as f32, "{x} > {w}");
            }
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0).unwrap();
        let b = BBox::new(5.0, 0.0, 15.0, 10.0).unwrap();
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&a), 1.0);
        let degenerate = BBox::new(3.0, 3.0, 3.0, 8.0).unwrap();
        assert_eq!(a.iou(&degenerate), 0.0);
        assert_eq!(degenerate.iou(&degenerate), 0.0);
    }

    #[test]
    fn refuses_bad_boxes() {
        assert!(BBox::new(5.0, 0.0, 1.0, 1.0).is_err());
        assert!(BBox::new(f32::NAN, 0.0, 1.0, 1.0).is_err());
        assert!(BBox::parse("1,2,3").is_err());
        assert!(BBox::parse("1,2,x,4").is_err());
        assert_eq!(
            BBox::parse("1, 2, 3, 4").unwrap(),
            BBox::new(1.0, 2.0, 3.0, 4.0).unwrap()
        );
    }

    #[test]
    fn grid_centres() {
        let g = CellGrid {
            rows: 2,
            cols: 4,
            image_width: 400,
            image_height: 100,
        };
        assert_eq!(g.cell_center(0, 0), (50.0, 25.0));
        assert_eq!(g.cell_center(1, 3), (350.0, 75.0));
        let b = BBox::new(0.0, 0.0, 200.0, 100.0).unwrap();
        let inside = g.centres_inside(&b);
        assert_eq!(
            inside,
            vec![true, true, false, false, true, true, false, false]
        );
    }
}
