//! `nmf`: milliseconds per multiplicative-update iteration of the CPU engine.
//!
//! Cases (ReLU-like synthetic activations, about 90% zeros, generated from fixed seeds):
//! - `dense` / `sparse`: one 19600 × 512 matrix (VGG conv5 over 100 images at 224 px) at
//!   K ∈ {1, 8, 64, 500}, with the engine forced to the dense or the CSR layout;
//! - `batch-dense` / `batch-sparse`: 256 images of 32 × 43 cells × 512 channels, fitted
//!   independently in one `fit_batch` call, K = 8.
//!
//! Each case times a full `fit` (NNDSVDa initialisation included, `tol = 0`) and divides by the
//! iterations. With `--out DIR` the matrices go to `DIR` as `.npy` files with a `cases.json`
//! manifest, so that `scripts/bench_nmf_sklearn.py` can time scikit-learn and numpy on exactly
//! the same numbers (`scripts/bench_nmf.sh` runs both and prints the ratios).
//!
//! Options: `--iters N` (200), `--ks 1,8,64,500`, `--cases dense,sparse,batch-dense,batch-sparse`,
//! `--batch N` (256), `--out DIR`, `--zeros F` (fraction of zero entries, 0.9),
//! `--device cpu|cuda` (time the candle tensor path,
//! [`Nmf::fit_tensor`], on that device instead of the slice engine; `cuda` needs
//! `--features cuda`; the `dense`/`sparse` distinction does not apply there, both run the same
//! tensor code). Diagnostic cases, not run by default: `gemm` (GFLOP/s of a few product
//! shapes) and `eigen` (symmetric eigendecomposition times).

use candle_core::{Device, Tensor};
use deepfactor::linalg::Matrix;
use deepfactor::nmf::{Layout, Nmf};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Options {
    iters: usize,
    ks: Vec<usize>,
    cases: Vec<String>,
    batch: usize,
    out: Option<PathBuf>,
    device: Option<String>,
    zeros: f64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        iters: 200,
        ks: vec![1, 8, 64, 500],
        cases: ["dense", "sparse", "batch-dense", "batch-sparse"]
            .map(String::from)
            .to_vec(),
        batch: 256,
        out: None,
        device: None,
        zeros: 0.9,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--iters" => o.iters = val()?.parse().map_err(|e| format!("--iters: {e}"))?,
            "--batch" => o.batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--ks" => {
                o.ks = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--ks: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--cases" => o.cases = val()?.split(',').map(String::from).collect(),
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--device" => o.device = Some(val()?.clone()),
            "--zeros" => o.zeros = val()?.parse().map_err(|e| format!("--zeros: {e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// ReLU-like activations: non-negative rank-`rank` structure plus noise, thresholded so that
/// `zeros` of the entries are exactly zero.
fn activations(p: usize, c: usize, rank: usize, zeros: f64, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gamma = |n: usize| -> Vec<f32> {
        // Products of uniforms: skewed, non-negative, like pooled activations.
        (0..n)
            .map(|_| (rng.random::<f32>() * rng.random::<f32>() * rng.random::<f32>()) * 3.0)
            .collect()
    };
    let w = Matrix::from_vec(p, rank, gamma(p * rank)).expect("shape");
    let h = Matrix::from_vec(rank, c, gamma(rank * c)).expect("shape");
    let mut x = w.matmul(&h).expect("shapes fit");
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9);
    for v in x.as_mut_slice() {
        *v += (rng.random::<f32>() - 0.5) * 0.5;
    }
    let mut sorted = x.as_slice().to_vec();
    let cut = ((sorted.len() as f64 * zeros) as usize).min(sorted.len() - 1);
    let (_, t, _) = sorted.select_nth_unstable_by(cut, |a, b| a.total_cmp(b));
    let t = *t;
    for v in x.as_mut_slice() {
        *v = (*v - t).max(0.0);
    }
    x
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), String> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let mut head = b"\x93NUMPY\x01\x00".to_vec();
    head.extend_from_slice(&(header.len() as u16).to_le_bytes());
    head.extend_from_slice(header.as_bytes());
    f.write_all(&head).map_err(|e| e.to_string())?;
    for v in data {
        f.write_all(&v.to_le_bytes()).map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())
}

fn nmf(k: usize, iters: usize, layout: Layout) -> Result<Nmf, String> {
    Nmf::new(k)
        .max_iter(iters)
        .tol(0.0)
        .layout(layout)
        .build()
        .map_err(|e| e.to_string())
}

/// Best of `reps` timings of `f`, in milliseconds.
fn time_ms(reps: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

fn device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| format!("cuda device: {e}")),
        other => Err(format!("unknown device {other} (cpu or cuda)")),
    }
}

/// `images` stacked as one `B × P × C` tensor on `dev`.
fn stack(images: &[&Matrix], dev: &Device) -> Result<Tensor, String> {
    let (p, c) = images[0].shape();
    let mut data = Vec::with_capacity(images.len() * p * c);
    for m in images {
        data.extend_from_slice(m.as_slice());
    }
    Tensor::from_vec(data, (images.len(), p, c), dev).map_err(|e| e.to_string())
}

/// Milliseconds of one `fit_tensor` of `t` (best of `reps`) and the mean relative error.
fn time_tensor(model: &Nmf, t: &Tensor, reps: usize) -> Result<(f64, f64), String> {
    let mut err = 0.0;
    let ms = time_ms(reps, || {
        let f = model.fit_tensor(t).map_err(|e| e.to_string())?;
        err = f.rel_error.iter().sum::<f64>() / f.rel_error.len() as f64;
        Ok(())
    })?;
    Ok((ms, err))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let dev = o.device.as_deref().map(device).transpose()?;
    if let Some(dir) = &o.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    eprintln!(
        "nmf bench: {} rayon threads, {} iterations per fit",
        rayon::current_num_threads(),
        o.iters
    );
    let mut manifest = Vec::new();
    let wants = |c: &str| o.cases.iter().any(|x| x == c);
    if wants("eigen") {
        for n in [128usize, 512, 1280] {
            let a = activations(n, n, n, 0.0, 7);
            let g = a.t_matmul(&a).map_err(|e| e.to_string())?;
            let g64: Vec<f64> = g.as_slice().iter().map(|&v| v as f64).collect();
            let ms = time_ms(1, || {
                deepfactor::linalg::symmetric_eigen(n, &g64)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?;
            println!("eigen {n}: {ms:.1} ms");
        }
    }
    if wants("gemm") {
        for &(m, k, n, tl, tr) in &[
            (19600usize, 512usize, 18usize, false, false),
            (19600, 512, 8, false, true),
            (8, 19600, 512, true, false),
            (19600, 512, 64, false, false),
            (512, 19600, 512, true, false),
            (1000, 1000, 1000, false, false),
        ] {
            let a = activations(if tl { k } else { m }, if tl { m } else { k }, 4, 0.0, 5);
            let b = activations(if tr { n } else { k }, if tr { k } else { n }, 4, 0.0, 6);
            let ms = time_ms(3, || {
                let r = match (tl, tr) {
                    (false, false) => a.matmul(&b),
                    (true, false) => a.t_matmul(&b),
                    (false, true) => a.matmul_t(&b),
                    _ => unreachable!(),
                };
                r.map(|_| ()).map_err(|e| e.to_string())
            })?;
            println!(
                "gemm {m}x{k}x{n} tl={tl} tr={tr}: {ms:.2} ms, {:.1} GFLOP/s",
                2.0 * (m * k * n) as f64 / ms / 1e6
            );
        }
    }

    if wants("dense") || wants("sparse") {
        let a = activations(19600, 512, 40, o.zeros, 1);
        let zeros =
            a.as_slice().iter().filter(|v| **v == 0.0).count() as f64 / a.as_slice().len() as f64;
        eprintln!("single matrix 19600×512, {:.1}% zeros", zeros * 100.0);
        if let Some(dir) = &o.out {
            write_npy(&dir.join("single.npy"), &[a.rows(), a.cols()], a.as_slice())?;
        }
        for (case, layout) in [("dense", Layout::Dense), ("sparse", Layout::Sparse)] {
            if !wants(case) {
                continue;
            }
            for &k in &o.ks {
                let model = nmf(k, o.iters, layout)?;
                let reps = if k >= 64 { 1 } else { 3 };
                if let Some(dev) = &dev {
                    let t = stack(&[&a], dev)?;
                    let (ms, err) = time_tensor(&model, &t, reps)?;
                    let (init_ms, _) = time_tensor(&nmf(k, 0, layout)?, &t, reps)?;
                    println!(
                        "case={case} K={k} ours_ms={:.3} init_ms={init_ms:.1} rel_error={err:.5} engine=tensor-{}",
                        ms / o.iters as f64,
                        o.device.as_deref().unwrap_or("")
                    );
                    manifest.push(format!(
                        "{{\"case\":\"{case}\",\"k\":{k},\"file\":\"single.npy\",\"sparse\":{},\"iters\":{}}}",
                        case == "sparse",
                        o.iters
                    ));
                    continue;
                }
                let mut err = 0.0;
                let ms = time_ms(reps, || {
                    let f = model.fit(&a).map_err(|e| e.to_string())?;
                    err = f.rel_error;
                    Ok(())
                })?;
                let init = nmf(k, 0, layout)?;
                let init_ms =
                    time_ms(reps, || init.fit(&a).map(|_| ()).map_err(|e| e.to_string()))?;
                println!(
                    "case={case} K={k} ours_ms={:.3} init_ms={init_ms:.1} rel_error={err:.5}",
                    ms / o.iters as f64
                );
                manifest.push(format!(
                    "{{\"case\":\"{case}\",\"k\":{k},\"file\":\"single.npy\",\"sparse\":{},\"iters\":{}}}",
                    case == "sparse",
                    o.iters
                ));
            }
        }
    }

    if wants("batch-dense") || wants("batch-sparse") {
        let images: Vec<Matrix> = (0..o.batch)
            .map(|i| activations(32 * 43, 512, 12, o.zeros, 1000 + i as u64))
            .collect();
        if let Some(dir) = &o.out {
            let mut all = Vec::with_capacity(o.batch * 32 * 43 * 512);
            for m in &images {
                all.extend_from_slice(m.as_slice());
            }
            write_npy(&dir.join("batch.npy"), &[o.batch, 32 * 43, 512], &all)?;
        }
        for (case, layout) in [
            ("batch-dense", Layout::Dense),
            ("batch-sparse", Layout::Sparse),
        ] {
            if !wants(case) {
                continue;
            }
            let model = nmf(8, o.iters, layout)?;
            if let Some(dev) = &dev {
                let refs: Vec<&Matrix> = images.iter().collect();
                let t = stack(&refs, dev)?;
                let (ms, err) = time_tensor(&model, &t, 2)?;
                let (init_ms, _) = time_tensor(&nmf(8, 0, layout)?, &t, 1)?;
                println!(
                    "case={case} K=8 ours_ms={:.3} init_ms={init_ms:.1} rel_error={err:.5} engine=tensor-{}",
                    ms / o.iters as f64,
                    o.device.as_deref().unwrap_or("")
                );
                manifest.push(format!(
                    "{{\"case\":\"{case}\",\"k\":8,\"file\":\"batch.npy\",\"sparse\":{},\"iters\":{}}}",
                    case == "batch-sparse",
                    o.iters
                ));
                continue;
            }
            let mut err = 0.0;
            let ms = time_ms(2, || {
                let fs = model.fit_batch(&images).map_err(|e| e.to_string())?;
                err = fs.iter().map(|f| f.rel_error).sum::<f64>() / fs.len() as f64;
                Ok(())
            })?;
            let init = nmf(8, 0, layout)?;
            let init_ms = time_ms(1, || {
                init.fit_batch(&images)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?;
            println!(
                "case={case} K=8 ours_ms={:.3} init_ms={init_ms:.1} rel_error={err:.5}",
                ms / o.iters as f64
            );
            manifest.push(format!(
                "{{\"case\":\"{case}\",\"k\":8,\"file\":\"batch.npy\",\"sparse\":{},\"iters\":{}}}",
                case == "batch-sparse",
                o.iters
            ));
        }
    }

    if let Some(dir) = &o.out {
        let path = dir.join("cases.json");
        std::fs::write(&path, format!("[{}]\n", manifest.join(",\n")))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
