//! `descriptor`: descriptors per second (activations → descriptor) for every kind, on
//! activations of the EfficientNet-Lite0 `head` shape at 512 px (16 × 22 cells × 1280
//! channels).
//!
//! The activations are synthetic unless `--image PATH` is given and the Lite0 weights are
//! present (then the image's real activations at 512 px are used). Synthetic activations are
//! non-negative, with a share `--density` of non-zero entries (default 0.05: the head's
//! ReLU6 output is 2–10% non-zero on the dev-set photos, 4.7% on average) laid out in spatial
//! blobs so that NMF has structure to find.
//!
//! Baselines measured in the same run: the bare `Nmf::fit` of the same activations for the
//! NMF kinds (so the ratio is the descriptor's overhead over the factorization) and MAC for
//! the pooled kinds. Learning a whitening from 2048 vectors is timed once at the end.
//!
//! Options: `--rows 16` `--cols 22` `--channels 1280` `--density 0.05` `--k 8`
//! `--images 4` (distinct activation maps cycled through) `--min-secs 5` `--image PATH`.

use deepfactor::backbone::{BackboneBuilder, BackboneKind};
use deepfactor::descriptor::{crow, DescriptorConfig, DescriptorKind, Whitening};
use deepfactor::linalg::Matrix;
use deepfactor::nmf::Nmf;
use deepfactor::Activations;
use deepfactor::CellGrid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    rows: usize,
    cols: usize,
    channels: usize,
    density: f64,
    k: usize,
    images: usize,
    min_secs: f64,
    image: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        rows: 16,
        cols: 22,
        channels: 1280,
        density: 0.05,
        k: 8,
        images: 4,
        min_secs: 5.0,
        image: None,
    };
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let v = it.next().ok_or(format!("{key} needs a value"))?;
        let bad = || format!("bad value {v:?} for {key}");
        match key.as_str() {
            "--rows" => a.rows = v.parse().map_err(|_| bad())?,
            "--cols" => a.cols = v.parse().map_err(|_| bad())?,
            "--channels" => a.channels = v.parse().map_err(|_| bad())?,
            "--density" => a.density = v.parse().map_err(|_| bad())?,
            "--k" => a.k = v.parse().map_err(|_| bad())?,
            "--images" => a.images = v.parse().map_err(|_| bad())?,
            "--min-secs" => a.min_secs = v.parse().map_err(|_| bad())?,
            "--image" => a.image = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown option {key}")),
        }
    }
    if a.rows == 0 || a.cols == 0 || a.channels == 0 || a.images == 0 {
        return Err("rows, cols, channels and images must be positive".into());
    }
    Ok(a)
}

/// Blobs of channels over the grid: each of 12 blobs owns a random set of channels and a
/// rectangle of cells; entries outside every blob are zero, entries inside are non-zero with
/// the probability that gives the requested overall density.
fn synthetic(a: &Args, seed: u64) -> Activations {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (rows, cols, c) = (a.rows, a.cols, a.channels);
    let mut member = vec![false; rows * cols * c];
    for _ in 0..12 {
        let h = rng.random_range(1..=rows.div_ceil(2));
        let w = rng.random_range(1..=cols.div_ceil(2));
        let r0 = rng.random_range(0..=rows - h);
        let c0 = rng.random_range(0..=cols - w);
        let chans: Vec<usize> = (0..c).filter(|_| rng.random::<f64>() < 0.3).collect();
        for r in r0..r0 + h {
            for col in c0..c0 + w {
                for &ch in &chans {
                    member[(r * cols + col) * c + ch] = true;
                }
            }
        }
    }
    let covered = member.iter().filter(|&&m| m).count();
    let p = (a.density * member.len() as f64 / covered.max(1) as f64).min(1.0);
    let data = member
        .iter()
        .map(|&m| {
            if m && rng.random::<f64>() < p {
                rng.random_range(0.1f32..6.0)
            } else {
                0.0
            }
        })
        .collect();
    Activations {
        grid: CellGrid {
            rows,
            cols,
            image_width: (cols * 32) as u32,
            image_height: (rows * 32) as u32,
        },
        data: Matrix::from_vec(rows * cols, c, data).expect("shape matches by construction"),
    }
}

/// Calls `f` on the activations in turn until `min_secs` have passed; returns calls per second.
fn per_second(acts: &[Activations], min_secs: f64, mut f: impl FnMut(&Activations)) -> f64 {
    f(&acts[0]); // warm-up
    let t = Instant::now();
    let mut n = 0usize;
    while n < acts.len() || t.elapsed().as_secs_f64() < min_secs {
        f(&acts[n % acts.len()]);
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

pub fn run(args: &[String]) -> Result<(), String> {
    let a = parse(args)?;
    let acts: Vec<Activations> = match &a.image {
        Some(path) => {
            let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
                .layer("head")
                .input_size(512)
                .build()
                .map_err(|e| e.to_string())?;
            vec![backbone.extract_path(path).map_err(|e| e.to_string())?]
        }
        None => (0..a.images as u64).map(|s| synthetic(&a, s)).collect(),
    };
    let g = acts[0].grid;
    let density = acts[0].data.as_slice().iter().filter(|&&v| v > 0.0).count() as f64
        / acts[0].data.as_slice().len() as f64;
    println!(
        "descriptor: {} activations of {}×{} cells × {} channels (density {:.2}), K = {}, {} rayon threads",
        if a.image.is_some() { "real" } else { "synthetic" },
        g.rows,
        g.cols,
        acts[0].data.cols(),
        density,
        a.k,
        rayon::current_num_threads()
    );
    let nmf = Nmf::new(a.k)
        .max_iter(deepfactor::descriptor::DEFAULT_MAX_ITER)
        .tol(deepfactor::descriptor::DEFAULT_TOL)
        .build()
        .map_err(|e| e.to_string())?;
    let fit = per_second(&acts, a.min_secs, |x| {
        let w = crow::channel_weights(&x.data);
        let mut m = x.data.clone();
        for p in 0..m.rows() {
            for (v, w) in m.row_mut(p).iter_mut().zip(&w) {
                *v *= w;
            }
        }
        black_box(nmf.fit(&m).expect("valid input"));
    });
    let mac = DescriptorConfig::new(DescriptorKind::Mac)
        .build()
        .map_err(|e| e.to_string())?;
    let mac_rate = per_second(&acts, a.min_secs, |x| {
        black_box(mac.describe(x).expect("valid input"));
    });
    println!(
        "{:<10} {:>12} {:>10}  baseline",
        "kind", "desc/s", "ms each"
    );
    println!(
        "{:<10} {:>12.1} {:>10.3}  (baseline: CroW weights + bare Nmf::fit)",
        "nmf-fit",
        fit,
        1000.0 / fit
    );
    for kind in DescriptorKind::ALL {
        let d = DescriptorConfig::new(kind)
            .k(a.k)
            .build()
            .map_err(|e| e.to_string())?;
        let rate = if kind == DescriptorKind::Mac {
            mac_rate
        } else {
            per_second(&acts, a.min_secs, |x| {
                black_box(d.describe(x).expect("valid input"));
            })
        };
        let (base, name) = if kind.is_nmf() {
            (fit, "nmf-fit")
        } else {
            (mac_rate, "mac")
        };
        println!(
            "{:<10} {:>12.1} {:>10.3}  {:.2}× the speed of {name}",
            kind.name(),
            rate,
            1000.0 / rate,
            rate / base
        );
    }
    // Region queries of the NMF kinds reuse the factorization: time the part after it.
    let vu = DescriptorConfig::new(DescriptorKind::NmfVu)
        .k(a.k)
        .build()
        .map_err(|e| e.to_string())?;
    let f = vu.factorize(&acts[0]).map_err(|e| e.to_string())?;
    let bbox = deepfactor::BBox::new(0.0, 0.0, g.image_width as f32 / 2.0, g.image_height as f32)
        .map_err(|e| e.to_string())?;
    let region = per_second(&acts[..1], a.min_secs / 2.0, |x| {
        black_box(
            vu.describe_factors(&x.grid, f.clone(), Some(&bbox))
                .expect("valid input"),
        );
    });
    println!(
        "{:<10} {:>12.1} {:>10.3}  nmf-vu region from stored factors (no NMF)",
        "vu-region",
        region,
        1000.0 / region
    );
    // Whitening: learn from 2048 non-negative unit vectors (the rows of V of 256 images at
    // K = 8), more vectors than dimensions, so the covariance path runs.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 2048;
    let mut rows = Vec::with_capacity(n * a.channels);
    for _ in 0..n {
        let mut v: Vec<f32> = (0..a.channels)
            .map(|_| {
                if rng.random::<f64>() < 0.3 {
                    rng.random::<f32>()
                } else {
                    0.0
                }
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        rows.extend(v);
    }
    let x = Matrix::from_vec(n, a.channels, rows).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let w = Whitening::learner("synthetic", n / 8)
        .learn(&x)
        .map_err(|e| e.to_string())?;
    println!(
        "whitening: learned from {n} vectors of {} dims in {:.2?} ({} axes)",
        a.channels,
        t.elapsed(),
        w.max_output_dim()
    );
    Ok(())
}
