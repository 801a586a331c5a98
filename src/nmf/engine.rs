//! The CPU engine: Lee–Seung multiplicative updates on plain slices.
//!
//! One iteration, exactly as scikit-learn's `_fit_multiplicative_update` (Frobenius loss):
//!
//! ```text
//! U ← U ∘ (A Vᵀ) ⊘ (U (V Vᵀ))      then      V ← V ∘ (Uᵀ A) ⊘ ((Uᵀ U) V)
//! ```
//!
//! with every exactly-zero denominator replaced by `f32::EPSILON`. The update of `U` is
//! row-wise, so the engine walks `A` once per iteration in blocks of rows that fit in L2: for
//! each block it forms `A_b Vᵀ` and `U_b (V Vᵀ)`, updates `U_b`, and — while `A_b` is still in
//! cache — adds `U_bᵀ A_b` and `U_bᵀ U_b` into its chunk's partial sums. Chunks are fixed runs
//! of blocks (at most [`MAX_CHUNKS`], set by the shape alone) that run in parallel; their
//! partial sums are added in chunk order. Nothing depends on the number of threads, so the
//! factors are bit-for-bit the same on 1 or 64 threads, and the same whether an image is fitted
//! alone or inside a batch.
//!
//! Sparse `A` takes the same path with the two products against `A` done through its
//! non-zeros: `A_b Vᵀ` gathers rows of `Vᵀ` through the rows of `A` (CSR), and after the `U`
//! pass `(Uᵀ A)ᵀ` gathers rows of `U` through the columns of `A` (its transpose in CSR form);
//! gathers accumulate in registers, where scattering would chain loads and stores.
//!
//! From `K = 32` on, a dense iteration is compute-bound and the fused 128-row products use the
//! kernels poorly, so `Uᵀ A` and `Uᵀ U` are formed after the `U` pass as products whose long
//! reduction is split into fixed chunks (again summed in order).

use super::{Layout, Stats};
use crate::linalg::kernel::{self, gemm, View};
use crate::linalg::{par_gemm, par_gemm_split_k, sum_in_order, Csr};
use crate::{Matrix, Result};
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// What replaces an exactly-zero denominator (scikit-learn uses float32's epsilon for every
/// dtype).
pub(crate) const EPS: f32 = f32::EPSILON;
/// Upper bound on the number of row chunks (parallel tasks) per factorization.
const MAX_CHUNKS: usize = 16;
/// From this rank on, `Uᵀ A` and `Uᵀ U` of dense `A` are computed after the `U` pass as
/// reduction-split products rather than fused into it: the products are then compute-bound,
/// and a long reduction uses the kernel better than many 128-row ones.
const FUSE_BELOW_K: usize = 32;
/// Bytes of `A` per block of rows (sized for L2).
const BLOCK_BYTES: usize = 256 * 1024;
/// Below this relative error the cheap error formula loses too many digits to cancellation;
/// the convergence check then computes the residual directly.
const CHEAP_ERROR_FLOOR: f64 = 0.1;

/// Where `A`'s entries live.
pub(crate) enum Store<'a> {
    /// Dense.
    Dense(&'a Matrix),
    /// Through its non-zeros: `csr`, and its transpose `csc` (compressed sparse columns of
    /// `A`, for `Uᵀ A` by gathering). `dense` is the dense input the sparse form was made
    /// from, kept for the exact residual; `None` when `A` came sparse (no dense copy exists).
    Sparse {
        csr: Cow<'a, Csr>,
        csc: Csr,
        dense: Option<&'a Matrix>,
    },
}

/// `A` as the engine reads it.
pub(crate) struct Data<'a> {
    pub store: Store<'a>,
    rows: usize,
    cols: usize,
    /// `‖A‖²_F`, accumulated in `f64`.
    pub norm_sq: f64,
    /// `Σ A`, accumulated in `f64`.
    pub sum: f64,
    blocks: Vec<Range<usize>>,
    chunks: Vec<Range<usize>>,
}

impl<'a> Data<'a> {
    pub fn new(
        dense: &'a Matrix,
        stats: &Stats,
        layout: Layout,
        sparse_max_density: f64,
    ) -> Result<Data<'a>> {
        let (p, c) = dense.shape();
        let density = stats.nnz as f64 / (p * c).max(1) as f64;
        let sparse = match layout {
            Layout::Dense => false,
            Layout::Sparse => true,
            Layout::Auto => density <= sparse_max_density,
        };
        let store = if sparse {
            let csr = Csr::from_dense(dense)?;
            Store::Sparse {
                csc: csr.transpose(),
                csr: Cow::Owned(csr),
                dense: Some(dense),
            }
        } else {
            Store::Dense(dense)
        };
        Ok(Self::with_store(store, p, c, stats))
    }

    /// `A` given in sparse form only (no dense copy is made or kept).
    pub fn sparse(csr: &'a Csr, stats: &Stats) -> Data<'a> {
        let (p, c) = (csr.rows(), csr.cols());
        let store = Store::Sparse {
            csc: csr.transpose(),
            csr: Cow::Borrowed(csr),
            dense: None,
        };
        Self::with_store(store, p, c, stats)
    }

    fn with_store(store: Store<'a>, p: usize, c: usize, stats: &Stats) -> Data<'a> {
        let rows_per_block = (BLOCK_BYTES / 4 / c.max(1)).clamp(8, 512) / 8 * 8;
        let blocks: Vec<Range<usize>> = (0..p)
            .step_by(rows_per_block)
            .map(|r| r..(r + rows_per_block).min(p))
            .collect();
        let n = blocks.len();
        let s = n.min(MAX_CHUNKS);
        let chunks = (0..s).map(|i| (i * n / s)..((i + 1) * n / s)).collect();
        Data {
            store,
            rows: p,
            cols: c,
            norm_sq: stats.sum_sq,
            sum: stats.sum,
            blocks,
            chunks,
        }
    }

    /// The sparse form, when `A` is handled through its non-zeros.
    pub fn csr(&self) -> Option<&Csr> {
        match &self.store {
            Store::Sparse { csr, .. } => Some(csr),
            Store::Dense(_) => None,
        }
    }

    /// The dense entries, when they exist.
    pub fn dense(&self) -> Option<&Matrix> {
        match &self.store {
            Store::Sparse { dense, .. } => *dense,
            Store::Dense(d) => Some(d),
        }
    }

    /// `(Uᵀ A)ᵀ` (`C × K`) for sparse `A`: each channel gathers the rows of `U` where it is
    /// non-zero (independent outputs, in parallel over fixed channel blocks).
    fn sparse_ut_a_t(&self, u: &Matrix) -> Option<Matrix> {
        match &self.store {
            Store::Sparse { csc, .. } => Some(csc.mul_unchecked(u)),
            Store::Dense(_) => None,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row range of chunk `s`.
    fn chunk_rows(&self, s: usize) -> Range<usize> {
        let b = &self.chunks[s];
        if b.is_empty() {
            return 0..0;
        }
        self.blocks[b.start].start..self.blocks[b.end - 1].end
    }

    /// `A_b · X` for rows `rows` of `A` (`X` given as `xt = Xᵀ`, `k × C`, and when useful as
    /// `x`, `C × k`), into `out` (`rows × k`).
    fn mul_rows(&self, rows: Range<usize>, xt: &Matrix, x: Option<&Matrix>, out: &mut [f32]) {
        let k = xt.rows();
        match &self.store {
            Store::Sparse { csr, .. } => {
                // Sparse rows gather rows of X (C × k); every caller passes Vᵀ whenever the
                // layout is sparse, the transpose here is only a fallback.
                let owned;
                let x = match x {
                    Some(x) => x,
                    None => {
                        owned = xt.transpose();
                        &owned
                    }
                };
                csr.mul_rows_into(rows.start, x.as_slice(), k, out);
            }
            Store::Dense(dense) => {
                let a = dense.view().rows_range(rows.start, rows.len());
                match x {
                    Some(x) => gemm(out, k, a, x.view(), false),
                    None => gemm(out, k, a, xt.view().t(), false),
                }
            }
        }
    }
}

/// Scratch space of one chunk, reused across iterations.
struct Chunk {
    /// `Σ U_bᵀ A_b` (`K × C`), or its transpose (`C × K`) for sparse `A`.
    n: Vec<f32>,
    /// `Σ U_bᵀ U_b` (`K × K`).
    utu: Vec<f32>,
    num: Vec<f32>,
    den: Vec<f32>,
}

/// The engine state for one factorization.
pub(crate) struct Engine<'d, 'a> {
    data: &'d Data<'a>,
    k: usize,
    chunks: Vec<Chunk>,
    /// `Uᵀ A` (`K × C`) and `Uᵀ U` (`K × K`) of the last iteration.
    n: Vec<f32>,
    utu: Vec<f32>,
    /// `V Vᵀ` of the current `V`.
    g: Matrix,
    den_v: Vec<f32>,
}

impl<'d, 'a> Engine<'d, 'a> {
    pub fn new(data: &'d Data<'a>, k: usize) -> Self {
        let c = data.cols();
        let max_block = data.blocks.iter().map(|b| b.len()).max().unwrap_or(0);
        let chunks = data
            .chunks
            .iter()
            .map(|_| Chunk {
                // Partial sums are kept only where the pass accumulates them.
                n: if data.csr().is_none() && k < FUSE_BELOW_K {
                    vec![0.0; k * c]
                } else {
                    Vec::new()
                },
                utu: if k < FUSE_BELOW_K {
                    vec![0.0; k * k]
                } else {
                    Vec::new()
                },
                num: vec![0.0; max_block * k],
                den: vec![0.0; max_block * k],
            })
            .collect();
        Engine {
            data,
            k,
            chunks,
            n: vec![0.0; k * c],
            utu: vec![0.0; k * k],
            g: Matrix::zeros(k, k),
            den_v: vec![0.0; k * c],
        }
    }

    /// Sets `V Vᵀ` for the given `V`; call before the first [`Engine::iterate`].
    pub fn prepare(&mut self, v: &Matrix) {
        self.g = gram_rows(v);
    }

    /// One multiplicative update of `U` then `V`.
    pub fn iterate(&mut self, u: &mut Matrix, v: &mut Matrix) {
        self.update_u(u, v);
        self.update_v(v);
        self.g = gram_rows(v);
    }

    /// The `U` half-step; also gathers `Uᵀ A` and `Uᵀ U` (new `U`) for the `V` step.
    fn update_u(&mut self, u: &mut Matrix, v: &Matrix) {
        let data = self.data;
        let (k, c) = (self.k, data.cols());
        let sparse = data.csr().is_some();
        // Vᵀ (C × K) row-major: needed by the sparse gather and by the panel kernel when the
        // output is wide; the dot kernel reads V directly.
        let vt = (sparse || k >= crate::linalg::kernel::NARROW).then(|| v.transpose());
        let g = &self.g;
        let fused = k < FUSE_BELOW_K;
        // Hand each chunk its own rows of U.
        let mut rest = u.as_mut_slice();
        let mut u_parts = Vec::with_capacity(self.chunks.len());
        for s in 0..self.chunks.len() {
            let rows = data.chunk_rows(s);
            let (head, tail) = rest.split_at_mut(rows.len() * k);
            u_parts.push((rows, head));
            rest = tail;
        }
        self.chunks
            .par_iter_mut()
            .zip(u_parts.into_par_iter())
            .enumerate()
            .for_each(|(s, (ws, (chunk_rows, u_chunk)))| {
                ws.n.fill(0.0);
                ws.utu.fill(0.0);
                for b in data.chunks[s].clone() {
                    let rows = data.blocks[b].clone();
                    let nb = rows.len();
                    let off = (rows.start - chunk_rows.start) * k;
                    let ub = &mut u_chunk[off..off + nb * k];
                    let num = &mut ws.num[..nb * k];
                    let den = &mut ws.den[..nb * k];
                    data.mul_rows(rows.clone(), v, vt.as_ref(), num);
                    gemm(den, k, View::row_major(ub, nb, k, k), g.view(), false);
                    mu_update(ub, num, den);
                    let ubv = View::row_major(ub, nb, k, k);
                    if let (Store::Dense(dense), true) = (&data.store, fused) {
                        gemm(
                            &mut ws.n,
                            c,
                            ubv.t(),
                            dense.view().rows_range(rows.start, nb),
                            true,
                        );
                    }
                    if fused {
                        gemm(&mut ws.utu, k, ubv.t(), ubv, true);
                    }
                }
            });
        let parts_n: Vec<&[f32]> = self.chunks.iter().map(|w| &w.n[..]).collect();
        if fused {
            let parts_utu: Vec<&[f32]> = self.chunks.iter().map(|w| &w.utu[..]).collect();
            sum_in_order(&mut self.utu, &parts_utu);
        } else {
            par_gemm_split_k(&mut self.utu, u.view().t(), u.view());
        }
        if let Some(nt) = data.sparse_ut_a_t(u) {
            // Nᵀ (C × K) into N (K × C).
            for ci in 0..c {
                for ki in 0..k {
                    self.n[ki * c + ci] = nt.get(ci, ki);
                }
            }
        } else if fused {
            sum_in_order(&mut self.n, &parts_n);
        } else if let Store::Dense(dense) = &data.store {
            par_gemm_split_k(&mut self.n, u.view().t(), dense.view());
        }
    }

    /// The `V` half-step from the `Uᵀ A`, `Uᵀ U` gathered by the last [`Engine::update_u`].
    fn update_v(&mut self, v: &mut Matrix) {
        let k = self.k;
        let utu = View::row_major(&self.utu, k, k, k);
        par_gemm(&mut self.den_v, utu, v.view());
        mu_update(v.as_mut_slice(), &self.n, &self.den_v);
    }

    /// `‖A − UV‖²` from the quantities of the last iteration (`‖A‖² − 2⟨UᵀA, V⟩ +
    /// ⟨UᵀU, VVᵀ⟩`), or `None` where that formula cancels too badly to trust.
    pub fn cheap_error_sq(&self, v: &Matrix) -> Option<f64> {
        cheap_error(
            self.data.norm_sq,
            &self.n,
            v.as_slice(),
            &self.utu,
            self.g.as_slice(),
        )
    }
}

/// `x ← x ∘ num ⊘ den`, a zero denominator counting as [`EPS`].
#[inline]
pub(crate) fn mu_update(x: &mut [f32], num: &[f32], den: &[f32]) {
    kernel::mu_update(x, num, den, EPS)
}

/// `X Xᵀ` for the rows of `x`.
pub(crate) fn gram_rows(x: &Matrix) -> Matrix {
    let mut g = Matrix::zeros(x.rows(), x.rows());
    par_gemm(g.as_mut_slice(), x.view(), x.view().t());
    g
}

/// `‖A − UV‖²_F` computed entry by entry over the same fixed blocks: differences in `f32`,
/// each row's squares summed in SIMD lanes, rows and blocks added in `f64`.
pub(crate) fn residual_sq(data: &Data<'_>, u: &Matrix, v: &Matrix) -> f64 {
    let (c, k) = (data.cols(), v.rows());
    let dense = match &data.store {
        Store::Dense(d) | Store::Sparse { dense: Some(d), .. } => *d,
        Store::Sparse {
            csr, dense: None, ..
        } => return sparse_residual_sq(data, csr, u, v),
    };
    let partials: Vec<f64> = (0..data.chunks.len())
        .into_par_iter()
        .map(|s| {
            let mut total = 0.0f64;
            let mut uv = Vec::new();
            for b in data.chunks[s].clone() {
                let rows = data.blocks[b].clone();
                uv.resize(rows.len() * c, 0.0);
                let ub = View::row_major(
                    &u.as_slice()[rows.start * k..rows.end * k],
                    rows.len(),
                    k,
                    k,
                );
                gemm(&mut uv, c, ub, v.view(), false);
                let a = &dense.as_slice()[rows.start * c..rows.end * c];
                total += kernel::sum_sq_diff(a, &uv, c);
            }
            total
        })
        .collect();
    partials.iter().sum()
}

/// `(Uᵀ A, Uᵀ U)` over the fixed chunks, partial sums added in chunk order.
fn ut_a(data: &Data<'_>, u: &Matrix) -> (Vec<f32>, Vec<f32>) {
    let (c, k) = (data.cols(), u.cols());
    let mut utu = vec![0.0f32; k * k];
    par_gemm_split_k(&mut utu, u.view().t(), u.view());
    let mut n = vec![0.0f32; k * c];
    match data.sparse_ut_a_t(u) {
        Some(nt) => {
            for ci in 0..c {
                for ki in 0..k {
                    n[ki * c + ci] = nt.get(ci, ki);
                }
            }
        }
        None => {
            if let Store::Dense(dense) = &data.store {
                par_gemm_split_k(&mut n, u.view().t(), dense.view());
            }
        }
    }
    (n, utu)
}

/// `‖A − UV‖²_F` for `A` held sparse only: `Σ_nz (a − (UV)_pc)² + (‖UV‖² − Σ_nz (UV)²_pc)`,
/// the second term being the fit's mass on the zero entries (`‖UV‖² = ⟨UᵀU, VVᵀ⟩`). Sums in
/// `f64` over the same fixed chunks.
fn sparse_residual_sq(data: &Data<'_>, csr: &Csr, u: &Matrix, v: &Matrix) -> f64 {
    let k = v.rows();
    let vt = v.transpose();
    let partials: Vec<(f64, f64)> = (0..data.chunks.len())
        .into_par_iter()
        .map(|s| {
            let (mut on_nz, mut fit_nz) = (0.0f64, 0.0f64);
            for r in data.chunk_rows(s) {
                let ur = &u.as_slice()[r * k..r * k + k];
                let (idx, val) = csr.row(r);
                for (&col, &a) in idx.iter().zip(val) {
                    let vc = &vt.as_slice()[col as usize * k..col as usize * k + k];
                    let f: f64 = ur
                        .iter()
                        .zip(vc)
                        .map(|(x, y)| f64::from(*x) * f64::from(*y))
                        .sum();
                    on_nz += (f64::from(a) - f) * (f64::from(a) - f);
                    fit_nz += f * f;
                }
            }
            (on_nz, fit_nz)
        })
        .collect();
    let (on_nz, fit_nz) = partials
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let mut utu = Matrix::zeros(k, k);
    par_gemm(utu.as_mut_slice(), u.view().t(), u.view());
    let g = gram_rows(v);
    let fit_all: f64 = utu
        .as_slice()
        .iter()
        .zip(g.as_slice())
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    on_nz + (fit_all - fit_nz).max(0.0)
}

/// `‖A‖² − 2⟨X, Y⟩ + ⟨P, Q⟩` in `f64`, or `None` below the cancellation floor.
fn cheap_error(norm_sq: f64, x: &[f32], y: &[f32], p: &[f32], q: &[f32]) -> Option<f64> {
    let dot =
        |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(s, t)| *s as f64 * *t as f64).sum() };
    let e = (norm_sq - 2.0 * dot(x, y) + dot(p, q)).max(0.0);
    (e >= CHEAP_ERROR_FLOOR * CHEAP_ERROR_FLOOR * norm_sq).then_some(e)
}

/// The stopping rule shared by the fixed-factor fits (see [`super::Nmf`]).
struct Stopper {
    tol: f64,
    initial: f64,
    previous: f64,
}

impl Stopper {
    fn new(tol: f64, initial_sq: impl FnOnce() -> f64) -> Self {
        let initial = if tol > 0.0 { initial_sq().sqrt() } else { 0.0 };
        Stopper {
            tol,
            initial,
            previous: initial,
        }
    }

    fn due(&self, it: usize) -> bool {
        self.tol > 0.0 && it.is_multiple_of(super::CHECK_EVERY)
    }

    /// Whether to stop, given the error after a due iteration.
    fn stop(&mut self, err_sq: f64) -> bool {
        let err = err_sq.sqrt();
        if self.initial == 0.0 || (self.previous - err) / self.initial < self.tol {
            return true;
        }
        self.previous = err;
        false
    }
}

/// Multiplicative updates of `U` alone (`V` fixed); returns the iterations done.
pub(crate) fn fit_u_fixed_v(
    data: &Data<'_>,
    u: &mut Matrix,
    v: &Matrix,
    max_iter: usize,
    tol: f64,
) -> usize {
    let k = v.rows();
    let vt = v.transpose();
    let g = gram_rows(v);
    // A·Vᵀ once (P × K), over the fixed blocks.
    let mut num = Matrix::zeros(data.rows(), k);
    {
        let mut rest = num.as_mut_slice();
        let mut parts = Vec::new();
        for b in &data.blocks {
            let (head, tail) = rest.split_at_mut(b.len() * k);
            parts.push((b.clone(), head));
            rest = tail;
        }
        parts
            .into_par_iter()
            .for_each(|(rows, out)| data.mul_rows(rows, v, Some(&vt), out));
    }
    let mut stopper = Stopper::new(tol, || residual_sq(data, u, v));
    let mut den = vec![0.0f32; u.as_slice().len()];
    for it in 1..=max_iter {
        let blocks: Vec<_> = data.blocks.clone();
        u.as_mut_slice()
            .par_chunks_mut(data.blocks[0].len() * k)
            .zip(den.par_chunks_mut(data.blocks[0].len() * k))
            .zip(num.as_slice().par_chunks(data.blocks[0].len() * k))
            .zip(blocks.into_par_iter())
            .for_each(|(((ub, db), nb), rows)| {
                gemm(
                    db,
                    k,
                    View::row_major(ub, rows.len(), k, k),
                    g.view(),
                    false,
                );
                mu_update(ub, nb, db);
            });
        if stopper.due(it) {
            let mut utu = Matrix::zeros(k, k);
            par_gemm(utu.as_mut_slice(), u.view().t(), u.view());
            let e = cheap_error(
                data.norm_sq,
                num.as_slice(),
                u.as_slice(),
                utu.as_slice(),
                g.as_slice(),
            )
            .unwrap_or_else(|| residual_sq(data, u, v));
            if stopper.stop(e) {
                return it;
            }
        }
    }
    max_iter
}

/// Multiplicative updates of `V` alone (`U` fixed); returns the iterations done.
pub(crate) fn fit_v_fixed_u(
    data: &Data<'_>,
    u: &Matrix,
    v: &mut Matrix,
    max_iter: usize,
    tol: f64,
) -> usize {
    let k = u.cols();
    let (n, utu) = ut_a(data, u);
    let utu_v = View::row_major(&utu, k, k, k);
    let mut den = vec![0.0f32; v.as_slice().len()];
    let mut stopper = Stopper::new(tol, || residual_sq(data, u, v));
    for it in 1..=max_iter {
        par_gemm(&mut den, utu_v, v.view());
        mu_update(v.as_mut_slice(), &n, &den);
        if stopper.due(it) {
            let g = gram_rows(v);
            let e = cheap_error(data.norm_sq, &n, v.as_slice(), &utu, g.as_slice())
                .unwrap_or_else(|| residual_sq(data, u, v));
            if stopper.stop(e) {
                return it;
            }
        }
    }
    max_iter
}
