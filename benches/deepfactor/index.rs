//! `index`: index files on synthetic clustered unit vectors.
//!
//! For each size: build an index through `IndexWriter` (graph included, features excluded)
//! with its peak RSS; open time (memory-mapped and read); query latency p50/p99 of exact
//! search (2 threads) and of HNSW over the stored graph (1 thread) with recall@10 against
//! exact, each HNSW search (and the f16 exact one) also through the former scoring path in
//! the same run, query by query (f16 rows converted into a buffer, then dotted; no prefetch)
//! with the speed-up; and, on a graph built the same way and kept in memory, our beam search over the
//! flat arrays against hnsw_rs's own search on the same graph (the baseline).
//!
//! Latencies are per-query minima over `--reps` passes (default 3), which filters out the
//! time other processes take on a shared machine; p99 is over queries. In the comparison the
//! two searches alternate query by query, so both see the same conditions.
//!
//! Options: `--sizes 10000,100000` `--dim 512` `--queries 300` `--ef 32,64,128,256`
//! `--reps 3` `--baseline-max 100000` (largest size that also builds the hnsw_rs baseline
//! graph) `--dir PATH` (where indexes are built; default the system temp directory)
//! `--f16` (store descriptors as f16) `--no-graph` (build no graph: open and exact search
//! only, for sizes whose graph takes too long to build here) `--keep` (keep the built indexes and reuse them in later runs: the build figures are then
//! those of the run that built them).
#![allow(unsafe_code)]

use deepfactor::index::{
    build_hnsw, set_f16_reference_scoring, FlatGraph, ImageMeta, Index, IndexOptions, IndexWriter,
    NewImage, SearchMode, SearchOptions, VectorEncoding, DEFAULT_EF_CONSTRUCTION,
    DEFAULT_EF_SEARCH, DEFAULT_M,
};
use deepfactor::Recipe;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    sizes: Vec<usize>,
    dim: usize,
    queries: usize,
    efs: Vec<usize>,
    baseline_max: usize,
    dir: PathBuf,
    reps: usize,
    keep: bool,
    f16: bool,
    no_graph: bool,
    no_old: bool,
    graph_only: bool,
    exact_reps: Option<usize>,
    from_index: Option<String>,
    concepts: bool,
    m: usize,
    ef_construction: usize,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        sizes: vec![10_000, 100_000],
        dim: 512,
        queries: 300,
        efs: vec![32, 64, DEFAULT_EF_SEARCH, 256],
        baseline_max: 100_000,
        dir: std::env::temp_dir(),
        reps: 3,
        keep: false,
        f16: false,
        no_graph: false,
        no_old: false,
        graph_only: false,
        exact_reps: None,
        from_index: None,
        concepts: false,
        m: DEFAULT_M,
        ef_construction: DEFAULT_EF_CONSTRUCTION,
    };
    let list = |v: &str| -> Result<Vec<usize>, String> {
        v.split(',')
            .map(|x| x.trim().parse().map_err(|_| format!("bad number {x:?}")))
            .collect()
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let flags = [
            "--keep",
            "--f16",
            "--no-graph",
            "--no-old",
            "--graph-only",
            "--concepts",
        ];
        if flags.contains(&k.as_str()) {
            a.keep |= k == "--keep";
            a.f16 |= k == "--f16";
            a.no_graph |= k == "--no-graph";
            a.no_old |= k == "--no-old";
            a.graph_only |= k == "--graph-only";
            a.concepts |= k == "--concepts";
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        match k.as_str() {
            "--sizes" => a.sizes = list(v)?,
            "--dim" => a.dim = v.parse().map_err(|_| "bad --dim")?,
            "--queries" => a.queries = v.parse().map_err(|_| "bad --queries")?,
            "--ef" => a.efs = list(v)?,
            "--baseline-max" => a.baseline_max = v.parse().map_err(|_| "bad --baseline-max")?,
            "--dir" => a.dir = PathBuf::from(v),
            "--reps" => a.reps = v.parse().map_err(|_| "bad --reps")?,
            "--from-index" => a.from_index = Some(v.clone()),
            "--exact-reps" => a.exact_reps = Some(v.parse().map_err(|_| "bad --exact-reps")?),
            "--m" => a.m = v.parse().map_err(|_| "bad --m")?,
            "--ef-construction" => {
                a.ef_construction = v.parse().map_err(|_| "bad --ef-construction")?
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// Clustered unit vectors, each a function of its id (so building streams).
struct Data {
    dim: usize,
    centres: Vec<f32>,
    spread: f32,
}

fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(1e-9);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

impl Data {
    fn new(n: usize, dim: usize) -> Data {
        let clusters = (n / 100).max(10);
        let mut rng = ChaCha8Rng::seed_from_u64(12345);
        let mut centres = vec![0f32; clusters * dim];
        for c in centres.chunks_mut(dim) {
            c.iter_mut().for_each(|x| *x = gauss(&mut rng));
            normalize(c);
        }
        Data {
            dim,
            centres,
            spread: 0.7,
        }
    }

    /// Vector `i` (queries use ids above the data).
    fn vector(&self, i: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(i ^ 0x5EED_0000_0000);
        let clusters = self.centres.len() / self.dim;
        let c = rng.random_range(0..clusters);
        let centre = &self.centres[c * self.dim..(c + 1) * self.dim];
        let s = self.spread / (self.dim as f32).sqrt();
        let mut v: Vec<f32> = centre.iter().map(|x| x + s * gauss(&mut rng)).collect();
        normalize(&mut v);
        v
    }
}

fn recipe(dim: usize) -> Recipe {
    Recipe {
        backbone: deepfactor::BackboneSpec::External("synthetic".into()),
        weights_fingerprint: "bench".into(),
        layer: "none".into(),
        input_size: 0,
        max_side: None,
        padding: deepfactor::backbone::Padding::Zero,
        shift_negative: false,
        descriptor: deepfactor::DescriptorSpec::External("clustered".into()),
        crow: false,
        whitening: None,
        dim,
    }
}

fn meta(i: u64) -> ImageMeta {
    ImageMeta {
        path: PathBuf::from(format!("/bench/{:04}/{i}.jpg", i % 1000)),
        size: 100_000 + i,
        modified_ns: i as i64,
        content_hash: [0; 32],
        width: 640,
        height: 480,
    }
}

/// Peak resident set size of this process in bytes (VmHWM), if readable.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds of this process so far (0 if unreadable; assumes the usual
/// 100 clock ticks per second).
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which ends with the last ')').
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Times `f` on every query, `reps` passes; returns (p50 ms, p99 ms) of the per-query
/// minima, and the results of the last pass.
fn timed<T>(
    queries: &[Vec<f32>],
    reps: usize,
    mut f: impl FnMut(&[f32]) -> T,
) -> (f64, f64, Vec<T>) {
    let mut best = vec![Duration::MAX; queries.len()];
    let mut out = Vec::new();
    for _ in 0..reps.max(1) {
        out.clear();
        for (q, b) in queries.iter().zip(best.iter_mut()) {
            let s = Instant::now();
            out.push(f(q));
            *b = (*b).min(s.elapsed());
        }
    }
    best.sort();
    (pct(&best, 0.5), pct(&best, 0.99), out)
}

/// Like [`timed`] for two searches, alternating query by query (and which goes first).
#[allow(clippy::type_complexity)]
fn timed_pair<T>(
    queries: &[Vec<f32>],
    reps: usize,
    mut f: impl FnMut(&[f32]) -> T,
    mut g: impl FnMut(&[f32]) -> T,
) -> ((f64, f64, Vec<T>), (f64, f64, Vec<T>)) {
    let mut bf = vec![Duration::MAX; queries.len()];
    let mut bg = vec![Duration::MAX; queries.len()];
    let (mut of, mut og) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        of.clear();
        og.clear();
        for (i, q) in queries.iter().enumerate() {
            // The second search of a query finds in cache the vectors the first one read:
            // each goes first on every other query.
            for first in [i % 2 == 0, i % 2 == 1] {
                if first {
                    let s = Instant::now();
                    of.push(f(q));
                    bf[i] = bf[i].min(s.elapsed());
                } else {
                    let s = Instant::now();
                    og.push(g(q));
                    bg[i] = bg[i].min(s.elapsed());
                }
            }
        }
    }
    bf.sort();
    bg.sort();
    (
        (pct(&bf, 0.5), pct(&bf, 0.99), of),
        (pct(&bg, 0.5), pct(&bg, 0.99), og),
    )
}

fn recall(truth: &[Vec<u64>], got: &[Vec<u64>]) -> f64 {
    let found: usize = truth
        .iter()
        .zip(got)
        .map(|(t, g)| g.iter().filter(|x| t.contains(x)).count())
        .sum();
    found as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64
}

/// Builds the graph of `vectors` with ours (`FlatGraph::build`) and with the old path
/// (hnsw_rs, then flattened; skipped with `--no-old`), same parameters, and searches both
/// with our beam search: build time, inserts/s, CPU seconds, and per ef latency and recall@10
/// against `truth`.
fn compare_graphs(
    a: &Args,
    n: usize,
    dim: usize,
    vectors: &[f32],
    queries: &[Vec<f32>],
    truth: &[Vec<u64>],
) -> Result<(), String> {
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let g = FlatGraph::build(vectors, dim, a.m, a.ef_construction).map_err(|e| e.to_string())?;
    let ours = t.elapsed().as_secs_f64();
    let ours_cpu = cpu_seconds() - cpu0;
    let mut old_cpu = f64::NAN;
    let (old, old_s) = if a.no_old {
        (None, f64::NAN)
    } else {
        let t = Instant::now();
        let cpu0 = cpu_seconds();
        let h = build_hnsw(vectors, dim, a.m, a.ef_construction).map_err(|e| e.to_string())?;
        let old = FlatGraph::from_hnsw(&h, n).map_err(|e| e.to_string())?;
        old_cpu = cpu_seconds() - cpu0;
        (Some(old), t.elapsed().as_secs_f64())
    };
    println!(
        "n={n}: graph build (m {}, ef_construction {}, {} threads): ours {ours:.1} s ({:.0} inserts/s, {ours_cpu:.0} CPU s) | hnsw_rs {old_s:.1} s ({:.0} inserts/s, {old_cpu:.0} CPU s) | ours/hnsw_rs speed ×{:.2} (wall), ×{:.2} (CPU); links per row in layer 0: ours {:.1}, hnsw_rs {:.1}",
        a.m,
        a.ef_construction,
        rayon::current_num_threads(),
        n as f64 / ours,
        n as f64 / old_s,
        old_s / ours,
        old_cpu / ours_cpu,
        g.mean_links0(),
        old.as_ref().map_or(f64::NAN, FlatGraph::mean_links0)
    );
    for &ef in &a.efs {
        let search = |g: &FlatGraph, q: &[f32]| {
            g.search(vectors, dim, q, 10, ef)
                .into_iter()
                .map(|x| x.0 as u64)
                .collect::<Vec<u64>>()
        };
        match &old {
            Some(old) => {
                let ((o50, o99, ogot), (b50, b99, bgot)) =
                    timed_pair(queries, a.reps, |q| search(&g, q), |q| search(old, q));
                println!(
                    "n={n}: ef={ef:<4} our graph p50 {o50:.3} ms p99 {o99:.3} ms recall {:.4} | hnsw_rs graph p50 {b50:.3} ms p99 {b99:.3} ms recall {:.4}",
                    recall(truth, &ogot),
                    recall(truth, &bgot),
                );
            }
            None => {
                let (o50, o99, ogot) = timed(queries, a.reps, |q| search(&g, q));
                println!(
                    "n={n}: ef={ef:<4} our graph p50 {o50:.3} ms p99 {o99:.3} ms recall {:.4}",
                    recall(truth, &ogot),
                );
            }
        }
    }
    Ok(())
}

/// `--from-index PATH[,PATH…]`: the descriptors of existing indexes (real ones, from
/// `deepfactor index build`) — or with `--concepts` their stored NMF concept vectors, made
/// unit length — all in one graph, `--queries` of them (evenly spaced) as
/// queries, exact top-10 by brute force; then [`compare_graphs`].
fn run_real(a: &Args, paths: &str) -> Result<(), String> {
    let mut vectors = Vec::new();
    let mut dim = 0;
    for path in paths.split(',') {
        let ix = Index::open(path).map_err(|e| e.to_string())?;
        dim = ix.recipe().dim;
        for d in ix.documents() {
            let id = d.map_err(|e| e.to_string())?.id;
            if a.concepts {
                let f = ix.factors(id).map_err(|e| e.to_string())?;
                for c in f
                    .iter()
                    .flat_map(|f| (0..f.k()).filter_map(|i| f.concept(i)))
                {
                    dim = c.len();
                    let mut c = c;
                    normalize(&mut c);
                    vectors.extend(c);
                }
            } else {
                let v = ix
                    .descriptor(id)
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("image {id}: no descriptor"))?;
                vectors.extend(v);
            }
        }
    }
    let n = vectors.len() / dim.max(1);
    if n == 0 {
        return Err(format!("{paths}: no vectors"));
    }
    let step = (n / a.queries.max(1)).max(1);
    let queries: Vec<Vec<f32>> = (0..n)
        .step_by(step)
        .take(a.queries)
        .map(|r| vectors[r * dim..(r + 1) * dim].to_vec())
        .collect();
    let truth = brute(&vectors, dim, &queries);
    println!(
        "index: real {} of {paths} ({n} vectors, dim {dim}), {} of them as queries; load average: {}",
        if a.concepts { "NMF concept vectors (channel factors, unit length)" } else { "descriptors" },
        queries.len(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    compare_graphs(a, n, dim, &vectors, &queries, &truth)
}

/// Exact top-10 rows of each query over `vectors` (`n × dim`), by brute force.
fn brute(vectors: &[f32], dim: usize, queries: &[Vec<f32>]) -> Vec<Vec<u64>> {
    use rayon::prelude::*;
    queries
        .par_iter()
        .map(|q| {
            let mut s: Vec<(f32, u64)> = vectors
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, r)| (r.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i as u64))
                .collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            s.into_iter().take(10).map(|x| x.1).collect()
        })
        .collect()
}

/// Exact top-10 ids of each query over the generated vectors `0..n`.
fn brute_truth(data: &Data, n: usize, queries: &[Vec<f32>]) -> Vec<Vec<u64>> {
    use rayon::prelude::*;
    let rows: Vec<f32> = (0..n as u64)
        .into_par_iter()
        .flat_map_iter(|i| data.vector(i))
        .collect();
    brute(&rows, data.dim, queries)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// Runs the group.
pub fn run(args: &[String]) -> Result<(), String> {
    let a = parse(args)?;
    if let Some(p) = &a.from_index {
        return run_real(&a, p);
    }
    let dim = a.dim;
    let r = recipe(dim);
    let mut options = IndexOptions::new()
        .vector_encoding(if a.f16 {
            VectorEncoding::F16
        } else {
            VectorEncoding::F32
        })
        .m(a.m)
        .ef_construction(a.ef_construction);
    if a.no_graph {
        options = options.graph_min_docs(usize::MAX);
    }
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .map_err(|e| e.to_string())?;
    println!(
        "index: clustered unit vectors, dim {dim}, {} queries (latency: per-query minimum of {} passes), k = 10, m {}, ef_construction {}; threads available: {}",
        a.queries,
        a.reps,
        a.m,
        a.ef_construction,
        rayon::current_num_threads()
    );
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", l.trim());
    }
    for &n in &a.sizes {
        let data = Data::new(n, dim);
        let queries: Vec<Vec<f32>> = (0..a.queries as u64)
            .map(|q| data.vector(1 << 40 | q))
            .collect();
        let (truth, has_graph) = if a.graph_only {
            (brute_truth(&data, n, &queries), true)
        } else {
            let dir = if a.keep {
                a.dir.join(format!(
                    "deepfactor-bench-index-{n}-{dim}-f16-{}-graph-{}",
                    a.f16, !a.no_graph
                ))
            } else {
                a.dir
                    .join(format!("deepfactor-bench-index-{n}-{}", std::process::id()))
            };
            let reuse = a.keep && Index::open(&dir).is_ok_and(|ix| ix.len() == n);
            if !reuse {
                let _ = std::fs::remove_dir_all(&dir);
            }

            // Build: descriptors generated one by one, as an extractor would hand them over.
            if reuse {
                println!(
                    "n={n}: reusing the index built by an earlier run in {}",
                    dir.display()
                );
            } else {
                reset_peak_rss();
                let base = peak_rss().unwrap_or(0);
                let t = Instant::now();
                let mut w = IndexWriter::create(&dir, r.clone(), options.clone())
                    .map_err(|e| e.to_string())?;
                for i in 0..n as u64 {
                    w.add(
                        &r,
                        NewImage {
                            meta: meta(i),
                            descriptor: data.vector(i),
                            factors: None,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                }
                let adds = t.elapsed().as_secs_f64();
                let cpu0 = cpu_seconds();
                w.commit().map_err(|e| e.to_string())?;
                let cpu = cpu_seconds() - cpu0;
                let build = t.elapsed().as_secs_f64();
                let peak = peak_rss().unwrap_or(0).saturating_sub(base);
                drop(w);
                let bytes: u64 = Index::open(&dir)
                    .map_err(|e| e.to_string())?
                    .segments()
                    .iter()
                    .map(|s| s.bytes)
                    .sum();
                let stored = (n * dim * if a.f16 { 2 } else { 4 }) as u64;
                println!(
                    "n={n}: build {build:.1} s ({:.0} images/s, features excluded; commit with graph {:.1} s = {:.0} inserts/s, {cpu:.0} CPU s), peak RSS +{:.0} MiB = {:.2}× the f32 descriptors ({:.0} MiB), {:.2}× the stored ones; index {:.0} MiB; load average after: {}",
                    n as f64 / build,
                    build - adds,
                    n as f64 / (build - adds),
                    mib(peak),
                    peak as f64 / (n * dim * 4) as f64,
                    mib((n * dim * 4) as u64),
                    peak as f64 / stored as f64,
                    mib(bytes),
                    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
                );
            }

            // Open.
            let mapped: Vec<Duration> = (0..20)
                .map(|_| {
                    let t = Instant::now();
                    // SAFETY: the bench's own files; nothing modifies them.
                    let ix = unsafe { Index::open_mmap(&dir) }.map(|_| ());
                    let e = t.elapsed();
                    ix.map(|_| e)
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let read: Vec<Duration> = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    Index::open(&dir).map(|_| t.elapsed())
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            println!(
                "n={n}: open memory-mapped {:.3} ms (median of 20), open read+validated {:.1} ms (median of 3), warm page cache",
                median(mapped),
                median(read)
            );

            // Search through the index (memory-mapped).
            // SAFETY: as above.
            let ix = unsafe { Index::open_mmap(&dir) }.map_err(|e| e.to_string())?;
            let exact_opts = SearchOptions::new().mode(SearchMode::Exact);
            let ids = |h: deepfactor::Result<Vec<deepfactor::index::Hit>>| {
                h.map(|h| h.into_iter().map(|h| h.id).collect::<Vec<u64>>())
                    .unwrap_or_default()
            };
            // The current scoring against the former path, query by query in the same run
            // (`set_f16_reference_scoring`): f16 rows converted into a buffer, then dotted,
            // and (graph search) no prefetching of the next row.
            let fused = |on: bool| set_f16_reference_scoring(!on);
            let (p50, p99, truth) = if a.f16 {
                let ((p50, p99, truth), (b50, b99, _)) = two.install(|| {
                    timed_pair(
                        &queries,
                        a.exact_reps.unwrap_or(a.reps),
                        |q| {
                            fused(true);
                            ids(ix.search(&r, q, &exact_opts))
                        },
                        |q| {
                            fused(false);
                            let h = ids(ix.search(&r, q, &exact_opts));
                            fused(true);
                            h
                        },
                    )
                });
                println!(
                    "n={n}: exact, 2 threads, former f16 scoring (convert, then dot): p50 {b50:.2} ms, p99 {b99:.2} ms; fused / former p50 ×{:.2}",
                    b50 / p50
                );
                (p50, p99, truth)
            } else {
                two.install(|| {
                    timed(&queries, a.exact_reps.unwrap_or(a.reps), |q| {
                        ids(ix.search(&r, q, &exact_opts))
                    })
                })
            };
            println!("n={n}: exact, 2 threads: p50 {p50:.2} ms, p99 {p99:.2} ms");
            let has_graph = ix.segments().iter().all(|s| s.graph_levels > 0);
            if !has_graph {
                println!("n={n}: no graph: HNSW and the baseline skipped");
            }
            for &ef in a.efs.iter().filter(|_| has_graph) {
                let o = SearchOptions::new().mode(SearchMode::Hnsw).ef_search(ef);
                let note = if ef == DEFAULT_EF_SEARCH {
                    " (default ef)"
                } else {
                    ""
                };
                {
                    let ((p50, p99, got), (b50, b99, bgot)) = timed_pair(
                        &queries,
                        a.reps,
                        |q| {
                            fused(true);
                            ids(ix.search(&r, q, &o))
                        },
                        |q| {
                            fused(false);
                            let h = ids(ix.search(&r, q, &o));
                            fused(true);
                            h
                        },
                    );
                    println!(
                        "n={n}: hnsw ef={ef:<4} 1 thread: p50 {p50:.3} ms, p99 {p99:.3} ms, recall@10 {:.4}{note} | former path ({}no prefetch): p50 {b50:.3} ms, p99 {b99:.3} ms, recall@10 {:.4}; speed-up p50 ×{:.2}, p99 ×{:.2}",
                        recall(&truth, &got),
                        if a.f16 { "f16 converted, then dot; " } else { "" },
                        recall(&truth, &bgot),
                        b50 / p50,
                        b99 / p99,
                    );
                }
            }
            drop(ix);
            if !a.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            (truth, has_graph)
        };

        // The graph alone, in memory: ours (`FlatGraph::build`) against the old build path
        // (hnsw_rs, then flattened) on the same vectors with the same parameters, both
        // searched by our beam search.
        if n <= a.baseline_max && has_graph {
            let mut vectors = Vec::with_capacity(n * dim);
            for i in 0..n as u64 {
                vectors.extend(data.vector(i));
            }
            if a.f16 {
                for x in vectors.iter_mut() {
                    *x = half::f16::from_f32(*x).to_f32();
                }
            }
            compare_graphs(&a, n, dim, &vectors, &queries, &truth)?;
        }
    }
    Ok(())
}
