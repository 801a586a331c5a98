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

// A research harness: index loops over factors and cells read as the formulas do.
#![allow(clippy::needless_range_loop)]

use anyhow::{bail, Context, Result};
use deepfactor::backbone::{BackboneBuilder, BackboneKind};
use deepfactor::eval::{CosegGroundTruth, Mask};
use deepfactor::linalg::Matrix;
use deepfactor::nmf::{Init, Nmf};
use deepfactor::{BBox, CellGrid};
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
        let h: Vec<f16> = a
            .data
            .as_slice()
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
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

fn extract(root: &Path, size: u32, layers: &[&str]) -> Result<()> {
    let gt = CosegGroundTruth::load(root)?;
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .layer("head")
        .input_size(size)
        .build()?;
    // Layers at another input size are cached as "<layer>@<size>".
    let names: Vec<String> = layers
        .iter()
        .map(|l| {
            if size == 512 {
                l.to_string()
            } else {
                format!("{l}@{size}")
            }
        })
        .collect();
    let t0 = Instant::now();
    for class in &gt.classes {
        let done = names.iter().all(|l| {
            cache_dir()
                .join(l)
                .join(format!("{}.bin", class.name))
                .is_file()
        });
        if done {
            continue;
        }
        let mut per_layer: Vec<Vec<Acts>> = layers.iter().map(|_| Vec::new()).collect();
        for img in &class.images {
            let prepared = backbone.prepare_path(&img.image)?;
            let outs = backbone.forward_layers(&prepared.tensor.unsqueeze(0)?, layers)?;
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
                &cache_dir()
                    .join(&names[li])
                    .join(format!("{}.bin", class.name)),
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
    image: PathBuf,
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
                    Ok(Truth {
                        image: i.image.clone(),
                        mask,
                        bbox,
                    })
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
    /// TP / truth area.
    recall: f64,
    /// TP / predicted area.
    purity: f64,
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
        recall: inter as f64 / truth.mask.area().max(1) as f64,
        purity: if pred.area() > 0 {
            inter as f64 / pred.area() as f64
        } else {
            0.0
        },
    })
}

fn mean(s: &[Score]) -> Score {
    let n = s.len().max(1) as f64;
    Score {
        jaccard: s.iter().map(|x| x.jaccard).sum::<f64>() / n,
        corloc: s.iter().map(|x| x.corloc).sum::<f64>() / n,
        precision: s.iter().map(|x| x.precision).sum::<f64>() / n,
        recall: s.iter().map(|x| x.recall).sum::<f64>() / n,
        purity: s.iter().map(|x| x.purity).sum::<f64>() / n,
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
            let nmf = Nmf::new(k)
                .max_iter(200)
                .tol(0.0)
                .init(Init::Nndsvda)
                .build()?;
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
                            score(&pred, tr)
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

// ---------------------------------------------------------------------------------------
// Research: factorizations cached per (layer, class, K), methods evaluated over the classes.

/// A class's joint factorization: per-image `U` (cells × K) and the shared `V` (K × C).
struct Fact {
    u: Vec<Matrix>,
    v: Matrix,
}

fn fact_path(layer: &str, class: &str, k: usize) -> PathBuf {
    cache_dir()
        .join("nmf")
        .join(layer)
        .join(format!("{class}_k{k}.bin"))
}

fn write_matrix(w: &mut impl Write, m: &Matrix) -> Result<()> {
    w.write_all(&(m.rows() as u64).to_le_bytes())?;
    w.write_all(&(m.cols() as u64).to_le_bytes())?;
    w.write_all(bytemuck::cast_slice(m.as_slice()))?;
    Ok(())
}

fn read_matrix(r: &mut impl Read) -> Result<Matrix> {
    let rows = read_u64(r)? as usize;
    let cols = read_u64(r)? as usize;
    let mut v = vec![0f32; rows * cols];
    r.read_exact(bytemuck::cast_slice_mut(&mut v))?;
    Ok(Matrix::from_vec(rows, cols, v)?)
}

fn factorize(layer: &str, class: &str, acts: Option<&[Acts]>, k: usize) -> Result<Fact> {
    let path = fact_path(layer, class, k);
    if let Ok(f) = std::fs::File::open(&path) {
        let mut r = BufReader::new(f);
        let n = read_u64(&mut r)? as usize;
        let u = (0..n)
            .map(|_| read_matrix(&mut r))
            .collect::<Result<Vec<_>>>()?;
        let v = read_matrix(&mut r)?;
        return Ok(Fact { u, v });
    }
    let (base, prep) = layer.split_once('+').unwrap_or((layer, ""));
    let owned;
    let acts = match acts {
        Some(a) => a,
        None => {
            owned = read_class(&cache_dir().join(base).join(format!("{class}.bin")))?;
            &owned
        }
    };
    let prepped: Vec<Matrix> = acts
        .iter()
        .map(|a| prepare(&a.data, prep))
        .collect::<Result<_>>()?;
    let mats: Vec<&Matrix> = prepped.iter().collect();
    let nmf = Nmf::new(k)
        .max_iter(200)
        .tol(0.0)
        .init(Init::Nndsvda)
        .build()?;
    let jf = nmf.fit_joint(&mats)?;
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    let mut w = BufWriter::new(std::fs::File::create(&path)?);
    w.write_all(&(jf.u_per_image.len() as u64).to_le_bytes())?;
    for u in &jf.u_per_image {
        write_matrix(&mut w, u)?;
    }
    write_matrix(&mut w, &jf.factorization.v)?;
    w.flush()?;
    Ok(Fact {
        u: jf.u_per_image,
        v: jf.factorization.v,
    })
}

/// Preprocessing of one image's activations before the joint NMF.
fn prepare(a: &Matrix, prep: &str) -> Result<Matrix> {
    let mut m = a.clone();
    let c = m.cols();
    match prep {
        "" => {}
        "balance" => {
            let rms = (m
                .as_slice()
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>()
                / m.as_slice().len() as f64)
                .sqrt() as f32;
            if rms > 0.0 {
                m.as_mut_slice().iter_mut().for_each(|x| *x /= rms);
            }
        }
        "rownorm" | "rowsqrt" => {
            for row in m.as_mut_slice().chunks_mut(c) {
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0.0 {
                    let s = if prep == "rownorm" { n } else { n.sqrt() };
                    row.iter_mut().for_each(|x| *x /= s);
                }
            }
        }
        o => bail!("unknown preprocessing {o:?}"),
    }
    Ok(m)
}

/// Reads only the grids of a class's cache (names and sizes), skipping the data.
fn read_grids(layer: &str, class: &str) -> Result<Vec<CellGrid>> {
    let layer = layer.split_once('+').map_or(layer, |(b, _)| b);
    Ok(
        read_class(&cache_dir().join(layer).join(format!("{class}.bin")))?
            .into_iter()
            .map(|a| a.grid)
            .collect(),
    )
}

#[derive(Clone, Copy, Debug)]
enum Select {
    /// Factor 0 (K = 1).
    First,
    /// The factor with the least absolute heatmap mass on the 1-cell border, over the set.
    LeastBorder,
    /// Every factor whose border ratio (share of its set mass on border cells over the
    /// border's share of cells) is below the given value; at least the lowest one.
    RatioBelow(f32),
    /// Every factor whose border ratio is below α times the energy-weighted mean ratio.
    Rel(f32),
    /// Factors split in two groups by their border ratios (two-means, energy weighted); the
    /// low group.
    Split,
    /// Oracle (analysis only): factors whose purity (mass inside the truth) is above p.
    Oracle(f32),
    /// No factors: background NMF of the border cells (K = the value), map = residual.
    BgRes(usize),
}

#[derive(Clone, Copy, Debug)]
enum MapKind {
    /// Σ over chosen factors of U_k·‖V_k‖₂.
    Sum,
    /// That sum over the same sum for all factors (fraction of the cell explained by the
    /// chosen factors).
    Share,
}

#[derive(Clone, Copy, Debug)]
enum Thresh {
    /// v / (set max) ≥ τ.
    Set(f32),
    /// v / (image max) ≥ τ.
    Image(f32),
    /// v ≥ τ (for share maps).
    Abs(f32),
    /// Otsu on the upsampled map of the image.
    Otsu,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    k: usize,
    select: Select,
    map: MapKind,
    thresh: Thresh,
    /// Decide at cell level, then upsample the binary decisions (nearest cell).
    cells: bool,
    /// Guided filter (radius in cells, eps) of the upsampled map before the decision.
    guided: Option<(f32, f32)>,
}

fn border_cells(grid: &CellGrid) -> impl Iterator<Item = usize> + '_ {
    (0..grid.len()).filter(move |&i| {
        let (r, c) = (i / grid.cols, i % grid.cols);
        r == 0 || c == 0 || r + 1 == grid.rows || c + 1 == grid.cols
    })
}

/// Per-factor border ratio over the set.
fn border_ratios(grids: &[CellGrid], f: &Fact) -> Vec<f32> {
    let k = f.v.rows();
    let (mut bc, mut all_c) = (0usize, 0usize);
    let mut bm = vec![0f64; k];
    let mut tm = vec![0f64; k];
    for (g, u) in grids.iter().zip(&f.u) {
        bc += border_cells(g).count();
        all_c += g.len();
        for i in border_cells(g) {
            for j in 0..k {
                bm[j] += f64::from(u.get(i, j));
            }
        }
        for i in 0..g.len() {
            for j in 0..k {
                tm[j] += f64::from(u.get(i, j));
            }
        }
    }
    let share = bc as f64 / all_c as f64;
    (0..k)
        .map(|j| {
            if tm[j] > 0.0 {
                (bm[j] / tm[j] / share) as f32
            } else {
                f32::INFINITY
            }
        })
        .collect()
}

fn energies(f: &Fact) -> Vec<f64> {
    let k = f.v.rows();
    (0..k)
        .map(|j| {
            let vn = f64::from(f.v.row(j).iter().map(|x| x * x).sum::<f32>().sqrt());
            let s: f64 =
                f.u.iter()
                    .map(|u| (0..u.rows()).map(|i| f64::from(u.get(i, j))).sum::<f64>())
                    .sum();
            s * vn
        })
        .collect()
}

fn purities(f: &Fact, fr: &[Vec<f32>]) -> Vec<f32> {
    let k = f.v.rows();
    (0..k)
        .map(|j| {
            let (mut inm, mut tot) = (0f64, 0f64);
            for (u, frc) in f.u.iter().zip(fr) {
                for i in 0..u.rows() {
                    let v = f64::from(u.get(i, j));
                    inm += v * f64::from(frc[i]);
                    tot += v;
                }
            }
            (inm / tot.max(1e-12)) as f32
        })
        .collect()
}

fn chosen(grids: &[CellGrid], f: &Fact, sel: Select, purity: &[f32]) -> Vec<usize> {
    let k = f.v.rows();
    let lowest = |r: &[f32]| (0..k).min_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap_or(0);
    match sel {
        Select::BgRes(_) => vec![0],
        Select::Oracle(p) => {
            let mut out: Vec<usize> = (0..k).filter(|&j| purity[j] > p).collect();
            if out.is_empty() {
                out.push(
                    (0..k)
                        .max_by(|&a, &b| purity[a].total_cmp(&purity[b]))
                        .unwrap_or(0),
                );
            }
            out
        }
        Select::Rel(alpha) => {
            let r = border_ratios(grids, f);
            let e = energies(f);
            let mean = (0..k).map(|j| e[j] * f64::from(r[j])).sum::<f64>() / e.iter().sum::<f64>();
            let mut out: Vec<usize> = (0..k)
                .filter(|&j| f64::from(r[j]) < f64::from(alpha) * mean)
                .collect();
            if out.is_empty() {
                out.push(lowest(&r));
            }
            out
        }
        Select::Split => {
            let r = border_ratios(grids, f);
            let e = energies(f);
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| r[a].total_cmp(&r[b]));
            // Best cut of the sorted ratios into low / high (weighted within-group variance).
            let (mut best, mut best_cost) = (1usize, f64::INFINITY);
            for cut in 1..k {
                let cost = |idx: &[usize]| {
                    let w: f64 = idx.iter().map(|&j| e[j]).sum();
                    let m: f64 = idx.iter().map(|&j| e[j] * f64::from(r[j])).sum::<f64>() / w;
                    idx.iter()
                        .map(|&j| e[j] * (f64::from(r[j]) - m).powi(2))
                        .sum::<f64>()
                };
                let c = cost(&order[..cut]) + cost(&order[cut..]);
                if c < best_cost {
                    best_cost = c;
                    best = cut;
                }
            }
            if k == 1 {
                return vec![0];
            }
            order[..best].to_vec()
        }
        Select::First => vec![0],
        Select::LeastBorder => {
            let bm: Vec<f64> = (0..k)
                .map(|j| {
                    grids
                        .iter()
                        .zip(&f.u)
                        .map(|(g, u)| border_cells(g).map(|i| f64::from(u.get(i, j))).sum::<f64>())
                        .sum()
                })
                .collect();
            vec![(0..k).min_by(|&a, &b| bm[a].total_cmp(&bm[b])).unwrap_or(0)]
        }
        Select::RatioBelow(t) => {
            let r = border_ratios(grids, f);
            let mut out: Vec<usize> = (0..k).filter(|&j| r[j] < t).collect();
            if out.is_empty() {
                out.push((0..k).min_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap_or(0));
            }
            out
        }
    }
}

fn otsu(values: &[f32]) -> f32 {
    const BINS: usize = 256;
    let max = values.iter().copied().fold(0f32, f32::max);
    if max <= 0.0 {
        return f32::INFINITY;
    }
    let mut hist = [0usize; BINS];
    for &v in values {
        let b = ((v.max(0.0) / max) * (BINS - 1) as f32).round() as usize;
        hist[b.min(BINS - 1)] += 1;
    }
    let total = values.len() as f64;
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut sum0, mut best, mut best_var) = (0f64, 0f64, 0usize, -1f64);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c as f64;
        sum0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let var = w0 * w1 * (m0 - m1) * (m0 - m1);
        if var > best_var {
            best_var = var;
            best = t;
        }
    }
    (best as f32 + 0.5) / (BINS - 1) as f32 * max
}

fn nearest(grid: &CellGrid, values: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let r = ((y as f64 + 0.5) * grid.rows as f64 / h as f64) as usize;
        for x in 0..w {
            let c = ((x as f64 + 0.5) * grid.cols as f64 / w as f64) as usize;
            out.push(values[r.min(grid.rows - 1) * grid.cols + c.min(grid.cols - 1)]);
        }
    }
    out
}

/// Box mean over a (2r+1)² window, clipped at the edges (integral image).
fn box_mean(x: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut ii = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0f64;
        for xx in 0..w {
            row += f64::from(x[y * w + xx]);
            ii[(y + 1) * (w + 1) + xx + 1] = ii[y * (w + 1) + xx + 1] + row;
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
        for xx in 0..w {
            let (x0, x1) = (xx.saturating_sub(r), (xx + r + 1).min(w));
            let s = ii[y1 * (w + 1) + x1] - ii[y0 * (w + 1) + x1] - ii[y1 * (w + 1) + x0]
                + ii[y0 * (w + 1) + x0];
            out[y * w + xx] = (s / ((y1 - y0) * (x1 - x0)) as f64) as f32;
        }
    }
    out
}

/// He et al.'s guided filter with a colour guide (`rgb` in [0,1], planar) of `p`.
fn guided_filter(
    rgb: &[Vec<f32>; 3],
    p: &[f32],
    w: usize,
    h: usize,
    r: usize,
    eps: f32,
) -> Vec<f32> {
    let n = w * h;
    let mi: Vec<Vec<f32>> = rgb.iter().map(|c| box_mean(c, w, h, r)).collect();
    let mp = box_mean(p, w, h, r);
    let mip: Vec<Vec<f32>> = rgb
        .iter()
        .map(|c| {
            box_mean(
                &c.iter().zip(p).map(|(a, b)| a * b).collect::<Vec<_>>(),
                w,
                h,
                r,
            )
        })
        .collect();
    let pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];
    let mii: Vec<Vec<f32>> = pairs
        .iter()
        .map(|&(a, b)| {
            box_mean(
                &rgb[a]
                    .iter()
                    .zip(&rgb[b])
                    .map(|(x, y)| x * y)
                    .collect::<Vec<_>>(),
                w,
                h,
                r,
            )
        })
        .collect();
    let mut a = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    let mut b = vec![0f32; n];
    for i in 0..n {
        let cov = [0, 1, 2].map(|c| mip[c][i] - mi[c][i] * mp[i]);
        let v = |pi: usize| {
            let (x, y) = pairs[pi];
            mii[pi][i] - mi[x][i] * mi[y][i]
        };
        let (s00, s01, s02, s11, s12, s22) = (v(0) + eps, v(1), v(2), v(3) + eps, v(4), v(5) + eps);
        // Inverse of the symmetric 3×3 matrix.
        let i00 = s11 * s22 - s12 * s12;
        let i01 = s02 * s12 - s01 * s22;
        let i02 = s01 * s12 - s02 * s11;
        let i11 = s00 * s22 - s02 * s02;
        let i12 = s01 * s02 - s00 * s12;
        let i22 = s00 * s11 - s01 * s01;
        let det = s00 * i00 + s01 * i01 + s02 * i02;
        let ak = [
            (i00 * cov[0] + i01 * cov[1] + i02 * cov[2]) / det,
            (i01 * cov[0] + i11 * cov[1] + i12 * cov[2]) / det,
            (i02 * cov[0] + i12 * cov[1] + i22 * cov[2]) / det,
        ];
        for c in 0..3 {
            a[c][i] = ak[c];
        }
        b[i] = mp[i] - ak[0] * mi[0][i] - ak[1] * mi[1][i] - ak[2] * mi[2][i];
    }
    let ma: Vec<Vec<f32>> = a.iter().map(|x| box_mean(x, w, h, r)).collect();
    let mb = box_mean(&b, w, h, r);
    (0..n)
        .map(|i| ma[0][i] * rgb[0][i] + ma[1][i] * rgb[1][i] + ma[2][i] * rgb[2][i] + mb[i])
        .collect()
}

fn load_planar(path: &Path) -> Result<[Vec<f32>; 3]> {
    let img = image::open(path)?.to_rgb8();
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for p in img.pixels() {
        for c in 0..3 {
            out[c].push(f32::from(p.0[c]) / 255.0);
        }
    }
    Ok(out)
}

/// Per-image predicted masks of one class.
fn predict(
    grids: &[CellGrid],
    f: &Fact,
    cfg: &Config,
    purity: &[f32],
    images: &[PathBuf],
) -> Result<Vec<Mask>> {
    let maps = fact_maps(grids, f, cfg, purity);
    masks_from_maps(grids, &maps, cfg, images)
}

/// Background model from the border: NMF of the border cells of every image (K = kb), then
/// each cell's activation not explained by those concepts (residual norm).
fn bg_residual_maps(layer: &str, class: &str, kb: usize) -> Result<Vec<Vec<f32>>> {
    let (base, prep) = layer.split_once('+').unwrap_or((layer, ""));
    let acts = read_class(&cache_dir().join(base).join(format!("{class}.bin")))?;
    let acts: Vec<(CellGrid, Matrix)> = acts
        .iter()
        .map(|a| Ok((a.grid, prepare(&a.data, prep)?)))
        .collect::<Result<_>>()?;
    let c = acts[0].1.cols();
    let mut border = Vec::new();
    let mut nb = 0;
    for (g, a) in &acts {
        for i in border_cells(g) {
            border.extend_from_slice(a.row(i));
            nb += 1;
        }
    }
    let b = Matrix::from_vec(nb, c, border)?;
    let nmf = Nmf::new(kb).max_iter(200).tol(0.0).build()?;
    let vb = nmf.fit(&b)?.v;
    acts.par_iter()
        .map(|(_, a)| {
            let t = nmf.transform(a, &vb)?;
            let rec = t.u.matmul(&vb)?;
            Ok((0..a.rows())
                .map(|i| {
                    a.row(i)
                        .iter()
                        .zip(rec.row(i))
                        .map(|(x, y)| (x - y).max(0.0).powi(2))
                        .sum::<f32>()
                        .sqrt()
                })
                .collect())
        })
        .collect()
}

/// Coarse maps (per image scaled to [0, 1]) carried to a finer layer: U₀ = [P, 1 − P] at the
/// fine cells, V from a fit with U fixed over the set, U re-estimated per image with V fixed;
/// the fine map is the foreground factor's share.
fn transfer(
    grids: &[CellGrid],
    coarse: &[Vec<f32>],
    fine_layer: &str,
    class: &str,
) -> Result<(Vec<CellGrid>, Vec<Vec<f32>>)> {
    let acts = read_class(&cache_dir().join(fine_layer).join(format!("{class}.bin")))?;
    let c = acts[0].data.cols();
    let mut u0 = Vec::new();
    let mut stacked = Vec::new();
    for ((g, m), a) in grids.iter().zip(coarse).zip(&acts) {
        let mx = m.iter().copied().fold(0f32, f32::max).max(1e-12);
        let scaled: Vec<f32> = m.iter().map(|v| v / mx).collect();
        let p = upsample(g, &scaled, a.grid.cols, a.grid.rows);
        for v in p {
            u0.push(v.clamp(0.0, 1.0));
            u0.push(1.0 - v.clamp(0.0, 1.0));
        }
        stacked.extend_from_slice(a.data.as_slice());
    }
    let rows = u0.len() / 2;
    let a = Matrix::from_vec(rows, c, stacked)?;
    let u0 = Matrix::from_vec(rows, 2, u0)?;
    let nmf = Nmf::new(2).max_iter(100).tol(0.0).build()?;
    let v = nmf.fit_v(&a, &u0)?.v;
    let vn: Vec<f32> = (0..2)
        .map(|j| v.row(j).iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    let maps = acts
        .par_iter()
        .map(|fa| {
            let t = nmf.transform(&fa.data, &v)?;
            Ok((0..fa.data.rows())
                .map(|i| {
                    let (f, b) = (t.u.get(i, 0) * vn[0], t.u.get(i, 1) * vn[1]);
                    if f + b > 0.0 {
                        f / (f + b)
                    } else {
                        0.0
                    }
                })
                .collect())
        })
        .collect::<Result<Vec<Vec<f32>>>>()?;
    Ok((acts.iter().map(|a| a.grid).collect(), maps))
}

fn fact_maps(grids: &[CellGrid], f: &Fact, cfg: &Config, purity: &[f32]) -> Vec<Vec<f32>> {
    let k = f.v.rows();
    let sel = chosen(grids, f, cfg.select, purity);
    let vn: Vec<f32> = (0..k)
        .map(|j| f.v.row(j).iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    let maps: Vec<Vec<f32>> = grids
        .iter()
        .zip(&f.u)
        .map(|(g, u)| {
            (0..g.len())
                .map(|i| {
                    let fg: f32 = sel.iter().map(|&j| u.get(i, j) * vn[j]).sum();
                    match cfg.map {
                        MapKind::Sum => fg,
                        MapKind::Share => {
                            let all: f32 = (0..k).map(|j| u.get(i, j) * vn[j]).sum();
                            if all > 0.0 {
                                fg / all
                            } else {
                                0.0
                            }
                        }
                    }
                })
                .collect()
        })
        .collect();
    maps
}

fn masks_from_maps(
    grids: &[CellGrid],
    maps: &[Vec<f32>],
    cfg: &Config,
    images: &[PathBuf],
) -> Result<Vec<Mask>> {
    let set_max = maps.iter().flatten().copied().fold(0f32, f32::max);
    grids
        .par_iter()
        .zip(maps)
        .zip(images)
        .map(|((g, m), path)| {
            let (w, h) = (g.image_width as usize, g.image_height as usize);
            let decide = |vals: &[f32]| -> Vec<bool> {
                let level = match cfg.thresh {
                    Thresh::Set(t) => t * set_max,
                    Thresh::Image(t) => t * vals.iter().copied().fold(0f32, f32::max),
                    Thresh::Abs(t) => t,
                    Thresh::Otsu => otsu(vals),
                };
                vals.iter().map(|&v| v > 0.0 && v >= level).collect()
            };
            let bits = if cfg.cells {
                let on: Vec<f32> = decide(m)
                    .into_iter()
                    .map(|b| f32::from(u8::from(b)))
                    .collect();
                nearest(g, &on, w, h).into_iter().map(|v| v > 0.5).collect()
            } else if let Ok(mode) = std::env::var("COSEG_COLOR") {
                let mut up = upsample(g, m, w, h);
                let mx = up.iter().copied().fold(0f32, f32::max).max(1e-12);
                up.iter_mut().for_each(|v| *v /= mx);
                let m0 = decide(&up);
                let img = image::open(path)?.to_rgb8();
                let bin = |p: &image::Rgb<u8>| {
                    let s: u8 = std::env::var("COSEG_SHIFT")
                        .ok()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(4);
                    let b = 8 - s;
                    (usize::from(p.0[0] >> s) << (2 * b))
                        | (usize::from(p.0[1] >> s) << b)
                        | usize::from(p.0[2] >> s)
                };
                let mut nf = vec![0f32; 4096];
                let mut nb = vec![0f32; 4096];
                for (px, &on) in img.pixels().zip(&m0) {
                    if on {
                        nf[bin(px)] += 1.0;
                    } else {
                        nb[bin(px)] += 1.0;
                    }
                }
                let q: Vec<f32> = img
                    .pixels()
                    .map(|px| {
                        let b = bin(px);
                        (nf[b] + 1.0) / (nf[b] + nb[b] + 2.0)
                    })
                    .collect();
                let comb: Vec<f32> = match mode.as_str() {
                    "avg" => q.iter().zip(&up).map(|(a, b)| 0.5 * (a + b)).collect(),
                    "geo" => q.iter().zip(&up).map(|(a, b)| (a * b).sqrt()).collect(),
                    _ => q.clone(),
                };
                if let Some((rc, eps)) = cfg.guided {
                    let cell = (w as f32 / g.cols as f32).max(h as f32 / g.rows as f32);
                    let r = (rc * cell).round().max(1.0) as usize;
                    let rgb = load_planar(path)?;
                    decide(&guided_filter(&rgb, &comb, w, h, r, eps))
                } else {
                    decide(&comb)
                }
            } else if let Some((rc, eps)) = cfg.guided {
                let mut up = upsample(g, m, w, h);
                let mx = match cfg.map {
                    MapKind::Share => 1.0,
                    MapKind::Sum => up.iter().copied().fold(0f32, f32::max).max(1e-12),
                };
                up.iter_mut().for_each(|v| *v /= mx);
                let cell = (w as f32 / g.cols as f32).max(h as f32 / g.rows as f32);
                let r = (rc * cell).round().max(1.0) as usize;
                let rgb = load_planar(path)?;
                if std::env::var("COSEG_GFB").is_ok() {
                    // Decide first, then snap the binary mask to the image's edges.
                    let b: Vec<f32> = decide(&up)
                        .into_iter()
                        .map(|x| f32::from(u8::from(x)))
                        .collect();
                    guided_filter(&rgb, &b, w, h, r, eps)
                        .into_iter()
                        .map(|v| v >= 0.5)
                        .collect()
                } else {
                    decide(&guided_filter(&rgb, &up, w, h, r, eps))
                }
            } else {
                decide(&upsample(g, m, w, h))
            };
            Ok(Mask::new(w, h, bits)?)
        })
        .collect()
}

/// Classes used to choose settings; the others are held out.
fn is_dev(i: usize) -> bool {
    i.is_multiple_of(2)
}

fn sweep(root: &Path, layer: &str, configs: &[(String, Config)], per_class: bool) -> Result<()> {
    let mut truth = load_truth(root)?;
    if let Ok(only) = std::env::var("COSEG_CLASSES") {
        let only: Vec<&str> = only.split(',').collect();
        truth.retain(|(c, _)| only.contains(&c.as_str()));
    }
    let mut grids = Vec::new();
    for (c, _) in &truth {
        grids.push(read_grids(layer, c)?);
    }
    let mut ks: Vec<usize> = configs.iter().map(|(_, c)| c.k.max(1)).collect();
    ks.sort();
    ks.dedup();
    let mut facts: Vec<Vec<(usize, Fact)>> = Vec::new();
    for (c, _) in &truth {
        let mut fs = Vec::new();
        for &k in &ks {
            let t = Instant::now();
            let cached = fact_path(layer, c, k).is_file();
            fs.push((k, factorize(layer, c, None, k)?));
            if !cached {
                eprintln!("{c} K={k}: {:.1} s", t.elapsed().as_secs_f64());
            }
        }
        facts.push(fs);
    }
    println!("| method | dev J | dev CorLoc | held-out J | held-out CorLoc | all J | all CorLoc | all P | recall | purity |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, cfg) in configs {
        let mut per: Vec<Score> = Vec::new();
        for (ci, (cname, truths)) in truth.iter().enumerate() {
            let f = &facts[ci]
                .iter()
                .find(|(k, _)| *k == cfg.k.max(1))
                .context("k")?
                .1;
            let fr: Vec<Vec<f32>> = grids[ci]
                .iter()
                .zip(truths)
                .map(|(g, t)| cell_fractions(g, &t.mask))
                .collect();
            let masks = if cfg.k == 0 {
                // Resolution ceiling: the truth's cell fractions as the map.
                grids[ci]
                    .iter()
                    .zip(&fr)
                    .map(|(g, m)| {
                        let (w, h) = (g.image_width as usize, g.image_height as usize);
                        Ok(Mask::new(
                            w,
                            h,
                            upsample(g, m, w, h).iter().map(|&v| v >= 0.5).collect(),
                        )?)
                    })
                    .collect::<Result<Vec<_>>>()?
            } else if let Select::BgRes(kb) = cfg.select {
                let paths: Vec<PathBuf> = truths.iter().map(|t| t.image.clone()).collect();
                let maps = bg_residual_maps(layer, cname, kb)?;
                masks_from_maps(&grids[ci], &maps, cfg, &paths)?
            } else if let Ok(fine) = std::env::var("COSEG_TRANSFER") {
                let paths: Vec<PathBuf> = truths.iter().map(|t| t.image.clone()).collect();
                let coarse = fact_maps(&grids[ci], f, cfg, &purities(f, &fr));
                let (fine_grids, maps) = transfer(&grids[ci], &coarse, &fine, cname)?;
                masks_from_maps(&fine_grids, &maps, cfg, &paths)?
            } else {
                let paths: Vec<PathBuf> = truths.iter().map(|t| t.image.clone()).collect();
                predict(&grids[ci], f, cfg, &purities(f, &fr), &paths)?
            };
            let s: Vec<Score> = masks
                .par_iter()
                .zip(truths)
                .map(|(m, t)| score(m, t))
                .collect::<Result<_>>()?;
            let m = mean(&s);
            if per_class {
                eprintln!(
                    "  {name} {cname}: J {:.1} CorLoc {:.1} P {:.1}",
                    100.0 * m.jaccard,
                    100.0 * m.corloc,
                    100.0 * m.precision
                );
            }
            per.push(m);
        }
        let pick = |f: &dyn Fn(usize) -> bool| -> Score {
            mean(
                &per.iter()
                    .enumerate()
                    .filter(|(i, _)| f(*i))
                    .map(|(_, s)| *s)
                    .collect::<Vec<_>>(),
            )
        };
        let (d, h, a) = (pick(&is_dev), pick(&|i| !is_dev(i)), mean(&per));
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            100.0 * d.jaccard,
            100.0 * d.corloc,
            100.0 * h.jaccard,
            100.0 * h.corloc,
            100.0 * a.jaccard,
            100.0 * a.corloc,
            100.0 * a.precision,
            100.0 * a.recall,
            100.0 * a.purity
        );
    }
    Ok(())
}

/// Fraction of each cell's pixels inside the mask.
fn cell_fractions(g: &CellGrid, m: &Mask) -> Vec<f32> {
    let mut inside = vec![0f32; g.len()];
    let mut total = vec![0f32; g.len()];
    for y in 0..m.height() {
        let r = (y * g.rows / m.height()).min(g.rows - 1);
        for x in 0..m.width() {
            let c = (x * g.cols / m.width()).min(g.cols - 1);
            total[r * g.cols + c] += 1.0;
            if m.get(x, y) {
                inside[r * g.cols + c] += 1.0;
            }
        }
    }
    inside
        .iter()
        .zip(&total)
        .map(|(a, b)| if *b > 0.0 { a / b } else { 0.0 })
        .collect()
}

/// Per class and factor: border ratio, share of energy, purity (mass inside the truth).
fn diag(root: &Path, layer: &str, k: usize) -> Result<()> {
    let truth = load_truth(root)?;
    for (cname, truths) in &truth {
        let grids = read_grids(layer, cname)?;
        let f = factorize(layer, cname, None, k)?;
        let fr: Vec<Vec<f32>> = grids
            .iter()
            .zip(truths)
            .map(|(g, t)| cell_fractions(g, &t.mask))
            .collect();
        let prior: f64 = fr.iter().flatten().map(|&x| f64::from(x)).sum::<f64>()
            / fr.iter().map(Vec::len).sum::<usize>() as f64;
        let ratios = border_ratios(&grids, &f);
        let vn: Vec<f32> = (0..k)
            .map(|j| f.v.row(j).iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        let mut line = format!("{cname:8} prior {:.2} |", prior);
        for j in 0..k {
            let (mut inm, mut tot) = (0f64, 0f64);
            let mut present = 0usize;
            let fmax =
                f.u.iter()
                    .map(|u| (0..u.rows()).map(|i| u.get(i, j)).fold(0f32, f32::max))
                    .fold(0f32, f32::max);
            for (u, frc) in f.u.iter().zip(&fr) {
                let mut imax = 0f32;
                for i in 0..u.rows() {
                    let v = f64::from(u.get(i, j));
                    inm += v * f64::from(frc[i]);
                    tot += v;
                    imax = imax.max(u.get(i, j));
                }
                if imax > 0.25 * fmax {
                    present += 1;
                }
            }
            let energy = tot * f64::from(vn[j]);
            line += &format!(
                " f{j}: br {:.2} pur {:.2} pres {:.2} e {:.0} |",
                ratios[j],
                inm / tot.max(1e-12),
                present as f64 / f.u.len() as f64,
                energy
            );
        }
        println!("{line}");
    }
    Ok(())
}

/// Writes a contact sheet of predictions for one class: red = predicted mask, green = truth
/// boundary, yellow box = predicted box.
fn show(root: &Path, layer: &str, class: &str, cfg: &Config, out: &Path) -> Result<()> {
    let gt = CosegGroundTruth::load(root)?;
    let c = gt.class(class).context("no such class")?;
    let truth = load_truth(root)?;
    let truths = &truth.iter().find(|(n, _)| n == class).context("class")?.1;
    let grids = read_grids(layer, class)?;
    let f = factorize(layer, class, None, cfg.k)?;
    let fr: Vec<Vec<f32>> = grids
        .iter()
        .zip(truths)
        .map(|(g, t)| cell_fractions(g, &t.mask))
        .collect();
    let paths: Vec<PathBuf> = truths.iter().map(|t| t.image.clone()).collect();
    let masks = predict(&grids, &f, cfg, &purities(&f, &fr), &paths)?;
    let n = c.images.len().min(24);
    let side = 200u32;
    let cols = 6u32;
    let rows = (n as u32).div_ceil(cols);
    let mut sheet = image::RgbImage::new(cols * side, rows * side);
    for i in 0..n {
        let img = image::open(&c.images[i].image)?.to_rgb8();
        let (w, h) = img.dimensions();
        let m = &masks[i];
        let t = &truths[i].mask;
        let mut vis = img.clone();
        for y in 0..h {
            for x in 0..w {
                let p = vis.get_pixel_mut(x, y);
                if m.get(x as usize, y as usize) {
                    p.0 = [((p.0[0] as u32 + 255) / 2) as u8, p.0[1] / 2, p.0[2] / 2];
                }
                let on = t.get(x as usize, y as usize);
                let edge = on
                    && (x == 0
                        || y == 0
                        || !t.get(x as usize - 1, y as usize)
                        || !t.get(x as usize, y as usize - 1)
                        || !t.get(x as usize + 1, y as usize)
                        || !t.get(x as usize, y as usize + 1));
                if edge {
                    p.0 = [0, 255, 0];
                }
            }
        }
        if let Some(b) = m.largest_component().bbox() {
            for x in b.x1 as u32..(b.x2 as u32).min(w) {
                for yy in [b.y1 as u32, (b.y2 as u32).saturating_sub(1)] {
                    vis.put_pixel(x, yy.min(h - 1), image::Rgb([255, 255, 0]));
                }
            }
            for y in b.y1 as u32..(b.y2 as u32).min(h) {
                for xx in [b.x1 as u32, (b.x2 as u32).saturating_sub(1)] {
                    vis.put_pixel(xx.min(w - 1), y, image::Rgb([255, 255, 0]));
                }
            }
        }
        let th = image::imageops::thumbnail(&vis, side, side);
        let (tx, ty) = ((i as u32 % cols) * side, (i as u32 / cols) * side);
        image::imageops::overlay(&mut sheet, &th, i64::from(tx), i64::from(ty));
    }
    sheet.save(out)?;
    Ok(())
}

/// Parses "k2:border:sum:image0.2[:cells]" style method names.
fn parse_config(s: &str) -> Result<Config> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() < 4 {
        bail!("method {s:?}: expected kK:select:map:thresh[:cells]");
    }
    let k: usize = parts[0].trim_start_matches('k').parse()?;
    let select = match parts[1] {
        "first" => Select::First,
        "border" => Select::LeastBorder,
        r if r.starts_with("ratio") => Select::RatioBelow(r[5..].parse()?),
        r if r.starts_with("rel") => Select::Rel(r[3..].parse()?),
        r if r.starts_with("oracle") => Select::Oracle(r[6..].parse()?),
        "split" => Select::Split,
        r if r.starts_with("bgres") => Select::BgRes(r[5..].parse()?),
        o => bail!("select {o:?}"),
    };
    let map = match parts[2] {
        "sum" => MapKind::Sum,
        "share" => MapKind::Share,
        o => bail!("map {o:?}"),
    };
    let t = parts[3];
    let thresh = if t == "otsu" {
        Thresh::Otsu
    } else if let Some(x) = t.strip_prefix("set") {
        Thresh::Set(x.parse()?)
    } else if let Some(x) = t.strip_prefix("image") {
        Thresh::Image(x.parse()?)
    } else if let Some(x) = t.strip_prefix("abs") {
        Thresh::Abs(x.parse()?)
    } else {
        bail!("thresh {t:?}")
    };
    Ok(Config {
        k,
        select,
        map,
        thresh,
        cells: parts.get(4) == Some(&"cells"),
        guided: match parts.get(4) {
            Some(g) if g.starts_with("gf") => {
                let v: Vec<&str> = g[2..].split(',').collect();
                Some((v[0].parse()?, v[1].parse()?))
            }
            _ => None,
        },
    })
}

/// The product (`deepfactor::coseg`) on the cached activations, for comparison with the
/// lab's own implementation: prints the same table row.
fn product(root: &Path, layer: &str, configs: &[String]) -> Result<()> {
    use deepfactor::coseg::{Coseg, CosegBuilder, Method, Normalise, Refine, Threshold};
    use deepfactor::eval::{score_mask, SetScores};
    let truth = load_truth(root)?;
    println!("| method | dev J | dev CorLoc | held-out J | held-out CorLoc | all J | all CorLoc | all P | pooled J |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let stacks = product_stacks(&truth, layer)?;
    for name in configs {
        // "method:k:norm:thresh:refine", e.g. "auto:8:image:otsu:colour".
        let p: Vec<&str> = name.split(':').collect();
        let appearance = parse_appearance(p[0])?;
        let b = CosegBuilder::default()
            .method(Method::from_name(if p[0].starts_with("oneshot") {
                "auto"
            } else {
                p[0]
            })?)
            // "oneshotthesis": the matched factor groups only; "oneshotvote": the vote.
            .one_shot_mode(match p[0] {
                "oneshotthesis" => deepfactor::coseg::OneShotMode::Matched,
                "oneshotvote" => deepfactor::coseg::OneShotMode::Vote,
                a if a.starts_with("oneshotappearance")
                    || a == "oneshotdefault"
                    || a.starts_with("oneshotcontrast")
                    || a.starts_with("oneshotridge") =>
                {
                    deepfactor::coseg::OneShotMode::Appearance
                }
                _ => deepfactor::coseg::OneShotMode::Select,
            })
            // "oneshotappearance0.2": the appearance weight γ = 0.2; "oneshotcontrast0.2" the
            // contrast of object and background prototypes; "oneshotridge1g0.2" the ridge
            // likeness with ρ = 1; a suffix "a0.3" weights the refined score by β = 0.3.
            .appearance_weight(appearance.1)
            .appearance_after_refine(appearance.2)
            .appearance_model(appearance.0)
            .k(p[1].parse()?)
            .normalise(if p[2] == "set" {
                Normalise::Set
            } else {
                Normalise::Image
            })
            .threshold(if p[3] == "otsu" {
                Threshold::Otsu
            } else {
                Threshold::Fixed(p[3].parse()?)
            })
            .refine(if p[4] == "colour" {
                Refine::Colour
            } else {
                Refine::None
            });
        let one_shot = p[0].starts_with("oneshot");
        let b = if one_shot { b.method(Method::Auto) } else { b };
        let coseg: Coseg = b.build()?;
        let mut per = Vec::new();
        let t = Instant::now();
        // COSEG_ANNOTATED=a: the a-th image of each class is the annotated one (default 0).
        let annotated: usize = std::env::var("COSEG_ANNOTATED")
            .ok()
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(0);
        for ((cname, truths), st) in truth.iter().zip(&stacks) {
            let model = if one_shot {
                coseg
                    .one_shot(
                        st,
                        annotated,
                        &truths[annotated].mask,
                        &deepfactor::coseg::DEFAULT_ONE_SHOT_KS,
                        deepfactor::coseg::DEFAULT_TAU_MERGE,
                    )?
                    .0
            } else {
                coseg.run(st)?
            };
            let scores: Vec<_> = (0..st.len())
                .into_par_iter()
                // One-shot leaves its annotated image out; COSEG_SKIP_FIRST=1 does the same for
                // the unsupervised rows, so that both are scored on the same images.
                .filter(|&i| {
                    !((one_shot || std::env::var("COSEG_SKIP_FIRST").is_ok()) && i == annotated)
                })
                .map(|i| {
                    let img = deepfactor::images::load_rgb(&truths[i].image)?;
                    let seg = model.segment(i, &img)?;
                    Ok(score_mask(&seg.mask, seg.bbox.as_ref(), &truths[i].mask)?)
                })
                .collect::<Result<_>>()?;
            let sc = SetScores::of(&scores);
            if std::env::var("COSEG_PER_CLASS").is_ok() {
                let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
                println!(
                    "| {name} | {cname} | {} | {} | {} | {} | factors {:?} of {} |",
                    f(sc.corloc),
                    f(sc.jaccard),
                    f(sc.precision),
                    f(sc.jaccard_pooled),
                    model.object,
                    model.factors.k()
                );
            }
            per.push(sc);
        }
        eprintln!("{name}: {:.0} s", t.elapsed().as_secs_f64());
        let pick = |f: &dyn Fn(usize) -> bool| {
            SetScores::mean(
                &per.iter()
                    .enumerate()
                    .filter(|(i, _)| f(*i))
                    .map(|(_, s)| *s)
                    .collect::<Vec<_>>(),
            )
        };
        let (d, h, a) = (pick(&is_dev), pick(&|i| !is_dev(i)), SetScores::mean(&per));
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f(d.jaccard),
            f(d.corloc),
            f(h.jaccard),
            f(h.corloc),
            f(a.jaccard),
            f(a.corloc),
            f(a.precision),
            f(a.jaccard_pooled)
        );
    }
    Ok(())
}

/// The appearance model, γ and β of a one-shot method name: `oneshotappearance[γ]`,
/// `oneshotcontrast[γ]` or `oneshotridgeρ[gγ]`, each optionally followed by `aβ`;
/// `oneshotdefault` is the product's default.
fn parse_appearance(name: &str) -> Result<(deepfactor::coseg::AppearanceModel, f32, f32)> {
    use deepfactor::coseg::{AppearanceModel, APPEARANCE_WEIGHT};
    let (rest, after) = match name.rsplit_once('a') {
        Some((r, b)) if !b.is_empty() && b.parse::<f32>().is_ok() => (r, b.parse()?),
        _ => (name, 0.0),
    };
    let num = |s: &str| -> Result<f32> {
        Ok(if s.is_empty() {
            APPEARANCE_WEIGHT
        } else {
            s.parse()?
        })
    };
    Ok(if name == "oneshotdefault" {
        use deepfactor::coseg::APPEARANCE_AFTER_WEIGHT;
        (
            AppearanceModel::default(),
            APPEARANCE_WEIGHT,
            APPEARANCE_AFTER_WEIGHT,
        )
    } else if let Some(g) = rest.strip_prefix("oneshotappearance") {
        (AppearanceModel::Mean, num(g)?, after)
    } else if let Some(g) = rest.strip_prefix("oneshotcontrast") {
        (AppearanceModel::Contrast, num(g)?, after)
    } else if let Some(r) = rest.strip_prefix("oneshotridge") {
        let (rho, g) = r.split_once('g').unwrap_or((r, ""));
        (AppearanceModel::Ridge(rho.parse()?), num(g)?, after)
    } else {
        (AppearanceModel::Mean, APPEARANCE_WEIGHT, 0.0)
    })
}

/// The product's feature stacks of every class, from the activation cache.
fn product_stacks(
    truth: &[(String, Vec<Truth>)],
    layer: &str,
) -> Result<Vec<deepfactor::coseg::FeatureStack>> {
    truth
        .iter()
        .map(|(c, _)| {
            let acts = read_class(&cache_dir().join(layer).join(format!("{c}.bin")))?;
            let mut st = deepfactor::coseg::FeatureStack::new(acts[0].data.cols())?;
            for a in &acts {
                st.push(
                    a.name.clone(),
                    Path::new(&a.name),
                    &deepfactor::Activations {
                        grid: a.grid,
                        data: a.data.clone(),
                    },
                )?;
            }
            Ok(st)
        })
        .collect()
}

/// One-shot study: for every class, every candidate object selection that does not depend on
/// the annotated image — per rank K of the one-shot ranks, every prefix of the factors sorted
/// by border ratio (the unsupervised choice at each K is one of them), and the default's
/// choice at fixed thresholds — scored on every image (refined and coarse masks). A selection
/// rule "annotated image a picks among the candidates" is then evaluated offline for every a
/// (`scripts`-free: the CSV goes to stdout).
fn oneshot_study(root: &Path, layer: &str) -> Result<()> {
    use deepfactor::coseg::{Coseg, Refine, Threshold, DEFAULT_BORDER_ALPHA};
    use deepfactor::eval::score_mask;
    let truth = load_truth(root)?;
    let stacks = product_stacks(&truth, layer)?;
    println!("class,cand,k,rule,n,factors,image,j,corloc,precision,coarse_j");
    for ((cname, truths), st) in truth.iter().zip(&stacks) {
        let t = Instant::now();
        // (name, k, rule, n, model)
        let mut cands = Vec::new();
        for k in deepfactor::coseg::DEFAULT_ONE_SHOT_KS {
            let base = Coseg::builder().k(k).build()?.run(st)?;
            let r = &base.stats.border_ratio;
            let mut order: Vec<usize> = (0..k).filter(|&j| base.stats.mass[j] > 0.0).collect();
            order.sort_by(|&a, &b| r[a].total_cmp(&r[b]));
            let auto = base.stats.below_mean_ratio(DEFAULT_BORDER_ALPHA);
            for n in 1..=order.len() {
                let mut m = base.clone();
                let mut obj = order[..n].to_vec();
                obj.sort_unstable();
                let is_auto = obj == auto;
                m.object = obj;
                cands.push((
                    format!("k{k}n{n}"),
                    k,
                    if is_auto { "auto" } else { "prefix" },
                    n,
                    m,
                ));
            }
            if k == deepfactor::coseg::DEFAULT_AUTO_K {
                for tau in [0.2f32, 0.3, 0.4, 0.5] {
                    let mut m = base.clone();
                    m.settings.threshold = Threshold::Fixed(tau);
                    cands.push((format!("k{k}auto_t{tau}"), k, "autotau", auto.len(), m));
                }
            }
        }
        let rows: Vec<Vec<String>> = (0..st.len())
            .into_par_iter()
            .map(|i| {
                let img = deepfactor::images::load_rgb(&truths[i].image)?;
                let mut out = Vec::new();
                for (name, k, rule, n, m) in &cands {
                    let seg = m.segment(i, &img)?;
                    let s = score_mask(&seg.mask, seg.bbox.as_ref(), &truths[i].mask)?;
                    let mut coarse = m.clone();
                    coarse.settings.refine = Refine::None;
                    let cs = coarse.segment(i, &img)?;
                    let cj = deepfactor::eval::jaccard(&cs.mask, &truths[i].mask)?;
                    out.push(format!(
                        "{cname},{name},{k},{rule},{n},{},{i},{:.5},{},{:.5},{:.5}",
                        m.object
                            .iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                        s.jaccard.unwrap_or(0.0),
                        u8::from(s.corloc),
                        s.precision.unwrap_or(0.0),
                        cj
                    ));
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        for r in rows.into_iter().flatten() {
            println!("{r}");
        }
        eprintln!(
            "{cname}: {} candidates, {:.0} s",
            cands.len(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The mean score of the coarse masks of `maps` over every image but the annotated `a`.
fn score_others(
    grids: &[CellGrid],
    maps: &[Vec<f32>],
    cfg: &Config,
    images: &[PathBuf],
    truths: &[Truth],
    a: usize,
) -> Result<Score> {
    let masks = masks_from_maps(grids, maps, cfg, images)?;
    let sc: Vec<Score> = masks
        .iter()
        .zip(truths)
        .enumerate()
        .filter(|(i, _)| *i != a)
        .map(|(_, (m, t))| score(m, t))
        .collect::<Result<_>>()?;
    Ok(mean(&sc))
}

/// One-shot by the annotated image's appearance (coarse masks, Otsu, no refinement): maps
/// made from the prototypes of the object's and the background's activations in the
/// annotated image, alone and fused with the unsupervised (auto, K = 8) map; annotated image
/// = each of the first `COSEG_ANNOT` (default 3) images in turn, scored on the others.
fn proto(root: &Path, layer: &str) -> Result<()> {
    let truth = load_truth(root)?;
    let n_annot: usize = std::env::var("COSEG_ANNOT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let cfg = Config {
        k: 8,
        select: Select::Rel(0.75),
        map: MapKind::Sum,
        thresh: Thresh::Otsu,
        cells: false,
        guided: None,
    };
    let names = [
        "auto",
        "sqrt(auto*po)",
        "auto^.67*po^.33",
        "auto^.33*po^.67",
        "sqrt(auto*pmm)",
        "auto^.67*pmm^.33",
        "(auto+pmm)/2",
        "sqrt(auto*po^2)",
    ];
    println!("class,annot,map,j,corloc");
    for (ci, (cname, truths)) in truth.iter().enumerate() {
        let acts = read_class(&cache_dir().join(layer).join(format!("{cname}.bin")))?;
        let grids: Vec<CellGrid> = acts.iter().map(|a| a.grid).collect();
        let f = factorize(layer, cname, Some(&acts), 8)?;
        let base = fact_maps(&grids, &f, &cfg, &[]);
        let k = f.v.rows();
        let vn: Vec<f32> = (0..k)
            .map(|j| f.v.row(j).iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        let images: Vec<PathBuf> = truths.iter().map(|t| t.image.clone()).collect();
        for a in 0..n_annot.min(acts.len()) {
            let fr = cell_fractions(&grids[a], &truths[a].mask);
            let c = acts[a].data.cols();
            let (mut po, mut pb) = (vec![0f64; c], vec![0f64; c]);
            let (mut wo, mut wb) = (0f64, 0f64);
            let (mut uo, mut ub) = (vec![0f64; k], vec![0f64; k]);
            for i in 0..grids[a].len() {
                let w = f64::from(fr[i]);
                for (j, &x) in acts[a].data.row(i).iter().enumerate() {
                    po[j] += w * f64::from(x);
                    pb[j] += (1.0 - w) * f64::from(x);
                }
                for j in 0..k {
                    let x = f64::from(f.u[a].get(i, j) * vn[j]);
                    uo[j] += w * x;
                    ub[j] += (1.0 - w) * x;
                }
                wo += w;
                wb += 1.0 - w;
            }
            let unit = |v: &[f64], w: f64| -> Vec<f32> {
                let v: Vec<f64> = v.iter().map(|x| x / w.max(1e-9)).collect();
                let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                v.iter().map(|x| (x / n) as f32).collect()
            };
            let po = unit(&po, wo);
            // Soft factor weights: the factor's mean (energy-weighted) value on the object
            // over its mean on the background, as a share in [0, 1].
            let _uw: Vec<f32> = (0..k)
                .map(|j| {
                    let (o, b) = (uo[j] / wo.max(1e-9), ub[j] / wb.max(1e-9));
                    if o + b > 0.0 {
                        (o / (o + b)) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let maps: Vec<Vec<Vec<f32>>> = (0..names.len())
                .map(|m| {
                    acts.iter()
                        .zip(&base)
                        .enumerate()
                        .map(|(ii, (ac, bm))| {
                            let bmax = bm.iter().copied().fold(0f32, f32::max).max(1e-12);
                            let cos: Vec<f32> = (0..ac.grid.len())
                                .map(|i| {
                                    let row = ac.data.row(i);
                                    let n =
                                        row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                                    (row.iter().zip(&po).map(|(x, y)| x * y).sum::<f32>() / n)
                                        .max(0.0)
                                })
                                .collect();
                            let (lo, hi) = cos
                                .iter()
                                .fold((f32::MAX, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                            let _ = ii;
                            (0..ac.grid.len())
                                .map(|i| {
                                    let co = cos[i];
                                    let mm = if hi > lo { (co - lo) / (hi - lo) } else { 0.0 };
                                    let b = bm[i] / bmax;
                                    match m {
                                        0 => b,
                                        1 => (b * co).sqrt(),
                                        2 => b.powf(0.67) * co.powf(0.33),
                                        3 => b.powf(0.33) * co.powf(0.67),
                                        4 => (b * mm).sqrt(),
                                        5 => b.powf(0.67) * mm.powf(0.33),
                                        6 => 0.5 * (b + mm),
                                        _ => (b * co * co).sqrt(),
                                    }
                                })
                                .collect()
                        })
                        .collect()
                })
                .collect();
            for (m, mp) in maps.iter().enumerate() {
                let s = score_others(&grids, mp, &cfg, &images, truths, a)?;
                println!("{cname},{a},{},{:.4},{:.4}", names[m], s.jaccard, s.corloc);
            }
        }
        eprintln!("{ci} {cname} done");
    }
    Ok(())
}

/// One-shot by a guided joint factorization (coarse masks, Otsu, no refinement): start from
/// the unsupervised fit (K = 8, auto's factors are the object's), forbid the object's factors
/// outside the annotated mask and the others inside it (zeros stay zero under multiplicative
/// updates), weight the annotated image's rows, and iterate on. `COSEG_GUIDE` lists
/// `weight:iterations` settings (default `1:100,8:100`).
fn guided(root: &Path, layer: &str) -> Result<()> {
    let truth = load_truth(root)?;
    let settings: Vec<(f32, usize)> = std::env::var("COSEG_GUIDE")
        .unwrap_or_else(|_| "1:100,8:100".into())
        .split(',')
        .map(|s| {
            let (w, i) = s.split_once(':').context("weight:iterations")?;
            Ok((w.parse()?, i.parse()?))
        })
        .collect::<Result<_>>()?;
    let cfg = Config {
        k: 8,
        select: Select::Rel(0.75),
        map: MapKind::Sum,
        thresh: Thresh::Otsu,
        cells: false,
        guided: None,
    };
    println!("class,annot,map,j,corloc");
    for (ci, (cname, truths)) in truth.iter().enumerate() {
        let acts = read_class(&cache_dir().join(layer).join(format!("{cname}.bin")))?;
        let grids: Vec<CellGrid> = acts.iter().map(|a| a.grid).collect();
        let images: Vec<PathBuf> = truths.iter().map(|t| t.image.clone()).collect();
        let f = factorize(layer, cname, Some(&acts), 8)?;
        let k = f.v.rows();
        let object = chosen(&grids, &f, cfg.select, &[]);
        let a = 0usize;
        let fr = cell_fractions(&grids[a], &truths[a].mask);
        let evaluate = |maps: &[Vec<f32>], name: &str| -> Result<()> {
            let s = score_others(&grids, maps, &cfg, &images, truths, a)?;
            println!("{cname},{a},{name},{:.4},{:.4}", s.jaccard, s.corloc);
            Ok(())
        };
        evaluate(&fact_maps(&grids, &f, &cfg, &[]), "auto")?;
        let c = acts[0].data.cols();
        for &(w, iters) in &settings {
            let s = w.sqrt();
            let mut rows_a = Vec::new();
            let mut rows_u = Vec::new();
            for (ii, (ac, u)) in acts.iter().zip(&f.u).enumerate() {
                for i in 0..ac.grid.len() {
                    let scale = if ii == a { s } else { 1.0 };
                    rows_a.extend(ac.data.row(i).iter().map(|x| x * scale));
                    for j in 0..k {
                        let mut v = u.get(i, j) * scale;
                        if ii == a {
                            let inside = object.contains(&j);
                            if (inside && fr[i] < 0.25) || (!inside && fr[i] > 0.75) {
                                v = 0.0;
                            } else if v == 0.0 {
                                v = 1e-3;
                            }
                        }
                        rows_u.push(v);
                    }
                }
            }
            let am = Matrix::from_vec(rows_a.len() / c, c, rows_a)?;
            let u0 = Matrix::from_vec(am.rows(), k, rows_u)?;
            let nmf = Nmf::new(k).max_iter(iters).tol(0.0).build()?;
            let t = Instant::now();
            let fit = nmf.fit_from(&am, &u0, &f.v)?;
            let mut us = Vec::new();
            let mut off = 0;
            for (ii, g) in grids.iter().enumerate() {
                let n = g.len();
                let mut m = Matrix::zeros(n, k);
                for i in 0..n {
                    for j in 0..k {
                        let v = fit.u.get(off + i, j);
                        m.set(i, j, if ii == a { v / s } else { v });
                    }
                }
                us.push(m);
                off += n;
            }
            let g = Fact { u: us, v: fit.v };
            let vn: Vec<f32> = (0..k)
                .map(|j| g.v.row(j).iter().map(|x| x * x).sum::<f32>().sqrt())
                .collect();
            let maps: Vec<Vec<f32>> =
                g.u.iter()
                    .map(|u| {
                        (0..u.rows())
                            .map(|i| object.iter().map(|&j| u.get(i, j) * vn[j]).sum())
                            .collect()
                    })
                    .collect();
            evaluate(&maps, &format!("guided w{w} i{iters}"))?;
            eprintln!("{cname} w{w} i{iters}: {:.0} s", t.elapsed().as_secs_f64());
        }
        eprintln!("{ci} {cname} done");
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
        "extract" => {
            let size: u32 = opt("--size").unwrap_or_else(|| "512".into()).parse()?;
            let layers = opt("--layers");
            let layers: Vec<&str> = match &layers {
                Some(l) => l.split(',').collect(),
                None => LAYERS.to_vec(),
            };
            extract(&root, size, &layers)
        }
        "grid" => grid(&root, &layer),
        "oneshot-study" => oneshot_study(&root, &layer),
        "proto" => proto(&root, &layer),
        "guided" => guided(&root, &layer),
        "product" => product(
            &root,
            &layer,
            &args
                .iter()
                .skip(2)
                .filter(|a| a.contains(':'))
                .cloned()
                .collect::<Vec<_>>(),
        ),
        "show" => show(
            &root,
            &layer,
            &opt("--class").context("--class")?,
            &parse_config(&opt("--method").context("--method")?)?,
            Path::new(&opt("--out").unwrap_or_else(|| "target/show.png".into())),
        ),
        "diag" => diag(
            &root,
            &layer,
            opt("--k").unwrap_or_else(|| "4".into()).parse()?,
        ),
        "sweep" => {
            let methods: Vec<(String, Config)> = args
                .iter()
                .skip(2)
                .filter(|a| a.starts_with('k'))
                .map(|a| Ok((a.clone(), parse_config(a)?)))
                .collect::<Result<_>>()?;
            sweep(
                &root,
                &layer,
                &methods,
                args.iter().any(|a| a == "--per-class"),
            )
        }
        _ => bail!("unknown command {cmd:?}"),
    }
}
