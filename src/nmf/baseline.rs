//! Rank-`K` compressions of an activation matrix behind one interface, [`Compressor`]: NMF and
//! the baselines that the memorization probes compare it with.
//!
//! | compressor | `U` (`P × K`) | `V` (`K × C`) |
//! |---|---|---|
//! | [`Nmf`] | heatmaps (non-negative) | concepts (non-negative) |
//! | [`Pca`] | scores `(A − μ) Vᵀ` | principal axes (orthonormal rows) |
//! | [`KMeans`] | one-hot assignments | centroids |
//! | [`SphericalKMeans`] | `⟨a_p, v_k⟩` at the assigned `k`, else 0 | unit-norm centroids |
//! | [`RandomAblation`] | the kept channels of `A` | one-hot channel selectors |
//!
//! Every compressor is deterministic: the same input and configuration (seed included) give
//! the same output for any number of threads.

use super::Nmf;
use crate::linalg::truncated_svd;
use crate::{Error, Matrix, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Default iteration limit of the k-means variants.
pub const DEFAULT_KMEANS_MAX_ITER: usize = 100;
/// Default seed of the k-means++ seeding and of random ablation.
pub const DEFAULT_SEED: u64 = 0;
/// PCA centres the data by default (classic PCA); uncentred PCA is the truncated SVD.
pub const DEFAULT_PCA_CENTERED: bool = true;

/// A rank-`K` compression `A ≈ U·V (+ offset)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    /// `P × K` codes.
    pub u: Matrix,
    /// `K × C` dictionary.
    pub v: Matrix,
    /// A row added to every row of `U·V` (the column mean for centred PCA), or `None`.
    pub offset: Option<Vec<f32>>,
    /// `U·V (+ offset)`, `P × C`.
    pub reconstruction: Matrix,
    /// `‖A − reconstruction‖_F / ‖A‖_F` (`0` for an all-zero `A`).
    pub rel_error: f64,
}

/// Something that compresses an activation matrix to rank `K`.
pub trait Compressor {
    /// A short name for reports (`"nmf"`, `"pca"`, `"kmeans"`, …).
    fn name(&self) -> &'static str;
    /// The rank `K`.
    fn rank(&self) -> usize;
    /// Compresses `a` (`P × C`, finite; NMF also needs it non-negative).
    fn compress(&self, a: &Matrix) -> Result<Compressed>;
}

/// Builds the result from factors: reconstruction and relative error.
fn assemble(a: &Matrix, u: Matrix, v: Matrix, offset: Option<Vec<f32>>) -> Result<Compressed> {
    let mut reconstruction = u.matmul(&v)?;
    if let Some(mu) = &offset {
        for r in 0..reconstruction.rows() {
            for (x, m) in reconstruction.row_mut(r).iter_mut().zip(mu) {
                *x += *m;
            }
        }
    }
    let norm = a.frobenius_norm();
    let rel_error = if norm == 0.0 {
        0.0
    } else {
        let d: f64 = a
            .as_slice()
            .iter()
            .zip(reconstruction.as_slice())
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        d.sqrt() / norm
    };
    Ok(Compressed {
        u,
        v,
        offset,
        reconstruction,
        rel_error,
    })
}

/// Refuses empty input and non-finite entries.
fn check_finite(a: &Matrix, what: &str) -> Result<()> {
    if a.rows() == 0 || a.cols() == 0 {
        return Err(Error::invalid(format!(
            "{what}: input is empty ({}×{})",
            a.rows(),
            a.cols()
        )));
    }
    if let Some(i) = a.as_slice().iter().position(|x| !x.is_finite()) {
        return Err(Error::Numeric(format!(
            "{what}: entry ({}, {}) is {}",
            i / a.cols(),
            i % a.cols(),
            a.as_slice()[i]
        )));
    }
    Ok(())
}

fn check_rank(k: usize, what: &str) -> Result<()> {
    if k == 0 {
        return Err(Error::invalid(format!("{what}: rank K must be at least 1")));
    }
    Ok(())
}

impl Compressor for Nmf {
    fn name(&self) -> &'static str {
        "nmf"
    }

    fn rank(&self) -> usize {
        self.k()
    }

    fn compress(&self, a: &Matrix) -> Result<Compressed> {
        let f = self.fit(a)?;
        assemble(a, f.u, f.v, None)
    }
}

// ---------------------------------------------------------------------------------------------

/// Principal component analysis by truncated SVD (see [`crate::linalg::truncated_svd`]).
///
/// Centred (the default): `A ≈ 1·μᵀ + U V` with `μ` the column mean, `V` the top `K` principal
/// axes and `U = (A − 1·μᵀ) Vᵀ` the scores. Uncentred: the best rank-`K` approximation of `A`
/// (Eckart–Young), `U = A Vᵀ`. Each axis is signed so that its largest-magnitude entry is
/// positive; axes past the rank of the data are zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    k: usize,
    centered: bool,
}

/// Configuration of [`Pca`]; from [`Pca::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct PcaBuilder {
    k: usize,
    centered: bool,
}

impl Pca {
    /// PCA of rank `k` (default [`DEFAULT_PCA_CENTERED`]).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(k: usize) -> PcaBuilder {
        PcaBuilder {
            k,
            centered: DEFAULT_PCA_CENTERED,
        }
    }

    /// Whether the column mean is removed first.
    pub fn centered(&self) -> bool {
        self.centered
    }
}

impl PcaBuilder {
    /// Remove the column mean first (classic PCA) or not (truncated SVD).
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    /// Validates: `K ≥ 1`.
    pub fn build(self) -> Result<Pca> {
        check_rank(self.k, "PCA")?;
        Ok(Pca {
            k: self.k,
            centered: self.centered,
        })
    }
}

impl Compressor for Pca {
    fn name(&self) -> &'static str {
        "pca"
    }

    fn rank(&self) -> usize {
        self.k
    }

    fn compress(&self, a: &Matrix) -> Result<Compressed> {
        check_finite(a, "PCA")?;
        let (p, c) = a.shape();
        let (x, offset) = if self.centered {
            let mut mu = vec![0.0f64; c];
            for r in 0..p {
                for (m, v) in mu.iter_mut().zip(a.row(r)) {
                    *m += *v as f64;
                }
            }
            let mu: Vec<f32> = mu.iter().map(|m| (m / p as f64) as f32).collect();
            let mut x = a.clone();
            for r in 0..p {
                for (v, m) in x.row_mut(r).iter_mut().zip(&mu) {
                    *v -= *m;
                }
            }
            (x, Some(mu))
        } else {
            (a.clone(), None)
        };
        let svd = truncated_svd(&x, self.k)?;
        let mut v = svd.vt;
        for i in 0..self.k {
            let row = v.row_mut(i);
            let big =
                row.iter().enumerate().fold(
                    0usize,
                    |b, (j, x)| if x.abs() > row[b].abs() { j } else { b },
                );
            if row[big] < 0.0 {
                row.iter_mut().for_each(|x| *x = -*x);
            }
        }
        let u = x.matmul_t(&v)?;
        assemble(a, u, v, offset)
    }
}

// ---------------------------------------------------------------------------------------------

/// K-means (Lloyd's algorithm, k-means++ seeding from a ChaCha8 stream) with hard
/// assignments: `U` is one-hot, `V` holds the centroids, so `U·V` replaces each row by its
/// centroid. Stops when no assignment changes or after `max_iter` iterations. Ties go to the
/// lowest cluster index; a cluster left empty is moved to the row farthest from its centroid.
/// With fewer distinct rows than `K`, some centroids repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    k: usize,
    max_iter: usize,
    seed: u64,
}

/// Spherical k-means: rows are compared by cosine; centroids are unit vectors (the normalised
/// mean of their unit rows); row `p` is coded as `⟨a_p, v_k⟩` on its cluster `k`, the best
/// multiple of the centroid. All-zero rows join cluster 0 with coefficient 0. Seeding,
/// stopping and ties as in [`KMeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct SphericalKMeans {
    k: usize,
    max_iter: usize,
    seed: u64,
}

/// Configuration of [`KMeans`] and [`SphericalKMeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansBuilder<T> {
    k: usize,
    max_iter: usize,
    seed: u64,
    _kind: std::marker::PhantomData<T>,
}

impl KMeans {
    /// K-means with `k` clusters (defaults [`DEFAULT_KMEANS_MAX_ITER`], [`DEFAULT_SEED`]).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(k: usize) -> KMeansBuilder<KMeans> {
        KMeansBuilder {
            k,
            max_iter: DEFAULT_KMEANS_MAX_ITER,
            seed: DEFAULT_SEED,
            _kind: std::marker::PhantomData,
        }
    }
}

impl SphericalKMeans {
    /// Spherical k-means with `k` clusters (defaults as [`KMeans::new`]).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(k: usize) -> KMeansBuilder<SphericalKMeans> {
        KMeansBuilder {
            k,
            max_iter: DEFAULT_KMEANS_MAX_ITER,
            seed: DEFAULT_SEED,
            _kind: std::marker::PhantomData,
        }
    }
}

impl<T> KMeansBuilder<T> {
    /// Iteration limit.
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Seed of the k-means++ seeding.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl KMeansBuilder<KMeans> {
    /// Validates: `K ≥ 1`.
    pub fn build(self) -> Result<KMeans> {
        check_rank(self.k, "k-means")?;
        Ok(KMeans {
            k: self.k,
            max_iter: self.max_iter,
            seed: self.seed,
        })
    }
}

impl KMeansBuilder<SphericalKMeans> {
    /// Validates: `K ≥ 1`.
    pub fn build(self) -> Result<SphericalKMeans> {
        check_rank(self.k, "spherical k-means")?;
        Ok(SphericalKMeans {
            k: self.k,
            max_iter: self.max_iter,
            seed: self.seed,
        })
    }
}

impl Compressor for KMeans {
    fn name(&self) -> &'static str {
        "kmeans"
    }

    fn rank(&self) -> usize {
        self.k
    }

    fn compress(&self, a: &Matrix) -> Result<Compressed> {
        check_finite(a, "k-means")?;
        let (assign, centroids) = lloyd(a, self.k, self.max_iter, self.seed, false)?;
        let mut u = Matrix::zeros(a.rows(), self.k);
        for (r, &c) in assign.iter().enumerate() {
            u.set(r, c, 1.0);
        }
        assemble(a, u, centroids, None)
    }
}

impl Compressor for SphericalKMeans {
    fn name(&self) -> &'static str {
        "spherical-kmeans"
    }

    fn rank(&self) -> usize {
        self.k
    }

    fn compress(&self, a: &Matrix) -> Result<Compressed> {
        check_finite(a, "spherical k-means")?;
        let mut unit = a.clone();
        for r in 0..unit.rows() {
            normalize(unit.row_mut(r));
        }
        let (assign, centroids) = lloyd(&unit, self.k, self.max_iter, self.seed, true)?;
        let mut u = Matrix::zeros(a.rows(), self.k);
        for (r, &c) in assign.iter().enumerate() {
            let coef: f64 = a
                .row(r)
                .iter()
                .zip(centroids.row(c))
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum();
            u.set(r, c, coef as f32);
        }
        assemble(a, u, centroids, None)
    }
}

/// Scales `x` to unit L2 norm (a zero vector stays zero).
fn normalize(x: &mut [f32]) {
    let n = x.iter().map(|v| *v as f64 * *v as f64).sum::<f64>().sqrt();
    if n > 0.0 {
        x.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
    }
}

/// Squared distances (Euclidean) or `1 − cos` (spherical, unit rows) of every row to every
/// centroid, `P × K`, through one matrix product.
fn dissimilarities(x: &Matrix, centroids: &Matrix, spherical: bool) -> Result<Matrix> {
    let dots = x.matmul_t(centroids)?;
    let mut d = dots;
    if spherical {
        for v in d.as_mut_slice() {
            *v = 1.0 - *v;
        }
    } else {
        let xn: Vec<f32> = (0..x.rows())
            .map(|r| x.row(r).iter().map(|v| v * v).sum())
            .collect();
        let cn: Vec<f32> = (0..centroids.rows())
            .map(|r| centroids.row(r).iter().map(|v| v * v).sum())
            .collect();
        for (r, xr) in xn.iter().enumerate() {
            for (v, cj) in d.row_mut(r).iter_mut().zip(&cn) {
                *v = (xr - 2.0 * *v + cj).max(0.0);
            }
        }
    }
    Ok(d)
}

/// Index of the smallest entry (the first on ties).
fn argmin(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |b, (j, v)| if *v < row[b] { j } else { b })
}

/// Lloyd iterations from k-means++ seeds; returns assignments and centroids (`K × C`).
fn lloyd(
    x: &Matrix,
    k: usize,
    max_iter: usize,
    seed: u64,
    spherical: bool,
) -> Result<(Vec<usize>, Matrix)> {
    let (p, c) = x.shape();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // k-means++: first centre uniform, then proportional to the squared distance.
    let mut centroids = Matrix::zeros(k, c);
    let first = rng.random_range(0..p);
    centroids.row_mut(0).copy_from_slice(x.row(first));
    let mut best = vec![f32::INFINITY; p];
    for j in 1..k {
        let prev = Matrix::from_vec(1, c, centroids.row(j - 1).to_vec())?;
        let d = dissimilarities(x, &prev, spherical)?;
        for (b, v) in best.iter_mut().zip(d.as_slice()) {
            *b = b.min(*v);
        }
        let total: f64 = best.iter().map(|v| *v as f64).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            let mut pick = p - 1;
            for (i, v) in best.iter().enumerate() {
                target -= *v as f64;
                if target < 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            first
        };
        centroids.row_mut(j).copy_from_slice(x.row(pick));
    }
    let mut assign = vec![usize::MAX; p];
    for _ in 0..max_iter.max(1) {
        let d = dissimilarities(x, &centroids, spherical)?;
        let new: Vec<usize> = (0..p).map(|r| argmin(d.row(r))).collect();
        let changed = new != assign;
        assign = new;
        if !changed {
            break;
        }
        // Update: means of the members (f64, rows in order).
        let mut sums = vec![0.0f64; k * c];
        let mut counts = vec![0usize; k];
        for (r, &j) in assign.iter().enumerate() {
            counts[j] += 1;
            for (s, v) in sums[j * c..(j + 1) * c].iter_mut().zip(x.row(r)) {
                *s += *v as f64;
            }
        }
        for j in 0..k {
            if counts[j] > 0 {
                for (dst, s) in centroids.row_mut(j).iter_mut().zip(&sums[j * c..]) {
                    *dst = (s / counts[j] as f64) as f32;
                }
                if spherical {
                    normalize(centroids.row_mut(j));
                }
            } else {
                // Empty: take the row farthest from its own centroid.
                let far = (0..p).fold(0usize, |b, r| {
                    if d.get(r, assign[r]) > d.get(b, assign[b]) {
                        r
                    } else {
                        b
                    }
                });
                centroids.row_mut(j).copy_from_slice(x.row(far));
            }
        }
    }
    if spherical {
        // All-zero rows have no direction: cluster 0 (their coefficient is 0 anyway).
        for (r, a) in assign.iter_mut().enumerate() {
            if x.row(r).iter().all(|v| *v == 0.0) {
                *a = 0;
            }
        }
    }
    Ok((assign, centroids))
}

// ---------------------------------------------------------------------------------------------

/// Random ablation: keep `K` channels drawn without replacement from a ChaCha8 stream (listed
/// in ascending order), zero the others. `U = A[:, kept]`, `V` selects them back. With
/// `K ≥ C` every channel is kept and the factors past `C` are zero.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomAblation {
    k: usize,
    seed: u64,
}

/// Configuration of [`RandomAblation`].
#[derive(Debug, Clone, PartialEq)]
pub struct RandomAblationBuilder {
    k: usize,
    seed: u64,
}

impl RandomAblation {
    /// Keep `k` random channels (default seed [`DEFAULT_SEED`]).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(k: usize) -> RandomAblationBuilder {
        RandomAblationBuilder {
            k,
            seed: DEFAULT_SEED,
        }
    }

    /// The channels kept for `c` channels, ascending.
    pub fn channels(&self, c: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..c).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let keep = self.k.min(c);
        // Partial Fisher–Yates.
        for i in 0..keep {
            let j = rng.random_range(i..c);
            idx.swap(i, j);
        }
        let mut kept = idx[..keep].to_vec();
        kept.sort_unstable();
        kept
    }
}

impl RandomAblationBuilder {
    /// The seed of the channel draw.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates: `K ≥ 1`.
    pub fn build(self) -> Result<RandomAblation> {
        check_rank(self.k, "random ablation")?;
        Ok(RandomAblation {
            k: self.k,
            seed: self.seed,
        })
    }
}

impl Compressor for RandomAblation {
    fn name(&self) -> &'static str {
        "random-ablation"
    }

    fn rank(&self) -> usize {
        self.k
    }

    fn compress(&self, a: &Matrix) -> Result<Compressed> {
        check_finite(a, "random ablation")?;
        let (p, c) = a.shape();
        let kept = self.channels(c);
        let mut u = Matrix::zeros(p, self.k);
        let mut v = Matrix::zeros(self.k, c);
        for (i, &ch) in kept.iter().enumerate() {
            v.set(i, ch, 1.0);
            for r in 0..p {
                u.set(r, i, a.get(r, ch));
            }
        }
        assemble(a, u, v, None)
    }
}
