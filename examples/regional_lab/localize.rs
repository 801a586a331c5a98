//! Localization experiments: where is the query's region in each view that holds it?
//! Joint factorization (the library's) against the stored-factor variants.

use crate::cache::{factors, Set};
use crate::retrieval::FactorDb;
use anyhow::Result;
use deepfactor::eval::{evaluate_localization, BoxPrediction};
use deepfactor::heatmap::{filter_factors, Binarize, Heatmap, DEFAULT_MASS_THRESHOLD};
use deepfactor::index::StoredFactors;
use deepfactor::linalg::Matrix;
use deepfactor::localize::{calibrate, Localizer};
use deepfactor::nmf::Factorization;
use deepfactor::{Activations, BBox, CellGrid};
use std::collections::BTreeMap;
use std::time::Instant;

/// One localization task: a query region and the views (image index, truth) that hold it.
pub struct Task {
    pub query: String,
    pub qi: usize,
    pub bbox: BBox,
    pub views: Vec<usize>,
}

pub fn tasks(set: &Set) -> Vec<Task> {
    set.gt
        .queries()
        .iter()
        .filter(|q| !q.boxes.is_empty())
        .filter_map(|q| {
            Some(Task {
                query: q.name.clone(),
                qi: set.gt.image_index(&q.image)?,
                bbox: q.bbox?,
                views: q.boxes.iter().map(|(i, _)| *i).collect(),
            })
        })
        .collect()
}

fn unit(x: &[f32]) -> Vec<f32> {
    let n = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-30);
    x.iter().map(|v| v / n).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn truth_box(set: &Set, query: &str, vi: usize) -> BBox {
    set.gt
        .query(query)
        .and_then(|q| q.boxes.iter().find(|(i, _)| *i == vi).map(|(_, b)| *b))
        .unwrap_or(BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 0.0,
            y2: 0.0,
        })
}

/// What a variant gives for one view: a heatmap to binarize, and optionally a "transfer"
/// map (per cell, the share explained by query factors lying inside the box).
struct ViewMap {
    heat: Heatmap,
    transfer: Option<Heatmap>,
}

/// The query side of one task.
struct QuerySide {
    /// Unit concepts of every query factor, and each one's mass inside the box.
    all: Vec<Vec<f32>>,
    mass: Vec<f32>,
    /// Indices of the kept factors (75% rule).
    kept: Vec<usize>,
    /// Per kept factor: mean and standard deviation over the database of its best match.
    stats: Vec<(f32, f32)>,
}

/// One stored factorization, as the index keeps it, with unit concepts.
struct Target {
    grid: CellGrid,
    maps: Vec<Heatmap>,
    concepts: Vec<Vec<f32>>,
    /// Energy share of each factor (‖u_k‖·‖v_k‖, normalized to sum 1).
    energy: Vec<f32>,
    recon: Matrix,
}

fn target(g: &CellGrid, f: &Factorization) -> Result<Target> {
    let sf = StoredFactors::quantize(&f.v, &f.u, g.rows, g.cols)?;
    let u = sf.heatmaps();
    let v = sf.concepts();
    let maps = Heatmap::columns(&u, *g)?;
    let concepts = (0..v.rows()).map(|k| unit(v.row(k))).collect();
    let mut energy: Vec<f32> = (0..v.rows())
        .map(|k| {
            let un = (0..u.rows())
                .map(|r| u.get(r, k).powi(2))
                .sum::<f32>()
                .sqrt();
            let vn = v.row(k).iter().map(|x| x * x).sum::<f32>().sqrt();
            un * vn
        })
        .collect();
    let tot: f32 = energy.iter().sum::<f32>().max(1e-30);
    energy.iter_mut().for_each(|e| *e /= tot);
    Ok(Target {
        grid: *g,
        maps,
        concepts,
        energy,
        recon: u.matmul(&v)?,
    })
}

/// Stored localization: per kept query concept, the matching target factors weighted by
/// `weight(j, cos)` (best match only when `best`).
fn stored(
    qs: &QuerySide,
    t: &Target,
    best: bool,
    weight: &dyn Fn(usize, f32) -> f32,
) -> Result<Heatmap> {
    let mut sel = Vec::new();
    let mut w = Vec::new();
    for (jj, &j) in qs.kept.iter().enumerate() {
        let cos: Vec<f32> = t.concepts.iter().map(|c| dot(&qs.all[j], c)).collect();
        if best {
            if let Some((i, &c)) = cos.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
                let x = weight(jj, c);
                if x > 0.0 {
                    sel.push(&t.maps[i]);
                    w.push(x);
                }
            }
        } else {
            for (i, &c) in cos.iter().enumerate() {
                let x = weight(jj, c);
                if x > 0.0 {
                    sel.push(&t.maps[i]);
                    w.push(x);
                }
            }
        }
    }
    Ok(Heatmap::average(t.grid, &sel, &w)?)
}

/// Transfer map: each target cell's share explained by factors whose best-matching query
/// factor lies inside the box (mass inside, weighted).
fn transfer(qs: &QuerySide, t: &Target) -> Result<Heatmap> {
    let inside: Vec<f32> = t
        .concepts
        .iter()
        .map(|c| {
            let cos: Vec<f32> = qs.all.iter().map(|q| dot(q, c)).collect();
            let (j, _) = cos
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap_or((0, &0.0));
            qs.mass[j]
        })
        .collect();
    let cells = t.grid.len();
    let mut num = vec![0f32; cells];
    let mut den = vec![0f32; cells];
    for (k, m) in t.maps.iter().enumerate() {
        // Each factor's contribution to the reconstruction's energy at a cell: u · ‖v‖.
        let vn = t.energy[k]
            / m.values()
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(1e-30);
        for (c, &x) in m.values().iter().enumerate() {
            num[c] += x * vn * inside[k];
            den[c] += x * vn;
        }
    }
    let vals = num
        .iter()
        .zip(&den)
        .map(|(n, d)| if *d > 0.0 { n / d } else { 0.0 })
        .collect();
    Ok(Heatmap::new(t.grid, vals)?)
}

/// Per cell: the share of the reconstruction explained by target factors that match some
/// kept query concept significantly (z ≥ 2 against the database).
fn zfill(qs: &QuerySide, t: &Target) -> Heatmap {
    let sig: Vec<f32> = t
        .concepts
        .iter()
        .map(|c| {
            let zmax = qs
                .kept
                .iter()
                .enumerate()
                .map(|(jj, &j)| (dot(&qs.all[j], c) - qs.stats[jj].0) / qs.stats[jj].1)
                .fold(f32::NEG_INFINITY, f32::max);
            if zmax >= 2.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let cells = t.grid.len();
    let mut num = vec![0f32; cells];
    let mut den = vec![0f32; cells];
    for (k, m) in t.maps.iter().enumerate() {
        let vn = t.energy[k]
            / m.values()
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(1e-30);
        for (c, &x) in m.values().iter().enumerate() {
            num[c] += x * vn * sig[k];
            den[c] += x * vn;
        }
    }
    let vals = num
        .iter()
        .zip(&den)
        .map(|(n, d)| if *d > 0.0 { n / d } else { 0.0 })
        .collect();
    Heatmap::new(t.grid, vals).unwrap_or_else(|_| t.maps[0].clone())
}

/// Joint factorization of `mats` (query first), then per kept query concept the joint factor
/// whose concept matches best (cosine); each image's weighted heatmap.
fn joint_matched(
    mats: &[&Matrix],
    grids: &[CellGrid],
    q: &[Vec<f32>],
    k: usize,
) -> Result<Vec<Heatmap>> {
    let nmf = deepfactor::nmf::Nmf::new(k)
        .max_iter(200)
        .tol(0.0)
        .build()?;
    let jf = nmf.fit_joint(mats)?;
    let v = &jf.factorization.v;
    let vu: Vec<Vec<f32>> = (0..v.rows()).map(|r| unit(v.row(r))).collect();
    let mut w = vec![0f32; k];
    for qv in q {
        let cos: Vec<f32> = vu.iter().map(|t| dot(qv, t)).collect();
        if let Some((i, &c)) = cos.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
            w[i] += c.max(0.0);
        }
    }
    let sel: Vec<usize> = (0..k).filter(|&i| w[i] > 0.0).collect();
    let ws: Vec<f32> = sel.iter().map(|&i| w[i]).collect();
    grids
        .iter()
        .zip(&jf.u_per_image)
        .map(|(g, u)| {
            let maps = sel
                .iter()
                .map(|&i| Heatmap::from_column(u, i, *g))
                .collect::<deepfactor::Result<Vec<_>>>()?;
            let refs: Vec<&Heatmap> = maps.iter().collect();
            Ok(Heatmap::average(*g, &refs, &ws)?)
        })
        .collect()
}

fn crowed(a: &Activations) -> Activations {
    let w = deepfactor::descriptor::crow::channel_weights(&a.data);
    let mut data = a.data.clone();
    for r in 0..data.rows() {
        data.row_mut(r)
            .iter_mut()
            .zip(&w)
            .for_each(|(v, w)| *v *= w);
    }
    Activations { grid: a.grid, data }
}

pub struct Options {
    pub k: usize,
    pub variants: Vec<String>,
}

const ALL_VARIANTS: &[&str] = &[
    "joint",
    "joint-matched",
    "joint-recon",
    "stored-best",
    "stored-cos3",
    "stored-z",
    "stored-zbest",
    "stored-z2",
    "stored-z-1",
];

pub fn run(sets: &[Set], o: &Options) -> Result<()> {
    let variants: Vec<String> = if o.variants.is_empty() {
        ALL_VARIANTS.iter().map(|s| s.to_string()).collect()
    } else {
        o.variants.clone()
    };
    let on = |v: &str| variants.iter().any(|x| x == v);
    let mut table: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (si, set) in sets.iter().enumerate() {
        let tasks = tasks(set);
        if tasks.is_empty() {
            continue;
        }
        let facs = factors(set, 512, "head", o.k)?;
        let db = FactorDb::build(&facs, "v");
        let n = set.images().len();
        // (variant, rule) -> predictions
        let mut preds: BTreeMap<(String, String), Vec<BoxPrediction>> = BTreeMap::new();
        let t0 = Instant::now();
        for task in &tasks {
            let (qg, qf) = &facs[task.qi];
            let maps = Heatmap::columns(&qf.u, *qg)?;
            let filt = filter_factors(&maps, &task.bbox, DEFAULT_MASS_THRESHOLD);
            let all: Vec<Vec<f32>> = (0..qf.v.rows()).map(|k| unit(qf.v.row(k))).collect();
            // Database statistics of each kept concept's best match per image.
            let qk: Vec<Vec<f32>> = filt.kept.iter().map(|&k| all[k].clone()).collect();
            let sims = db.sims(&qk);
            let stats = sims
                .iter()
                .map(|s| {
                    let mut best = vec![f32::NEG_INFINITY; n];
                    for (v, &x) in s.iter().enumerate() {
                        let i = db.owner[v] as usize;
                        best[i] = best[i].max(x);
                    }
                    let vals: Vec<f32> = best.into_iter().filter(|x| x.is_finite()).collect();
                    let mean = vals.iter().sum::<f32>() / vals.len().max(1) as f32;
                    let var = vals.iter().map(|x| (x - mean).powi(2)).sum::<f32>()
                        / vals.len().max(1) as f32;
                    (mean, var.sqrt().max(1e-6))
                })
                .collect();
            let qs = QuerySide {
                all,
                mass: filt.mass_inside.clone(),
                kept: filt.kept.clone(),
                stats,
            };
            let qavg = {
                let refs: Vec<&Heatmap> = filt.kept.iter().map(|&k| &maps[k]).collect();
                Heatmap::average(*qg, &refs, &vec![1.0; refs.len()])?
            };
            let cal = calibrate(&qavg, &task.bbox).unwrap_or(0.5);
            let targets: Vec<Target> = task
                .views
                .iter()
                .map(|&vi| target(&facs[vi].0, &facs[vi].1))
                .collect::<Result<_>>()?;
            let mut out: Vec<(String, Vec<ViewMap>)> = Vec::new();
            let z = |jj: usize, c: f32| {
                let (m, s) = qs.stats[jj];
                ((c - m) / s).max(0.0)
            };
            for (name, best, w) in [
                (
                    "stored-best",
                    true,
                    &(|_: usize, c: f32| c) as &dyn Fn(usize, f32) -> f32,
                ),
                ("stored-cos3", false, &|_: usize, c: f32| c.max(0.0).powi(3)),
                ("stored-z", false, &z),
                ("stored-zbest", true, &z),
                ("stored-z2", false, &|jj: usize, c: f32| z(jj, c).powi(2)),
                ("stored-z-1", false, &|jj: usize, c: f32| {
                    (z(jj, c) - 1.0).max(0.0)
                }),
            ] {
                if !on(name) {
                    continue;
                }
                let maps = targets
                    .iter()
                    .map(|t| {
                        Ok(ViewMap {
                            heat: stored(&qs, t, best, w)?,
                            transfer: Some(zfill(&qs, t)),
                        })
                    })
                    .collect::<Result<_>>()?;
                out.push((name.to_string(), maps));
            }
            let need_acts = on("joint") || on("joint-matched") || on("joint-recon");
            if need_acts {
                let qa = set.activations(512, "head", task.qi)?;
                let ta: Vec<Activations> = task
                    .views
                    .iter()
                    .map(|&vi| set.activations(512, "head", vi))
                    .collect::<Result<_>>()?;
                let grids: Vec<CellGrid> = std::iter::once(qa.grid)
                    .chain(ta.iter().map(|a| a.grid))
                    .collect();
                let qc = crowed(&qa);
                let qk: Vec<Vec<f32>> = qs.kept.iter().map(|&k| qs.all[k].clone()).collect();
                if on("joint-matched") {
                    let tc: Vec<Activations> = ta.iter().map(crowed).collect();
                    let mut mats: Vec<&Matrix> = vec![&qc.data];
                    mats.extend(tc.iter().map(|a| &a.data));
                    let h = joint_matched(&mats, &grids, &qk, 8)?;
                    out.push((
                        "joint-matched".into(),
                        h[1..]
                            .iter()
                            .zip(&targets)
                            .map(|(h, t)| {
                                Ok(ViewMap {
                                    heat: h.clone(),
                                    transfer: Some(transfer(&qs, t)?),
                                })
                            })
                            .collect::<Result<_>>()?,
                    ));
                }
                if on("joint-recon") {
                    let mut mats: Vec<&Matrix> = vec![&qc.data];
                    mats.extend(targets.iter().map(|t| &t.recon));
                    let h = joint_matched(&mats, &grids, &qk, 8)?;
                    out.push((
                        "joint-recon".into(),
                        h[1..]
                            .iter()
                            .zip(&targets)
                            .map(|(h, t)| {
                                Ok(ViewMap {
                                    heat: h.clone(),
                                    transfer: Some(transfer(&qs, t)?),
                                })
                            })
                            .collect::<Result<_>>()?,
                    ));
                }
                if on("joint") {
                    let refs: Vec<&Activations> = ta.iter().collect();
                    for (rule, b) in [
                        ("calibrated", Binarize::Calibrated),
                        ("top30", Binarize::TopFraction(0.3)),
                        ("otsu", Binarize::Otsu),
                    ] {
                        let loc = Localizer::builder().binarize(b).build()?;
                        let j = loc.joint(&qa, &task.bbox, &refs)?;
                        for (&vi, l) in task.views.iter().zip(&j.targets) {
                            preds
                                .entry(("joint (library)".into(), rule.into()))
                                .or_default()
                                .push(BoxPrediction {
                                    query: task.query.clone(),
                                    image: set.images()[vi].clone(),
                                    bbox: l.bbox,
                                });
                        }
                    }
                }
            }
            for (variant, maps) in out {
                for (&vi, m) in task.views.iter().zip(&maps) {
                    let whole = BBox::new(
                        0.0,
                        0.0,
                        m.heat.grid().image_width as f32,
                        m.heat.grid().image_height as f32,
                    )?;
                    let fill = m.transfer.as_ref().map(|t| {
                        // Energy-weighted mean of the transfer map.
                        t.values().iter().sum::<f32>() / t.values().len() as f32
                    });
                    for (rule, b) in [
                        (
                            "calibrated",
                            m.heat.region_box(Binarize::RelativeToMax(cal)),
                        ),
                        ("top30", m.heat.region_box(Binarize::TopFraction(0.3))),
                        ("otsu", m.heat.region_box(Binarize::Otsu)),
                    ] {
                        let mut put = |r: String, b: Option<BBox>| {
                            preds
                                .entry((variant.clone(), r))
                                .or_default()
                                .push(BoxPrediction {
                                    query: task.query.clone(),
                                    image: set.images()[vi].clone(),
                                    bbox: b,
                                })
                        };
                        put(rule.into(), b);
                        if let Some(f) = fill {
                            for tau in [0.4f32, 0.5, 0.6] {
                                put(
                                    format!("{rule} + fill≥{tau}"),
                                    if f >= tau { Some(whole) } else { b },
                                );
                            }
                        }
                    }
                    if let Some(t) = &m.transfer {
                        let mx = t.max().max(1e-6);
                        preds
                            .entry((variant.clone(), "transfer≥0.5".into()))
                            .or_default()
                            .push(BoxPrediction {
                                query: task.query.clone(),
                                image: set.images()[vi].clone(),
                                bbox: t.region_box(Binarize::RelativeToMax((0.5 / mx).min(1.0))),
                            });
                    }
                }
            }
        }
        eprintln!(
            "{}: {} tasks in {:.1} s",
            set.name,
            tasks.len(),
            t0.elapsed().as_secs_f64()
        );
        for ((variant, rule), p) in &preds {
            let e = evaluate_localization(&set.gt, p)?;
            let label = format!("{variant} / {rule}");
            let row = match table.iter().position(|(l, _)| *l == label) {
                Some(i) => &mut table[i].1,
                None => {
                    table.push((label, vec![(f64::NAN, f64::NAN); sets.len()]));
                    &mut table.last_mut().expect("just pushed").1
                }
            };
            row[si] = (e.mean_iou, e.corloc);
        }
        let _ = truth_box(set, "", 0);
    }
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    println!(
        "| variant / binarization (K = {}) | {} (IoU / CorLoc) | mean IoU | mean CorLoc |",
        o.k,
        names.join(" | ")
    );
    println!("|---|{}---|---|", "---|".repeat(names.len()));
    for (label, vals) in &table {
        let mi = vals.iter().map(|v| v.0).sum::<f64>() / vals.len() as f64;
        let mc = vals.iter().map(|v| v.1).sum::<f64>() / vals.len() as f64;
        let cells: Vec<String> = vals
            .iter()
            .map(|(i, c)| format!("{i:.1} / {c:.1}"))
            .collect();
        println!("| {label} | {} | {mi:.1} | {mc:.1} |", cells.join(" | "));
    }
    Ok(())
}
