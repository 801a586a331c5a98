//! The NMF engine: agreement with scikit-learn, properties, batched/joint, edge cases,
//! determinism, the candle path and the compression baselines.

use deepfactor::nmf::{Init, Layout, Nmf};
use deepfactor::Matrix;
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
