//! Evaluation: ground-truth loaders, the official AP and protocols, localization and
//! segmentation metrics, the results record and the `eval` command.
//!
//! Expected numbers are computed by hand from the published definitions (the derivations are
//! in the comments), never produced by the code under test.

use crate::common::{repo_root, shared_data};
use deepfactor::eval::{
    average_precision, average_precision_at_k, corloc, evaluate, evaluate_localization, jaccard,
    load_image_list, rank_by_score, BoxHandling, BoxPrediction, CosegGroundTruth, GroundTruth,
    GroundTruthKind, Mask, PartMatcher, Protocol, Provenance, Rankings, Relevance, ResultsRecord,
    Setup,
};
use deepfactor::eval::{junk_free_ranks, precision_at_k};
use deepfactor::{BBox, Error};
use serde_pickle::value::{HashableValue, Value};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/eval")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn assert_close(a: f64, b: f64) {
    assert!(close(a, b), "{a} != {b}");
}

// ---------------------------------------------------------------------------------------------
// Average precision, from the definitions

#[test]
fn ap_with_junk_in_the_middle_equals_ap_without_it() {
    // P J N P: junk skipped → P N P, positives at junk-free ranks 0 and 2 of 2:
    // ½·(1 + 1)/2 + ½·(1/2 + 2/3)/2 = 1/2 + 7/24 = 19/24.
    let with_junk = ["p1", "j", "n", "p2"];
    let without = ["p1", "n", "p2"];
    let pos = ["p1", "p2"];
    let a = average_precision(&with_junk, &pos, &["j"]).unwrap();
    assert_close(a, 19.0 / 24.0);
    assert_close(a, average_precision(&without, &pos, &[]).unwrap());
    // Counting the junk item as a negative instead lowers AP: ranks 0 and 3 →
    // 1/2 + ½·(1/3 + 2/4)/2 = 1/2 + 5/24.
    let as_negative = average_precision(&with_junk, &pos, &[]).unwrap();
    assert_close(as_negative, 17.0 / 24.0);
}

#[test]
fn ap_with_all_junk_rankings() {
    // Only junk ranked: the positive is never retrieved → 0.
    assert_close(
        average_precision(&["j1", "j2"], &["p"], &["j1", "j2"]).unwrap(),
        0.0,
    );
    // All junk, then the positive: it is first once junk is skipped → 1.
    assert_close(
        average_precision(&["j1", "j2", "j3", "p"], &["p"], &["j1", "j2", "j3"]).unwrap(),
        1.0,
    );
}

#[test]
fn ap_without_positives_is_undefined() {
    assert_eq!(average_precision(&["a", "b"], &[] as &[&str], &["a"]), None);
    assert_eq!(
        average_precision_at_k(&["a", "b"], &[] as &[&str], &[], 5),
        None
    );
}

#[test]
fn ap_matches_trapezoids_not_plain_precision_sum() {
    // Single positive at rank r (0-based): (r/r·0 + 1/(r+1))/2 → 1/(2(r+1)) for r > 0.
    for r in 1..6usize {
        let mut ranking: Vec<String> = (0..r).map(|i| format!("n{i}")).collect();
        ranking.push("p".into());
        let ap = average_precision(&ranking, &["p".to_string()], &[]).unwrap();
        assert_close(ap, 1.0 / (2.0 * (r as f64 + 1.0)));
    }
    // P N P: trapezoids give 19/24, the non-interpolated mean of precisions (1 + 2/3)/2 = 5/6.
    let ap = average_precision(&["a", "x", "b"], &["a", "b"], &[]).unwrap();
    assert_close(ap, 19.0 / 24.0);
    assert!(!close(ap, 5.0 / 6.0));
    // Perfect ranking → 1; a positive missing from the ranking caps AP at its recall.
    assert_close(
        average_precision(&["a", "b", "c"], &["a", "b"], &[]).unwrap(),
        1.0,
    );
    assert_close(
        average_precision(&["a", "x"], &["a", "b"], &[]).unwrap(),
        0.5,
    );
}

#[test]
fn ap_with_tied_scores_is_deterministic() {
    // Items 0 (negative) and 1 (the one positive) tie at 0.5; item 2 (negative) scores 0.1.
    // Ties break by index: order 0, 1, 2 → the positive at rank 1: (0/1 + 1/2)/2 = 1/4.
    let scores = [0.5f32, 0.5, 0.1];
    let order = rank_by_score(&scores);
    assert_eq!(order, vec![0, 1, 2]);
    assert_close(average_precision(&order, &[1], &[]).unwrap(), 0.25);
    // The other order of the tie would score 1: the tie-break decides, so it is fixed.
    assert_close(average_precision(&[1, 0, 2], &[1], &[]).unwrap(), 1.0);
    for _ in 0..3 {
        assert_eq!(rank_by_score(&scores), order);
    }
    // Two positives among four: 0.9 (neg), 0.5 (neg), 0.5 (pos), 0.1 (pos) → ranks 2, 3:
    // ½·(0/2 + 1/3)/2 + ½·(1/3 + 2/4)/2 = 1/12 + 5/24 = 7/24.
    let order = rank_by_score(&[0.9, 0.5, 0.5, 0.1]);
    assert_close(average_precision(&order, &[2, 3], &[]).unwrap(), 7.0 / 24.0);
}

#[test]
fn precision_at_k_and_ap_at_k_by_hand() {
    // Junk-free ranks 0, 2, 5 (1-based 1, 3, 6).
    let ranks = junk_free_ranks(
        &["p1", "n", "j", "p2", "n2", "n3", "p3"],
        &["p1", "p2", "p3"],
        &["j"],
    );
    assert_eq!(ranks, vec![0, 2, 5]);
    assert_close(precision_at_k(&ranks, 1), 1.0);
    assert_close(precision_at_k(&ranks, 5), 2.0 / 5.0);
    assert_close(precision_at_k(&ranks, 10), 3.0 / 6.0);
    // AP@k: P N P N P with 3 positives.
    let r = ["a", "x", "b", "y", "c"];
    let pos = ["a", "b", "c"];
    assert_close(average_precision_at_k(&r, &pos, &[], 2).unwrap(), 1.0 / 2.0);
    assert_close(
        average_precision_at_k(&r, &pos, &[], 3).unwrap(),
        (1.0 + 2.0 / 3.0) / 3.0,
    );
    assert_close(
        average_precision_at_k(&r, &pos, &[], 30).unwrap(),
        (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0,
    );
}

// ---------------------------------------------------------------------------------------------
// Oxford layout

#[test]
fn oxford_fixture_loads() {
    let gt = GroundTruth::load(fixtures().join("oxford")).unwrap();
    assert_eq!(gt.name(), "oxford");
    assert_eq!(gt.kind(), GroundTruthKind::Classic);
    assert_eq!(gt.images().len(), 10);
    let names: Vec<&str> = gt.queries().iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["all_souls_1", "ashmolean_1"]);
    let q = gt.query("all_souls_1").unwrap();
    // The oxc1_ prefix is stripped.
    assert_eq!(q.image, "all_souls_000001");
    assert_eq!(q.bbox, Some(BBox::new(10.5, 20.0, 200.25, 300.0).unwrap()));
    let idx = |n: &str| gt.image_index(n).unwrap();
    assert_eq!(
        q.relevance,
        Relevance::Classic {
            good: vec![idx("all_souls_000001"), idx("all_souls_000002")],
            ok: vec![idx("all_souls_000003")],
            junk: vec![idx("all_souls_000004")],
        }
    );
    assert_eq!(
        q.boxes,
        vec![
            (
                idx("all_souls_000002"),
                BBox::new(5.0, 5.0, 100.0, 100.0).unwrap()
            ),
            (
                idx("all_souls_000003"),
                BBox::new(0.5, 1.5, 60.0, 80.0).unwrap()
            ),
        ]
    );
    let a = gt.query("ashmolean_1").unwrap();
    assert_eq!(a.image, "ashmolean_000001");
    assert!(a.boxes.is_empty());
    let (pos, junk) = a.relevance.standard();
    assert_eq!((pos.len(), junk.len()), (2, 1));
}

#[test]
fn classic_protocol_on_the_oxford_fixture() {
    let gt = GroundTruth::load(fixtures().join("oxford")).unwrap();
    let r = Rankings::load(fixtures().join("rankings_oxford.txt")).unwrap();
    let e = evaluate(&gt, &r, Protocol::Classic).unwrap();
    // all_souls_1: J P N P N P → junk-free P N P N P, ranks 0, 2, 4 of 3 positives:
    // (1/3)·[(1+1)/2 + (1/2+2/3)/2 + (2/4+3/5)/2] = 1/3 + 7/36 + 11/60 = 32/45.
    // ashmolean_1: P J N P → P N P, ranks 0, 2 of 2: 19/24.
    assert_eq!(e.queries.len(), 2);
    assert_close(e.queries[0].ap.unwrap(), 100.0 * 32.0 / 45.0);
    assert_close(e.queries[1].ap.unwrap(), 100.0 * 19.0 / 24.0);
    assert_close(e.map, 100.0 * (32.0 / 45.0 + 19.0 / 24.0) / 2.0);
    assert_eq!(e.evaluated, 2);
    assert!(e.revisited.is_none());

    // mAP@k: junk-free all_souls_1 = P N P N P (3 positives), ashmolean_1 = P N P (2).
    // k = 2: (1/2 + 1/2)/2.  k = 3: ((1 + 2/3)/3 + (1 + 2/3)/2)/2.
    let e2 = evaluate(&gt, &r, Protocol::MapAt(2)).unwrap();
    assert_close(e2.map, 50.0);
    let e3 = evaluate(&gt, &r, Protocol::MapAt(3)).unwrap();
    assert_close(
        e3.map,
        100.0 * ((5.0 / 3.0) / 3.0 + (5.0 / 3.0) / 2.0) / 2.0,
    );

    // The revisited protocol needs revisited ground truth.
    assert!(evaluate(&gt, &r, Protocol::Revisited).is_err());
}

#[test]
fn rankings_must_match_the_ground_truth() {
    let gt = GroundTruth::load(fixtures().join("oxford")).unwrap();
    let p = Path::new("r.txt");
    let missing = Rankings::parse("all_souls_1 all_souls_000001\n", p).unwrap();
    let e = evaluate(&gt, &missing, Protocol::Classic)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no ranking for query \"ashmolean_1\""), "{e}");
    let extra =
        Rankings::parse("all_souls_1\nashmolean_1\nbodleian_1 all_souls_000001\n", p).unwrap();
    let e = evaluate(&gt, &extra, Protocol::Classic)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bodleian_1"), "{e}");
    let unknown = Rankings::parse("all_souls_1 all_souls_000001.jpg\nashmolean_1\n", p).unwrap();
    let e = evaluate(&gt, &unknown, Protocol::Classic)
        .unwrap_err()
        .to_string();
    assert!(e.contains("all_souls_000001.jpg"), "{e}");
    // Empty rankings are allowed and score 0.
    let empty = Rankings::parse("all_souls_1\nashmolean_1\n", p).unwrap();
    assert_close(evaluate(&gt, &empty, Protocol::Classic).unwrap().map, 0.0);
}

/// Copies a fixture folder into a temporary directory to damage it.
fn scratch_copy(src: &Path) -> tempfile::TempDir {
    fn copy(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let p = entry.unwrap().path();
            let to = dst.join(p.file_name().unwrap());
            if p.is_dir() {
                copy(&p, &to);
            } else {
                std::fs::copy(&p, &to).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(src, &dir.path().join("oxford"));
    dir
}

/// Loads a damaged copy of the Oxford fixture and returns the ground-truth error.
fn damaged(edit: impl FnOnce(&Path)) -> (PathBuf, Option<usize>, String) {
    let dir = scratch_copy(&fixtures().join("oxford"));
    let root = dir.path().join("oxford");
    edit(&root);
    match GroundTruth::load(&root) {
        Err(Error::GroundTruth { path, line, reason }) => {
            let rel = path.strip_prefix(&root).unwrap_or(&path).to_path_buf();
            (rel, line, reason)
        }
        other => panic!("expected a ground-truth error, got {other:?}"),
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    std::fs::write(root.join(rel), text).unwrap();
}

#[test]
fn loader_refuses_a_missing_file() {
    let (path, line, reason) =
        damaged(|r| std::fs::remove_file(r.join("gt/ashmolean_1_ok.txt")).unwrap());
    assert_eq!(path, Path::new("gt/ashmolean_1_ok.txt"));
    assert_eq!(line, None);
    assert!(reason.contains("missing file"), "{reason}");

    let (path, _, reason) = damaged(|r| std::fs::remove_dir_all(r.join("jpg")).unwrap());
    assert_eq!(path, Path::new("jpg"));
    assert!(reason.contains("missing image folder"), "{reason}");

    // queries.txt naming a query that has no files.
    let (path, _, reason) = damaged(|r| write(r, "queries.txt", "all_souls_1\nbodleian_1\n"));
    assert_eq!(path, Path::new("gt/bodleian_1_query.txt"));
    assert!(reason.contains("missing file"), "{reason}");
}

#[test]
fn loader_refuses_inverted_boxes() {
    let (path, line, reason) = damaged(|r| {
        write(
            r,
            "gt/ashmolean_1_query.txt",
            "ashmolean_000001 50 0 10 60\n",
        )
    });
    assert_eq!(path, Path::new("gt/ashmolean_1_query.txt"));
    assert_eq!(line, Some(1));
    assert!(reason.contains("x2 < x1"), "{reason}");
    let (path, line, reason) = damaged(|r| {
        write(
            r,
            "gt/all_souls_1_boxes.txt",
            "all_souls_000002 5 5 100 100\n\nall_souls_000003 0 80 60 1.5\n",
        )
    });
    assert_eq!(path, Path::new("gt/all_souls_1_boxes.txt"));
    assert_eq!(line, Some(3));
    assert!(reason.contains("y2 < y1"), "{reason}");
    let (_, line, reason) =
        damaged(|r| write(r, "gt/ashmolean_1_query.txt", "ashmolean_000001 0 0 50\n"));
    assert_eq!(line, Some(1));
    assert!(reason.contains("found 4 fields"), "{reason}");
}

#[test]
fn loader_refuses_unknown_images() {
    let (path, line, reason) = damaged(|r| {
        write(
            r,
            "gt/all_souls_1_good.txt",
            "all_souls_000001\nall_souls_000002\nall_souls_000099\n",
        )
    });
    assert_eq!(path, Path::new("gt/all_souls_1_good.txt"));
    assert_eq!(line, Some(3));
    assert!(reason.contains("all_souls_000099"), "{reason}");
    let (path, line, _) = damaged(|r| {
        write(
            r,
            "gt/ashmolean_1_query.txt",
            "oxc1_ashmolean_000009 0 0 50 60\n",
        )
    });
    assert_eq!(
        (path.as_path(), line),
        (Path::new("gt/ashmolean_1_query.txt"), Some(1))
    );
    let (path, line, _) = damaged(|r| write(r, "gt/all_souls_1_boxes.txt", "nowhere 0 0 1 1\n"));
    assert_eq!(
        (path.as_path(), line),
        (Path::new("gt/all_souls_1_boxes.txt"), Some(1))
    );
}

#[test]
fn loader_refuses_duplicate_entries() {
    // Twice in one list.
    let (path, line, reason) = damaged(|r| {
        write(
            r,
            "gt/all_souls_1_good.txt",
            "all_souls_000001\nall_souls_000002\nall_souls_000001\n",
        )
    });
    assert_eq!(path, Path::new("gt/all_souls_1_good.txt"));
    assert_eq!(line, Some(3));
    assert!(
        reason.contains("duplicate entry") && reason.contains("line 1"),
        "{reason}"
    );
    // In two lists of the same query (good and junk).
    let (path, line, reason) = damaged(|r| {
        write(
            r,
            "gt/all_souls_1_junk.txt",
            "all_souls_000004\nall_souls_000002\n",
        )
    });
    assert_eq!(path, Path::new("gt/all_souls_1_junk.txt"));
    assert_eq!(line, Some(2));
    assert!(reason.contains("all_souls_1_good.txt:2"), "{reason}");
    // A query listed twice in queries.txt.
    let (path, line, _) =
        damaged(|r| write(r, "queries.txt", "all_souls_1\nashmolean_1\nall_souls_1\n"));
    assert_eq!((path.as_path(), line), (Path::new("queries.txt"), Some(3)));
    // Two boxes for one image.
    let (_, line, reason) = damaged(|r| {
        write(
            r,
            "gt/all_souls_1_boxes.txt",
            "all_souls_000002 5 5 100 100\nall_souls_000002 1 1 2 2\n",
        )
    });
    assert_eq!(line, Some(2));
    assert!(reason.contains("duplicate entry"), "{reason}");
    // Two database files with one name.
    let (_, _, reason) = damaged(|r| {
        std::fs::copy(
            r.join("jpg/ashmolean_000004.jpg"),
            r.join("jpg/ashmolean_000004.png"),
        )
        .unwrap();
    });
    assert!(reason.contains("duplicate image name"), "{reason}");
}

#[test]
fn queries_txt_sets_the_order() {
    let dir = scratch_copy(&fixtures().join("oxford"));
    let root = dir.path().join("oxford");
    write(&root, "queries.txt", "ashmolean_1\n\nall_souls_1\n");
    let gt = GroundTruth::load(&root).unwrap();
    let names: Vec<&str> = gt.queries().iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["ashmolean_1", "all_souls_1"]);
    let sub = gt.select(&["all_souls_1"]).unwrap();
    assert_eq!(sub.queries().len(), 1);
    assert!(gt.select(&["nope"]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Revisited pickles

#[test]
fn revisited_pickle_loads() {
    let gt = GroundTruth::load(fixtures().join("revisited/gnd_tiny.pkl")).unwrap();
    assert_eq!(gt.name(), "tiny");
    assert_eq!(gt.kind(), GroundTruthKind::Revisited);
    assert_eq!(gt.images().len(), 12);
    assert_eq!(gt.images()[11], "db_011");
    assert_eq!(gt.queries().len(), 3);
    let b = gt.query("q_b").unwrap();
    assert_eq!(
        b.relevance,
        Relevance::Revisited {
            easy: vec![],
            hard: vec![2, 4, 11],
            junk: vec![6, 7],
        }
    );
    assert_eq!(b.bbox, Some(BBox::new(0.0, 0.0, 64.0, 48.0).unwrap()));
    assert_eq!(
        gt.query("q_c").unwrap().bbox,
        Some(BBox::new(3.25, 4.5, 30.0, 40.0).unwrap())
    );
    // A folder holding one gnd_*.pkl loads the same.
    let via_dir = GroundTruth::load(fixtures().join("revisited")).unwrap();
    assert_eq!(via_dir.queries(), gt.queries());
    // Other pickle protocols give the same ground truth.
    for p in [0, 2, 5] {
        let v = GroundTruth::load(fixtures().join(format!("revisited_variants/gnd_tiny_p{p}.pkl")))
            .unwrap();
        assert_eq!(v.images(), gt.images(), "protocol {p}");
        assert_eq!(v.queries(), gt.queries(), "protocol {p}");
    }
    // A folder with several pickles is ambiguous.
    assert!(GroundTruth::load(fixtures().join("revisited_variants")).is_err());
}

#[test]
fn classic_pickle_loads_as_classic() {
    let gt = GroundTruth::load(fixtures().join("revisited_variants/gnd_tinyclassic.pkl")).unwrap();
    assert_eq!(gt.kind(), GroundTruthKind::Classic);
    let (pos, junk) = gt.query("a").unwrap().relevance.standard();
    assert_eq!((pos, junk), (vec![0, 2], vec![1]));
}

#[test]
fn revisited_protocol_on_the_tiny_pickle() {
    let gt = GroundTruth::load(fixtures().join("revisited/gnd_tiny.pkl")).unwrap();
    let r = Rankings::load(fixtures().join("rankings_revisited.txt")).unwrap();
    let e = evaluate(&gt, &r, Protocol::Revisited).unwrap();
    let rv = e.revisited.as_ref().unwrap();
    let aps = |s: Setup| -> Vec<Option<f64>> {
        rv.setup(s)
            .queries
            .iter()
            .map(|q| q.ap.map(|v| v / 100.0))
            .collect()
    };
    // q_a ranks 1 0 2 5 3 …: easy {0,3}, hard {5}, junk {1}.
    //   E: junk {1,5}: 0 → 0, 3 → 4−2 = 2: AP 19/24; P@1 = 1, P@5 = P@10 = 2/3 (k' = 3).
    //   M: junk {1}: 0 → 0, 5 → 2, 3 → 3: 1/3 + 7/36 + 17/72 = 55/72; P@1 1, P@5 = P@10 = 3/4.
    //   H: junk {1,0,3}: 5 → 3−2 = 1: (0 + 1/2)/2 = 1/4; P@1 0, P@5 = P@10 = 1/2.
    // q_b ranks 6 2 0 4 7 1 3 11 …: easy {}, hard {2,4,11}, junk {6,7}.
    //   E: no positives → left out.
    //   M = H: 2 → 0, 4 → 2, 11 → 7−2 = 5: 1/3 + 7/36 + (2/5 + 1/2)/6 = 61/90;
    //   P@1 1, P@5 2/5, P@10 = 3/6 (k' = 6).
    // q_c ranks 0 9 1 8 …: easy {8}, hard {9}, junk {}.
    //   E: junk {9}: 8 → 2: (0 + 1/3)/2 = 1/6; P@1 0, P@5 = P@10 = 1/3.
    //   M: 9 → 1, 8 → 3: (0 + 1/2)/4 + (1/3 + 1/2)/4 = 1/3; P@1 0, P@5 = P@10 = 2/4.
    //   H: junk {8}: 9 → 1: 1/4; P@1 0, P@5 = P@10 = 1/2.
    let want_e = [Some(19.0 / 24.0), None, Some(1.0 / 6.0)];
    let want_m = [Some(55.0 / 72.0), Some(61.0 / 90.0), Some(1.0 / 3.0)];
    let want_h = [Some(0.25), Some(61.0 / 90.0), Some(0.25)];
    for (setup, want) in [
        (Setup::Easy, want_e),
        (Setup::Medium, want_m),
        (Setup::Hard, want_h),
    ] {
        let got = aps(setup);
        for (g, w) in got.iter().zip(&want) {
            match (g, w) {
                (Some(g), Some(w)) => assert_close(*g, *w),
                (None, None) => {}
                _ => panic!("{setup:?}: got {got:?}, want {want:?}"),
            }
        }
    }
    let map = |s: Setup| rv.setup(s).map.unwrap();
    assert_close(map(Setup::Easy), 100.0 * (19.0 / 24.0 + 1.0 / 6.0) / 2.0); // 47.92
    assert_close(
        map(Setup::Medium),
        100.0 * (55.0 / 72.0 + 61.0 / 90.0 + 1.0 / 3.0) / 3.0,
    ); // 59.17
    assert_close(map(Setup::Hard), 100.0 * (0.25 + 61.0 / 90.0 + 0.25) / 3.0); // 39.26
    let mp = |s: Setup| -> Vec<f64> {
        rv.setup(s)
            .mp_at_k
            .iter()
            .map(|&(_, v)| v.unwrap())
            .collect()
    };
    let ks: Vec<usize> = rv.easy.mp_at_k.iter().map(|&(k, _)| k).collect();
    assert_eq!(ks, [1, 5, 10]);
    let want_mp = [
        (Setup::Easy, [0.5, (2.0 / 3.0 + 1.0 / 3.0) / 2.0, 0.5]),
        (
            Setup::Medium,
            [
                2.0 / 3.0,
                (0.75 + 0.4 + 0.5) / 3.0,
                (0.75 + 0.5 + 0.5) / 3.0,
            ],
        ),
        (Setup::Hard, [1.0 / 3.0, (0.5 + 0.4 + 0.5) / 3.0, 0.5]),
    ];
    for (setup, want) in want_mp {
        for (g, w) in mp(setup).iter().zip(want) {
            assert_close(*g, 100.0 * w);
        }
    }
    // The headline is Medium; so is the classic protocol on revisited ground truth.
    assert_close(e.map, map(Setup::Medium));
    assert_eq!(e.evaluated, 3);
    let c = evaluate(&gt, &r, Protocol::Classic).unwrap();
    assert_close(c.map, map(Setup::Medium));
}

fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (HashableValue::String(k.to_string()), v))
            .collect(),
    )
}

fn ints(v: &[i64]) -> Value {
    Value::List(v.iter().map(|&i| Value::I64(i)).collect())
}

fn names(v: &[&str]) -> Value {
    Value::List(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// Writes a pickle of a revisited ground truth whose one query entry is `entry`, and returns
/// the loader's error text.
fn pickle_error(entry: Value) -> String {
    let top = dict(vec![
        ("imlist", names(&["a", "b", "c"])),
        ("qimlist", names(&["q"])),
        ("gnd", Value::List(vec![entry])),
    ]);
    pickle_error_top(top)
}

fn pickle_error_top(top: Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gnd_bad.pkl");
    let bytes = serde_pickle::value_to_vec(&top, serde_pickle::SerOptions::new()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    match GroundTruth::load(&path) {
        Err(e @ Error::GroundTruth { .. }) => {
            let text = e.to_string();
            assert!(text.contains("gnd_bad.pkl"), "{text}");
            text
        }
        other => panic!("expected a ground-truth error, got {other:?}"),
    }
}

#[test]
fn setup_without_positives_is_undefined_not_zero() {
    // No query has hard positives: Hard's mAP and mP@k are undefined; Easy and Medium count.
    let top = dict(vec![
        ("imlist", names(&["a", "b", "c"])),
        ("qimlist", names(&["q1", "q2"])),
        (
            "gnd",
            Value::List(vec![
                dict(vec![
                    ("easy", ints(&[1])),
                    ("hard", ints(&[])),
                    ("junk", ints(&[0])),
                ]),
                dict(vec![
                    ("easy", ints(&[2])),
                    ("hard", ints(&[])),
                    ("junk", ints(&[])),
                ]),
            ]),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gnd_nohard.pkl");
    std::fs::write(
        &path,
        serde_pickle::value_to_vec(&top, serde_pickle::SerOptions::new()).unwrap(),
    )
    .unwrap();
    let gt = GroundTruth::load(&path).unwrap();
    // q1: a (junk) b → b first: AP 1. q2: a b c → c at rank 2: (0 + 1/3)/2 = 1/6.
    let r = Rankings::parse("q1 a b c\nq2 a b c\n", Path::new("r")).unwrap();
    let e = evaluate(&gt, &r, Protocol::Revisited).unwrap();
    let rv = e.revisited.unwrap();
    assert_eq!(rv.hard.map, None);
    assert!(rv.hard.mp_at_k.iter().all(|&(_, v)| v.is_none()));
    assert!(rv.hard.queries.iter().all(|q| q.ap.is_none()));
    assert_close(rv.easy.map.unwrap(), 100.0 * (1.0 + 1.0 / 6.0) / 2.0);
    assert_close(e.map, rv.medium.map.unwrap());
    // With no positive anywhere, the mean is undefined and evaluation fails.
    let empty = dict(vec![
        ("imlist", names(&["a"])),
        ("qimlist", names(&["q"])),
        (
            "gnd",
            Value::List(vec![dict(vec![
                ("easy", ints(&[])),
                ("hard", ints(&[])),
                ("junk", ints(&[0])),
            ])]),
        ),
    ]);
    std::fs::write(
        &path,
        serde_pickle::value_to_vec(&empty, serde_pickle::SerOptions::new()).unwrap(),
    )
    .unwrap();
    let gt = GroundTruth::load(&path).unwrap();
    let r = Rankings::parse("q a\n", Path::new("r")).unwrap();
    let err = evaluate(&gt, &r, Protocol::Revisited)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mAP is undefined"), "{err}");
}

#[test]
fn pickle_loader_refuses_malformed_ground_truth() {
    let good = |easy: &[i64], hard: &[i64], junk: &[i64], bbx: Value| {
        dict(vec![
            ("easy", ints(easy)),
            ("hard", ints(hard)),
            ("junk", ints(junk)),
            ("bbx", bbx),
        ])
    };
    let bbx = |c: [f64; 4]| Value::List(c.iter().map(|&x| Value::F64(x)).collect());
    // Unknown image: index 3 of a 3-image imlist.
    let e = pickle_error(good(&[0], &[3], &[], bbx([0.0, 0.0, 1.0, 1.0])));
    assert!(e.contains("gnd[0]['hard'][0] = 3"), "{e}");
    // Inverted box.
    let e = pickle_error(good(&[0], &[], &[], bbx([5.0, 0.0, 1.0, 1.0])));
    assert!(e.contains("bbx") && e.contains("x2 < x1"), "{e}");
    // Duplicate entries, within a list and across lists.
    let e = pickle_error(good(&[0, 0], &[], &[], bbx([0.0, 0.0, 1.0, 1.0])));
    assert!(e.contains("duplicate entry"), "{e}");
    let e = pickle_error(good(&[0], &[1], &[1], bbx([0.0, 0.0, 1.0, 1.0])));
    assert!(e.contains("duplicate entry") && e.contains("'junk'"), "{e}");
    // Missing lists and wrong types.
    let e = pickle_error(dict(vec![("easy", ints(&[0]))]));
    assert!(e.contains("no 'hard' list"), "{e}");
    let e = pickle_error(dict(vec![
        ("easy", Value::String("0 1".into())),
        ("hard", ints(&[])),
        ("junk", ints(&[])),
    ]));
    assert!(e.contains("gnd[0]['easy'] should be a list"), "{e}");
    // gnd and qimlist disagree; repeated image names.
    let e = pickle_error_top(dict(vec![
        ("imlist", names(&["a"])),
        ("qimlist", names(&["q", "r"])),
        ("gnd", Value::List(vec![])),
    ]));
    assert!(e.contains("'gnd' has 0 entries"), "{e}");
    let e = pickle_error_top(dict(vec![
        ("imlist", names(&["a", "b", "a"])),
        ("qimlist", names(&["q"])),
        ("gnd", Value::List(vec![good(&[0], &[], &[], Value::None)])),
    ]));
    assert!(
        e.contains("imlist[2]") && e.contains("duplicate entry"),
        "{e}"
    );
    // Not a pickle at all.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gnd_text.pkl");
    std::fs::write(&path, "imlist = [1, 2]\n").unwrap();
    assert!(matches!(
        GroundTruth::load(&path),
        Err(Error::GroundTruth { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Localization, masks, parts

#[test]
fn localization_against_the_boxes_files() {
    let gt = GroundTruth::load(fixtures().join("oxford")).unwrap();
    let pred = |image: &str, b: Option<BBox>| BoxPrediction {
        query: "all_souls_1".into(),
        image: image.into(),
        bbox: b,
    };
    // all_souls_000002: truth (5,5)-(100,100); prediction (5,5)-(100,195) → IoU 1/2 (not > ½).
    // all_souls_000003: missing → 0. all_souls_000005 has no truth → ignored.
    let preds = vec![
        pred("all_souls_000002", BBox::new(5.0, 5.0, 100.0, 195.0).ok()),
        pred("all_souls_000005", BBox::new(0.0, 0.0, 1.0, 1.0).ok()),
    ];
    let e = evaluate_localization(&gt, &preds).unwrap();
    assert_eq!(e.boxes.len(), 2);
    assert_close(e.boxes[0].iou, 0.5);
    assert_eq!(e.missing, 1);
    assert_close(e.mean_iou, 25.0);
    assert_close(e.corloc, 0.0);
    // Exact boxes everywhere → 100 / 100.
    let exact = vec![
        pred("all_souls_000002", BBox::new(5.0, 5.0, 100.0, 100.0).ok()),
        pred("all_souls_000003", BBox::new(0.5, 1.5, 60.0, 80.0).ok()),
    ];
    let e = evaluate_localization(&gt, &exact).unwrap();
    assert_close(e.mean_iou, 100.0);
    assert_close(e.corloc, 100.0);
    // A degenerate predicted box scores 0.
    let e = evaluate_localization(
        &gt,
        &[pred(
            "all_souls_000002",
            BBox::new(5.0, 5.0, 5.0, 100.0).ok(),
        )],
    )
    .unwrap();
    assert_close(e.boxes[0].iou, 0.0);
    // Twice the same pair, or an unknown query, is refused.
    assert!(evaluate_localization(&gt, &[exact[0].clone(), exact[0].clone()]).is_err());
    let mut stray = exact[0].clone();
    stray.query = "bodleian_1".into();
    assert!(evaluate_localization(&gt, &[stray]).is_err());
}

#[test]
fn corloc_counts_strictly_above_one_half() {
    let t = [BBox::new(0.0, 0.0, 10.0, 10.0).unwrap()];
    let just_over = BBox::new(0.0, 0.0, 10.0, 19.0).unwrap(); // 100/190 > 0.5
    let exactly_half = BBox::new(0.0, 0.0, 10.0, 20.0).unwrap(); // 100/200
    let items: Vec<(Option<&BBox>, &[BBox])> = vec![
        (Some(&just_over), &t),
        (Some(&exactly_half), &t),
        (None, &t),
        (Some(&just_over), &[]),
    ];
    assert_eq!(corloc(items), Some(0.25));
}

#[test]
fn coseg_fixture_and_masks() {
    let set = CosegGroundTruth::load(fixtures().join("coseg")).unwrap();
    assert_eq!(set.len(), 3);
    assert!(set.has_masks && set.has_boxes);
    let bird = set.class("bird").unwrap();
    let names: Vec<&str> = bird.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["b1", "b2"]);
    assert_eq!(bird.images[1].boxes.len(), 2);
    let parts: Vec<&str> = bird.images[0]
        .parts
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(parts, ["body", "head"]);

    // b1: 4×4 square at (2,2); b2: left half (x < 4). Intersection 2×4 = 8, union 16 + 32 − 8.
    let m1 = Mask::load(bird.images[0].mask.as_ref().unwrap()).unwrap();
    let m2 = Mask::load(bird.images[1].mask.as_ref().unwrap()).unwrap();
    assert_eq!(
        (m1.width(), m1.height(), m1.area(), m2.area()),
        (8, 8, 16, 32)
    );
    assert_close(jaccard(&m1, &m2).unwrap(), 8.0 / 40.0);
    assert_eq!(m1.bbox(), Some(BBox::new(2.0, 2.0, 6.0, 6.0).unwrap()));
    // The cow's mask is empty: empty vs empty agrees (1), empty vs object does not (0).
    let cow = Mask::load(set.class("cow").unwrap().images[0].mask.as_ref().unwrap()).unwrap();
    assert!(cow.is_empty());
    assert_close(jaccard(&cow, &cow).unwrap(), 1.0);
    assert_close(jaccard(&cow, &m1).unwrap(), 0.0);
    assert_eq!(cow.bbox(), None);

    // Box files are checked like the other ground truth.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["images/bird", "boxes"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(
        fixtures().join("coseg/images/bird/b1.jpg"),
        root.join("images/bird/b1.jpg"),
    )
    .unwrap();
    std::fs::write(root.join("boxes/bird.txt"), "b1 0 0 1 1\nb9 0 0 1 1\n").unwrap();
    match CosegGroundTruth::load(root) {
        Err(Error::GroundTruth { line, reason, .. }) => {
            assert_eq!(line, Some(2));
            assert!(reason.contains("b9"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(root.join("boxes/bird.txt"), "b1 4 0 1 1\n").unwrap();
    assert!(matches!(
        CosegGroundTruth::load(root),
        Err(Error::GroundTruth { line: Some(1), .. })
    ));
    // With masks/, every image needs its mask.
    std::fs::write(root.join("boxes/bird.txt"), "b1 0 0 1 1\n").unwrap();
    std::fs::create_dir_all(root.join("masks/bird")).unwrap();
    assert!(matches!(
        CosegGroundTruth::load(root),
        Err(Error::GroundTruth { .. })
    ));
}

fn grid(w: usize, h: usize, f: impl Fn(usize, usize) -> bool) -> Mask {
    Mask::from_fn(w, h, f)
}

#[test]
fn part_matching_merges_and_matches_mutual_best() {
    // 4×4 image. Parts: P0 = left half, P1 = right half.
    // Factors: F0 = top-left quadrant, F1 = bottom-left quadrant, F2 = right half.
    let parts = [grid(4, 4, |x, _| x < 2), grid(4, 4, |x, _| x >= 2)];
    let factors = [
        grid(4, 4, |x, y| x < 2 && y < 2),
        grid(4, 4, |x, y| x < 2 && y >= 2),
        grid(4, 4, |x, _| x >= 2),
    ];
    let m = PartMatcher::default()
        .match_masks(&factors, &parts)
        .unwrap();
    // IoU(F0, P0) = 4/8, IoU(F1, P0) = 4/8, IoU(F2, P1) = 1, the rest 0.
    assert_eq!(m.iou, vec![vec![0.5, 0.0], vec![0.5, 0.0], vec![0.0, 1.0]]);
    // F0 and F1 lie entirely inside P0 (intersection over factor 1 > ½): merged.
    // P0 is covered half by F0 and half by F1 (intersection over part ½, not > ½): not merged.
    assert_eq!(m.factor_groups, vec![vec![0, 1], vec![2]]);
    assert_eq!(m.part_groups, vec![vec![0], vec![1]]);
    assert_eq!(m.matches.len(), 2);
    assert_eq!((m.matches[0].factor_group, m.matches[0].part_group), (0, 0));
    assert_close(m.matches[0].iou, 1.0);
    assert_close(m.mean_part_iou(), 1.0);

    // Without merging: F0 and F1 tie for P0; P0's best is F0 (first), F1 is unmatched.
    let strict = PartMatcher::builder()
        .factor_merge_threshold(1.0)
        .part_merge_threshold(1.0)
        .build()
        .unwrap();
    let m = strict.match_masks(&factors, &parts).unwrap();
    assert_eq!(m.factor_groups, vec![vec![0], vec![1], vec![2]]);
    let pairs: Vec<(usize, usize)> = m
        .matches
        .iter()
        .map(|p| (p.factor_group, p.part_group))
        .collect();
    assert_eq!(pairs, vec![(0, 0), (2, 1)]);
    assert_close(m.mean_part_iou(), (0.5 + 1.0) / 2.0);

    // One factor covering two parts (left and right leg): the parts merge and match it.
    let legs = [grid(4, 4, |x, _| x == 0), grid(4, 4, |x, _| x == 1)];
    let both = [grid(4, 4, |x, _| x < 2), Mask::empty(4, 4)];
    let m = PartMatcher::default().match_masks(&both, &legs).unwrap();
    assert_eq!(m.part_groups, vec![vec![0, 1]]);
    assert_eq!(m.factor_groups, vec![vec![0], vec![1]]);
    assert_eq!(m.matches.len(), 1);
    assert_eq!(m.matches[0].factor_group, 0);
    assert_close(m.matches[0].iou, 1.0);
    // The empty factor matches nothing.
    assert_eq!(m.group_iou[1], vec![0.0]);

    assert!(PartMatcher::default()
        .match_masks(&[Mask::empty(4, 4)], &[Mask::empty(3, 4)])
        .is_err());
}

#[test]
fn image_listing_loads_and_refuses_repeats() {
    let list = load_image_list(fixtures().join("revisitop1m_tiny.txt")).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2], "jpg/9/ff/9fffe5f6.jpg");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("list.txt");
    std::fs::write(&p, "a.jpg\nb.jpg\na.jpg\n").unwrap();
    assert!(matches!(
        load_image_list(&p),
        Err(Error::GroundTruth { line: Some(3), .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Results record and the command line

#[test]
fn results_record_holds_numbers_and_protocol() {
    let gt = GroundTruth::load(fixtures().join("revisited/gnd_tiny.pkl")).unwrap();
    let r = Rankings::load(fixtures().join("rankings_revisited.txt")).unwrap();
    let e = evaluate(&gt, &r, Protocol::Revisited).unwrap();
    let record = ResultsRecord::new(
        &e,
        Provenance {
            box_handling: Some(BoxHandling::Crop),
            whitening: Some("rparis6k".into()),
            query_expansion: Some(5),
            weights_fingerprint: Some("abc123".into()),
            ..Provenance::default()
        },
    );
    let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
    assert_close(json["map"].as_f64().unwrap(), e.map);
    assert_eq!(json["protocol"], "revisited");
    assert_eq!(json["dataset"], "tiny");
    assert_eq!(json["box_handling"], "crop");
    assert_eq!(json["query_expansion"], 5);
    assert_eq!(json["whitening"], "rparis6k");
    assert_eq!(json["weights_fingerprint"], "abc123");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["recipe"].is_null());
    let date = json["date"].as_str().unwrap();
    assert!(
        date.len() == 20 && date.ends_with('Z') && &date[10..11] == "T",
        "{date}"
    );
    let pq = json["per_query"].as_object().unwrap();
    assert_eq!(pq.len(), 3);
    assert_close(pq["q_c"].as_f64().unwrap(), 100.0 / 3.0);
    // Easy has no positive for q_b: null there.
    assert!(json["revisited"]["easy"]["per_query"]["q_b"].is_null());
    assert_eq!(json["revisited"]["hard"]["mp_at_k"][2]["k"], 10);
    assert_close(
        json["revisited"]["hard"]["mp_at_k"][2]["mp"]
            .as_f64()
            .unwrap(),
        50.0,
    );
    // It reads back.
    let back: ResultsRecord = serde_json::from_str(&record.to_json()).unwrap();
    assert_eq!(back, record);

    // With a recipe, the record holds it and takes the weights fingerprint from it.
    let recipe = deepfactor::Recipe {
        backbone: deepfactor::BackboneSpec::Builtin(
            deepfactor::backbone::BackboneKind::EfficientNetLite0,
        ),
        weights_fingerprint: "f00d".into(),
        layer: "head".into(),
        input_size: 512,
        max_side: None,
        padding: deepfactor::backbone::Padding::Zero,
        shift_negative: false,
        descriptor: deepfactor::DescriptorSpec::NmfVu(deepfactor::NmfSpec {
            k: 8,
            max_iter: 200,
            tol: 0.0,
        }),
        crow: true,
        whitening: None,
        dim: 1280,
    };
    let record = ResultsRecord::new(
        &e,
        Provenance {
            recipe: Some(recipe.clone()),
            box_handling: Some(BoxHandling::Filter),
            ..Provenance::default()
        },
    );
    let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
    assert_eq!(json["weights_fingerprint"], "f00d");
    assert_eq!(
        json["recipe"]["descriptor"],
        "nmf-vu(max_iter=200,tol=0,init=nndsvda)"
    );
    assert_eq!(json["box_handling"], "filter");
    assert_eq!(record.recipe, Some(recipe));
}

#[test]
fn eval_command_prints_table_and_json() {
    let bin = env!("CARGO_BIN_EXE_deepfactor");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("eval")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let f = fixtures();
    let (ok, out, err) = run(&[
        "--gt",
        f.join("oxford").to_str().unwrap(),
        "--ranking",
        f.join("rankings_oxford.txt").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_close(
        json["map"].as_f64().unwrap(),
        100.0 * (32.0 / 45.0 + 19.0 / 24.0) / 2.0,
    );
    assert_eq!(json["protocol"], "classic");

    let (ok, out, err) = run(&[
        "--gt",
        f.join("revisited").to_str().unwrap(),
        "--ranking",
        f.join("rankings_revisited.txt").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // Hand values from revisited_protocol_on_the_tiny_pickle, rounded.
    let mapline = out.lines().find(|l| l.starts_with("mAP")).unwrap();
    assert_eq!(
        mapline.split_whitespace().collect::<Vec<_>>(),
        ["mAP", "47.92", "59.17", "39.26"]
    );
    assert!(out
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["mP@10", "50.00", "58.33", "50.00"]));

    let (ok, out, _) = run(&[
        "--gt",
        f.join("oxford").to_str().unwrap(),
        "--ranking",
        f.join("rankings_oxford.txt").to_str().unwrap(),
        "--protocol",
        "map@2",
    ]);
    assert!(ok);
    assert!(out.contains("mAP@2") && out.contains("50.00"), "{out}");

    let (ok, _, err) = run(&[
        "--gt",
        f.join("oxford").to_str().unwrap(),
        "--ranking",
        f.join("rankings_oxford.txt").to_str().unwrap(),
        "--protocol",
        "revisited",
    ]);
    assert!(!ok && err.contains("revisited protocol needs"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The development sets in ../shared/data

/// The ranking that puts every query's positives first (in list order), then the rest.
fn perfect_rankings(gt: &GroundTruth) -> Rankings {
    let mut r = Rankings::new();
    for q in gt.queries() {
        let (pos, _) = q.relevance.standard();
        let mut order: Vec<String> = pos.iter().map(|&i| gt.images()[i].clone()).collect();
        for (i, name) in gt.images().iter().enumerate() {
            if !pos.contains(&i) {
                order.push(name.clone());
            }
        }
        r.insert(q.name.clone(), order).unwrap();
    }
    r
}

#[test]
fn instance_dev_loads() {
    let Some(dir) = shared_data("instance-dev") else {
        return;
    };
    let gt = GroundTruth::load(&dir).unwrap();
    assert_eq!(gt.queries().len(), 36);
    assert_eq!(gt.images().len(), 658);
    for q in gt.queries() {
        assert!(gt.image_index(&q.image).is_some(), "{}", q.name);
        assert!(q.bbox.is_some());
        let (pos, junk) = q.relevance.standard();
        assert!(!pos.is_empty(), "{}", q.name);
        // The query image is junk for its own query.
        assert!(
            junk.contains(&gt.image_index(&q.image).unwrap()),
            "{}",
            q.name
        );
    }
    // The synthesized views carry localization boxes.
    assert!(gt.queries().iter().any(|q| !q.boxes.is_empty()));
    let e = evaluate(&gt, &perfect_rankings(&gt), Protocol::Classic).unwrap();
    assert_close(e.map, 100.0);
    assert_eq!(e.evaluated, 36);
}

#[test]
fn semantic_dev_loads() {
    let Some(dir) = shared_data("semantic-dev") else {
        return;
    };
    let gt = GroundTruth::load(&dir).unwrap();
    assert_eq!(gt.queries().len(), 70);
    assert_eq!(gt.images().len(), 731);
    let perfect = perfect_rankings(&gt);
    assert_close(
        evaluate(&gt, &perfect, Protocol::MapAt(30)).unwrap().map,
        100.0,
    );
    assert_close(
        evaluate(&gt, &perfect, Protocol::Classic).unwrap().map,
        100.0,
    );
}

#[test]
fn voc_coseg_loads() {
    let Some(dir) = shared_data("voc-coseg") else {
        return;
    };
    let set = CosegGroundTruth::load(&dir).unwrap();
    assert_eq!(set.classes.len(), 14);
    assert_eq!(set.len(), 731);
    assert!(set.has_masks);
    let first = &set.classes[0].images[0];
    let mask = Mask::load(first.mask.as_ref().unwrap()).unwrap();
    assert!(!mask.is_empty());
}

/// `--gt` also takes the folder of `*_query.txt` files itself, as Oxford and Paris distribute
/// their ground truth: with `jpg/` beside it, with `--images`, or alone (the database is then
/// the images its files name, and other ranked images count as irrelevant).
#[test]
fn eval_accepts_the_folder_of_query_files() {
    let bin = env!("CARGO_BIN_EXE_deepfactor");
    let f = fixtures();
    let map_of = |gt: &Path, extra: &[&str]| -> f64 {
        let out = std::process::Command::new(bin)
            .args(["eval", "--gt"])
            .arg(gt)
            .arg("--ranking")
            .arg(f.join("rankings_oxford.txt"))
            .args(extra)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["map"].as_f64().unwrap()
    };
    let want = 100.0 * (32.0 / 45.0 + 19.0 / 24.0) / 2.0;
    assert_close(map_of(&f.join("oxford"), &[]), want);
    // The gt/ folder, with jpg/ beside it.
    assert_close(map_of(&f.join("oxford/gt"), &[]), want);
    let gt = GroundTruth::load(f.join("oxford/gt")).unwrap();
    assert_eq!(gt.images().len(), 10);
    assert!(gt.lists_database());
    // A copy of gt/ alone: the database is what its files name (all_souls_000005, 000006 and
    // ashmolean_000004, ranked but never named, are irrelevant), and the scores are the same.
    let alone = tempfile::tempdir().unwrap();
    let copy = alone.path().join("gt_files_170407");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(f.join("oxford/gt")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
    }
    let gt = GroundTruth::load(&copy).unwrap();
    assert!(!gt.lists_database());
    assert_eq!(gt.images().len(), 7);
    assert_eq!(gt.queries().len(), 2);
    assert_eq!(gt.query("all_souls_1").unwrap().image, "all_souls_000001");
    assert_close(map_of(&copy, &[]), want);
    // With the images named.
    let jpg = f.join("oxford/jpg");
    assert_close(map_of(&copy, &["--images", jpg.to_str().unwrap()]), want);
    let gt = GroundTruth::load_with_images(&copy, Some(&jpg)).unwrap();
    assert_eq!(gt.images().len(), 10);
    // A folder with neither layout is refused, naming it.
    let empty = alone.path().join("nothing");
    std::fs::create_dir(&empty).unwrap();
    let e = GroundTruth::load(&empty).unwrap_err().to_string();
    assert!(e.contains("nothing") && e.contains("_query.txt"), "{e}");
}
