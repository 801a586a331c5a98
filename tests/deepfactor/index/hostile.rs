//! Hostile files: truncations at many offsets, bit flips, header fields set to huge values,
//! swapped sections, over valid indexes. Opening (both ways), searching, reading every
//! image and verifying must never panic, abort or make a huge allocation; every damaged
//! file must be rejected by `open` or caught by `verify`, with an error naming the file and
//! the section.
//!
//! The loop runs in a child process under an address-space limit (`ulimit -v`), so that a
//! huge allocation fails there (abort) instead of succeeding quietly; the parent tells
//! panics (exit 101) from aborts (a signal).

use super::{child, image_for, recipe, small_options, vector_for};
use deepfactor::index::{
    check_manifest_bytes, check_segment_bytes, FactorSearch, Index, IndexWriter, QueryFactor,
    SearchMode, SearchOptions, VectorEncoding,
};
use deepfactor::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

const DIM: usize = 16;
/// Address-space limit of the child, in KiB: about twice what the loop needs (its files are
/// a few KiB), so any allocation sized by a damaged field fails.
const CHILD_VM_LIMIT_KIB: u64 = 512 << 10;

/// Builds the two fixture indexes: f32 with factors, a graph, two segments and tombstones;
/// f16 with one graph segment.
fn fixtures(root: &Path) -> Vec<PathBuf> {
    let r = recipe(DIM);
    let a = root.join("a");
    let mut w = IndexWriter::create(&a, r.clone(), small_options()).unwrap();
    for id in 0..40 {
        w.add(&r, image_for(id, DIM, id.is_multiple_of(2))).unwrap();
    }
    w.commit().unwrap();
    for id in 40..47 {
        w.add(&r, image_for(id, DIM, true)).unwrap();
    }
    for id in [3, 41, 17] {
        w.delete(id).unwrap();
    }
    w.commit().unwrap();
    drop(w);
    let b = root.join("b");
    let mut w = IndexWriter::create(
        &b,
        r.clone(),
        small_options().vector_encoding(VectorEncoding::F16),
    )
    .unwrap();
    for id in 0..35 {
        w.add(&r, image_for(id, DIM, false)).unwrap();
    }
    w.commit().unwrap();
    vec![a, b]
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// `(kind, offset, len)` of each section-table entry, read as the spec lays them out.
fn table(b: &[u8]) -> Vec<([u8; 4], usize, usize)> {
    let n = u32_at(b, 24).unwrap_or(0).min(32) as usize;
    (0..n)
        .filter_map(|i| {
            let e = 64 + 64 * i;
            let k: [u8; 4] = b.get(e..e + 4)?.try_into().ok()?;
            Some((k, u64_at(b, e + 8)? as usize, u64_at(b, e + 16)? as usize))
        })
        .collect()
}

/// Recomputes every section checksum and the header checksum, as the spec defines them
/// (an implementation independent of the library's), so that mutations get past the
/// checksums and reach the deeper checks.
fn reseal(b: &mut [u8]) {
    if b.len() < 128 {
        return;
    }
    let n = u32_at(b, 24).unwrap_or(0).min(32) as usize;
    for i in 0..n {
        let e = 64 + 64 * i;
        if e + 64 > b.len() {
            return;
        }
        let (off, len) = (u64_at(b, e + 8).unwrap(), u64_at(b, e + 16).unwrap());
        let Some(end) = off.checked_add(len).filter(|&x| x <= b.len() as u64) else {
            continue;
        };
        let mut h = blake3::Hasher::new();
        h.update(&b[e..e + 4]);
        h.update(&b[off as usize..end as usize]);
        h.update(&len.to_le_bytes());
        let d = *h.finalize().as_bytes();
        b[e + 24..e + 56].copy_from_slice(&d);
    }
    let end = 64 + 64 * n;
    let footer = b.len() - 64;
    if end <= footer {
        let d = *blake3::hash(&b[..end]).as_bytes();
        b[footer..footer + 32].copy_from_slice(&d);
    }
}

struct Mutation {
    what: String,
    bytes: Vec<u8>,
    /// Checksums recomputed: the result may be a valid file.
    resealed: bool,
}

fn mutations(name: &str, orig: &[u8], rng: &mut ChaCha8Rng) -> Vec<Mutation> {
    let mut out = Vec::new();
    let len = orig.len();
    let mut cuts: Vec<usize> = vec![0, 1, 7, 8, 12, 16, 24, 63, 64, 65, 127, 128];
    for (_, off, l) in table(orig) {
        cuts.extend([off.saturating_sub(1), off, off + 1, off + l, off + l + 1]);
    }
    cuts.extend((0..40).map(|i| i * len / 40));
    cuts.extend([
        len.saturating_sub(64),
        len.saturating_sub(63),
        len.saturating_sub(1),
    ]);
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts.into_iter().filter(|&c| c < len) {
        out.push(Mutation {
            what: format!("{name}: truncated to {c} bytes"),
            bytes: orig[..c].to_vec(),
            resealed: false,
        });
    }
    for _ in 0..60 {
        let at = rng.random_range(0..len);
        let bit = rng.random_range(0..8);
        let mut b = orig.to_vec();
        b[at] ^= 1 << bit;
        out.push(Mutation {
            what: format!("{name}: bit {bit} of byte {at} flipped"),
            bytes: b,
            resealed: false,
        });
    }
    if len < 128 {
        // CURRENT: also appended garbage and an empty file.
        let mut b = orig.to_vec();
        b.extend_from_slice(b"junk\n");
        out.push(Mutation {
            what: format!("{name}: extended"),
            bytes: b,
            resealed: false,
        });
        return out;
    }
    let mut fields: Vec<(String, usize, usize)> = vec![
        ("header file length".into(), 16, 8),
        ("header section count".into(), 24, 4),
        ("footer file length".into(), len - 32, 8),
    ];
    for (i, (k, off, _)) in table(orig).into_iter().enumerate() {
        let tag = String::from_utf8_lossy(&k).into_owned();
        fields.push((format!("offset of {tag}"), 64 + 64 * i + 8, 8));
        fields.push((format!("length of {tag}"), 64 + 64 * i + 16, 8));
        if &k == b"INFO" {
            for (f, at, w) in [
                ("docs", 0, 8),
                ("dim", 8, 4),
                ("encoding", 12, 4),
                ("graph levels", 16, 4),
                ("graph m0", 20, 4),
                ("graph m", 24, 4),
                ("graph entry", 28, 4),
                ("factor channels", 32, 4),
                ("factor vectors", 36, 4),
                ("factor graph levels", 40, 4),
                ("factor graph m0", 44, 4),
                ("factor graph m", 48, 4),
                ("factor graph entry", 52, 4),
            ] {
                fields.push((format!("INFO {f}"), off + at, w));
            }
        }
        if &k == b"GLVL" || &k == b"MOFF" || &k == b"FIDX" || &k == b"RREF" || &k == b"RGLV" {
            fields.push((format!("first value of {tag}"), off, 4));
            fields.push((format!("first value of {tag} (8 bytes)"), off, 8));
        }
    }
    for (f, at, w) in fields {
        for v in [u64::MAX, 1 << 40, u32::MAX as u64, 1 << 31, 0] {
            for reseal_it in [false, true] {
                let mut b = orig.to_vec();
                b[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
                if b == orig {
                    continue;
                }
                if reseal_it {
                    reseal(&mut b);
                }
                out.push(Mutation {
                    what: format!(
                        "{name}: {f} set to {v}{}",
                        if reseal_it { ", resealed" } else { "" }
                    ),
                    bytes: b,
                    resealed: reseal_it,
                });
            }
        }
    }
    let t = table(orig);
    for i in 0..t.len() {
        for j in i + 1..t.len() {
            let mut b = orig.to_vec();
            let (ei, ej) = (64 + 64 * i, 64 + 64 * j);
            let ki: [u8; 4] = b[ei..ei + 4].try_into().unwrap();
            let kj: [u8; 4] = b[ej..ej + 4].try_into().unwrap();
            b[ei..ei + 4].copy_from_slice(&kj);
            b[ej..ej + 4].copy_from_slice(&ki);
            reseal(&mut b);
            out.push(Mutation {
                what: format!(
                    "{name}: sections {} and {} swapped, resealed",
                    String::from_utf8_lossy(&ki),
                    String::from_utf8_lossy(&kj)
                ),
                bytes: b,
                resealed: true,
            });
        }
    }
    // Content changes with valid checksums: the deeper checks must hold without panics.
    for (k, off, l) in t {
        if l == 0 {
            continue;
        }
        for _ in 0..6 {
            let mut b = orig.to_vec();
            let at = off + rng.random_range(0..l);
            b[at] = rng.random();
            reseal(&mut b);
            out.push(Mutation {
                what: format!(
                    "{name}: byte {at} in {} randomized, resealed",
                    String::from_utf8_lossy(&k)
                ),
                bytes: b,
                resealed: true,
            });
        }
    }
    out
}

/// What happened to one damaged index.
enum Outcome {
    Rejected(Error),
    Caught(Error),
    Accepted,
}

/// Opens, exercises and verifies the index at `dir`.
#[allow(unsafe_code)]
fn probe(dir: &Path, mapped: bool) -> Outcome {
    let opened = if mapped {
        // SAFETY: the files of this private directory are not modified while mapped.
        unsafe { Index::open_mmap(dir) }
    } else {
        Index::open(dir)
    };
    let ix = match opened {
        Ok(ix) => ix,
        Err(e) => return Outcome::Rejected(e),
    };
    let r = recipe(DIM);
    for (q, mode) in [
        (0u64, SearchMode::Exact),
        (1, SearchMode::Hnsw),
        (2, SearchMode::Auto),
    ] {
        let _ = ix.search(
            &r,
            &vector_for(9000 + q, DIM),
            &SearchOptions::new().k(5).mode(mode),
        );
    }
    let concept = vec![0.5f32; 5];
    for mode in [SearchMode::Exact, SearchMode::Hnsw] {
        let _ = ix.search_factors(
            &r,
            &vector_for(9100, DIM),
            &[QueryFactor {
                factor: 0,
                concept: concept.clone(),
            }],
            &SearchOptions::new().k(5).mode(mode),
            &FactorSearch::new(),
        );
    }
    for d in ix.documents().flatten() {
        let _ = ix.factors(d.id);
        let _ = ix.descriptor(d.id);
    }
    for id in 0..50 {
        let _ = ix.document(id);
    }
    match ix.verify() {
        Ok(_) => Outcome::Accepted,
        Err(e) => Outcome::Caught(e),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The mutation loop; run in a child process by `hostile_files`.
#[test]
#[ignore = "child process of hostile_files, which runs it under an address-space limit"]
fn mutation_child() {
    let root = PathBuf::from(std::env::var("DF_HOSTILE_DIR").expect("run by hostile_files"));
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (mut probes, mut rejected, mut caught, mut accepted) = (0, 0, 0, 0);
    for (n, ix) in fixtures(&root.join("fixtures")).into_iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&ix)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.ends_with("LOCK"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let orig = std::fs::read(&file).unwrap();
            // One working copy per file; the damaged file is restored after each probe.
            let dir = root.join(format!("m{n}-{name}"));
            copy_dir(&ix, &dir);
            for m in mutations(&name, &orig, &mut rng) {
                std::fs::write(dir.join(&name), &m.bytes).unwrap();
                for mapped in [false, true] {
                    probes += 1;
                    let outcome = std::panic::catch_unwind(|| probe(&dir, mapped))
                        .unwrap_or_else(|_| panic!("PANIC on {} (mapped: {mapped})", m.what));
                    let err = match outcome {
                        Outcome::Rejected(e) => {
                            rejected += 1;
                            e
                        }
                        Outcome::Caught(e) => {
                            caught += 1;
                            e
                        }
                        Outcome::Accepted => {
                            accepted += 1;
                            assert!(m.resealed, "{} was neither rejected nor caught", m.what);
                            continue;
                        }
                    };
                    let Error::IndexFormat { path, section, .. } = &err else {
                        panic!("{}: not a format error: {err}", m.what);
                    };
                    let named = path.file_name().unwrap().to_string_lossy();
                    // A damaged segment may be reported through the manifest that pins it,
                    // and a damaged CURRENT through the manifest it names.
                    assert!(
                        m.resealed || named == name || name == "CURRENT",
                        "{}: error names {named}: {err}",
                        m.what
                    );
                    assert!(!section.is_empty(), "{}: no section in {err}", m.what);
                }
                // Segment files alone, resealed or not, through the fuzzing entry point.
                if name.ends_with(".dfs") {
                    let r = std::panic::catch_unwind(|| {
                        check_segment_bytes(&m.bytes, Path::new(&name))
                    });
                    let r =
                        r.unwrap_or_else(|_| panic!("PANIC in check_segment_bytes on {}", m.what));
                    assert!(
                        m.resealed || r.is_err(),
                        "{}: check_segment_bytes accepted it",
                        m.what
                    );
                }
                if name.ends_with(".dfm") {
                    let r = std::panic::catch_unwind(|| {
                        check_manifest_bytes(&m.bytes, Path::new(&name))
                    });
                    let r =
                        r.unwrap_or_else(|_| panic!("PANIC in check_manifest_bytes on {}", m.what));
                    assert!(
                        m.resealed || r.is_err(),
                        "{}: check_manifest_bytes accepted it",
                        m.what
                    );
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmPeak:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "HOSTILE-SUMMARY probes={probes} rejected_at_open={rejected} caught_by_verify={caught} accepted_resealed={accepted} vm_peak_kib={peak}"
    );
}

#[test]
fn hostile_files() {
    let tmp = super::tempdir();
    let c = child(
        "index::hostile::mutation_child",
        &[("DF_HOSTILE_DIR", tmp.path().display().to_string())],
    );
    // Run the child under `ulimit -v` through the shell.
    let exe = c.get_program().to_owned();
    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(format!(
            "ulimit -v {CHILD_VM_LIMIT_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(exe)
        .args(args);
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    let out = sh.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .find_map(|l| l.find("HOSTILE-SUMMARY").map(|i| &l[i..]));
    eprintln!("{}", summary.unwrap_or("no summary"));
    if !out.status.success() {
        use std::os::unix::process::ExitStatusExt;
        let why = match out.status.signal() {
            Some(s) => format!("was killed by signal {s} (an abort: a huge allocation fails this way under the limit)"),
            None => format!("failed ({})", out.status),
        };
        let tail: String = stderr
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!("mutation child {why}:\n{tail}");
    }
    assert!(
        summary.is_some(),
        "the child did not run the loop:\n{stdout}\n{stderr}"
    );
}

/// Factor vectors that name owners out of range, disagree with the stored factors, or are
/// counted wrongly: a clear error naming the file and the section, never a panic.
#[test]
fn factor_vector_damage_is_named() {
    let tmp = super::tempdir();
    let ix = fixtures(tmp.path()).remove(0);
    let seg = std::fs::read_dir(&ix)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dfs"))
        .find(|p| {
            let b = std::fs::read(p).unwrap();
            table(&b).iter().any(|(k, _, _)| k == b"RREF")
        })
        .expect("a segment with factor vectors");
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let orig = std::fs::read(&seg).unwrap();
    let t = table(&orig);
    let (_, rref, _) = *t.iter().find(|(k, _, _)| k == b"RREF").unwrap();
    let (_, rvec, _) = *t.iter().find(|(k, _, _)| k == b"RVEC").unwrap();
    let (_, info, _) = *t.iter().find(|(k, _, _)| k == b"INFO").unwrap();
    let cases: Vec<(&str, usize, Vec<u8>, &str)> = vec![
        (
            "owner row out of range",
            rref,
            9999u32.to_le_bytes().to_vec(),
            "RREF",
        ),
        (
            "owner factor out of range",
            rref + 4,
            77u16.to_le_bytes().to_vec(),
            "RREF",
        ),
        (
            "vector changed",
            rvec,
            0x7bffu16.to_le_bytes().to_vec(),
            "RVEC",
        ),
        (
            "count wrong",
            info + 36,
            5u32.to_le_bytes().to_vec(),
            "RVEC",
        ),
    ];
    for (what, at, bytes, section) in cases {
        let mut b = orig.clone();
        b[at..at + bytes.len()].copy_from_slice(&bytes);
        reseal(&mut b);
        // Resealed, the file no longer matches its manifest's checksum: checked alone, as
        // `Index::open` and `verify` check a segment.
        let err = check_segment_bytes(&b, &seg).expect_err(what);
        let Error::IndexFormat {
            path, section: s, ..
        } = &err
        else {
            panic!("{what}: not a format error: {err}");
        };
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            name,
            "{what}: {err}"
        );
        assert!(s.contains(section), "{what}: {err}");
    }
    check_segment_bytes(&orig, &seg).unwrap();
}
