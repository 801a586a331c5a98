//! The CPU engine: feature maps kept channels-last (NHWC: one row of channels per cell, the
//! layout [`Activations`](super::Activations) use), so no layer transposes anything.
//!
//! - A convolution is a matrix product `cells × (kh·kw·C_in)` by `(kh·kw·C_in) × C_out`: the
//!   left side is unfolded (im2col) one block of output cells at a time into a buffer that stays
//!   in cache — a 1×1 convolution reads its input in place — and multiplied by the `gemm` crate
//!   (`linalg::blas`); bias (batch norm folded in), the residual and ReLU/ReLU6 are applied to
//!   the block while it is still in cache. Blocks run in parallel on the rayon pool, one
//!   single-threaded product each, in as many blocks as threads (or a multiple).
//! - Depthwise convolutions run directly, a SIMD vector of channels at a time with every tap
//!   accumulated in registers; max pooling likewise.
//! - Padding — zeros, mirrored borders or TensorFlow "SAME" — is resolved while unfolding, so
//!   no padded copy of a map is made.
//!
//! - The maps' buffers come from a [`BufferPool`] that the backbone owns: a finished map gives
//!   its buffer back when dropped, so a forward pass reuses a few buffers instead of asking the
//!   system for fresh (page-faulting) memory at every layer.
//!
//! Every output element is reduced in an order that depends only on the shapes, never on the
//! number of threads.

use super::layers::{same_pad, Pad};
use crate::linalg::blas::{self, Operand};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;
use std::sync::{Arc, Mutex, PoisonError};

mod winograd;

/// Target bytes of one block's unfolded input plus its output: about a core's L2 cache.
const BLOCK_BYTES: usize = 1 << 20;
/// Fewest output cells in a block.
const MIN_BLOCK_ROWS: usize = 16;
/// Most buffers a pool keeps: a forward pass has at most this many maps alive at once.
const MAX_POOLED: usize = 6;

/// Buffers of dropped feature maps, handed out again for new ones (the smallest that fits).
/// Reused buffers keep stale values: every operation writes each element of its output.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<f32>>>,
}

impl BufferPool {
    /// A buffer of `len` values (stale or zero).
    fn take(&self, len: usize) -> Vec<f32> {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            best.map(|i| free.swap_remove(i))
        };
        let mut v = reused.unwrap_or_default();
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        v
    }

    /// Whether no buffer is kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Keeps `v` for reuse (dropping the smallest buffer when the pool is full).
    fn give(&self, v: Vec<f32>) {
        if v.capacity() == 0 {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        free.push(v);
        if free.len() > MAX_POOLED {
            if let Some(i) = free
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
            {
                free.swap_remove(i);
            }
        }
    }
}

/// A batch of feature maps, channels last: value `(i, y, x, ch)` at
/// `data[((i·h + y)·w + x)·c + ch]`. Its buffer goes back to its pool when it is dropped.
#[derive(Debug)]
pub(crate) struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
    pool: Option<Arc<BufferPool>>,
}

impl Drop for Nhwc {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.data));
        }
    }
}

impl Clone for Nhwc {
    fn clone(&self) -> Self {
        let mut data = self.buffer(self.data.len());
        data.copy_from_slice(&self.data);
        Nhwc {
            data,
            pool: self.pool.clone(),
            ..*self
        }
    }
}

impl Nhwc {
    /// From an `N × C × H × W` tensor (any device, any float type); the maps computed from it
    /// take their buffers from `pool`.
    pub fn from_nchw(t: &Tensor, pool: Option<Arc<BufferPool>>) -> Result<Self> {
        let (n, c, h, w) = t.dims4()?;
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .permute((0, 2, 3, 1))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Nhwc {
            n,
            h,
            w,
            c,
            data,
            pool,
        })
    }

    /// A buffer of `len` values for a map computed from this one.
    fn buffer(&self, len: usize) -> Vec<f32> {
        match &self.pool {
            Some(p) => p.take(len),
            None => vec![0.0; len],
        }
    }

    /// A map computed from this one, in the same pool.
    fn derived(&self, h: usize, w: usize, c: usize, data: Vec<f32>) -> Nhwc {
        Nhwc {
            n: self.n,
            h,
            w,
            c,
            data,
            pool: self.pool.clone(),
        }
    }

    /// As an `N × C × H × W` tensor on the CPU.
    pub fn to_nchw(&self) -> Result<Tensor> {
        let t = Tensor::from_slice(&self.data, (self.n, self.h, self.w, self.c), &Device::Cpu)?;
        Ok(t.permute((0, 3, 1, 2))?.contiguous()?)
    }

    /// Image `i`'s values: `(h·w) × c`, row-major over cells.
    pub fn image(&self, i: usize) -> &[f32] {
        let len = self.h * self.w * self.c;
        &self.data[i * len..(i + 1) * len]
    }

    /// Max pooling over `k × k` windows with stride `s` and `p` cells of padding that never win
    /// (PyTorch's `max_pool2d`).
    pub fn max_pool(&self, k: usize, s: usize, p: usize) -> Result<Nhwc> {
        let (ho, wo) = match (pooled(self.h, k, s, p), pooled(self.w, k, s, p)) {
            (Some(ho), Some(wo)) => (ho, wo),
            _ => return Err(too_small(self, k)),
        };
        let c = self.c;
        let mut out = self.buffer(self.n * ho * wo * c);
        out.par_chunks_mut(wo * c)
            .enumerate()
            .for_each(|(r, orow)| {
                let (img, oy) = (r / ho, r % ho);
                let rows: Vec<&[f32]> = (0..k)
                    .filter_map(|ky| inside((oy * s + ky) as isize - p as isize, self.h))
                    .map(|iy| self.row(img, iy))
                    .collect();
                Arch::new().dispatch(PoolRow {
                    rows: &rows,
                    k,
                    stride: s,
                    left: p,
                    width: self.w,
                    channels: c,
                    out: orow,
                });
            });
        Ok(self.derived(ho, wo, c, out))
    }

    /// Row `y` of image `img`: `w × c` values.
    fn row(&self, img: usize, y: usize) -> &[f32] {
        let len = self.w * self.c;
        let start = (img * self.h + y) * len;
        &self.data[start..start + len]
    }
}

fn pooled(size: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    (size + 2 * p).checked_sub(k).map(|d| d / s + 1)
}

fn too_small(x: &Nhwc, k: usize) -> Error {
    Error::invalid(format!(
        "a {k}×{k} window does not fit a {}×{} feature map; the image is too small for this network",
        x.h, x.w
    ))
}

/// `i` when it is a valid index below `n`.
#[inline(always)]
fn inside(i: isize, n: usize) -> Option<usize> {
    (i >= 0 && (i as usize) < n).then_some(i as usize)
}

/// The non-linearity applied after a convolution (and its residual).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// None (a linear projection).
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    #[inline(always)]
    fn apply_simd<S: Simd>(self, simd: S, v: S::f32s) -> S::f32s {
        match self {
            Activation::Identity => v,
            Activation::Relu => simd.max_f32s(v, simd.splat_f32s(0.0)),
            Activation::Relu6 => {
                simd.min_f32s(simd.max_f32s(v, simd.splat_f32s(0.0)), simd.splat_f32s(6.0))
            }
        }
    }
}

/// Input channels from which a 3×3 stride-1 convolution goes through Winograd's transforms
/// (below, the unfolded product is as fast: the transforms' cost is per input channel).
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// A convolution's parameters in the engine's layouts.
#[derive(Debug, Clone)]
pub(crate) struct CpuConv {
    kh: usize,
    kw: usize,
    c_in: usize,
    c_out: usize,
    stride: usize,
    pad: Pad,
    bias: Vec<f32>,
    kernel: Kernel,
}

/// How a convolution runs, with its weights in that path's layout.
#[derive(Debug, Clone)]
enum Kernel {
    /// im2col + product: the `(kh·kw·C_in) × C_out` matrix, rows ordered by tap, then input
    /// channel, as the unfolded input.
    Unfolded(Vec<f32>),
    /// Direct depthwise: `(kh·kw) × C`.
    Depthwise(Vec<f32>),
    /// Winograd F(2×2, 3×3), for 3×3 stride-1 convolutions with zero or mirrored padding.
    Winograd(winograd::Weights),
}

/// Output size and the padding before the first cell, along one axis.
struct Axis {
    out: usize,
    before: usize,
}

impl CpuConv {
    /// From PyTorch's weight layout `(C_out, C_in/groups, kh, kw)` and an optional bias.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        pad: Pad,
        depthwise: bool,
    ) -> Result<Self> {
        Self::with_paths(weight, bias, stride, pad, depthwise, true)
    }

    /// [`CpuConv::new`], with Winograd's path allowed or not (the unfolded product is the
    /// direct reference the Winograd path is tested against).
    fn with_paths(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        pad: Pad,
        depthwise: bool,
        allow_winograd: bool,
    ) -> Result<Self> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        let w = weight
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?;
        let winograd = allow_winograd
            && !depthwise
            && (kh, kw, stride) == (3, 3, 1)
            && matches!(pad, Pad::Zero(_) | Pad::Reflect(_))
            && c_in >= WINOGRAD_MIN_CHANNELS;
        let kernel = if depthwise {
            Kernel::Depthwise(w.reshape((c_out, kh * kw))?.t()?.flatten_all()?.to_vec1()?)
        } else if winograd {
            Kernel::Winograd(winograd::Weights::new(
                &w.flatten_all()?.to_vec1()?,
                c_out,
                c_in,
            ))
        } else {
            // (kh, kw, C_in, C_out): rows of the unfolded input times columns of outputs.
            Kernel::Unfolded(w.permute((2, 3, 1, 0))?.flatten_all()?.to_vec1()?)
        };
        let bias = match bias {
            Some(b) => b
                .to_device(&Device::Cpu)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?,
            None => vec![0.0; c_out],
        };
        if bias.len() != c_out || stride == 0 {
            return Err(Error::invalid(format!(
                "convolution with {c_out} outputs got {} biases and stride {stride}",
                bias.len()
            )));
        }
        Ok(CpuConv {
            kh,
            kw,
            c_in: if depthwise { c_out } else { c_in },
            c_out,
            stride,
            pad,
            bias,
            kernel,
        })
    }

    /// Which path runs it: `"unfolded"`, `"depthwise"` or `"winograd"`.
    #[cfg(test)]
    pub fn path(&self) -> &'static str {
        match self.kernel {
            Kernel::Unfolded(_) => "unfolded",
            Kernel::Depthwise(_) => "depthwise",
            Kernel::Winograd(_) => "winograd",
        }
    }

    fn axis(&self, size: usize, k: usize, x: &Nhwc) -> Result<Axis> {
        let s = self.stride;
        match self.pad {
            Pad::Zero(p) | Pad::Reflect(p) => {
                if matches!(self.pad, Pad::Reflect(_)) && size <= p {
                    return Err(Error::invalid(format!(
                        "reflection padding of {p} needs more than {p} pixels, the map has {size}"
                    )));
                }
                let out = pooled(size, k, s, p).ok_or_else(|| too_small(x, k))?;
                Ok(Axis { out, before: p })
            }
            Pad::TfSame => Ok(Axis {
                out: size.div_ceil(s),
                before: same_pad(size, k, s).0,
            }),
        }
    }

    /// Where tap `i` (a padded coordinate relative to the map) reads: the cell, a mirrored
    /// one, or nothing (a zero).
    #[inline(always)]
    fn source(&self, i: isize, n: usize) -> Option<usize> {
        match self.pad {
            Pad::Reflect(_) if i < 0 => Some((-i) as usize),
            Pad::Reflect(_) if i >= n as isize => Some((2 * (n as isize - 1) - i) as usize),
            _ => inside(i, n),
        }
    }

    /// Applies the convolution, adds `residual` (same shape as the output) when given, then
    /// `act`.
    pub fn forward(&self, x: &Nhwc, act: Activation, residual: Option<&Nhwc>) -> Result<Nhwc> {
        if x.c != self.c_in {
            return Err(Error::invalid(format!(
                "a convolution over {} channels got a map of {}",
                self.c_in, x.c
            )));
        }
        let ya = self.axis(x.h, self.kh, x)?;
        let xa = self.axis(x.w, self.kw, x)?;
        if let Some(r) = residual {
            if (r.n, r.h, r.w, r.c) != (x.n, ya.out, xa.out, self.c_out) {
                return Err(Error::invalid(format!(
                    "a residual of {}×{}×{}×{} cannot be added to a {}×{}×{}×{} output",
                    r.n, r.h, r.w, r.c, x.n, ya.out, xa.out, self.c_out
                )));
            }
        }
        let data = match &self.kernel {
            Kernel::Depthwise(w) => self.depthwise(w, x, &ya, &xa, act, residual),
            Kernel::Unfolded(w) => self.unfolded(w, x, &ya, &xa, act, residual),
            Kernel::Winograd(w) => {
                let mut out = x.buffer(x.n * ya.out * xa.out * self.c_out);
                w.forward(
                    x, self.pad, ya.out, xa.out, &self.bias, act, residual, &mut out,
                );
                out
            }
        };
        Ok(x.derived(ya.out, xa.out, self.c_out, data))
    }

    /// The im2col + matrix-product path.
    fn unfolded(
        &self,
        weight: &[f32],
        x: &Nhwc,
        ya: &Axis,
        xa: &Axis,
        act: Activation,
        residual: Option<&Nhwc>,
    ) -> Vec<f32> {
        let (ho, wo, cout) = (ya.out, xa.out, self.c_out);
        let rows = x.n * ho * wo;
        let k = self.kh * self.kw * self.c_in;
        let mut out = x.buffer(rows * cout);
        if rows == 0 {
            return out;
        }
        let in_place = self.kh == 1
            && self.kw == 1
            && self.stride == 1
            && ya.before == 0
            && xa.before == 0
            && (ho, wo) == (x.h, x.w);
        let per_row = 4 * (cout + if in_place { 0 } else { k });
        let block = block_rows(rows, per_row);
        let rhs = Operand::dense(weight, k, cout);
        out.par_chunks_mut(block * cout).enumerate().for_each_init(
            Vec::new,
            |buf: &mut Vec<f32>, (b, oblk)| {
                let r0 = b * block;
                let nr = oblk.len() / cout;
                let lhs = if in_place {
                    &x.data[r0 * k..(r0 + nr) * k]
                } else {
                    buf.resize(nr * k, 0.0);
                    for (r, row) in buf.chunks_exact_mut(k).enumerate() {
                        let p = r0 + r;
                        let (img, rem) = (p / (ho * wo), p % (ho * wo));
                        self.unfold(x, img, rem / wo, rem % wo, ya.before, xa.before, row);
                    }
                    &buf[..]
                };
                blas::gemm(oblk, cout, Operand::dense(lhs, nr, k), rhs, false);
                let res = residual.map(|r| &r.data[r0 * cout..(r0 + nr) * cout]);
                epilogue(oblk, &self.bias, res, act);
            },
        );
        out
    }

    /// The unfolded input row of output cell `(oy, ox)` of image `img`: for each tap `(ky, kx)`
    /// the `C_in` values it reads (zeros outside the map under zero padding).
    #[allow(clippy::too_many_arguments)]
    fn unfold(
        &self,
        x: &Nhwc,
        img: usize,
        oy: usize,
        ox: usize,
        top: usize,
        left: usize,
        row: &mut [f32],
    ) {
        let (c, kw, s) = (x.c, self.kw, self.stride);
        let ix0 = (ox * s) as isize - left as isize;
        let whole_row = ix0 >= 0 && ix0 as usize + kw <= x.w;
        for (ky, dst) in row.chunks_exact_mut(kw * c).enumerate() {
            let Some(iy) = self.source((oy * s + ky) as isize - top as isize, x.h) else {
                dst.fill(0.0);
                continue;
            };
            let src = x.row(img, iy);
            if whole_row {
                // The taps of one kernel row read consecutive cells: one copy.
                let ix0 = ix0 as usize;
                dst.copy_from_slice(&src[ix0 * c..(ix0 + kw) * c]);
            } else {
                for (kx, d) in dst.chunks_exact_mut(c).enumerate() {
                    match self.source(ix0 + kx as isize, x.w) {
                        Some(ix) => d.copy_from_slice(&src[ix * c..(ix + 1) * c]),
                        None => d.fill(0.0),
                    }
                }
            }
        }
    }

    /// The direct depthwise path: each output row in parallel.
    fn depthwise(
        &self,
        weight: &[f32],
        x: &Nhwc,
        ya: &Axis,
        xa: &Axis,
        act: Activation,
        residual: Option<&Nhwc>,
    ) -> Vec<f32> {
        let (ho, wo, c) = (ya.out, xa.out, self.c_out);
        let mut out = x.buffer(x.n * ho * wo * c);
        out.par_chunks_mut(wo * c)
            .enumerate()
            .for_each(|(r, orow)| {
                let (img, oy) = (r / ho, r % ho);
                // The input rows of each kernel row (None: a padding row, all zeros).
                let rows: Vec<(usize, &[f32])> = (0..self.kh)
                    .filter_map(|ky| {
                        let iy = self
                            .source((oy * self.stride + ky) as isize - ya.before as isize, x.h)?;
                        Some((ky, x.row(img, iy)))
                    })
                    .collect();
                let res = residual.map(|m| &m.data[r * wo * c..(r + 1) * wo * c]);
                Arch::new().dispatch(DepthwiseRow {
                    conv: self,
                    weight,
                    rows: &rows,
                    left: xa.before,
                    width: x.w,
                    out: orow,
                    residual: res,
                    act,
                });
            });
        out
    }
}

/// Cells per block: blocks of about [`BLOCK_BYTES`], as many as a multiple of the threads.
fn block_rows(rows: usize, bytes_per_row: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let target = (BLOCK_BYTES / bytes_per_row.max(1)).max(MIN_BLOCK_ROWS);
    let blocks = rows.div_ceil(target).div_ceil(threads) * threads;
    rows.div_ceil(blocks).max(1)
}

/// `out ← act(out + bias (+ residual))`, row by row.
fn epilogue(out: &mut [f32], bias: &[f32], residual: Option<&[f32]>, act: Activation) {
    Arch::new().dispatch(Epilogue {
        out,
        bias,
        residual,
        act,
    })
}

struct Epilogue<'a> {
    out: &'a mut [f32],
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
    act: Activation,
}

impl WithSimd for Epilogue<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Epilogue {
            out,
            bias,
            residual,
            act,
        } = self;
        let c = bias.len();
        let (bh, bt) = S::as_simd_f32s(bias);
        for (r, row) in out.chunks_exact_mut(c).enumerate() {
            let res = residual.map(|x| &x[r * c..(r + 1) * c]);
            let (oh, ot) = S::as_mut_simd_f32s(row);
            match res {
                None => {
                    for (o, b) in oh.iter_mut().zip(bh) {
                        *o = act.apply_simd(simd, simd.add_f32s(*o, *b));
                    }
                    for (o, b) in ot.iter_mut().zip(bt) {
                        *o = act.apply(*o + b);
                    }
                }
                Some(res) => {
                    let (rh, rt) = S::as_simd_f32s(res);
                    for ((o, b), x) in oh.iter_mut().zip(bh).zip(rh) {
                        *o = act.apply_simd(simd, simd.add_f32s(simd.add_f32s(*o, *b), *x));
                    }
                    for ((o, b), x) in ot.iter_mut().zip(bt).zip(rt) {
                        *o = act.apply(*o + b + x);
                    }
                }
            }
        }
    }
}

/// One output row of a max pooling.
struct PoolRow<'a> {
    /// The input rows inside the map.
    rows: &'a [&'a [f32]],
    k: usize,
    stride: usize,
    left: usize,
    width: usize,
    channels: usize,
    out: &'a mut [f32],
}

impl WithSimd for PoolRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let c = self.channels;
        for (ox, px) in self.out.chunks_exact_mut(c).enumerate() {
            px.fill(f32::NEG_INFINITY);
            for kx in 0..self.k {
                let Some(ix) = inside(
                    (ox * self.stride + kx) as isize - self.left as isize,
                    self.width,
                ) else {
                    continue;
                };
                for row in self.rows {
                    let src = &row[ix * c..(ix + 1) * c];
                    let (oh, ot) = S::as_mut_simd_f32s(px);
                    let (sh, st) = S::as_simd_f32s(src);
                    for (o, v) in oh.iter_mut().zip(sh) {
                        *o = simd.max_f32s(*o, *v);
                    }
                    for (o, v) in ot.iter_mut().zip(st) {
                        *o = o.max(*v);
                    }
                }
            }
        }
    }
}

/// One output row of a depthwise convolution.
struct DepthwiseRow<'a> {
    conv: &'a CpuConv,
    /// `(kh·kw) × C`.
    weight: &'a [f32],
    /// `(ky, input row)` for the kernel rows inside the map.
    rows: &'a [(usize, &'a [f32])],
    left: usize,
    width: usize,
    out: &'a mut [f32],
    residual: Option<&'a [f32]>,
    act: Activation,
}

impl WithSimd for DepthwiseRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let DepthwiseRow {
            conv,
            weight,
            rows,
            left,
            width,
            out,
            residual,
            act,
        } = self;
        let (c, kw, s) = (conv.c_out, conv.kw, conv.stride);
        let lanes = S::F32_LANES;
        if c % lanes == 0 {
            // Whole vectors only: index the rows, weights and output in vectors.
            let cv = c / lanes;
            let rows: Vec<(usize, &[S::f32s])> = rows
                .iter()
                .map(|&(ky, r)| (ky, S::as_simd_f32s(r).0))
                .collect();
            let weight = S::as_simd_f32s(weight).0;
            let bias = S::as_simd_f32s(&conv.bias).0;
            let residual = residual.map(|r| S::as_simd_f32s(r).0);
            let out = S::as_mut_simd_f32s(out).0;
            // (input row, offset of the cell, offset of the tap's weights), in vectors.
            let mut taps: Vec<(&[S::f32s], usize, usize)> = Vec::with_capacity(conv.kh * kw);
            for (ox, px) in out.chunks_exact_mut(cv).enumerate() {
                taps.clear();
                let x0 = (ox * s) as isize - left as isize;
                for &(ky, row) in &rows {
                    for kx in 0..kw {
                        if let Some(ix) = inside(x0 + kx as isize, width) {
                            taps.push((row, ix * cv, (ky * kw + kx) * cv));
                        }
                    }
                }
                let res = residual.map(|r| &r[ox * cv..(ox + 1) * cv]);
                // Blocks of BLOCK vectors accumulated in registers over every tap.
                const BLOCK: usize = 4;
                let mut v = 0;
                while v < cv {
                    let nb = BLOCK.min(cv - v);
                    let mut acc = [bias[v]; BLOCK];
                    acc[..nb].copy_from_slice(&bias[v..v + nb]);
                    if nb == BLOCK {
                        for &(row, xo, wo) in &taps {
                            let xs = &row[xo + v..xo + v + BLOCK];
                            let ws = &weight[wo + v..wo + v + BLOCK];
                            for j in 0..BLOCK {
                                acc[j] = simd.mul_add_f32s(xs[j], ws[j], acc[j]);
                            }
                        }
                    } else {
                        for &(row, xo, wo) in &taps {
                            for j in 0..nb {
                                acc[j] =
                                    simd.mul_add_f32s(row[xo + v + j], weight[wo + v + j], acc[j]);
                            }
                        }
                    }
                    for j in 0..nb {
                        let a = match res {
                            Some(r) => simd.add_f32s(acc[j], r[v + j]),
                            None => acc[j],
                        };
                        px[v + j] = act.apply_simd(simd, a);
                    }
                    v += nb;
                }
            }
            return;
        }
        let whole = c / lanes * lanes;
        // (the input cell's channels, the tap's weights) of each tap inside the map.
        let mut taps: Vec<(&[f32], &[f32])> = Vec::with_capacity(conv.kh * kw);
        for (ox, px) in out.chunks_exact_mut(c).enumerate() {
            taps.clear();
            for &(ky, row) in rows {
                for kx in 0..kw {
                    if let Some(ix) = inside((ox * s + kx) as isize - left as isize, width) {
                        let t = ky * kw + kx;
                        taps.push((&row[ix * c..(ix + 1) * c], &weight[t * c..(t + 1) * c]));
                    }
                }
            }
            let res = residual.map(|r| &r[ox * c..(ox + 1) * c]);
            // Whole vectors, every tap accumulated in a register.
            for ch in (0..whole).step_by(lanes) {
                let mut acc = load::<S>(&conv.bias[ch..]);
                for (xv, wv) in &taps {
                    acc = simd.mul_add_f32s(load::<S>(&xv[ch..]), load::<S>(&wv[ch..]), acc);
                }
                if let Some(r) = res {
                    acc = simd.add_f32s(acc, load::<S>(&r[ch..]));
                }
                acc = act.apply_simd(simd, acc);
                let (head, _) = S::as_mut_simd_f32s(&mut px[ch..ch + lanes]);
                head[0] = acc;
            }
            // The remaining channels one at a time.
            for ch in whole..c {
                let mut acc = conv.bias[ch];
                for (xv, wv) in &taps {
                    acc = xv[ch].mul_add(wv[ch], acc);
                }
                px[ch] = act.apply(acc + res.map_or(0.0, |r| r[ch]));
            }
        }
    }
}

/// One SIMD vector from the start of `s` (which holds at least that many values).
#[inline(always)]
fn load<S: Simd>(s: &[f32]) -> S::f32s {
    let (head, _) = S::as_simd_f32s(&s[..S::F32_LANES]);
    head[0]
}
