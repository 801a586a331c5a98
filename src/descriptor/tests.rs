//! Unit tests of the describer and the whitening.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn acts(rows: usize, cols: usize, channels: usize, seed: u64) -> Activations {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..rows * cols * channels)
        .map(|_| {
            let x: f32 = rng.random();
            if x < 0.5 {
                0.0
            } else {
                (x - 0.5) * 6.0
            }
        })
        .collect();
    Activations {
        grid: CellGrid {
            rows,
            cols,
            image_width: cols as u32 * 32,
            image_height: rows as u32 * 32,
        },
        data: Matrix::from_vec(rows * cols, channels, data).unwrap(),
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `n` samples of N(mean, L·Lᵀ) (Box–Muller on a seeded stream).
fn gaussian_samples(n: usize, mean: &[f64], l: &[Vec<f64>], seed: u64) -> Matrix {
    let d = mean.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let z: Vec<f64> = (0..d)
            .map(|_| {
                let u1: f64 = rng.random::<f64>().max(1e-300);
                let u2: f64 = rng.random();
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        for i in 0..d {
            let x: f64 = mean[i] + (0..d).map(|j| l[i][j] * z[j]).sum::<f64>();
            data.push(x as f32);
        }
    }
    Matrix::from_vec(n, d, data).unwrap()
}

/// The sample covariance (normalised by n) of the rows of `x`.
fn covariance(x: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let n = x.len() as f64;
    let d = x[0].len();
    let mut mean = vec![0f64; d];
    for r in x {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += f64::from(v) / n;
        }
    }
    let mut c = vec![vec![0f64; d]; d];
    for r in x {
        for i in 0..d {
            for j in 0..d {
                c[i][j] += (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j]) / n;
            }
        }
    }
    c
}

/// Asserts that `c` is the identity matrix within `tol`.
fn assert_identity(c: &[Vec<f64>], tol: f64, what: &str) {
    for (i, row) in c.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < tol, "{what}: cov[{i}][{j}] = {v}");
        }
    }
}

#[test]
fn kinds_parse_and_print() {
    for k in DescriptorKind::ALL {
        assert_eq!(k.to_string().parse::<DescriptorKind>().unwrap(), k);
    }
    assert_eq!(
        "NMF-VU".parse::<DescriptorKind>().unwrap(),
        DescriptorKind::NmfVu
    );
    let e = "vlad".parse::<DescriptorKind>().unwrap_err().to_string();
    assert!(
        e.contains("nmf-v, nmf-vu, crow, mac, spoc, gem, rmac"),
        "{e}"
    );
}

#[test]
fn config_is_validated() {
    use DescriptorKind::*;
    assert!(DescriptorConfig::new(NmfV).k(0).build().is_err());
    assert!(DescriptorConfig::new(Gem).gem_p(0.0).build().is_err());
    assert!(DescriptorConfig::new(Gem).gem_p(f32::NAN).build().is_err());
    assert!(DescriptorConfig::new(Rmac).rmac_levels(0).build().is_err());
    assert!(DescriptorConfig::new(NmfVu)
        .box_threshold(1.0)
        .build()
        .is_err());
    assert!(DescriptorConfig::new(Mac).whiten_dim(4).build().is_err());
    assert!(DescriptorConfig::new(Mac)
        .whiten_power(-1.0)
        .build()
        .is_err());
    // K does not matter for pooled kinds.
    assert!(DescriptorConfig::new(Mac).k(0).build().is_ok());
    // CroW weighting defaults: on for NMF and CroW, off for the others.
    for k in DescriptorKind::ALL {
        let d = DescriptorConfig::new(k).build().unwrap();
        assert_eq!(d.crow(), matches!(k, NmfV | NmfVu | Crow), "{k}");
    }
}

#[test]
fn every_kind_gives_a_unit_vector_and_refuses_bad_activations() {
    let a = acts(5, 7, 24, 1);
    for k in DescriptorKind::ALL {
        let d = DescriptorConfig::new(k).k(3).build().unwrap();
        let desc = d.describe(&a).unwrap();
        assert_eq!(desc.vector.len(), 24, "{k}");
        assert!((norm(&desc.vector) - 1.0).abs() < 1e-5, "{k}");
        assert_eq!(desc.factors.is_some(), k.is_nmf());
        assert_eq!(desc.kept.len(), if k.is_nmf() { 3 } else { 0 });
        // Deterministic.
        assert_eq!(d.describe(&a).unwrap().vector, desc.vector, "{k}");

        let mut neg = a.clone();
        neg.data.set(3, 2, -1.0);
        assert!(d.describe(&neg).is_err(), "{k}");
        let mut nan = a.clone();
        nan.data.set(3, 2, f32::NAN);
        assert!(d.describe(&nan).is_err(), "{k}");
        let zero = Activations {
            grid: a.grid,
            data: Matrix::zeros(35, 24),
        };
        let e = d.describe(&zero).unwrap_err().to_string();
        assert!(e.contains("all zeros"), "{k}: {e}");
        let wrong = Activations {
            grid: a.grid,
            data: Matrix::zeros(34, 24),
        };
        assert!(d.describe(&wrong).is_err(), "{k}");
    }
}

#[test]
fn pooled_kinds_match_their_pooling() {
    let a = acts(4, 6, 10, 2);
    let unit_of = |v: Vec<f32>| {
        let n = norm(&v);
        v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-5);
    let d = |k| {
        DescriptorConfig::new(k)
            .build()
            .unwrap()
            .describe(&a)
            .unwrap()
            .vector
    };
    assert!(close(
        &d(DescriptorKind::Mac),
        &unit_of(pooling::mac(&a.data))
    ));
    assert!(close(
        &d(DescriptorKind::Spoc),
        &unit_of(pooling::spoc(&a.data))
    ));
    assert!(close(
        &d(DescriptorKind::Gem),
        &unit_of(pooling::gem(&a.data, 3.0))
    ));
    assert!(close(
        &d(DescriptorKind::Crow),
        &unit_of(pooling::crow_pool(&a.data, true))
    ));
    let regions = pooling::rmac_vectors(&a.data, 4, 6, 3);
    let mut sum = vec![0f32; 10];
    for i in 0..regions.rows() {
        for (s, x) in sum.iter_mut().zip(regions.row(i)) {
            *s += x;
        }
    }
    assert!(close(&d(DescriptorKind::Rmac), &unit_of(sum)));
    // CroW weighting on MAC multiplies by the channel weights before the maximum.
    let w = crow::channel_weights(&a.data);
    let weighted: Vec<f32> = pooling::mac(&a.data)
        .iter()
        .zip(&w)
        .map(|(x, w)| x * w)
        .collect();
    let got = DescriptorConfig::new(DescriptorKind::Mac)
        .crow(true)
        .build()
        .unwrap()
        .describe(&a)
        .unwrap()
        .vector;
    assert!(close(&got, &unit_of(weighted)));
}

#[test]
fn nmf_v_is_the_sum_of_unit_concepts_and_vu_shares_the_factors() {
    let a = acts(5, 7, 24, 3);
    let v = DescriptorConfig::new(DescriptorKind::NmfV)
        .k(4)
        .build()
        .unwrap();
    let vu = DescriptorConfig::new(DescriptorKind::NmfVu)
        .k(4)
        .build()
        .unwrap();
    let f = v.factorize(&a).unwrap();
    let dv = v.describe(&a).unwrap();
    // By hand: the normalised rows of V, summed, normalised.
    let mut sum = vec![0f32; 24];
    for i in 0..4 {
        let r = f.v.row(i);
        let n = norm(r);
        for (s, x) in sum.iter_mut().zip(r) {
            *s += x / n;
        }
    }
    let n = norm(&sum);
    for (x, s) in dv.vector.iter().zip(&sum) {
        assert!((x - s / n).abs() < 1e-5);
    }
    // The factorization is of the CroW-weighted activations.
    let w = crow::channel_weights(&a.data);
    let direct = Nmf::new(4)
        .max_iter(DEFAULT_MAX_ITER)
        .tol(0.0)
        .build()
        .unwrap()
        .fit(&crow::scale_channels(&a.data, &w))
        .unwrap();
    assert_eq!(direct, f);
    // V+U from the shared factorization equals V+U computed alone.
    let shared = vu.describe_factors(&a.grid, f.clone(), None).unwrap();
    assert_eq!(shared.vector, vu.describe(&a).unwrap().vector);
    // A pooled describer refuses factors.
    let mac = DescriptorConfig::new(DescriptorKind::Mac).build().unwrap();
    assert!(mac.describe_factors(&a.grid, f, None).is_err());
    assert!(mac.factorize(&a).is_err());
}

#[test]
fn region_keeps_factors_inside_and_reports_fallback() {
    // Two blobs: channels 0..8 active on the left third, channels 8..16 on the right third.
    let (rows, cols, c) = (4, 9, 16);
    let mut data = vec![0f32; rows * cols * c];
    for r in 0..rows {
        for col in 0..cols {
            let p = r * cols + col;
            let range = if col < 3 {
                0..8
            } else if col >= 6 {
                8..16
            } else {
                continue;
            };
            for ch in range {
                data[p * c + ch] = 1.0 + ((p * 31 + ch * 7) % 5) as f32 * 0.1;
            }
        }
    }
    let a = Activations {
        grid: CellGrid {
            rows,
            cols,
            image_width: 90,
            image_height: 40,
        },
        data: Matrix::from_vec(rows * cols, c, data).unwrap(),
    };
    let d = DescriptorConfig::new(DescriptorKind::NmfV)
        .k(2)
        .build()
        .unwrap();
    let left = d
        .describe_region(&a, &BBox::new(0.0, 0.0, 30.0, 40.0).unwrap())
        .unwrap();
    assert_eq!(left.kept.len(), 1);
    assert!(!left.fallback);
    assert!(left.mass_inside[left.kept[0]] > 0.99);
    // The left factor's concept lives on channels 0..8 only.
    assert!(left.vector[..8].iter().all(|&x| x > 0.0));
    assert!(left.vector[8..].iter().all(|&x| x.abs() < 1e-3));
    // A box over the empty middle: nothing passes, the fallback is explicit.
    let mid = d
        .describe_region(&a, &BBox::new(30.0, 0.0, 60.0, 40.0).unwrap())
        .unwrap();
    assert!(mid.fallback);
    assert_eq!(mid.kept.len(), 1);
    // The whole image keeps both.
    let all = d
        .describe_region(&a, &BBox::new(0.0, 0.0, 90.0, 40.0).unwrap())
        .unwrap();
    assert_eq!(all.kept, vec![0, 1]);
    assert_eq!(all.vector, d.describe(&a).unwrap().vector);

    // Pooled kinds pool the cells inside the box: MAC of the left third.
    let mac = DescriptorConfig::new(DescriptorKind::Mac).build().unwrap();
    let m = mac
        .describe_region(&a, &BBox::new(0.0, 0.0, 30.0, 40.0).unwrap())
        .unwrap();
    assert!(!m.fallback);
    assert!(m.vector[8..].iter().all(|&x| x == 0.0));
    // A sliver between cell centres: the nearest cells stand in.
    let s = mac
        .describe_region(&a, &BBox::new(1.0, 0.0, 3.0, 40.0).unwrap())
        .unwrap();
    assert!(s.fallback);
}

#[test]
fn recipe_spec_names_the_kind_and_its_parameters() {
    let d = DescriptorConfig::new(DescriptorKind::Gem)
        .gem_p(4.0)
        .build()
        .unwrap();
    assert_eq!(d.spec().to_string(), "gem(p=4)");
    let r = Recipe {
        backbone: BackboneSpec::External("x".into()),
        weights_fingerprint: "0".into(),
        layer: "head".into(),
        input_size: 512,
        max_side: None,
        padding: crate::backbone::Padding::Zero,
        shift_negative: false,
        descriptor: d.spec(),
        crow: false,
        whitening: None,
        dim: 10,
    };
    assert_eq!(r.descriptor.kind(), Some(DescriptorKind::Gem));
    // The settings read back from the recipe make the same descriptor.
    let back = DescriptorConfig::from_recipe(&r, None)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(back.spec(), d.spec());
    let vu = DescriptorConfig::new(DescriptorKind::NmfVu)
        .build()
        .unwrap();
    assert_eq!(
        vu.spec().to_string(),
        "nmf-vu(max_iter=200,tol=0,init=nndsvda)"
    );
    assert_eq!(
        DescriptorConfig::new(DescriptorKind::Mac)
            .build()
            .unwrap()
            .spec()
            .to_string(),
        "mac"
    );
    // Another extractor's descriptor cannot be rebuilt.
    let other = Recipe {
        descriptor: DescriptorSpec::External("rgb-histogram".into()),
        ..r
    };
    let e = DescriptorConfig::from_recipe(&other, None).unwrap_err();
    assert!(e.to_string().contains("rgb-histogram"), "{e}");
}

#[test]
fn whitening_a_known_covariance_gives_identity() {
    // Σ = L·Lᵀ with distinct eigenvalues, far from diagonal.
    let l = vec![
        vec![3.0, 0.0, 0.0, 0.0],
        vec![1.0, 2.0, 0.0, 0.0],
        vec![-0.5, 0.7, 1.0, 0.0],
        vec![0.2, -0.3, 0.4, 0.5],
    ];
    let mean = [5.0, -2.0, 0.5, 1.0];
    let x = gaussian_samples(20_000, &mean, &l, 7);
    let w = Whitening::learner("synthetic", 20_000)
        .shrinkage(Shrinkage::Fixed(0.0))
        .learn(&x)
        .unwrap();
    assert_eq!(w.max_output_dim(), 4);
    // The learned variances are Σ's eigenvalues (sampling error ~ 2%).
    let mut sigma = vec![0f64; 16];
    for i in 0..4 {
        for j in 0..4 {
            sigma[i * 4 + j] = (0..4).map(|t| l[i][t] * l[j][t]).sum();
        }
    }
    let eig = crate::linalg::symmetric_eigen(4, &sigma).unwrap();
    for (got, want) in w.variances().iter().zip(&eig.values) {
        assert!(
            (f64::from(*got) / want - 1.0).abs() < 0.05,
            "{got} vs {want}"
        );
    }
    // Whitened training vectors have identity covariance (exactly, up to rounding) ...
    let white: Vec<Vec<f32>> = (0..x.rows())
        .map(|i| w.project(x.row(i), 0.5, 4).unwrap())
        .collect();
    assert_identity(&covariance(&white), 1e-3, "training");
    // ... and fresh samples of the same distribution nearly so.
    let fresh = gaussian_samples(20_000, &mean, &l, 8);
    let white: Vec<Vec<f32>> = (0..fresh.rows())
        .map(|i| w.project(fresh.row(i), 0.5, 4).unwrap())
        .collect();
    assert_identity(&covariance(&white), 0.05, "fresh");
    // With many samples Ledoit–Wolf barely shrinks and the result is still white.
    let lw = Whitening::learner("synthetic", 20_000).learn(&x).unwrap();
    assert!(lw.shrinkage() < 0.01, "{}", lw.shrinkage());
    let white: Vec<Vec<f32>> = (0..x.rows())
        .map(|i| lw.project(x.row(i), 0.5, 4).unwrap())
        .collect();
    for (i, row) in covariance(&white).iter().enumerate() {
        assert!((row[i] - 1.0).abs() < 0.02, "{}", row[i]);
    }
    // Power 0 only rotates: the norm of the centred vector is kept when no axis is cut.
    let y = w.project(x.row(0), 0.0, 4).unwrap();
    let centred: Vec<f32> = x.row(0).iter().zip(w.mean()).map(|(a, m)| a - m).collect();
    assert!((norm(&y) - norm(&centred)).abs() < 1e-3);
    // apply() is project() normalised; a cut keeps the leading axes.
    let a = w.apply(x.row(1), 0.5, 2).unwrap();
    let p = w.project(x.row(1), 0.5, 2).unwrap();
    assert!((norm(&a) - 1.0).abs() < 1e-6);
    assert!((a[0] - p[0] / norm(&p)).abs() < 1e-6);
    assert!(w.apply(x.row(1), 0.5, 5).is_err());
    // apply_rows is apply on each row.
    let some = Matrix::from_vec(3, 4, x.as_slice()[..12].to_vec()).unwrap();
    for dim in [2, 4] {
        let rows = w.apply_rows(&some, 0.25, dim).unwrap();
        for i in 0..3 {
            let one = w.apply(some.row(i), 0.25, dim).unwrap();
            for (a, b) in rows.row(i).iter().zip(&one) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }
    assert!(w.apply_rows(&some, 0.5, 0).is_err());
    assert!(w.apply(&[1.0, 2.0], 0.5, 2).is_err());
}

#[test]
fn whitening_with_fewer_vectors_than_dimensions() {
    // 6 vectors in 40 dimensions: at most 5 axes.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let data: Vec<f32> = (0..6 * 40).map(|_| rng.random::<f32>()).collect();
    let x = Matrix::from_vec(6, 40, data).unwrap();
    let w = Whitening::learner("ten photos", 2).learn(&x).unwrap();
    assert_eq!(w.max_output_dim(), 5);
    assert!(
        w.shrinkage() > 0.0 && w.shrinkage() <= 1.0,
        "{}",
        w.shrinkage()
    );
    assert!(w.variances().iter().all(|&v| v > 0.0));
    assert!(w.variances().windows(2).all(|p| p[0] >= p[1]));
    // The axes are orthonormal.
    for i in 0..5 {
        for j in 0..5 {
            let d = dot(w.components().row(i), w.components().row(j));
            assert!(
                (d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4,
                "{i},{j}: {d}"
            );
        }
    }
    // The axes found through the Gram matrix are those of the covariance.
    let mut mean = vec![0f64; 40];
    for i in 0..6 {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += f64::from(v) / 6.0;
        }
    }
    let mut cov = vec![0f64; 40 * 40];
    for i in 0..6 {
        for a in 0..40 {
            for b in 0..40 {
                cov[a * 40 + b] +=
                    (f64::from(x.get(i, a)) - mean[a]) * (f64::from(x.get(i, b)) - mean[b]) / 6.0;
            }
        }
    }
    let e = crate::linalg::symmetric_eigen(40, &cov).unwrap();
    for i in 0..5 {
        let d: f64 = e
            .vector(i)
            .iter()
            .zip(w.components().row(i))
            .map(|(a, &b)| a * f64::from(b))
            .sum();
        assert!((d.abs() - 1.0).abs() < 1e-3, "axis {i}: {d}");
    }
    // Without shrinkage the training vectors whiten to identity covariance in 5 dimensions.
    let plain = Whitening::learner("ten photos", 2)
        .shrinkage(Shrinkage::Fixed(0.0))
        .learn(&x)
        .unwrap();
    let white: Vec<Vec<f32>> = (0..6)
        .map(|i| plain.project(x.row(i), 0.5, 5).unwrap())
        .collect();
    assert_identity(&covariance(&white), 1e-3, "few vectors");
    // A describer caps at what the whitening has.
    let w = Arc::new(w);
    assert!(DescriptorConfig::new(DescriptorKind::Mac)
        .whitening(w.clone())
        .whiten_dim(6)
        .build()
        .is_err());
    let d = DescriptorConfig::new(DescriptorKind::Mac)
        .whitening(w)
        .build()
        .unwrap();
    assert_eq!(d.output_dim(40), 5);
    // Two vectors are the minimum; identical vectors are refused.
    assert!(Whitening::learner("x", 1)
        .learn(&Matrix::from_vec(1, 3, vec![1.0, 2.0, 3.0]).unwrap())
        .is_err());
    assert!(Whitening::learner("x", 2)
        .learn(&Matrix::from_vec(2, 2, vec![1.0, 2.0, 1.0, 2.0]).unwrap())
        .is_err());
    // Two vectors give one axis.
    let two = Whitening::learner("x", 2)
        .learn(&Matrix::from_vec(2, 3, vec![1.0, 2.0, 3.0, 0.0, 2.0, 1.0]).unwrap())
        .unwrap();
    assert_eq!(two.max_output_dim(), 1);
}

#[test]
fn whitening_file_round_trip_and_damage() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let data: Vec<f32> = (0..50 * 8).map(|_| rng.random::<f32>()).collect();
    let x = Matrix::from_vec(50, 8, data).unwrap();
    let w = Whitening::learner("train-set", 7)
        .max_dim(6)
        .learn(&x)
        .unwrap();
    assert_eq!(w.max_output_dim(), 6);
    assert!(w.id().starts_with("wh-") && w.id().len() == 19);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    w.save(&path).unwrap();
    let back = Whitening::load(&path).unwrap();
    assert_eq!(back, w);
    assert_eq!(back.training().name, "train-set");
    assert_eq!(back.training().images, 7);
    assert_eq!(back.training().vectors, 50);

    let bytes = std::fs::read(&path).unwrap();
    let origin = Path::new("w.safetensors");
    // Truncation anywhere.
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let e = Whitening::from_bytes(&bytes[..cut], origin).unwrap_err();
        assert!(matches!(e, Error::Whitening { .. }), "{e}");
        assert!(e.to_string().contains("w.safetensors"), "{e}");
    }
    // A flipped bit in the data is caught by the id.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 10;
    flipped[at] ^= 0x10;
    let e = Whitening::from_bytes(&flipped, origin)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("damaged") || e.contains("decreasing") || e.contains("holds"),
        "{e}"
    );
    // A file of another format, or a newer version.
    let other = safetensors::serialize(
        vec![(
            "mean",
            TensorView::new(Dtype::F32, vec![1], &[0u8; 4]).unwrap(),
        )],
        None,
    )
    .unwrap();
    let e = Whitening::from_bytes(&other, origin)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no metadata"), "{e}");
    let text = String::from_utf8_lossy(&bytes).to_string();
    assert!(text.contains("\"version\":\"1\""));
    let newer = String::from_utf8_lossy(&bytes)
        .replace("\"version\":\"1\"", "\"version\":\"9\"")
        .into_bytes();
    if newer.len() == bytes.len() {
        let e = Whitening::from_bytes(&newer, origin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer"), "{e}");
    }
    // A missing file names itself.
    let e = Whitening::load(dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn whitened_descriptors_use_the_whitening() {
    let train: Vec<Activations> = (0..6).map(|s| acts(4, 6, 12, 100 + s)).collect();
    for kind in [
        DescriptorKind::NmfV,
        DescriptorKind::Rmac,
        DescriptorKind::Gem,
    ] {
        let plain = DescriptorConfig::new(kind).k(3).build().unwrap();
        let mut rows = Vec::new();
        let mut n = 0;
        for a in &train {
            let v = plain.local_vectors(a).unwrap();
            n += v.rows();
            rows.extend_from_slice(v.as_slice());
        }
        let x = Matrix::from_vec(n, 12, rows).unwrap();
        let w = Arc::new(Whitening::learner("train", 6).learn(&x).unwrap());
        let white = DescriptorConfig::new(kind)
            .k(3)
            .whitening(w.clone())
            .whiten_dim(4)
            .build()
            .unwrap();
        let a = acts(4, 6, 12, 999);
        let d = white.describe(&a).unwrap();
        assert_eq!(d.vector.len(), 4, "{kind}");
        assert!((norm(&d.vector) - 1.0).abs() < 1e-5);
        // By hand for the global kinds: whiten the unit pooled vector.
        if kind == DescriptorKind::Gem {
            let local = plain.local_vectors(&a).unwrap();
            let want = w.apply(local.row(0), DEFAULT_WHITEN_POWER, 4).unwrap();
            for (x, y) in d.vector.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5);
            }
        }
    }
    let _ = tempfile::tempdir;
}

use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

#[test]
fn region_coverage_by_hand() {
    // One row of four 10-pixel cells. Factor 0 lies on the left half (concept length 2),
    // factor 1 spreads over all four cells (concept length 1).
    let grid = CellGrid {
        rows: 1,
        cols: 4,
        image_width: 40,
        image_height: 10,
    };
    let f = Factorization {
        u: Matrix::from_vec(4, 2, vec![1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]).unwrap(),
        v: Matrix::from_vec(2, 2, vec![2.0, 0.0, 0.0, 1.0]).unwrap(),
        iterations: 1,
        rel_error: 0.0,
    };
    let d = DescriptorConfig::new(DescriptorKind::NmfV)
        .k(2)
        .build()
        .unwrap();
    let left = BBox::new(0.0, 0.0, 20.0, 10.0).unwrap();
    let r = d.describe_factors(&grid, f.clone(), Some(&left)).unwrap();
    // Kept: factor 0 (all of its mass inside); factor 1 has half of its mass inside.
    // Masses inside: 1.0 · 2 · 2 = 4 and 0.5 · 4 · 1 = 2, so the kept factor explains 4/6.
    assert_eq!(r.kept, vec![0]);
    assert!((r.region_coverage().unwrap() - 4.0 / 6.0).abs() < 1e-6);
    // The whole image keeps both: everything explained.
    let whole = BBox::new(0.0, 0.0, 40.0, 10.0).unwrap();
    let w = d.describe_factors(&grid, f.clone(), Some(&whole)).unwrap();
    assert!((w.region_coverage().unwrap() - 1.0).abs() < 1e-6);
    // No region, or a pooled kind: no coverage.
    assert!(d
        .describe_factors(&grid, f, None)
        .unwrap()
        .region_coverage()
        .is_none());
    let mac = DescriptorConfig::new(DescriptorKind::Mac).build().unwrap();
    let a = acts(2, 3, 4, 1);
    assert!(mac
        .describe_region(&a, &BBox::new(0.0, 0.0, 10.0, 10.0).unwrap())
        .unwrap()
        .region_coverage()
        .is_none());
}
