//! Factor-level search latency: a synthetic index of N images, each with a global descriptor
//! and K factors of C channels (the dev sets' shape: K = 8, C = 1280, dim 1280), searched by
//! queries of Q factors — global exact search (the baseline, same process), factor-level
//! search exact and through the graphs, and the graph's agreement with exact (top 10); then
//! both factor searches again with the former f16 scoring of the factor vectors (each one
//! converted into a buffer, then dotted), the baseline of the fused f16 kernel.
//!
//! `cargo bench --bench deepfactor -- regional [--images 480,5000] [--k 8] [--channels 1280]
//! [--dim 1280] [--query-factors 3] [--queries 30]`

use deepfactor::index::{
    set_f16_reference_scoring, FactorSearch, ImageMeta, Index, IndexOptions, IndexWriter, NewImage,
    QueryFactor, SearchMode, SearchOptions, StoredFactors,
};
use deepfactor::linalg::Matrix;
use deepfactor::Recipe;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

struct Args {
    images: Vec<usize>,
    k: usize,
    channels: usize,
    dim: usize,
    query_factors: usize,
    queries: usize,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        images: vec![480, 5000],
        k: 8,
        channels: 1280,
        dim: 1280,
        query_factors: 3,
        queries: 30,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let n = || v.parse::<usize>().map_err(|_| format!("bad {k} {v:?}"));
        match k.as_str() {
            "--images" => {
                a.images = v
                    .split(',')
                    .map(|x| x.parse().map_err(|_| format!("bad number {x:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--k" => a.k = n()?,
            "--channels" => a.channels = n()?,
            "--dim" => a.dim = n()?,
            "--query-factors" => a.query_factors = n()?,
            "--queries" => a.queries = n()?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

fn unit(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
    let s = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= s);
    v
}

/// Non-negative, sparse concepts, as NMF makes them.
fn concept(rng: &mut ChaCha8Rng, c: usize) -> Vec<f32> {
    (0..c)
        .map(|_| {
            if rng.random::<f32>() < 0.1 {
                rng.random::<f32>()
            } else {
                0.0
            }
        })
        .collect()
}

fn recipe(dim: usize) -> Recipe {
    Recipe {
        backbone: deepfactor::BackboneSpec::External("synthetic".into()),
        weights_fingerprint: "bench".into(),
        layer: "head".into(),
        input_size: 512,
        max_side: None,
        padding: deepfactor::backbone::Padding::Zero,
        shift_negative: false,
        descriptor: deepfactor::DescriptorSpec::External("synthetic".into()),
        crow: false,
        whitening: None,
        dim,
    }
}

fn ms_per_query(t: Instant, n: usize) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0 / n.max(1) as f64
}

pub fn run(args: &[String]) -> Result<(), String> {
    let a = parse(args)?;
    let e = |e: deepfactor::Error| e.to_string();
    println!(
        "images  factor vectors  global exact ms  factor exact ms (×)  factor hnsw ms (×)  hnsw top-10 = exact"
    );
    for &n in &a.images {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let r = recipe(a.dim);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut w = IndexWriter::create(tmp.path(), r.clone(), IndexOptions::new()).map_err(e)?;
        for id in 0..n as u64 {
            let v: Vec<f32> = (0..a.k)
                .flat_map(|_| concept(&mut rng, a.channels))
                .collect();
            let u: Vec<f32> = (0..4 * a.k).map(|i| (i % 7) as f32 * 0.1).collect();
            let factors = StoredFactors::quantize(
                &Matrix::from_vec(a.k, a.channels, v).map_err(e)?,
                &Matrix::from_vec(4, a.k, u).map_err(e)?,
                2,
                2,
            )
            .map_err(e)?;
            let meta = ImageMeta {
                path: format!("/bench/{id}.jpg").into(),
                size: 1,
                modified_ns: 0,
                content_hash: [0; 32],
                width: 64,
                height: 64,
            };
            w.add(
                &r,
                NewImage {
                    meta,
                    descriptor: unit(&mut rng, a.dim),
                    factors: Some(factors),
                },
            )
            .map_err(e)?;
        }
        w.commit().map_err(e)?;
        drop(w);
        let ix = Index::open(tmp.path()).map_err(e)?;
        let queries: Vec<(Vec<f32>, Vec<QueryFactor>)> = (0..a.queries)
            .map(|_| {
                let g = unit(&mut rng, a.dim);
                let f = (0..a.query_factors)
                    .map(|i| QueryFactor {
                        factor: i,
                        concept: concept(&mut rng, a.channels),
                    })
                    .collect();
                (g, f)
            })
            .collect();
        let fs = FactorSearch::new();
        let opts = |mode| SearchOptions::new().k(10).mode(mode);
        // Warm-up, then each variant over all queries.
        for (g, f) in queries.iter().take(2) {
            ix.search_factors(&r, g, f, &opts(SearchMode::Exact), &fs)
                .map_err(e)?;
        }
        let t = Instant::now();
        for (g, _) in &queries {
            ix.search(&r, g, &opts(SearchMode::Exact)).map_err(e)?;
        }
        let global = ms_per_query(t, queries.len());
        let t = Instant::now();
        let mut exact = Vec::new();
        for (g, f) in &queries {
            exact.push(
                ix.search_factors(&r, g, f, &opts(SearchMode::Exact), &fs)
                    .map_err(e)?,
            );
        }
        let fexact = ms_per_query(t, queries.len());
        let t = Instant::now();
        let mut graph = Vec::new();
        for (g, f) in &queries {
            graph.push(
                ix.search_factors(&r, g, f, &opts(SearchMode::Hnsw), &fs)
                    .map_err(e)?,
            );
        }
        let fgraph = ms_per_query(t, queries.len());
        // The same searches with the former f16 scoring of the factor vectors (convert each
        // into a buffer, then dot): the fused kernel's baseline, same process.
        set_f16_reference_scoring(true);
        let t = Instant::now();
        for (g, f) in &queries {
            ix.search_factors(&r, g, f, &opts(SearchMode::Exact), &fs)
                .map_err(e)?;
        }
        let rexact = ms_per_query(t, queries.len());
        let t = Instant::now();
        for (g, f) in &queries {
            ix.search_factors(&r, g, f, &opts(SearchMode::Hnsw), &fs)
                .map_err(e)?;
        }
        let rgraph = ms_per_query(t, queries.len());
        set_f16_reference_scoring(false);
        let same = exact
            .iter()
            .zip(&graph)
            .filter(|(x, y)| {
                x.iter().map(|h| h.id).collect::<Vec<_>>()
                    == y.iter().map(|h| h.id).collect::<Vec<_>>()
            })
            .count();
        println!(
            "{n:>6}  {:>14}  {global:>15.2}  {fexact:>12.2} ({:>5.0}×)  {fgraph:>11.2} ({:>5.0}×)  {same}/{}  |  former f16 scoring: exact {rexact:.2} ms, hnsw {rgraph:.2} ms; fused speed-up ×{:.2} exact, ×{:.2} hnsw",
            ix.factor_vectors(),
            fexact / global.max(1e-9),
            fgraph / global.max(1e-9),
            queries.len(),
            rexact / fexact.max(1e-9),
            rgraph / fgraph.max(1e-9),
        );
    }
    Ok(())
}
