//! `pipeline`: images per second of the indexing pipeline's compute — features, NMF and the
//! NMF V+U descriptor (with what an index keeps of the factors) — for a batch of equal-size
//! images on a device, through [`Pipeline::extract_prepared`]: on a GPU the network and the
//! batch's factorizations run there and only the factors come back; on the CPU each image is
//! factorized on its own, in parallel. Decoding is done once, before timing.
//! `scripts/gpu-bench.sh` runs this on the GPU machine beside the same work in PyTorch.
//!
//! Options: `--device cpu|cuda` (cpu), `--batch B` (16), `--iters N` (3; the best is kept,
//! after a warm-up), `--weights FILE` (EfficientNet-Lite0 weights; default synthetic ones, as
//! speed does not depend on their values), `--photos DIR` (default `examples/photos`; each is
//! resized to 683×512, repeated to fill the batch).

use deepfactor::backbone::TensorMap;
use deepfactor::backbone::{BackboneBuilder, BackboneKind, Prepared, WeightSource};
use deepfactor::descriptor::{DescriptorConfig, DescriptorKind};
use deepfactor::pipeline::Pipeline;
use std::path::PathBuf;
use std::time::Instant;

pub fn run(args: &[String]) -> Result<(), String> {
    let mut device = "cpu".to_string();
    let mut batch = 16usize;
    let mut iters = 3usize;
    let mut weights: Option<PathBuf> = None;
    let mut photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/photos");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--device" => device = val()?,
            "--batch" => batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--iters" => iters = val()?.parse().map_err(|e| format!("--iters: {e}"))?,
            "--weights" => weights = Some(PathBuf::from(val()?)),
            "--photos" => photos = PathBuf::from(val()?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if batch == 0 || iters == 0 {
        return Err("--batch and --iters must be at least 1".into());
    }
    let dev = match device.as_str() {
        "cpu" => candle_core::Device::Cpu,
        "cuda" => candle_core::Device::new_cuda(0).map_err(|e| format!("cuda device: {e}"))?,
        other => return Err(format!("unknown device {other} (cpu or cuda)")),
    };
    let builder = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .device(dev)
        .batch_size(batch);
    let backbone = match &weights {
        Some(w) => builder.weights(WeightSource::File(w.clone())).build(),
        None => builder.build_from_tensors(TensorMap::synthetic(1)),
    }
    .map_err(|e| e.to_string())?;
    let pipeline = Pipeline::new(
        backbone,
        DescriptorConfig::new(DescriptorKind::NmfVu)
            .build()
            .map_err(|e| e.to_string())?,
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&photos)
        .map_err(|e| format!("{}: {e}", photos.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no photos in {}", photos.display()));
    }
    let preprocess = *pipeline.backbone().preprocess();
    let decoded: Vec<Prepared> = files
        .iter()
        .map(|p| {
            let img = image::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let img = image::imageops::resize(
                &img.to_rgb8(),
                683,
                512,
                image::imageops::FilterType::Triangle,
            );
            preprocess.prepare(&img).map_err(|e| e.to_string())
        })
        .collect::<Result<_, String>>()?;
    let images: Vec<Prepared> = (0..batch)
        .map(|i| decoded[i % decoded.len()].clone())
        .collect();
    let (h, w) = images[0].input_hw();
    let run = || -> Result<(), String> {
        let out = pipeline
            .extract_prepared(&images)
            .map_err(|e| e.to_string())?;
        if out.len() != images.len() {
            return Err("the pipeline returned too few results".into());
        }
        std::hint::black_box(out);
        Ok(())
    };
    run()?; // warm-up: kernels, allocations, thread pool
    let mut best = f64::INFINITY;
    for _ in 0..iters {
        let t = Instant::now();
        run()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "pipeline device={device} batch={batch} input={h}x{w} weights={} ours_img_s={:.3} ours_ms_per_batch={:.1}",
        if weights.is_some() { "file" } else { "synthetic" },
        batch as f64 / best,
        best * 1e3
    );
    Ok(())
}
