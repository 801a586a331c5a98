//! VGG-16 and VGG-19 (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale
//! Image Recognition", ICLR 2015), with the parameter names of timm's `vgg16.tv_in1k` /
//! `vgg19.tv_in1k` checkpoints (torchvision's `classifier.*` names are accepted too).
//!
//! Taps: `convS_I` (the ReLU after the I-th convolution of stage S) and `poolS`.

use super::layers::{Activation, Conv, Maps, Pad};
use super::weights::TensorMap;
use super::{LayerInfo, Padding};
use crate::Result;
use candle_core::{Device, Tensor};

/// Convolutions per stage.
pub(crate) fn stages(depth: usize) -> &'static [usize] {
    if depth == 19 {
        &[2, 2, 4, 4, 4]
    } else {
        &[2, 2, 3, 3, 3]
    }
}

const WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// The tap points, in execution order.
pub(crate) fn layers(depth: usize) -> Vec<LayerInfo> {
    let mut out = Vec::new();
    let mut stride = 1;
    for (s, &n) in stages(depth).iter().enumerate() {
        for i in 0..n {
            out.push(LayerInfo::new(
                format!("conv{}_{}", s + 1, i + 1),
                WIDTHS[s],
                stride,
                true,
            ));
        }
        stride *= 2;
        out.push(LayerInfo::new(
            format!("pool{}", s + 1),
            WIDTHS[s],
            stride,
            true,
        ));
    }
    out
}

enum Op {
    Conv(Conv),
    Pool,
}

/// The classifier: `fc1` (7×7 conv), `fc2` (1×1 conv), global average pool, `head.fc`.
struct Classifier {
    fc1: Conv,
    fc2: Conv,
    fc_w: Tensor,
    fc_b: Tensor,
}

/// A VGG network.
pub(crate) struct Vgg {
    ops: Vec<Op>,
    classifier: Option<Classifier>,
}

/// Renames torchvision's classifier tensors to timm's (the weights are reshaped on load).
pub(crate) fn normalize_names(map: &mut TensorMap) {
    map.rename(|k| {
        let rest = k.strip_prefix("classifier.")?;
        let (idx, leaf) = rest.split_once('.')?;
        let to = match idx {
            "0" => "pre_logits.fc1",
            "3" => "pre_logits.fc2",
            "6" => "head.fc",
            _ => return None,
        };
        Some(format!("{to}.{leaf}"))
    });
}

impl Vgg {
    /// Builds VGG-`depth` from `map`. The classifier is loaded when its tensors are present.
    pub fn load(
        depth: usize,
        map: &mut TensorMap,
        padding: Padding,
        device: &Device,
    ) -> Result<Self> {
        normalize_names(map);
        let pad = match padding {
            Padding::Zero => Pad::Zero(1),
            Padding::Reflect => Pad::Reflect(1),
        };
        let mut ops = Vec::new();
        let mut index = 0;
        let mut c_in = 3;
        for (s, &n) in stages(depth).iter().enumerate() {
            for _ in 0..n {
                let c = WIDTHS[s];
                let w = map.take(&format!("features.{index}.weight"), &[c, c_in, 3, 3])?;
                let b = map.take(&format!("features.{index}.bias"), &[c])?;
                ops.push(Op::Conv(Conv::new(w, Some(b), 1, pad, false, device)?));
                index += 2; // conv, ReLU
                c_in = c;
            }
            ops.push(Op::Pool);
            index += 1;
        }
        let classifier = if map.contains("pre_logits.fc1.weight") {
            // torchvision stores the first two dense layers as matrices; timm as convolutions.
            for (name, shape) in [
                ("pre_logits.fc1.weight", (4096, 512, 7, 7)),
                ("pre_logits.fc2.weight", (4096, 4096, 1, 1)),
            ] {
                if let Some(w) = map.tensors.get_mut(name) {
                    if w.dims().len() == 2
                        && w.elem_count() == shape.0 * shape.1 * shape.2 * shape.3
                    {
                        *w = w.reshape(shape)?;
                    }
                }
            }
            // Kept as candle tensors: they run once per classification, and repacking their
            // 120 M parameters for the CPU engine would cost more than it saves.
            let fc1 = Conv::candle(
                map.take("pre_logits.fc1.weight", &[4096, 512, 7, 7])?,
                Some(map.take("pre_logits.fc1.bias", &[4096])?),
                1,
                Pad::Zero(0),
                device,
            )?;
            let fc2 = Conv::candle(
                map.take("pre_logits.fc2.weight", &[4096, 4096, 1, 1])?,
                Some(map.take("pre_logits.fc2.bias", &[4096])?),
                1,
                Pad::Zero(0),
                device,
            )?;
            let fc_w = map
                .take("head.fc.weight", &[1000, 4096])?
                .to_device(device)?;
            let fc_b = map.take("head.fc.bias", &[1000])?.to_device(device)?;
            Some(Classifier {
                fc1,
                fc2,
                fc_w,
                fc_b,
            })
        } else {
            None
        };
        Ok(Vgg { ops, classifier })
    }

    /// Runs up to the last wanted tap (indices into [`layers`]) and returns their outputs.
    pub fn forward_taps(&self, x: Maps, taps: &[usize]) -> Result<Vec<Option<Maps>>> {
        let last = taps.iter().copied().max().unwrap_or(0);
        let mut out = vec![None; last + 1];
        let mut x = x;
        for (i, op) in self.ops.iter().enumerate().take(last + 1) {
            x = match op {
                Op::Conv(c) => c.forward(&x, Activation::Relu, None)?,
                Op::Pool => x.max_pool(2, 2, 0)?,
            };
            if i == last {
                // The last tap takes the map itself.
                out[i] = Some(x);
                break;
            }
            if taps.contains(&i) {
                out[i] = Some(x.clone());
            }
        }
        Ok(out)
    }

    /// Whether the classifier was loaded.
    pub fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }

    /// ImageNet logits (`N × 1000`), applying the classifier fully convolutionally.
    pub fn logits(&self, x: Maps) -> Result<Option<Tensor>> {
        let Some(c) = &self.classifier else {
            return Ok(None);
        };
        let n = self.ops.len() - 1;
        let Some(Some(f)) = self.forward_taps(x, &[n])?.pop() else {
            return Ok(None);
        };
        let f = f.into_tensor()?;
        let (h, w) = (f.dim(2)?, f.dim(3)?);
        // timm adaptively pools maps smaller than the 7×7 the first dense layer expects.
        let f = if h < 7 || w < 7 {
            adaptive_avg_pool2d(&f, h.max(7), w.max(7))?
        } else {
            f
        };
        let y = c.fc1.forward(&Maps::Tensor(f), Activation::Relu, None)?;
        let y = c.fc2.forward(&y, Activation::Relu, None)?.into_tensor()?;
        let pooled = y.mean(3)?.mean(2)?;
        Ok(Some(pooled.matmul(&c.fc_w.t()?)?.broadcast_add(&c.fc_b)?))
    }
}

/// PyTorch's `adaptive_avg_pool2d`: output cell `i` averages input rows
/// `floor(i·H/oh) .. ceil((i+1)·H/oh)` (and likewise for columns).
pub(crate) fn adaptive_avg_pool2d(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    let bins = |n: usize, o: usize| -> Vec<(usize, usize)> {
        (0..o)
            .map(|i| (i * n / o, ((i + 1) * n).div_ceil(o)))
            .collect()
    };
    let mut rows = Vec::with_capacity(oh);
    for (r0, r1) in bins(h, oh) {
        let band = x.narrow(2, r0, r1 - r0)?.mean_keepdim(2)?;
        let mut cols = Vec::with_capacity(ow);
        for (c0, c1) in bins(w, ow) {
            cols.push(band.narrow(3, c0, c1 - c0)?.mean_keepdim(3)?);
        }
        rows.push(Tensor::cat(&cols, 3)?);
    }
    Ok(Tensor::cat(&rows, 2)?)
}
