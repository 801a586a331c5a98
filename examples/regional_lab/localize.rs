//! Localization experiments: where is the query's region in each view that holds it?
//! Joint factorization (the library's) against the stored-factor variants.

use crate::cache::{factors, Set};
use anyhow::Result;
use deepfactor::eval::{evaluate_localization, BoxPrediction};
use deepfactor::heatmap::{filter_factors, Binarize, Heatmap, DEFAULT_MASS_THRESHOLD};
use deepfactor::index::StoredFactors;
use deepfactor::localize::{calibrate, kept_average, Localizer};
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

/// The binarization rules compared.
#[derive(Clone, Copy, Debug)]
pub enum Rule {
    Calibrated,
    Top30,
    Otsu,
}

const RULES: [Rule; 3] = [Rule::Calibrated, Rule::Top30, Rule::Otsu];

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Calibrated => "calibrated",
            Rule::Top30 => "top30",
            Rule::Otsu => "otsu",
        }
    }
    fn binarize(self) -> Binarize {
        match self {
            Rule::Calibrated => Binarize::Calibrated,
            Rule::Top30 => Binarize::TopFraction(0.3),
            Rule::Otsu => Binarize::Otsu,
        }
    }
}

/// A stored-factor localizer: from the query's factorization and a target's stored factors,
/// the target's region heatmap.
pub struct StoredInput<'a> {
    /// Kept query concepts (unit).
    pub q: &'a [Vec<f32>],
    pub target: &'a StoredFactors,
    pub grid: CellGrid,
}

/// Heatmap of the target: each stored factor weighted by `cos(q, v_k)^p` (best match only
/// for `p = ∞`), summed over query concepts.
pub fn stored_heat(inp: &StoredInput<'_>, p: f32, min_cos: f32) -> Result<Heatmap> {
    let tv: Vec<Vec<f32>> = (0..inp.target.k())
        .filter_map(|i| inp.target.concept(i))
        .map(|v| unit(&v))
        .collect();
    let maps: Vec<Heatmap> = (0..inp.target.k())
        .filter_map(|i| inp.target.heatmap(i))
        .map(|h| Heatmap::new(inp.grid, h))
        .collect::<deepfactor::Result<_>>()?;
    let mut sel = Vec::new();
    let mut w = Vec::new();
    for q in inp.q {
        let cos: Vec<f32> = tv.iter().map(|t| dot(q, t)).collect();
        if p.is_infinite() {
            if let Some((i, &c)) = cos
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
            {
                if c > min_cos {
                    sel.push(&maps[i]);
                    w.push(c);
                }
            }
        } else {
            for (i, &c) in cos.iter().enumerate() {
                if c > min_cos {
                    sel.push(&maps[i]);
                    w.push(c.powf(p));
                }
            }
        }
    }
    Ok(Heatmap::average(inp.grid, &sel, &w)?)
}

/// Predictions of one variant, by binarization rule.
type Preds = BTreeMap<&'static str, Vec<BoxPrediction>>;

fn push(preds: &mut BTreeMap<String, Preds>, variant: &str, rule: &'static str, p: BoxPrediction) {
    preds
        .entry(variant.to_string())
        .or_default()
        .entry(rule)
        .or_default()
        .push(p);
}

/// Joint factorization of `mats` (query first), then per query concept the joint factor
/// whose concept matches best (cosine); returns each image's weighted heatmap.
fn joint_matched(
    mats: &[&deepfactor::Matrix],
    grids: &[CellGrid],
    q: &[Vec<f32>],
    k: usize,
    p: f32,
) -> Result<Vec<Heatmap>> {
    let nmf = deepfactor::nmf::Nmf::new(k).max_iter(200).tol(0.0).build()?;
    let jf = nmf.fit_joint(mats)?;
    let v = &jf.factorization.v;
    let vu: Vec<Vec<f32>> = (0..v.rows()).map(|r| unit(v.row(r))).collect();
    let mut w = vec![0f32; k];
    for qv in q {
        let cos: Vec<f32> = vu.iter().map(|t| dot(qv, t)).collect();
        if p.is_infinite() {
            if let Some((i, &c)) = cos.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
                w[i] += c.max(0.0);
            }
        } else {
            for (i, &c) in cos.iter().enumerate() {
                w[i] += c.max(0.0).powf(p);
            }
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

fn truth_box(set: &Set, query: &str, vi: usize) -> BBox {
    set.gt
        .query(query)
        .and_then(|q| q.boxes.iter().find(|(i, _)| *i == vi).map(|(_, b)| *b))
        .unwrap_or(BBox { x1: 0.0, y1: 0.0, x2: 0.0, y2: 0.0 })
}

pub fn run(sets: &[Set], joint: bool) -> Result<()> {
    let mut table: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (si, set) in sets.iter().enumerate() {
        let tasks = tasks(set);
        if tasks.is_empty() {
            continue;
        }
        let facs = factors(set, 512, "head", 8)?;
        let mut preds: BTreeMap<String, Preds> = BTreeMap::new();
        let t0 = Instant::now();
        for task in &tasks {
            let (qg, qf) = &facs[task.qi];
            let maps = Heatmap::columns(&qf.u, *qg)?;
            let filt = filter_factors(&maps, &task.bbox, DEFAULT_MASS_THRESHOLD);
            let q: Vec<Vec<f32>> = filt.kept.iter().map(|&k| unit(qf.v.row(k))).collect();
            let qavg = kept_average(&qf.u, *qg, &filt.kept)?;
            let name = |i: usize| set.images()[i].clone();
            // Whole image, for reference.
            for &vi in &task.views {
                let g = facs[vi].0;
                push(
                    &mut preds,
                    "whole image",
                    "-",
                    BoxPrediction {
                        query: task.query.clone(),
                        image: name(vi),
                        bbox: Some(BBox::new(0.0, 0.0, g.image_width as f32, g.image_height as f32)?),
                    },
                );
            }
            // Stored variants.
            for &vi in &task.views {
                let (g, f): &(CellGrid, Factorization) = &facs[vi];
                let sf = StoredFactors::quantize(&f.v, &f.u, g.rows, g.cols)?;
                let inp = StoredInput {
                    q: &q,
                    target: &sf,
                    grid: *g,
                };
                for (variant, p, min_cos) in [
                    ("stored best", f32::INFINITY, 0.0),
                    ("stored cos^1", 1.0, 0.0),
                    ("stored cos^3", 3.0, 0.0),
                    ("stored cos^8", 8.0, 0.0),
                ] {
                    let h = stored_heat(&inp, p, min_cos)?;
                    for rule in RULES {
                        let b = match rule {
                            Rule::Calibrated => {
                                let f = calibrate(&qavg, &task.bbox).unwrap_or(0.5);
                                h.region_box(Binarize::RelativeToMax(f))
                            }
                            r => h.region_box(r.binarize()),
                        };
                        push(
                            &mut preds,
                            variant,
                            rule.name(),
                            BoxPrediction {
                                query: task.query.clone(),
                                image: name(vi),
                                bbox: b,
                            },
                        );
                    }
                }
            }
            // Oracle: the single stored factor of the view whose box fits best.
            for &vi in &task.views {
                let (g, f): &(CellGrid, Factorization) = &facs[vi];
                let truth = truth_box(set, &task.query, vi);
                let best = Heatmap::columns(&f.u, *g)?
                    .iter()
                    .filter_map(|h| h.region_box(Binarize::Otsu))
                    .max_by(|a, b| a.iou(&truth).total_cmp(&b.iou(&truth)));
                push(&mut preds, "oracle stored factor", "otsu", BoxPrediction {
                    query: task.query.clone(),
                    image: name(vi),
                    bbox: best,
                });
            }
            // Joint (the library's), K = 8, query + all views at once.
            if joint {
                let qa = set.activations(512, "head", task.qi)?;
                let ta: Vec<Activations> = task
                    .views
                    .iter()
                    .map(|&vi| set.activations(512, "head", vi))
                    .collect::<Result<_>>()?;
                let refs: Vec<&Activations> = ta.iter().collect();
                let crowed = |a: &Activations| {
                    let w = deepfactor::descriptor::crow::channel_weights(&a.data);
                    let mut data = a.data.clone();
                    for r in 0..data.rows() {
                        data.row_mut(r).iter_mut().zip(&w).for_each(|(v, w)| *v *= w);
                    }
                    Activations { grid: a.grid, data }
                };
                let qc = crowed(&qa);
                let tc: Vec<Activations> = ta.iter().map(crowed).collect();
                let crefs: Vec<&Activations> = tc.iter().collect();
                // Joint factorizations whose factors are chosen by matching the query's own
                // kept concepts: on the real activations (CroW-weighted, the concepts' space)
                // and on the stored factors' reconstructions U·V.
                let recon: Vec<deepfactor::Matrix> = task
                    .views
                    .iter()
                    .map(|&vi| {
                        let (g, f) = &facs[vi];
                        let sf = StoredFactors::quantize(&f.v, &f.u, g.rows, g.cols)?;
                        Ok(sf.heatmaps().matmul(&sf.concepts())?)
                    })
                    .collect::<Result<_>>()?;
                let grids: Vec<CellGrid> =
                    std::iter::once(qa.grid).chain(ta.iter().map(|a| a.grid)).collect();
                for (variant, use_recon, k, p) in [
                    ("joint-matched k8 best", false, 8, f32::INFINITY),
                    ("joint-matched k8 cos^3", false, 8, 3.0),
                    ("joint-matched k16 best", false, 16, f32::INFINITY),
                    ("joint-matched stored-recon k8 best", true, 8, f32::INFINITY),
                    ("joint-matched stored-recon k16 best", true, 16, f32::INFINITY),
                ] {
                    let mut mats: Vec<&deepfactor::Matrix> = vec![&qc.data];
                    if use_recon {
                        mats.extend(recon.iter());
                    } else {
                        mats.extend(tc.iter().map(|a| &a.data));
                    }
                    let heats = joint_matched(&mats, &grids, &q, k, p)?;
                    let cal = calibrate(&heats[0], &task.bbox).unwrap_or(0.5);
                    for (ti, &vi) in task.views.iter().enumerate() {
                        let h = &heats[ti + 1];
                        for rule in RULES {
                            let b = match rule {
                                Rule::Calibrated => h.region_box(Binarize::RelativeToMax(cal)),
                                r => h.region_box(r.binarize()),
                            };
                            push(&mut preds, variant, rule.name(), BoxPrediction {
                                query: task.query.clone(),
                                image: name(vi),
                                bbox: b,
                            });
                        }
                    }
                }
                for rule in RULES {
                    for (variant, k, pair, crow) in [
                        ("joint k8", 8, false, false),

                        ("joint k8 crow", 8, false, true),
                    ] {
                        let loc = Localizer::builder().k(k).binarize(rule.binarize()).build()?;
                        let (q, t) = if crow { (&qc, &crefs) } else { (&qa, &refs) };
                        if k == 8 && !pair && !crow && matches!(rule, Rule::Otsu) {
                            let j = Localizer::builder().k(8).build()?;
                            let mut mats = vec![q.data.clone()];
                            mats.extend(t.iter().map(|a| a.data.clone()));
                            let _ = &j;
                            let r: Vec<&deepfactor::Matrix> = mats.iter().collect();
                            let nmf = deepfactor::nmf::Nmf::new(8).max_iter(200).tol(0.0).build()?;
                            let jf = nmf.fit_joint(&r)?;
                            for (ti, &vi) in task.views.iter().enumerate() {
                                let truth = truth_box(set, &task.query, vi);
                                let best = Heatmap::columns(&jf.u_per_image[ti + 1], t[ti].grid)?
                                    .iter()
                                    .filter_map(|h| h.region_box(Binarize::Otsu))
                                    .max_by(|a, b| a.iou(&truth).total_cmp(&b.iou(&truth)));
                                push(&mut preds, "oracle joint factor (unbalanced)", "otsu", BoxPrediction {
                                    query: task.query.clone(),
                                    image: name(vi),
                                    bbox: best,
                                });
                            }
                        }
                        let located: Vec<Option<BBox>> = if pair {
                            t.iter()
                                .map(|x| Ok(loc.joint(q, &task.bbox, &[*x])?.targets[0].bbox))
                                .collect::<Result<_>>()?
                        } else {
                            loc.joint(q, &task.bbox, t)?.targets.iter().map(|l| l.bbox).collect()
                        };
                        for (&vi, b) in task.views.iter().zip(located) {
                            push(
                                &mut preds,
                                variant,
                                rule.name(),
                                BoxPrediction {
                                    query: task.query.clone(),
                                    image: name(vi),
                                    bbox: b,
                                },
                            );
                        }
                    }
                }
            }
        }
        eprintln!("{}: {} tasks in {:.1} s", set.name, tasks.len(), t0.elapsed().as_secs_f64());
        for (variant, by_rule) in &preds {
            for (rule, p) in by_rule {
                let e = evaluate_localization(&set.gt, p)?;
                // Median area of the predicted box over the truth's.
                let mut ratios: Vec<f32> = p
                    .iter()
                    .filter_map(|bp| {
                        let vi = set.gt.image_index(&bp.image)?;
                        let t = truth_box(set, &bp.query, vi);
                        bp.bbox.map(|b| b.area() / t.area().max(1.0))
                    })
                    .collect();
                ratios.sort_by(|a, b| a.total_cmp(b));
                let med = ratios.get(ratios.len() / 2).copied().unwrap_or(f32::NAN);
                let label = format!("{variant} / {rule} (area ×{med:.1} on {})", set.name);
                let row = match table.iter_mut().position(|(l, _)| *l == label) {
                    Some(i) => &mut table[i].1,
                    None => {
                        table.push((label, vec![(f64::NAN, f64::NAN); sets.len()]));
                        &mut table.last_mut().expect("just pushed").1
                    }
                };
                row[si] = (e.mean_iou, e.corloc);
            }
        }
    }
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    println!("| variant / binarization | {} (IoU / CorLoc) | mean IoU |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(names.len()));
    for (label, vals) in &table {
        let mean = vals.iter().map(|v| v.0).sum::<f64>() / vals.len() as f64;
        let cells: Vec<String> = vals.iter().map(|(i, c)| format!("{i:.1} / {c:.1}")).collect();
        println!("| {label} | {} | {mean:.1} |", cells.join(" | "));
    }
    Ok(())
}
