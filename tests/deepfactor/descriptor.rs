//! Descriptors: agreement with an independent NumPy / scikit-learn implementation
//! (`scripts/descriptor_fixtures.py`), whitening's Ledoit–Wolf shrinkage against
//! scikit-learn, and a small real retrieval with EfficientNet-Lite0.

use crate::common;
use deepfactor::backbone::{BackboneBuilder, BackboneKind, WeightSource};
use deepfactor::descriptor::{crow, extract_crop, DescriptorConfig, DescriptorKind, Whitening};
use deepfactor::eval::GroundTruth;
use deepfactor::linalg::Matrix;
use deepfactor::Activations;
use deepfactor::{BBox, CellGrid};
use serde_json::Value;

fn fixture() -> Value {
    let path = common::repo_root().join("tests/fixtures/descriptor/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn fixture_activations(fx: &Value) -> Activations {
    let n = |k: &str| fx[k].as_u64().unwrap() as usize;
    let (rows, cols, c) = (n("rows"), n("cols"), n("channels"));
    Activations {
        grid: CellGrid {
            rows,
            cols,
            image_width: n("image_width") as u32,
            image_height: n("image_height") as u32,
        },
        data: Matrix::from_vec(rows * cols, c, floats(&fx["activations"])).unwrap(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (na * nb)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every kind agrees with the independent implementation: the pooled ones to float rounding,
/// the NMF ones (our f32 multiplicative updates against scikit-learn's f64) to a cosine of
/// 0.99999 (they agree to f32 rounding today), with and without the region filter.
#[test]
fn descriptors_match_an_independent_implementation() {
    let fx = fixture();
    let a = fixture_activations(&fx);
    assert!(
        max_diff(
            &crow::channel_weights(&a.data),
            &floats(&fx["crow_channel_weights"])
        ) < 1e-5
    );
    assert!(
        max_diff(
            &crow::spatial_weights(&a.data),
            &floats(&fx["crow_spatial_weights"])
        ) < 1e-5
    );
    let k = fx["k"].as_u64().unwrap() as usize;
    let bb = floats(&fx["box"]);
    let bbox = BBox::new(bb[0], bb[1], bb[2], bb[3]).unwrap();
    for (kind, key) in [
        (DescriptorKind::Mac, "mac"),
        (DescriptorKind::Spoc, "spoc"),
        (DescriptorKind::Gem, "gem"),
        (DescriptorKind::Crow, "crow"),
        (DescriptorKind::Rmac, "rmac"),
    ] {
        let d = DescriptorConfig::new(kind)
            .build()
            .unwrap()
            .describe(&a)
            .unwrap();
        let want = floats(&fx[key]);
        assert!(
            max_diff(&d.vector, &want) < 1e-5,
            "{kind}: {:?} vs {want:?}",
            d.vector
        );
    }
    for (kind, key) in [
        (DescriptorKind::NmfV, "nmf_v"),
        (DescriptorKind::NmfVu, "nmf_vu"),
    ] {
        let d = DescriptorConfig::new(kind).k(k).build().unwrap();
        let whole = d.describe(&a).unwrap();
        let c = cosine(&whole.vector, &floats(&fx[key]));
        assert!(c > 0.99999, "{kind}: cosine {c}");
        let region = d.describe_region(&a, &bbox).unwrap();
        assert_eq!(
            region.kept.len(),
            fx["box_kept"].as_u64().unwrap() as usize,
            "{kind}"
        );
        assert!(!region.fallback);
        let mut masses = region.mass_inside.clone();
        masses.sort_by(f32::total_cmp);
        assert!(
            max_diff(&masses, &floats(&fx["box_masses_sorted"])) < 1e-3,
            "{masses:?}"
        );
        let c = cosine(&region.vector, &floats(&fx[&format!("{key}_box")]));
        assert!(c > 0.99999, "{kind} with box: cosine {c}");
        // The kept rows of V′ carry the concepts of overlapping factors (kept or not), so
        // V+U differs from V by far more than the tolerance above.
        if kind == DescriptorKind::NmfVu {
            let v = cosine(&region.vector, &floats(&fx["nmf_v_box"]));
            assert!(v < 0.99995, "V+U should differ from V: {v}");
        }
    }
}

/// The whitening's Ledoit–Wolf shrinkage equals scikit-learn's `ledoit_wolf_shrinkage`, with
/// more and with fewer vectors than dimensions.
#[test]
fn ledoit_wolf_shrinkage_matches_scikit_learn() {
    let fx = fixture();
    for case in fx["ledoit_wolf"].as_array().unwrap() {
        let n = case["n"].as_u64().unwrap() as usize;
        let d = case["d"].as_u64().unwrap() as usize;
        let x = Matrix::from_vec(n, d, floats(&case["x"])).unwrap();
        let w = Whitening::learner("fixture", n).learn(&x).unwrap();
        let want = case["shrinkage"].as_f64().unwrap();
        assert!(
            (w.shrinkage() - want).abs() < 1e-4 * want.max(1e-3),
            "n={n} d={d}: {} vs {want}",
            w.shrinkage()
        );
        assert_eq!(w.max_output_dim(), d.min(n - 1));
    }
}

/// Real weights on a slice of instance-dev: for the first query, its relevant images and a
/// few distractors, the crop query of every kind and the filter query of the NMF kinds rank
/// a relevant image first; a whitening learned on other images round-trips through a file
/// and keeps the crop query's top result relevant.
#[test]
fn real_features_retrieve_the_query_object() {
    let Some(weights) = common::lite0_weights() else {
        return;
    };
    let Some(root) = common::shared_data("instance-dev") else {
        return;
    };
    let gt = GroundTruth::load(&root).unwrap();
    let q = &gt.queries()[0];
    let (pos, junk) = q.relevance.standard();
    let distractors: Vec<usize> = (0..gt.images().len())
        .filter(|i| !pos.contains(i) && !junk.contains(i))
        .step_by(97)
        .take(6)
        .collect();
    let db: Vec<usize> = pos.iter().chain(&distractors).copied().collect();
    let path = |name: &str| root.join("jpg").join(format!("{name}.jpg"));
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .weights(WeightSource::File(weights))
        .layer("head")
        .input_size(512)
        .build()
        .unwrap();
    let paths: Vec<_> = db.iter().map(|&i| path(&gt.images()[i])).collect();
    let acts: Vec<Activations> = backbone
        .extract_paths(&paths)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(acts[0].data.cols(), 1280);
    let bbox = q.bbox.unwrap();
    let query_path = path(&q.image);
    let crop = extract_crop(&backbone, &query_path, &bbox).unwrap();
    let full = backbone.extract_path(&query_path).unwrap();
    let top = |d: &deepfactor::descriptor::Describer, qv: &[f32]| {
        let mut best = (f32::NEG_INFINITY, 0);
        for (i, a) in acts.iter().enumerate() {
            let s: f32 = d
                .describe(a)
                .unwrap()
                .vector
                .iter()
                .zip(qv)
                .map(|(x, y)| x * y)
                .sum();
            if s > best.0 {
                best = (s, i);
            }
        }
        best.1
    };
    for kind in DescriptorKind::ALL {
        let d = DescriptorConfig::new(kind).build().unwrap();
        let r = d.recipe(&backbone);
        assert_eq!((r.layer.as_str(), r.input_size, r.dim), ("head", 512, 1280));
        assert_eq!(r.descriptor.kind(), Some(kind));
        let qv = d.describe(&crop).unwrap().vector;
        assert!(
            top(&d, &qv) < pos.len(),
            "{kind}: crop query's best match is a distractor"
        );
        if kind.is_nmf() {
            let f = d.describe_region(&full, &bbox).unwrap();
            assert!(!f.kept.is_empty());
            assert!(
                top(&d, &f.vector) < pos.len(),
                "{kind}: filter query missed"
            );
        }
    }
    // Whitening learned on other images (the distractors not used above, 10 of them).
    let train_paths: Vec<_> = (0..gt.images().len())
        .filter(|i| !db.contains(i) && !pos.contains(i) && !junk.contains(i))
        .step_by(53)
        .take(10)
        .map(|i| path(&gt.images()[i]))
        .collect();
    let d = DescriptorConfig::new(DescriptorKind::NmfV).build().unwrap();
    let mut rows = Vec::new();
    let mut n = 0;
    for r in backbone.extract_paths(&train_paths) {
        let v = d.local_vectors(&r.unwrap()).unwrap();
        n += v.rows();
        rows.extend_from_slice(v.as_slice());
    }
    let x = Matrix::from_vec(n, 1280, rows).unwrap();
    let w = Whitening::learner("instance-dev sample", train_paths.len())
        .learn(&x)
        .unwrap();
    // 10 images × 8 factors, fewer than 1280 dimensions: capped at n − 1.
    assert_eq!(w.max_output_dim(), n - 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whitening.safetensors");
    w.save(&file).unwrap();
    let w = std::sync::Arc::new(Whitening::load(&file).unwrap());
    let white = DescriptorConfig::new(DescriptorKind::NmfV)
        .whitening(w.clone())
        .build()
        .unwrap();
    assert_eq!(white.recipe(&backbone).dim, n - 1);
    assert!(white
        .recipe(&backbone)
        .whitening
        .unwrap()
        .to_string()
        .starts_with(w.id()));
    let qv = white.describe(&crop).unwrap().vector;
    assert!(top(&white, &qv) < pos.len(), "whitened crop query missed");
}

/// `deepfactor whiten info` reads a whitening file and names a damaged one;
/// `deepfactor whiten learn` (real weights) learns from a folder of photos.
#[test]
fn whiten_cli() {
    let bin = env!("CARGO_BIN_EXE_deepfactor");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.safetensors");
    let x = Matrix::from_vec(
        4,
        3,
        vec![1.0, 0.0, 2.0, 0.5, 1.0, 0.0, 2.0, 2.0, 1.0, 0.0, 1.5, 0.5],
    )
    .unwrap();
    Whitening::learner("cli-set", 4)
        .learn(&x)
        .unwrap()
        .save(&file)
        .unwrap();
    let out = std::process::Command::new(bin)
        .args(["whiten", "info", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["training_set"], "cli-set");
    assert_eq!(v["max_output_dim"], 3);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new(bin)
        .args(["whiten", "info"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w.safetensors") && err.contains("whitening file"),
        "{err}"
    );

    let (Some(_), Some(photos)) = (common::lite0_weights(), common::photos()) else {
        return;
    };
    let out_file = dir.path().join("photos.safetensors");
    let out = std::process::Command::new(bin)
        .args(["whiten", "learn", "--descriptor", "gem", "--json", "--out"])
        .arg(&out_file)
        .arg(&photos)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = v["training_images"].as_u64().unwrap() as usize;
    assert!(images >= 6, "{v}");
    // One GeM vector per photo: at most images − 1 axes.
    assert_eq!(v["max_output_dim"].as_u64().unwrap() as usize, images - 1);
    let w = Whitening::load(&out_file).unwrap();
    assert_eq!(w.input_dim(), 1280);
    let out = std::process::Command::new(bin)
        .args(["whiten", "learn", "--descriptor", "vlad", "--out"])
        .arg(&out_file)
        .arg(&photos)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown descriptor"));
}

/// `whiten learn` reads every format the index reads (it used to skip WebP, TIFF and BMP), and
/// an index built with the learned whitening keeps it beside itself and searches with it.
#[test]
fn whiten_learn_on_webp_tiff_bmp_and_index_with_it() {
    let Some(weights) = common::lite0_weights() else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_deepfactor");
    let w = weights.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    let src = common::repo_root().join("examples/photos");
    let formats = ["webp", "tif", "tiff", "bmp", "webp", "bmp"];
    let names = [
        "aloe_left",
        "box",
        "chelsea",
        "coffee",
        "rocket",
        "motorcycle_left",
    ];
    for (name, ext) in names.iter().zip(formats) {
        let img = deepfactor::images::load_rgb(&src.join(format!("{name}.jpg"))).unwrap();
        let img = image::imageops::thumbnail(&img, 200, 200);
        img.save(photos.join(format!("{name}.{ext}"))).unwrap();
    }
    let out_file = dir.path().join("w.safetensors");
    let out = std::process::Command::new(bin)
        .args(["whiten", "learn", "--descriptor", "gem", "--size", "160"])
        .args(["--weights", w, "--json", "--out"])
        .arg(&out_file)
        .arg(&photos)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["training_images"], names.len() as u64, "{v}");
    let whitening = Whitening::load(&out_file).unwrap();

    // An index with it: the companion file is written, verified, and used by search.
    let index = dir.path().join("ix");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (p, ix, wf) = (
        photos.to_str().unwrap(),
        index.to_str().unwrap(),
        out_file.to_str().unwrap(),
    );
    run(&[
        "index",
        "build",
        p,
        "-o",
        ix,
        "--descriptor",
        "gem",
        "--size",
        "160",
        "--weights",
        w,
        "--whitening",
        wf,
    ]);
    assert!(index
        .join(format!("{}.whitening", whitening.id()))
        .is_file());
    run(&["index", "verify", ix]);
    let query = photos.join("box.tif");
    let out = run(&[
        "search",
        ix,
        query.to_str().unwrap(),
        "-k",
        "1",
        "--weights",
        w,
        "--json",
    ]);
    let res: Value = serde_json::from_str(&out).unwrap();
    assert!(
        res["hits"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("box.tif"),
        "{out}"
    );
}
