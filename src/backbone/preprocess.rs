//! Decoding and preprocessing: file → RGB image → resized, normalised network input.
//!
//! Decoding uses the `image` crate (JPEG, PNG, WebP, TIFF, BMP) with limits on dimensions and
//! memory, so a hostile header cannot make us allocate gigabytes; the EXIF orientation is
//! applied; grayscale, 16-bit, alpha and CMYK inputs all become 8-bit RGB. The resize keeps the
//! aspect ratio: the shorter side becomes `input_size` (optionally capped so the longer side
//! stays within `max_side`), with a triangle (bilinear, antialiased) filter.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use image::{imageops::FilterType, DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Largest width or height accepted from a file, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 20_000;
/// Largest decoded image accepted, in bytes (a 16-bit RGBA image of 8192×8192 fits).
pub const MAX_DECODE_BYTES: u64 = 1 << 30;
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

/// Decodes an image file into 8-bit RGB, with the EXIF orientation applied.
///
/// Errors name the file: unreadable, unknown format, corrupt or truncated data, or dimensions
/// beyond [`MAX_IMAGE_SIDE`] / [`MAX_DECODE_BYTES`].
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let head = std::io::BufRead::fill_buf(&mut reader).map_err(|e| Error::io(path, e))?;
    let format = sniff(head, path)?;
    decode(ImageReader::with_format(reader, format), path)
}

/// Decodes an image held in memory; `name` is used in error messages.
pub fn decode_rgb(bytes: &[u8], name: &Path) -> Result<RgbImage> {
    let format = sniff(bytes, name)?;
    decode(
        ImageReader::with_format(std::io::Cursor::new(bytes), format),
        name,
    )
}

/// The format of an image from its first bytes (never from its file name).
fn sniff(head: &[u8], path: &Path) -> Result<image::ImageFormat> {
    use image::ImageFormat as F;
    match image::guess_format(head) {
        Ok(f @ (F::Jpeg | F::Png | F::WebP | F::Tiff | F::Bmp)) => Ok(f),
        Ok(other) => Err(Error::image(
            path,
            format!("unsupported image format {other:?} (JPEG, PNG, WebP, TIFF and BMP are read)"),
        )),
        Err(_) if head.is_empty() => Err(Error::image(path, "not an image: the file is empty")),
        Err(_) => Err(Error::image(
            path,
            "not an image in a supported format (JPEG, PNG, WebP, TIFF, BMP)",
        )),
    }
}

fn decode<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
) -> Result<RgbImage> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| describe(path, e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::image(path, format!("image has no pixels ({w}×{h})")));
    }
    // A missing or unreadable orientation tag means "as stored".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| describe(path, e))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn describe(path: &Path, e: image::ImageError) -> Error {
    use image::ImageError as E;
    let reason = match e {
        E::Limits(l) => format!(
            "image too large to decode (limit {MAX_IMAGE_SIDE} pixels a side, {} MiB): {l}",
            MAX_DECODE_BYTES >> 20
        ),
        E::Unsupported(u) => format!("unsupported image: {u}"),
        E::Decoding(d) => format!("corrupt or truncated image: {d}"),
        E::IoError(io) => format!("corrupt or truncated image: {io}"),
        other => other.to_string(),
    };
    Error::image(path, reason)
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
