//! Factor vectors (format 2): they round-trip, follow adds, deletes and merges, are searched
//! exactly and through their graph, find a small planted object the global descriptor
//! misses, mix scores as the formula says, and an index of format 1 says it lacks them.

use super::{meta_for, normalize, recipe, small_options, tempdir};
use deepfactor::index::{
    lift_standardized, mix_standardized, CropCheck, CropView, FactorAggregation, FactorSearch,
    Index, IndexWriter, NewImage, QueryFactor, RegionalHit, SearchMode, SearchOptions,
    StoredFactors,
};
use deepfactor::linalg::Matrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 16;
const CHANNELS: usize = 24;
const K: usize = 4;

fn random_unit(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    normalize((0..n).map(|_| rng.random::<f32>() - 0.5).collect())
}

fn random_concept(rng: &mut ChaCha8Rng) -> Vec<f32> {
    // Concepts are non-negative (NMF) and sparse: a few channels each.
    let mut c: Vec<f32> = (0..CHANNELS)
        .map(|_| {
            if rng.random::<f32>() < 0.2 {
                rng.random::<f32>()
            } else {
                0.0
            }
        })
        .collect();
    let at = rng.random_range(0..CHANNELS);
    c[at] += 0.5;
    c
}

/// Factors with the given concept rows (K × CHANNELS) and flat heatmaps over 2 × 2 cells.
fn factors(concepts: &[Vec<f32>]) -> StoredFactors {
    let k = concepts.len();
    let v: Vec<f32> = concepts.iter().flatten().copied().collect();
    let u: Vec<f32> = (0..4 * k).map(|i| 0.1 + (i % 5) as f32 * 0.1).collect();
    StoredFactors::quantize(
        &Matrix::from_vec(k, CHANNELS, v).unwrap(),
        &Matrix::from_vec(4, k, u).unwrap(),
        2,
        2,
    )
    .unwrap()
}

fn unit(v: &[f32]) -> Vec<f32> {
    normalize(v.to_vec())
}

/// A collection of `n` images with random descriptors and random factors; image `planted`
/// also shows `object` (one of its factors is the object's concept), while its global
/// descriptor is the opposite of `query` (a small object hardly moves a global descriptor).
struct World {
    images: Vec<(Vec<f32>, Vec<Vec<f32>>)>,
    query: Vec<f32>,
    object: Vec<f32>,
    planted: u64,
}

fn world(n: usize, seed: u64) -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let query = random_unit(&mut rng, DIM);
    let object = random_concept(&mut rng);
    let planted = (n / 3) as u64;
    let images = (0..n as u64)
        .map(|id| {
            let mut concepts: Vec<Vec<f32>> = (0..K).map(|_| random_concept(&mut rng)).collect();
            let global = if id == planted {
                // The object is one factor among K, slightly changed by its new scene.
                concepts[2] = object
                    .iter()
                    .map(|x| x + 0.05 * rng.random::<f32>())
                    .collect();
                normalize(query.iter().map(|x| -x).collect())
            } else {
                random_unit(&mut rng, DIM)
            };
            (global, concepts)
        })
        .collect();
    World {
        images,
        query,
        object,
        planted,
    }
}

fn write(dir: &std::path::Path, w: &World, commit_every: usize) -> IndexWriter {
    let r = recipe(DIM);
    let mut iw = IndexWriter::create(dir, r.clone(), small_options()).unwrap();
    for (id, (g, c)) in w.images.iter().enumerate() {
        iw.add(
            &r,
            NewImage {
                meta: meta_for(id as u64),
                descriptor: g.clone(),
                factors: Some(factors(c)),
            },
        )
        .unwrap();
        if (id + 1) % commit_every == 0 {
            iw.commit().unwrap();
        }
    }
    iw.commit().unwrap();
    iw
}

fn rank_of(ids: &[u64], id: u64) -> Option<usize> {
    ids.iter().position(|&x| x == id)
}

/// The query factors of a region around the object: the object's concept and one unrelated
/// concept (a region also catches some background).
fn query_factors(w: &World, seed: u64) -> Vec<QueryFactor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    vec![
        QueryFactor {
            factor: 1,
            concept: w.object.clone(),
        },
        QueryFactor {
            factor: 5,
            concept: random_concept(&mut rng),
        },
    ]
}

#[test]
fn factor_vectors_round_trip() {
    let tmp = tempdir();
    let w = world(60, 1);
    drop(write(tmp.path(), &w, 25));
    #[allow(unsafe_code)]
    // SAFETY: nobody modifies the files of this private directory while they are mapped.
    let mapped = unsafe { Index::open_mmap(tmp.path()) }.unwrap();
    for ix in [Index::open(tmp.path()).unwrap(), mapped] {
        ix.verify().unwrap();
        assert!(ix.has_factor_vectors());
        assert_eq!(ix.factor_vectors(), 60 * K);
        assert!(ix.segments().iter().all(|s| s.format_version == 2));
        // Each image's own concept finds that image and factor, with cosine 1 (f16).
        for id in [0u64, 17, 59] {
            let (g, c) = &w.images[id as usize];
            for (f, concept) in c.iter().enumerate() {
                let q = [QueryFactor {
                    factor: 7,
                    concept: concept.clone(),
                }];
                let hits = ix
                    .search_factors(
                        &recipe(DIM),
                        g,
                        &q,
                        &SearchOptions::new().k(3).mode(SearchMode::Exact),
                        &FactorSearch::new().weight(1.0),
                    )
                    .unwrap();
                assert_eq!(hits[0].id, id);
                let m = hits[0].matches[0];
                assert_eq!((m.query_factor, m.image_factor), (7, f));
                assert!((m.score - 1.0).abs() < 2e-3, "{m:?}");
                // The stored concept and the factor vector agree.
                let stored = ix.factors(id).unwrap().unwrap().concept(f).unwrap();
                let cos: f32 = unit(&stored)
                    .iter()
                    .zip(unit(concept))
                    .map(|(a, b)| a * b)
                    .sum();
                assert!((cos - 1.0).abs() < 2e-3);
            }
        }
    }
}

#[test]
fn planted_object_found_only_through_factor_vectors() {
    let tmp = tempdir();
    let w = world(400, 2);
    drop(write(tmp.path(), &w, 150));
    let ix = Index::open(tmp.path()).unwrap();
    let r = recipe(DIM);
    let qf = query_factors(&w, 3);
    // Global search: the planted image is at the very bottom.
    let global: Vec<u64> = ix
        .search(
            &r,
            &w.query,
            &SearchOptions::new().k(400).mode(SearchMode::Exact),
        )
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert!(
        rank_of(&global, w.planted).unwrap() > 300,
        "global finds it"
    );
    // Factor-level search: first, exactly and through the graphs (the factor graph alone
    // brings it into the shortlist: the global shortlist does not hold it).
    for (mode, global_shortlist) in [(SearchMode::Exact, 200), (SearchMode::Hnsw, 20)] {
        let fs = FactorSearch::new().global_shortlist(global_shortlist);
        let hits = ix
            .search_factors(
                &r,
                &w.query,
                &qf,
                &SearchOptions::new().k(10).mode(mode),
                &fs,
            )
            .unwrap();
        assert_eq!(hits[0].id, w.planted, "{mode:?}: {hits:?}");
        let m = hits[0].matches[0];
        assert_eq!((m.query_factor, m.image_factor), (1, 2));
        assert!(m.score > 0.9, "{m:?}");
        assert_eq!(hits[0].matches.len(), 2);
    }
    // λ = 0 is the global ranking again.
    let hits = ix
        .search_factors(
            &r,
            &w.query,
            &qf,
            &SearchOptions::new().k(400).mode(SearchMode::Exact),
            &FactorSearch::new().weight(0.0),
        )
        .unwrap();
    let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    assert_eq!(ids, global);
}

#[test]
fn graph_search_matches_exact_ranking() {
    let tmp = tempdir();
    let w = world(300, 4);
    drop(write(tmp.path(), &w, 100));
    let ix = Index::open(tmp.path()).unwrap();
    assert!(ix.segments().iter().all(|s| s.format_version == 2));
    let r = recipe(DIM);
    let qf = query_factors(&w, 5);
    let run = |mode| {
        ix.search_factors(
            &r,
            &w.query,
            &qf,
            &SearchOptions::new().k(10).mode(mode),
            &FactorSearch::new(),
        )
        .unwrap()
    };
    let exact = run(SearchMode::Exact);
    let graph = run(SearchMode::Hnsw);
    // Same standardization (a fixed sample), so the same scores for the images both find;
    // the graphs' shortlists hold the exact top 10.
    assert_eq!(
        exact.iter().map(|h| h.id).collect::<Vec<_>>(),
        graph.iter().map(|h| h.id).collect::<Vec<_>>()
    );
    for (a, b) in exact.iter().zip(&graph) {
        assert_eq!(a.score, b.score);
    }
}

/// The mixed scores are the formula's over the whole database (the sample covers it), from
/// the stored descriptors and factors, computed here by hand.
#[test]
fn mixed_scores_follow_the_formula() {
    let tmp = tempdir();
    let w = world(50, 6);
    drop(write(tmp.path(), &w, 20));
    let ix = Index::open(tmp.path()).unwrap();
    let r = recipe(DIM);
    let qf = query_factors(&w, 7);
    for agg in [FactorAggregation::Best, FactorAggregation::Best3] {
        let fs = FactorSearch::new().aggregation(agg).weight(0.6);
        let hits = ix
            .search_factors(
                &r,
                &w.query,
                &qf,
                &SearchOptions::new().k(50).mode(SearchMode::Exact),
                &fs,
            )
            .unwrap();
        let mut by_hand: Vec<(f32, Vec<f32>)> = Vec::new();
        for id in 0..50u64 {
            let d = ix.descriptor(id).unwrap().unwrap();
            let g: f32 = d.iter().zip(&w.query).map(|(a, b)| a * b).sum();
            let f = ix.factors(id).unwrap().unwrap();
            let best: Vec<f32> = qf
                .iter()
                .map(|q| {
                    let q = unit(&q.concept);
                    (0..f.k())
                        .map(|i| {
                            let c = unit(&f.concept(i).unwrap());
                            c.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>()
                        })
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect();
            by_hand.push((g, best));
        }
        let want = mix_standardized(&by_hand, agg, 0.6);
        for h in &hits {
            let i = h.id as usize;
            assert!(
                (h.score - want[i]).abs() < 1e-2,
                "{agg}: {} vs {}",
                h.score,
                want[i]
            );
            assert!((h.global - by_hand[i].0).abs() < 1e-5);
            assert!((h.factor - agg.aggregate(&by_hand[i].1)).abs() < 1e-2);
        }
        // A sample smaller than the database estimates the same statistics roughly.
        let sampled = ix
            .search_factors(
                &r,
                &w.query,
                &qf,
                &SearchOptions::new().k(5).mode(SearchMode::Exact),
                &fs.standardize_sample(25),
            )
            .unwrap();
        assert_eq!(sampled[0].id, hits[0].id);
    }
}

/// The crop check: an image that shows the region's cut-out as its whole view (its global
/// descriptor and its factors are the cut-out's) but hardly the region's kept factors ranks
/// low by the region alone and first with the check; every score is the formula's over the
/// whole database, images below the outlier level keep their region score, the graph finds
/// the same leader, and bad settings are refused.
#[test]
fn crop_check_lifts_the_cut_outs_view() {
    let tmp = tempdir();
    let mut w = world(60, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let cut_vector = random_unit(&mut rng, DIM);
    let cut_concepts: Vec<Vec<f32>> = (0..K).map(|_| random_concept(&mut rng)).collect();
    let view = 40u64;
    w.images[view as usize] = (cut_vector.clone(), cut_concepts.clone());
    drop(write(tmp.path(), &w, 25));
    let ix = Index::open(tmp.path()).unwrap();
    let r = recipe(DIM);
    let qf = query_factors(&w, 7);
    let cf: Vec<QueryFactor> = cut_concepts
        .iter()
        .enumerate()
        .map(|(i, c)| QueryFactor {
            factor: i,
            concept: c.clone(),
        })
        .collect();
    let fs = FactorSearch::new();
    let exact = SearchOptions::new().k(60).mode(SearchMode::Exact);
    let region = ix.search_factors(&r, &w.query, &qf, &exact, &fs).unwrap();
    let cut = ix
        .search_factors(&r, &cut_vector, &cf, &exact, &fs)
        .unwrap();
    let check = CropCheck::new();
    let crop = CropView {
        vector: &cut_vector,
        factors: &cf,
    };
    let lifted = ix
        .search_regional(&r, &w.query, &qf, Some((crop, &check)), &exact, &fs)
        .unwrap();
    let by_id = |hits: &[RegionalHit]| {
        let mut v = vec![0f32; 60];
        for h in hits {
            v[h.id as usize] = h.score;
        }
        v
    };
    let (m, c) = (by_id(&region), by_id(&cut));
    let want = lift_standardized(&m, &c, &check);
    let ids = |hits: &[RegionalHit]| hits.iter().map(|h| h.id).collect::<Vec<_>>();
    assert!(
        rank_of(&ids(&region), view).unwrap() > 3,
        "{:?}",
        ids(&region)
    );
    assert_eq!(lifted[0].id, view, "{:?}", ids(&lifted));
    let mut passed = 0;
    for h in &lifted {
        let i = h.id as usize;
        let zc = h.crop.expect("every hit carries its cut-out score");
        assert!(
            (h.score - want[i]).abs() < 1e-3 * (1.0 + want[i].abs()),
            "{}: {} vs {}",
            h.id,
            h.score,
            want[i]
        );
        if zc > check.get_outlier() {
            passed += 1;
        } else {
            assert!(
                (h.score - m[i]).abs() < 1e-5,
                "{}: {} vs {}",
                h.id,
                h.score,
                m[i]
            );
        }
    }
    assert_eq!(passed, 1, "only the cut-out's view stands out");
    // Without the check the hits carry no cut-out score.
    assert!(region.iter().all(|h| h.crop.is_none()));
    // The graph finds the same leader (the cut-out's shortlists are candidates too).
    let graph = ix
        .search_regional(
            &r,
            &w.query,
            &qf,
            Some((crop, &check)),
            &SearchOptions::new().k(3).mode(SearchMode::Hnsw),
            &fs.global_shortlist(5).factor_shortlist(5),
        )
        .unwrap();
    assert_eq!(graph[0].id, view);
    // Bad settings and a cut-out of the wrong length are refused.
    assert!(ix
        .search_regional(
            &r,
            &w.query,
            &qf,
            Some((crop, &check.weight(-1.0))),
            &exact,
            &fs
        )
        .is_err());
    let short = [QueryFactor {
        factor: 0,
        concept: vec![1.0; 3],
    }];
    let bad = CropView {
        vector: &cut_vector,
        factors: &short,
    };
    assert!(ix
        .search_regional(&r, &w.query, &qf, Some((bad, &check)), &exact, &fs)
        .is_err());
}

#[test]
fn adds_deletes_and_merges_keep_factor_vectors() {
    let tmp = tempdir();
    let w = world(90, 8);
    // Commits of 10 with merge factor 3: several merges happen.
    let mut iw = write(tmp.path(), &w, 10);
    let r = recipe(DIM);
    let qf = query_factors(&w, 9);
    let search = |ix: &Index| {
        ix.search_factors(
            &r,
            &w.query,
            &qf,
            &SearchOptions::new().k(5),
            &FactorSearch::new(),
        )
        .unwrap()
    };
    let ix = Index::open(tmp.path()).unwrap();
    ix.verify().unwrap();
    assert_eq!(ix.factor_vectors(), 90 * K);
    assert_eq!(search(&ix)[0].id, w.planted);
    iw.delete(w.planted).unwrap();
    iw.commit().unwrap();
    let ix = Index::open(tmp.path()).unwrap();
    assert!(search(&ix).iter().all(|h| h.id != w.planted));
    iw.compact().unwrap();
    let ix = Index::open(tmp.path()).unwrap();
    ix.verify().unwrap();
    assert_eq!(ix.factor_vectors(), 89 * K);
    assert!(search(&ix).iter().all(|h| h.id != w.planted));
}

#[test]
fn bad_query_factors_and_options_are_refused() {
    let tmp = tempdir();
    let w = world(10, 10);
    drop(write(tmp.path(), &w, 10));
    let ix = Index::open(tmp.path()).unwrap();
    let r = recipe(DIM);
    let opts = SearchOptions::new().k(3);
    let short = [QueryFactor {
        factor: 0,
        concept: vec![1.0; CHANNELS - 1],
    }];
    let e = ix
        .search_factors(&r, &w.query, &short, &opts, &FactorSearch::new())
        .unwrap_err();
    assert!(e.to_string().contains("values"), "{e}");
    let nan = [QueryFactor {
        factor: 0,
        concept: vec![f32::NAN; CHANNELS],
    }];
    assert!(ix
        .search_factors(&r, &w.query, &nan, &opts, &FactorSearch::new())
        .is_err());
    assert!(ix
        .search_factors(&r, &w.query, &[], &opts, &FactorSearch::new().weight(-0.1))
        .is_err());
}
