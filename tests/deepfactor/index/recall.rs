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

/// Recall@10 of the graph on real descriptors: NMF V+U of 200 instance-dev photos (at 256 px
/// to keep the test short), in one segment forced to have a graph, every descriptor a query.
#[test]
fn hnsw_recall_at_10_on_real_descriptors() {
    use crate::common;
    use deepfactor::backbone::{BackboneBuilder, BackboneKind, WeightSource};
    use deepfactor::descriptor::{DescriptorConfig, DescriptorKind};
    use deepfactor::index::{add_files, IndexWriter, UpdateOptions};
    use deepfactor::pipeline::Pipeline;
    let (Some(data), Some(weights)) =
        (common::shared_data("instance-dev"), common::lite0_weights())
    else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(data.join("jpg"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.truncate(200);
    let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
        .weights(WeightSource::File(weights))
        .input_size(256)
        .build()
        .unwrap();
    let p = Pipeline::new(
        backbone,
        DescriptorConfig::new(DescriptorKind::NmfVu)
            .build()
            .unwrap(),
    );
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let mut w = IndexWriter::create(
        &dir,
        p.recipe().clone(),
        IndexOptions::new().graph_min_docs(2),
    )
    .unwrap();
    let report = add_files(&mut w, &files, &p, &UpdateOptions::new(), &mut |_| {}).unwrap();
    assert_eq!(report.counts.indexed, files.len(), "{report:?}");
    drop(w);
    let ix = Index::open(&dir).unwrap();
    assert_eq!(ix.segments().len(), 1, "{:?}", ix.segments());
    assert!(ix.segments()[0].graph_levels >= 1, "{:?}", ix.segments());
    let r = p.recipe();
    let mut found = 0;
    let mut n = 0;
    for doc in ix.documents() {
        let q = ix.descriptor(doc.unwrap().id).unwrap().unwrap();
        let exact = ix
            .search(r, &q, &SearchOptions::new().mode(SearchMode::Exact))
            .unwrap();
        let approx = ix
            .search(r, &q, &SearchOptions::new().mode(SearchMode::Hnsw))
            .unwrap();
        found += approx
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
        n += 1;
    }
    let recall = found as f64 / (10 * n) as f64;
    eprintln!("real descriptors: recall@10 = {recall:.4} over {n} queries");
    assert!(recall >= 0.98, "recall@10 = {recall}");
}
