//! Single-threaded `f32` matrix-product kernels in safe Rust.
//!
//! The crate forbids `unsafe`, so the `gemm` crate (raw pointers) cannot be called; these kernels
//! use `pulp`'s safe SIMD abstraction instead, which compiles each kernel once per instruction
//! set (AVX2+FMA, AVX-512 where enabled, NEON, scalar) and picks one at run time.
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

/// Rows of L per register tile.
const MR: usize = 4;
/// SIMD vectors of R per register tile.
const NRV: usize = 3;
/// Reduction block: the R panel (`KC × NR·lanes`) stays in L1.
const KC: usize = 256;
/// Rows of L packed at once (the packed block stays in L2).
const MC: usize = 96;
/// Outputs narrower than this use the dot-product kernel when the layout allows it.
pub(crate) const NARROW: usize = 16;

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
    let arch = Arch::new();
    if n < NARROW && lhs.cs == 1 && rhs.rs == 1 {
        arch.dispatch(DotKernel {
            out,
            ld_out,
            x: lhs,
            y: rhs.t(),
            accumulate,
        });
    } else if rhs.cs == 1 {
        arch.dispatch(PanelKernel {
            out,
            ld_out,
            lhs,
            rhs,
            accumulate,
        });
    } else {
        // Make R row-major once; the kernel then reads it row by row.
        let mut tmp = vec![0.0f32; k * n];
        for t in 0..k {
            for j in 0..n {
                tmp[t * n + j] = rhs.at(t, j);
            }
        }
        arch.dispatch(PanelKernel {
            out,
            ld_out,
            lhs,
            rhs: View::row_major(&tmp, k, n, n),
            accumulate,
        });
    }
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
        let PanelKernel {
            out,
            ld_out,
            lhs,
            rhs,
            accumulate,
        } = self;
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
                // Pack L[ic.., pc..] as panels of MR rows, t-major inside a panel.
                for p in 0..panels {
                    let dst = &mut lpack[p * kc * MR..(p + 1) * kc * MR];
                    for r in 0..MR {
                        let i = p * MR + r;
                        if i < mc {
                            for t in 0..kc {
                                dst[t * MR + r] = lhs.at(ic + i, pc + t);
                            }
                        } else {
                            for t in 0..kc {
                                dst[t * MR + r] = 0.0;
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
                        let acc = micro::<S>(
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
}

/// The register tile: `MR × NRV` vectors, `acc[r][v] = Σ_t L[t][r] · R[t][v·lanes..]`.
#[inline(always)]
fn micro<S: Simd>(
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
            if i + 2 <= m {
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

/// Runs `f` compiled for the best instruction set available (auto-vectorisation of plain
/// loops with AVX2/FMA and the like).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    Arch::new().dispatch(f)
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
