//! Round trips and writer behaviour.

use super::{brute_force, factors_for, image_for, meta_for, recipe, small_options, vector_for};
use deepfactor::index::{
    Index, IndexOptions, IndexWriter, SearchMode, SearchOptions, VectorEncoding,
};
use deepfactor::Error;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Opens `dir` both ways.
#[allow(unsafe_code)]
fn open_both(dir: &std::path::Path) -> [Index; 2] {
    // SAFETY: nothing modifies the files of this test's private directory while mapped.
    let mapped = unsafe { Index::open_mmap(dir) }.unwrap();
    [Index::open(dir).unwrap(), mapped]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// build → commit → reopen gives the same ids, metadata, descriptors, factors and exact
    /// search results as a model kept in memory, through adds, deletes, commits and merges.
    #[test]
    fn round_trip(
        ops in prop::collection::vec((1usize..25, prop::collection::vec(any::<prop::sample::Index>(), 0..6), any::<bool>()), 1..7),
        f16 in any::<bool>(),
        with_factors in any::<bool>(),
    ) {
        let dim = 12;
        let tmp = super::tempdir();
        let dir = tmp.path().join("ix");
        let r = recipe(dim);
        let enc = if f16 { VectorEncoding::F16 } else { VectorEncoding::F32 };
        let mut w = IndexWriter::create(&dir, r.clone(), small_options().vector_encoding(enc)).unwrap();
        let mut model: BTreeMap<u64, ()> = BTreeMap::new();
        for (adds, dels, compact) in ops {
            for _ in 0..adds {
                let id = w.next_id();
                let got = w.add(&r, image_for(id, dim, with_factors && !id.is_multiple_of(3))).unwrap();
                prop_assert_eq!(got, id);
                model.insert(id, ());
            }
            for d in dels {
                if model.is_empty() { break; }
                let id = *model.keys().nth(d.index(model.len())).unwrap();
                if id.is_multiple_of(2) {
                    prop_assert!(w.delete(id).unwrap());
                } else {
                    prop_assert_eq!(w.delete_path(&meta_for(id).path).unwrap(), 1);
                }
                model.remove(&id);
            }
            if compact { w.compact().unwrap(); } else { w.commit().unwrap(); }
        }
        for ix in open_both(&dir) {
            prop_assert_eq!(ix.len(), model.len());
            ix.verify().unwrap();
            let mut ids: Vec<u64> = ix.documents().map(|d| d.unwrap().id).collect();
            ids.sort_unstable();
            prop_assert_eq!(&ids, &model.keys().copied().collect::<Vec<_>>());
            let mut items = Vec::new();
            for &id in model.keys() {
                let d = ix.document(id).unwrap().unwrap();
                prop_assert_eq!(&d.meta, &meta_for(id));
                let v = ix.descriptor(id).unwrap().unwrap();
                let want = vector_for(id, dim);
                let tol = if f16 { 1e-3 } else { 0.0 };
                prop_assert!(v.iter().zip(&want).all(|(a, b)| (a - b).abs() <= tol));
                let f = ix.factors(id).unwrap();
                prop_assert_eq!(f, (with_factors && !id.is_multiple_of(3)).then(|| factors_for(id)));
                items.push((id, v));
            }
            for q in 0..5u64 {
                let query = vector_for(1000 + q, dim);
                let hits = ix.search(&r, &query, &SearchOptions::new().k(7).mode(SearchMode::Exact)).unwrap();
                let want = brute_force(&items, &query, 7);
                prop_assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), want.iter().map(|w| w.0).collect::<Vec<_>>());
                for (h, w) in hits.iter().zip(&want) {
                    prop_assert!((h.score - w.1).abs() < 1e-5);
                }
            }
        }
    }
}

#[test]
fn one_writer_at_a_time_and_recipe_is_enforced() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let r = recipe(8);
    let mut w = IndexWriter::create(&dir, r.clone(), IndexOptions::new()).unwrap();
    match IndexWriter::open(&dir) {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    let mut other = r.clone();
    other.layer = "conv4".into();
    assert!(matches!(
        w.add(&other, image_for(0, 8, false)),
        Err(Error::RecipeMismatch { .. })
    ));
    let mut bad = image_for(0, 8, false);
    bad.descriptor[0] += 0.5;
    assert!(w
        .add(&r, bad)
        .unwrap_err()
        .to_string()
        .contains("unit vectors"));
    let mut bad = image_for(0, 8, false);
    bad.descriptor.pop();
    assert!(w.add(&r, bad).is_err());
    w.add(&r, image_for(0, 8, false)).unwrap();
    w.commit().unwrap();
    let ix = Index::open(&dir).unwrap();
    assert!(matches!(
        ix.search(&other, &vector_for(0, 8), &SearchOptions::new()),
        Err(Error::RecipeMismatch { .. })
    ));
    assert!(ix
        .search(&r, &vector_for(0, 8), &SearchOptions::new().k(0))
        .is_err());
    drop(w);
    // The lock is released with the writer.
    let w = IndexWriter::open(&dir).unwrap();
    assert_eq!(w.index().len(), 1);
    assert!(matches!(
        IndexWriter::open_or_create(&dir, other, IndexOptions::new()),
        Err(Error::Locked { .. }) | Err(Error::RecipeMismatch { .. })
    ));
}

#[test]
fn uncommitted_changes_are_invisible_and_rollback_drops_them() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let r = recipe(8);
    let mut w = IndexWriter::create(&dir, r.clone(), IndexOptions::new()).unwrap();
    for id in 0..5 {
        w.add(&r, image_for(id, 8, false)).unwrap();
    }
    assert_eq!(Index::open(&dir).unwrap().len(), 0);
    let c = w.commit().unwrap();
    assert_eq!((c.generation, c.added, c.live), (2, 5, 5));
    let snapshot = Index::open(&dir).unwrap();
    w.delete(3).unwrap();
    w.add(&r, image_for(5, 8, false)).unwrap();
    w.rollback();
    assert_eq!(w.commit().unwrap().generation, 2, "nothing to commit");
    w.delete(3).unwrap();
    w.commit().unwrap();
    // An open snapshot keeps showing its commit; reopen shows the new one.
    assert_eq!(snapshot.len(), 5);
    assert!(snapshot.document(3).unwrap().is_some());
    let now = snapshot.reopen().unwrap();
    assert_eq!((now.generation(), now.len()), (3, 4));
    assert!(now.document(3).unwrap().is_none());
    // The next id is not reused after a delete.
    assert_eq!(w.add(&r, image_for(5, 8, false)).unwrap(), 5);
}

#[test]
fn merges_keep_ids_and_compaction_drops_tombstones() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let dim = 16;
    let r = recipe(dim);
    let mut w = IndexWriter::create(&dir, r.clone(), small_options()).unwrap();
    // Nine commits of 4: size class 0 holds < 3 images, class 1 < 9, so merges cascade.
    for c in 0..9u64 {
        for i in 0..4 {
            w.add(&r, image_for(c * 4 + i, dim, i == 1)).unwrap();
        }
        let rep = w.commit().unwrap();
        assert!(
            rep.segments <= 3 * 3,
            "merge policy bounds segments: {rep:?}"
        );
    }
    let ix = w.index().clone();
    assert_eq!(ix.len(), 36);
    assert!(ix.segments().len() < 9, "{:?}", ix.segments());
    for id in 0..36 {
        assert_eq!(ix.descriptor(id).unwrap().unwrap(), vector_for(id, dim));
    }
    for id in (0..36).step_by(2) {
        w.delete(id).unwrap();
    }
    let rep = w.commit().unwrap();
    assert_eq!(rep.live, 18);
    let rep = w.compact().unwrap();
    assert_eq!(rep.segments, 1);
    let ix = Index::open(&dir).unwrap();
    let s = ix.segments();
    assert_eq!((s.len(), s[0].docs, s[0].deleted), (1, 18, 0));
    assert!(s[0].has_factors);
    for id in 0..36u64 {
        let d = ix.document(id).unwrap();
        assert_eq!(d.is_some(), id % 2 == 1);
        if id % 2 == 1 {
            assert_eq!(
                ix.factors(id).unwrap(),
                (id % 4 == 1).then(|| super::factors_for(id))
            );
        }
    }
    // Only the live files remain: LOCK, CURRENT, one manifest, one segment.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    ix.verify().unwrap();
}

#[test]
fn graph_segments_search_close_to_exact() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let vectors = super::clustered(400, 16, 8, 0.6, 3);
    super::build(&dir, &vectors, small_options().graph_min_docs(100), 400);
    let ix = Index::open(&dir).unwrap();
    let segs = ix.segments();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].graph_levels >= 1);
    let r = recipe(16);
    let mut agree = 0;
    for q in 0..50u64 {
        let query = vector_for(5000 + q, 16);
        let exact = ix
            .search(&r, &query, &SearchOptions::new().mode(SearchMode::Exact))
            .unwrap();
        let approx = ix
            .search(&r, &query, &SearchOptions::new().mode(SearchMode::Hnsw))
            .unwrap();
        agree += approx
            .iter()
            .filter(|h| exact.iter().any(|e| e.id == h.id))
            .count();
        // Auto uses exact search below the threshold.
        let auto = ix.search(&r, &query, &SearchOptions::new()).unwrap();
        assert_eq!(auto, exact);
    }
    assert!(agree >= 50 * 10 * 95 / 100, "{agree}/500");
}

#[test]
fn bad_directories_give_clear_errors() {
    let tmp = super::tempdir();
    let e = Index::open(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("CURRENT") && e.contains("not a deepfactor index"),
        "{e}"
    );
    let e = Index::open(tmp.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    std::fs::write(tmp.path().join("photo.jpg"), b"x").unwrap();
    let e = IndexWriter::create(tmp.path(), recipe(4), IndexOptions::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    let e = IndexWriter::create(tmp.path().join("a"), recipe(4), IndexOptions::new().m(1000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("m = 1000"), "{e}");
}

#[test]
fn missing_segment_is_named() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    super::build(
        &dir,
        &super::clustered(10, 8, 2, 0.5, 1),
        IndexOptions::new(),
        10,
    );
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "dfs"))
        .unwrap();
    std::fs::remove_file(&seg).unwrap();
    let e = Index::open(&dir).unwrap_err().to_string();
    assert!(
        e.contains(seg.file_name().unwrap().to_str().unwrap()) && e.contains("does not exist"),
        "{e}"
    );
}

/// The whitening a recipe names lives beside the index as `<id>.whitening`: written by the
/// writer before the first commit, read by `Index::whitening`, checked by `verify`.
#[test]
fn whitening_companion_file() {
    use deepfactor::descriptor::Whitening;
    use deepfactor::linalg::Matrix;
    use deepfactor::WhiteningRef;
    let tmp = super::tempdir();
    let dim = 4;
    let x = Matrix::from_vec(
        5,
        dim,
        (0..20).map(|i| ((i * 7) % 11) as f32 / 3.0).collect(),
    )
    .unwrap();
    let w = Whitening::learner("companion-test", 5).learn(&x).unwrap();
    let mut r = recipe(dim);
    r.whitening = Some(WhiteningRef {
        id: w.id().to_string(),
        power: 0.5,
    });
    let dir = tmp.path().join("ix");
    // A recipe naming a whitening needs it, and the right one.
    let e = IndexWriter::create(&dir, r.clone(), IndexOptions::new()).unwrap_err();
    assert!(e.to_string().contains(w.id()), "{e}");
    let other = Whitening::learner("other", 5)
        .shrinkage(deepfactor::descriptor::Shrinkage::Fixed(0.5))
        .learn(&x)
        .unwrap();
    assert!(
        IndexWriter::create_with_whitening(&dir, r.clone(), IndexOptions::new(), Some(&other))
            .is_err()
    );
    assert!(!Index::exists(&dir));
    let mut wr =
        IndexWriter::create_with_whitening(&dir, r.clone(), IndexOptions::new(), Some(&w)).unwrap();
    wr.add(&r, image_for(0, dim, false)).unwrap();
    wr.commit().unwrap();
    drop(wr);
    assert!(Index::exists(&dir));
    let companion = dir.join(format!("{}.whitening", w.id()));
    assert!(companion.is_file());
    let ix = Index::open(&dir).unwrap();
    assert_eq!(ix.whitening().unwrap().unwrap().id(), w.id());
    ix.verify().unwrap();
    // A writer reopening the index keeps the file; a missing one is named.
    IndexWriter::open(&dir).unwrap().commit().unwrap();
    assert!(companion.is_file());
    std::fs::remove_file(&companion).unwrap();
    let e = ix.verify().unwrap_err().to_string();
    assert!(e.contains(".whitening") && e.contains("missing"), "{e}");
    // An index without whitening has none.
    let plain = tmp.path().join("plain");
    IndexWriter::create(&plain, recipe(dim), IndexOptions::new()).unwrap();
    assert!(Index::open(&plain).unwrap().whitening().unwrap().is_none());
}

/// A commit that fails after its new segment was written and read back (here: the manifest
/// cannot be created) leaves every add pending — ids, metadata, factors, descriptors as
/// stored — although the writer freed them before reading the segment back; the next
/// commit stores them.
#[test]
fn a_commit_failing_after_its_segment_keeps_the_adds_pending() {
    let dim = 40;
    for enc in [VectorEncoding::F32, VectorEncoding::F16] {
        let tmp = super::tempdir();
        let dir = tmp.path().join("ix");
        let r = recipe(dim);
        // Graphs from 32 images on: the failed commit also built one.
        let mut w =
            IndexWriter::create(&dir, r.clone(), small_options().vector_encoding(enc)).unwrap();
        for id in 0..5 {
            w.add(&r, image_for(id, dim, id % 2 == 0)).unwrap();
        }
        w.commit().unwrap();
        for id in 5..45 {
            w.add(&r, image_for(id, dim, id % 3 != 0)).unwrap();
        }
        // Block the next manifest: a directory where its file must go.
        let next = w.index().generation() + 1;
        let blocker = dir.join(format!("manifest-{next:016x}.dfm"));
        std::fs::create_dir(&blocker).unwrap();
        assert!(w.commit().is_err(), "{enc:?}: the commit should fail");
        assert_eq!(w.pending_adds(), 40, "{enc:?}");
        assert_eq!(w.index().len(), 5);
        std::fs::remove_dir(&blocker).unwrap();
        w.commit().unwrap();
        drop(w);
        for ix in open_both(&dir) {
            assert_eq!(ix.len(), 45);
            ix.verify().unwrap();
            for id in 5..45u64 {
                assert_eq!(ix.document(id).unwrap().unwrap().meta, meta_for(id));
                let want: Vec<f32> = vector_for(id, dim)
                    .into_iter()
                    .map(|x| match enc {
                        VectorEncoding::F32 => x,
                        VectorEncoding::F16 => half::f16::from_f32(x).to_f32(),
                    })
                    .collect();
                assert_eq!(ix.descriptor(id).unwrap().unwrap(), want, "{enc:?} {id}");
                assert_eq!(
                    ix.factors(id).unwrap(),
                    (id % 3 != 0).then(|| factors_for(id))
                );
            }
            // The graph segment answers like exact search for its own rows.
            let q = vector_for(20, dim);
            let hits = ix
                .search(&r, &q, &SearchOptions::new().k(1).mode(SearchMode::Hnsw))
                .unwrap();
            assert_eq!(hits[0].id, 20);
        }
    }
}
