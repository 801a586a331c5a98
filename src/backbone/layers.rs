//! Building blocks shared by the backbones: convolution with batch norm folded in, the three
//! padding conventions (zero, reflection, TensorFlow "SAME"), and a direct depthwise
//! convolution for the CPU.

use crate::Result;
use candle_core::{CpuStorage, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pad {
    /// `p` zeros on every side (PyTorch's default).
    Zero(usize),
    /// `p` mirrored pixels on every side, without repeating the edge (`padding_mode='reflect'`).
    Reflect(usize),
    /// TensorFlow "SAME": output size `ceil(input / stride)`, zeros split with the extra one
    /// after (bottom/right).
    TfSame,
}

/// A 2-D convolution, with any batch norm after it folded into its weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    pad: Pad,
    depthwise: bool,
}

/// Batch-norm parameters as stored in checkpoints.
pub(crate) struct BatchNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub mean: Tensor,
    pub var: Tensor,
    pub eps: f64,
}

impl Conv {
    /// A convolution from its weight `(out, in/groups, kh, kw)` and optional bias `(out)`.
    /// `depthwise` means one group per channel (weight `(C, 1, kh, kw)`).
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        pad: Pad,
        depthwise: bool,
    ) -> Self {
        Conv {
            weight,
            bias,
            stride,
            pad,
            depthwise,
        }
    }

    /// A convolution without bias followed by batch norm, folded into one convolution:
    /// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`.
    pub fn with_bn(
        weight: Tensor,
        bn: BatchNorm,
        stride: usize,
        pad: Pad,
        depthwise: bool,
    ) -> Result<Self> {
        let scale = (bn.gamma / (bn.var + bn.eps)?.sqrt()?)?;
        let out = weight.dim(0)?;
        let weight = weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
        let bias = (bn.beta - (bn.mean * &scale)?)?;
        Ok(Conv {
            weight,
            bias: Some(bias),
            stride,
            pad,
            depthwise,
        })
    }

    /// Moves the parameters to `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Conv {
            weight: self.weight.to_device(device)?,
            bias: self
                .bias
                .as_ref()
                .map(|b| b.to_device(device))
                .transpose()?,
            ..self.clone()
        })
    }

    fn kernel(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[2], d[3])
    }

    /// Applies the convolution to `x` (`N × C × H × W`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (kh, kw) = self.kernel();
        let (x, padding) = match self.pad {
            Pad::Zero(p) if !self.depthwise => (x.clone(), p),
            Pad::Zero(p) => (x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?, 0),
            Pad::Reflect(p) => (reflect_pad(x, p)?, 0),
            Pad::TfSame => {
                let (h, w) = (x.dim(2)?, x.dim(3)?);
                let (t, b) = same_pad(h, kh, self.stride);
                let (l, r) = same_pad(w, kw, self.stride);
                (x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?, 0)
            }
        };
        let y = if self.depthwise {
            depthwise_conv2d(&x, &self.weight, self.stride)?
        } else if (kh, kw) == (1, 1) && self.stride == 1 && padding == 0 {
            // A 1×1 convolution is a matrix product over the channels; done directly, it skips
            // the unfolding copy a general convolution makes.
            let (n, c, h, w) = x.dims4()?;
            let o = self.weight.dim(0)?;
            let wm = self.weight.reshape((o, c))?;
            wm.broadcast_matmul(&x.reshape((n, c, h * w))?)?
                .reshape((n, o, h, w))?
        } else {
            x.conv2d(&self.weight, padding, self.stride, 1, 1)?
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => y,
        })
    }
}

/// TensorFlow "SAME" padding `(before, after)` for one axis.
pub(crate) fn same_pad(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Mirrors `p` pixels on every side of `x` (`N × C × H × W`), as PyTorch's reflection padding.
pub(crate) fn reflect_pad(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    let mut x = x.clone();
    for dim in [2, 3] {
        let n = x.dim(dim)?;
        if n <= p {
            return Err(crate::Error::invalid(format!(
                "reflection padding of {p} needs more than {p} pixels, the map has {n}"
            )));
        }
        let idx: Vec<u32> = (0..n + 2 * p)
            .map(|i| {
                let j = i as i64 - p as i64;
                let r = if j < 0 {
                    -j
                } else if j >= n as i64 {
                    2 * (n as i64 - 1) - j
                } else {
                    j
                };
                r as u32
            })
            .collect();
        let idx = Tensor::from_vec(idx, n + 2 * p, x.device())?;
        x = x.index_select(&idx, dim)?;
    }
    Ok(x)
}

/// ReLU6: `min(max(x, 0), 6)`.
pub(crate) fn relu6(x: &Tensor) -> Result<Tensor> {
    Ok(x.clamp(0f32, 6f32)?)
}

/// Depthwise convolution without padding: `x` is `N × C × H × W`, `w` is `C × 1 × kh × kw`.
/// On the CPU a direct loop (candle splits grouped convolutions into one per group, which is
/// slow with hundreds of channels); elsewhere candle's grouped convolution.
pub(crate) fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        Ok(x.apply_op2_no_bwd(&w, &Depthwise { stride })?)
    } else {
        let c = x.dim(1)?;
        Ok(x.conv2d(w, 0, stride, 1, c)?)
    }
}

struct Depthwise {
    stride: usize,
}

impl candle_core::CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(xs), CpuStorage::F32(ws)) = (s1, s2) else {
            candle_core::bail!("depthwise-conv2d: f32 only");
        };
        let (Some((x0, x1)), Some((w0, w1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("depthwise-conv2d: inputs must be contiguous");
        };
        let (xs, ws) = (&xs[x0..x1], &ws[w0..w1]);
        let &[n, c, h, w] = l1.shape().dims() else {
            candle_core::bail!("depthwise-conv2d: input must be 4-D")
        };
        let &[wc, one, kh, kw] = l2.shape().dims() else {
            candle_core::bail!("depthwise-conv2d: kernel must be 4-D")
        };
        if wc != c || one != 1 || h < kh || w < kw {
            candle_core::bail!(
                "depthwise-conv2d: kernel {wc}×{one}×{kh}×{kw} does not fit input {n}×{c}×{h}×{w}"
            );
        }
        let s = self.stride;
        let (ho, wo) = ((h - kh) / s + 1, (w - kw) / s + 1);
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(nc, o)| {
            let ch = nc % c;
            let plane = &xs[nc * h * w..(nc + 1) * h * w];
            let k = &ws[ch * kh * kw..(ch + 1) * kh * kw];
            for oy in 0..ho {
                let orow = &mut o[oy * wo..(oy + 1) * wo];
                for ky in 0..kh {
                    let row = &plane[(oy * s + ky) * w..(oy * s + ky + 1) * w];
                    for kx in 0..kw {
                        let kv = k[ky * kw + kx];
                        if s == 1 {
                            for (ov, xv) in orow.iter_mut().zip(&row[kx..kx + wo]) {
                                *ov += kv * xv;
                            }
                        } else {
                            for (ox, ov) in orow.iter_mut().enumerate() {
                                *ov += kv * row[ox * s + kx];
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_pad(64, 3, 2), (0, 1));
        assert_eq!(same_pad(65, 3, 2), (1, 1));
        assert_eq!(same_pad(65, 5, 2), (2, 2));
        assert_eq!(same_pad(64, 5, 1), (2, 2));
        assert_eq!(same_pad(7, 1, 1), (0, 0));
    }

    #[test]
    fn reflection_mirrors_without_edge() {
        let x = Tensor::arange(0f32, 4.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        // A 1-row map cannot be reflected by 1 pixel vertically.
        assert!(reflect_pad(&x, 1).is_err());
        let x = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 2, 4))
            .unwrap();
        let y = reflect_pad(&x, 1).unwrap();
        let rows: Vec<Vec<f32>> = y.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(rows[0], vec![5.0, 4.0, 5.0, 6.0, 7.0, 6.0]);
        assert_eq!(rows[1], vec![1.0, 0.0, 1.0, 2.0, 3.0, 2.0]);
        assert_eq!(rows[3], vec![1.0, 0.0, 1.0, 2.0, 3.0, 2.0]);
    }

    #[test]
    fn depthwise_equals_grouped_convolution() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 1, 3, 3), &dev).unwrap();
        for stride in [1, 2] {
            let ours = depthwise_conv2d(&x, &w, stride).unwrap();
            let reference = x.conv2d(&w, 0, stride, 1, 3).unwrap();
            let diff = (ours - reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        }
    }
}
