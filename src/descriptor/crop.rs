//! Crop queries: cut the query image to its box, then describe the crop as a whole image.
//!
//! Every published retrieval number except the thesis' own (which filters factors, see
//! [`super::Describer::describe_region`]) queries with the cropped image. The box is rounded
//! to whole pixels the way Pillow's `Image.crop` does (nearest integer, ties to even) and
//! clipped to the image.

use crate::backbone::Backbone;
use crate::images::load_rgb;
use crate::Activations;
use crate::{BBox, Error, Result};
use image::RgbImage;
use std::path::Path;

/// The pixel rectangle `(x, y, width, height)` that [`crop_image`] cuts from an image of
/// `width × height` for `bbox`: edges rounded to the nearest pixel (ties to even) and clipped.
/// Refuses a box that leaves no pixel.
pub fn crop_rect(width: u32, height: u32, bbox: &BBox) -> Result<(u32, u32, u32, u32)> {
    let round = |v: f32, max: u32| v.round_ties_even().clamp(0.0, max as f32) as u32;
    let (x1, x2) = (round(bbox.x1, width), round(bbox.x2, width));
    let (y1, y2) = (round(bbox.y1, height), round(bbox.y2, height));
    if x2 <= x1 || y2 <= y1 {
        return Err(Error::invalid(format!(
            "box ({}, {}, {}, {}) leaves no pixel of a {width}×{height} image",
            bbox.x1, bbox.y1, bbox.x2, bbox.y2
        )));
    }
    Ok((x1, y1, x2 - x1, y2 - y1))
}

/// The part of `image` inside `bbox` (pixel coordinates), as a new image.
pub fn crop_image(image: &RgbImage, bbox: &BBox) -> Result<RgbImage> {
    let (x, y, w, h) = crop_rect(image.width(), image.height(), bbox)?;
    Ok(image::imageops::crop_imm(image, x, y, w, h).to_image())
}

/// Activations of the part of an image file inside `bbox`: the crop is resized and normalised
/// exactly as a whole image would be. The returned grid refers to the crop's pixels.
pub fn extract_crop(backbone: &Backbone, path: &Path, bbox: &BBox) -> Result<Activations> {
    let image = load_rgb(path)?;
    let crop = crop_image(&image, bbox).map_err(|e| match e {
        Error::InvalidArgument(r) => Error::image(path, r),
        other => other,
    })?;
    backbone.extract(&backbone.preprocess().prepare(&crop)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_like_pillow_and_clips() {
        let b = BBox::new(222.3, 58.7, 425.6, 389.8).unwrap();
        assert_eq!(crop_rect(500, 400, &b).unwrap(), (222, 59, 204, 331));
        // Ties go to the even neighbour, as Python's round().
        let b = BBox::new(0.5, 1.5, 2.5, 3.5).unwrap();
        assert_eq!(crop_rect(10, 10, &b).unwrap(), (0, 2, 2, 2));
        let b = BBox::new(-5.0, -5.0, 50.0, 50.0).unwrap();
        assert_eq!(crop_rect(20, 10, &b).unwrap(), (0, 0, 20, 10));
        let b = BBox::new(30.0, 0.0, 40.0, 5.0).unwrap();
        assert!(crop_rect(20, 10, &b).is_err());
    }

    #[test]
    fn crops_the_right_pixels() {
        let img = RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = crop_image(&img, &BBox::new(2.0, 1.0, 5.0, 3.0).unwrap()).unwrap();
        assert_eq!(c.dimensions(), (3, 2));
        assert_eq!(c.get_pixel(0, 0).0, [2, 1, 0]);
        assert_eq!(c.get_pixel(2, 1).0, [4, 2, 0]);
    }
}
