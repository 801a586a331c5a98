//! The feature pipeline as the index's extractor: decoding, the network and describing run as
//! overlapping stages; the results must be those of describing each file alone, in order, with
//! bad files reported by name and without disturbing their neighbours.

use deepfactor::backbone::TensorMap;
use deepfactor::backbone::{BackboneBuilder, BackboneKind};
use deepfactor::descriptor::{DescriptorConfig, DescriptorKind};
use deepfactor::index::Extractor;
use deepfactor::pipeline::Pipeline;
use std::path::PathBuf;

fn write_photo(path: &std::path::Path, w: u32, h: u32, seed: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = seed
            .wrapping_mul(2_654_435_761)
            .wrapping_add(x * 31 + y * 17);
        image::Rgb([(v % 251) as u8, (v / 7 % 253) as u8, (v / 13 % 247) as u8])
    })
    .save(path)
    .unwrap();
}

#[test]
fn pipelined_extraction_equals_describing_each_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Runs of equal input sizes (batched together, up to 3 at a time) and size changes, with
    // an unreadable file and a missing one in between.
    let sizes = [
        (160, 120),
        (160, 120),
        (160, 120),
        (160, 120),
        (120, 160),
        (160, 120),
        (200, 100),
    ];
    let mut paths: Vec<PathBuf> = Vec::new();
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let p = dir.path().join(format!("p{i}.png"));
        write_photo(&p, w, h, i as u32);
        paths.push(p);
        if i == 1 {
            let bad = dir.path().join("broken.jpg");
            std::fs::write(&bad, b"not a jpeg").unwrap();
            paths.push(bad);
        }
        if i == 4 {
            paths.push(dir.path().join("missing.png"));
        }
    }
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .input_size(96)
        .batch_size(3)
        .build_from_tensors(TensorMap::synthetic(3))
        .unwrap();
    let pipeline = Pipeline::new(
        backbone,
        DescriptorConfig::new(DescriptorKind::NmfVu)
            .build()
            .unwrap(),
    );
    let results = pipeline.extract(&paths);
    assert_eq!(results.len(), paths.len());
    for (p, r) in paths.iter().zip(&results) {
        let name = p.file_name().unwrap().to_string_lossy();
        if name == "broken.jpg" || name == "missing.png" {
            let e = r.as_ref().expect_err("a bad file must give an error");
            assert!(e.to_string().contains(&*name), "{name}: {e}");
            continue;
        }
        let got = r.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        let (acts, alone) = pipeline.describe_path(p).unwrap();
        assert_eq!(
            (got.width, got.height),
            (acts.grid.image_width, acts.grid.image_height)
        );
        assert_eq!(got.descriptor.len(), alone.vector.len());
        let diff = got
            .descriptor
            .iter()
            .zip(&alone.vector)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{name}: descriptor differs by {diff}");
        assert!(got.factors.is_some(), "{name}: NMF V+U keeps factors");
    }
}
