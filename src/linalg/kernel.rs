//! Single-threaded `f32` matrix-product kernels in safe Rust.
//!
//! These kernels serve the many small and narrow products of NMF and the descriptors, in safe
//! Rust: `pulp`'s SIMD abstraction compiles each kernel once per instruction set (AVX2+FMA,
//! NEON, scalar) and picks one at run time ([`dispatch`]). The convolutions' large products go to the
//! `gemm` crate through `blas.rs`, the one place that calls it.
//!
//! Two kernels cover every product the crate needs:
//! - [`gemm`]: `out (+)= L·R` with `L` of any strides and `R` row-major. `L` is packed into
//!   panels of [`MR`] rows; an `MR × NR·lanes` register tile accumulates broadcast(L)·R rows.
//! - the dot-product kernel behind [`gemm`] when the output is narrow (`n < NARROW`) and both
//!   operands run along the reduction dimension (`out = X·Yᵀ`, rows of X and Y contiguous):
//!   a few rows of X against a few rows of Y, vectorised along the reduction.
//!
//! Every output element is reduced in an order that depends only on the shapes, never on
//! threads: callers split work by output rows, which leaves each element's sum untouched.

use pulp::{Arch, Simd, WithSimd};

/// Reduction block: the R panel (`KC × NR·lanes`) stays in L1.
const KC: usize = 256;
/// Rows of L packed at once (the packed block stays in L2).
const MC: usize = 96;
/// Outputs narrower than this use the dot-product kernel when `L` is row-major …
pub(crate) const NARROW: usize = 32;
/// … and the reduction is at least this long.
const DOT_MIN_K: usize = 64;

/// A read-only strided view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` view with row stride `ld`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Rows `r0..r0 + n`.
    pub fn rows_range(self, r0: usize, n: usize) -> Self {
        let start = (r0 * self.rs).min(self.data.len());
        View {
            data: &self.data[start..],
            rows: n,
            ..self
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// `out = L·R` (or `out += L·R` when `accumulate`), `out` row-major with row stride `ld_out`.
///
/// Panics only on inconsistent shapes, which the crate's callers rule out.
pub(crate) fn gemm(out: &mut [f32], ld_out: usize, lhs: View<'_>, rhs: View<'_>, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "gemm: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                out[i * ld_out..i * ld_out + n].fill(0.0);
            }
        }
        return;
    }
    if n < NARROW && k >= DOT_MIN_K && lhs.cs == 1 {
        // Dot products of rows of L with columns of R (rows of Rᵀ).
        let tmp;
        let y = if rhs.rs == 1 {
            rhs.t()
        } else {
            tmp = copy_row_major(rhs.t());
            View::row_major(&tmp, n, k, k)
        };
        dispatch(DotKernel {
            out,
            ld_out,
            x: lhs,
            y,
            accumulate,
        });
    } else {
        let tmp;
        let rhs = if rhs.cs == 1 {
            rhs
        } else {
            tmp = copy_row_major(rhs);
            View::row_major(&tmp, k, n, n)
        };
        dispatch(PanelKernel {
            out,
            ld_out,
            lhs,
            rhs,
            accumulate,
        });
    }
}

/// A copy of `R` in the layout that [`gemm`] would otherwise make on every call for this
/// product: `Rᵀ` row-major for the dot kernel (when `R` is not already column-contiguous),
/// or `R` row-major for the panel kernel (when it is not already). `None` when `R` fits;
/// otherwise the copy and whether it holds `Rᵀ`.
pub(crate) fn preferred_rhs(lhs: View<'_>, rhs: View<'_>) -> Option<(Vec<f32>, bool)> {
    let (k, n) = (lhs.cols, rhs.cols);
    if n < NARROW && k >= DOT_MIN_K && lhs.cs == 1 {
        (rhs.rs != 1).then(|| (copy_row_major(rhs.t()), true))
    } else {
        (rhs.cs != 1).then(|| (copy_row_major(rhs), false))
    }
}

fn copy_row_major(v: View<'_>) -> Vec<f32> {
    let mut tmp = Vec::with_capacity(v.rows * v.cols);
    for i in 0..v.rows {
        for j in 0..v.cols {
            tmp.push(v.at(i, j));
        }
    }
    tmp
}

struct PanelKernel<'a, 'b> {
    out: &'a mut [f32],
    ld_out: usize,
    lhs: View<'b>,
    rhs: View<'b>,
    accumulate: bool,
}

impl WithSimd for PanelKernel<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        // The register tile (MR rows × NRV vectors) by the height of the output, so that short
        // outputs (K × C products at small K) waste no rows. Every shape computes each output
        // element by the same chain of fused multiply-adds.
        match self.lhs.rows {
            1 => panel::<S, 1, 4>(simd, self),
            2 => panel::<S, 2, 4>(simd, self),
            3 | 4 => panel::<S, 4, 2>(simd, self),
            7 | 8 => panel::<S, 8, 1>(simd, self),
            _ => panel::<S, 6, 2>(simd, self),
        }
    }
}

#[inline(always)]
fn panel<S: Simd, const MR: usize, const NRV: usize>(simd: S, kernel: PanelKernel<'_, '_>) {
    let PanelKernel {
        out,
        ld_out,
        lhs,
        rhs,
        accumulate,
    } = kernel;
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let lanes = S::F32_LANES;
    let nr = NRV * lanes;
    let mut lpack = vec![0.0f32; MC.min(m.div_ceil(MR) * MR) * KC.min(k)];
    let mut rpad = vec![0.0f32; KC.min(k) * nr];
    let mut tile = vec![0.0f32; MR * nr];
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let overwrite = pc == 0 && !accumulate;
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            let panels = mc.div_ceil(MR);
            // Pack L[ic.., pc..] as panels of MR rows, t-major inside a panel, walking L along
            // its contiguous direction.
            for p in 0..panels {
                let dst = &mut lpack[p * kc * MR..(p + 1) * kc * MR];
                let rows = MR.min(mc - p * MR);
                if lhs.cs == 1 {
                    for r in 0..MR {
                        if r < rows {
                            let base = (ic + p * MR + r) * lhs.rs + pc;
                            for (t, x) in lhs.data[base..base + kc].iter().enumerate() {
                                dst[t * MR + r] = *x;
                            }
                        } else {
                            for t in 0..kc {
                                dst[t * MR + r] = 0.0;
                            }
                        }
                    }
                } else {
                    for (t, d) in dst.chunks_exact_mut(MR).enumerate() {
                        for (r, x) in d.iter_mut().enumerate() {
                            *x = if r < rows {
                                lhs.at(ic + p * MR + r, pc + t)
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
            for jc in (0..n).step_by(nr) {
                let nc = nr.min(n - jc);
                // The R panel: read in place when full, otherwise a zero-padded copy.
                let (rdata, roff, rld) = if nc == nr {
                    (rhs.data, pc * rhs.rs + jc, rhs.rs)
                } else {
                    for t in 0..kc {
                        let src = (pc + t) * rhs.rs + jc;
                        let row = &mut rpad[t * nr..(t + 1) * nr];
                        row[..nc].copy_from_slice(&rhs.data[src..src + nc]);
                        row[nc..].fill(0.0);
                    }
                    (&rpad[..], 0, nr)
                };
                for p in 0..panels {
                    let acc = micro::<S, MR, NRV>(
                        simd,
                        &lpack[p * kc * MR..(p + 1) * kc * MR],
                        rdata,
                        roff,
                        rld,
                        kc,
                    );
                    for (r, row) in acc.iter().enumerate() {
                        let dst = &mut tile[r * nr..(r + 1) * nr];
                        let (head, _) = S::as_mut_simd_f32s(dst);
                        for (h, a) in head.iter_mut().zip(row.iter()) {
                            *h = *a;
                        }
                    }
                    let rows = MR.min(mc - p * MR);
                    for r in 0..rows {
                        let i = ic + p * MR + r;
                        let o = &mut out[i * ld_out + jc..i * ld_out + jc + nc];
                        let src = &tile[r * nr..r * nr + nc];
                        if overwrite {
                            o.copy_from_slice(src);
                        } else {
                            for (x, y) in o.iter_mut().zip(src) {
                                *x += *y;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The register tile: `MR × NRV` vectors, `acc[r][v] = Σ_t L[t][r] · R[t][v·lanes..]`.
#[inline(always)]
fn micro<S: Simd, const MR: usize, const NRV: usize>(
    simd: S,
    lpanel: &[f32],
    rdata: &[f32],
    roff: usize,
    rld: usize,
    kc: usize,
) -> [[S::f32s; NRV]; MR] {
    let nr = NRV * S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; NRV]; MR];
    for (t, a) in lpanel.chunks_exact(MR).take(kc).enumerate() {
        let start = roff + t * rld;
        let (b, _) = S::as_simd_f32s(&rdata[start..start + nr]);
        let bv: [S::f32s; NRV] = core::array::from_fn(|v| b[v]);
        for r in 0..MR {
            let ar = simd.splat_f32s(a[r]);
            for v in 0..NRV {
                acc[r][v] = simd.mul_add_f32s(ar, bv[v], acc[r][v]);
            }
        }
    }
    acc
}

/// `out = X·Yᵀ` for narrow outputs: rows of X and Y are contiguous along the reduction.
struct DotKernel<'a, 'b> {
    out: &'a mut [f32],
    ld_out: usize,
    x: View<'b>,
    y: View<'b>,
    accumulate: bool,
}

impl WithSimd for DotKernel<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let DotKernel {
            out,
            ld_out,
            x,
            y,
            accumulate,
        } = self;
        let (m, n, k) = (x.rows, y.rows, x.cols);
        let xrow = |i: usize| &x.data[i * x.rs..i * x.rs + k];
        let yrow = |j: usize| &y.data[j * y.rs..j * y.rs + k];
        let mut i = 0;
        while i < m {
            let mut j = 0;
            if n >= 8 {
                // One row of X against eight rows of Y: X is read once.
                while j + 8 <= n {
                    let ys = [
                        yrow(j),
                        yrow(j + 1),
                        yrow(j + 2),
                        yrow(j + 3),
                        yrow(j + 4),
                        yrow(j + 5),
                        yrow(j + 6),
                        yrow(j + 7),
                    ];
                    let d = dots::<S, 1, 8>(simd, [xrow(i)], ys);
                    store(out, ld_out, i, j, &d, accumulate);
                    j += 8;
                }
                while j < n {
                    let d = dots::<S, 1, 1>(simd, [xrow(i)], [yrow(j)]);
                    store(out, ld_out, i, j, &d, accumulate);
                    j += 1;
                }
                i += 1;
            } else if i + 2 <= m {
                while j + 4 <= n {
                    let d = dots::<S, 2, 4>(
                        simd,
                        [xrow(i), xrow(i + 1)],
                        [yrow(j), yrow(j + 1), yrow(j + 2), yrow(j + 3)],
                    );
                    store(out, ld_out, i, j, &d, accumulate);
                    j += 4;
                }
                while j < n {
                    let d = dots::<S, 2, 1>(simd, [xrow(i), xrow(i + 1)], [yrow(j)]);
                    store(out, ld_out, i, j, &d, accumulate);
                    j += 1;
                }
                i += 2;
            } else {
                while j + 4 <= n {
                    let d = dots::<S, 1, 4>(
                        simd,
                        [xrow(i)],
                        [yrow(j), yrow(j + 1), yrow(j + 2), yrow(j + 3)],
                    );
                    store(out, ld_out, i, j, &d, accumulate);
                    j += 4;
                }
                while j < n {
                    let d = dots::<S, 1, 1>(simd, [xrow(i)], [yrow(j)]);
                    store(out, ld_out, i, j, &d, accumulate);
                    j += 1;
                }
                i += 1;
            }
        }
    }
}

#[inline(always)]
fn store<const R: usize, const C: usize>(
    out: &mut [f32],
    ld: usize,
    i: usize,
    j: usize,
    d: &[[f32; C]; R],
    accumulate: bool,
) {
    for (r, row) in d.iter().enumerate() {
        let o = &mut out[(i + r) * ld + j..(i + r) * ld + j + C];
        if accumulate {
            for (a, b) in o.iter_mut().zip(row) {
                *a += *b;
            }
        } else {
            o.copy_from_slice(row);
        }
    }
}

/// `R × C` dot products of the given rows (all of one length).
#[inline(always)]
fn dots<S: Simd, const R: usize, const C: usize>(
    simd: S,
    xs: [&[f32]; R],
    ys: [&[f32]; C],
) -> [[f32; C]; R] {
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; C]; R];
    let xh = xs.map(|s| S::as_simd_f32s(s));
    let yh = ys.map(|s| S::as_simd_f32s(s));
    let len = xh[0].0.len();
    // Equal lengths let the compiler drop the bounds checks in the loop.
    for h in &xh {
        assert_eq!(h.0.len(), len);
    }
    for h in &yh {
        assert_eq!(h.0.len(), len);
    }
    for t in 0..len {
        let yv: [S::f32s; C] = core::array::from_fn(|c| yh[c].0[t]);
        for r in 0..R {
            let xv = xh[r].0[t];
            for c in 0..C {
                acc[r][c] = simd.mul_add_f32s(xv, yv[c], acc[r][c]);
            }
        }
    }
    let mut res = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            let mut s = simd.reduce_sum_f32s(acc[r][c]);
            for (a, b) in xh[r].1.iter().zip(yh[c].1) {
                s = a.mul_add(*b, s);
            }
            res[r][c] = s;
        }
    }
    res
}

/// `y += a·x` (same lengths), vectorised.
#[inline(always)]
fn axpy<S: Simd>(simd: S, a: f32, x: &[f32], y: &mut [f32]) {
    let av = simd.splat_f32s(a);
    let (xh, xt) = S::as_simd_f32s(x);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    for (yv, xv) in yh.iter_mut().zip(xh) {
        *yv = simd.mul_add_f32s(av, *xv, *yv);
    }
    for (yv, xv) in yt.iter_mut().zip(xt) {
        *yv = a.mul_add(*xv, *yv);
    }
}

/// `x ← x ∘ num ⊘ den`, an exactly-zero denominator counting as `eps` (the multiplicative
/// update of NMF).
pub(crate) fn mu_update(x: &mut [f32], num: &[f32], den: &[f32], eps: f32) {
    struct Op<'a> {
        x: &'a mut [f32],
        num: &'a [f32],
        den: &'a [f32],
        eps: f32,
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) {
            // A plain loop: compiled inside the target-feature function, LLVM vectorises it.
            for ((x, n), d) in self.x.iter_mut().zip(self.num).zip(self.den) {
                let d = if *d == 0.0 { self.eps } else { *d };
                *x *= *n / d;
            }
        }
    }
    dispatch(Op { x, num, den, eps })
}

/// Sparse rows times a dense matrix: for each row `i` of the CSR slices (`indptr` relative
/// offsets into `indices`/`values`), `out[i] = Σ values[e] · x[indices[e]]` where `x` has rows
/// of length `k`.
pub(crate) fn csr_gather(
    indptr: &[usize],
    indices: &[u32],
    values: &[f32],
    x: &[f32],
    k: usize,
    out: &mut [f32],
) {
    struct Op<'a> {
        indptr: &'a [usize],
        indices: &'a [u32],
        values: &'a [f32],
        x: &'a [f32],
        k: usize,
        out: &'a mut [f32],
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let Op {
                indptr,
                indices,
                values,
                x,
                k,
                out,
            } = self;
            let lanes = S::F32_LANES;
            if k % lanes == 0 {
                // Rows of X are whole vectors: index them as such (one bounds check per entry).
                let kv = k / lanes;
                let (xv, _) = S::as_simd_f32s(x);
                let (ov, _) = S::as_mut_simd_f32s(out);
                for (i, o) in ov.chunks_exact_mut(kv).enumerate() {
                    let range = indptr[i]..indptr[i + 1];
                    if kv == 1 {
                        // Four independent chains hide the latency of the fused multiply-add.
                        let zero = simd.splat_f32s(0.0);
                        let mut acc = [zero; 4];
                        let (idx, val) = (&indices[range.clone()], &values[range]);
                        let (i4, it) = idx.split_at(idx.len() / 4 * 4);
                        let (v4, vt) = val.split_at(i4.len());
                        for (cs, vs) in i4.chunks_exact(4).zip(v4.chunks_exact(4)) {
                            for j in 0..4 {
                                let x = xv[cs[j] as usize];
                                acc[j] = simd.mul_add_f32s(simd.splat_f32s(vs[j]), x, acc[j]);
                            }
                        }
                        for (&c, &v) in it.iter().zip(vt) {
                            acc[0] = simd.mul_add_f32s(simd.splat_f32s(v), xv[c as usize], acc[0]);
                        }
                        let left = simd.add_f32s(acc[0], acc[1]);
                        o[0] = simd.add_f32s(left, simd.add_f32s(acc[2], acc[3]));
                    } else if kv <= 4 {
                        let (idx, val) = (&indices[range.clone()], &values[range]);
                        match kv {
                            2 => gather_row::<S, 2>(simd, idx, val, xv, o),
                            3 => gather_row::<S, 3>(simd, idx, val, xv, o),
                            _ => gather_row::<S, 4>(simd, idx, val, xv, o),
                        }
                    } else {
                        o.fill(simd.splat_f32s(0.0));
                        for (&c, &v) in indices[range.clone()].iter().zip(&values[range]) {
                            let vv = simd.splat_f32s(v);
                            let xr = &xv[c as usize * kv..c as usize * kv + kv];
                            for (a, b) in o.iter_mut().zip(xr) {
                                *a = simd.mul_add_f32s(vv, *b, *a);
                            }
                        }
                    }
                }
            } else if k == 1 {
                for (i, o) in out.iter_mut().enumerate() {
                    let idx = &indices[indptr[i]..indptr[i + 1]];
                    let val = &values[indptr[i]..indptr[i + 1]];
                    let mut acc = [0.0f32; 4];
                    let (i4, it) = idx.split_at(idx.len() / 4 * 4);
                    let (v4, vt) = val.split_at(i4.len());
                    for (cs, vs) in i4.chunks_exact(4).zip(v4.chunks_exact(4)) {
                        for j in 0..4 {
                            acc[j] = vs[j].mul_add(x[cs[j] as usize], acc[j]);
                        }
                    }
                    for (&c, &v) in it.iter().zip(vt) {
                        acc[0] = v.mul_add(x[c as usize], acc[0]);
                    }
                    *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
                }
            } else {
                for (i, o) in out.chunks_exact_mut(k).enumerate() {
                    o.fill(0.0);
                    let range = indptr[i]..indptr[i + 1];
                    for (&c, &v) in indices[range.clone()].iter().zip(&values[range]) {
                        let c = c as usize;
                        axpy(simd, v, &x[c * k..c * k + k], o);
                    }
                }
            }
        }
    }
    dispatch(Op {
        indptr,
        indices,
        values,
        x,
        k,
        out,
    })
}

/// One sparse row times rows of `KV` vectors, accumulated in registers (two interleaved
/// sets of chains to hide the multiply-add latency).
#[inline(always)]
fn gather_row<S: Simd, const KV: usize>(
    simd: S,
    idx: &[u32],
    val: &[f32],
    xv: &[S::f32s],
    o: &mut [S::f32s],
) {
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; KV]; 2];
    let (i2, it) = idx.split_at(idx.len() / 2 * 2);
    let (v2, vt) = val.split_at(i2.len());
    for (cs, vs) in i2.chunks_exact(2).zip(v2.chunks_exact(2)) {
        for h in 0..2 {
            let c = cs[h] as usize * KV;
            let row = &xv[c..c + KV];
            let vv = simd.splat_f32s(vs[h]);
            for j in 0..KV {
                acc[h][j] = simd.mul_add_f32s(vv, row[j], acc[h][j]);
            }
        }
    }
    for (&c, &v) in it.iter().zip(vt) {
        let c = c as usize * KV;
        let row = &xv[c..c + KV];
        let vv = simd.splat_f32s(v);
        for j in 0..KV {
            acc[0][j] = simd.mul_add_f32s(vv, row[j], acc[0][j]);
        }
    }
    for j in 0..KV {
        o[j] = simd.add_f32s(acc[0][j], acc[1][j]);
    }
}

/// The transpose product, scattered: for each sparse row `i`, `out[indices[e]] += values[e] ·
/// u[i]` where `u` and `out` have rows of length `k`.
pub(crate) fn csr_scatter(
    indptr: &[usize],
    indices: &[u32],
    values: &[f32],
    u: &[f32],
    k: usize,
    out: &mut [f32],
) {
    struct Op<'a> {
        indptr: &'a [usize],
        indices: &'a [u32],
        values: &'a [f32],
        u: &'a [f32],
        k: usize,
        out: &'a mut [f32],
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let Op {
                indptr,
                indices,
                values,
                u,
                k,
                out,
            } = self;
            let lanes = S::F32_LANES;
            if k % lanes == 0 {
                let kv = k / lanes;
                let (uv, _) = S::as_simd_f32s(u);
                let (ov, _) = S::as_mut_simd_f32s(out);
                for (i, ur) in uv.chunks_exact(kv).enumerate() {
                    let range = indptr[i]..indptr[i + 1];
                    let entries = indices[range.clone()].iter().zip(&values[range]);
                    if kv == 1 {
                        let u0 = ur[0];
                        for (&c, &v) in entries {
                            let d = &mut ov[c as usize];
                            *d = simd.mul_add_f32s(simd.splat_f32s(v), u0, *d);
                        }
                    } else {
                        for (&c, &v) in entries {
                            let vv = simd.splat_f32s(v);
                            let dst = &mut ov[c as usize * kv..c as usize * kv + kv];
                            for (d, x) in dst.iter_mut().zip(ur) {
                                *d = simd.mul_add_f32s(vv, *x, *d);
                            }
                        }
                    }
                }
            } else if k == 1 {
                for (i, &u0) in u.iter().enumerate() {
                    let range = indptr[i]..indptr[i + 1];
                    for (&c, &v) in indices[range.clone()].iter().zip(&values[range]) {
                        let d = &mut out[c as usize];
                        *d = v.mul_add(u0, *d);
                    }
                }
            } else {
                for (i, urow) in u.chunks_exact(k).enumerate() {
                    let range = indptr[i]..indptr[i + 1];
                    for (&c, &v) in indices[range.clone()].iter().zip(&values[range]) {
                        let c = c as usize;
                        axpy(simd, v, urow, &mut out[c * k..c * k + k]);
                    }
                }
            }
        }
    }
    dispatch(Op {
        indptr,
        indices,
        values,
        u,
        k,
        out,
    })
}

/// `Σ (a − b)²` over rows of length `row`: each row in `f32` SIMD lanes, rows added in `f64`.
pub(crate) fn sum_sq_diff(a: &[f32], b: &[f32], row: usize) -> f64 {
    struct Op<'a> {
        a: &'a [f32],
        b: &'a [f32],
        row: usize,
    }
    impl WithSimd for Op<'_> {
        type Output = f64;
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) -> f64 {
            let mut total = 0.0f64;
            for (ra, rb) in self
                .a
                .chunks(self.row.max(1))
                .zip(self.b.chunks(self.row.max(1)))
            {
                let (ah, at) = S::as_simd_f32s(ra);
                let (bh, bt) = S::as_simd_f32s(rb);
                let mut acc = simd.splat_f32s(0.0);
                for (x, y) in ah.iter().zip(bh) {
                    let d = simd.sub_f32s(*x, *y);
                    acc = simd.mul_add_f32s(d, d, acc);
                }
                let mut s = simd.reduce_sum_f32s(acc) as f64;
                for (x, y) in at.iter().zip(bt) {
                    let d = (*x - *y) as f64;
                    s += d * d;
                }
                total += s;
            }
            total
        }
    }
    dispatch(Op { a, b, row })
}

/// Entry statistics of a row-major block (rows of length `row`): `None` if an entry is NaN,
/// infinite or negative; otherwise `(max, non-zeros, Σx, Σx²)`, each row summed in `f32` SIMD
/// lanes and the rows added in `f64`.
pub(crate) fn entry_stats(a: &[f32], row: usize) -> Option<(f32, usize, f64, f64)> {
    struct Op<'a> {
        a: &'a [f32],
        row: usize,
    }
    impl WithSimd for Op<'_> {
        type Output = Option<(f32, usize, f64, f64)>;
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
            let (mut max, mut nnz, mut sum, mut sq) = (0.0f32, 0usize, 0.0f64, 0.0f64);
            let zero = simd.splat_f32s(0.0);
            let one = simd.splat_f32s(1.0);
            for r in self.a.chunks(self.row.max(1)) {
                let (h, t) = S::as_simd_f32s(r);
                let (mut vmax, mut vmin, mut vsum, mut vsq, mut vnz) =
                    (zero, zero, zero, zero, zero);
                for x in h {
                    vmax = simd.max_f32s(vmax, *x);
                    vmin = simd.min_f32s(vmin, *x);
                    vsum = simd.add_f32s(vsum, *x);
                    vsq = simd.mul_add_f32s(*x, *x, vsq);
                    vnz =
                        simd.add_f32s(vnz, simd.select_f32s(simd.equal_f32s(*x, zero), zero, one));
                }
                let mut rmax = simd.reduce_max_f32s(vmax);
                let mut rmin = simd.reduce_min_f32s(vmin);
                let mut rsum = simd.reduce_sum_f32s(vsum);
                let mut rsq = simd.reduce_sum_f32s(vsq);
                let mut rnz = simd.reduce_sum_f32s(vnz);
                for x in t {
                    rmax = rmax.max(*x);
                    rmin = rmin.min(*x);
                    rsum += *x;
                    rsq += *x * *x;
                    rnz += (*x != 0.0) as u8 as f32;
                }
                // A NaN or infinity makes the sums non-finite; a negative entry the minimum.
                if !(rmin >= 0.0 && rsum.is_finite() && rsq.is_finite()) {
                    if r.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
                        return None;
                    }
                    // Finite entries whose f32 square sum overflowed: redo the row in f64.
                    rsum = 0.0;
                    rsq = 0.0;
                    let (s1, s2) = r.iter().fold((0.0f64, 0.0f64), |(a, b), x| {
                        (a + *x as f64, b + *x as f64 * *x as f64)
                    });
                    sum += s1;
                    sq += s2;
                }
                max = max.max(rmax);
                nnz += rnz as usize;
                sum += rsum as f64;
                sq += rsq as f64;
            }
            Some((max, nnz, sum, sq))
        }
    }
    dispatch(Op { a, row })
}

/// Runs `f` inside a function compiled for the instruction set these kernels are tuned for:
/// AVX2+FMA on x86 even where AVX-512 is available (their register tiles, and the rank-long
/// rows of NMF — K = 8 is one AVX2 vector — would fall into scalar tails at 16 lanes), the best
/// available elsewhere. `f` must be `#[inline(always)]`-friendly generic code: the work is done
/// by [`WithSimd`] impls.
#[inline(always)]
pub(crate) fn dispatch<W: WithSimd>(op: W) -> W::Output {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if let Some(v3) = pulp::x86::V3::try_new() {
        return Simd::vectorize(v3, op);
    }
    Arch::new().dispatch(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(lhs: View<'_>, rhs: View<'_>) -> Vec<f32> {
        let mut out = vec![0.0f32; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                let mut s = 0.0f64;
                for t in 0..lhs.cols {
                    s += lhs.at(i, t) as f64 * rhs.at(t, j) as f64;
                }
                out[i * rhs.cols + j] = s as f32;
            }
        }
        out
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed * 40503);
                ((x >> 8) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn all_layouts_and_edge_shapes_match_naive() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 3, 5),
            (13, 300, 17),
            (6, 16, 16),
            (100, 520, 9),
            (97, 33, 40),
            (5, 600, 3),
        ] {
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            let at = data(k * m, 3);
            let bt = data(n * k, 4);
            let cases = [
                (View::row_major(&a, m, k, k), View::row_major(&b, k, n, n)),
                (
                    View::row_major(&at, k, m, m).t(),
                    View::row_major(&b, k, n, n),
                ),
                (
                    View::row_major(&a, m, k, k),
                    View::row_major(&bt, n, k, k).t(),
                ),
                (
                    View::row_major(&at, k, m, m).t(),
                    View::row_major(&bt, n, k, k).t(),
                ),
            ];
            for (l, r) in cases {
                let want = naive(l, r);
                let mut got = vec![0.0f32; m * n];
                gemm(&mut got, n, l, r, false);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + k as f32),
                        "{m}×{k}×{n}: {g} vs {w}"
                    );
                }
                // Accumulation adds onto what is there.
                gemm(&mut got, n, l, r, true);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - 2.0 * w).abs() <= 2e-4 * (1.0 + k as f32));
                }
            }
        }
    }
}

#[cfg(test)]
mod element_tests {
    use super::*;

    #[test]
    fn mu_update_guards_zero_denominators() {
        let mut x = vec![1.0f32, 2.0, 0.0, 3.0];
        mu_update(&mut x, &[2.0, 1.0, 5.0, 0.0], &[4.0, 0.0, 0.0, 1.0], 0.5);
        assert_eq!(x, vec![0.5, 4.0, 0.0, 0.0]);
    }

    #[test]
    fn entry_stats_and_residuals() {
        let a: Vec<f32> = (0..1000).map(|i| (i % 7) as f32).collect();
        let (max, nnz, sum, sq) = entry_stats(&a, 100).unwrap();
        assert_eq!(max, 6.0);
        assert_eq!(nnz, a.iter().filter(|v| **v != 0.0).count());
        assert_eq!(sum, a.iter().map(|v| *v as f64).sum::<f64>());
        assert_eq!(sq, a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>());
        for bad in [f32::NAN, f32::INFINITY, -1.0] {
            let mut b = a.clone();
            b[517] = bad;
            assert!(entry_stats(&b, 100).is_none());
        }
        // Squares that overflow f32 are summed in f64.
        let big = vec![3e30f32; 64];
        let (_, _, _, sq) = entry_stats(&big, 64).unwrap();
        assert!((sq / (64.0 * 9e60) - 1.0).abs() < 1e-6);
        let b: Vec<f32> = a.iter().map(|v| v + 1.0).collect();
        assert_eq!(sum_sq_diff(&a, &b, 100), 1000.0);
    }
}
