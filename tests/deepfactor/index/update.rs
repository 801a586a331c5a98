//! Folder updates through the `Extractor` seam, with a test extractor over real image files:
//! a 4×4×4 RGB colour histogram (a test double for the feature pipeline).

use deepfactor::index::{
    update_from_folder, Extracted, Extractor, Index, IndexOptions, IndexWriter, SearchOptions,
    StoredFactors, UpdateOptions, UpdateReport,
};
use deepfactor::linalg::Matrix;
use deepfactor::{Error, Recipe, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Colour histograms of decoded images, with 2 "factors" over a 2 × 2 grid.
struct Histogram {
    recipe: Recipe,
    calls: AtomicUsize,
    /// Panic after this many images (simulates a crash mid-build).
    panic_after: Option<usize>,
}

impl Histogram {
    fn new() -> Histogram {
        let mut recipe = super::recipe(64);
        recipe.descriptor = deepfactor::DescriptorSpec::External("rgb-histogram-4".into());
        Histogram {
            recipe,
            calls: AtomicUsize::new(0),
            panic_after: None,
        }
    }

    fn one(&self, p: &Path) -> Result<Extracted> {
        let img = image::open(p)
            .map_err(|e| Error::image(p, e.to_string()))?
            .to_rgb8();
        let (w, h) = img.dimensions();
        let mut hist = vec![0f32; 64];
        let mut quad = [0f32; 4];
        for (x, y, px) in img.enumerate_pixels() {
            let b = |c: u8| (c / 64) as usize;
            hist[b(px[0]) * 16 + b(px[1]) * 4 + b(px[2])] += 1.0;
            let q = (2 * y / h) as usize * 2 + (2 * x / w) as usize;
            quad[q] += px.0.iter().map(|&c| f32::from(c)).sum::<f32>() / (w * h) as f32;
        }
        let descriptor = super::normalize(hist.iter().map(|v| v.sqrt()).collect());
        let u = Matrix::from_vec(4, 2, quad.iter().flat_map(|&q| [q, 800.0 - q]).collect())?;
        let v = Matrix::from_vec(2, 4, vec![1.0, 0.5, 0.25, 0.0, 0.0, 0.25, 0.5, 1.0])?;
        Ok(Extracted {
            descriptor,
            width: w,
            height: h,
            factors: Some(StoredFactors::quantize(&v, &u, 2, 2)?),
            warning: None,
        })
    }
}

impl Extractor for Histogram {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn extract(&self, paths: &[PathBuf]) -> Vec<Result<Extracted>> {
        paths
            .iter()
            .map(|p| {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if self.panic_after.is_some_and(|m| n >= m) {
                    panic!("simulated crash");
                }
                self.one(p)
            })
            .collect()
    }
}

/// Writes a 16 × 12 PNG whose colours depend on `seed`.
fn write_png(path: &Path, seed: u32) {
    let img = image::RgbImage::from_fn(16, 12, |x, y| {
        let v = seed
            .wrapping_mul(2_654_435_761)
            .wrapping_add(x * 31 + y * 17);
        image::Rgb([
            (v % 251) as u8,
            (v / 7 % 253) as u8,
            (seed * 40 % 256) as u8,
        ])
    });
    img.save(path).unwrap();
}

fn photos(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..12 {
        write_png(&root.join(format!("p{i:02}.png")), i);
    }
    for i in 12..15 {
        write_png(&root.join(format!("sub/q{i:02}.PNG")), i);
    }
    std::fs::write(root.join("broken.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(root.join("notes.txt"), b"ignored").unwrap();
}

fn update(w: &mut IndexWriter, root: &Path, x: &Histogram, o: &UpdateOptions) -> UpdateReport {
    let mut last = None;
    let r = update_from_folder(w, root, x, o, &mut |p| last = Some(*p)).unwrap();
    assert_eq!(last, Some(r.counts));
    r
}

#[test]
fn folder_update_skips_reuses_replaces_and_removes() {
    let tmp = super::tempdir();
    let root = tmp.path().join("photos");
    photos(&root);
    let root = root.canonicalize().unwrap();
    let dir = tmp.path().join("ix");
    let x = Histogram::new();
    let mut w = IndexWriter::create(&dir, x.recipe.clone(), IndexOptions::new()).unwrap();
    let o = UpdateOptions::new().batch_size(4).commit_every(5);

    let r = update(&mut w, &root, &x, &o);
    assert_eq!(
        (r.counts.total, r.counts.indexed, r.counts.failed),
        (16, 15, 1)
    );
    assert_eq!(r.failures[0].path, root.join("broken.jpg"));
    assert!(
        r.failures[0].reason.contains("broken.jpg"),
        "{:?}",
        r.failures
    );
    assert_eq!(
        r.commits, 2,
        "a commit after each batch that reaches 5 images: {r:?}"
    );
    assert_eq!(x.calls.load(Ordering::SeqCst), 16);

    // Nothing changed: nothing is extracted again (but the broken file is retried).
    let r = update(&mut w, &root, &x, &o);
    assert_eq!(
        (r.counts.unchanged, r.counts.indexed, r.counts.failed),
        (15, 0, 1)
    );
    assert_eq!(x.calls.load(Ordering::SeqCst), 17);

    let ix = Index::open(&dir).unwrap();
    let p03 = root.join("p03.png");
    let id03 = ix.find_path(&p03).unwrap()[0];
    let id05 = ix.find_path(&root.join("p05.png")).unwrap()[0];
    let id07 = ix.find_path(&root.join("p07.png")).unwrap()[0];
    let doc03 = ix.document(id03).unwrap().unwrap();
    assert_eq!((doc03.meta.width, doc03.meta.height), (16, 12));
    assert_eq!(
        doc03.meta.content_hash,
        *blake3::hash(&std::fs::read(&p03).unwrap()).as_bytes()
    );
    assert_eq!(ix.factors(id03).unwrap().unwrap().k(), 2);

    // Search by an image's own descriptor finds it first.
    let q = x.one(&p03).unwrap().descriptor;
    let hits = ix
        .search(&x.recipe, &q, &SearchOptions::new().k(3))
        .unwrap();
    assert_eq!(hits[0].id, id03);

    // Touch p03 (same bytes, new time), change p05, move p07, copy p01, delete p09.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&p03, std::fs::read(&p03).unwrap()).unwrap();
    write_png(&root.join("p05.png"), 99);
    std::fs::rename(root.join("p07.png"), root.join("sub/moved.png")).unwrap();
    std::fs::copy(root.join("p01.png"), root.join("sub/copy.png")).unwrap();
    std::fs::remove_file(root.join("p09.png")).unwrap();
    let before = x.calls.load(Ordering::SeqCst);
    let r = update(&mut w, &root, &x, &o);
    assert_eq!(
        r.counts.indexed, 1,
        "only the changed file is extracted: {r:?}"
    );
    assert_eq!(r.counts.reused, 2, "moved and copied: {r:?}");
    assert_eq!(r.replaced, 1);
    assert_eq!(r.removed, 0, "vanished files stay unless asked");
    assert_eq!(
        x.calls.load(Ordering::SeqCst) - before,
        2,
        "changed file + broken file"
    );
    let ix = ix.reopen().unwrap();
    assert_eq!(ix.len(), 16);
    assert_eq!(
        ix.find_path(&root.join("sub/moved.png")).unwrap(),
        vec![id07],
        "a moved file keeps its id"
    );
    assert!(ix.find_path(&root.join("p07.png")).unwrap().is_empty());
    assert!(
        ix.document(id05).unwrap().is_none(),
        "the changed file got a new id"
    );
    let touched = ix.document(id03).unwrap().unwrap();
    assert_ne!(
        touched.meta.modified_ns, doc03.meta.modified_ns,
        "new stamp stored"
    );
    assert_eq!(ix.find_path(&root.join("sub/copy.png")).unwrap().len(), 1);

    // Asked to, the update drops the vanished file.
    let r = update(&mut w, &root, &x, &o.clone().remove_missing(true));
    assert_eq!(
        (r.removed, r.counts.unchanged, r.counts.indexed),
        (1, 15, 0)
    );
    let ix = ix.reopen().unwrap();
    assert_eq!(ix.len(), 15);
    assert!(ix.find_path(&root.join("p09.png")).unwrap().is_empty());
    ix.verify().unwrap();

    // Another recipe's extractor is refused.
    let mut other = Histogram::new();
    other.recipe.input_size = 1;
    let e = update_from_folder(&mut w, &root, &other, &o, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::RecipeMismatch { .. }), "{e}");
}

#[test]
fn interrupted_build_resumes_losing_at_most_one_batch() {
    let tmp = super::tempdir();
    let root = tmp.path().join("photos");
    photos(&root);
    let dir = tmp.path().join("ix");
    let o = UpdateOptions::new().batch_size(3).commit_every(5);
    let mut crashing = Histogram::new();
    crashing.panic_after = Some(8);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut w = IndexWriter::open_or_create(&dir, crashing.recipe.clone(), IndexOptions::new())
            .unwrap();
        let _ = update_from_folder(&mut w, &root, &crashing, &o, &mut |_| {});
    }));
    assert!(result.is_err(), "the extractor crashed");
    // What was committed before the crash is there; the batch in flight is not.
    let ix = Index::open(&dir).unwrap();
    let committed = ix.len();
    assert!((5..=8).contains(&committed), "{committed}");
    let x = Histogram::new();
    let mut w = IndexWriter::open_or_create(&dir, x.recipe.clone(), IndexOptions::new()).unwrap();
    let r = update(&mut w, &root, &x, &o);
    assert_eq!(r.counts.unchanged, committed);
    assert_eq!(r.counts.indexed, 15 - committed);
    assert_eq!(x.calls.load(Ordering::SeqCst), 16 - committed);
    assert_eq!(Index::open(&dir).unwrap().len(), 15);
}
