//! `backbone`: images per second of feature extraction at 512×683 on the CPU, per backbone, to
//! its default layer, and the process's CPU seconds per image (all threads; the pool's size is
//! `RAYON_NUM_THREADS`). Weights are synthetic (speed does not depend on their values).
//! `scripts/bench_backbone.sh` runs this and the same models in PyTorch, interleaved, and prints
//! the ratios.
//!
//! Options: `--iters N` (default 5), `--batch B` (default 1), `--only NAME`, `--layers` (a
//! profile instead: for each checkpoint of [`checkpoints`] in order, the milliseconds from the
//! input to that layer, best of `--iters`, as lines `layer backbone=… name=… ours_ms=…`;
//! `scripts/profile_backbone.sh` subtracts consecutive ones and sets them beside PyTorch's).

use deepfactor::backbone::TensorMap;
use deepfactor::backbone::{BackboneBuilder, BackboneKind};
use std::time::Instant;

pub fn run(args: &[String]) -> Result<(), String> {
    let mut iters = 5usize;
    let mut batch = 1usize;
    let mut only: Option<String> = None;
    let mut layers = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--iters" => iters = val()?.parse().map_err(|e| format!("--iters: {e}"))?,
            "--batch" => batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--only" => only = Some(val()?),
            "--layers" => layers = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    let (h, w) = (512, 683);
    for kind in BackboneKind::ALL {
        if only.as_deref().is_some_and(|o| o != kind.name()) {
            continue;
        }
        let b = BackboneBuilder::new(kind)
            .build_from_tensors(TensorMap::synthetic(1))
            .map_err(|e| e.to_string())?;
        let input =
            candle_core::Tensor::randn(0f32, 1.0, (batch, 3, h, w), &candle_core::Device::Cpu)
                .map_err(|e| e.to_string())?;
        let layer = kind.default_layer();
        if layers {
            profile(&b, kind, &input, iters)?;
            continue;
        }
        // Warm-up (allocations, thread pool).
        b.forward_layers(&input, &[layer])
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let cpu0 = cpu_seconds();
        for _ in 0..iters {
            let out = b
                .forward_layers(&input, &[layer])
                .map_err(|e| e.to_string())?;
            std::hint::black_box(out);
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = match (cpu0, cpu_seconds()) {
            (Some(a), Some(b)) => format!("{:.3}", (b - a) / (iters * batch) as f64),
            _ => "nan".into(),
        };
        let ips = (iters * batch) as f64 / secs;
        println!(
            "backbone={} layer={layer} input={h}x{w} batch={batch} ours_img_s={ips:.3} ours_ms_per_img={:.1} ours_cpu_s_per_img={cpu}",
            kind.name(),
            1000.0 / ips
        );
    }
    Ok(())
}

/// CPU seconds used by this process so far, all threads (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks of 1/100 s.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The layers a profile stops at, in order, up to the default layer: VGG's convolutions
/// (with their ReLU) and poolings, ResNet's stem, pooling and blocks, Lite0's blocks and head.
pub fn checkpoints(kind: BackboneKind) -> Vec<String> {
    let names: Vec<String> = match kind {
        BackboneKind::EfficientNetLite0 => (0..16)
            .map(|i| format!("blocks.{i}"))
            .chain(["head".to_string()])
            .collect(),
        BackboneKind::Resnet50 => ["conv1", "maxpool"]
            .into_iter()
            .map(String::from)
            .chain(
                [3, 4, 6, 3]
                    .iter()
                    .enumerate()
                    .flat_map(|(s, &n)| (0..n).map(move |b| format!("layer{}.{b}", s + 1))),
            )
            .collect(),
        _ => kind.layers().into_iter().map(|l| l.name).collect(),
    };
    let end = names
        .iter()
        .position(|n| n == kind.default_layer())
        .map_or(names.len(), |i| i + 1);
    names.into_iter().take(end).collect()
}

/// Milliseconds from the input to each of [`checkpoints`], best of `iters` each.
fn profile(
    b: &deepfactor::backbone::Backbone,
    kind: BackboneKind,
    input: &candle_core::Tensor,
    iters: usize,
) -> Result<(), String> {
    b.forward_layers(input, &[kind.default_layer()])
        .map_err(|e| e.to_string())?;
    for name in checkpoints(kind) {
        let mut best = f64::INFINITY;
        for _ in 0..iters.max(1) {
            let t = Instant::now();
            let out = b
                .forward_layers(input, &[name.as_str()])
                .map_err(|e| format!("{name}: {e}"))?;
            std::hint::black_box(out);
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "layer backbone={} name={name} ours_ms={best:.2}",
            kind.name()
        );
    }
    Ok(())
}
