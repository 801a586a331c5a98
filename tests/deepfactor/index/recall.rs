//! HNSW recall against exact search at the default settings.

use super::{build, clustered, recipe};
use deepfactor::index::{Index, IndexOptions, SearchMode, SearchOptions, DEFAULT_GRAPH_MIN_DOCS};

/// Recall@10 of HNSW (default `m`, `ef_construction`, `ef_search`) against exact search on
/// clustered synthetic data, through the stored graph of a reopened index.
#[test]
fn hnsw_recall_at_10_on_clustered_data() {
    let (n, dim) = (3000, 48);
    assert!(n >= DEFAULT_GRAPH_MIN_DOCS);
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let data = clustered(n, dim, 40, 0.8, 11);
    build(&dir, &data, IndexOptions::new(), n);
    let ix = Index::open(&dir).unwrap();
    assert!(ix.segments()[0].graph_levels >= 2, "{:?}", ix.segments());
    let r = recipe(dim);
    let queries = clustered(200, dim, 40, 0.8, 11 + 1);
    let mut found = 0;
    for q in &queries {
        let exact = ix
            .search(&r, q, &SearchOptions::new().mode(SearchMode::Exact))
            .unwrap();
        let approx = ix
            .search(&r, q, &SearchOptions::new().mode(SearchMode::Hnsw))
            .unwrap();
        assert_eq!(approx.len(), 10);
        found += approx
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
    }
    let recall = found as f64 / (10 * queries.len()) as f64;
    eprintln!("recall@10 = {recall:.4}");
    assert!(recall >= 0.98, "recall@10 = {recall}");
}
