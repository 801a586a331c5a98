//! Building blocks shared by the backbones: the feature maps between layers ([`Maps`]),
//! convolution with batch norm folded in and its epilogue (residual, ReLU/ReLU6), and the three
//! padding conventions (zero, reflection, TensorFlow "SAME"). On the CPU the work goes to the
//! channels-last engine in `cpu.rs`; on other devices to candle.

pub(crate) use super::cpu::Activation;
pub(crate) use super::cpu::BufferPool;
use super::cpu::{CpuConv, Nhwc};
use crate::Result;
use candle_core::{Device, Tensor};
use std::sync::Arc;

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

/// The feature maps between layers: candle's `N × C × H × W` tensors (any device), or the CPU
/// engine's channels-last buffers.
#[derive(Debug, Clone)]
pub(crate) enum Maps {
    /// A candle tensor, `N × C × H × W`.
    Tensor(Tensor),
    /// The CPU engine's layout.
    Nhwc(Nhwc),
}

impl Maps {
    /// A network input (`N × C × H × W`) for the CPU engine; the maps computed from it take
    /// their buffers from `pool`.
    pub fn cpu(x: &Tensor, pool: Option<Arc<BufferPool>>) -> Result<Self> {
        Ok(Maps::Nhwc(Nhwc::from_nchw(x, pool)?))
    }

    /// As an `N × C × H × W` tensor.
    pub fn into_tensor(self) -> Result<Tensor> {
        match self {
            Maps::Tensor(t) => Ok(t),
            Maps::Nhwc(m) => m.to_nchw(),
        }
    }

    /// Max pooling over `k × k` windows with stride `s` and `p` cells of padding that never win.
    pub fn max_pool(&self, k: usize, s: usize, p: usize) -> Result<Self> {
        Ok(match self {
            Maps::Nhwc(m) => Maps::Nhwc(m.max_pool(k, s, p)?),
            // The padded cells may be zeros: every pooled map here follows a ReLU.
            Maps::Tensor(t) => Maps::Tensor(
                t.pad_with_zeros(2, p, p)?
                    .pad_with_zeros(3, p, p)?
                    .max_pool2d_with_stride(k, s)?,
            ),
        })
    }
}

/// A 2-D convolution, with any batch norm after it folded into its weight and bias. On the CPU
/// its parameters are kept in the CPU engine's layout; elsewhere as candle tensors.
#[derive(Debug, Clone)]
pub(crate) enum Conv {
    /// Candle's convolution on any device.
    Candle {
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        pad: Pad,
        depthwise: bool,
    },
    /// The CPU engine.
    Cpu(CpuConv),
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
    /// A convolution from its weight `(out, in/groups, kh, kw)` and optional bias `(out)`, for
    /// `device`. `depthwise` means one group per channel (weight `(C, 1, kh, kw)`).
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        pad: Pad,
        depthwise: bool,
        device: &Device,
    ) -> Result<Self> {
        if device.is_cpu() {
            return Ok(Conv::Cpu(CpuConv::new(
                &weight,
                bias.as_ref(),
                stride,
                pad,
                depthwise,
            )?));
        }
        Ok(Conv::Candle {
            weight: weight.to_device(device)?,
            bias: bias.map(|b| b.to_device(device)).transpose()?,
            stride,
            pad,
            depthwise,
        })
    }

    /// A convolution kept as candle tensors on every device (layers outside the feature path,
    /// such as VGG's classifier, which run once per classification).
    pub fn candle(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        pad: Pad,
        device: &Device,
    ) -> Result<Self> {
        Ok(Conv::Candle {
            weight: weight.to_device(device)?,
            bias: bias.map(|b| b.to_device(device)).transpose()?,
            stride,
            pad,
            depthwise: false,
        })
    }

    /// A convolution without bias followed by batch norm, folded into one convolution:
    /// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`.
    pub fn with_bn(
        weight: Tensor,
        bn: BatchNorm,
        stride: usize,
        pad: Pad,
        depthwise: bool,
        device: &Device,
    ) -> Result<Self> {
        let scale = (bn.gamma / (bn.var + bn.eps)?.sqrt()?)?;
        let out = weight.dim(0)?;
        let weight = weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
        let bias = (bn.beta - (bn.mean * &scale)?)?;
        Self::new(weight, Some(bias), stride, pad, depthwise, device)
    }

    /// Applies the convolution to `x`, adds `residual` (the output's shape) when given, then
    /// `act`.
    pub fn forward(&self, x: &Maps, act: Activation, residual: Option<&Maps>) -> Result<Maps> {
        match self {
            Conv::Cpu(c) => {
                let x = x.nhwc()?;
                let r = residual.map(Maps::nhwc).transpose()?;
                Ok(Maps::Nhwc(c.forward(&x, act, r.as_deref())?))
            }
            Conv::Candle {
                weight,
                bias,
                stride,
                pad,
                depthwise,
            } => {
                let x = x.tensor()?;
                let mut y = candle_conv(&x, weight, *stride, *pad, *depthwise)?;
                if let Some(b) = bias {
                    y = y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
                }
                if let Some(r) = residual {
                    y = (y + &*r.tensor()?)?;
                }
                Ok(Maps::Tensor(match act {
                    Activation::Identity => y,
                    Activation::Relu => y.relu()?,
                    Activation::Relu6 => y.clamp(0f32, 6f32)?,
                }))
            }
        }
    }
}

impl Maps {
    /// The CPU engine's layout, converting (once per network, at most) when needed.
    fn nhwc(&self) -> Result<std::borrow::Cow<'_, Nhwc>> {
        Ok(match self {
            Maps::Nhwc(m) => std::borrow::Cow::Borrowed(m),
            Maps::Tensor(t) => std::borrow::Cow::Owned(Nhwc::from_nchw(t, None)?),
        })
    }

    /// A candle tensor, converting when needed.
    fn tensor(&self) -> Result<std::borrow::Cow<'_, Tensor>> {
        Ok(match self {
            Maps::Tensor(t) => std::borrow::Cow::Borrowed(t),
            Maps::Nhwc(m) => std::borrow::Cow::Owned(m.to_nchw()?),
        })
    }
}

/// Candle's convolution of `x` (`N × C × H × W`) with the padding applied as the mode asks.
fn candle_conv(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    pad: Pad,
    depthwise: bool,
) -> Result<Tensor> {
    let (kh, kw) = (weight.dim(2)?, weight.dim(3)?);
    let (x, padding) = match pad {
        Pad::Zero(p) if !depthwise => (x.clone(), p),
        Pad::Zero(p) => (x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?, 0),
        Pad::Reflect(p) => (reflect_pad(x, p)?, 0),
        Pad::TfSame => {
            let (h, w) = (x.dim(2)?, x.dim(3)?);
            let (t, b) = same_pad(h, kh, stride);
            let (l, r) = same_pad(w, kw, stride);
            (x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?, 0)
        }
    };
    if depthwise {
        return Ok(x.conv2d(weight, 0, stride, 1, x.dim(1)?)?);
    }
    if (kh, kw) == (1, 1) && stride == 1 && padding == 0 {
        // A 1×1 convolution is a matrix product over the channels; done directly, it skips
        // the unfolding copy a general convolution makes.
        let (n, c, h, w) = x.dims4()?;
        let o = weight.dim(0)?;
        return Ok(weight
            .reshape((o, c))?
            .broadcast_matmul(&x.reshape((n, c, h * w))?)?
            .reshape((n, o, h, w))?);
    }
    Ok(x.conv2d(weight, padding, stride, 1, 1)?)
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

#[cfg(test)]
pub(crate) mod tests {
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

    /// Values in `[lo, hi)` from a fixed seed.
    pub(crate) fn uniform(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                z ^= z << 13;
                z ^= z >> 7;
                z ^= z << 17;
                lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn cpu_engine_matches_candle_for_every_convolution_kind() {
        // (C_in, C_out, k, stride, padding, depthwise, residual, activation)
        let cases = [
            (3, 16, 3, 1, Pad::Zero(1), false, false, Activation::Relu),
            (5, 7, 3, 2, Pad::Zero(1), false, true, Activation::Relu),
            (6, 9, 7, 2, Pad::Reflect(3), false, false, Activation::Relu),
            (4, 4, 3, 1, Pad::Reflect(1), false, true, Activation::Relu),
            (3, 8, 3, 2, Pad::TfSame, false, false, Activation::Relu6),
            (8, 12, 1, 1, Pad::Zero(0), false, true, Activation::Identity),
            (
                8,
                12,
                1,
                2,
                Pad::Zero(0),
                false,
                false,
                Activation::Identity,
            ),
            (20, 20, 3, 1, Pad::TfSame, true, false, Activation::Relu6),
            (20, 20, 5, 2, Pad::TfSame, true, true, Activation::Relu6),
            (37, 37, 3, 2, Pad::TfSame, true, false, Activation::Identity),
            (16, 16, 3, 1, Pad::Zero(1), true, false, Activation::Relu),
            // 3×3 stride 1 from 16 input channels: Winograd F(2×2, 3×3), vector and scalar
            // channel tails, zero and mirrored borders, odd map sizes.
            (16, 24, 3, 1, Pad::Zero(1), false, false, Activation::Relu),
            (37, 19, 3, 1, Pad::Zero(1), false, true, Activation::Relu),
            (20, 33, 3, 1, Pad::Reflect(1), false, true, Activation::Relu),
            (
                32,
                16,
                3,
                1,
                Pad::Zero(0),
                false,
                false,
                Activation::Identity,
            ),
            (24, 8, 3, 1, Pad::Zero(2), false, false, Activation::Relu6),
        ];
        for (i, &(c_in, c_out, k, stride, pad, depthwise, residual, act)) in
            cases.iter().enumerate()
        {
            for (h, w) in [(11, 14), (6, 5)] {
                let seed = i as u64 * 10 + h as u64;
                let x = uniform(&[2, c_in, h, w], seed, -1.0, 1.0);
                let per_group = if depthwise { 1 } else { c_in };
                let weight = uniform(&[c_out, per_group, k, k], seed + 1, -0.5, 0.5);
                let bias = uniform(&[c_out], seed + 2, -0.5, 0.5);
                let reference = Conv::Candle {
                    weight: weight.clone(),
                    bias: Some(bias.clone()),
                    stride,
                    pad,
                    depthwise,
                };
                let engine =
                    Conv::new(weight, Some(bias), stride, pad, depthwise, &Device::Cpu).unwrap();
                let Conv::Cpu(cpu) = &engine else {
                    panic!("a CPU convolution kept as candle tensors")
                };
                let path = if depthwise {
                    "depthwise"
                } else if (k, stride, c_in >= 16) == (3, 1, true) {
                    "winograd"
                } else {
                    "unfolded"
                };
                assert_eq!(cpu.path(), path, "case {i}");
                let want = reference
                    .forward(&Maps::Tensor(x.clone()), Activation::Identity, None)
                    .unwrap()
                    .into_tensor()
                    .unwrap();
                let res = residual.then(|| uniform(want.dims(), seed + 3, -1.0, 1.0));
                let want = reference
                    .forward(
                        &Maps::Tensor(x.clone()),
                        act,
                        res.clone().map(Maps::Tensor).as_ref(),
                    )
                    .unwrap()
                    .into_tensor()
                    .unwrap();
                let input = Maps::cpu(&x, None).unwrap();
                let res = res.map(|r| Maps::cpu(&r, None).unwrap());
                let got = engine.forward(&input, act, res.as_ref()).unwrap();
                assert!(matches!(got, Maps::Nhwc(_)));
                let d = max_diff(&got.into_tensor().unwrap(), &want);
                assert!(d < 1e-5, "case {i} at {h}×{w}: max difference {d}");
            }
        }
    }

    #[test]
    fn cpu_max_pool_matches_candle() {
        // Non-negative maps, as after a ReLU, where zero padding and −∞ padding agree.
        let x = uniform(&[2, 5, 13, 10], 7, 0.0, 1.0);
        for (k, s, p) in [(2, 2, 0), (3, 2, 1)] {
            let want = Maps::Tensor(x.clone()).max_pool(k, s, p).unwrap();
            let got = Maps::cpu(&x, None).unwrap().max_pool(k, s, p).unwrap();
            let d = max_diff(&got.into_tensor().unwrap(), &want.into_tensor().unwrap());
            assert_eq!(d, 0.0, "{k}×{k}/{s} pad {p}");
        }
    }

    #[test]
    fn cpu_engine_refuses_maps_smaller_than_the_kernel() {
        let x = Maps::cpu(&uniform(&[1, 3, 2, 9], 1, 0.0, 1.0), None).unwrap();
        let conv = Conv::new(
            uniform(&[4, 3, 7, 7], 2, -1.0, 1.0),
            None,
            1,
            Pad::Zero(2),
            false,
            &Device::Cpu,
        )
        .unwrap();
        assert!(conv.forward(&x, Activation::Relu, None).is_err());
        let reflect = Conv::new(
            uniform(&[4, 3, 3, 3], 2, -1.0, 1.0),
            None,
            1,
            Pad::Reflect(2),
            false,
            &Device::Cpu,
        )
        .unwrap();
        let err = reflect.forward(&x, Activation::Relu, None).unwrap_err();
        assert!(err.to_string().contains("reflection padding"), "{err}");
    }

    #[test]
    fn cpu_engine_results_do_not_depend_on_the_thread_count() {
        let x = Maps::cpu(&uniform(&[1, 64, 40, 50], 3, 0.0, 1.0), None).unwrap();
        let conv = Conv::new(
            uniform(&[96, 64, 3, 3], 4, -0.1, 0.1),
            Some(uniform(&[96], 5, -0.1, 0.1)),
            1,
            Pad::Zero(1),
            false,
            &Device::Cpu,
        )
        .unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let y = pool.install(|| conv.forward(&x, Activation::Relu, None).unwrap());
            let Maps::Nhwc(mut y) = y else {
                panic!("the CPU engine returned a tensor")
            };
            std::mem::take(&mut y.data)
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn pooled_buffers_never_leak_stale_values() {
        let pool = Arc::new(BufferPool::default());
        let conv = |c_in: usize, c_out: usize, k: usize, stride: usize, seed: u64| {
            Conv::new(
                uniform(&[c_out, c_in, k, k], seed, -0.3, 0.3),
                Some(uniform(&[c_out], seed + 1, -0.3, 0.3)),
                stride,
                Pad::Zero(k / 2),
                false,
                &Device::Cpu,
            )
            .unwrap()
        };
        let (a, b) = (conv(4, 32, 3, 1, 10), conv(32, 20, 3, 2, 20));
        let dw = Conv::new(
            uniform(&[20, 1, 3, 3], 40, -0.3, 0.3),
            Some(uniform(&[20], 41, -0.3, 0.3)),
            1,
            Pad::TfSame,
            true,
            &Device::Cpu,
        )
        .unwrap();
        let x = uniform(&[2, 4, 21, 17], 30, -1.0, 1.0);
        let alone = |pool: Option<Arc<BufferPool>>| {
            let y = a
                .forward(&Maps::cpu(&x, pool).unwrap(), Activation::Relu, None)
                .unwrap();
            let z = b.forward(&y, Activation::Identity, None).unwrap();
            let z = dw.forward(&z, Activation::Relu6, None).unwrap();
            let p = z.max_pool(2, 2, 0).unwrap();
            (z.into_tensor().unwrap(), p.into_tensor().unwrap())
        };
        let (want_z, want_p) = alone(None);
        // Large maps first, so that the pool holds buffers bigger than the later outputs.
        for _ in 0..3 {
            let (z, p) = alone(Some(pool.clone()));
            assert_eq!(max_diff(&z, &want_z), 0.0);
            assert_eq!(max_diff(&p, &want_p), 0.0);
        }
        assert!(!pool.is_empty(), "the maps gave their buffers back");
    }
}
