//! The compressions a probe applies to an activation matrix: NMF, PCA, k-means and random
//! ablation at rank `K`, each as a replacement (`Ã`) or as a residual ablation (`A − Ã`).

use super::labels::{rng, stream};
use crate::nmf::{Compressor, KMeans, Nmf, Pca, RandomAblation};
use crate::{Error, Matrix, Result};
use candle_core::Tensor;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A compression method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// NMF `A ≈ U·V` by multiplicative updates (the crate's engine, NNDSVDa start).
    Nmf,
    /// PCA: uncentred `A·V·Vᵀ` onto the top `K` right singular vectors (the thesis' form),
    /// or centred around the column mean when [`CompressionSettings::pca_centered`] is set.
    Pca,
    /// K-means with hard assignment: each row replaced by its centroid.
    Kmeans,
    /// Random ablation: `K` random units (channels) kept, the others zeroed.
    Random,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 4] = [Method::Nmf, Method::Pca, Method::Kmeans, Method::Random];

    /// `"nmf"`, `"pca"`, `"kmeans"` or `"random"`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Nmf => "nmf",
            Method::Pca => "pca",
            Method::Kmeans => "kmeans",
            Method::Random => "random",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A method applied as a replacement, or as a residual ablation (NMF and PCA only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Probe {
    /// The compression.
    pub method: Method,
    /// Feed `A − Ã` forward instead of `Ã`.
    pub residual: bool,
}

impl Probe {
    /// The replacement probe of `method`.
    pub const fn of(method: Method) -> Self {
        Probe {
            method,
            residual: false,
        }
    }

    /// The residual probe of `method` (NMF or PCA).
    pub const fn residual(method: Method) -> Self {
        Probe {
            method,
            residual: true,
        }
    }

    /// The four replacement probes and the two residual ones.
    pub fn all() -> Vec<Probe> {
        let mut v: Vec<Probe> = Method::ALL.iter().map(|&m| Probe::of(m)).collect();
        v.push(Probe::residual(Method::Nmf));
        v.push(Probe::residual(Method::Pca));
        v
    }

    /// `nmf`, …, `nmf-residual`, `pca-residual`.
    pub fn name(self) -> String {
        if self.residual {
            format!("{}-residual", self.method)
        } else {
            self.method.to_string()
        }
    }
}

impl std::str::FromStr for Probe {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (m, residual) = match s.strip_suffix("-residual") {
            Some(m) => (m, true),
            None => (s, false),
        };
        let method = match m {
            "nmf" => Method::Nmf,
            "pca" => Method::Pca,
            "kmeans" => Method::Kmeans,
            "random" => Method::Random,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown probe {s:?}: expected nmf, pca, kmeans, random, nmf-residual or \
                     pca-residual"
                )))
            }
        };
        if residual && !matches!(method, Method::Nmf | Method::Pca) {
            return Err(Error::invalid(format!(
                "{s}: residual ablation is defined for nmf and pca only"
            )));
        }
        Ok(Probe { method, residual })
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Settings of the compressions (recorded with every measurement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionSettings {
    /// NMF iteration limit.
    pub nmf_max_iter: usize,
    /// NMF relative-improvement tolerance.
    pub nmf_tol: f64,
    /// Centre the data before PCA (the thesis does not).
    pub pca_centered: bool,
    /// K-means iteration limit.
    pub kmeans_max_iter: usize,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        CompressionSettings {
            nmf_max_iter: crate::nmf::DEFAULT_MAX_ITER,
            nmf_tol: crate::nmf::DEFAULT_TOL,
            pca_centered: false,
            kmeans_max_iter: crate::nmf::DEFAULT_KMEANS_MAX_ITER,
        }
    }
}

/// Whether `method` at rank `k` gives back a `rows × cols` matrix exactly (see [`compress`]).
pub fn is_exact(method: Method, k: usize, rows: usize, cols: usize) -> bool {
    match method {
        Method::Nmf | Method::Pca => k >= rows.min(cols),
        Method::Kmeans => k >= rows,
        Method::Random => k >= cols,
    }
}

/// What a probe feeds forward in place of `a` (`P × C`) at rank `k`; `seed` drives k-means
/// seeding and the units random ablation keeps.
///
/// Where the best rank-`k` compression is known to be `a` itself, `a` is used as is: for NMF
/// and PCA when `k ≥ min(P, C)` (`a = I·a = a·I` is an exact non-negative factorization, and
/// the rank-`k` SVD is exact), for k-means when `k ≥ P` (each row its own centroid), and for
/// random ablation when `k ≥ C` (every unit kept). Residual probes then feed zeros.
pub fn compress(
    a: &Matrix,
    k: usize,
    probe: Probe,
    settings: &CompressionSettings,
    seed: u64,
) -> Result<Matrix> {
    if k == 0 {
        return Err(Error::invalid("a probe's rank K must be at least 1"));
    }
    let (p, c) = a.shape();
    let approx = if is_exact(probe.method, k, p, c) {
        a.clone()
    } else {
        match probe.method {
            Method::Nmf => {
                Nmf::new(k)
                    .max_iter(settings.nmf_max_iter)
                    .tol(settings.nmf_tol)
                    .build()?
                    .compress(a)?
                    .reconstruction
            }
            Method::Pca => {
                Pca::new(k)
                    .centered(settings.pca_centered)
                    .build()?
                    .compress(a)?
                    .reconstruction
            }
            Method::Kmeans => {
                KMeans::new(k)
                    .max_iter(settings.kmeans_max_iter)
                    .seed(seed)
                    .build()?
                    .compress(a)?
                    .reconstruction
            }
            Method::Random => {
                let s = rng(seed, stream::ABLATION, k as u64).random::<u64>();
                RandomAblation::new(k)
                    .seed(s)
                    .build()?
                    .compress(a)?
                    .reconstruction
            }
        }
    };
    if !probe.residual {
        return Ok(approx);
    }
    let data = a
        .as_slice()
        .iter()
        .zip(approx.as_slice())
        .map(|(x, y)| x - y)
        .collect();
    Matrix::from_vec(p, c, data)
}

/// NMF of a `P × C` tensor on its own device ([`Nmf::fit_tensor`]; the CUDA path of the
/// probes): the rank-`k` reconstruction, or the residual `a − U·V`. Exact at
/// `k ≥ min(P, C)`, as [`compress`].
pub fn compress_nmf_tensor(
    a: &Tensor,
    k: usize,
    residual: bool,
    settings: &CompressionSettings,
) -> Result<Tensor> {
    if k == 0 {
        return Err(Error::invalid("a probe's rank K must be at least 1"));
    }
    let (p, c) = a.dims2()?;
    let approx = if k >= p.min(c) {
        a.clone()
    } else {
        let f = Nmf::new(k)
            .max_iter(settings.nmf_max_iter)
            .tol(settings.nmf_tol)
            .build()?
            .fit_tensor(a)?;
        f.u.matmul(&f.v)?
    };
    Ok(if residual { (a - approx)? } else { approx })
}
