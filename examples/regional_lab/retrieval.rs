//! Retrieval experiments: the global descriptor against factor-level matching.

use crate::cache::{factors, Set};
use anyhow::Result;
use deepfactor::descriptor::vu_concepts;
use deepfactor::descriptor::{DescriptorConfig, DescriptorKind};
use deepfactor::eval::{evaluate, Protocol, Rankings};
use deepfactor::heatmap::{filter_factors, Heatmap, DEFAULT_MASS_THRESHOLD};
use deepfactor::nmf::Factorization;
use deepfactor::{BBox, CellGrid};
use rayon::prelude::*;

/// Which factorization the factor vectors come from, and how they are formed.
#[derive(Debug, Clone)]
pub struct FactorCfg {
    pub size: u32,
    pub layer: String,
    pub k: usize,
    /// `v`: rows of V; `vu`: rows of V′ = U′ᵀU′V.
    pub concepts: String,
}

impl std::str::FromStr for FactorCfg {
    type Err = anyhow::Error;
    /// `layer:k:v|vu[@size]`, layer `head` or `b11` (= blocks.11.expand).
    fn from_str(s: &str) -> Result<Self> {
        let (s, size) = match s.split_once('@') {
            Some((a, b)) => (a, b.parse()?),
            None => (s, 512),
        };
        let p: Vec<&str> = s.split(':').collect();
        anyhow::ensure!(p.len() == 3, "factor config {s:?}: layer:k:v|vu");
        let layer = match p[0] {
            "b11" => "blocks.11.expand".to_string(),
            l => l.to_string(),
        };
        Ok(FactorCfg {
            size,
            layer,
            k: p[1].parse()?,
            concepts: p[2].to_string(),
        })
    }
}

impl std::fmt::Display for FactorCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = if self.layer == "blocks.11.expand" {
            "b11"
        } else {
            &self.layer
        };
        write!(f, "{l}:{}:{}", self.k, self.concepts)?;
        if self.size != 512 {
            write!(f, "@{}", self.size)?;
        }
        Ok(())
    }
}

fn unit(x: &[f32]) -> Option<Vec<f32>> {
    let n = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    (n > 0.0).then(|| x.iter().map(|v| v / n).collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Unit concept vectors of one image's factors (all-zero ones left out).
pub fn concept_rows(grid: &CellGrid, f: &Factorization, concepts: &str) -> Vec<(usize, Vec<f32>)> {
    let m = if concepts == "vu" {
        vu_concepts(&f.u, &f.v, grid)
    } else {
        f.v.clone()
    };
    (0..m.rows())
        .filter_map(|k| unit(m.row(k)).map(|u| (k, u)))
        .collect()
}

/// The database side of factor-level matching: every image's unit factor vectors.
pub struct FactorDb {
    pub dim: usize,
    pub vecs: Vec<f32>,
    pub owner: Vec<u32>,
}

impl FactorDb {
    pub fn build(facs: &[(CellGrid, Factorization)], concepts: &str) -> FactorDb {
        let rows: Vec<Vec<(usize, Vec<f32>)>> = facs
            .par_iter()
            .map(|(g, f)| concept_rows(g, f, concepts))
            .collect();
        let dim = facs.first().map_or(0, |(_, f)| f.v.cols());
        let mut vecs = Vec::new();
        let mut owner = Vec::new();
        for (i, r) in rows.into_iter().enumerate() {
            for (_, v) in r {
                vecs.extend(v);
                owner.push(i as u32);
            }
        }
        FactorDb { dim, vecs, owner }
    }

    pub fn len(&self) -> usize {
        self.owner.len()
    }

    /// For each query vector, every database vector's similarity.
    pub fn sims(&self, q: &[Vec<f32>]) -> Vec<Vec<f32>> {
        q.iter()
            .map(|qv| self.vecs.par_chunks(self.dim).map(|v| dot(qv, v)).collect())
            .collect()
    }
}

/// A query's factors: unit vectors of the kept factors, with their mass inside the box.
pub struct QueryFactors {
    pub vecs: Vec<Vec<f32>>,
}

pub fn query_factors(
    grid: &CellGrid,
    f: &Factorization,
    bbox: &BBox,
    concepts: &str,
) -> Result<QueryFactors> {
    let maps = Heatmap::columns(&f.u, *grid)?;
    let filt = filter_factors(&maps, bbox, DEFAULT_MASS_THRESHOLD);
    let rows = concept_rows(grid, f, concepts);
    let mut vecs = Vec::new();
    for &k in &filt.kept {
        if let Some((_, v)) = rows.iter().find(|(j, _)| *j == k) {
            vecs.push(v.clone());
        }
    }
    Ok(QueryFactors { vecs })
}

/// Per-image aggregations of a query's factor similarities (each `n_images` long).
pub struct Aggregates {
    /// Mean over query factors of the best match in the image.
    pub best: Vec<f32>,
    /// Mean over query factors of the best match cubed (ASMK's selectivity, α = 3, τ = 0).
    pub best3: Vec<f32>,
    /// ASMK-like: mean over query factors of the sum over the image's factors of max(s, 0)³.
    pub all3: Vec<f32>,
    /// Mean over query factors of the best match standardized over the database.
    pub zbest: Vec<f32>,
}

fn standardize(x: &mut [f32]) {
    let n = x.len().max(1) as f32;
    let mean = x.iter().sum::<f32>() / n;
    let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n)
        .sqrt()
        .max(1e-6);
    x.iter_mut().for_each(|v| *v = (*v - mean) / sd);
}

pub fn aggregate(db: &FactorDb, sims: &[Vec<f32>], n_images: usize) -> Aggregates {
    let m = sims.len().max(1) as f32;
    let mut best = vec![0f32; n_images];
    let mut best3 = vec![0f32; n_images];
    let mut all3 = vec![0f32; n_images];
    let mut zbest = vec![0f32; n_images];
    for s in sims {
        let mut b = vec![f32::NEG_INFINITY; n_images];
        for (v, &x) in s.iter().enumerate() {
            let i = db.owner[v] as usize;
            b[i] = b[i].max(x);
            all3[i] += x.max(0.0).powi(3) / m;
        }
        b.iter_mut().for_each(|x| {
            if !x.is_finite() {
                *x = 0.0
            }
        });
        for i in 0..n_images {
            best[i] += b[i] / m;
            best3[i] += b[i].max(0.0).powi(3) / m;
        }
        standardize(&mut b);
        for i in 0..n_images {
            zbest[i] += b[i] / m;
        }
    }
    Aggregates {
        best,
        best3,
        all3,
        zbest,
    }
}

/// mAP (classic) of rankings by `scores[q][i]`.
pub fn map_of(set: &Set, scores: &[Vec<f32>]) -> Result<f64> {
    let mut r = Rankings::new();
    for (q, s) in set.gt.queries().iter().zip(scores) {
        let order = deepfactor::eval::rank_by_score(s);
        r.insert(
            q.name.clone(),
            order.iter().map(|&i| set.images()[i].clone()).collect(),
        )?;
    }
    Ok(evaluate(&set.gt, &r, Protocol::Classic)?.map)
}

/// Global NMF V+U descriptors (K = 8, head) of the database and of every query's region
/// (filter) and whole image.
pub struct Global {
    pub db: Vec<Vec<f32>>,
    pub filter: Vec<Vec<f32>>,
    pub full: Vec<Vec<f32>>,
}

pub fn global(set: &Set, size: u32, layer: &str, k: usize, kind: DescriptorKind) -> Result<Global> {
    let facs = factors(set, size, layer, k)?;
    let d = DescriptorConfig::new(kind).k(k).build()?;
    let db: Vec<Vec<f32>> = facs
        .par_iter()
        .map(|(g, f)| d.describe_factors(g, f.clone(), None).map(|x| x.vector))
        .collect::<deepfactor::Result<_>>()?;
    let mut filter = Vec::new();
    let mut full = Vec::new();
    for q in set.gt.queries() {
        let qi = set.gt.image_index(&q.image).unwrap_or(0);
        let (g, f) = &facs[qi];
        let b = q.bbox.unwrap_or(BBox {
            x1: 0.0,
            y1: 0.0,
            x2: g.image_width as f32,
            y2: g.image_height as f32,
        });
        filter.push(d.describe_factors(g, f.clone(), Some(&b))?.vector);
        full.push(db[qi].clone());
    }
    Ok(Global { db, filter, full })
}

pub fn cosine_scores(db: &[Vec<f32>], q: &[f32]) -> Vec<f32> {
    db.iter().map(|v| dot(v, q)).collect()
}

/// Runs the retrieval table for `cfgs` over `sets`.
pub fn run(sets: &[Set], cfgs: &[FactorCfg], lambdas: &[f32]) -> Result<()> {
    // rows: label -> per-set mAP
    let mut table: Vec<(String, Vec<f64>)> = Vec::new();
    let put = |label: String, si: usize, v: f64, table: &mut Vec<(String, Vec<f64>)>| {
        if let Some(row) = table.iter_mut().find(|(l, _)| *l == label) {
            row.1[si] = v;
        } else {
            let mut vals = vec![f64::NAN; sets.len()];
            vals[si] = v;
            table.push((label, vals));
        }
    };
    for (si, set) in sets.iter().enumerate() {
        let g = global(set, 512, "head", 8, DescriptorKind::NmfVu)?;
        let n = set.images().len();
        let gf: Vec<Vec<f32>> = g.filter.iter().map(|q| cosine_scores(&g.db, q)).collect();
        let gfull: Vec<Vec<f32>> = g.full.iter().map(|q| cosine_scores(&g.db, q)).collect();
        put(
            "global filter (vu head k8)".into(),
            si,
            map_of(set, &gf)?,
            &mut table,
        );
        put(
            "global full (vu head k8)".into(),
            si,
            map_of(set, &gfull)?,
            &mut table,
        );
        for (kind, kname) in [(DescriptorKind::NmfVu, "vu"), (DescriptorKind::NmfV, "v")] {
            for k in [8usize, 16] {
                if k == 8 && kname == "vu" {
                    continue;
                }
                let g2 = global(set, 512, "head", k, kind)?;
                let s2: Vec<Vec<f32>> =
                    g2.filter.iter().map(|q| cosine_scores(&g2.db, q)).collect();
                put(
                    format!("global filter ({kname} head k{k})"),
                    si,
                    map_of(set, &s2)?,
                    &mut table,
                );
            }
        }
        // The crop query's global descriptor (V+U, K = 8), when crops are cached.
        let dvu = DescriptorConfig::new(DescriptorKind::NmfVu).k(8).build()?;
        let crop_acts: Option<Vec<deepfactor::Activations>> = (0..set.gt.queries().len())
            .map(|qn| set.crop_activations(512, qn).ok())
            .collect();
        let gcrop: Option<Vec<Vec<f32>>> = match &crop_acts {
            Some(c) => {
                let v = c
                    .iter()
                    .map(|a| Ok(cosine_scores(&g.db, &dvu.describe(a)?.vector)))
                    .collect::<Result<Vec<_>>>()?;
                put(
                    "global crop (vu head k8)".into(),
                    si,
                    map_of(set, &v)?,
                    &mut table,
                );
                Some(v)
            }
            None => None,
        };
        for cfg in cfgs {
            let facs = factors(set, cfg.size, &cfg.layer, cfg.k)?;
            let db = FactorDb::build(&facs, &cfg.concepts);
            let dk = DescriptorConfig::new(DescriptorKind::NmfVu)
                .k(cfg.k)
                .build()?;
            for source in ["filter", "crop", "both"] {
                if source != "filter" && crop_acts.is_none() {
                    continue;
                }
                let mut aggs: Vec<Aggregates> = Vec::new();
                let mut kept = 0usize;
                for (qn, q) in set.gt.queries().iter().enumerate() {
                    let qi = set.gt.image_index(&q.image).unwrap_or(0);
                    let (grid, f) = &facs[qi];
                    let b = q.bbox.unwrap_or(BBox {
                        x1: 0.0,
                        y1: 0.0,
                        x2: grid.image_width as f32,
                        y2: grid.image_height as f32,
                    });
                    let mut vecs = Vec::new();
                    if source != "crop" {
                        vecs.extend(query_factors(grid, f, &b, &cfg.concepts)?.vecs);
                    }
                    if source != "filter" {
                        if let Some(c) = &crop_acts {
                            let cf = dk.factorize(&c[qn])?;
                            vecs.extend(
                                concept_rows(&c[qn].grid, &cf, &cfg.concepts)
                                    .into_iter()
                                    .map(|(_, v)| v),
                            );
                        }
                    }
                    kept += vecs.len();
                    let sims = db.sims(&vecs);
                    aggs.push(aggregate(&db, &sims, n));
                }
                eprintln!(
                    "{} {cfg} {source}: {} factor vectors, {:.2} query factors",
                    set.name,
                    db.len(),
                    kept as f64 / aggs.len() as f64
                );
                let glob: &Vec<Vec<f32>> = if source == "filter" {
                    &gf
                } else {
                    gcrop.as_ref().unwrap_or(&gf)
                };
                for (name, pick) in [("best", 0usize), ("best3", 1), ("zbest", 3)] {
                    let get = |a: &Aggregates| -> Vec<f32> {
                        match pick {
                            0 => a.best.clone(),
                            1 => a.best3.clone(),
                            2 => a.all3.clone(),
                            _ => a.zbest.clone(),
                        }
                    };
                    for &lam in lambdas {
                        let scores: Vec<Vec<f32>> = aggs
                            .iter()
                            .zip(glob)
                            .map(|(a, gs)| {
                                let mut s = get(a);
                                standardize(&mut s);
                                let mut g = gs.clone();
                                standardize(&mut g);
                                g.iter()
                                    .zip(&s)
                                    .map(|(g, x)| (1.0 - lam) * g + lam * x)
                                    .collect()
                            })
                            .collect();
                        put(
                            format!("{cfg} {source} {name} λ={lam}"),
                            si,
                            map_of(set, &scores)?,
                            &mut table,
                        );
                    }
                }
            }
        }
    }
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    println!("| query | {} | mean |", names.join(" | "));
    println!("|---|{}---|", "---|".repeat(names.len()));
    for (label, vals) in &table {
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let cells: Vec<String> = vals.iter().map(|v| format!("{v:.2}")).collect();
        println!("| {label} | {} | {mean:.2} |", cells.join(" | "));
    }
    Ok(())
}
