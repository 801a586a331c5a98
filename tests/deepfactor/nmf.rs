//! The NMF engine: agreement with scikit-learn, properties, batched/joint, edge cases,
//! determinism, the candle path and the compression baselines.

use deepfactor::linalg::{Csr, Matrix};
use deepfactor::nmf::{Init, Layout, Nmf};
use serde_json::Value;

fn matrix(v: &Value) -> Matrix {
    let rows = v["rows"].as_u64().unwrap() as usize;
    let cols = v["cols"].as_u64().unwrap() as usize;
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Matrix::from_vec(rows, cols, data).unwrap()
}

fn fixture() -> Value {
    let path = crate::common::repo_root().join("tests/fixtures/nmf/sklearn.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Our relative error is within 1% of scikit-learn's at equal iterations, for every case of
/// the fixture, on the dense and the sparse engine.
#[test]
fn agrees_with_scikit_learn() {
    let fx = fixture();
    let a = matrix(&fx["a"]);
    let mut report = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let init = match case["init"].as_str().unwrap() {
            "nndsvda" => Init::Nndsvda,
            "nndsvd" => Init::Nndsvd,
            other => panic!("unknown init {other}"),
        };
        let k = case["k"].as_u64().unwrap() as usize;
        let max_iter = case["max_iter"].as_u64().unwrap() as usize;
        let tol = case["tol"].as_f64().unwrap();
        let want = case["rel_error"].as_f64().unwrap();
        let want_iters = case["iterations"].as_u64().unwrap() as usize;
        for layout in [Layout::Dense, Layout::Sparse] {
            let f = Nmf::new(k)
                .init(init)
                .max_iter(max_iter)
                .tol(tol)
                .layout(layout)
                .build()
                .unwrap()
                .fit(&a)
                .unwrap();
            let rel = (f.rel_error - want).abs() / want;
            report.push(format!(
                "{init:?} K={k} it={max_iter} tol={tol} {layout:?}: ours {:.6} ({} it) sklearn {want:.6} ({want_iters} it) diff {:.3}%",
                f.rel_error, f.iterations, rel * 100.0
            ));
            assert!(rel < 0.01, "{}", report.join("\n"));
            if tol == 0.0 {
                assert_eq!(f.iterations, max_iter);
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// `transform` with scikit-learn's fitted V reproduces scikit-learn's `transform` error.
#[test]
fn transform_agrees_with_scikit_learn() {
    let fx = fixture();
    let t = &fx["transform"];
    let b = matrix(&t["b"]);
    let v = matrix(&t["v"]);
    let want = t["rel_error"].as_f64().unwrap();
    let nmf = Nmf::new(v.rows()).tol(0.0).build().unwrap();
    let f = nmf.transform(&b, &v).unwrap();
    assert_eq!(f.iterations, t["iterations"].as_u64().unwrap() as usize);
    assert!(
        (f.rel_error - want).abs() / want < 0.01,
        "ours {} sklearn {want}",
        f.rel_error
    );
    assert_eq!(f.v, v);
}

// ---------------------------------------------------------------------------------------------
// Helpers for the properties.

/// `‖A − UV‖_F` in f64.
fn residual(a: &Matrix, u: &Matrix, v: &Matrix) -> f64 {
    let mut s = 0.0f64;
    for r in 0..a.rows() {
        for c in 0..a.cols() {
            let uv: f64 = (0..u.cols())
                .map(|k| u.get(r, k) as f64 * v.get(k, c) as f64)
                .sum();
            let d = a.get(r, c) as f64 - uv;
            s += d * d;
        }
    }
    s.sqrt()
}

fn rel_residual(a: &Matrix, u: &Matrix, v: &Matrix) -> f64 {
    residual(a, u, v) / a.frobenius_norm()
}

/// A deterministic pseudo-random stream (tests need no RNG crate).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
}

/// Non-negative factors with about `zeros` of their entries zero, and their product.
fn planted(p: usize, c: usize, k: usize, zeros: f32, seed: u64) -> (Matrix, Matrix, Matrix) {
    let mut g = Lcg(seed);
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let x = g.next();
                if x < zeros {
                    0.0
                } else {
                    0.2 + g.next()
                }
            })
            .collect()
    };
    let u = Matrix::from_vec(p, k, draw(p * k)).unwrap();
    let v = Matrix::from_vec(k, c, draw(k * c)).unwrap();
    let a = u.matmul(&v).unwrap();
    (a, u, v)
}

fn relu_noise(p: usize, c: usize, seed: u64) -> Matrix {
    let (mut a, _, _) = planted(p, c, 4, 0.3, seed);
    let mut g = Lcg(seed ^ 77);
    for x in a.as_mut_slice() {
        *x = (*x + g.next() * 2.0 - 1.6).max(0.0);
    }
    a
}

fn assert_valid(f: &deepfactor::nmf::Factorization, p: usize, c: usize, k: usize) {
    assert_eq!(f.u.shape(), (p, k));
    assert_eq!(f.v.shape(), (k, c));
    for x in f.u.as_slice().iter().chain(f.v.as_slice()) {
        assert!(x.is_finite() && *x >= 0.0, "bad factor entry {x}");
    }
    assert!(f.rel_error.is_finite() && f.rel_error >= 0.0);
}

/// Columns of U and rows of V, relative to each other up to a permutation and scale: each
/// true column must match some fitted column with cosine > `min_cos`.
fn matched(truth: &Matrix, got: &Matrix, by_rows: bool, min_cos: f64) -> bool {
    let get = |m: &Matrix, i: usize| -> Vec<f64> {
        if by_rows {
            m.row(i).iter().map(|&x| x as f64).collect()
        } else {
            (0..m.rows()).map(|r| m.get(r, i) as f64).collect()
        }
    };
    let n = if by_rows { truth.rows() } else { truth.cols() };
    (0..n).all(|i| {
        let a = get(truth, i);
        (0..n).any(|j| {
            let b = get(got, j);
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            na > 0.0 && nb > 0.0 && dot / (na * nb) > min_cos
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Properties.

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn input() -> impl Strategy<Value = (Matrix, usize, Init, Layout)> {
        (
            1usize..30,
            1usize..24,
            1usize..7,
            0u64..1000,
            0usize..3,
            any::<bool>(),
        )
            .prop_map(|(p, c, k, seed, init, sparse)| {
                let a = relu_noise(p, c, seed);
                let init = [Init::Nndsvda, Init::Nndsvd, Init::Random { seed }][init];
                let layout = if sparse {
                    Layout::Sparse
                } else {
                    Layout::Dense
                };
                (a, k, init, layout)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Factors are finite and non-negative with the right shapes, for every
        /// initialisation and layout, including K > min(P, C) and all-zero rows.
        #[test]
        fn factors_are_non_negative_and_finite((a, k, init, layout) in input()) {
            let nmf = Nmf::new(k).init(init).layout(layout).max_iter(60).build().unwrap();
            let f = nmf.fit(&a).unwrap();
            assert_valid(&f, a.rows(), a.cols(), k);
            // The reported error is the error of the returned factors.
            if a.frobenius_norm() > 0.0 {
                prop_assert!((f.rel_error - rel_residual(&a, &f.u, &f.v)).abs() < 1e-4);
            }
            // Factors come in descending energy.
            let energy: Vec<f64> = (0..k).map(|j| {
                let cu: f64 = (0..a.rows()).map(|r| (f.u.get(r, j) as f64).powi(2)).sum();
                let rv: f64 = f.v.row(j).iter().map(|x| (*x as f64).powi(2)).sum();
                (cu * rv).sqrt()
            }).collect();
            for w in energy.windows(2) {
                prop_assert!(w[0] >= w[1]);
            }
        }

        /// The objective never increases from one iteration to the next (up to f32
        /// rounding): the fit after t iterations is the prefix of the fit after t + 1.
        #[test]
        fn objective_never_increases((a, k, init, layout) in input()) {
            prop_assume!(a.frobenius_norm() > 0.0);
            let mut previous = f64::INFINITY;
            for t in 0..25 {
                let nmf = Nmf::new(k).init(init).layout(layout).max_iter(t).tol(0.0)
                    .build().unwrap();
                let f = nmf.fit(&a).unwrap();
                let e = residual(&a, &f.u, &f.v);
                prop_assert!(e <= previous * (1.0 + 1e-5) + 1e-6 * a.frobenius_norm(),
                    "iteration {t}: {e} > {previous}");
                previous = e;
            }
        }

        /// A batch gives each image exactly what fitting it alone gives.
        #[test]
        fn batch_equals_one_by_one(
            sizes in proptest::collection::vec((1usize..25, 0u64..500), 1..6),
            c in 1usize..20,
            k in 1usize..5,
        ) {
            let images: Vec<Matrix> = sizes.iter().map(|&(p, s)| relu_noise(p, c, s)).collect();
            let nmf = Nmf::new(k).max_iter(40).build().unwrap();
            let batch = nmf.fit_batch(&images).unwrap();
            for (img, got) in images.iter().zip(&batch) {
                prop_assert_eq!(&nmf.fit(img).unwrap(), got);
            }
        }
    }
}

/// A planted non-negative rank-K matrix is recovered (relative error < 1e-3), and so are its
/// factors (up to order and scale).
#[test]
fn planted_rank_k_is_recovered() {
    for (seed, layout) in [
        (1u64, Layout::Dense),
        (2, Layout::Sparse),
        (3, Layout::Auto),
    ] {
        let (a, u, v) = planted(60, 40, 4, 0.5, seed);
        let f = Nmf::new(4)
            .max_iter(5000)
            .tol(0.0)
            .layout(layout)
            .build()
            .unwrap()
            .fit(&a)
            .unwrap();
        assert!(f.rel_error < 1e-3, "seed {seed}: rel_error {}", f.rel_error);
        assert!((f.rel_error - rel_residual(&a, &f.u, &f.v)).abs() < 1e-6);
        assert!(
            matched(&u, &f.u, false, 0.99),
            "seed {seed}: U not recovered"
        );
        assert!(
            matched(&v, &f.v, true, 0.99),
            "seed {seed}: V not recovered"
        );
    }
}

/// `transform` with the true V recovers the true U; `fit_v` with the true U recovers V.
#[test]
fn fixed_factor_fits_recover_the_other_factor() {
    let (a, u, v) = planted(50, 30, 3, 0.4, 9);
    let nmf = Nmf::new(3).max_iter(3000).tol(0.0).build().unwrap();
    let t = nmf.transform(&a, &v).unwrap();
    let err_u = residual(&u, &t.u, &Matrix::from_vec(3, 3, eye(3)).unwrap()) / u.frobenius_norm();
    assert!(err_u < 1e-3, "U error {err_u}");
    assert!(t.rel_error < 1e-3);
    assert_eq!(t.v, v);
    let w = nmf.fit_v(&a, &u).unwrap();
    let err_v = residual(&v, &Matrix::from_vec(3, 3, eye(3)).unwrap(), &w.v) / v.frobenius_norm();
    assert!(err_v < 1e-3, "V error {err_v}");
    assert_eq!(w.u, u);
    // With a tolerance, a noisy input stops early.
    let b = relu_noise(50, 30, 9);
    let fitted = Nmf::new(3).build().unwrap().fit(&b).unwrap();
    let quick = Nmf::new(3)
        .build()
        .unwrap()
        .transform(&b, &fitted.v)
        .unwrap();
    assert!(quick.iterations < 200 && quick.iterations.is_multiple_of(10));
    assert!((quick.rel_error - fitted.rel_error).abs() < 0.05);
}

fn eye(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 })
        .collect()
}

/// The tolerance stops at a multiple of 10 iterations, and never later than max_iter.
#[test]
fn tolerance_stops_early() {
    let a = relu_noise(80, 40, 5);
    let f = Nmf::new(4)
        .max_iter(500)
        .tol(1e-3)
        .build()
        .unwrap()
        .fit(&a)
        .unwrap();
    assert!(
        f.iterations < 500 && f.iterations.is_multiple_of(10),
        "{}",
        f.iterations
    );
    let g = Nmf::new(4)
        .max_iter(500)
        .tol(0.0)
        .build()
        .unwrap()
        .fit(&a)
        .unwrap();
    assert_eq!(g.iterations, 500);
    assert!(g.rel_error <= f.rel_error + 1e-6);
}

/// Same factors, bit for bit, on one thread and on two, for both layouts, large enough to use
/// several row chunks; and the same on a second run.
#[test]
fn identical_for_any_thread_count() {
    let a = relu_noise(3000, 64, 11);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for layout in [Layout::Dense, Layout::Sparse] {
        for k in [3usize, 20] {
            let nmf = Nmf::new(k).layout(layout).max_iter(30).build().unwrap();
            let x = one.install(|| nmf.fit(&a).unwrap());
            let y = two.install(|| nmf.fit(&a).unwrap());
            let z = two.install(|| nmf.fit(&a).unwrap());
            assert_eq!(x, y, "{layout:?} K={k}");
            assert_eq!(y, z);
            let v = x.v.clone();
            let tx = one.install(|| nmf.transform(&a, &v).unwrap());
            let ty = two.install(|| nmf.transform(&a, &v).unwrap());
            assert_eq!(tx, ty);
        }
    }
}

/// The dense and the sparse engine compute the same factorization up to rounding.
#[test]
fn layouts_agree() {
    let a = relu_noise(200, 50, 21);
    let fit = |layout| {
        Nmf::new(5)
            .layout(layout)
            .max_iter(100)
            .tol(0.0)
            .build()
            .unwrap()
            .fit(&a)
            .unwrap()
    };
    let (d, s) = (fit(Layout::Dense), fit(Layout::Sparse));
    assert!((d.rel_error - s.rel_error).abs() < 1e-4 * d.rel_error);
}

/// A matrix given sparse only gets the same factors as the sparse layout of its dense form,
/// and a residual that agrees with the entry-by-entry one.
#[test]
fn sparse_input_matches_the_sparse_layout() {
    // The first shape starts from the randomized SVD (the same sparse products either way:
    // bit for bit the same factors); the others are small enough for the Gram route, whose
    // Gram matrix is summed in another order from the non-zeros (equal up to rounding).
    for (p, c, k, seed) in [
        (400usize, 200usize, 3usize, 21u64),
        (40, 300, 3, 5),
        (30, 12, 8, 9),
    ] {
        let a = relu_noise(p, c, seed);
        let csr = Csr::from_dense(&a).unwrap();
        for tol in [0.0, 1e-4] {
            let nmf = Nmf::new(k)
                .layout(Layout::Sparse)
                .max_iter(60)
                .tol(tol)
                .build()
                .unwrap();
            let (d, s) = (nmf.fit(&a).unwrap(), nmf.fit_sparse(&csr).unwrap());
            if p == 400 {
                assert_eq!((&d.u, &d.v), (&s.u, &s.v));
            } else {
                for (x, y) in d.u.as_slice().iter().zip(s.u.as_slice()) {
                    assert!((x - y).abs() < 1e-3 * (1.0 + x.abs()), "{x} vs {y}");
                }
            }
            assert_eq!(d.iterations, s.iterations);
            assert!(
                (d.rel_error - s.rel_error).abs() < 1e-6,
                "{} vs {}",
                d.rel_error,
                s.rel_error
            );
            assert!((rel_residual(&a, &s.u, &s.v) - s.rel_error).abs() < 1e-5);
        }
    }
    // Degenerate and bad input.
    let nmf = Nmf::new(2).build().unwrap();
    let z = nmf
        .fit_sparse(&Csr::from_dense(&Matrix::zeros(4, 3)).unwrap())
        .unwrap();
    assert_eq!((z.iterations, z.rel_error), (0, 0.0));
    assert!(nmf.fit_sparse(&Csr::with_cols(3).unwrap()).is_err());
    let mut a = relu_noise(5, 4, 1);
    a.set(3, 2, -1.0);
    let msg = nmf
        .fit_sparse(&Csr::from_dense(&a).unwrap())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(3, 2)") && msg.contains("negative"), "{msg}");
    // Extreme magnitudes are rescaled exactly as on the dense path.
    let mut b = relu_noise(400, 200, 4);
    b.as_mut_slice().iter_mut().for_each(|x| *x *= 1e30);
    let nmf = Nmf::new(3)
        .layout(Layout::Sparse)
        .max_iter(20)
        .build()
        .unwrap();
    let (d, s) = (
        nmf.fit(&b).unwrap(),
        nmf.fit_sparse(&Csr::from_dense(&b).unwrap()).unwrap(),
    );
    assert_eq!(d.u, s.u);
}

#[test]
fn joint_fit_splits_u_per_image() {
    let imgs: Vec<Matrix> = (0..3)
        .map(|i| relu_noise(10 + 5 * i, 16, i as u64))
        .collect();
    let refs: Vec<&Matrix> = imgs.iter().collect();
    let nmf = Nmf::new(3).max_iter(50).build().unwrap();
    let j = nmf.fit_joint(&refs).unwrap();
    assert_eq!(j.u_per_image.len(), 3);
    let mut stacked = Vec::new();
    for (u, img) in j.u_per_image.iter().zip(&imgs) {
        assert_eq!(u.shape(), (img.rows(), 3));
        stacked.extend_from_slice(u.as_slice());
    }
    assert_eq!(stacked, j.factorization.u.as_slice());
    // One image joint is the plain fit.
    assert_eq!(
        nmf.fit_joint(&[&imgs[0]]).unwrap().factorization,
        nmf.fit(&imgs[0]).unwrap()
    );
    // Mismatched channels and no images are refused.
    let other = relu_noise(5, 8, 1);
    assert!(nmf.fit_joint(&[&imgs[0], &other]).is_err());
    assert!(nmf.fit_joint(&[]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Degenerate input.

#[test]
fn all_zero_matrix_gives_zero_factors() {
    let a = Matrix::zeros(7, 5);
    for init in [Init::Nndsvda, Init::Nndsvd, Init::Random { seed: 1 }] {
        let f = Nmf::new(3).init(init).build().unwrap().fit(&a).unwrap();
        assert_valid(&f, 7, 5, 3);
        assert!(f
            .u
            .as_slice()
            .iter()
            .chain(f.v.as_slice())
            .all(|x| *x == 0.0));
        assert_eq!((f.iterations, f.rel_error), (0, 0.0));
    }
    let nmf = Nmf::new(2).build().unwrap();
    let t = nmf
        .transform(&a, &Matrix::from_vec(2, 5, vec![1.0; 10]).unwrap())
        .unwrap();
    assert!(t.u.as_slice().iter().all(|x| *x == 0.0));
}

#[test]
fn zero_rows_give_zero_heatmap_rows() {
    let mut a = relu_noise(20, 12, 3);
    for r in [0usize, 7, 19] {
        a.row_mut(r).fill(0.0);
    }
    let f = Nmf::new(3).build().unwrap().fit(&a).unwrap();
    assert_valid(&f, 20, 12, 3);
    for r in [0usize, 7, 19] {
        assert!(f.u.row(r).iter().all(|x| *x == 0.0));
    }
}

#[test]
fn rank_larger_than_the_matrix() {
    let a = relu_noise(4, 3, 8);
    for init in [Init::Nndsvda, Init::Nndsvd, Init::Random { seed: 2 }] {
        for layout in [Layout::Dense, Layout::Sparse] {
            let f = Nmf::new(6)
                .init(init)
                .layout(layout)
                .build()
                .unwrap()
                .fit(&a)
                .unwrap();
            assert_valid(&f, 4, 3, 6);
            assert!(f.rel_error < 0.5);
        }
    }
}

#[test]
fn bad_input_is_refused_with_its_position() {
    let nmf = Nmf::new(2).build().unwrap();
    for (bad, word) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (-1.0, "negative"),
    ] {
        let mut a = relu_noise(5, 4, 1);
        a.set(3, 2, bad);
        let e = nmf.fit(&a).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, deepfactor::Error::Numeric(_)), "{msg}");
        assert!(msg.contains("(3, 2)") && msg.contains(word), "{msg}");
        assert!(nmf
            .fit_batch(&[relu_noise(3, 4, 2), a.clone()])
            .unwrap_err()
            .to_string()
            .contains("image 1"));
        assert!(nmf.transform(&a, &Matrix::zeros(2, 4)).is_err());
    }
    assert!(matches!(
        nmf.fit(&Matrix::zeros(0, 4)).unwrap_err(),
        deepfactor::Error::InvalidArgument(_)
    ));
    // Shapes that do not fit.
    let a = relu_noise(5, 4, 1);
    assert!(nmf.transform(&a, &Matrix::zeros(2, 3)).is_err());
    assert!(nmf.fit_v(&a, &Matrix::zeros(4, 2)).is_err());
    assert!(nmf
        .fit_from(&a, &Matrix::zeros(5, 3), &Matrix::zeros(3, 4))
        .is_err());
    // Invalid configurations.
    assert!(Nmf::new(0).build().is_err());
    assert!(Nmf::new(2).tol(-1.0).build().is_err());
    assert!(Nmf::new(2).tol(f64::NAN).build().is_err());
    assert!(Nmf::new(2).sparse_max_density(1.5).build().is_err());
}

/// Huge and tiny magnitudes are handled by exact rescaling: nothing overflows, the fit is
/// about the one of the unscaled input, and two extreme scales a power of four apart give the
/// same fit with factors scaled by its square root.
#[test]
fn extreme_magnitudes() {
    let a = relu_noise(30, 20, 4);
    let nmf = Nmf::new(3).max_iter(50).build().unwrap();
    let base = nmf.fit(&a).unwrap();
    let scaled = |e2: i32| {
        let mut b = a.clone();
        for x in b.as_mut_slice() {
            *x *= (e2 as f32).exp2();
        }
        let f = nmf.fit(&b).unwrap();
        assert_valid(&f, 30, 20, 3);
        assert!((f.rel_error - base.rel_error).abs() < 0.02 * base.rel_error);
        f
    };
    for (e2, step) in [(100i32, 20i32), (-100, -20)] {
        let (f, g) = (scaled(e2), scaled(e2 + step));
        assert_eq!(f.rel_error, g.rel_error);
        let s = ((step / 2) as f32).exp2();
        for (x, y) in g.u.as_slice().iter().zip(f.u.as_slice()) {
            assert_eq!(*x, *y * s);
        }
    }
    for scale in [1e30f32, 1e-30, 3e37] {
        let mut b = a.clone();
        for x in b.as_mut_slice() {
            *x *= scale;
        }
        let f = nmf.fit(&b).unwrap();
        assert_valid(&f, 30, 20, 3);
        assert!((f.rel_error - base.rel_error).abs() < 0.02 * base.rel_error);
    }
}

#[test]
fn fit_from_custom_start() {
    let a = relu_noise(30, 20, 6);
    let nmf = Nmf::new(3).max_iter(100).tol(0.0).build().unwrap();
    let u0 = Matrix::from_vec(30, 3, vec![0.5; 90]).unwrap();
    let mut v0 = Matrix::from_vec(3, 20, vec![0.5; 60]).unwrap();
    v0.set(0, 0, 1.0);
    v0.set(1, 5, 1.0);
    let f = nmf.fit_from(&a, &u0, &v0).unwrap();
    assert_valid(&f, 30, 20, 3);
    assert!(f.rel_error < rel_residual(&a, &u0, &v0));
    // Zero iterations return the start (in energy order).
    let z = Nmf::new(3)
        .max_iter(0)
        .build()
        .unwrap()
        .fit_from(&a, &u0, &v0)
        .unwrap();
    assert!((z.rel_error - rel_residual(&a, &u0, &v0)).abs() < 1e-6);
}

/// Random initialisation is reproducible for a seed and differs between seeds.
#[test]
fn random_init_is_seeded() {
    let a = relu_noise(25, 15, 2);
    let fit = |seed| {
        Nmf::new(3)
            .init(Init::Random { seed })
            .max_iter(5)
            .build()
            .unwrap()
            .fit(&a)
            .unwrap()
    };
    assert_eq!(fit(1), fit(1));
    assert_ne!(fit(1), fit(2));
}

// ---------------------------------------------------------------------------------------------
// Compression baselines.

mod baselines {
    use super::*;
    use deepfactor::nmf::{Compressor, KMeans, Pca, RandomAblation, SphericalKMeans};

    fn all(k: usize) -> Vec<Box<dyn Compressor>> {
        vec![
            Box::new(Nmf::new(k).max_iter(100).build().unwrap()),
            Box::new(Pca::new(k).build().unwrap()),
            Box::new(Pca::new(k).centered(false).build().unwrap()),
            Box::new(KMeans::new(k).seed(3).build().unwrap()),
            Box::new(SphericalKMeans::new(k).seed(3).build().unwrap()),
            Box::new(RandomAblation::new(k).seed(3).build().unwrap()),
        ]
    }

    /// Every compressor: shapes, reconstruction = U·V (+ offset), reported error, determinism.
    #[test]
    fn common_contract() {
        let a = relu_noise(40, 16, 12);
        for comp in all(4) {
            let x = comp.compress(&a).unwrap();
            let name = comp.name();
            assert_eq!(comp.rank(), 4);
            assert_eq!((x.u.shape(), x.v.shape()), ((40, 4), (4, 16)), "{name}");
            let mut uv = x.u.matmul(&x.v).unwrap();
            if let Some(mu) = &x.offset {
                for r in 0..uv.rows() {
                    for (v, m) in uv.row_mut(r).iter_mut().zip(mu) {
                        *v += *m;
                    }
                }
            }
            for (p, q) in uv.as_slice().iter().zip(x.reconstruction.as_slice()) {
                assert!((p - q).abs() < 1e-4, "{name}");
            }
            let d: f64 = a
                .as_slice()
                .iter()
                .zip(x.reconstruction.as_slice())
                .map(|(p, q)| (*p as f64 - *q as f64).powi(2))
                .sum();
            assert!(
                (x.rel_error - d.sqrt() / a.frobenius_norm()).abs() < 1e-6,
                "{name}"
            );
            assert!(x.rel_error < 1.0, "{name}: {}", x.rel_error);
            assert_eq!(comp.compress(&a).unwrap(), x, "{name} is not deterministic");
            // Refuses NaN.
            let mut bad = a.clone();
            bad.set(1, 1, f32::NAN);
            assert!(comp.compress(&bad).is_err(), "{name}");
        }
    }

    /// Uncentred PCA is the best rank-K approximation: it beats every other compressor, and
    /// reaches the tail of the singular spectrum; a planted rank-K matrix is reproduced.
    #[test]
    fn pca_is_optimal_and_exact_on_low_rank() {
        let a = relu_noise(60, 20, 2);
        let svd = Pca::new(5)
            .centered(false)
            .build()
            .unwrap()
            .compress(&a)
            .unwrap();
        for comp in all(5) {
            let x = comp.compress(&a).unwrap();
            if x.offset.is_none() {
                assert!(svd.rel_error <= x.rel_error + 1e-6, "{}", comp.name());
            }
        }
        // Orthonormal axes, positive largest entry.
        let vvt = svd.v.matmul_t(&svd.v).unwrap();
        for i in 0..5 {
            for j in 0..5 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((vvt.get(i, j) - want).abs() < 1e-4);
            }
            let row = svd.v.row(i);
            let big = row
                .iter()
                .fold(0.0f32, |m, x| if x.abs() > m.abs() { *x } else { m });
            assert!(big > 0.0);
        }
        let (p, _, _) = planted(50, 30, 3, 0.3, 4);
        for centered in [false, true] {
            let x = Pca::new(3)
                .centered(centered)
                .build()
                .unwrap()
                .compress(&p)
                .unwrap();
            // Centring costs one dimension of a rank-3 non-centred matrix, not all of it.
            assert!(
                x.rel_error < if centered { 0.5 } else { 1e-4 },
                "{}",
                x.rel_error
            );
        }
        let x = Pca::new(4)
            .centered(true)
            .build()
            .unwrap()
            .compress(&p)
            .unwrap();
        assert!(x.rel_error < 1e-4);
    }

    /// K-means: one-hot U, centroids are member means; well-separated clusters are found;
    /// spherical k-means codes rows by their projection on a unit centroid.
    #[test]
    fn kmeans_variants() {
        // Three separated blobs.
        let mut g = Lcg(5);
        let centres = [[0.0f32, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 5.0]];
        let mut data = Vec::new();
        for i in 0..60 {
            let c = centres[i % 3];
            for x in c {
                data.push(x + g.next() * 0.5);
            }
        }
        let a = Matrix::from_vec(60, 3, data).unwrap();
        let x = KMeans::new(3).build().unwrap().compress(&a).unwrap();
        for r in 0..60 {
            let ones: Vec<f32> = x.u.row(r).to_vec();
            assert_eq!(ones.iter().filter(|v| **v == 1.0).count(), 1);
            assert_eq!(ones.iter().sum::<f32>(), 1.0);
        }
        // Rows of the same blob share a cluster, different blobs do not.
        let cluster = |r: usize| x.u.row(r).iter().position(|v| *v == 1.0).unwrap();
        for r in 3..60 {
            assert_eq!(cluster(r), cluster(r % 3));
        }
        assert_ne!(cluster(0), cluster(1));
        assert_ne!(cluster(1), cluster(2));
        assert!(x.rel_error < 0.1);

        let a = relu_noise(50, 10, 8);
        let s = SphericalKMeans::new(4)
            .build()
            .unwrap()
            .compress(&a)
            .unwrap();
        for j in 0..4 {
            let n: f32 = s.v.row(j).iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4 || n == 0.0);
        }
        for r in 0..50 {
            let nz: Vec<usize> = (0..4).filter(|&j| s.u.get(r, j) != 0.0).collect();
            assert!(nz.len() <= 1);
            if let [j] = nz[..] {
                let dot: f32 = a.row(r).iter().zip(s.v.row(j)).map(|(p, q)| p * q).sum();
                assert!((s.u.get(r, j) - dot).abs() < 1e-4);
            }
        }
        // More clusters than distinct rows still works.
        let few = Matrix::from_vec(3, 2, vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        let x = KMeans::new(5).build().unwrap().compress(&few).unwrap();
        assert!(x.rel_error < 1e-6);
    }

    #[test]
    fn random_ablation_keeps_k_channels() {
        let a = relu_noise(20, 12, 3);
        let ab = RandomAblation::new(5).seed(9).build().unwrap();
        let kept = ab.channels(12);
        assert_eq!(kept.len(), 5);
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(
            kept,
            RandomAblation::new(5)
                .seed(10)
                .build()
                .unwrap()
                .channels(12)
        );
        let x = ab.compress(&a).unwrap();
        for r in 0..20 {
            for c in 0..12 {
                let want = if kept.contains(&c) { a.get(r, c) } else { 0.0 };
                assert_eq!(x.reconstruction.get(r, c), want);
            }
        }
        // K ≥ C keeps everything.
        let all = RandomAblation::new(15)
            .build()
            .unwrap()
            .compress(&a)
            .unwrap();
        assert_eq!(all.rel_error, 0.0);
        assert!(RandomAblation::new(0).build().is_err());
        assert!(KMeans::new(0).build().is_err());
        assert!(Pca::new(0).build().is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The candle tensor path, on the CPU device.

mod tensor_path {
    use super::*;
    use candle_core::{Device, Tensor};

    fn to_tensor(m: &Matrix) -> Tensor {
        Tensor::from_vec(m.as_slice().to_vec(), m.shape(), &Device::Cpu).unwrap()
    }

    fn to_matrix(t: &Tensor) -> Matrix {
        let (r, c) = t.dims2().unwrap();
        Matrix::from_vec(r, c, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).unwrap()
    }

    fn close(a: &Matrix, b: &Matrix, rel: f32) {
        let scale = a.as_slice().iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
            assert!((x - y).abs() <= rel * scale, "{x} vs {y} (scale {scale})");
        }
    }

    /// Same iterations, errors and factors (to f32 rounding) as the slice engine, for each
    /// initialisation, with and without a tolerance.
    #[test]
    fn agrees_with_the_slice_engine() {
        let a = relu_noise(70, 40, 31);
        for init in [Init::Nndsvda, Init::Nndsvd, Init::Random { seed: 4 }] {
            for tol in [0.0, 1e-4] {
                let nmf = Nmf::new(5)
                    .init(init)
                    .max_iter(60)
                    .tol(tol)
                    .build()
                    .unwrap();
                let cpu = nmf.fit(&a).unwrap();
                let t = nmf.fit_tensor(&to_tensor(&a)).unwrap();
                assert_eq!(t.iterations, vec![cpu.iterations], "{init:?} tol {tol}");
                assert!((t.rel_error[0] - cpu.rel_error).abs() < 1e-4 * cpu.rel_error);
                close(&cpu.u, &to_matrix(&t.u), 2e-3);
                close(&cpu.v, &to_matrix(&t.v), 2e-3);
            }
        }
    }

    /// A batch: each image as the slice engine fits it; a zero image gets zero factors.
    #[test]
    fn batch_matches_per_image_fits() {
        let mut images: Vec<Matrix> = (0..4).map(|i| relu_noise(30, 20, 40 + i)).collect();
        images[2] = Matrix::zeros(30, 20);
        let mut data = Vec::new();
        for m in &images {
            data.extend_from_slice(m.as_slice());
        }
        let batch = Tensor::from_vec(data, (4, 30, 20), &Device::Cpu).unwrap();
        let nmf = Nmf::new(3).max_iter(200).build().unwrap();
        let t = nmf.fit_tensor(&batch).unwrap();
        assert_eq!(t.u.dims(), &[4, 30, 3]);
        assert_eq!(t.v.dims(), &[4, 3, 20]);
        for (i, img) in images.iter().enumerate() {
            let cpu = nmf.fit(img).unwrap();
            assert_eq!(t.iterations[i], cpu.iterations, "image {i}");
            assert!((t.rel_error[i] - cpu.rel_error).abs() < 1e-4 * cpu.rel_error.max(1e-9));
            close(&cpu.u, &to_matrix(&t.u.get(i).unwrap()), 2e-3);
            close(&cpu.v, &to_matrix(&t.v.get(i).unwrap()), 2e-3);
        }
        // Projection onto stored concepts agrees with the slice engine too.
        let v = nmf.fit(&images[0]).unwrap().v;
        let tu = nmf.transform_tensor(&batch, &to_tensor(&v)).unwrap();
        for (i, img) in images.iter().enumerate() {
            let cpu = nmf.transform(img, &v).unwrap();
            close(&cpu.u, &to_matrix(&tu.get(i).unwrap()), 2e-3);
        }
    }

    #[test]
    fn refuses_bad_tensors() {
        let nmf = Nmf::new(2).build().unwrap();
        let mut a = relu_noise(5, 4, 1);
        a.set(2, 3, f32::NAN);
        let e = nmf.fit_tensor(&to_tensor(&a)).unwrap_err().to_string();
        assert!(e.contains("[0, 2, 3]") && e.contains("NaN"), "{e}");
        let r1 = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(nmf.fit_tensor(&r1).is_err());
    }
}
