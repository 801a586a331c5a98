//! PCA whitening of descriptors, learned on a training image set.
//!
//! [`Whitening::learner`] learns the mean, the principal axes and their variances from a set
//! of local vectors (rows of `V`, regional R-MAC vectors, or whole-image descriptors of a
//! *training* set, never the set being searched). [`Whitening::apply`] centres a vector,
//! projects it on the first `dim` axes, divides each coordinate by its variance raised to a
//! power (dirtorch's `whitenp`: 0.5 whitens fully, 0 only rotates and cuts) and L2-normalises.
//!
//! # Few training vectors
//! With `n` vectors the centred data spans at most `n − 1` directions. The learner
//! - keeps only the axes whose variance is above [`RANK_TOLERANCE`] times the largest (and at
//!   most `n − 1`), which caps the output dimension: ten photos give at most ten times `K`
//!   minus one dimensions, never axes learned from noise;
//! - shrinks the covariance towards a multiple of the identity by the Ledoit–Wolf estimate
//!   (Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance
//!   matrices", 2004; the same formula as scikit-learn's `ledoit_wolf_shrinkage`), so that
//!   the smallest retained variances, which few samples estimate badly, are not blown up.
//!   With many more vectors than dimensions the estimate is close to zero and whitening is
//!   the classic one.
//!
//! # File format
//! A safetensors file (little-endian, validated header) with three `F32` tensors — `mean`
//! `[d]`, `components` `[r, d]` (unit rows, the principal axes by decreasing variance) and
//! `variances` `[r]` (decreasing, positive) — and string metadata: `format` =
//! [`WHITENING_FORMAT`], `version` (an integer, between [`OLDEST_WHITENING_VERSION`] and
//! [`WHITENING_VERSION`]), `id`, `training_set`, `training_images`, `training_vectors`,
//! `shrinkage`. The `id` is `wh-` followed by 16 hex digits of a BLAKE3 hash of the tensors
//! and the other metadata, so a damaged file is detected on load and two files with the same
//! id hold the same whitening. Files are written to a temporary sibling, synced, and renamed.

use crate::linalg::symmetric_eigen;
use crate::{Error, Matrix, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `format` label of whitening files.
pub const WHITENING_FORMAT: &str = "deepfactor-whitening";
/// The version written by this build.
pub const WHITENING_VERSION: u32 = 1;
/// The oldest version this build reads.
pub const OLDEST_WHITENING_VERSION: u32 = 1;
/// Default power applied to the variances (dirtorch's `whitenp`): 0.5 whitens fully.
pub const DEFAULT_WHITEN_POWER: f32 = 0.5;
/// Axes whose variance is at most this fraction of the largest are dropped as noise.
pub const RANK_TOLERANCE: f64 = 1e-6;

/// How the covariance is regularised before whitening.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Shrinkage {
    /// The Ledoit–Wolf estimate of the shrinkage intensity (the default).
    #[default]
    LedoitWolf,
    /// A fixed intensity `s` in `[0, 1]`: covariance `(1 − s)·Σ + s·(tr Σ / d)·I`. `0` gives
    /// classic PCA whitening.
    Fixed(f64),
}

/// Configuration of [`Whitening`] learning; made by [`Whitening::learner`].
#[derive(Debug, Clone, PartialEq)]
pub struct WhiteningLearner {
    training_set: String,
    training_images: usize,
    shrinkage: Shrinkage,
    max_dim: Option<usize>,
}

impl WhiteningLearner {
    /// Covariance regularisation (default [`Shrinkage::LedoitWolf`]).
    pub fn shrinkage(mut self, shrinkage: Shrinkage) -> Self {
        self.shrinkage = shrinkage;
        self
    }

    /// Keep at most this many axes (default: every axis the data supports).
    pub fn max_dim(mut self, dim: usize) -> Self {
        self.max_dim = Some(dim);
        self
    }

    /// Learns from `vectors` (`n × d`, one vector per row, finite, `n ≥ 2`).
    pub fn learn(&self, vectors: &Matrix) -> Result<Whitening> {
        let (n, d) = vectors.shape();
        if n < 2 || d == 0 {
            return Err(Error::invalid(format!(
                "whitening needs at least 2 training vectors of at least 1 dimension, got {n} of {d}"
            )));
        }
        if let Some(bad) = vectors.as_slice().iter().position(|v| !v.is_finite()) {
            return Err(Error::Numeric(format!(
                "whitening: training vector {} has a non-finite value",
                bad / d
            )));
        }
        if self.max_dim == Some(0) {
            return Err(Error::invalid("whitening: max_dim must be at least 1"));
        }
        if let Shrinkage::Fixed(s) = self.shrinkage {
            if !(0.0..=1.0).contains(&s) {
                return Err(Error::invalid(format!(
                    "whitening: shrinkage must lie in [0, 1], got {s}"
                )));
            }
        }
        let mut mean = vec![0f64; d];
        for i in 0..n {
            for (m, &x) in mean.iter_mut().zip(vectors.row(i)) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut x = vectors.clone();
        for i in 0..n {
            for (v, m) in x.row_mut(i).iter_mut().zip(&mean) {
                *v = (f64::from(*v) - m) as f32;
            }
        }
        let (values, axes) = principal_axes(&x)?;
        let top = values.first().copied().unwrap_or(0.0);
        if top <= 0.0 {
            return Err(Error::Numeric(
                "whitening: the training vectors do not vary (all equal)".into(),
            ));
        }
        let rank = values
            .iter()
            .take(n - 1)
            .take_while(|&&l| l > RANK_TOLERANCE * top)
            .count();
        let r = rank.min(self.max_dim.unwrap_or(usize::MAX));
        // Ledoit–Wolf quantities: trace, squared Frobenius norm of the covariance, and Σ‖x‖⁴.
        let trace: f64 = (0..n)
            .map(|i| x.row(i).iter().map(|&v| f64::from(v).powi(2)).sum::<f64>())
            .sum::<f64>()
            / n as f64;
        let shrinkage = match self.shrinkage {
            Shrinkage::Fixed(s) => s,
            Shrinkage::LedoitWolf => {
                let fourth: f64 = (0..n)
                    .map(|i| {
                        x.row(i)
                            .iter()
                            .map(|&v| f64::from(v).powi(2))
                            .sum::<f64>()
                            .powi(2)
                    })
                    .sum();
                let frob2: f64 = values.iter().map(|l| l * l).sum();
                ledoit_wolf(n, d, trace, frob2, fourth)
            }
        };
        let mu = trace / d as f64;
        let variances: Vec<f32> = values[..r]
            .iter()
            .map(|&l| ((1.0 - shrinkage) * l + shrinkage * mu) as f32)
            .collect();
        let mut components = Matrix::zeros(r, d);
        for i in 0..r {
            components
                .row_mut(i)
                .copy_from_slice(&axes[i * d..(i + 1) * d]);
        }
        Whitening::from_parts(
            mean.iter().map(|&m| m as f32).collect(),
            components,
            variances,
            TrainingSet {
                name: self.training_set.clone(),
                images: self.training_images,
                vectors: n,
            },
            shrinkage,
        )
    }
}

/// The Ledoit–Wolf shrinkage intensity of centred data, from `n`, `d`, the covariance's trace
/// and squared Frobenius norm (covariance normalised by `n`), and `Σ_i ‖x_i‖⁴`.
fn ledoit_wolf(n: usize, d: usize, trace: f64, frob2: f64, fourth: f64) -> f64 {
    if d == 1 {
        return 0.0;
    }
    let (n, d) = (n as f64, d as f64);
    let mu = trace / d;
    let beta = (fourth / n - frob2) / (d * n);
    let delta = (frob2 - d * mu * mu) / d;
    let beta = beta.min(delta);
    if beta <= 0.0 || delta <= 0.0 {
        0.0
    } else {
        beta / delta
    }
}

/// Eigenvalues (descending, ≥ 0) of the covariance `XᵀX / n` of centred `x` (`n × d`), and the
/// matching unit eigenvectors as rows of a `min(n, d) × d` array (entry of largest magnitude
/// positive). Uses the `n × n` Gram matrix when `n < d`.
fn principal_axes(x: &Matrix) -> Result<(Vec<f64>, Vec<f32>)> {
    let (n, d) = x.shape();
    if n >= d {
        let cov = x.t_matmul(x)?;
        let a: Vec<f64> = cov
            .as_slice()
            .iter()
            .map(|&v| f64::from(v) / n as f64)
            .collect();
        let e = symmetric_eigen(d, &a)?;
        let values = e.values.iter().map(|v| v.max(0.0)).collect();
        let axes = e.vectors.iter().map(|&v| v as f32).collect();
        Ok((values, axes))
    } else {
        // XXᵀ/n = W Λ Wᵀ ⇒ the covariance's axes are Xᵀw / √(nλ).
        let gram = x.matmul_t(x)?;
        let a: Vec<f64> = gram
            .as_slice()
            .iter()
            .map(|&v| f64::from(v) / n as f64)
            .collect();
        let e = symmetric_eigen(n, &a)?;
        let mut axes = vec![0f32; n * d];
        let mut values = Vec::with_capacity(n);
        for (i, &l) in e.values.iter().enumerate() {
            let l = l.max(0.0);
            values.push(l);
            if l <= 0.0 {
                continue;
            }
            let w = e.vector(i);
            let mut axis = vec![0f64; d];
            for (row, &wj) in w.iter().enumerate() {
                for (a, &v) in axis.iter_mut().zip(x.row(row)) {
                    *a += wj * f64::from(v);
                }
            }
            let norm = axis.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                continue;
            }
            let big = axis
                .iter()
                .enumerate()
                .fold(0, |b, (k, a)| if a.abs() > axis[b].abs() { k } else { b });
            let sign = if axis[big] < 0.0 { -1.0 } else { 1.0 };
            for (o, a) in axes[i * d..(i + 1) * d].iter_mut().zip(&axis) {
                *o = (sign * a / norm) as f32;
            }
        }
        Ok((values, axes))
    }
}

/// Where a whitening was learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingSet {
    /// The training set's name, e.g. `semantic-dev` or a folder name.
    pub name: String,
    /// Number of images it holds.
    pub images: usize,
    /// Number of vectors learned from.
    pub vectors: usize,
}

/// A learned PCA whitening. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Whitening {
    mean: Vec<f32>,
    components: Matrix,
    variances: Vec<f32>,
    training: TrainingSet,
    shrinkage: f64,
    id: String,
}

impl Whitening {
    /// A learner that records `training_set` (a name) and its number of images in the result.
    pub fn learner(training_set: impl Into<String>, training_images: usize) -> WhiteningLearner {
        WhiteningLearner {
            training_set: training_set.into(),
            training_images,
            shrinkage: Shrinkage::default(),
            max_dim: None,
        }
    }

    fn from_parts(
        mean: Vec<f32>,
        components: Matrix,
        variances: Vec<f32>,
        training: TrainingSet,
        shrinkage: f64,
    ) -> Result<Whitening> {
        let mut w = Whitening {
            mean,
            components,
            variances,
            training,
            shrinkage,
            id: String::new(),
        };
        w.id = w.content_id();
        Ok(w)
    }

    /// `wh-` and 16 hex digits of the BLAKE3 hash of the content and metadata.
    fn content_id(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(WHITENING_FORMAT.as_bytes());
        for t in [&self.mean[..], self.components.as_slice(), &self.variances] {
            h.update(&(t.len() as u64).to_le_bytes());
            h.update(&bytes_of(t));
        }
        h.update(&(self.components.rows() as u64).to_le_bytes());
        h.update(self.training.name.as_bytes());
        h.update(&[0]);
        h.update(&(self.training.images as u64).to_le_bytes());
        h.update(&(self.training.vectors as u64).to_le_bytes());
        h.update(&self.shrinkage.to_le_bytes());
        format!("wh-{}", &h.finalize().to_hex()[..16])
    }

    /// The identity recorded in recipes: `wh-` and 16 hex digits of a content hash.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Dimension of the vectors it applies to.
    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }

    /// Largest output dimension (the number of axes kept).
    pub fn max_output_dim(&self) -> usize {
        self.variances.len()
    }

    /// The training set it was learned on.
    pub fn training(&self) -> &TrainingSet {
        &self.training
    }

    /// The shrinkage intensity used.
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// The variances of the axes (after shrinkage), largest first.
    pub fn variances(&self) -> &[f32] {
        &self.variances
    }

    /// The mean of the training vectors.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The principal axes, one unit row each, by decreasing variance.
    pub fn components(&self) -> &Matrix {
        &self.components
    }

    /// Whitens `x`: `y_i = a_i·(x − m) / σ²_i^power` for the first `dim` axes, then
    /// L2-normalised. A vector equal to the mean gives zeros. Refuses a wrong length or a
    /// `dim` of 0 or beyond [`Whitening::max_output_dim`].
    pub fn apply(&self, x: &[f32], power: f32, dim: usize) -> Result<Vec<f32>> {
        let mut y = self.project(x, power, dim)?;
        let norm = y.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            y.iter_mut().for_each(|v| *v /= norm);
        }
        Ok(y)
    }

    /// [`Whitening::apply`] on every row of `x` (`n × input_dim`) at once, as one matrix
    /// product: row `i` of the result is `apply(x.row(i), power, dim)`.
    pub fn apply_rows(&self, x: &Matrix, power: f32, dim: usize) -> Result<Matrix> {
        if x.cols() != self.input_dim() {
            return Err(Error::invalid(format!(
                "whitening {} takes {}-dimensional vectors, got {}",
                self.id,
                self.input_dim(),
                x.cols()
            )));
        }
        if dim == 0 || dim > self.max_output_dim() {
            return Err(Error::invalid(format!(
                "whitening {} gives 1 to {} dimensions, {dim} were asked",
                self.id,
                self.max_output_dim()
            )));
        }
        let mut centred = x.clone();
        for i in 0..centred.rows() {
            for (v, m) in centred.row_mut(i).iter_mut().zip(&self.mean) {
                *v -= m;
            }
        }
        let axes = self.components.view().rows_range(0, dim).t();
        let mut y = crate::linalg::par_product(centred.view(), axes);
        let scale: Vec<f32> = self.variances[..dim]
            .iter()
            .map(|v| 1.0 / v.powf(power))
            .collect();
        for i in 0..y.rows() {
            let row = y.row_mut(i);
            for (v, s) in row.iter_mut().zip(&scale) {
                *v *= s;
            }
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Ok(y)
    }

    /// [`Whitening::apply`] without the final normalisation.
    pub fn project(&self, x: &[f32], power: f32, dim: usize) -> Result<Vec<f32>> {
        if x.len() != self.input_dim() {
            return Err(Error::invalid(format!(
                "whitening {} takes {}-dimensional vectors, got {}",
                self.id,
                self.input_dim(),
                x.len()
            )));
        }
        if dim == 0 || dim > self.max_output_dim() {
            return Err(Error::invalid(format!(
                "whitening {} gives 1 to {} dimensions, {dim} were asked",
                self.id,
                self.max_output_dim()
            )));
        }
        let centred: Vec<f32> = x.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
        Ok((0..dim)
            .map(|i| {
                let p: f32 = self
                    .components
                    .row(i)
                    .iter()
                    .zip(&centred)
                    .map(|(a, b)| a * b)
                    .sum();
                p / self.variances[i].powf(power)
            })
            .collect())
    }

    /// The file's bytes (see the module documentation for the format).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let d = self.input_dim();
        let r = self.max_output_dim();
        let mean = bytes_of(&self.mean);
        let comps = bytes_of(self.components.as_slice());
        let vars = bytes_of(&self.variances);
        fn view(shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>> {
            TensorView::new(Dtype::F32, shape, data)
                .map_err(|e| Error::Numeric(format!("whitening: cannot serialise: {e}")))
        }
        let tensors = vec![
            ("components", view(vec![r, d], &comps)?),
            ("mean", view(vec![d], &mean)?),
            ("variances", view(vec![r], &vars)?),
        ];
        let meta: HashMap<String, String> = [
            ("format", WHITENING_FORMAT.to_string()),
            ("version", WHITENING_VERSION.to_string()),
            ("id", self.id.clone()),
            ("training_set", self.training.name.clone()),
            ("training_images", self.training.images.to_string()),
            ("training_vectors", self.training.vectors.to_string()),
            ("shrinkage", format!("{:e}", self.shrinkage)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(tensors, Some(meta))
            .map_err(|e| Error::Numeric(format!("whitening: cannot serialise: {e}")))
    }

    /// Parses a whitening file's bytes; `origin` names the file in errors. Refuses anything
    /// malformed, of another format or version, inconsistent, or whose content does not match
    /// its id (a damaged file), with [`Error::Whitening`].
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Whitening> {
        let err = |reason: String| Error::Whitening {
            path: origin.to_path_buf(),
            reason,
        };
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a readable safetensors file ({e})")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a readable safetensors file ({e})")))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| err("no metadata: not a deepfactor whitening file".into()))?;
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| err(format!("metadata lacks {k:?}")))
        };
        if get("format")? != WHITENING_FORMAT {
            return Err(err(format!(
                "format is {:?}, expected {WHITENING_FORMAT:?}",
                get("format")?
            )));
        }
        let version: u32 = get("version")?
            .parse()
            .map_err(|_| err(format!("version {:?} is not a number", meta["version"])))?;
        if version > WHITENING_VERSION {
            return Err(err(format!(
                "version {version} was written by a newer deepfactor (this one reads \
                 {OLDEST_WHITENING_VERSION} to {WHITENING_VERSION})"
            )));
        }
        if version < OLDEST_WHITENING_VERSION {
            return Err(err(format!(
                "version {version} is no longer supported (oldest: {OLDEST_WHITENING_VERSION})"
            )));
        }
        let number = |k: &str| -> Result<usize> {
            get(k)?
                .parse()
                .map_err(|_| err(format!("{k} {:?} is not a count", meta[k])))
        };
        let training = TrainingSet {
            name: get("training_set")?.clone(),
            images: number("training_images")?,
            vectors: number("training_vectors")?,
        };
        let shrinkage: f64 = get("shrinkage")?
            .parse()
            .map_err(|_| err(format!("shrinkage {:?} is not a number", meta["shrinkage"])))?;
        let tensor = |name: &str, shape_len: usize| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st
                .tensor(name)
                .map_err(|_| err(format!("tensor {name:?} is missing")))?;
            if t.dtype() != Dtype::F32 || t.shape().len() != shape_len {
                return Err(err(format!(
                    "tensor {name:?} is {:?} {:?}, expected F32 of rank {shape_len}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let data: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
                return Err(err(format!("tensor {name:?} holds {bad}")));
            }
            Ok((t.shape().to_vec(), data))
        };
        let (ms, mean) = tensor("mean", 1)?;
        let (cs, comps) = tensor("components", 2)?;
        let (vs, variances) = tensor("variances", 1)?;
        let (d, r) = (ms[0], vs[0]);
        if d == 0 || r == 0 || cs != [r, d] {
            return Err(err(format!(
                "shapes do not fit: mean {ms:?}, components {cs:?}, variances {vs:?}"
            )));
        }
        if variances.iter().any(|&v| v <= 0.0) || variances.windows(2).any(|w| w[1] > w[0]) {
            return Err(err("variances must be positive and decreasing".into()));
        }
        let w = Whitening::from_parts(
            mean,
            Matrix::from_vec(r, d, comps)?,
            variances,
            training,
            shrinkage,
        )?;
        let stored = get("id")?;
        if *stored != w.id {
            return Err(err(format!(
                "the content does not match its id {stored} (the file is damaged)"
            )));
        }
        Ok(w)
    }

    /// Writes the whitening to `path` atomically (a temporary sibling, synced, then renamed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        crate::durable::write_atomic(path, &temp_sibling(path), &bytes)
    }

    /// Reads a whitening file written by [`Whitening::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Whitening> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Whitening::from_bytes(&bytes, path)
    }
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}
