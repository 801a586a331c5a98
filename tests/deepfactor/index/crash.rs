//! Crash safety: a writer process is killed (SIGKILL) at random points while it adds,
//! deletes, commits, merges and compacts; after every kill the index must open, show exactly
//! the last acknowledged commit (or the one after it, if the kill came between the commit
//! and its acknowledgement), lose nothing committed, and pass `verify()`. The next writer
//! resumes from there.
//!
//! The writer is this test binary itself, re-run on the ignored test `writer_child`. The
//! normal suite runs a few kills; `scripts/index-crash-test.sh` runs hundreds.

use super::{child, factors_for, image_for, meta_for, recipe, small_options, vector_for};
use deepfactor::index::{Index, IndexWriter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const DIM: usize = 16;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The logical content of the index after some generation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Model {
    live: BTreeSet<u64>,
    next_id: u64,
}

/// What the writer does on top of generation `g`.
struct Step {
    adds: u64,
    deletes: Vec<u64>,
    compact: bool,
}

fn step(g: u64, m: &Model) -> Step {
    let h = splitmix(g);
    // Every fifth commit is large enough for a graph (small_options: 32 images).
    let adds = if g.is_multiple_of(5) {
        40 + h % 40
    } else {
        1 + h % 12
    };
    let live: Vec<u64> = m.live.iter().copied().collect();
    let mut deletes = BTreeSet::new();
    if !live.is_empty() {
        for j in 0..(h >> 8) % 5 {
            deletes.insert(live[(splitmix(g * 31 + j) % live.len() as u64) as usize]);
        }
    }
    Step {
        adds,
        deletes: deletes.into_iter().collect(),
        compact: g % 9 == 8,
    }
}

fn apply(m: &Model, s: &Step) -> Model {
    let mut n = m.clone();
    n.live.extend(m.next_id..m.next_id + s.adds);
    n.next_id += s.adds;
    for d in &s.deletes {
        n.live.remove(d);
    }
    n
}

/// The model after generation `g` (generation 1 is the empty index).
fn replay(g: u64) -> Model {
    let mut m = Model::default();
    for k in 1..g {
        m = apply(&m, &step(k, &m));
    }
    m
}

/// The writer process: runs until killed, acknowledging each commit on a line of the
/// file named by `DF_CRASH_ACK` once `commit` has returned.
#[test]
#[ignore = "child process of the crash-safety tests, which run it"]
fn writer_child() {
    let dir = std::env::var("DF_CRASH_DIR").expect("run by crash_safety: DF_CRASH_DIR unset");
    let ack = std::env::var("DF_CRASH_ACK").expect("run by crash_safety: DF_CRASH_ACK unset");
    let r = recipe(DIM);
    let mut w = IndexWriter::open_or_create(&dir, r.clone(), small_options()).unwrap();
    let mut model = replay(w.index().generation());
    assert_eq!(w.next_id(), model.next_id);
    let mut ack = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack)
        .unwrap();
    loop {
        let g = w.index().generation();
        let s = step(g, &model);
        for id in model.next_id..model.next_id + s.adds {
            assert_eq!(
                w.add(&r, image_for(id, DIM, id.is_multiple_of(3))).unwrap(),
                id
            );
        }
        for &d in &s.deletes {
            assert!(w.delete(d).unwrap());
        }
        let rep = if s.compact {
            w.compact().unwrap()
        } else {
            w.commit().unwrap()
        };
        assert_eq!(rep.generation, g + 1);
        // One write(2) per line, so that a kill cannot leave half a line.
        ack.write_all(format!("{}\n", g + 1).as_bytes()).unwrap();
        model = apply(&model, &s);
    }
}

/// Checks the index in `dir` against the model of its generation; returns the generation.
fn check(dir: &Path, acked: u64) -> u64 {
    let ix = Index::open(dir).unwrap_or_else(|e| panic!("reopen after kill failed: {e}"));
    let g = ix.generation();
    assert!(
        g == acked || g == acked + 1,
        "index shows generation {g}, last acknowledged commit {acked}"
    );
    let model = replay(g);
    let mut ids: Vec<u64> = ix.documents().map(|d| d.unwrap().id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        model.live.iter().copied().collect::<Vec<_>>(),
        "generation {g}"
    );
    for &id in &model.live {
        assert_eq!(ix.descriptor(id).unwrap().unwrap(), vector_for(id, DIM));
        assert_eq!(ix.document(id).unwrap().unwrap().meta, meta_for(id));
        assert_eq!(
            ix.factors(id).unwrap(),
            (id.is_multiple_of(3)).then(|| factors_for(id))
        );
    }
    ix.verify().unwrap();
    // Factor vectors survive too: one per non-zero stored concept of every live image with
    // factors (verify checks each against its factor), searchable.
    assert!(ix.has_factor_vectors());
    let with_factors = model.live.iter().filter(|id| id.is_multiple_of(3)).count();
    assert!(ix.factor_vectors() >= with_factors, "generation {g}");
    if let Some(&id) = model.live.iter().find(|id| id.is_multiple_of(3)) {
        let f = factors_for(id);
        let q = [deepfactor::index::QueryFactor {
            factor: 0,
            concept: f.concept(0).unwrap(),
        }];
        let hits = ix
            .search_factors(
                &recipe(DIM),
                &vector_for(id, DIM),
                &q,
                &deepfactor::index::SearchOptions::new().k(1),
                &deepfactor::index::FactorSearch::new(),
            )
            .unwrap();
        assert_eq!(hits.len(), 1);
    }
    g
}

/// Kills the writer `trials` times at random points.
fn crash_safety(trials: usize, seed: u64, tmp: tempfile::TempDir) {
    let dir = tmp.path().join("ix");
    let ack = tmp.path().join("ack");
    let err = tmp.path().join("stderr");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut last = 0u64;
    let mut kills_mid_commit = 0;
    for trial in 0..trials {
        let mut c = child(
            "index::crash::writer_child",
            &[
                ("DF_CRASH_DIR", dir.display().to_string()),
                ("DF_CRASH_ACK", ack.display().to_string()),
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..600)));
        if let Some(status) = c.try_wait().unwrap() {
            panic!(
                "trial {trial}: the writer exited by itself ({status}):\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        c.kill().unwrap();
        c.wait().unwrap();
        let acked = std::fs::read_to_string(&ack)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            .max(last);
        if !dir.join("CURRENT").exists() {
            assert_eq!(acked, 0, "trial {trial}: CURRENT missing after a commit");
            continue;
        }
        let g = check(&dir, acked.max(1));
        if g == acked + 1 {
            kills_mid_commit += 1;
        }
        assert!(
            g >= last,
            "trial {trial}: generation went back from {last} to {g}"
        );
        last = g;
    }
    eprintln!(
        "crash safety: {trials} kills, final generation {last}, {kills_mid_commit} between a commit and its acknowledgement"
    );
    assert!(last > 1, "the writer never committed");
}

#[test]
fn crash_safety_few() {
    crash_safety(6, 1, super::tempdir());
}

/// Hundreds of kills: `scripts/index-crash-test.sh` (trials in `DF_CRASH_TRIALS`).
#[test]
#[ignore = "long; run by scripts/index-crash-test.sh"]
fn crash_safety_many() {
    let trials = std::env::var("DF_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed = std::env::var("DF_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    // On the real file system (TMPDIR), with its real syncs.
    crash_safety(trials, seed, tempfile::tempdir().unwrap());
}
