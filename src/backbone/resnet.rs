//! ResNet-50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), the
//! torchvision "v1.5" variant (stride on the 3×3 convolution) with the parameter names of
//! timm's `resnet50.tv_in1k` (identical to torchvision's).
//!
//! Taps: `conv1` (stem after ReLU), `maxpool`, `layerS.B` (output of block B of stage S) and
//! `layerS` (the stage's output). All are non-negative (they follow a ReLU).
//! With [`Padding::Reflect`] every padded convolution mirrors its border instead of adding
//! zeros, which removes the border artefacts that zero padding leaves in heatmaps.

use super::layers::{Activation, BatchNorm, Conv, Maps, Pad};
use super::weights::TensorMap;
use super::{LayerInfo, Padding};
use crate::Result;
use candle_core::{Device, Tensor};

const BLOCKS: [usize; 4] = [3, 4, 6, 3];
const WIDTHS: [usize; 4] = [64, 128, 256, 512];
const EXPANSION: usize = 4;
const BN_EPS: f64 = 1e-5;

/// The tap points, in execution order.
pub(crate) fn layers() -> Vec<LayerInfo> {
    let mut out = vec![
        LayerInfo::new("conv1", 64, 2, true),
        LayerInfo::new("maxpool", 64, 4, true),
    ];
    let mut stride = 4;
    for s in 0..4 {
        if s > 0 {
            stride *= 2;
        }
        for b in 0..BLOCKS[s] {
            out.push(LayerInfo::new(
                format!("layer{}.{b}", s + 1),
                WIDTHS[s] * EXPANSION,
                stride,
                true,
            ));
        }
        out.push(LayerInfo::new(
            format!("layer{}", s + 1),
            WIDTHS[s] * EXPANSION,
            stride,
            true,
        ));
    }
    out
}

fn bn(map: &mut TensorMap, prefix: &str, c: usize) -> Result<BatchNorm> {
    Ok(BatchNorm {
        gamma: map.take(&format!("{prefix}.weight"), &[c])?,
        beta: map.take(&format!("{prefix}.bias"), &[c])?,
        mean: map.take(&format!("{prefix}.running_mean"), &[c])?,
        var: map.take(&format!("{prefix}.running_var"), &[c])?,
        eps: BN_EPS,
    })
}

fn conv_bn(
    map: &mut TensorMap,
    conv: &str,
    norm: &str,
    shape: [usize; 4],
    stride: usize,
    pad: Pad,
    device: &Device,
) -> Result<Conv> {
    let w = map.take(&format!("{conv}.weight"), &shape)?;
    let bn = bn(map, norm, shape[0])?;
    Conv::with_bn(w, bn, stride, pad, false, device)
}

struct Bottleneck {
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    downsample: Option<Conv>,
}

impl Bottleneck {
    fn forward(&self, x: &Maps) -> Result<Maps> {
        let y = self.conv1.forward(x, Activation::Relu, None)?;
        let y = self.conv2.forward(&y, Activation::Relu, None)?;
        // The shortcut is added, and the sum rectified, as the last convolution's epilogue.
        match &self.downsample {
            Some(d) => {
                let shortcut = d.forward(x, Activation::Identity, None)?;
                self.conv3.forward(&y, Activation::Relu, Some(&shortcut))
            }
            None => self.conv3.forward(&y, Activation::Relu, Some(x)),
        }
    }
}

/// ResNet-50.
pub(crate) struct Resnet {
    stem: Conv,
    blocks: Vec<Vec<Bottleneck>>,
    fc: Option<(Tensor, Tensor)>,
}

impl Resnet {
    /// Builds ResNet-50 from `map`; the classifier `fc` is loaded when present.
    pub fn load(map: &mut TensorMap, padding: Padding, device: &Device) -> Result<Self> {
        let pad = |p: usize| match padding {
            Padding::Zero => Pad::Zero(p),
            Padding::Reflect => Pad::Reflect(p),
        };
        let stem = conv_bn(map, "conv1", "bn1", [64, 3, 7, 7], 2, pad(3), device)?;
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for s in 0..4 {
            let width = WIDTHS[s];
            let c_out = width * EXPANSION;
            let mut stage = Vec::new();
            for b in 0..BLOCKS[s] {
                let p = format!("layer{}.{b}", s + 1);
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let conv1 = conv_bn(
                    map,
                    &format!("{p}.conv1"),
                    &format!("{p}.bn1"),
                    [width, c_in, 1, 1],
                    1,
                    Pad::Zero(0),
                    device,
                )?;
                let conv2 = conv_bn(
                    map,
                    &format!("{p}.conv2"),
                    &format!("{p}.bn2"),
                    [width, width, 3, 3],
                    stride,
                    pad(1),
                    device,
                )?;
                let conv3 = conv_bn(
                    map,
                    &format!("{p}.conv3"),
                    &format!("{p}.bn3"),
                    [c_out, width, 1, 1],
                    1,
                    Pad::Zero(0),
                    device,
                )?;
                let downsample = if b == 0 {
                    Some(conv_bn(
                        map,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        [c_out, c_in, 1, 1],
                        stride,
                        Pad::Zero(0),
                        device,
                    )?)
                } else {
                    None
                };
                stage.push(Bottleneck {
                    conv1,
                    conv2,
                    conv3,
                    downsample,
                });
                c_in = c_out;
            }
            blocks.push(stage);
        }
        let fc = if map.contains("fc.weight") {
            Some((
                map.take("fc.weight", &[1000, 2048])?.to_device(device)?,
                map.take("fc.bias", &[1000])?.to_device(device)?,
            ))
        } else {
            None
        };
        Ok(Resnet { stem, blocks, fc })
    }

    /// Runs up to the last wanted tap (indices into [`layers`]) and returns their outputs.
    pub fn forward_taps(&self, x: Maps, taps: &[usize]) -> Result<Vec<Option<Maps>>> {
        let last = taps.iter().copied().max().unwrap_or(0);
        let mut out = vec![None; last + 1];
        let mut keep = |i: usize, t: &Maps| {
            if taps.contains(&i) {
                out[i] = Some(t.clone());
            }
        };
        let mut x = self.stem.forward(&x, Activation::Relu, None)?;
        keep(0, &x);
        if last == 0 {
            return Ok(out);
        }
        // Max pooling 3×3, stride 2, padding 1.
        x = x.max_pool(3, 2, 1)?;
        keep(1, &x);
        let mut i = 2;
        for stage in &self.blocks {
            for block in stage {
                if i > last {
                    return Ok(out);
                }
                x = block.forward(&x)?;
                keep(i, &x);
                i += 1;
            }
            keep(i, &x);
            i += 1;
        }
        Ok(out)
    }

    /// Whether the classifier was loaded.
    pub fn has_classifier(&self) -> bool {
        self.fc.is_some()
    }

    /// ImageNet logits (`N × 1000`).
    pub fn logits(&self, x: Maps) -> Result<Option<Tensor>> {
        let Some((w, b)) = &self.fc else {
            return Ok(None);
        };
        let n = layers().len() - 1;
        let Some(Some(f)) = self.forward_taps(x, &[n])?.pop() else {
            return Ok(None);
        };
        let f = f.into_tensor()?;
        let pooled = f.mean(3)?.mean(2)?;
        Ok(Some(pooled.matmul(&w.t()?)?.broadcast_add(b)?))
    }
}
