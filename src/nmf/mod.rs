//! Non-negative matrix factorization of activations: `A ≈ U·V`.
//!
//! `A` is `P × C` (cells × channels, non-negative), `U` is `P × K` (one heatmap per column) and
//! `V` is `K × C` (one concept vector per row). The solver is Lee & Seung's multiplicative
//! update for the Frobenius loss ("Algorithms for Non-negative Matrix Factorization", NIPS
//! 2001), step for step as scikit-learn's `NMF(solver='mu')` computes it: `U` first, then `V`,
//! exactly-zero denominators replaced by `f32::EPSILON`, NNDSVD / NNDSVDa / random
//! initialisation as in `sklearn.decomposition._nmf`, and the same stopping rule (every 10
//! iterations, stop once the error improved by less than `tol` times the initial error;
//! `tol = 0` runs all iterations).
//!
//! ```
//! use deepfactor::nmf::Nmf;
//! use deepfactor::linalg::Matrix;
//!
//! let a = Matrix::from_vec(3, 2, vec![1.0, 0.0, 2.0, 0.1, 0.0, 3.0])?;
//! let f = Nmf::new(2).max_iter(500).tol(0.0).build()?.fit(&a)?;
//! assert_eq!((f.u.shape(), f.v.shape()), ((3, 2), (2, 2)));
//! assert!(f.rel_error < 0.01);
//! # Ok::<(), deepfactor::Error>(())
//! ```
//!
//! # Engines
//! - [`Nmf::fit`] and friends run on the CPU on plain slices (blocked SIMD products, the `U`
//!   update fused with the pass over `A`, sparse `A` through its non-zeros, rayon over fixed
//!   row chunks). See `engine.rs` for the design.
//! - [`Nmf::fit_tensor`] (one `P × C` matrix or a `B × P × C` batch) and
//!   [`Nmf::transform_tensor`] run the same algorithm with candle tensor operations on any
//!   [`candle_core::Device`] (CUDA with the `cuda` feature).
//!
//! NNDSVD needs the top `K` singular triplets of `A`; scikit-learn draws them with
//! `randomized_svd`, this crate with the same randomized subspace iteration under a fixed
//! seed ([`crate::linalg::truncated_svd`]), so both start from practically the same factors.
//!
//! # Compression baselines
//! [`Compressor`] puts NMF beside the baselines that the memorization probes compare it with:
//! [`Pca`] (truncated SVD), [`KMeans`], [`SphericalKMeans`] and [`RandomAblation`]; each
//! returns its factors, the rank-`K` reconstruction and its relative error ([`Compressed`]).
//!
//! # Guarantees
//! - **Deterministic.** The default initialisation (NNDSVDa, whose SVD uses a fixed seed) and
//!   the CPU engine give the same factors, bit for bit, on every run and for any number of
//!   threads; a batch gives each image exactly what fitting it alone gives.
//! - **Factor order.** Factors are sorted by descending energy `‖U_k‖·‖V_k‖` (ties keep their
//!   index order), so factor 0 is the strongest.
//! - **Scaling.** Factors are returned as the updates leave them (scikit-learn's scaling);
//!   `U·V` is what the algorithm fits. Rows of `V` are not normalised: callers that want unit
//!   concept vectors normalise them (a row of `V` may be zero, see below).
//! - **Degenerate input.** An all-zero `A` gives all-zero factors, 0 iterations and
//!   `rel_error = 0`. All-zero rows of `A` give all-zero rows of `U` after the first update.
//!   `K` may exceed `min(P, C)`: NNDSVD then has no singular triplet for the extra factors,
//!   which start as zero (NNDSVD: they stay zero) or at the mean of `A` (NNDSVDa). Entries
//!   that are NaN, infinite or negative are refused with [`Error::Numeric`]; an empty `A` with
//!   [`Error::InvalidArgument`]. Inputs whose largest entry is beyond `2^±40` are rescaled
//!   internally by an exact power of two so that no product overflows (NNDSVD's `1e-6`
//!   truncation then applies to the rescaled values, which keeps such fits scale-equivariant);
//!   factors are never NaN or infinite.

mod baseline;
mod engine;
mod init;
mod tensor;

pub use baseline::{
    Compressed, Compressor, KMeans, KMeansBuilder, Pca, PcaBuilder, RandomAblation,
    RandomAblationBuilder, SphericalKMeans, DEFAULT_KMEANS_MAX_ITER, DEFAULT_PCA_CENTERED,
    DEFAULT_SEED,
};

pub use tensor::TensorFactorization;

use crate::linalg::{kernel, Csr, Operand};
use crate::{Error, Matrix, Result};
use engine::{residual_sq, Data, Engine};
use rayon::prelude::*;

/// Default maximum number of iterations (the authors' reference code and scikit-learn).
pub const DEFAULT_MAX_ITER: usize = 200;
/// Default relative-improvement tolerance (the authors' reference code and scikit-learn).
pub const DEFAULT_TOL: f64 = 1e-4;
/// With [`Layout::Auto`], `A` is handled as sparse when at most this fraction of its entries
/// is non-zero.
pub const DEFAULT_SPARSE_MAX_DENSITY: f64 = 0.3;
/// How often (in iterations) the stopping rule looks at the error, as in scikit-learn.
pub const CHECK_EVERY: usize = 10;

/// Largest entry magnitude (as a power of two) used as is; beyond it `A` is rescaled.
const SAFE_EXPONENT: i32 = 40;

/// How the initial factors are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// NNDSVD with its zeros replaced by the mean of `A` (scikit-learn's `'nndsvda'`).
    #[default]
    Nndsvda,
    /// Non-negative double SVD (Boutsidis & Gallopoulos 2008), zeros kept (`'nndsvd'`).
    Nndsvd,
    /// `|N(0,1)|·√(mean(A)/K)` entries from a seeded ChaCha8 stream (`'random'`).
    Random {
        /// The seed; the same seed gives the same factors.
        seed: u64,
    },
}

/// How the CPU engine stores `A`. Both give the same factors up to `f32` rounding; the choice
/// depends on the input alone, so a given input always takes the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Sparse when the fraction of non-zeros is at most [`DEFAULT_SPARSE_MAX_DENSITY`] (see
    /// [`NmfBuilder::sparse_max_density`]), dense otherwise.
    #[default]
    Auto,
    /// Always dense.
    Dense,
    /// Always compressed sparse rows.
    Sparse,
}

/// Configuration of a factorization; build with [`Nmf::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct NmfBuilder {
    k: usize,
    max_iter: usize,
    tol: f64,
    init: Init,
    layout: Layout,
    sparse_max_density: f64,
}

impl NmfBuilder {
    /// Maximum number of iterations (default [`DEFAULT_MAX_ITER`]).
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Relative-improvement tolerance (default [`DEFAULT_TOL`]); `0` runs all iterations.
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }

    /// Initialisation (default [`Init::Nndsvda`]).
    pub fn init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }

    /// Storage of `A` in the CPU engine (default [`Layout::Auto`]).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Density threshold of [`Layout::Auto`] (default [`DEFAULT_SPARSE_MAX_DENSITY`]).
    pub fn sparse_max_density(mut self, density: f64) -> Self {
        self.sparse_max_density = density;
        self
    }

    /// Validates the configuration: `K ≥ 1`, `tol` finite and non-negative, density in
    /// `[0, 1]`.
    pub fn build(self) -> Result<Nmf> {
        if self.k == 0 {
            return Err(Error::invalid("NMF rank K must be at least 1"));
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(Error::invalid(format!(
                "NMF tolerance must be finite and non-negative, got {}",
                self.tol
            )));
        }
        if !(0.0..=1.0).contains(&self.sparse_max_density) {
            return Err(Error::invalid(format!(
                "NMF sparse density threshold must lie in [0, 1], got {}",
                self.sparse_max_density
            )));
        }
        Ok(Nmf { cfg: self })
    }
}

/// A validated NMF configuration; the verbs (`fit`, `fit_batch`, `fit_joint`, `transform`,
/// `fit_v`, and their tensor twins) take `&self` and can run concurrently.
#[derive(Debug, Clone, PartialEq)]
pub struct Nmf {
    cfg: NmfBuilder,
}

/// The result of one factorization `A ≈ U·V`.
#[derive(Debug, Clone, PartialEq)]
pub struct Factorization {
    /// `P × K`: column `k` is factor `k`'s heatmap over the rows of `A`.
    pub u: Matrix,
    /// `K × C`: row `k` is factor `k`'s concept vector over the channels.
    pub v: Matrix,
    /// Iterations done (`0` for an all-zero `A`).
    pub iterations: usize,
    /// `‖A − UV‖_F / ‖A‖_F` of the returned factors (`0` for an all-zero `A`).
    pub rel_error: f64,
}

/// The result of [`Nmf::fit_joint`]: one factorization of the stacked images.
#[derive(Debug, Clone, PartialEq)]
pub struct JointFactorization {
    /// The factorization of the stacked rows (`U` is `ΣP_i × K`).
    pub factorization: Factorization,
    /// `U` split back per image: `u_per_image[i]` holds image `i`'s rows (`P_i × K`).
    pub u_per_image: Vec<Matrix>,
}

impl Nmf {
    /// A configuration of rank `k` with the defaults; finish with [`NmfBuilder::build`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new(k: usize) -> NmfBuilder {
        NmfBuilder {
            k,
            max_iter: DEFAULT_MAX_ITER,
            tol: DEFAULT_TOL,
            init: Init::default(),
            layout: Layout::default(),
            sparse_max_density: DEFAULT_SPARSE_MAX_DENSITY,
        }
    }

    /// The rank `K`.
    pub fn k(&self) -> usize {
        self.cfg.k
    }

    /// Maximum number of iterations.
    pub fn max_iter(&self) -> usize {
        self.cfg.max_iter
    }

    /// Relative-improvement tolerance.
    pub fn tol(&self) -> f64 {
        self.cfg.tol
    }

    /// The initialisation.
    pub fn init(&self) -> Init {
        self.cfg.init
    }

    /// The storage layout of `A` in the CPU engine.
    pub fn layout(&self) -> Layout {
        self.cfg.layout
    }

    /// The density threshold of [`Layout::Auto`].
    pub fn sparse_max_density(&self) -> f64 {
        self.cfg.sparse_max_density
    }

    /// Factorizes `a` (`P × C`, finite, non-negative) from the configured initialisation.
    pub fn fit(&self, a: &Matrix) -> Result<Factorization> {
        let stats = check_matrix(a, "NMF input")?;
        self.fit_checked(a, &stats, None)
    }

    /// Factorizes `a` starting from the given `U₀` (`P × K`) and `V₀` (`K × C`) instead of the
    /// configured initialisation (scikit-learn's `init='custom'`).
    pub fn fit_from(&self, a: &Matrix, u0: &Matrix, v0: &Matrix) -> Result<Factorization> {
        let stats = check_matrix(a, "NMF input")?;
        let k = self.cfg.k;
        if u0.shape() != (a.rows(), k) || v0.shape() != (k, a.cols()) {
            return Err(Error::invalid(format!(
                "NMF initial factors of {}×{} and {}×{} do not fit a {}×{} input at K = {k}",
                u0.rows(),
                u0.cols(),
                v0.rows(),
                v0.cols(),
                a.rows(),
                a.cols()
            )));
        }
        check_matrix(u0, "NMF initial U")?;
        check_matrix(v0, "NMF initial V")?;
        self.fit_checked(a, &stats, Some((u0, v0)))
    }

    /// Independent factorizations of many images in one parallel pass. Each result is exactly
    /// (bit for bit) what [`Nmf::fit`] gives for that image alone; images may differ in size.
    pub fn fit_batch(&self, images: &[Matrix]) -> Result<Vec<Factorization>> {
        let stats = images
            .iter()
            .enumerate()
            .map(|(i, a)| check_matrix(a, &format!("NMF input image {i}")))
            .collect::<Result<Vec<_>>>()?;
        images
            .par_iter()
            .zip(stats.par_iter())
            .map(|(a, s)| self.fit_checked(a, s, None))
            .collect()
    }

    /// One factorization over the stacked rows of several images (all with the same number of
    /// channels): shared concepts `V`, and each image's heatmaps split out of `U`.
    pub fn fit_joint(&self, images: &[&Matrix]) -> Result<JointFactorization> {
        let Some(first) = images.first() else {
            return Err(Error::invalid("joint NMF needs at least one image"));
        };
        let c = first.cols();
        let mut data = Vec::new();
        let mut rows = Vec::with_capacity(images.len());
        for (i, a) in images.iter().enumerate() {
            if a.cols() != c {
                return Err(Error::invalid(format!(
                    "joint NMF: image {i} has {} channels, image 0 has {c}",
                    a.cols()
                )));
            }
            data.extend_from_slice(a.as_slice());
            rows.push(a.rows());
        }
        let stacked = Matrix::from_vec(rows.iter().sum(), c, data)?;
        let factorization = self.fit(&stacked)?;
        let k = self.cfg.k;
        let mut u_per_image = Vec::with_capacity(rows.len());
        let mut start = 0;
        for r in rows {
            let part = factorization.u.as_slice()[start * k..(start + r) * k].to_vec();
            u_per_image.push(Matrix::from_vec(r, k, part)?);
            start += r;
        }
        Ok(JointFactorization {
            factorization,
            u_per_image,
        })
    }

    /// `U` for fixed concepts `v` (`K × C`, `K` taken from `v`): projects new activations
    /// onto stored concepts (scikit-learn's `NMF.transform`: `U` starts at `√(mean(A)/K)` and
    /// only `U` is updated). The result carries `v` unchanged; factor order is `v`'s.
    pub fn transform(&self, a: &Matrix, v: &Matrix) -> Result<Factorization> {
        let sa = check_matrix(a, "NMF input")?;
        if v.cols() != a.cols() || v.rows() == 0 {
            return Err(Error::invalid(format!(
                "NMF transform: V of {}×{} does not fit an input with {} channels",
                v.rows(),
                v.cols(),
                a.cols()
            )));
        }
        let sv = check_matrix(v, "NMF fixed V")?;
        let (a_s, sta, ea) = rescaled(a, &sa);
        let (v_s, _, ev) = rescaled(v, &sv);
        let data = Data::new(&a_s, &sta, self.cfg.layout, self.cfg.sparse_max_density)?;
        let k = v.rows();
        let mut u = Matrix::from_vec(a.rows(), k, vec![start_value(&data, k); a.rows() * k])?;
        let iterations = if sa.max == 0.0 {
            u.as_mut_slice().fill(0.0);
            0
        } else {
            engine::fit_u_fixed_v(&data, &mut u, &v_s, self.cfg.max_iter, self.cfg.tol)
        };
        let rel_error = relative_error(&data, &u, &v_s);
        scale_by_pow2(&mut u, 2 * (ea - ev));
        finish(u, v.clone(), iterations, rel_error, false)
    }

    /// `V` for fixed heatmaps `u` (`P × K`, `K` taken from `u`), the mirror image of
    /// [`Nmf::transform`]: `V` starts at `√(mean(A)/K)` and only `V` is updated.
    pub fn fit_v(&self, a: &Matrix, u: &Matrix) -> Result<Factorization> {
        let sa = check_matrix(a, "NMF input")?;
        if u.rows() != a.rows() || u.cols() == 0 {
            return Err(Error::invalid(format!(
                "NMF fit_v: U of {}×{} does not fit an input with {} rows",
                u.rows(),
                u.cols(),
                a.rows()
            )));
        }
        let su = check_matrix(u, "NMF fixed U")?;
        let (a_s, sta, ea) = rescaled(a, &sa);
        let (u_s, _, eu) = rescaled(u, &su);
        let data = Data::new(&a_s, &sta, self.cfg.layout, self.cfg.sparse_max_density)?;
        let k = u.cols();
        let mut v = Matrix::from_vec(k, a.cols(), vec![start_value(&data, k); k * a.cols()])?;
        let iterations = if sa.max == 0.0 {
            v.as_mut_slice().fill(0.0);
            0
        } else {
            engine::fit_v_fixed_u(&data, &u_s, &mut v, self.cfg.max_iter, self.cfg.tol)
        };
        let rel_error = relative_error(&data, &u_s, &v);
        scale_by_pow2(&mut v, 2 * (ea - eu));
        finish(u.clone(), v, iterations, rel_error, false)
    }

    fn fit_checked(
        &self,
        a: &Matrix,
        stats: &Stats,
        start: Option<(&Matrix, &Matrix)>,
    ) -> Result<Factorization> {
        let cfg = &self.cfg;
        let (p, c, k) = (a.rows(), a.cols(), cfg.k);
        if stats.max == 0.0 {
            return Ok(zero_factorization(p, c, k));
        }
        let (a_s, st, e) = rescaled(a, stats);
        // A' = A·2^(-2e) ⇒ factors scale by 2^(-e) each.
        let data = Data::new(&a_s, &st, cfg.layout, cfg.sparse_max_density)?;
        self.fit_data(&data, e, start)
    }

    /// Factorizes `a` given in sparse form (compressed sparse rows), without ever making it
    /// dense: the memory-lean path for large stacks of activations, which holds `A` as its
    /// non-zeros twice (by rows and by columns, 8 bytes per non-zero each) plus the factors.
    /// Same algorithm, initialisation and factor order as [`Nmf::fit`] with
    /// [`Layout::Sparse`], the same operations in the same order, so the same factors —
    /// except for matrices whose smaller side is below about `4(K + 10)`, where NNDSVD's SVD
    /// takes the Gram route and the Gram matrix is summed from the non-zeros in another
    /// order (equal up to rounding). `rel_error` (and, with `tol > 0`, the rare direct error
    /// evaluations of the stopping rule) is computed from the non-zeros
    /// (`Σ_nz (a − UV)² + ‖UV‖² − Σ_nz (UV)²`) instead of entry by entry. The layout setting
    /// does not apply.
    pub fn fit_sparse(&self, a: &Csr) -> Result<Factorization> {
        let stats = check_csr(a, "NMF input")?;
        let (p, c, k) = (a.rows(), a.cols(), self.cfg.k);
        if stats.max == 0.0 {
            return Ok(zero_factorization(p, c, k));
        }
        let (e, owned) = match rescale_exponent(stats.max) {
            0 => (0, None),
            e => {
                let mut m = a.clone();
                m.scale_values(((-2 * e) as f32).exp2());
                (e, Some(m))
            }
        };
        let a_s = owned.as_ref().unwrap_or(a);
        let st = match &owned {
            Some(m) => check_csr(m, "rescaled NMF input").unwrap_or(stats),
            None => stats,
        };
        let data = Data::sparse(a_s, &st);
        self.fit_data(&data, e, None)
    }

    /// The iterations on prepared data (`A` scaled by `2^(-2e)`).
    fn fit_data(
        &self,
        data: &Data<'_>,
        e: i32,
        start: Option<(&Matrix, &Matrix)>,
    ) -> Result<Factorization> {
        let cfg = &self.cfg;
        let k = cfg.k;
        let (mut u, mut v) = match start {
            Some((u0, v0)) => {
                let (mut u, mut v) = (u0.clone(), v0.clone());
                scale_by_pow2(&mut u, -e);
                scale_by_pow2(&mut v, -e);
                (u, v)
            }
            None => self.initial_factors(data)?,
        };
        let mut eng = Engine::new(data, k);
        eng.prepare(&v);
        let tol = cfg.tol;
        let initial = if tol > 0.0 {
            residual_sq(data, &u, &v).sqrt()
        } else {
            0.0
        };
        let mut previous = initial;
        let mut iterations = cfg.max_iter;
        for it in 1..=cfg.max_iter {
            eng.iterate(&mut u, &mut v);
            if tol > 0.0 && it.is_multiple_of(CHECK_EVERY) {
                let err = eng
                    .cheap_error_sq(&v)
                    .unwrap_or_else(|| residual_sq(data, &u, &v))
                    .sqrt();
                if initial == 0.0 || (previous - err) / initial < tol {
                    iterations = it;
                    break;
                }
                previous = err;
            }
        }
        let rel_error = relative_error(data, &u, &v);
        scale_by_pow2(&mut u, e);
        scale_by_pow2(&mut v, e);
        finish(u, v, iterations, rel_error, true)
    }

    fn initial_factors(&self, data: &Data<'_>) -> Result<(Matrix, Matrix)> {
        let (p, c, k) = (data.rows(), data.cols(), self.cfg.k);
        let mean = data.sum / (p * c) as f64;
        match self.cfg.init {
            Init::Random { seed } => Ok(init::random(p, c, k, mean, seed)),
            Init::Nndsvd | Init::Nndsvda => {
                let fill = (self.cfg.init == Init::Nndsvda).then_some(mean);
                let op = Operand {
                    dense: data.dense(),
                    sparse: data.csr(),
                };
                init::nndsvd(&op, k, fill)
            }
        }
    }
}

/// What validation learns about a matrix on the way (one parallel pass; the sums are added
/// over fixed row chunks in order, so they do not depend on threads).
#[derive(Clone, Copy)]
pub(crate) struct Stats {
    pub max: f32,
    pub nnz: usize,
    pub sum: f64,
    pub sum_sq: f64,
}

/// Refuses empty matrices and NaN, infinite or negative entries, naming the first bad one.
pub(crate) fn check_matrix(a: &Matrix, what: &str) -> Result<Stats> {
    const ROWS: usize = 1024;
    if a.rows() == 0 || a.cols() == 0 {
        return Err(Error::invalid(format!(
            "{what} is empty ({}×{})",
            a.rows(),
            a.cols()
        )));
    }
    let c = a.cols();
    let parts: Vec<std::result::Result<Stats, usize>> = a
        .as_slice()
        .par_chunks(ROWS * c)
        .enumerate()
        .map(|(b, chunk)| match kernel::entry_stats(chunk, c) {
            Some((max, nnz, sum, sum_sq)) => Ok(Stats {
                max,
                nnz,
                sum,
                sum_sq,
            }),
            None => Err(b * ROWS * c
                + chunk
                    .iter()
                    .position(|x| !(x.is_finite() && *x >= 0.0))
                    .unwrap_or(0)),
        })
        .collect();
    let mut total = Stats {
        max: 0.0,
        nnz: 0,
        sum: 0.0,
        sum_sq: 0.0,
    };
    for part in parts {
        match part {
            Ok(st) => {
                total.max = total.max.max(st.max);
                total.nnz += st.nnz;
                total.sum += st.sum;
                total.sum_sq += st.sum_sq;
            }
            Err(i) => {
                let x = a.as_slice()[i];
                let kind = bad_value(x);
                return Err(Error::Numeric(format!(
                    "{what}: entry ({}, {}) is {kind}; NMF needs finite non-negative values",
                    i / c,
                    i % c
                )));
            }
        }
    }
    Ok(total)
}

/// `a` itself, or a copy scaled by `2^(-2e)` when its largest entry lies outside
/// `[2^-SAFE_EXPONENT, 2^SAFE_EXPONENT]`; returns the matrix used, its statistics, and `e`.
fn rescaled<'m>(a: &'m Matrix, stats: &Stats) -> (std::borrow::Cow<'m, Matrix>, Stats, i32) {
    let e = rescale_exponent(stats.max);
    if e == 0 {
        return (std::borrow::Cow::Borrowed(a), *stats, 0);
    }
    let mut m = a.clone();
    scale_by_pow2(&mut m, -2 * e);
    // Squares of the original entries may have under- or overflowed: recompute.
    let st = check_matrix(&m, "rescaled NMF input").unwrap_or(*stats);
    (std::borrow::Cow::Owned(m), st, e)
}

/// `e` such that `A·2^(-2e)` has its largest entry near 1, when `max` lies outside
/// `[2^-SAFE_EXPONENT, 2^SAFE_EXPONENT]`; 0 otherwise. An even power of two, so that each
/// factor scales by an exact power of two as well.
fn rescale_exponent(max: f32) -> i32 {
    if max == 0.0 || (max.log2().abs() as i32) < SAFE_EXPONENT {
        0
    } else {
        (max.log2() / 2.0).round() as i32
    }
}

/// All-zero factors of an all-zero `A` (no iterations).
fn zero_factorization(p: usize, c: usize, k: usize) -> Factorization {
    Factorization {
        u: Matrix::zeros(p, k),
        v: Matrix::zeros(k, c),
        iterations: 0,
        rel_error: 0.0,
    }
}

/// [`check_matrix`] for a sparse matrix: refuses an empty shape and NaN, infinite or negative
/// stored values, naming the first bad one.
pub(crate) fn check_csr(a: &Csr, what: &str) -> Result<Stats> {
    const VALUES: usize = 1 << 16;
    if a.rows() == 0 || a.cols() == 0 {
        return Err(Error::invalid(format!(
            "{what} is empty ({}×{})",
            a.rows(),
            a.cols()
        )));
    }
    let values = a.values();
    if let Some(i) = values.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
        // The row of stored value i: the last row starting at or before it.
        let row = (0..a.rows())
            .rev()
            .find(|&r| a.row_start(r) <= i)
            .unwrap_or(0);
        let col = a.row(row).0.get(i - a.row_start(row)).copied().unwrap_or(0);
        return Err(Error::Numeric(format!(
            "{what}: entry ({row}, {col}) is {}; NMF needs finite non-negative values",
            bad_value(values[i])
        )));
    }
    let parts: Vec<(f32, usize, f64, f64)> = values
        .par_chunks(VALUES)
        .map(|chunk| {
            chunk
                .iter()
                .fold((0.0f32, 0usize, 0.0f64, 0.0f64), |(m, n, s, q), &x| {
                    (
                        m.max(x),
                        n + usize::from(x != 0.0),
                        s + f64::from(x),
                        q + f64::from(x) * f64::from(x),
                    )
                })
        })
        .collect();
    Ok(parts.iter().fold(
        Stats {
            max: 0.0,
            nnz: 0,
            sum: 0.0,
            sum_sq: 0.0,
        },
        |t, &(m, n, s, q)| Stats {
            max: t.max.max(m),
            nnz: t.nnz + n,
            sum: t.sum + s,
            sum_sq: t.sum_sq + q,
        },
    ))
}

/// Multiplies every entry by `2^e` (exact, barring overflow/underflow).
fn scale_by_pow2(m: &mut Matrix, e: i32) {
    if e == 0 {
        return;
    }
    let f = (e as f32).exp2();
    for x in m.as_mut_slice() {
        *x *= f;
    }
}

/// `√(mean(A)/K)`, scikit-learn's starting value for the free factor of a fixed-factor fit.
fn start_value(data: &Data<'_>, k: usize) -> f32 {
    let n = (data.rows() * data.cols()) as f64;
    let mean = data.sum / n;
    (mean / k as f64).sqrt() as f32
}

fn relative_error(data: &Data<'_>, u: &Matrix, v: &Matrix) -> f64 {
    if data.norm_sq == 0.0 {
        return 0.0;
    }
    (residual_sq(data, u, v) / data.norm_sq).sqrt()
}

/// Final checks and the energy order.
fn finish(
    mut u: Matrix,
    mut v: Matrix,
    iterations: usize,
    rel_error: f64,
    reorder: bool,
) -> Result<Factorization> {
    if u.as_slice()
        .iter()
        .chain(v.as_slice())
        .any(|x| !x.is_finite())
    {
        // Unreachable for validated input (see the module docs); refuse rather than return
        // NaN factors.
        return Err(Error::Numeric(
            "NMF produced non-finite factors (input magnitudes out of range)".into(),
        ));
    }
    if reorder {
        (u, v) = energy_order(&u, &v);
    }
    Ok(Factorization {
        u,
        v,
        iterations,
        rel_error,
    })
}

/// Permutes the factors by descending `‖U_k‖·‖V_k‖` (stable).
fn energy_order(u: &Matrix, v: &Matrix) -> (Matrix, Matrix) {
    let (p, k) = u.shape();
    let mut cn = vec![0.0f64; k];
    for r in 0..p {
        for (j, x) in u.row(r).iter().enumerate() {
            cn[j] += *x as f64 * *x as f64;
        }
    }
    let energy: Vec<f64> = (0..k)
        .map(|j| {
            let rn: f64 = v.row(j).iter().map(|x| *x as f64 * *x as f64).sum();
            (cn[j] * rn).sqrt()
        })
        .collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| energy[b].total_cmp(&energy[a]));
    if order.iter().enumerate().all(|(i, &j)| i == j) {
        return (u.clone(), v.clone());
    }
    let mut u2 = Matrix::zeros(p, k);
    let mut v2 = Matrix::zeros(k, v.cols());
    for (new, &old) in order.iter().enumerate() {
        for r in 0..p {
            u2.set(r, new, u.get(r, old));
        }
        v2.row_mut(new).copy_from_slice(v.row(old));
    }
    (u2, v2)
}

/// What is wrong with an entry NMF refuses: `NaN`, an infinity, or a negative value.
pub(crate) fn bad_value(x: f32) -> String {
    if x.is_nan() {
        "NaN".to_string()
    } else if x.is_infinite() {
        format!("{x}")
    } else {
        format!("negative ({x})")
    }
}
