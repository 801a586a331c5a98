//! HNSW recall@10 against exact search on the descriptors of a real index.
//!
//! ```sh
//! cargo run --release --example index_recall -- INDEX [--ef 32,64,128]
//! ```
//!
//! Copies every live descriptor of `INDEX` into a temporary index whose one segment gets an
//! HNSW graph whatever its size (default `m` and `ef_construction`), then searches with each
//! descriptor as the query (its own hit included) and prints recall@10 of the graph search
//! against exact search at each `ef_search`. Small collections normally get no graph (exact
//! search is exact and fast below `graph_min_docs`); this measures how the graph would do on
//! real descriptors, whose neighbourhoods are less regular than synthetic clusters.

use anyhow::{bail, Context, Result};
use deepfactor::index::{Index, IndexOptions, IndexWriter, NewImage, SearchMode, SearchOptions};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut index: Option<PathBuf> = None;
    let mut efs = vec![32usize, 64, 128];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ef" => {
                let v = args.next().context("--ef needs a list")?;
                efs = v
                    .split(',')
                    .map(|s| s.trim().parse().context("--ef: whole numbers"))
                    .collect::<Result<_>>()?;
            }
            s if s.starts_with('-') => bail!("unknown option {s}"),
            s => index = Some(PathBuf::from(s)),
        }
    }
    let index = index.context("usage: index_recall INDEX [--ef 32,64,128]")?;
    let src = Index::open(&index).with_context(|| format!("opening {}", index.display()))?;
    let recipe = src.recipe().clone();
    let mut items = Vec::new();
    for doc in src.documents() {
        let doc = doc?;
        if let Some(v) = src.descriptor(doc.id)? {
            items.push((doc.meta, v));
        }
    }
    if items.len() < 11 {
        bail!(
            "{} has {} images; recall@10 needs more",
            index.display(),
            items.len()
        );
    }
    let tmp = std::env::temp_dir().join(format!("deepfactor-recall-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let options = IndexOptions::new().graph_min_docs(2);
    let t = std::time::Instant::now();
    {
        let mut w = IndexWriter::create(&tmp, recipe.clone(), options)?;
        for (meta, v) in &items {
            w.add(
                &recipe,
                NewImage {
                    meta: meta.clone(),
                    descriptor: v.clone(),
                    factors: None,
                },
            )?;
        }
        w.commit()?;
    }
    let ix = Index::open(&tmp)?;
    println!(
        "{}: {} descriptors of {} dims, graph built in {:.1?} ({} levels)",
        index.display(),
        items.len(),
        items[0].1.len(),
        t.elapsed(),
        ix.segments()
            .iter()
            .map(|s| s.graph_levels)
            .max()
            .unwrap_or(0)
    );
    let exact: Vec<Vec<u64>> = items
        .iter()
        .map(|(_, v)| {
            let hits = ix.search(
                &recipe,
                v,
                &SearchOptions::new().k(10).mode(SearchMode::Exact),
            )?;
            Ok(hits.iter().map(|h| h.id).collect())
        })
        .collect::<Result<_>>()?;
    for ef in efs {
        let mut found = 0usize;
        let t = std::time::Instant::now();
        for ((_, v), truth) in items.iter().zip(&exact) {
            let hits = ix.search(
                &recipe,
                v,
                &SearchOptions::new()
                    .k(10)
                    .mode(SearchMode::Hnsw)
                    .ef_search(ef),
            )?;
            found += hits.iter().filter(|h| truth.contains(&h.id)).count();
        }
        println!(
            "ef_search={ef:<4} recall@10 {:.4}  ({:.3} ms per query, 1 thread)",
            found as f64 / (10 * items.len()) as f64,
            t.elapsed().as_secs_f64() * 1e3 / items.len() as f64
        );
    }
    drop(ix);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
