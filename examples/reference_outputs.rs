//! Writes what the library computes natively, as `.npy` files, for the Python package's tests
//! (`tests/python/`) to compare the bindings against bit for bit.
//!
//! ```sh
//! cargo run --example reference_outputs -- nmf MATRIX.json K INIT MAX_ITER TOL OUT_DIR
//! cargo run --example reference_outputs -- features IMAGE OUT.npy
//! cargo run --release --example reference_outputs -- time-nmf ROWS COLS K MAX_ITER CALLS
//! ```
//!
//! `nmf` reads a matrix `{"rows", "cols", "data"}` (the `"a"` member of a JSON object holding
//! one, as `tests/fixtures/nmf/sklearn.json`, or the matrix itself), factorizes it with rank
//! `K`, initialisation `INIT` (`nndsvda`, `nndsvd`, `random:SEED`), `MAX_ITER` iterations and
//! tolerance `TOL`, and writes `OUT_DIR/u.npy` and `OUT_DIR/v.npy`. `features` writes the
//! default backbone's (EfficientNet-Lite0, `head`, 512 px) activations of `IMAGE` as a
//! rows × columns × channels array. `time-nmf` factorizes a seeded random `ROWS × COLS`
//! matrix `CALLS` times and prints the median seconds per call, the baseline that
//! `examples/python/overhead.py` compares `deepfactor.nmf` with.

use anyhow::{bail, Context, Result};
use deepfactor::backbone::{BackboneBuilder, BackboneKind};
use deepfactor::nmf::{Init, Nmf};
use std::io::Write;
use std::path::Path;

/// Writes a little-endian `float32` array in the `.npy` format (version 1.0).
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&u16::try_from(header.len())?.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    data.iter()
        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&out))
        .with_context(|| format!("writing {}", path.display()))
}

fn nmf(args: &[String]) -> Result<()> {
    let [matrix, k, init, max_iter, tol, out] = args else {
        bail!("usage: nmf MATRIX.json K INIT MAX_ITER TOL OUT_DIR");
    };
    let text = std::fs::read_to_string(matrix).with_context(|| format!("reading {matrix}"))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let m = json.get("a").unwrap_or(&json);
    let dim = |key: &str| -> Result<usize> {
        let n = m[key]
            .as_u64()
            .with_context(|| format!("{matrix}: no {key}"))?;
        Ok(usize::try_from(n)?)
    };
    let data: Vec<f32> = serde_json::from_value(m["data"].clone())?;
    let a = deepfactor::linalg::Matrix::from_vec(dim("rows")?, dim("cols")?, data)?;
    let init = match init.split_once(':') {
        Some(("random", seed)) => Init::Random {
            seed: seed.parse()?,
        },
        _ if init == "nndsvda" => Init::Nndsvda,
        _ if init == "nndsvd" => Init::Nndsvd,
        _ => bail!("unknown init {init:?}"),
    };
    let f = Nmf::new(k.parse()?)
        .init(init)
        .max_iter(max_iter.parse()?)
        .tol(tol.parse()?)
        .build()?
        .fit(&a)?;
    let out = Path::new(out);
    std::fs::create_dir_all(out)?;
    write_npy(
        &out.join("u.npy"),
        &[f.u.rows(), f.u.cols()],
        f.u.as_slice(),
    )?;
    write_npy(
        &out.join("v.npy"),
        &[f.v.rows(), f.v.cols()],
        f.v.as_slice(),
    )
}

fn features(args: &[String]) -> Result<()> {
    let [image, out] = args else {
        bail!("usage: features IMAGE OUT.npy");
    };
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0).build()?;
    let acts = backbone.extract_path(Path::new(image))?;
    let shape = [acts.grid.rows, acts.grid.cols, acts.data.cols()];
    write_npy(Path::new(out), &shape, acts.data.as_slice())
}

fn time_nmf(args: &[String]) -> Result<()> {
    let [rows, cols, k, max_iter, calls] = args else {
        bail!("usage: time-nmf ROWS COLS K MAX_ITER CALLS");
    };
    let (rows, cols): (usize, usize) = (rows.parse()?, cols.parse()?);
    // A fixed, non-negative pseudo-random matrix (a linear congruential stream).
    let mut state = 12345u64;
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    let a = deepfactor::linalg::Matrix::from_vec(rows, cols, data)?;
    let nmf = Nmf::new(k.parse()?)
        .max_iter(max_iter.parse()?)
        .tol(0.0)
        .build()?;
    let mut times: Vec<f64> = (0..calls.parse::<usize>()?.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            let f = nmf.fit(&a);
            let s = t.elapsed().as_secs_f64();
            f.map(|_| s)
        })
        .collect::<deepfactor::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    println!("{}", times[times.len() / 2]);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((cmd, rest)) if cmd == "nmf" => nmf(rest),
        Some((cmd, rest)) if cmd == "features" => features(rest),
        Some((cmd, rest)) if cmd == "time-nmf" => time_nmf(rest),
        _ => bail!("usage: reference_outputs nmf … | features … | time-nmf …"),
    }
}
