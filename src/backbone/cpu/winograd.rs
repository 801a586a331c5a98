//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016): each 2×2 block of outputs is
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for its 4×4 input patch `d`, so the convolution becomes 16
//! matrix products of `tiles × C_in` by `C_in × C_out` — 16 multiplications per 4 outputs
//! instead of 36, 2.25× fewer. The transforms use only 0, ±1 and ±½, which keeps the rounding
//! error at the level of the direct convolution's.
//!
//! Work is split into bands of tile rows of one image, in parallel; a band's transformed input
//! and products stay in a per-thread buffer, and the output transform applies the epilogue
//! (bias, residual, activation) while writing the band's output rows.

use super::{inside, Activation, Nhwc, Pad};
use crate::linalg::blas::{self, Operand};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Target tiles per band (a band's buffers are `16 × tiles × (C_in + C_out)` values).
const BAND_TILES: usize = 192;

/// The transformed weights: `U_ξ = (G g Gᵀ)_ξ` for the 16 positions ξ of the 4×4 tile, each a
/// `C_in × C_out` matrix.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    u: Vec<f32>,
    c_in: usize,
    c_out: usize,
}

impl Weights {
    /// From PyTorch's layout `(C_out, C_in, 3, 3)`.
    pub fn new(w: &[f32], c_out: usize, c_in: usize) -> Self {
        let mut u = vec![0f32; 16 * c_in * c_out];
        for o in 0..c_out {
            for c in 0..c_in {
                let g = &w[(o * c_in + c) * 9..(o * c_in + c + 1) * 9];
                // G g (4 × 3), then (G g) Gᵀ (4 × 4); G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
                let mut gg = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (a, b, d) = (g[j], g[3 + j], g[6 + j]);
                    gg[0][j] = a;
                    gg[1][j] = 0.5 * (a + b + d);
                    gg[2][j] = 0.5 * (a - b + d);
                    gg[3][j] = d;
                }
                for (i, r) in gg.iter().enumerate() {
                    let row = [
                        r[0],
                        0.5 * (r[0] + r[1] + r[2]),
                        0.5 * (r[0] - r[1] + r[2]),
                        r[2],
                    ];
                    for (j, v) in row.into_iter().enumerate() {
                        u[((i * 4 + j) * c_in + c) * c_out + o] = v;
                    }
                }
            }
        }
        Weights { u, c_in, c_out }
    }

    /// The convolution of `x` with padding `pad` (`Zero(p)` or `Reflect(p)`) into `out`
    /// (`x.n × ho × wo × C_out`), then `act(· + bias (+ residual))`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &Nhwc,
        pad: Pad,
        ho: usize,
        wo: usize,
        bias: &[f32],
        act: Activation,
        residual: Option<&Nhwc>,
        out: &mut [f32],
    ) {
        let (ci, co) = (self.c_in, self.c_out);
        let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
        let threads = rayon::current_num_threads().max(1);
        // Bands of tile rows: about BAND_TILES tiles each, and at least as many bands over the
        // batch as threads (a multiple of them), of equal height.
        let per_image = (th * tw).div_ceil(BAND_TILES).max(threads.div_ceil(x.n));
        let band = th.div_ceil(per_image).max(1);
        let image_len = ho * wo * co;
        out.par_chunks_mut(image_len)
            .enumerate()
            .for_each(|(img, img_out)| {
                img_out
                    .par_chunks_mut(2 * band * wo * co)
                    .enumerate()
                    .for_each_init(
                        || (Vec::new(), Vec::new()),
                        |(v, m): &mut (Vec<f32>, Vec<f32>), (b, band_out)| {
                            let ty0 = b * band;
                            let rows = band_out.len() / (wo * co);
                            let tiles = rows.div_ceil(2) * tw;
                            v.resize(16 * tiles * ci, 0.0);
                            m.resize(16 * tiles * co, 0.0);
                            Arch::new().dispatch(InputTransform {
                                x,
                                img,
                                ty0,
                                rows: rows.div_ceil(2),
                                tw,
                                pad,
                                v: &mut v[..],
                            });
                            for xi in 0..16 {
                                blas::gemm(
                                    &mut m[xi * tiles * co..(xi + 1) * tiles * co],
                                    co,
                                    Operand::dense(
                                        &v[xi * tiles * ci..(xi + 1) * tiles * ci],
                                        tiles,
                                        ci,
                                    ),
                                    Operand::dense(
                                        &self.u[xi * ci * co..(xi + 1) * ci * co],
                                        ci,
                                        co,
                                    ),
                                    false,
                                );
                            }
                            let res = residual.map(|r| {
                                let start = (img * ho + 2 * ty0) * wo * co;
                                &r.data[start..start + band_out.len()]
                            });
                            Arch::new().dispatch(OutputTransform {
                                m: &m[..],
                                tiles,
                                tw,
                                wo,
                                rows,
                                bias,
                                residual: res,
                                act,
                                out: band_out,
                            });
                        },
                    );
            });
    }
}

/// Where padded coordinate `i` of an axis of `n` cells reads: a cell, or nothing (a zero).
/// Beyond the padded extent (the right and bottom tiles' overhang) also nothing: those values
/// only reach outputs that are not kept.
#[inline(always)]
fn source(pad: Pad, i: isize, n: usize) -> Option<usize> {
    match pad {
        Pad::Reflect(p) if i >= -(p as isize) && i < 0 => Some((-i) as usize),
        Pad::Reflect(p) if i >= n as isize && i < (n + p) as isize => {
            Some((2 * (n as isize - 1) - i) as usize)
        }
        _ => inside(i, n),
    }
}

/// `V_ξ[t] = (Bᵀ d_t B)_ξ` for the tiles of `rows` tile rows from `ty0`, channel vectors at a
/// time; `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`.
struct InputTransform<'a> {
    x: &'a Nhwc,
    img: usize,
    ty0: usize,
    rows: usize,
    tw: usize,
    pad: Pad,
    v: &'a mut [f32],
}

impl WithSimd for InputTransform<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let InputTransform {
            x,
            img,
            ty0,
            rows,
            tw,
            pad,
            v,
        } = self;
        let c = x.c;
        let p = match pad {
            Pad::Zero(p) | Pad::Reflect(p) => p as isize,
            Pad::TfSame => 1,
        };
        let tiles = rows * tw;
        let lanes = S::F32_LANES;
        let zero = simd.splat_f32s(0.0);
        for ty in 0..rows {
            // The 4 input rows of this tile row (None: zeros).
            let in_rows: [Option<&[f32]>; 4] = core::array::from_fn(|r| {
                source(pad, (2 * (ty0 + ty) + r) as isize - p, x.h).map(|iy| x.row(img, iy))
            });
            for tx in 0..tw {
                let t = ty * tw + tx;
                let cols: [Option<usize>; 4] =
                    core::array::from_fn(|q| source(pad, (2 * tx + q) as isize - p, x.w));
                let cell = |r: usize, q: usize| -> Option<&[f32]> {
                    let row = in_rows[r]?;
                    let ix = cols[q]?;
                    Some(&row[ix * c..(ix + 1) * c])
                };
                let d: [[Option<&[f32]>; 4]; 4] =
                    core::array::from_fn(|r| core::array::from_fn(|q| cell(r, q)));
                let mut ch = 0;
                while ch + lanes <= c {
                    let ld = |r: usize, q: usize| match d[r][q] {
                        Some(s) => S::as_simd_f32s(&s[ch..ch + lanes]).0[0],
                        None => zero,
                    };
                    let e: [[S::f32s; 4]; 4] =
                        core::array::from_fn(|r| core::array::from_fn(|q| ld(r, q)));
                    let out = bt_d_b(simd, e);
                    for (xi, val) in out.into_iter().enumerate() {
                        let o = (xi * tiles + t) * c + ch;
                        S::as_mut_simd_f32s(&mut v[o..o + lanes]).0[0] = val;
                    }
                    ch += lanes;
                }
                for ch in ch..c {
                    let e: [[f32; 4]; 4] = core::array::from_fn(|r| {
                        core::array::from_fn(|q| d[r][q].map_or(0.0, |s| s[ch]))
                    });
                    let out = bt_d_b_scalar(e);
                    for (xi, val) in out.into_iter().enumerate() {
                        v[(xi * tiles + t) * c + ch] = val;
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn bt_d_b<S: Simd>(simd: S, d: [[S::f32s; 4]; 4]) -> [S::f32s; 16] {
    // Rows: Bᵀ d.
    let col = |q: usize| {
        [
            simd.sub_f32s(d[0][q], d[2][q]),
            simd.add_f32s(d[1][q], d[2][q]),
            simd.sub_f32s(d[2][q], d[1][q]),
            simd.sub_f32s(d[1][q], d[3][q]),
        ]
    };
    let t = [col(0), col(1), col(2), col(3)]; // t[q][i] = (Bᵀ d)[i][q]
                                              // Columns: (Bᵀ d) B.
    core::array::from_fn(|xi| {
        let (i, j) = (xi / 4, xi % 4);
        match j {
            0 => simd.sub_f32s(t[0][i], t[2][i]),
            1 => simd.add_f32s(t[1][i], t[2][i]),
            2 => simd.sub_f32s(t[2][i], t[1][i]),
            _ => simd.sub_f32s(t[1][i], t[3][i]),
        }
    })
}

#[inline(always)]
fn bt_d_b_scalar(d: [[f32; 4]; 4]) -> [f32; 16] {
    let col = |q: usize| {
        [
            d[0][q] - d[2][q],
            d[1][q] + d[2][q],
            d[2][q] - d[1][q],
            d[1][q] - d[3][q],
        ]
    };
    let t = [col(0), col(1), col(2), col(3)];
    core::array::from_fn(|xi| {
        let (i, j) = (xi / 4, xi % 4);
        match j {
            0 => t[0][i] - t[2][i],
            1 => t[1][i] + t[2][i],
            2 => t[2][i] - t[1][i],
            _ => t[1][i] - t[3][i],
        }
    })
}

/// `Y_t = Aᵀ M_t A` with `Aᵀ = [1 1 1 0; 0 1 −1 −1]`, then the epilogue, into the band's
/// output rows (`rows` of them, `wo` cells each).
struct OutputTransform<'a> {
    m: &'a [f32],
    tiles: usize,
    tw: usize,
    wo: usize,
    rows: usize,
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
    act: Activation,
    out: &'a mut [f32],
}

impl WithSimd for OutputTransform<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let OutputTransform {
            m,
            tiles,
            tw,
            wo,
            rows,
            bias,
            residual,
            act,
            out,
        } = self;
        let co = bias.len();
        let lanes = S::F32_LANES;
        for t in 0..tiles {
            let (ty, tx) = (t / tw, t % tw);
            let mut ch = 0;
            while ch < co {
                let whole = ch + lanes <= co;
                let n = if whole { lanes } else { co - ch };
                // One vector of channels (or the scalar tail, lane by lane).
                if whole {
                    let ld = |xi: usize| {
                        let o = (xi * tiles + t) * co + ch;
                        S::as_simd_f32s(&m[o..o + lanes]).0[0]
                    };
                    let y = at_m_a(simd, core::array::from_fn(ld));
                    let b = S::as_simd_f32s(&bias[ch..ch + lanes]).0[0];
                    for (k, yv) in y.into_iter().enumerate() {
                        let (oy, ox) = (2 * ty + k / 2, 2 * tx + k % 2);
                        if oy >= rows || ox >= wo {
                            continue;
                        }
                        let o = (oy * wo + ox) * co + ch;
                        let mut val = simd.add_f32s(yv, b);
                        if let Some(r) = residual {
                            val = simd.add_f32s(val, S::as_simd_f32s(&r[o..o + lanes]).0[0]);
                        }
                        S::as_mut_simd_f32s(&mut out[o..o + lanes]).0[0] =
                            act.apply_simd(simd, val);
                    }
                } else {
                    for ch in ch..co {
                        let y =
                            at_m_a_scalar(core::array::from_fn(|xi| m[(xi * tiles + t) * co + ch]));
                        for (k, yv) in y.into_iter().enumerate() {
                            let (oy, ox) = (2 * ty + k / 2, 2 * tx + k % 2);
                            if oy >= rows || ox >= wo {
                                continue;
                            }
                            let o = (oy * wo + ox) * co + ch;
                            let r = residual.map_or(0.0, |r| r[o]);
                            out[o] = act.apply(yv + bias[ch] + r);
                        }
                    }
                }
                ch += n;
            }
        }
    }
}

#[inline(always)]
fn at_m_a<S: Simd>(simd: S, m: [S::f32s; 16]) -> [S::f32s; 4] {
    let at = |a: S::f32s, b: S::f32s, c: S::f32s, d: S::f32s| {
        (
            simd.add_f32s(simd.add_f32s(a, b), c),
            simd.sub_f32s(simd.sub_f32s(b, c), d),
        )
    };
    // Rows: Aᵀ M (2 × 4), column by column.
    let cols: [(S::f32s, S::f32s); 4] =
        core::array::from_fn(|q| at(m[q], m[4 + q], m[8 + q], m[12 + q]));
    // Columns: (Aᵀ M) A.
    let (y00, y01) = at(cols[0].0, cols[1].0, cols[2].0, cols[3].0);
    let (y10, y11) = at(cols[0].1, cols[1].1, cols[2].1, cols[3].1);
    [y00, y01, y10, y11]
}

#[inline(always)]
fn at_m_a_scalar(m: [f32; 16]) -> [f32; 4] {
    let at = |a: f32, b: f32, c: f32, d: f32| (a + b + c, b - c - d);
    let cols: [(f32, f32); 4] = core::array::from_fn(|q| at(m[q], m[4 + q], m[8 + q], m[12 + q]));
    let (y00, y01) = at(cols[0].0, cols[1].0, cols[2].0, cols[3].0);
    let (y10, y11) = at(cols[0].1, cols[1].1, cols[2].1, cols[3].1);
    [y00, y01, y10, y11]
}

#[cfg(test)]
mod tests {
    use super::super::{BufferPool, CpuConv, Nhwc};
    use super::*;
    use crate::backbone::layers::tests::uniform;
    use candle_core::Tensor;
    use std::sync::Arc;

    /// Values in `[-1, 1)` from a fixed seed.
    fn values(shape: &[usize], seed: u64) -> Tensor {
        uniform(shape, seed, -1.0, 1.0)
    }

    /// The Winograd path against the unfolded (direct) product of the same convolution, on
    /// maps whose tiles do not fit evenly: odd sizes, maps smaller than one 2×2 output tile or
    /// its 4×4 input patch, one-cell rows and columns, several bands per image, with and
    /// without zero or mirrored padding, vector and scalar channel tails, a residual. Output
    /// buffers come from a pool of NaN-filled buffers, so an output the transforms skip shows.
    #[test]
    fn winograd_matches_the_direct_path_at_tile_edges() {
        let sizes = [
            (1, 1),
            (1, 2),
            (2, 1),
            (2, 2),
            (3, 3),
            (1, 7),
            (6, 1),
            (2, 5),
            (3, 4),
            (4, 3),
            (5, 5),
            (7, 9),
            (33, 47),
        ];
        let pads = [Pad::Zero(0), Pad::Zero(1), Pad::Zero(2), Pad::Reflect(1)];
        // (C_in, C_out, residual, activation)
        let channels = [
            (16, 8, false, Activation::Relu),
            (19, 21, true, Activation::Identity),
            (40, 9, true, Activation::Relu6),
        ];
        let mut checked = 0;
        for (ci_case, &(c_in, c_out, residual, act)) in channels.iter().enumerate() {
            let seed = 100 * ci_case as u64;
            let weight = values(&[c_out, c_in, 3, 3], seed + 1);
            let bias = values(&[c_out], seed + 2);
            for pad in pads {
                let fast = CpuConv::with_paths(&weight, Some(&bias), 1, pad, false, true).unwrap();
                let direct =
                    CpuConv::with_paths(&weight, Some(&bias), 1, pad, false, false).unwrap();
                assert_eq!((fast.path(), direct.path()), ("winograd", "unfolded"));
                for (h, w) in sizes {
                    let fits = match pad {
                        Pad::Zero(p) => h + 2 * p >= 3 && w + 2 * p >= 3,
                        Pad::Reflect(p) => h > p && w > p,
                        Pad::TfSame => true,
                    };
                    let pool = Arc::new(BufferPool::default());
                    for _ in 0..4 {
                        pool.give(vec![f32::NAN; 3 * (h + 4) * (w + 4) * c_out]);
                    }
                    let x = values(&[3, c_in, h, w], seed + 10 * h as u64 + w as u64);
                    let x = Nhwc::from_nchw(&x, Some(pool.clone())).unwrap();
                    if !fits {
                        assert!(fast.forward(&x, act, None).is_err(), "{pad:?} {h}×{w}");
                        continue;
                    }
                    let (ho, wo) = match pad {
                        Pad::Zero(p) | Pad::Reflect(p) => (h + 2 * p - 2, w + 2 * p - 2),
                        Pad::TfSame => (h, w),
                    };
                    let res = residual.then(|| {
                        Nhwc::from_nchw(&values(&[3, c_out, ho, wo], seed + 7), None).unwrap()
                    });
                    for threads in [1, 3] {
                        let rayon = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let got = rayon
                            .install(|| fast.forward(&x, act, res.as_ref()))
                            .unwrap();
                        let want = direct.forward(&x, act, res.as_ref()).unwrap();
                        assert_eq!((got.n, got.h, got.w, got.c), (3, ho, wo, c_out));
                        assert_eq!((want.h, want.w), (ho, wo));
                        assert!(
                            got.data.iter().all(|v| v.is_finite()),
                            "{c_in}→{c_out} {pad:?} {h}×{w}: an output left unwritten"
                        );
                        let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let err = got
                            .data
                            .iter()
                            .zip(&want.data)
                            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            err <= 1e-5 * scale.max(1.0),
                            "{c_in}→{c_out} {pad:?} {h}×{w}, {threads} threads: max \
                             difference {err} (scale {scale})"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} cases ran");
    }
}
