//! Co-segmentation research harness over a co-segmentation set (`images/<Class>/*.jpg` +
//! `masks/<Class>/*.png`, e.g. `../shared/data/voc-coseg`).
//!
//! ```sh
//! cargo run --release --example coseg_lab -- extract ../shared/data/voc-coseg
//! cargo run --release --example coseg_lab -- grid ../shared/data/voc-coseg [--layer head]
//! ```
//!
//! `extract` runs EfficientNet-Lite0 at shorter side 512 once per image and caches the
//! activations of several layers in half precision under `target/coseg-cache/<layer>/<class>.bin`.
//! The other commands read only that cache.

use anyhow::{bail, Context, Result};
use deepfactor::backbone::{BackboneBuilder, BackboneKind};
use deepfactor::eval::{CosegGroundTruth, Mask};
use deepfactor::nmf::{Init, Nmf};
use deepfactor::{BBox, CellGrid, Matrix};
use half::f16;
use rayon::prelude::*;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MAGIC: &[u8; 8] = b"DFCOSG01";
const LAYERS: [&str; 3] = ["head", "blocks.11.expand", "blocks.10.depthwise"];

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/coseg-cache")
}

/// One image's activations.
struct Acts {
    name: String,
    grid: CellGrid,
    data: Matrix,
}

fn write_class(path: &Path, items: &[Acts]) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(MAGIC)?;
    w.write_all(&(items.len() as u64).to_le_bytes())?;
    for a in items {
        w.write_all(&(a.name.len() as u64).to_le_bytes())?;
        w.write_all(a.name.as_bytes())?;
        for v in [
            a.grid.rows as u64,
            a.grid.cols as u64,
            u64::from(a.grid.image_width),
            u64::from(a.grid.image_height),
            a.data.cols() as u64,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        let h: Vec<f16> = a.data.as_slice().iter().map(|&x| f16::from_f32(x)).collect();
        w.write_all(bytemuck::cast_slice(&h))?;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(tmp, path)?;
    Ok(())
}

fn read_u64(r: &mut impl Read) -> Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_class(path: &Path) -> Result<Vec<Acts>> {
    let mut r = BufReader::new(
        std::fs::File::open(path)
            .with_context(|| format!("{}: run `extract` first", path.display()))?,
    );
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        bail!("{}: not a cache file", path.display());
    }
    let n = read_u64(&mut r)? as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = read_u64(&mut r)? as usize;
        let mut name = vec![0u8; len];
        r.read_exact(&mut name)?;
        let mut hdr = [0u64; 5];
        for v in &mut hdr {
            *v = read_u64(&mut r)?;
        }
        let [rows, cols, iw, ih, c] = hdr.map(|v| v as usize);
        let mut h = vec![f16::ZERO; rows * cols * c];
        r.read_exact(bytemuck::cast_slice_mut(&mut h))?;
        out.push(Acts {
            name: String::from_utf8(name)?,
            grid: CellGrid {
                rows,
                cols,
                image_width: iw as u32,
                image_height: ih as u32,
            },
            data: Matrix::from_vec(rows * cols, c, h.iter().map(|x| x.to_f32()).collect())?,
        });
    }
    Ok(out)
}

fn extract(root: &Path) -> Result<()> {
    let gt = CosegGroundTruth::load(root)?;
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .layer("head")
        .input_size(512)
        .build()?;
    let t0 = Instant::now();
    for class in &gt.classes {
        let done = LAYERS
            .iter()
            .all(|l| cache_dir().join(l).join(format!("{}.bin", class.name)).is_file());
        if done {
            continue;
        }
        let mut per_layer: Vec<Vec<Acts>> = LAYERS.iter().map(|_| Vec::new()).collect();
        for img in &class.images {
            let prepared = backbone.prepare_path(&img.image)?;
            let outs = backbone.forward_layers(&prepared.tensor.unsqueeze(0)?, &LAYERS)?;
            for (li, t) in outs.into_iter().enumerate() {
                let t = t.squeeze(0)?;
                let (c, h, w) = t.dims3()?;
                let data: Vec<f32> = t.permute((1, 2, 0))?.flatten_all()?.to_vec1()?;
                per_layer[li].push(Acts {
                    name: img.name.clone(),
                    grid: CellGrid {
                        rows: h,
                        cols: w,
                        image_width: prepared.image_width,
                        image_height: prepared.image_height,
                    },
                    data: Matrix::from_vec(h * w, c, data)?,
                });
            }
        }
        for (li, items) in per_layer.iter().enumerate() {
            write_class(
                &cache_dir().join(LAYERS[li]).join(format!("{}.bin", class.name)),
                items,
            )?;
        }
        eprintln!(
            "{}: {} images, {:.0} s so far",
            class.name,
            class.images.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Ground truth of one image: mask and the box around its largest component.
struct Truth {
    mask: Mask,
    bbox: Option<BBox>,
}

fn load_truth(root: &Path) -> Result<Vec<(String, Vec<Truth>)>> {
    let gt = CosegGroundTruth::load(root)?;
    gt.classes
        .par_iter()
        .map(|c| {
            let truths = c
                .images
                .iter()
                .map(|i| {
                    let mask = Mask::load(i.mask.as_ref().context("no mask")?)?;
                    let bbox = mask.largest_component().bbox();
                    Ok(Truth { mask, bbox })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((c.name.clone(), truths))
        })
        .collect()
}

/// Bilinear upsampling between cell centres (clamped at the edges) to `w × h` pixels.
fn upsample(grid: &CellGrid, values: &[f32], w: usize, h: usize) -> Vec<f32> {
    let axis = |n: usize, cells: usize| -> Vec<(usize, usize, f32)> {
        (0..n)
            .map(|p| {
                let u = ((p as f64 + 0.5) * cells as f64 / n as f64 - 0.5)
                    .clamp(0.0, (cells - 1) as f64);
                let i0 = u.floor() as usize;
                let i1 = (i0 + 1).min(cells - 1);
                (i0, i1, (u - i0 as f64) as f32)
            })
            .collect()
    };
    let xs = axis(w, grid.cols);
    let ys = axis(h, grid.rows);
    let mut out = Vec::with_capacity(w * h);
    for &(r0, r1, wy) in &ys {
        for &(c0, c1, wx) in &xs {
            let v = |r: usize, c: usize| values[r * grid.cols + c];
            let top = v(r0, c0) * (1.0 - wx) + v(r0, c1) * wx;
            let bot = v(r1, c0) * (1.0 - wx) + v(r1, c1) * wx;
            out.push(top * (1.0 - wy) + bot * wy);
        }
    }
    out
}

/// Scores of one image.
#[derive(Clone, Copy, Default)]
struct Score {
    jaccard: f64,
    corloc: f64,
    precision: f64,
}

fn score(pred: &Mask, truth: &Truth) -> Result<Score> {
    let j = deepfactor::eval::jaccard(pred, &truth.mask)?;
    let inter = pred.intersection_area(&truth.mask)?;
    let n = pred.width() * pred.height();
    let correct = n - (pred.area() + truth.mask.area() - 2 * inter);
    let pbox = pred.largest_component().bbox();
    let hit = match (pbox, truth.bbox) {
        (Some(p), Some(t)) => p.iou(&t) > 0.5,
        _ => false,
    };
    Ok(Score {
        jaccard: j,
        corloc: if hit { 1.0 } else { 0.0 },
        precision: correct as f64 / n as f64,
    })
}

fn mean(s: &[Score]) -> Score {
    let n = s.len().max(1) as f64;
    Score {
        jaccard: s.iter().map(|x| x.jaccard).sum::<f64>() / n,
        corloc: s.iter().map(|x| x.corloc).sum::<f64>() / n,
        precision: s.iter().map(|x| x.precision).sum::<f64>() / n,
    }
}

fn column(u: &Matrix, k: usize) -> Vec<f32> {
    (0..u.rows()).map(|r| u.get(r, k)).collect()
}

fn border_mass(grid: &CellGrid, h: &[f32]) -> f64 {
    let mut s = 0.0;
    for r in 0..grid.rows {
        for c in 0..grid.cols {
            if r == 0 || c == 0 || r + 1 == grid.rows || c + 1 == grid.cols {
                s += f64::from(h[r * grid.cols + c]);
            }
        }
    }
    s
}

/// The reference grid: K=1 / K=2+border × set/image × τ.
fn grid(root: &Path, layer: &str) -> Result<()> {
    let truth = load_truth(root)?;
    let taus = [0.75f32, 0.5, 0.3, 0.2];
    // [k][norm][tau] → per-class means
    let mut table = vec![vec![vec![Vec::new(); taus.len()]; 2]; 2];
    for (cname, truths) in &truth {
        let acts = read_class(&cache_dir().join(layer).join(format!("{cname}.bin")))?;
        let mats: Vec<&Matrix> = acts.iter().map(|a| &a.data).collect();
        for (ki, k) in [1usize, 2].into_iter().enumerate() {
            let t = Instant::now();
            let nmf = Nmf::new(k).max_iter(200).tol(0.0).init(Init::Nndsvda).build()?;
            let jf = nmf.fit_joint(&mats)?;
            let chosen = if k == 1 {
                0
            } else {
                let bm: Vec<f64> = (0..k)
                    .map(|f| {
                        acts.iter()
                            .zip(&jf.u_per_image)
                            .map(|(a, u)| border_mass(&a.grid, &column(u, f)))
                            .sum()
                    })
                    .collect();
                if bm[0] <= bm[1] {
                    0
                } else {
                    1
                }
            };
            let maps: Vec<Vec<f32>> = jf.u_per_image.iter().map(|u| column(u, chosen)).collect();
            let set_max = maps
                .iter()
                .flat_map(|m| m.iter().copied())
                .fold(0f32, f32::max);
            let ups: Vec<Vec<f32>> = acts
                .par_iter()
                .zip(&maps)
                .map(|(a, m)| {
                    upsample(
                        &a.grid,
                        m,
                        a.grid.image_width as usize,
                        a.grid.image_height as usize,
                    )
                })
                .collect();
            for (ni, per_image) in [false, true].into_iter().enumerate() {
                for (ti, &tau) in taus.iter().enumerate() {
                    let scores: Vec<Score> = ups
                        .par_iter()
                        .zip(&acts)
                        .zip(truths)
                        .map(|((up, a), tr)| {
                            let m = if per_image {
                                up.iter().copied().fold(0f32, f32::max)
                            } else {
                                set_max
                            };
                            let pred = Mask::new(
                                a.grid.image_width as usize,
                                a.grid.image_height as usize,
                                up.iter().map(|&v| m > 0.0 && v / m >= tau).collect(),
                            )?;
                            Ok(score(&pred, tr)?)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    table[ki][ni][ti].push(mean(&scores));
                }
            }
            eprintln!(
                "{cname} K={k}: {} iters, rel err {:.3}, {:.1} s",
                jf.factorization.iterations,
                jf.factorization.rel_error,
                t.elapsed().as_secs_f64()
            );
        }
    }
    println!("| K | normalise by | τ = 0.75 | τ = 0.5 | τ = 0.3 | τ = 0.2 |");
    println!("|---|---|---|---|---|---|");
    for (ki, kname) in ["1", "2 + border"].iter().enumerate() {
        for (ni, nname) in ["set", "image"].iter().enumerate() {
            let cells: Vec<String> = (0..taus.len())
                .map(|ti| {
                    let m = mean(&table[ki][ni][ti]);
                    format!("{:.1}, {:.1}", 100.0 * m.jaccard, 100.0 * m.corloc)
                })
                .collect();
            println!("| {kname} | {nname} | {} |", cells.join(" | "));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let root = PathBuf::from(args.get(1).context("usage: coseg_lab CMD DATASET")?);
    let opt = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let layer = opt("--layer").unwrap_or_else(|| "head".into());
    match cmd {
        "extract" => extract(&root),
        "grid" => grid(&root, &layer),
        _ => bail!("unknown command {cmd:?}"),
    }
}
