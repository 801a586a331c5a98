//! Preprocessing: decoded RGB image ([`crate::images`]) → resized, normalised network input.
//!
//! The resize keeps the aspect ratio: the shorter side becomes `input_size` (optionally capped
//! so the longer side stays within `max_side`), with a triangle (bilinear, antialiased) filter.

use crate::images::load_rgb;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use image::{imageops::FilterType, RgbImage};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Default shorter side of the network input (the thesis' retrieval setting).
pub const DEFAULT_INPUT_SIZE: u32 = 512;
/// The longer side of a network input never exceeds this, whatever `max_side` says, so a
/// panorama of extreme aspect ratio cannot exhaust memory.
pub const HARD_MAX_SIDE: u32 = 4096;

/// How pixel values are mapped to network inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Normalization {
    /// `(x/255 − mean) / std` per channel with ImageNet's mean and std (VGG, ResNet).
    ImageNet,
    /// `(x − 127) / 128`, as the TensorFlow EfficientNet-Lite models were trained.
    Centered127,
}

impl Normalization {
    /// `(scale, offset)` per channel such that `input = x·scale + offset` for `x` in 0..=255.
    pub fn affine(&self) -> [(f32, f32); 3] {
        match self {
            Normalization::ImageNet => {
                const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
                const STD: [f32; 3] = [0.229, 0.224, 0.225];
                let mut out = [(0.0, 0.0); 3];
                for c in 0..3 {
                    out[c] = (1.0 / (255.0 * STD[c]), -MEAN[c] / STD[c]);
                }
                out
            }
            Normalization::Centered127 => [(1.0 / 128.0, -127.0 / 128.0); 3],
        }
    }

    /// A short name, used in fingerprints and recipes.
    pub fn name(&self) -> &'static str {
        match self {
            Normalization::ImageNet => "imagenet",
            Normalization::Centered127 => "centered127",
        }
    }
}

/// The size of the network input for an image of `width × height`: the shorter side becomes
/// `input_size`, unless that would make the longer side exceed `max_side`, in which case the
/// longer side becomes `max_side`. The longer side never exceeds [`HARD_MAX_SIDE`], and no side
/// is smaller than 1 pixel.
pub fn input_dims(width: u32, height: u32, input_size: u32, max_side: Option<u32>) -> (u32, u32) {
    let short = width.min(height).max(1) as f64;
    let long = width.max(height).max(1) as f64;
    let mut scale = input_size as f64 / short;
    let cap = max_side.unwrap_or(HARD_MAX_SIDE).min(HARD_MAX_SIDE);
    scale = scale.min(cap as f64 / long);
    let w = ((width as f64 * scale).round() as u32).max(1);
    let h = ((height as f64 * scale).round() as u32).max(1);
    (w, h)
}

/// An image ready for a backbone: the normalised input tensor (3 × H × W, on the CPU) and the
/// size of the original image, which feature-map grids refer to.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Normalised input, `3 × height × width`, `f32`, on the CPU.
    pub tensor: Tensor,
    /// Width of the original (oriented) image.
    pub image_width: u32,
    /// Height of the original (oriented) image.
    pub image_height: u32,
}

impl Prepared {
    /// `(height, width)` of the network input.
    pub fn input_hw(&self) -> (usize, usize) {
        let d = self.tensor.dims();
        (d[1], d[2])
    }
}

/// Preprocessing settings: input size, optional longer-side cap, normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Shorter side of the network input.
    pub input_size: u32,
    /// Optional cap on the longer side.
    pub max_side: Option<u32>,
    /// Pixel normalisation.
    pub normalization: Normalization,
}

impl Preprocess {
    /// Resizes and normalises an RGB image.
    pub fn prepare(&self, img: &RgbImage) -> Result<Prepared> {
        let (w, h) = input_dims(img.width(), img.height(), self.input_size, self.max_side);
        let resized;
        let src = if (w, h) == img.dimensions() {
            img
        } else {
            resized = image::imageops::resize(img, w, h, FilterType::Triangle);
            &resized
        };
        let tensor = normalize(src, self.normalization)?;
        Ok(Prepared {
            tensor,
            image_width: img.width(),
            image_height: img.height(),
        })
    }

    /// Decodes and prepares an image file.
    pub fn prepare_path(&self, path: &Path) -> Result<Prepared> {
        self.prepare(&load_rgb(path)?)
    }

    /// A canonical description, part of the weights fingerprint.
    pub fn describe(&self) -> String {
        format!(
            "size={} max={} norm={} resize=triangle",
            self.input_size,
            self.max_side.map_or("none".to_string(), |m| m.to_string()),
            self.normalization.name()
        )
    }
}

/// The usual ImageNet evaluation crop: resize so the shorter side is `resize`, then cut the
/// central `crop × crop` square. Used for classification only; features use the whole image.
pub fn prepare_center_crop(
    img: &RgbImage,
    resize: u32,
    crop: u32,
    normalization: Normalization,
) -> Result<Prepared> {
    if crop > resize || crop == 0 {
        return Err(Error::invalid(format!(
            "centre crop {crop} must lie in 1..={resize}"
        )));
    }
    let (w, h) = input_dims(img.width(), img.height(), resize, None);
    let resized = image::imageops::resize(img, w, h, FilterType::Triangle);
    let (cw, ch) = (crop.min(w), crop.min(h));
    let cropped =
        image::imageops::crop_imm(&resized, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    let tensor = normalize(&cropped, normalization)?;
    Ok(Prepared {
        tensor,
        image_width: img.width(),
        image_height: img.height(),
    })
}

/// Converts an RGB image to a normalised `3 × H × W` tensor.
pub fn normalize(img: &RgbImage, normalization: Normalization) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let affine = normalization.affine();
    let mut data = vec![0f32; 3 * w * h];
    let (r, rest) = data.split_at_mut(w * h);
    let (g, b) = rest.split_at_mut(w * h);
    for (i, px) in img.pixels().enumerate() {
        r[i] = px[0] as f32 * affine[0].0 + affine[0].1;
        g[i] = px[1] as f32 * affine[1].0 + affine[1].1;
        b[i] = px[2] as f32 * affine[2].0 + affine[2].1;
    }
    Ok(Tensor::from_vec(data, (3, h, w), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_dims_keep_aspect_and_cap() {
        assert_eq!(input_dims(1024, 768, 512, None), (683, 512));
        assert_eq!(input_dims(768, 1024, 512, None), (512, 683));
        assert_eq!(input_dims(4000, 1000, 512, Some(1024)), (1024, 256));
        assert_eq!(input_dims(1, 5000, 224, None), (1, 4096));
        assert_eq!(input_dims(100, 20000, 224, Some(100_000)), (20, 4096));
        assert_eq!(input_dims(10, 10, 512, None), (512, 512));
    }

    #[test]
    fn normalization_maps_known_values() {
        let img = RgbImage::from_raw(1, 1, vec![255, 127, 0]).unwrap();
        let t = normalize(&img, Normalization::Centered127).unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![1.0, 0.0, -127.0 / 128.0]);
        let t = normalize(&img, Normalization::ImageNet).unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((v[2] - (-0.406 / 0.225)).abs() < 1e-5);
    }
}
