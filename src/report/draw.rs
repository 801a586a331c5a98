//! Drawing on RGB images: rectangles, box outlines and text labels, always clipped.
//!
//! Coordinates may lie anywhere (negative, beyond the image, huge): what falls outside the
//! image is not drawn, and nothing panics.

use super::color::blend;
use super::font;
use crate::BBox;
use image::{Rgb, RgbImage};

/// Colour of box outlines: white, with a dark rim so it shows on light and dark photos alike
/// and is never mistaken for a factor colour.
pub const BOX_COLOR: Rgb<u8> = Rgb([255, 255, 255]);
/// Colour of the rim around box outlines and of label backgrounds.
pub const RIM_COLOR: Rgb<u8> = Rgb([16, 16, 16]);

/// Line thickness for boxes drawn on a `width × height` image: about 1/128 of the shorter
/// side, at least 2 pixels.
pub fn box_thickness(width: u32, height: u32) -> u32 {
    ((width.min(height) as f32 / 128.0).round() as u32).max(2)
}

/// Integer pixel range `[a, b)` of the real interval `[a, b)`, clipped to `[0, n)`.
fn span(a: f32, b: f32, n: u32) -> (u32, u32) {
    let clamp = |v: f32| -> u32 {
        if v.is_nan() {
            0
        } else {
            v.round().clamp(0.0, n as f32) as u32
        }
    };
    let (a, b) = (clamp(a), clamp(b));
    (a, b.max(a))
}

/// Fills the rectangle `[x1, x2) × [y1, y2)` (clipped) with `color` at opacity `alpha`.
pub fn fill_rect(
    img: &mut RgbImage,
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
    color: Rgb<u8>,
    alpha: f32,
) {
    let (xa, xb) = span(x1, x2, img.width());
    let (ya, yb) = span(y1, y2, img.height());
    for y in ya..yb {
        for x in xa..xb {
            let p = img.get_pixel_mut(x, y);
            *p = if alpha >= 1.0 {
                color
            } else {
                blend(*p, color, alpha)
            };
        }
    }
}

/// Draws the outline of `bbox` (in `img`'s pixels) `thickness` pixels wide, inside the box's
/// edges, in `color`. Parts outside the image are clipped; a box entirely outside draws
/// nothing.
pub fn draw_outline(img: &mut RgbImage, bbox: &BBox, color: Rgb<u8>, thickness: u32) {
    let t = thickness as f32;
    let BBox { x1, y1, x2, y2 } = *bbox;
    // A band never reaches past the opposite edge of a thin box.
    let tx = t.min((x2 - x1).max(0.0));
    let ty = t.min((y2 - y1).max(0.0));
    fill_rect(img, x1, y1, x2, y1 + ty, color, 1.0); // top
    fill_rect(img, x1, y2 - ty, x2, y2, color, 1.0); // bottom
    fill_rect(img, x1, y1, x1 + tx, y2, color, 1.0); // left
    fill_rect(img, x2 - tx, y1, x2, y2, color, 1.0); // right
}

/// Draws `bbox` as a [`BOX_COLOR`]-style outline in `color`, `thickness` wide, framed by a
/// one-pixel dark rim on both sides so it reads over any background.
pub fn draw_box(img: &mut RgbImage, bbox: &BBox, color: Rgb<u8>, thickness: u32) {
    let rim = BBox {
        x1: bbox.x1 - 1.0,
        y1: bbox.y1 - 1.0,
        x2: bbox.x2 + 1.0,
        y2: bbox.y2 + 1.0,
    };
    draw_outline(img, &rim, RIM_COLOR, thickness + 2);
    draw_outline(img, bbox, color, thickness);
}

/// Draws `text` at `(x, y)` on a dark, slightly transparent plate with a padding of one font
/// pixel; returns the plate's size `(width, height)`.
pub fn label(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    scale: u32,
    color: Rgb<u8>,
) -> (u32, u32) {
    let s = scale.max(1);
    let w = font::text_width(text, s) + 2 * s;
    let h = (font::GLYPH_HEIGHT + 1) * s + s;
    let (xf, yf) = (x as f32, y as f32);
    fill_rect(img, xf, yf, xf + w as f32, yf + h as f32, RIM_COLOR, 0.8);
    font::draw_text(img, x + i64::from(s), y + i64::from(s), text, s, color);
    (w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RED: Rgb<u8> = Rgb([255, 0, 0]);

    fn red_pixels(img: &RgbImage) -> Vec<(u32, u32)> {
        img.enumerate_pixels()
            .filter(|(_, _, p)| **p == RED)
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    #[test]
    fn outline_inside_the_image() {
        let mut img = RgbImage::new(20, 20);
        draw_outline(&mut img, &BBox::new(2.0, 3.0, 12.0, 10.0).unwrap(), RED, 2);
        let red = red_pixels(&img);
        // Perimeter band of a 10 × 7 box, 2 wide: 70 − 6·3 inner pixels.
        assert_eq!(red.len(), 70 - 6 * 3);
        assert!(red
            .iter()
            .all(|&(x, y)| (2..12).contains(&x) && (3..10).contains(&y)));
        assert_eq!(img.get_pixel(2, 3), &RED);
        assert_eq!(img.get_pixel(11, 9), &RED);
        assert_eq!(img.get_pixel(6, 6), &Rgb([0, 0, 0]));
    }

    #[test]
    fn boxes_partly_or_wholly_outside_are_clipped() {
        let mut img = RgbImage::new(16, 8);
        // Sticks out on the left and bottom: only the top and right bands are visible.
        draw_outline(&mut img, &BBox::new(-10.0, 2.0, 8.0, 30.0).unwrap(), RED, 1);
        let red = red_pixels(&img);
        assert!(!red.is_empty());
        assert!(
            red.iter()
                .all(|&(x, y)| (y == 2 && x < 8) || (x == 7 && y >= 2)),
            "{red:?}"
        );
        // Entirely outside, enormous, inverted or NaN: nothing drawn, no panic.
        let mut img = RgbImage::new(16, 8);
        for b in [
            BBox {
                x1: 100.0,
                y1: 100.0,
                x2: 200.0,
                y2: 200.0,
            },
            BBox {
                x1: -1e30,
                y1: -1e30,
                x2: -5.0,
                y2: -5.0,
            },
            BBox {
                x1: 9.0,
                y1: 5.0,
                x2: 3.0,
                y2: 1.0,
            },
            BBox {
                x1: f32::NAN,
                y1: f32::NAN,
                x2: f32::NAN,
                y2: f32::NAN,
            },
        ] {
            draw_outline(&mut img, &b, RED, 3);
        }
        assert!(red_pixels(&img).is_empty());
        // A box covering far more than the image: its edges are outside, nothing drawn.
        draw_box(
            &mut img,
            &BBox {
                x1: -1e30,
                y1: -1e30,
                x2: 1e30,
                y2: 1e30,
            },
            RED,
            4,
        );
        assert!(red_pixels(&img).is_empty());
    }

    #[test]
    fn thickness_scales_with_image_size() {
        assert_eq!(box_thickness(100, 100), 2);
        assert_eq!(box_thickness(512, 384), 3);
        assert_eq!(box_thickness(4000, 3000), 23);
        assert!(box_thickness(0, 0) >= 2);
    }

    #[test]
    fn labels_have_a_plate_and_text() {
        let mut img = RgbImage::from_pixel(60, 20, Rgb([200, 200, 200]));
        let (w, h) = label(&mut img, 2, 2, "#1", 1, RED);
        assert_eq!((w, h), (font::text_width("#1", 1) + 2, 10));
        assert!(!red_pixels(&img).is_empty());
        assert!(img.get_pixel(2, 2)[0] < 100, "plate is dark");
        assert_eq!(img.get_pixel(50, 15), &Rgb([200, 200, 200]));
        label(&mut img, -100, 15, "clipped", 3, RED);
    }

    proptest! {
        #[test]
        fn any_box_draws_only_within_it_and_never_panics(
            x1 in -500f32..500.0, y1 in -500f32..500.0,
            w in 0f32..800.0, h in 0f32..800.0, t in 1u32..12,
        ) {
            let mut img = RgbImage::new(64, 48);
            let b = BBox { x1, y1, x2: x1 + w, y2: y1 + h };
            draw_outline(&mut img, &b, RED, t);
            for (x, y) in red_pixels(&img) {
                let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
                prop_assert!(xf >= b.x1.round() && xf <= b.x2.round() && yf >= b.y1.round() && yf <= b.y2.round());
            }
            draw_box(&mut img, &b, RED, t);
        }
    }
}
