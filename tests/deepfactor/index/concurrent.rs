//! Readers keep searching while the writer commits and merges: no error, no torn read.

use super::{image_for, recipe, small_options, vector_for};
use deepfactor::index::{Index, IndexWriter, SearchMode, SearchOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const DIM: usize = 16;
const PER_COMMIT: u64 = 10;

/// Each reader opens snapshots (fresh, or by `reopen`) as fast as it can; every snapshot
/// must hold exactly the images of its generation, readable and searchable.
#[allow(unsafe_code)]
#[test]
fn readers_while_the_writer_commits() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let r = recipe(DIM);
    let mut w = IndexWriter::create(&dir, r.clone(), small_options()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let dir = dir.clone();
            let done = done.clone();
            let r = r.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut snapshots = 0;
                let mut generations = std::collections::BTreeSet::new();
                let mut ix: Option<Index> = None;
                loop {
                    // Read before opening: a snapshot opened after the writer finished
                    // must show its last commit.
                    let finished = done.load(Ordering::SeqCst);
                    let next = match (t, &ix) {
                        (0, Some(prev)) => prev.reopen().unwrap(),
                        // SAFETY: the writer never modifies a segment file once written.
                        (1, _) => unsafe { Index::open_mmap(&dir) }.unwrap(),
                        _ => Index::open(&dir).unwrap(),
                    };
                    let g = next.generation();
                    assert!(g >= seen, "generation went back");
                    seen = g;
                    generations.insert(g);
                    let live = PER_COMMIT * (g - 1);
                    assert_eq!(next.len() as u64, live, "generation {g}");
                    let ids: Vec<u64> = next.documents().map(|d| d.unwrap().id).collect();
                    let mut sorted = ids.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..live).collect::<Vec<_>>());
                    if live > 0 {
                        let q = vector_for(live - 1, DIM);
                        for mode in [SearchMode::Exact, SearchMode::Hnsw] {
                            let hits = next
                                .search(&r, &q, &SearchOptions::new().k(3).mode(mode))
                                .unwrap();
                            assert_eq!(hits[0].id, live - 1, "generation {g}, {mode:?}");
                        }
                    }
                    ix = Some(next);
                    snapshots += 1;
                    if finished && snapshots >= 5 {
                        break;
                    }
                }
                eprintln!(
                    "reader {t}: {snapshots} snapshots, {} generations",
                    generations.len()
                );
                (seen, snapshots)
            })
        })
        .collect();
    for c in 0..30u64 {
        for id in c * PER_COMMIT..(c + 1) * PER_COMMIT {
            w.add(&r, image_for(id, DIM, id.is_multiple_of(2))).unwrap();
        }
        w.commit().unwrap();
        // Give the readers time to see most generations.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    done.store(true, Ordering::SeqCst);
    for h in readers {
        let (seen, snapshots) = h.join().unwrap();
        assert_eq!(seen, 31);
        assert!(snapshots >= 5);
    }
}

/// Factor data stays on disk in a reading open and is read with positioned reads: threads
/// reading factors of one segment at once get each image's own.
#[test]
fn threads_read_factors_of_one_segment() {
    let tmp = super::tempdir();
    let dir = tmp.path().join("ix");
    let r = recipe(DIM);
    let mut w = IndexWriter::create(&dir, r.clone(), small_options()).unwrap();
    for id in 0..200 {
        w.add(&r, image_for(id, DIM, true)).unwrap();
    }
    w.commit().unwrap();
    let ix = Arc::new(Index::open(&dir).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ix = ix.clone();
            std::thread::spawn(move || {
                for round in 0..5u64 {
                    for k in 0..200u64 {
                        let id = (k * 7 + t * 13 + round) % 200;
                        assert_eq!(ix.factors(id).unwrap(), Some(super::factors_for(id)));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
