//! Index files: round trips, writer behaviour, recall, crash safety, hostile files,
//! concurrent readers, the golden index, folder updates.

mod basics;
mod cli;
mod concurrent;
mod crash;
mod golden;
mod hostile;
mod recall;
mod regional;
mod update;

use deepfactor::index::{ImageMeta, IndexOptions, IndexWriter, NewImage, StoredFactors};
use deepfactor::linalg::Matrix;
use deepfactor::Recipe;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// A temporary directory, on a RAM disk where there is one: index tests commit often, and
/// each commit syncs files, which is slow on some disks and irrelevant to what they check
/// (a killed process loses nothing the kernel already has).
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::tempdir_in(shm) {
            return t;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A recipe for synthetic descriptors of `dim` dimensions.
pub fn recipe(dim: usize) -> Recipe {
    Recipe {
        backbone: deepfactor::BackboneSpec::External("synthetic".into()),
        weights_fingerprint: "0123456789abcdef".into(),
        layer: "none".into(),
        input_size: 0,
        max_side: None,
        padding: deepfactor::backbone::Padding::Zero,
        shift_negative: false,
        descriptor: deepfactor::DescriptorSpec::External("synthetic".into()),
        crow: false,
        whitening: None,
        dim,
    }
}

/// `v / |v|`.
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A deterministic unit vector for `id` (the same in every process and version).
pub fn vector_for(id: u64, dim: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDF);
    normalize((0..dim).map(|_| rng.random::<f32>() - 0.5).collect())
}

/// `n` unit vectors around `clusters` random centres, `spread` controlling the noise.
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let gauss = |rng: &mut ChaCha8Rng| {
        // Box-Muller.
        let u1: f32 = rng.random::<f32>().max(1e-9);
        let u2: f32 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    };
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| normalize((0..dim).map(|_| gauss(&mut rng)).collect()))
        .collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.random_range(0..clusters)];
            normalize(
                c.iter()
                    .map(|x| x + spread * gauss(&mut rng) / (dim as f32).sqrt())
                    .collect(),
            )
        })
        .collect()
}

/// Metadata for synthetic image `id`.
pub fn meta_for(id: u64) -> ImageMeta {
    ImageMeta {
        path: PathBuf::from(format!("/photos/{:03}/img-{id}.jpg", id % 7)),
        size: 1000 + id * 37,
        modified_ns: 1_700_000_000_000_000_000 + id as i64,
        content_hash: *blake3::hash(&id.to_le_bytes()).as_bytes(),
        width: 640 + (id % 5) as u32,
        height: 480,
    }
}

/// Deterministic factors for synthetic image `id` (K = 3, 5 channels, 2 × 3 cells).
pub fn factors_for(id: u64) -> StoredFactors {
    let v: Vec<f32> = (0..15)
        .map(|i| ((id as usize * 7 + i) % 11) as f32 * 0.25)
        .collect();
    let u: Vec<f32> = (0..18)
        .map(|i| ((id as usize + i * 3) % 13) as f32 * 0.1)
        .collect();
    StoredFactors::quantize(
        &Matrix::from_vec(3, 5, v).unwrap(),
        &Matrix::from_vec(6, 3, u).unwrap(),
        2,
        3,
    )
    .unwrap()
}

/// A new image for synthetic id `id`, with factors when `with_factors`.
pub fn image_for(id: u64, dim: usize, with_factors: bool) -> NewImage {
    NewImage {
        meta: meta_for(id),
        descriptor: vector_for(id, dim),
        factors: with_factors.then(|| factors_for(id)),
    }
}

/// Small-index options: graphs from 32 images on, merges of 3.
pub fn small_options() -> IndexOptions {
    IndexOptions::new()
        .m(8)
        .ef_construction(64)
        .graph_min_docs(32)
        .merge_factor(3)
}

/// Builds an index at `dir` holding `vectors` (ids 0..n), committing every `batch`.
pub fn build(dir: &Path, vectors: &[Vec<f32>], options: IndexOptions, batch: usize) -> IndexWriter {
    let dim = vectors[0].len();
    let r = recipe(dim);
    let mut w = IndexWriter::create(dir, r.clone(), options).unwrap();
    for (i, v) in vectors.iter().enumerate() {
        let id = w
            .add(
                &r,
                NewImage {
                    meta: meta_for(i as u64),
                    descriptor: v.clone(),
                    factors: None,
                },
            )
            .unwrap();
        assert_eq!(id, i as u64);
        if (i + 1) % batch == 0 {
            w.commit().unwrap();
        }
    }
    w.commit().unwrap();
    w
}

/// Brute-force top `k` ids of `query` among `(id, vector)`, ties to the smaller id.
pub fn brute_force(items: &[(u64, Vec<f32>)], query: &[f32], k: usize) -> Vec<(u64, f32)> {
    let mut s: Vec<(u64, f32)> = items
        .iter()
        .map(|(id, v)| (*id, deepfactor::index::dot(v, query)))
        .collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.truncate(k);
    s
}

/// Runs the ignored test `name` of this binary in a child process with `env`.
pub fn child(name: &str, env: &[(&str, String)]) -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let mut c = std::process::Command::new(exe);
    c.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}
