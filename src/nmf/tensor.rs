//! The same algorithm with candle tensor operations, on any [`Device`] (CUDA with the `cuda`
//! feature): batched matrix products over a `B × P × C` tensor, NNDSVD from the batched
//! randomized SVD of `crate::linalg` (the products on the device, only `l × l` matrices on the
//! host), and the scikit-learn update, stopping rule and factor order per image.
//!
//! On [`Device::Cpu`] this path agrees with the slice engine to within `f32` rounding; it is
//! not bit-reproducible across thread counts (candle's CPU matmul splits work by threads), so
//! the slice engine ([`Nmf::fit`]) stays the CPU default.

use super::{init, Init, Nmf, CHECK_EVERY};
use crate::linalg::{batch_svd, BatchOperand, Svd};
use crate::{Error, Matrix, Result};
use candle_core::{DType, Device, Tensor, D};

/// The result of [`Nmf::fit_tensor`]: factors on the input's device.
#[derive(Debug, Clone)]
pub struct TensorFactorization {
    /// `P × K` for a `P × C` input, `B × P × K` for a batch.
    pub u: Tensor,
    /// `K × C`, or `B × K × C`.
    pub v: Tensor,
    /// Iterations done, per image (one entry for a single matrix).
    pub iterations: Vec<usize>,
    /// `‖A − UV‖_F / ‖A‖_F` per image.
    pub rel_error: Vec<f64>,
}

impl Nmf {
    /// Factorizes a `P × C` tensor, or each image of a `B × P × C` batch independently, with
    /// tensor operations on the tensor's device (batched products; images of one size per
    /// batch — group images by size, since zero-padding would change NNDSVDa's mean fill).
    /// Each image stops on its own under the tolerance (its factors are frozen while the
    /// others go on). Values must be finite and non-negative; results follow the conventions
    /// of [`Nmf::fit`] (factor order, degenerate input).
    pub fn fit_tensor(&self, a: &Tensor) -> Result<TensorFactorization> {
        let (a, single) = as_batch(a, "NMF tensor input")?;
        let b = a.dim(0)?;
        let device = a.device().clone();
        let stats = item_stats(&a)?;
        let (a, exps) = rescale(&a, &stats)?;
        let norms_sq: Vec<f64> = item_norms_sq(&a)?;
        let (mut u, mut v) = self.initial_tensors(&a, &stats, &exps)?;
        let mut active: Vec<bool> = stats.iter().map(|s| s.max > 0.0).collect();
        let mut iterations = vec![0usize; b];
        let tol = self.tol();
        let mut initial = vec![0.0f64; b];
        let mut previous = vec![0.0f64; b];
        if tol > 0.0 {
            initial = residual_sq(&a, &u, &v)?.iter().map(|e| e.sqrt()).collect();
            previous.clone_from(&initial);
        }
        for it in 1..=self.max_iter() {
            if !active.iter().any(|x| *x) {
                break;
            }
            let mask = if active.iter().all(|x| *x) {
                None
            } else {
                Some(mask_tensor(&active, &device)?)
            };
            // U ← U ∘ (A Vᵀ) ⊘ (U V Vᵀ)
            let vt = v.transpose(1, 2)?;
            let num = a.matmul(&vt)?;
            let den = u.matmul(&v.matmul(&vt)?)?;
            let new_u = (&u * num)?.div(&guard(&den)?)?;
            u = select(&mask, &new_u, &u)?;
            // V ← V ∘ (Uᵀ A) ⊘ (Uᵀ U V)
            let ut = u.transpose(1, 2)?;
            let num = ut.matmul(&a)?;
            let utu = ut.matmul(&u)?;
            let den = utu.matmul(&v)?;
            let new_v = (&v * &num)?.div(&guard(&den)?)?;
            v = select(&mask, &new_v, &v)?;
            for (i, on) in active.iter().enumerate() {
                if *on {
                    iterations[i] = it;
                }
            }
            if tol > 0.0 && it.is_multiple_of(CHECK_EVERY) {
                let errs = cheap_error_sq(&num, &utu, &v, &norms_sq)?;
                let exact = if errs.iter().any(Option::is_none) {
                    Some(residual_sq(&a, &u, &v)?)
                } else {
                    None
                };
                for i in 0..b {
                    if !active[i] {
                        continue;
                    }
                    let e = match (errs[i], &exact) {
                        (Some(e), _) => e,
                        (None, Some(x)) => x[i],
                        (None, None) => 0.0,
                    }
                    .sqrt();
                    if initial[i] == 0.0 || (previous[i] - e) / initial[i] < tol {
                        active[i] = false;
                    } else {
                        previous[i] = e;
                    }
                }
            }
        }
        let res = residual_sq(&a, &u, &v)?;
        let rel_error = res
            .iter()
            .zip(&norms_sq)
            .map(|(r, n)| if *n == 0.0 { 0.0 } else { (r / n).sqrt() })
            .collect();
        let scale = pow2_tensor(&exps, 1, &device)?;
        u = u.broadcast_mul(&scale)?;
        v = v.broadcast_mul(&scale)?;
        let (u, v) = energy_order(&u, &v)?;
        let finite = u.abs()?.max_all()?.to_scalar::<f32>()?.is_finite()
            && v.abs()?.max_all()?.to_scalar::<f32>()?.is_finite();
        if !finite {
            return Err(Error::Numeric(
                "NMF produced non-finite factors (input magnitudes out of range)".into(),
            ));
        }
        Ok(TensorFactorization {
            u: if single { u.squeeze(0)? } else { u },
            v: if single { v.squeeze(0)? } else { v },
            iterations,
            rel_error,
        })
    }

    /// `U` for fixed concepts `v` with tensor operations (see [`Nmf::transform`]): `a` is
    /// `P × C` with `v` `K × C`, or `B × P × C` with `v` `K × C` (shared) or `B × K × C`.
    pub fn transform_tensor(&self, a: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (a, single) = as_batch(a, "NMF tensor input")?;
        let (b, p, c) = a.dims3()?;
        let v = v.to_dtype(DType::F32)?;
        let v = match v.rank() {
            2 => v
                .unsqueeze(0)?
                .broadcast_as((b, v.dim(0)?, v.dim(1)?))?
                .contiguous()?,
            3 => v,
            r => return Err(Error::invalid(format!("NMF transform: V of rank {r}"))),
        };
        let (bv, k, cv) = v.dims3()?;
        if bv != b || cv != c || k == 0 {
            return Err(Error::invalid(format!(
                "NMF transform: V of {:?} does not fit an input of {b}×{p}×{c}",
                v.dims()
            )));
        }
        let (vb, _) = as_batch(&v, "NMF fixed V")?;
        let stats = item_stats(&a)?;
        let vstats = item_stats(&vb)?;
        let (a, ea) = rescale(&a, &stats)?;
        let (v, ev) = rescale(&vb, &vstats)?;
        let device = a.device().clone();
        let starts: Vec<f32> = stats
            .iter()
            .zip(&ea)
            .map(|(s, e)| {
                let mean = s.sum * (-2.0 * *e as f64).exp2() / (p * c) as f64;
                (mean / k as f64).sqrt() as f32
            })
            .collect();
        let mut u = Tensor::from_vec(starts, (b, 1, 1), &device)?
            .broadcast_as((b, p, k))?
            .contiguous()?;
        let vt = v.transpose(1, 2)?;
        let num = a.matmul(&vt)?;
        let g = v.matmul(&vt)?;
        let tol = self.tol();
        let mut active: Vec<bool> = stats.iter().map(|s| s.max > 0.0).collect();
        let mut initial = vec![0.0f64; b];
        let mut previous = vec![0.0f64; b];
        if tol > 0.0 {
            initial = residual_sq(&a, &u, &v)?.iter().map(|e| e.sqrt()).collect();
            previous.clone_from(&initial);
        }
        for it in 1..=self.max_iter() {
            if !active.iter().any(|x| *x) {
                break;
            }
            let mask = if active.iter().all(|x| *x) {
                None
            } else {
                Some(mask_tensor(&active, &device)?)
            };
            let den = u.matmul(&g)?;
            let new_u = (&u * &num)?.div(&guard(&den)?)?;
            u = select(&mask, &new_u, &u)?;
            if tol > 0.0 && it.is_multiple_of(CHECK_EVERY) {
                let res = residual_sq(&a, &u, &v)?;
                for i in 0..b {
                    let e = res[i].sqrt();
                    if active[i] && (initial[i] == 0.0 || (previous[i] - e) / initial[i] < tol) {
                        active[i] = false;
                    } else {
                        previous[i] = e;
                    }
                }
            }
        }
        // Zero images get zero heatmaps.
        let nonzero: Vec<f32> = stats.iter().map(|s| (s.max > 0.0) as u8 as f32).collect();
        let keep = Tensor::from_vec(nonzero, (b, 1, 1), &device)?;
        let shift: Vec<i32> = ea.iter().zip(&ev).map(|(x, y)| 2 * (x - y)).collect();
        let u = u
            .broadcast_mul(&keep)?
            .broadcast_mul(&pow2_tensor(&shift, 1, &device)?)?;
        Ok(if single { u.squeeze(0)? } else { u })
    }

    /// NNDSVD(a) / random initial factors for every image, on the device.
    fn initial_tensors(
        &self,
        a: &Tensor,
        stats: &[ItemStats],
        exps: &[i32],
    ) -> Result<(Tensor, Tensor)> {
        let (_, p, c) = a.dims3()?;
        let k = self.k();
        let device = a.device();
        let means: Vec<f64> = stats
            .iter()
            .zip(exps)
            .map(|(s, e)| s.sum * (-2.0 * *e as f64).exp2() / (p * c) as f64)
            .collect();
        let pairs: Vec<(Matrix, Matrix)> = match self.init() {
            Init::Random { seed } => means
                .iter()
                .map(|m| init::random(p, c, k, *m, seed))
                .collect(),
            Init::Nndsvd | Init::Nndsvda => {
                let fill = self.init() == Init::Nndsvda;
                let svds: Vec<Svd> = batch_svd(&TensorOperand { a }, k)?;
                svds.iter()
                    .zip(&means)
                    .map(|(s, m)| init::from_svd(s, fill.then_some(*m)))
                    .collect()
            }
        };
        let us: Vec<&Matrix> = pairs.iter().map(|x| &x.0).collect();
        let vs: Vec<&Matrix> = pairs.iter().map(|x| &x.1).collect();
        Ok((upload(&us, device)?, upload(&vs, device)?))
    }
}

/// A batch of `B × P × C` matrices on a device, for the randomized SVD.
struct TensorOperand<'a> {
    a: &'a Tensor,
}

impl BatchOperand for TensorOperand<'_> {
    type Tall = Tensor;

    fn batch(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    fn shape(&self) -> (usize, usize) {
        let d = self.a.dims();
        (d[1], d[2])
    }

    fn upload(&self, items: &[Matrix]) -> Result<Tensor> {
        let refs: Vec<&Matrix> = items.iter().collect();
        upload(&refs, self.a.device())
    }

    fn download(&self, y: &Tensor) -> Result<Vec<Matrix>> {
        download(y)
    }

    fn width(&self, y: &Tensor) -> usize {
        y.dims()[2]
    }

    fn mul(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.a.matmul(x)?)
    }

    fn t_mul(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.a.transpose(1, 2)?.matmul(x)?)
    }

    fn gram(&self, y: &Tensor, exact: bool) -> Result<Vec<Vec<f64>>> {
        let g = if exact {
            let y = y.to_dtype(DType::F64)?;
            y.transpose(1, 2)?.matmul(&y)?
        } else {
            y.transpose(1, 2)?.matmul(y)?.to_dtype(DType::F64)?
        };
        grams_to_host(&g)
    }

    fn right_mul(&self, y: &Tensor, m: &[Matrix]) -> Result<Tensor> {
        let refs: Vec<&Matrix> = m.iter().collect();
        Ok(y.matmul(&upload(&refs, self.a.device())?)?)
    }

    fn side_gram(&self) -> Result<Vec<Vec<f64>>> {
        let (p, c) = self.shape();
        let at = self.a.transpose(1, 2)?;
        let g = if p >= c {
            at.matmul(self.a)?
        } else {
            self.a.matmul(&at)?
        };
        grams_to_host(&g.to_dtype(DType::F64)?)
    }
}

/// Symmetrised host copies of a batch of square `f64` matrices.
fn grams_to_host(g: &Tensor) -> Result<Vec<Vec<f64>>> {
    let (_, n, _) = g.dims3()?;
    Ok(g.to_vec3::<f64>()?
        .into_iter()
        .map(|rows| {
            let mut flat: Vec<f64> = rows.into_iter().flatten().collect();
            for i in 0..n {
                for j in 0..i {
                    let m = 0.5 * (flat[i * n + j] + flat[j * n + i]);
                    flat[i * n + j] = m;
                    flat[j * n + i] = m;
                }
            }
            flat
        })
        .collect())
}

/// Host matrices (all of one shape) as a `B × rows × cols` tensor.
fn upload(items: &[&Matrix], device: &Device) -> Result<Tensor> {
    let (r, c) = items.first().map(|m| m.shape()).unwrap_or((0, 0));
    let mut data = Vec::with_capacity(items.len() * r * c);
    for m in items {
        data.extend_from_slice(m.as_slice());
    }
    Ok(Tensor::from_vec(data, (items.len(), r, c), device)?)
}

fn download(y: &Tensor) -> Result<Vec<Matrix>> {
    let (_, r, c) = y.dims3()?;
    y.to_dtype(DType::F32)?
        .to_vec3::<f32>()?
        .into_iter()
        .map(|rows| Matrix::from_vec(r, c, rows.into_iter().flatten().collect()))
        .collect()
}

/// The input as an `f32` batch, and whether it was a single matrix.
fn as_batch(a: &Tensor, what: &str) -> Result<(Tensor, bool)> {
    let a = a.to_dtype(DType::F32)?;
    let (a, single) = match a.rank() {
        2 => (a.unsqueeze(0)?, true),
        3 => (a, false),
        r => {
            return Err(Error::invalid(format!(
                "{what}: expected a P×C or B×P×C tensor, got rank {r}"
            )))
        }
    };
    let (_, p, c) = a.dims3()?;
    if p == 0 || c == 0 {
        return Err(Error::invalid(format!("{what} is empty ({p}×{c})")));
    }
    // NaN fails both comparisons; so do ±∞ and negative values.
    let ok = a.ge(0.0)?.mul(&a.le(f32::MAX as f64)?)?;
    if ok.flatten_all()?.min(0)?.to_scalar::<u8>()? == 0 {
        let host = a.flatten_all()?.to_vec1::<f32>()?;
        let i = host
            .iter()
            .position(|x| !(x.is_finite() && *x >= 0.0))
            .unwrap_or(0);
        let x = host[i];
        let kind = super::bad_value(x);
        return Err(Error::Numeric(format!(
            "{what}: entry [{}, {}, {}] is {kind}; NMF needs finite non-negative values",
            i / (p * c),
            (i / c) % p,
            i % c
        )));
    }
    Ok((a.contiguous()?, single))
}

#[derive(Debug, Clone, Copy)]
struct ItemStats {
    max: f32,
    sum: f64,
}

fn item_stats(a: &Tensor) -> Result<Vec<ItemStats>> {
    let max = a.flatten_from(1)?.max(D::Minus1)?.to_vec1::<f32>()?;
    let sum = a
        .to_dtype(DType::F64)?
        .flatten_from(1)?
        .sum(D::Minus1)?
        .to_vec1::<f64>()?;
    Ok(max
        .into_iter()
        .zip(sum)
        .map(|(max, sum)| ItemStats { max, sum })
        .collect())
}

fn item_norms_sq(a: &Tensor) -> Result<Vec<f64>> {
    Ok(a.to_dtype(DType::F64)?
        .sqr()?
        .flatten_from(1)?
        .sum(D::Minus1)?
        .to_vec1::<f64>()?)
}

/// Per-image exact rescaling of extreme magnitudes (see [`super`]): `A_b · 2^(-2e_b)`.
fn rescale(a: &Tensor, stats: &[ItemStats]) -> Result<(Tensor, Vec<i32>)> {
    let exps: Vec<i32> = stats
        .iter()
        .map(|s| {
            if s.max == 0.0 || (s.max.log2().abs() as i32) < super::SAFE_EXPONENT {
                0
            } else {
                (s.max.log2() / 2.0).round() as i32
            }
        })
        .collect();
    if exps.iter().all(|e| *e == 0) {
        return Ok((a.clone(), exps));
    }
    let neg: Vec<i32> = exps.iter().map(|e| -2 * e).collect();
    Ok((a.broadcast_mul(&pow2_tensor(&neg, 1, a.device())?)?, exps))
}

/// `2^(m·e_b)` as a `B × 1 × 1` tensor.
fn pow2_tensor(exps: &[i32], m: i32, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = exps.iter().map(|e| ((m * e) as f32).exp2()).collect();
    Ok(Tensor::from_vec(v, (exps.len(), 1, 1), device)?)
}

/// A zero denominator becomes `f32::EPSILON` (scikit-learn's rule), exactly.
fn guard(den: &Tensor) -> Result<Tensor> {
    let zero = den.eq(0.0)?.to_dtype(DType::F32)?;
    Ok((den + zero.affine(super::engine::EPS as f64, 0.0)?)?)
}

fn mask_tensor(active: &[bool], device: &Device) -> Result<Tensor> {
    let v: Vec<u8> = active.iter().map(|x| *x as u8).collect();
    Ok(Tensor::from_vec(v, (active.len(), 1, 1), device)?)
}

/// `new` where the image is still active, `old` where it has stopped.
fn select(mask: &Option<Tensor>, new: &Tensor, old: &Tensor) -> Result<Tensor> {
    match mask {
        None => Ok(new.clone()),
        Some(m) => Ok(m.broadcast_as(new.shape())?.where_cond(new, old)?),
    }
}

/// `‖A − UV‖²` per image from `Uᵀ A`, `Uᵀ U` (new `U`) and the new `V`; `None` where the
/// formula cancels too badly (relative error under 0.1).
fn cheap_error_sq(
    uta: &Tensor,
    utu: &Tensor,
    v: &Tensor,
    norms_sq: &[f64],
) -> Result<Vec<Option<f64>>> {
    let cross = (uta * v)?
        .to_dtype(DType::F64)?
        .flatten_from(1)?
        .sum(D::Minus1)?
        .to_vec1::<f64>()?;
    let g = v.matmul(&v.transpose(1, 2)?)?;
    let quad = (utu * g)?
        .to_dtype(DType::F64)?
        .flatten_from(1)?
        .sum(D::Minus1)?
        .to_vec1::<f64>()?;
    Ok(norms_sq
        .iter()
        .zip(cross.iter().zip(&quad))
        .map(|(n, (x, q))| {
            let e = (n - 2.0 * x + q).max(0.0);
            (e >= 0.01 * n).then_some(e)
        })
        .collect())
}

/// `‖A − UV‖²` per image, exactly (`f64` sums).
fn residual_sq(a: &Tensor, u: &Tensor, v: &Tensor) -> Result<Vec<f64>> {
    Ok((a - u.matmul(v)?)?
        .to_dtype(DType::F64)?
        .sqr()?
        .flatten_from(1)?
        .sum(D::Minus1)?
        .to_vec1::<f64>()?)
}

/// Per image, factors sorted by descending `‖U_k‖·‖V_k‖` (stable).
fn energy_order(u: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, p, k) = u.dims3()?;
    let c = v.dim(2)?;
    let cu = u.to_dtype(DType::F64)?.sqr()?.sum(1)?.to_vec2::<f64>()?;
    let rv = v.to_dtype(DType::F64)?.sqr()?.sum(2)?.to_vec2::<f64>()?;
    let mut idx = Vec::with_capacity(b * k);
    let mut identity = true;
    for i in 0..b {
        let e: Vec<f64> = (0..k).map(|j| (cu[i][j] * rv[i][j]).sqrt()).collect();
        let mut order: Vec<u32> = (0..k as u32).collect();
        order.sort_by(|&x, &y| e[y as usize].total_cmp(&e[x as usize]));
        identity &= order.iter().enumerate().all(|(a, b)| a as u32 == *b);
        idx.extend(order);
    }
    if identity {
        return Ok((u.clone(), v.clone()));
    }
    let idx = Tensor::from_vec(idx, (b, k), u.device())?;
    let iu = idx.unsqueeze(1)?.broadcast_as((b, p, k))?.contiguous()?;
    let iv = idx.unsqueeze(2)?.broadcast_as((b, k, c))?.contiguous()?;
    Ok((u.gather(&iu, 2)?, v.gather(&iv, 1)?))
}
