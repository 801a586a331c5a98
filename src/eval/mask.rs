//! Binary masks and their Jaccard index (intersection over union).

use crate::{BBox, Error, Result};
use std::path::Path;

/// A binary mask over a `width × height` grid (row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    width: usize,
    height: usize,
    bits: Vec<bool>,
}

impl Mask {
    /// A mask from row-major bits; refuses `bits.len() != width * height`.
    pub fn new(width: usize, height: usize, bits: Vec<bool>) -> Result<Self> {
        if Some(bits.len()) != width.checked_mul(height) {
            return Err(Error::invalid(format!(
                "mask of {width}×{height} needs {} values, got {}",
                width.saturating_mul(height),
                bits.len()
            )));
        }
        Ok(Mask {
            width,
            height,
            bits,
        })
    }

    /// An all-background mask.
    pub fn empty(width: usize, height: usize) -> Self {
        Mask {
            width,
            height,
            bits: vec![false; width * height],
        }
    }

    /// A mask that is foreground where `f(x, y)` holds.
    pub fn from_fn(width: usize, height: usize, mut f: impl FnMut(usize, usize) -> bool) -> Self {
        let mut bits = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                bits.push(f(x, y));
            }
        }
        Mask {
            width,
            height,
            bits,
        }
    }

    /// The ground-truth mask at `path` for an image whose mask is `width`×`height`, or why the
    /// image cannot be scored against it (unreadable, or another size) — the reason a
    /// co-segmentation run records for an image it leaves unscored.
    pub fn load_truth(
        path: &Path,
        width: usize,
        height: usize,
    ) -> std::result::Result<Self, String> {
        match Self::load(path) {
            Ok(m) if (m.width(), m.height()) == (width, height) => Ok(m),
            Ok(m) => Err(format!(
                "not scored: its mask {} is {}×{}, the image {}×{}",
                path.display(),
                m.width(),
                m.height(),
                width,
                height
            )),
            Err(e) => Err(format!("not scored: {e}")),
        }
    }

    /// Reads a mask image (PNG or any format the `image` crate decodes): foreground where the
    /// grey level is non-zero. Our dataset scripts write masks as 0 / 255 greyscale PNGs.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let img = image::open(path)
            .map_err(|e| Error::image(path, e.to_string()))?
            .to_luma8();
        let (w, h) = img.dimensions();
        Ok(Mask {
            width: w as usize,
            height: h as usize,
            bits: img.pixels().map(|p| p.0[0] != 0).collect(),
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The row-major bits.
    pub fn bits(&self) -> &[bool] {
        &self.bits
    }

    /// Whether `(x, y)` is foreground; false outside the mask.
    pub fn get(&self, x: usize, y: usize) -> bool {
        x < self.width && y < self.height && self.bits[y * self.width + x]
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.bits.iter().filter(|&&b| b).count()
    }

    /// Whether no pixel is foreground.
    pub fn is_empty(&self) -> bool {
        !self.bits.iter().any(|&b| b)
    }

    fn check_same_size(&self, other: &Mask) -> Result<()> {
        if (self.width, self.height) != (other.width, other.height) {
            return Err(Error::invalid(format!(
                "masks differ in size: {}×{} and {}×{}",
                self.width, self.height, other.width, other.height
            )));
        }
        Ok(())
    }

    /// Number of pixels foreground in both masks.
    pub fn intersection_area(&self, other: &Mask) -> Result<usize> {
        self.check_same_size(other)?;
        Ok(self
            .bits
            .iter()
            .zip(&other.bits)
            .filter(|(a, b)| **a && **b)
            .count())
    }

    /// The union of two masks of the same size.
    pub fn union(&self, other: &Mask) -> Result<Mask> {
        self.check_same_size(other)?;
        Ok(Mask {
            width: self.width,
            height: self.height,
            bits: self
                .bits
                .iter()
                .zip(&other.bits)
                .map(|(a, b)| *a || *b)
                .collect(),
        })
    }

    /// Masks of equal width stacked top to bottom (to score a set of images as one).
    pub fn vstack(masks: &[Mask]) -> Result<Mask> {
        let Some(first) = masks.first() else {
            return Err(Error::invalid("vstack of no masks"));
        };
        let mut bits = Vec::new();
        let mut height = 0;
        for m in masks {
            if m.width != first.width {
                return Err(Error::invalid(format!(
                    "vstack needs equal widths, got {} and {}",
                    first.width, m.width
                )));
            }
            bits.extend_from_slice(&m.bits);
            height += m.height;
        }
        Ok(Mask {
            width: first.width,
            height,
            bits,
        })
    }

    /// The pixel box `[x1, x2) × [y1, y2)` around all foreground; `None` for an empty mask.
    pub fn bbox(&self) -> Option<BBox> {
        let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0, 0);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.bits[y * self.width + x] {
                    x1 = x1.min(x);
                    y1 = y1.min(y);
                    x2 = x2.max(x + 1);
                    y2 = y2.max(y + 1);
                }
            }
        }
        (x2 > 0).then_some(BBox {
            x1: x1 as f32,
            y1: y1 as f32,
            x2: x2 as f32,
            y2: y2 as f32,
        })
    }

    /// The largest 8-connected foreground component (the first in raster order on a tie);
    /// empty for an empty mask.
    pub fn largest_component(&self) -> Mask {
        let (w, h) = (self.width, self.height);
        let mut label = vec![0u32; w * h];
        let mut best = (0usize, 0u32);
        let mut next = 0u32;
        let mut stack = Vec::new();
        for start in 0..w * h {
            if !self.bits[start] || label[start] != 0 {
                continue;
            }
            next += 1;
            label[start] = next;
            stack.push(start);
            let mut size = 0usize;
            while let Some(i) = stack.pop() {
                size += 1;
                let (x, y) = (i % w, i / w);
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                            continue;
                        }
                        let j = ny as usize * w + nx as usize;
                        if self.bits[j] && label[j] == 0 {
                            label[j] = next;
                            stack.push(j);
                        }
                    }
                }
            }
            if size > best.0 {
                best = (size, next);
            }
        }
        Mask {
            width: w,
            height: h,
            bits: label.iter().map(|&l| best.1 != 0 && l == best.1).collect(),
        }
    }
}

/// Jaccard index (intersection over union) of two binary masks of the same size, in `[0, 1]`.
/// Two empty masks agree perfectly and score 1; an empty and a non-empty mask score 0.
pub fn jaccard(a: &Mask, b: &Mask) -> Result<f64> {
    let inter = a.intersection_area(b)?;
    let union = a.area() + b.area() - inter;
    Ok(if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaccard_by_hand() {
        // 4×1: a = 1100, b = 0110 → inter 1, union 3.
        let a = Mask::new(4, 1, vec![true, true, false, false]).unwrap();
        let b = Mask::new(4, 1, vec![false, true, true, false]).unwrap();
        assert!((jaccard(&a, &b).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(jaccard(&a, &a).unwrap(), 1.0);
        let e = Mask::empty(4, 1);
        assert_eq!(jaccard(&e, &e).unwrap(), 1.0);
        assert_eq!(jaccard(&a, &e).unwrap(), 0.0);
        assert!(jaccard(&a, &Mask::empty(2, 2)).is_err());
        assert!(Mask::new(3, 3, vec![true; 8]).is_err());
    }

    #[test]
    fn boxes_and_components() {
        // Two blobs: a 2×2 square at (0,0) and a diagonal pair at (3,3),(4,4) (8-connected).
        let m = Mask::from_fn(6, 6, |x, y| {
            (x < 2 && y < 2) || (x == y && (3..=4).contains(&x))
        });
        assert_eq!(m.area(), 6);
        assert_eq!(m.bbox(), Some(BBox::new(0.0, 0.0, 5.0, 5.0).unwrap()));
        let big = m.largest_component();
        assert_eq!(big.area(), 4);
        assert_eq!(big.bbox(), Some(BBox::new(0.0, 0.0, 2.0, 2.0).unwrap()));
        let diag = Mask::from_fn(6, 6, |x, y| x == y && (3..=4).contains(&x));
        assert_eq!(diag.largest_component().area(), 2);
        assert_eq!(Mask::empty(3, 3).bbox(), None);
        assert!(Mask::empty(3, 3).largest_component().is_empty());
        let s = Mask::vstack(&[m.clone(), Mask::empty(6, 2)]).unwrap();
        assert_eq!((s.width(), s.height(), s.area()), (6, 8, 6));
        assert!(Mask::vstack(&[m, Mask::empty(5, 1)]).is_err());
    }
}
