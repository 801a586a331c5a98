//! Exact-search mAP of every descriptor kind on an Oxford-layout development set, in the
//! layout of `../shared/data/REFERENCE.md`.
//!
//! ```sh
//! cargo run --release --example descriptor_map -- --gt ../shared/data/instance-dev [--k 8]
//! cargo run --release --example descriptor_map -- --gt ../shared/data/semantic-dev --map-at 30
//! ```
//!
//! EfficientNet-Lite0 `head` activations (1280 channels, stride 32) of every database image
//! at 512 px, and of every query image cropped to its box, are extracted once and cached in
//! `target/descriptor-cache/` (keyed by weights, layer, data folder and ground truth), so
//! re-runs take seconds plus the factorizations. Every descriptor kind is then computed from
//! the same activations and searched exhaustively by cosine similarity:
//!
//! - *crop*: the query image cut to its box, described as a whole image;
//! - *full*: the whole query image (its database descriptor);
//! - *filter* (NMF kinds): the whole query image, keeping the factors whose heatmap has more
//!   than 75% of its mass inside the box (`Describer::describe_region`);
//! - *box pooling* (pooled kinds): the whole query image, pooled over the cells whose centres
//!   lie inside the box (`Describer::describe_region`) — the pooled kinds' analogue of the filter;
//! - *+ QE5*: average query expansion with the top 5 results, re-ranked.
//!
//! Options: `--k K` (NMF rank, default 8), `--kinds a,b,...` (default all), `--map-at K`
//! (add mAP@K columns, thesis eq. 5.8), `--whiten-on DIR` (also evaluate each kind whitened
//! by a PCA whitening learned on the local vectors of another dataset's database images),
//! `--whiten-power P` (default 0.5), `--whiten-dim D`, `--refactorize` (ignore the factor
//! cache, which is keyed by the activations and the describer's recipe but not by the NMF
//! engine's code), `--json` (one JSON object on stdout instead of the tables). Weights: `DEEPFACTOR_EFFICIENTNET_LITE0_WEIGHTS` or the file
//! `scripts/setup.sh` fetches.

use anyhow::{bail, Context, Result};
use deepfactor::backbone::{Backbone, BackboneBuilder, BackboneKind};
use deepfactor::descriptor::{
    extract_crop, Describer, DescriptorConfig, DescriptorKind, Whitening, DEFAULT_K,
    DEFAULT_WHITEN_POWER,
};
use deepfactor::eval::{evaluate, rank_by_score, GroundTruth, Protocol, Rankings};
use deepfactor::linalg::Matrix;
use deepfactor::nmf::Factorization;
use deepfactor::query::image_file;
use deepfactor::Activations;
use deepfactor::CellGrid;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const CACHE_MAGIC: &[u8; 8] = b"DFACTS01";
/// Results used for query expansion.
const QE_TOP: usize = 5;

struct Options {
    gt: PathBuf,
    k: usize,
    kinds: Vec<DescriptorKind>,
    map_at: Option<usize>,
    whiten_on: Option<PathBuf>,
    whiten_power: f32,
    whiten_dim: Option<usize>,
    refactorize: bool,
    json: bool,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        gt: PathBuf::new(),
        k: DEFAULT_K,
        // REFERENCE.md's order.
        kinds: vec![
            DescriptorKind::Mac,
            DescriptorKind::Spoc,
            DescriptorKind::Gem,
            DescriptorKind::Crow,
            DescriptorKind::Rmac,
            DescriptorKind::NmfV,
            DescriptorKind::NmfVu,
        ],
        map_at: None,
        whiten_on: None,
        whiten_power: DEFAULT_WHITEN_POWER,
        whiten_dim: None,
        refactorize: false,
        json: false,
    };
    let mut gt = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--gt" => gt = Some(PathBuf::from(value()?)),
            "--k" => o.k = value()?.parse().context("--k")?,
            "--kinds" => {
                o.kinds = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<deepfactor::Result<_>>()?
            }
            "--map-at" => o.map_at = Some(value()?.parse().context("--map-at")?),
            "--whiten-on" => o.whiten_on = Some(PathBuf::from(value()?)),
            "--whiten-power" => o.whiten_power = value()?.parse().context("--whiten-power")?,
            "--whiten-dim" => o.whiten_dim = Some(value()?.parse().context("--whiten-dim")?),
            "--json" => o.json = true,
            "--refactorize" => o.refactorize = true,
            "-h" | "--help" => {
                println!(
                    "usage: descriptor_map --gt DIR [--k K] [--kinds a,b] [--map-at K] \\\n    \
                     [--whiten-on DIR] [--whiten-power P] [--whiten-dim D] [--refactorize] [--json]"
                );
                std::process::exit(0);
            }
            _ => bail!("unknown option {a} (see --help)"),
        }
    }
    o.gt = gt.context("--gt DIR is required (an Oxford-layout folder)")?;
    Ok(o)
}

/// One dataset with its activations.
struct Set {
    gt: GroundTruth,
    database: Vec<Activations>,
    crops: Vec<Activations>,
    /// Database index of each query's image.
    query_images: Vec<usize>,
    /// The activation cache file (factor caches sit beside it).
    cache: PathBuf,
}

/// Factorizations shared by the NMF kinds.
struct Factors {
    database: Vec<Factorization>,
    crops: Vec<Factorization>,
}

/// The scores of one descriptor.
#[derive(Default)]
struct Row {
    name: String,
    crop: f64,
    crop_at: Option<f64>,
    crop_qe: f64,
    full: f64,
    full_at: Option<f64>,
    filter: Option<f64>,
    filter_at: Option<f64>,
    filter_qe: Option<f64>,
    /// Pooled kinds: the whole query image pooled over the cells inside the box.
    boxpool: Option<f64>,
    boxpool_at: Option<f64>,
    boxpool_qe: Option<f64>,
    kept: Option<f64>,
    fallbacks: Option<usize>,
    recipe: Option<deepfactor::Recipe>,
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .layer("head")
        .input_size(512)
        .build()?;
    let set = load_set(&o.gt, &backbone)?;
    let needs_nmf = o.kinds.iter().any(|k| k.is_nmf());
    let nmf_describer = |kind| DescriptorConfig::new(kind).k(o.k).build();
    let factors = if needs_nmf {
        Some(factorize(
            &set,
            &nmf_describer(DescriptorKind::NmfV)?,
            o.refactorize,
        )?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for &kind in &o.kinds {
        let d = if kind.is_nmf() {
            nmf_describer(kind)?
        } else {
            DescriptorConfig::new(kind).build()?
        };
        let mut row = score(&set, &d, factors.as_ref(), o.map_at)?;
        row.recipe = Some(d.recipe(&backbone));
        rows.push(row);
    }
    if let Some(dir) = &o.whiten_on {
        let train = load_set(dir, &backbone)?;
        let train_factors = if needs_nmf {
            Some(factorize(
                &train,
                &nmf_describer(DescriptorKind::NmfV)?,
                o.refactorize,
            )?)
        } else {
            None
        };
        for &kind in &o.kinds {
            let plain = if kind.is_nmf() {
                nmf_describer(kind)?
            } else {
                DescriptorConfig::new(kind).build()?
            };
            let t = Instant::now();
            let vectors = local_vectors(&train, &plain, train_factors.as_ref())?;
            let w = Whitening::learner(train.gt.name(), train.database.len()).learn(&vectors)?;
            eprintln!(
                "{kind}: whitening {} from {} vectors of {} ({} axes, shrinkage {:.2e}) in {:.1?}",
                w.id(),
                vectors.rows(),
                train.gt.name(),
                w.max_output_dim(),
                w.shrinkage(),
                t.elapsed()
            );
            let mut cfg = DescriptorConfig::new(kind)
                .whitening(Arc::new(w))
                .whiten_power(o.whiten_power);
            if kind.is_nmf() {
                cfg = cfg.k(o.k);
            }
            if let Some(dim) = o.whiten_dim {
                cfg = cfg.whiten_dim(dim);
            }
            let d = cfg.build()?;
            let mut row = score(&set, &d, factors.as_ref(), o.map_at)?;
            row.name = format!("{kind} +W({})", train.gt.name());
            row.recipe = Some(d.recipe(&backbone));
            rows.push(row);
        }
    }
    if o.json {
        print_json(&set, &o, &rows)?;
    } else {
        print_tables(&set, &o, &rows);
    }
    Ok(())
}

fn load_set(dir: &Path, backbone: &Backbone) -> Result<Set> {
    let gt = GroundTruth::load(dir)?;
    let query_images = gt
        .queries()
        .iter()
        .map(|q| {
            gt.image_index(&q.image)
                .with_context(|| format!("query image {} is not in the database", q.image))
        })
        .collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    let cache = cache_file(&gt, dir, backbone)?;
    let (database, crops) = features(&gt, dir, backbone, &cache)?;
    eprintln!(
        "{}: {} database and {} crop activations ready in {:.1?}",
        gt.name(),
        database.len(),
        crops.len(),
        t.elapsed()
    );
    Ok(Set {
        gt,
        database,
        crops,
        query_images,
        cache,
    })
}

/// The NMF factors of every database image and crop, from the factor cache beside the
/// activation cache when it matches (same activations, rank, CroW setting and NMF parameters).
fn factorize(set: &Set, d: &Describer, fresh: bool) -> Result<Factors> {
    let key = blake3::hash(format!("{} k={:?} crow={}", d.spec(), d.k(), d.crow()).as_bytes());
    let mut name = set.cache.file_stem().unwrap_or_default().to_os_string();
    name.push(format!("-nmf-{}.factors", &key.to_hex()[..12]));
    let file = set.cache.with_file_name(name);
    let n = set.database.len();
    if file.is_file() && !fresh {
        let mut all = read_factors(&file)?;
        if all.len() == n + set.crops.len() {
            eprintln!("reading cached factors from {}", file.display());
            let crops = all.split_off(n);
            return Ok(Factors {
                database: all,
                crops,
            });
        }
    }
    let t = Instant::now();
    let bar = progress(set.database.len() + set.crops.len(), "factorizing");
    let run = |acts: &[Activations]| -> Result<Vec<Factorization>> {
        acts.par_iter()
            .map(|a| {
                let f = d.factorize(a);
                bar.inc(1);
                f.map_err(Into::into)
            })
            .collect()
    };
    let database = run(&set.database)?;
    let crops = run(&set.crops)?;
    bar.finish_and_clear();
    let n = database.len() + crops.len();
    eprintln!(
        "{}: {n} factorizations (K = {}) in {:.1?} ({:.1} ms each)",
        set.gt.name(),
        d.k().unwrap_or(0),
        t.elapsed(),
        t.elapsed().as_secs_f64() * 1000.0 / n.max(1) as f64
    );
    write_factors(&file, database.iter().chain(&crops))?;
    Ok(Factors { database, crops })
}

const FACTORS_MAGIC: &[u8; 8] = b"DFNMF001";

fn write_factors<'a>(file: &Path, fs: impl Iterator<Item = &'a Factorization>) -> Result<()> {
    let fs: Vec<&Factorization> = fs.collect();
    let tmp = file.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(FACTORS_MAGIC)?;
    w.write_all(&(fs.len() as u64).to_le_bytes())?;
    for f in fs {
        for v in [f.u.rows(), f.u.cols(), f.v.cols(), f.iterations] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        w.write_all(&f.rel_error.to_le_bytes())?;
        for v in f.u.as_slice().iter().chain(f.v.as_slice()) {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

fn read_factors(file: &Path) -> Result<Vec<Factorization>> {
    let bytes = std::fs::read(file)?;
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
        file,
    };
    if r.take(8)? != FACTORS_MAGIC {
        bail!("{}: not a factor cache", file.display());
    }
    let u64_at = |r: &mut Reader| -> Result<u64> { Ok(u64::from_le_bytes(r.take(8)?.try_into()?)) };
    let n = u64_at(&mut r)? as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (p, k, c, iterations) = (
            u64_at(&mut r)? as usize,
            u64_at(&mut r)? as usize,
            u64_at(&mut r)? as usize,
            u64_at(&mut r)? as usize,
        );
        let rel_error = f64::from_le_bytes(r.take(8)?.try_into()?);
        let mut floats = |len: usize| -> Result<Vec<f32>> {
            Ok(r.take(len * 4)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let u = Matrix::from_vec(p, k, floats(p * k)?)?;
        let v = Matrix::from_vec(k, c, floats(k * c)?)?;
        out.push(Factorization {
            u,
            v,
            iterations,
            rel_error,
        });
    }
    Ok(out)
}

/// Vectors for whitening: the describer's local vectors over the database images.
fn local_vectors(set: &Set, d: &Describer, factors: Option<&Factors>) -> Result<Matrix> {
    let per_image: Vec<Matrix> = match (d.kind().is_nmf(), factors) {
        (true, Some(f)) => set
            .database
            .par_iter()
            .zip(&f.database)
            .map(|(a, f)| d.local_vectors_of_factors(&a.grid, f))
            .collect::<deepfactor::Result<_>>()?,
        _ => set
            .database
            .par_iter()
            .map(|a| d.local_vectors(a))
            .collect::<deepfactor::Result<_>>()?,
    };
    let c = per_image.first().map_or(0, |m| m.cols());
    let n = per_image.iter().map(|m| m.rows()).sum();
    let data: Vec<f32> = per_image
        .iter()
        .flat_map(|m| m.as_slice().to_vec())
        .collect();
    Ok(Matrix::from_vec(n, c, data)?)
}

fn score(
    set: &Set,
    d: &Describer,
    factors: Option<&Factors>,
    map_at: Option<usize>,
) -> Result<Row> {
    let t = Instant::now();
    let kind = d.kind();
    let (db, crop, filter) = if kind.is_nmf() {
        let f = factors.context("NMF factors were not computed")?;
        let describe = |acts: &[Activations], fs: &[Factorization]| -> Result<Vec<Vec<f32>>> {
            acts.par_iter()
                .zip(fs)
                .map(|(a, f)| Ok(d.describe_factors(&a.grid, f.clone(), None)?.vector))
                .collect()
        };
        let db = describe(&set.database, &f.database)?;
        let crop = describe(&set.crops, &f.crops)?;
        let mut filter = Vec::new();
        for (q, &img) in set.gt.queries().iter().zip(&set.query_images) {
            let bbox = q.bbox.context("query without a box")?;
            let a = &set.database[img];
            filter.push(d.describe_factors(&a.grid, f.database[img].clone(), Some(&bbox))?);
        }
        (db, crop, Some(filter))
    } else {
        let describe = |acts: &[Activations]| -> Result<Vec<Vec<f32>>> {
            acts.par_iter().map(|a| Ok(d.describe(a)?.vector)).collect()
        };
        (describe(&set.database)?, describe(&set.crops)?, None)
    };
    let boxpool: Option<Vec<Vec<f32>>> = if kind.is_nmf() {
        None
    } else {
        let vs = set
            .gt
            .queries()
            .par_iter()
            .zip(&set.query_images)
            .map(|(q, &img)| {
                let bbox = q.bbox.context("query without a box")?;
                Ok(d.describe_region(&set.database[img], &bbox)?.vector)
            })
            .collect::<Result<Vec<_>>>()?;
        Some(vs)
    };
    let full: Vec<Vec<f32>> = set.query_images.iter().map(|&i| db[i].clone()).collect();
    let map = |qs: &[Vec<f32>], qe: bool, protocol: Protocol| -> Result<f64> {
        let mut rankings = Rankings::new();
        for (q, v) in set.gt.queries().iter().zip(qs) {
            let mut order = rank(&db, v);
            if qe {
                let mut e = v.clone();
                for &i in order.iter().take(QE_TOP) {
                    for (x, y) in e.iter_mut().zip(&db[i]) {
                        *x += y;
                    }
                }
                let n = e.iter().map(|x| x * x).sum::<f32>().sqrt();
                e.iter_mut().for_each(|x| *x /= n);
                order = rank(&db, &e);
            }
            let names = order.iter().map(|&i| set.gt.images()[i].clone()).collect();
            rankings.insert(q.name.clone(), names)?;
        }
        Ok(evaluate(&set.gt, &rankings, protocol)?.map)
    };
    let at = |qs: &[Vec<f32>]| -> Result<Option<f64>> {
        map_at
            .map(|k| map(qs, false, Protocol::MapAt(k)))
            .transpose()
    };
    let mut row = Row {
        name: kind.to_string(),
        crop: map(&crop, false, Protocol::Classic)?,
        crop_at: at(&crop)?,
        crop_qe: map(&crop, true, Protocol::Classic)?,
        full: map(&full, false, Protocol::Classic)?,
        full_at: at(&full)?,
        ..Row::default()
    };
    if let Some(vs) = boxpool {
        row.boxpool = Some(map(&vs, false, Protocol::Classic)?);
        row.boxpool_at = at(&vs)?;
        row.boxpool_qe = Some(map(&vs, true, Protocol::Classic)?);
    }
    if let Some(filter) = filter {
        let vs: Vec<Vec<f32>> = filter.iter().map(|f| f.vector.clone()).collect();
        row.filter = Some(map(&vs, false, Protocol::Classic)?);
        row.filter_at = at(&vs)?;
        row.filter_qe = Some(map(&vs, true, Protocol::Classic)?);
        row.kept = Some(
            filter.iter().map(|f| f.kept.len()).sum::<usize>() as f64 / filter.len().max(1) as f64,
        );
        row.fallbacks = Some(filter.iter().filter(|f| f.fallback).count());
    }
    eprintln!("{}: scored in {:.1?}", row.name, t.elapsed());
    Ok(row)
}

/// Database indices by descending dot product with `q`.
fn rank(db: &[Vec<f32>], q: &[f32]) -> Vec<usize> {
    let scores: Vec<f32> = db
        .iter()
        .map(|v| v.iter().zip(q).map(|(a, b)| a * b).sum())
        .collect();
    rank_by_score(&scores)
}

fn print_tables(set: &Set, o: &Options, rows: &[Row]) {
    let at = o.map_at.map(|k| format!("mAP@{k} "));
    println!(
        "## {} ({} queries, {} images), EfficientNet-Lite0 head @512, K = {}\n",
        set.gt.name(),
        set.gt.queries().len(),
        set.gt.images().len(),
        o.k
    );
    let f = |v: f64| format!("{v:.2}");
    let opt = |v: Option<f64>| v.map_or("–".to_string(), f);
    let mut head = vec![
        "descriptor".to_string(),
        "mAP crop query".into(),
        "mAP full query".into(),
    ];
    if let Some(a) = &at {
        head.push(format!("{a}crop"));
    }
    head.push("mAP crop + QE5".into());
    head.push("mAP box pooling".into());
    if let Some(a) = &at {
        head.push(format!("{a}box pooling"));
    }
    head.push("mAP box pooling + QE5".into());
    table(
        &head,
        rows.iter().filter(|r| r.filter.is_none()).map(|r| {
            let mut c = vec![r.name.clone(), f(r.crop), f(r.full)];
            if at.is_some() {
                c.push(opt(r.crop_at));
            }
            c.push(f(r.crop_qe));
            c.push(opt(r.boxpool));
            if at.is_some() {
                c.push(opt(r.boxpool_at));
            }
            c.push(opt(r.boxpool_qe));
            c
        }),
    );
    println!();
    let mut head = vec!["descriptor".to_string(), "mAP crop".into()];
    if let Some(a) = &at {
        head.push(format!("{a}crop"));
    }
    head.push("mAP filter".into());
    if let Some(a) = &at {
        head.push(format!("{a}filter"));
    }
    head.extend([
        "mAP filter + QE5".to_string(),
        "mean factors kept by the filter".into(),
        "fallbacks".into(),
        "mAP full (no filter)".into(),
        "mAP crop + QE5".into(),
    ]);
    table(
        &head,
        rows.iter().filter(|r| r.filter.is_some()).map(|r| {
            let mut c = vec![r.name.clone(), f(r.crop)];
            if at.is_some() {
                c.push(opt(r.crop_at));
            }
            c.push(opt(r.filter));
            if at.is_some() {
                c.push(opt(r.filter_at));
            }
            c.extend([
                opt(r.filter_qe),
                format!("{:.2} of {}", r.kept.unwrap_or(0.0), o.k),
                r.fallbacks.unwrap_or(0).to_string(),
                f(r.full),
                f(r.crop_qe),
            ]);
            c
        }),
    );
}

fn table(head: &[String], rows: impl Iterator<Item = Vec<String>>) {
    println!("| {} |", head.join(" | "));
    println!("|{}", "---|".repeat(head.len()));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}

fn print_json(set: &Set, o: &Options, rows: &[Row]) -> Result<()> {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "descriptor": r.name, "map_crop": r.crop, "map_full": r.full,
                "map_crop_qe5": r.crop_qe, "map_at_crop": r.crop_at, "map_at_full": r.full_at,
                "map_filter": r.filter, "map_at_filter": r.filter_at,
                "map_filter_qe5": r.filter_qe,
                "map_box_pooling": r.boxpool, "map_at_box_pooling": r.boxpool_at,
                "map_box_pooling_qe5": r.boxpool_qe, "mean_kept": r.kept, "fallbacks": r.fallbacks,
                "recipe": r.recipe,
            })
        })
        .collect();
    let out = json!({
        "dataset": set.gt.name(), "queries": set.gt.queries().len(),
        "images": set.gt.images().len(), "k": o.k, "map_at": o.map_at, "rows": rows,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn image_path(root: &Path, name: &str) -> Result<PathBuf> {
    Ok(image_file(&root.join("jpg"), name)?)
}

fn cache_file(gt: &GroundTruth, root: &Path, backbone: &Backbone) -> Result<PathBuf> {
    let mut h = blake3::Hasher::new();
    h.update(backbone.fingerprint().as_bytes());
    h.update(backbone.layer().name.as_bytes());
    h.update(std::fs::canonicalize(root)?.to_string_lossy().as_bytes());
    for name in gt.images() {
        h.update(name.as_bytes());
        h.update(b"\n");
    }
    for q in gt.queries() {
        h.update(format!("{} {:?}\n", q.image, q.bbox).as_bytes());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/descriptor-cache");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(format!(
        "{}-{}.acts",
        gt.name(),
        &h.finalize().to_hex()[..16]
    )))
}

fn features(
    gt: &GroundTruth,
    root: &Path,
    backbone: &Backbone,
    file: &Path,
) -> Result<(Vec<Activations>, Vec<Activations>)> {
    if file.is_file() {
        eprintln!("reading cached activations from {}", file.display());
        let all = read_cache(file)?;
        let n = gt.images().len();
        if all.len() == n + gt.queries().len() {
            let mut database = all;
            let crops = database.split_off(n);
            return Ok((database, crops));
        }
        eprintln!(
            "{}: wrong number of entries, extracting again",
            file.display()
        );
    }
    let paths = gt
        .images()
        .iter()
        .map(|n| image_path(root, n))
        .collect::<Result<Vec<_>>>()?;
    let bar = progress(paths.len() + gt.queries().len(), "extracting");
    let mut database = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(8) {
        for (p, r) in chunk.iter().zip(backbone.extract_paths(chunk)) {
            database.push(r.with_context(|| p.display().to_string())?);
        }
        bar.inc(chunk.len() as u64);
    }
    let mut crops = Vec::with_capacity(gt.queries().len());
    for q in gt.queries() {
        let p = image_path(root, &q.image)?;
        let bbox = q
            .bbox
            .with_context(|| format!("query {} has no box", q.name))?;
        crops.push(extract_crop(backbone, &p, &bbox)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_cache(file, database.iter().chain(&crops))?;
    Ok((database, crops))
}

fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {elapsed}<{eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

fn write_cache<'a>(file: &Path, acts: impl Iterator<Item = &'a Activations>) -> Result<()> {
    let acts: Vec<&Activations> = acts.collect();
    let tmp = file.with_extension("tmp");
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(CACHE_MAGIC)?;
    w.write_all(&(acts.len() as u64).to_le_bytes())?;
    for a in acts {
        let g = a.grid;
        for v in [g.rows, g.cols, a.data.cols()] {
            w.write_all(&(v as u32).to_le_bytes())?;
        }
        w.write_all(&g.image_width.to_le_bytes())?;
        w.write_all(&g.image_height.to_le_bytes())?;
        for v in a.data.as_slice() {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

fn read_cache(file: &Path) -> Result<Vec<Activations>> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)?.read_to_end(&mut bytes)?;
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
        file,
    };
    if r.take(8)? != CACHE_MAGIC {
        bail!("{}: not an activation cache", file.display());
    }
    let n = u64::from_le_bytes(r.take(8)?.try_into()?) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut h = [0u32; 5];
        for v in &mut h {
            *v = u32::from_le_bytes(r.take(4)?.try_into()?);
        }
        let (rows, cols, ch) = (h[0] as usize, h[1] as usize, h[2] as usize);
        let data: Vec<f32> = r
            .take(rows * cols * ch * 4)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push(Activations {
            grid: CellGrid {
                rows,
                cols,
                image_width: h[3],
                image_height: h[4],
            },
            data: Matrix::from_vec(rows * cols, ch, data)?,
        });
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    file: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            bail!("{}: truncated activation cache", self.file.display());
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
}
