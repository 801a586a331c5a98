//! The golden indexes under `index-format/golden/`: written once by each format version
//! and reopened by every later build (the start of the compatibility promise).
//!
//! Their content is a pure function of the image id (no random-number crate involved), so
//! the test can check every stored value.

use super::{brute_force, factors_for, meta_for, recipe, small_options};
use deepfactor::index::{
    FactorSearch, Index, IndexWriter, NewImage, QueryFactor, SearchMode, SearchOptions,
    VectorEncoding,
};
use std::path::{Path, PathBuf};

const DIM: usize = 16;

fn golden_dir(name: &str) -> PathBuf {
    super::super::common::repo_root()
        .join("index-format/golden")
        .join(name)
}

/// A unit vector from integer arithmetic only.
fn golden_vector(id: u64) -> Vec<f32> {
    let v = (0..DIM as u64)
        .map(|j| {
            let h = (id * 1_000_003 + j * 7919) % 2003;
            h as f32 / 2003.0 - 0.5
        })
        .collect();
    super::normalize(v)
}

fn image(id: u64, factors: bool) -> NewImage {
    NewImage {
        meta: meta_for(id),
        descriptor: golden_vector(id),
        factors: factors.then(|| factors_for(id)),
    }
}

/// `v1` and `v2`: f32, a 40-image segment with a graph and factors on even ids, a 7-image
/// segment with factors, three deletions (`v2` with factor vectors and, in the first segment,
/// their graph). `v1-f16`: f16, one 35-image segment with a graph.
fn expected(name: &str) -> (Vec<u64>, fn(u64) -> bool) {
    match name {
        "v1" | "v2" => (
            (0..47).filter(|id| ![3, 17, 41].contains(id)).collect(),
            |id| id >= 40 || id.is_multiple_of(2),
        ),
        _ => ((0..35).collect(), |_| false),
    }
}

fn write(name: &str) {
    let dir = golden_dir(name);
    let r = recipe(DIM);
    if name != "v1-f16" {
        let mut w = IndexWriter::create(&dir, r.clone(), small_options()).unwrap();
        for id in 0..40 {
            w.add(&r, image(id, id.is_multiple_of(2))).unwrap();
        }
        w.commit().unwrap();
        for id in 40..47 {
            w.add(&r, image(id, true)).unwrap();
        }
        for id in [3, 41, 17] {
            w.delete(id).unwrap();
        }
        w.commit().unwrap();
    } else {
        let opts = small_options().vector_encoding(VectorEncoding::F16);
        let mut w = IndexWriter::create(&dir, r.clone(), opts).unwrap();
        for id in 0..35 {
            w.add(&r, image(id, false)).unwrap();
        }
        w.commit().unwrap();
    }
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}

/// Writes the golden indexes of the current format version. Run by hand, once per version:
/// `cargo test --test deepfactor index::golden::write_golden -- --ignored`.
#[test]
#[ignore = "writes index-format/golden/; run by hand once per format version"]
fn write_golden() {
    // The current version's golden indexes.
    let name = "v2";
    let dir = golden_dir(name);
    assert!(
        !dir.exists(),
        "{} exists: golden indexes of a released version are never rewritten",
        dir.display()
    );
    write(name);
}

#[allow(unsafe_code)]
fn check(dir: &Path, name: &str) {
    // SAFETY: nobody modifies the golden files while the test runs.
    let mapped = unsafe { Index::open_mmap(dir) }.unwrap();
    for ix in [Index::open(dir).unwrap(), mapped] {
        ix.verify().unwrap();
        assert_eq!(ix.recipe(), &recipe(DIM));
        let (ids, has_factors) = expected(name);
        let mut got: Vec<u64> = ix.documents().map(|d| d.unwrap().id).collect();
        got.sort_unstable();
        assert_eq!(got, ids);
        let f16 = name.ends_with("f16");
        let mut items = Vec::new();
        for &id in &ids {
            let d = ix.document(id).unwrap().unwrap();
            assert_eq!(d.meta, meta_for(id));
            let v = ix.descriptor(id).unwrap().unwrap();
            let tol = if f16 { 1e-3 } else { 0.0 };
            assert!(v
                .iter()
                .zip(golden_vector(id))
                .all(|(a, b)| (a - b).abs() <= tol));
            assert_eq!(
                ix.factors(id).unwrap(),
                has_factors(id).then(|| factors_for(id))
            );
            items.push((id, v));
        }
        let segs = ix.segments();
        let version = if name.starts_with("v2") { 2 } else { 1 };
        assert!(
            segs.iter().all(|s| s.format_version == version),
            "golden index {name} is version {version}"
        );
        check_factor_vectors(&ix, name, &ids, has_factors);
        assert!(segs[0].graph_levels >= 1);
        for q in 0..5 {
            let query = golden_vector(1000 + q);
            let want = brute_force(&items, &query, 5);
            for mode in [SearchMode::Exact, SearchMode::Hnsw] {
                let hits = ix
                    .search(&recipe(DIM), &query, &SearchOptions::new().k(5).mode(mode))
                    .unwrap();
                if mode == SearchMode::Exact {
                    let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
                    assert_eq!(ids, want.iter().map(|w| w.0).collect::<Vec<_>>());
                } else {
                    assert_eq!(hits.len(), 5);
                }
            }
        }
    }
}

/// Factor vectors: none in version 1 (factor search says how to upgrade), one per stored
/// concept in version 2, each finding its image.
fn check_factor_vectors(ix: &Index, name: &str, ids: &[u64], has_factors: fn(u64) -> bool) {
    let q = |id: u64| QueryFactor {
        factor: 0,
        concept: factors_for(id).concept(1).unwrap(),
    };
    let run = |id: u64| {
        ix.search_factors(
            &recipe(DIM),
            &golden_vector(id),
            &[q(id)],
            &SearchOptions::new().k(1).mode(SearchMode::Exact),
            &FactorSearch::new().weight(1.0),
        )
    };
    if name == "v1" {
        assert!(!ix.has_factor_vectors());
        let e = run(0).unwrap_err().to_string();
        assert!(e.contains("deepfactor index compact"), "{e}");
        return;
    }
    assert!(ix.has_factor_vectors());
    let with: Vec<u64> = ids.iter().copied().filter(|&id| has_factors(id)).collect();
    if name == "v2" {
        assert!(ix.factor_vectors() >= with.len());
        for &id in &with {
            let hits = run(id).unwrap();
            assert!((hits[0].matches[0].score - 1.0).abs() < 2e-3);
        }
    }
}

#[test]
fn golden_indexes_reopen() {
    for name in ["v1", "v1-f16", "v2"] {
        let dir = golden_dir(name);
        check(&dir, name);
        // A writer of this build continues an index of that version.
        let tmp = super::tempdir();
        let copy = tmp.path().join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        let mut w = IndexWriter::open(&copy).unwrap();
        let next = w.next_id();
        w.add(&recipe(DIM), image(next, false)).unwrap();
        w.commit().unwrap();
        let ix = Index::open(&copy).unwrap();
        assert_eq!(ix.len(), expected(name).0.len() + 1);
        ix.verify().unwrap();
        // Compaction upgrades to the current version: factor vectors from the stored factors.
        w.compact().unwrap();
        let ix = Index::open(&copy).unwrap();
        ix.verify().unwrap();
        assert!(ix.has_factor_vectors());
        assert!(ix
            .segments()
            .iter()
            .all(|s| s.format_version == deepfactor::index::FORMAT_VERSION));
        let (ids, has_factors) = expected(name);
        check_factor_vectors(&ix, "upgraded", &ids, has_factors);
    }
}
