//! The two networks of the probes (thesis Table 3.1), written for candle with a hook after
//! every hidden ReLU so that a probe can replace a layer's activations mid-forward.

use super::labels::{rng, stream};
use crate::{Error, Matrix, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Side of the (square, single-channel) input images.
pub const INPUT_SIDE: usize = 28;
/// Number of input pixels.
pub const INPUT_DIM: usize = INPUT_SIDE * INPUT_SIDE;
/// Widths of the fully connected net's hidden layers (thesis Table 3.1).
pub const FC_WIDTHS: [usize; 4] = [128, 512, 2048, 2048];
/// The convolutional net's layers: (output channels, stride), all 3×3 with padding 1.
pub const CNN_CONVS: [(usize, usize); 5] = [(32, 1), (64, 2), (128, 2), (512, 2), (512, 1)];

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Fully connected: 784 → 128 → 512 → 2048 → 2048 → 10, ReLU after every layer but the
    /// last.
    Fc,
    /// Convolutional, in the style of the thesis' CIFAR-10/SVHN nets adapted to 28×28 inputs:
    /// 3×3 convolutions with ReLU (32; 64, 128 with stride 2 instead of pooling), a final
    /// block of two 512-channel convolutions (the first with stride 2, 4×4 maps), then one
    /// linear layer on the flattened 4×4×512 map.
    Cnn,
}

impl Arch {
    /// `"fc"` or `"cnn"`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Fc => "fc",
            Arch::Cnn => "cnn",
        }
    }

    /// The hidden layers a probe can compress, in forward order.
    pub fn layers(self) -> Vec<LayerInfo> {
        match self {
            Arch::Fc => FC_WIDTHS
                .iter()
                .enumerate()
                .map(|(i, &w)| LayerInfo {
                    name: format!("fc{}", i + 1),
                    width: w,
                    spatial: 1,
                })
                .collect(),
            Arch::Cnn => {
                let mut side = INPUT_SIDE;
                CNN_CONVS
                    .iter()
                    .enumerate()
                    .map(|(i, &(c, s))| {
                        side = (side + 2 - 3) / s + 1;
                        LayerInfo {
                            name: format!("conv{}", i + 1),
                            width: c,
                            spatial: side * side,
                        }
                    })
                    .collect()
            }
        }
    }

    /// The layers the thesis compresses together: every layer of the FC net, the final
    /// 512-channel block of the CNN.
    pub fn default_layer_set(self) -> Vec<String> {
        match self {
            Arch::Fc => self.layers().into_iter().map(|l| l.name).collect(),
            Arch::Cnn => vec!["conv4".into(), "conv5".into()],
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fc" => Ok(Arch::Fc),
            "cnn" => Ok(Arch::Cnn),
            other => Err(Error::invalid(format!(
                "unknown architecture {other:?}: expected fc or cnn"
            ))),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A hidden layer a probe can compress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// `fc1`…`fc4` or `conv1`…`conv5`.
    pub name: String,
    /// Units (FC) or channels (conv): the columns of its activation matrix.
    pub width: usize,
    /// Cells per sample (1 for FC, `H·W` for conv): a batch of `n` samples gives an
    /// activation matrix of `n·spatial` rows.
    pub spatial: usize,
}

/// A fully connected layer with its weight stored as `in × out`, so that neither the forward
/// product nor the gradient goes through a transposed view (candle's `Linear` keeps PyTorch's
/// `out × in` and transposes on every pass, which made the backward pass a third slower).
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w)?.broadcast_add(&self.b)?)
    }
}

enum Layer {
    Dense(Dense),
    Conv(Conv2d),
}

/// A named parameter; `transposed` when it is kept as the transpose of its file layout.
struct Param {
    name: String,
    var: Var,
    transposed: bool,
}

/// A network with named parameters. Build a fresh one with [`Net::init`] or read a
/// checkpoint with [`Net::load`].
pub struct Net {
    arch: Arch,
    hidden: Vec<Layer>,
    head: Dense,
    params: Vec<Param>,
    device: Device,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("arch", &self.arch)
            .field("parameters", &self.parameter_count())
            .field("device", &self.device)
            .finish()
    }
}

/// What a forward hook returns: keep the activation, or replace it.
pub type HookResult = Result<Option<Tensor>>;

impl Net {
    /// A freshly initialised network: He-uniform weights (bound `√(6/fan_in)`) and zero
    /// biases, drawn from a ChaCha8 stream of `seed` (so the same seed gives the same weights
    /// on every machine and device).
    pub fn init(arch: Arch, seed: u64, device: &Device) -> Result<Self> {
        let mut tensors = Vec::new();
        let mut add = |name: &str, shape: &[usize], fan_in: usize, idx: u64| -> Result<()> {
            let mut r = rng(seed, stream::INIT, idx);
            let bound = (6.0 / fan_in as f64).sqrt() as f32;
            let n: usize = shape.iter().product();
            let w: Vec<f32> = (0..n).map(|_| r.random_range(-bound..bound)).collect();
            tensors.push((
                format!("{name}.weight"),
                Tensor::from_vec(w, shape, device)?,
            ));
            tensors.push((
                format!("{name}.bias"),
                Tensor::zeros(shape[0], DType::F32, device)?,
            ));
            Ok(())
        };
        match arch {
            Arch::Fc => {
                let mut fan_in = INPUT_DIM;
                for (i, &w) in FC_WIDTHS.iter().enumerate() {
                    add(&format!("fc{}", i + 1), &[w, fan_in], fan_in, i as u64)?;
                    fan_in = w;
                }
                add("out", &[10, fan_in], fan_in, 100)?;
            }
            Arch::Cnn => {
                let mut cin = 1;
                for (i, &(c, _)) in CNN_CONVS.iter().enumerate() {
                    add(
                        &format!("conv{}", i + 1),
                        &[c, cin, 3, 3],
                        cin * 9,
                        i as u64,
                    )?;
                    cin = c;
                }
                let last = arch.layers().last().map_or(1, |l| l.spatial);
                add("out", &[10, cin * last], cin * last, 100)?;
            }
        }
        Self::from_tensors(arch, tensors.into_iter().collect(), device)
    }

    /// Builds the network from named tensors (`fc1.weight`, `fc1.bias`, …, `out.weight`,
    /// `out.bias`), checking every name and shape.
    pub fn from_tensors(
        arch: Arch,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let mut params = Vec::new();
        // Weights of dense layers (rank 2) are kept transposed (`in × out`).
        let mut take = |name: String, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.remove(&name).ok_or_else(|| {
                Error::invalid(format!("{arch} network: parameter {name} is missing"))
            })?;
            if t.dims() != shape {
                return Err(Error::invalid(format!(
                    "{arch} network: parameter {name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            let transposed = shape.len() == 2;
            let mut t = t.to_dtype(DType::F32)?.to_device(device)?;
            if transposed {
                t = t.t()?.contiguous()?;
            }
            let var = Var::from_tensor(&t)?;
            let t = var.as_tensor().clone();
            params.push(Param {
                name,
                var,
                transposed,
            });
            Ok(t)
        };
        let mut hidden = Vec::new();
        let head;
        match arch {
            Arch::Fc => {
                let mut fan_in = INPUT_DIM;
                for (i, &w) in FC_WIDTHS.iter().enumerate() {
                    let n = format!("fc{}", i + 1);
                    let weight = take(format!("{n}.weight"), &[w, fan_in])?;
                    let bias = take(format!("{n}.bias"), &[w])?;
                    hidden.push(Layer::Dense(Dense { w: weight, b: bias }));
                    fan_in = w;
                }
                head = Dense {
                    w: take("out.weight".into(), &[10, fan_in])?,
                    b: take("out.bias".into(), &[10])?,
                };
            }
            Arch::Cnn => {
                let mut cin = 1;
                for (i, &(c, s)) in CNN_CONVS.iter().enumerate() {
                    let n = format!("conv{}", i + 1);
                    let weight = take(format!("{n}.weight"), &[c, cin, 3, 3])?;
                    let bias = take(format!("{n}.bias"), &[c])?;
                    let cfg = Conv2dConfig {
                        padding: 1,
                        stride: s,
                        ..Default::default()
                    };
                    hidden.push(Layer::Conv(Conv2d::new(weight, Some(bias), cfg)));
                    cin = c;
                }
                let last = arch.layers().last().map_or(1, |l| l.spatial);
                head = Dense {
                    w: take("out.weight".into(), &[10, cin * last])?,
                    b: take("out.bias".into(), &[10])?,
                };
            }
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(Error::invalid(format!(
                "{arch} network: unexpected parameter {extra}"
            )));
        }
        Ok(Net {
            arch,
            hidden,
            head,
            params,
            device: device.clone(),
        })
    }

    /// Reads a safetensors checkpoint written by [`Net::save`].
    pub fn load(arch: Arch, path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::dataset(path, format!("not a readable safetensors file: {e}")))?;
        Self::from_tensors(arch, tensors, device)
            .map_err(|e| Error::dataset(path, format!("does not hold a {arch} network: {e}")))
    }

    /// Writes the parameters as safetensors, in PyTorch's layout (`fc1.weight` is
    /// `out × in`, convolution weights `out × in × 3 × 3`).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let map = self.tensors()?;
        candle_core::safetensors::save(&map, path)
            .map_err(|e| Error::dataset(path, format!("cannot write the checkpoint: {e}")))
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters by name, in PyTorch's layout (what [`Net::from_tensors`] takes).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.params
            .iter()
            .map(|p| {
                let t = p.var.as_tensor();
                let t = if p.transposed {
                    t.t()?.contiguous()?
                } else {
                    t.copy()?
                };
                Ok((p.name.clone(), t))
            })
            .collect()
    }

    /// The trainable parameters.
    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|p| p.var.clone()).collect()
    }

    /// Number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Logits (`B × 10`) of a batch `x` (`B × 784`, standardized pixels).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &mut |_, _| Ok(None))
    }

    /// Logits, calling `hook(i, a)` with the ReLU output `a` of hidden layer `i` (`B × width`
    /// for FC, `B × C × H × W` for conv); a returned tensor of the same shape replaces `a` for
    /// the rest of the forward pass.
    pub fn forward_with(
        &self,
        x: &Tensor,
        hook: &mut dyn FnMut(usize, &Tensor) -> HookResult,
    ) -> Result<Tensor> {
        let b = x.dim(0)?;
        let mut h = match self.arch {
            Arch::Fc => x.clone(),
            Arch::Cnn => x.reshape((b, 1, INPUT_SIDE, INPUT_SIDE))?,
        };
        for (i, layer) in self.hidden.iter().enumerate() {
            h = match layer {
                Layer::Dense(l) => l.forward(&h)?,
                Layer::Conv(c) => c.forward(&h)?,
            }
            .relu()?;
            if let Some(r) = hook(i, &h)? {
                if r.dims() != h.dims() {
                    return Err(Error::invalid(format!(
                        "a hook replaced layer {i}'s {:?} activations with {:?}",
                        h.dims(),
                        r.dims()
                    )));
                }
                h = r;
            }
        }
        if self.arch == Arch::Cnn {
            h = h.flatten_from(1)?;
        }
        self.head.forward(&h)
    }
}

/// A layer's activations as a rows × units tensor on their device: `B × W` for FC,
/// `(B·H·W) × C` for conv (rows sample-major, then row-major over the map).
pub fn activation_rows(a: &Tensor) -> Result<Tensor> {
    match a.rank() {
        2 => Ok(a.clone()),
        4 => {
            let (b, c, h, w) = a.dims4()?;
            Ok(a.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?)
        }
        r => Err(Error::invalid(format!(
            "activations of rank {r}: expected 2 (FC) or 4 (conv)"
        ))),
    }
}

/// The inverse of [`activation_rows`]: `rows` back in the shape of `like`.
pub fn rows_to_activation(rows: &Tensor, like: &Tensor) -> Result<Tensor> {
    match like.rank() {
        2 => Ok(rows.reshape(like.dims())?),
        4 => {
            let (b, c, h, w) = like.dims4()?;
            if rows.dims() != [b * h * w, c] {
                return Err(Error::invalid(format!(
                    "{:?} rows do not fit {:?} activations",
                    rows.dims(),
                    like.dims()
                )));
            }
            Ok(rows
                .reshape((b, h, w, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?)
        }
        r => Err(Error::invalid(format!(
            "activations of rank {r}: expected 2 (FC) or 4 (conv)"
        ))),
    }
}

/// A layer's activations as a matrix on the host ([`activation_rows`] copied to a
/// [`Matrix`]).
pub fn activation_matrix(a: &Tensor) -> Result<Matrix> {
    let rows = activation_rows(a)?;
    let (r, c) = rows.dims2()?;
    let data = rows
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Matrix::from_vec(r, c, data)
}

/// The inverse of [`activation_matrix`]: `m` back in the shape of `like`, on its device.
pub fn activation_tensor(m: &Matrix, like: &Tensor) -> Result<Tensor> {
    let rows = Tensor::from_vec(m.as_slice().to_vec(), m.shape(), like.device())?;
    rows_to_activation(&rows, like)
}
