//! Memorization probes: the idx loader, label randomization, AuC, probes on constructed
//! networks, training determinism, the study's statistics and plots, the CLI end to end.

use candle_core::{Device, Tensor};
use deepfactor::probe::{
    auc, balanced_subset, compressed_accuracy, first_local_max, pearson, probe_batches,
    randomize_labels, read_idx_images, read_idx_labels, separation, smooth, train, Arch, BatchKind,
    Checkpoint, Compression, CompressionSettings, FashionMnist, Images, LabeledImages, LayerSet,
    Method, Net, Panel, Probe, ProbeConfig, Series, TrainConfig, CLASSES, DEFAULT_DATA_DIR,
    FC_WIDTHS, INPUT_DIM,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// idx files

fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Writes a Fashion-MNIST-layout folder of `n_train`/`n_test` synthetic 28×28 images whose
/// class is visible (a bright band at a class-specific row), labels cycling over the classes.
fn synthetic_dataset(dir: &Path, n_train: usize, n_test: usize) {
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut pixels = Vec::with_capacity(n * INPUT_DIM);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i % CLASSES) as u8;
            for r in 0..28 {
                for c in 0..28 {
                    let band = r / 2 == class as usize + 2;
                    let noise = ((i * 31 + r * 7 + c * 13) % 17) as u8;
                    pixels.push(if band { 200 + noise } else { noise * 3 });
                }
            }
            labels.push(class);
        }
        write(
            dir,
            &format!("{prefix}-images-idx3-ubyte.gz"),
            &gzip(&idx_bytes(&[n as u32, 28, 28], &pixels)),
        );
        write(
            dir,
            &format!("{prefix}-labels-idx1-ubyte.gz"),
            &gzip(&idx_bytes(&[n as u32], &labels)),
        );
    }
}

#[test]
fn idx_reads_tiny_hand_written_files() {
    let dir = tempfile::tempdir().unwrap();
    let im = write(
        dir.path(),
        "im",
        &idx_bytes(&[3, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
    );
    let images = read_idx_images(&im).unwrap();
    assert_eq!(
        images,
        Images {
            count: 3,
            rows: 2,
            cols: 2,
            pixels: (1..=12).collect()
        }
    );
    let lab = write(dir.path(), "lab.gz", &gzip(&idx_bytes(&[3], &[0, 9, 4])));
    assert_eq!(read_idx_labels(&lab).unwrap(), vec![0, 9, 4]);
}

#[test]
fn idx_damaged_files_name_the_file_and_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = idx_bytes(&[2, 2, 2], &[0; 8]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "magic",
            {
                let mut v = good.clone();
                v[0] = 0x12;
                v
            },
            "bad magic",
        ),
        (
            "type",
            {
                let mut v = good.clone();
                v[2] = 0x0D;
                v
            },
            "value type 0x0d",
        ),
        (
            "dims",
            idx_bytes(&[16], &[0; 16]),
            "1 dimension(s); expected 3",
        ),
        ("empty", vec![], "truncated: 0 byte(s)"),
        ("short-header", good[..7].to_vec(), "truncated header"),
        (
            "short-data",
            good[..good.len() - 3].to_vec(),
            "declares [2, 2, 2] = 8 bytes of data, found 5",
        ),
        (
            "trailing",
            [good.clone(), vec![1]].concat(),
            "trailing data",
        ),
        (
            "huge",
            idx_bytes(&[60_000, 60_000, 60_000], &[]),
            "exceeds the limit",
        ),
        (
            "gz-truncated",
            gzip(&good)[..20].to_vec(),
            "damaged gzip stream",
        ),
        (
            "gz-corrupt",
            {
                let mut v = gzip(&good);
                let n = v.len();
                v[n - 6] ^= 0xFF; // the CRC/size trailer
                v
            },
            "damaged gzip stream",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = write(d, name, &bytes);
        let e = read_idx_images(&p).unwrap_err().to_string();
        assert!(e.contains(p.to_str().unwrap()), "{name}: {e}");
        assert!(e.contains(want), "{name}: wanted {want:?} in {e:?}");
    }
    let missing = read_idx_labels(d.join("nope")).unwrap_err().to_string();
    assert!(missing.contains("nope"), "{missing}");
}

#[test]
fn dataset_folder_checks_labels_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_dataset(dir.path(), 30, 20);
    let data = FashionMnist::load(dir.path()).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (30, 20));
    assert_eq!(data.train.labels[..3], [0, 1, 2]);
    // A label that is not a class.
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[20], &[[0u8; 19].as_slice(), &[10]].concat())),
    );
    let e = FashionMnist::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("t10k-labels") && e.contains("label 10 of item 19"),
        "{e}"
    );
    // Counts that disagree.
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[19], &[0u8; 19])),
    );
    let e = FashionMnist::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("20 images but 19 labels"), "{e}");
    // A missing file says what to install.
    std::fs::remove_file(dir.path().join("train-images-idx3-ubyte.gz")).unwrap();
    let e = FashionMnist::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.contains("dataset-fashion-mnist"),
        "{e}"
    );
}

#[test]
fn real_fashion_mnist_when_installed() {
    let dir = std::env::var_os("DEEPFACTOR_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if !dir.join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!(
            "SKIP: Fashion-MNIST is absent from {} (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let data = FashionMnist::load(&dir).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    assert_eq!((data.train.images.rows, data.train.images.cols), (28, 28));
    for c in 0..CLASSES as u8 {
        assert_eq!(data.train.labels.iter().filter(|&&l| l == c).count(), 6000);
        assert_eq!(data.test.labels.iter().filter(|&&l| l == c).count(), 1000);
    }
    let mean = data
        .train
        .images
        .pixels
        .iter()
        .map(|&p| p as f64)
        .sum::<f64>()
        / data.train.images.pixels.len() as f64
        / 255.0;
    assert!(
        (mean - deepfactor::probe::PIXEL_MEAN as f64).abs() < 1e-3,
        "{mean}"
    );
}

// ---------------------------------------------------------------------------------------------
// Labels

#[test]
fn label_randomization_rate_and_never_the_true_label() {
    let truth: Vec<u8> = (0..50_000).map(|i| (i * 7 % CLASSES) as u8).collect();
    for p in [0.0, 0.2, 0.6, 1.0] {
        let r = randomize_labels(&truth, p, 3).unwrap();
        let rate = r.replaced_fraction();
        assert!((rate - p).abs() < 0.01, "p {p}: replaced {rate}");
        for (i, (t, (l, replaced))) in truth
            .iter()
            .zip(r.labels.iter().zip(&r.replaced))
            .enumerate()
        {
            if *replaced {
                assert_ne!(l, t, "p {p}: item {i} got its true label back");
            } else {
                assert_eq!(l, t);
            }
        }
        assert_eq!(
            r,
            randomize_labels(&truth, p, 3).unwrap(),
            "fixed per (seed, p)"
        );
    }
    // Replacements are uniform over the nine other classes.
    let r = randomize_labels(&truth, 1.0, 5).unwrap();
    let mut counts = [[0usize; CLASSES]; CLASSES];
    for (t, l) in truth.iter().zip(&r.labels) {
        counts[*t as usize][*l as usize] += 1;
    }
    for (t, row) in counts.iter().enumerate() {
        let n: usize = row.iter().sum();
        for (l, &c) in row.iter().enumerate() {
            if l != t {
                let share = c as f64 / n as f64;
                assert!((share - 1.0 / 9.0).abs() < 0.02, "{t}→{l}: {share}");
            }
        }
    }
    assert_ne!(
        randomize_labels(&truth, 0.5, 1).unwrap().labels,
        randomize_labels(&truth, 0.5, 2).unwrap().labels
    );
    assert!(randomize_labels(&truth, 1.5, 0).is_err());
    assert!(randomize_labels(&[10], 0.5, 0).is_err());
}

#[test]
fn balanced_subset_and_probe_batches() {
    let labels: Vec<u8> = (0..1000).map(|i| (i * 3 % CLASSES) as u8).collect();
    let s = balanced_subset(&labels, 105, 0).unwrap();
    assert_eq!(s.len(), 105);
    assert!(s.windows(2).all(|w| w[0] < w[1]));
    for c in 0..CLASSES as u8 {
        let n = s.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!(n, if c < 5 { 11 } else { 10 });
    }
    assert!(balanced_subset(&labels, 2000, 0).is_err());
    let single = probe_batches(&labels, BatchKind::SingleClass, 10, 50, 1).unwrap();
    assert_eq!(single.len(), CLASSES);
    for (c, b) in single.iter().enumerate() {
        assert_eq!(b.class, Some(c as u8));
        assert_eq!(b.indices.len(), 50);
        assert!(b.indices.iter().all(|&i| labels[i] == c as u8));
        let mut u = b.indices.clone();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), 50, "no sample twice in a batch");
    }
    let multi = probe_batches(&labels, BatchKind::MultiClass, 7, 50, 1).unwrap();
    assert_eq!(multi.len(), 7);
    let classes: std::collections::BTreeSet<u8> =
        multi[0].indices.iter().map(|&i| labels[i]).collect();
    assert!(classes.len() > 3, "i.i.d. batches mix classes");
    assert!(probe_batches(&labels[..200], BatchKind::SingleClass, 10, 50, 1).is_err());
}

// ---------------------------------------------------------------------------------------------
// AuC and early-stopping helpers

#[test]
fn auc_of_known_curves() {
    // Constant 1 over 1..=W: (W − 1)/W.
    let ks: Vec<usize> = vec![1, 2, 4, 8, 16];
    assert!((auc(&ks, &[1.0; 5], 16).unwrap() - 15.0 / 16.0).abs() < 1e-12);
    // Linear a = K/W: ∫₁^W K/W dK / W = (W² − 1)/(2W²), exact under trapezoids.
    let w = 64;
    let ks: Vec<usize> = vec![1, 3, 10, 40, 64];
    let acc: Vec<f64> = ks.iter().map(|&k| k as f64 / w as f64).collect();
    let want = (w * w - 1) as f64 / (2.0 * (w * w) as f64);
    assert!((auc(&ks, &acc, w).unwrap() - want).abs() < 1e-12);
    // A step from 0 to 1 between K = 4 and 5, grid 1..=10: 0.5 + 5 = 5.5, over 10.
    let ks: Vec<usize> = (1..=10).collect();
    let acc: Vec<f64> = ks.iter().map(|&k| if k >= 5 { 1.0 } else { 0.0 }).collect();
    assert!((auc(&ks, &acc, 10).unwrap() - 0.55).abs() < 1e-12);
    // A single point has no area; bad grids are refused.
    assert_eq!(auc(&[5], &[1.0], 10).unwrap(), 0.0);
    assert!(auc(&[2, 1], &[1.0, 1.0], 10).is_err());
    assert!(auc(&[1, 2], &[1.0], 10).is_err());
}

#[test]
fn smoothing_and_stopping_points() {
    assert_eq!(smooth(&[0.0, 3.0, 0.0, 3.0], 1), vec![1.5, 1.0, 2.0, 1.5]);
    assert_eq!(smooth(&[1.0, 2.0], 0), vec![1.0, 2.0]);
    assert_eq!(first_local_max(&[0.1, 0.5, 0.5, 0.4, 0.9]), Some(1));
    assert_eq!(first_local_max(&[0.1, 0.2, 0.3]), Some(2));
    assert_eq!(first_local_max(&[0.3, 0.2]), Some(0));
    assert_eq!(first_local_max(&[]), None);
    assert_eq!(deepfactor::probe::argmin(&[3.0, 1.0, 2.0, 1.0]), Some(1));
}

#[test]
fn pearson_and_separation() {
    assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
    assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    let ps = [0.0, 0.5, 1.0];
    let levels = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0];
    // Perfectly separated: η² = 1, falls with p.
    let s = separation(&ps, &levels, &[0.9, 0.9, 0.6, 0.6, 0.3, 0.3]);
    assert!((s.eta_squared - 1.0).abs() < 1e-12 && s.falls_with_p);
    assert_eq!(s.mean_by_p.len(), 3);
    // No separation: the level means agree.
    let s = separation(&ps, &levels, &[0.2, 0.4, 0.4, 0.2, 0.3, 0.3]);
    assert!(s.eta_squared.abs() < 1e-12 && !s.falls_with_p);
}

// ---------------------------------------------------------------------------------------------
// Probes on constructed networks

/// An FC network whose every hidden layer, on inputs of `types` kinds, has activations
/// `diag(s)·onehot(type)·V` with disjoint non-negative rows of `V`: non-negative rank exactly
/// `types`. The output layer reads the type back, so the network is right on every sample.
fn planted_network(types: usize) -> Net {
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let block = FC_WIDTHS[0] / types; // units per type in fc1
    let mut fan_in = INPUT_DIM;
    for (l, &w) in FC_WIDTHS.iter().enumerate() {
        let mut m = vec![0f32; w * fan_in];
        if l == 0 {
            // Input pixel `ty` drives fc1's units of block `ty`, with unit-dependent weights.
            for ty in 0..types {
                for u in 0..block {
                    m[(ty * block + u) * fan_in + ty] = 1.0 + (u % 5) as f32 * 0.25;
                }
            }
        } else {
            // Identity on the first 128 units.
            for u in 0..FC_WIDTHS[0] {
                m[u * fan_in + u] = 1.0;
            }
        }
        t.insert(
            format!("fc{}.weight", l + 1),
            Tensor::from_vec(m, (w, fan_in), &dev).unwrap(),
        );
        t.insert(
            format!("fc{}.bias", l + 1),
            Tensor::zeros(w, candle_core::DType::F32, &dev).unwrap(),
        );
        fan_in = w;
    }
    let mut out = vec![0f32; 10 * fan_in];
    for ty in 0..types {
        for u in 0..block {
            out[ty * fan_in + ty * block + u] = 1.0;
        }
    }
    t.insert(
        "out.weight".into(),
        Tensor::from_vec(out, (10, fan_in), &dev).unwrap(),
    );
    // Zero activations predict class 9, which no sample has.
    let mut bias = vec![0f32; 10];
    bias[9] = 0.01;
    t.insert("out.bias".into(), Tensor::from_vec(bias, 10, &dev).unwrap());
    Net::from_tensors(Arch::Fc, t, &dev).unwrap()
}

/// A batch of `n` inputs, sample `i` of type `i % types` with intensity varying by sample.
fn planted_batch(n: usize, types: usize) -> (Tensor, Tensor) {
    let mut x = vec![0f32; n * INPUT_DIM];
    let mut y = Vec::new();
    for i in 0..n {
        let ty = i % types;
        x[i * INPUT_DIM + ty] = 0.5 + (i % 7) as f32 * 0.3;
        y.push(ty as u32);
    }
    (
        Tensor::from_vec(x, (n, INPUT_DIM), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
    )
}

#[test]
fn planted_low_nonnegative_rank_gives_full_accuracy_from_that_k_on() {
    let types = 4;
    let net = planted_network(types);
    let (x, y) = planted_batch(50, types);
    assert_eq!(
        deepfactor::probe::accuracy(&net.forward(&x).unwrap(), &y).unwrap(),
        1.0
    );
    let all: Vec<usize> = (0..4).collect();
    let s = CompressionSettings::default();
    let at = |probe, k| Compression {
        probe,
        k,
        settings: &s,
        seed: 0,
    };
    for probe in [Probe::of(Method::Nmf), Probe::of(Method::Pca)] {
        let below = compressed_accuracy(&net, &x, &y, &all, &at(probe, types - 1)).unwrap();
        assert!(
            below < 1.0,
            "{probe}: K = {} already gives {below}",
            types - 1
        );
        for k in [types, types + 1, 10, 50, 128, 2048] {
            let a = compressed_accuracy(&net, &x, &y, &all, &at(probe, k)).unwrap();
            assert_eq!(a, 1.0, "{probe} at K = {k}");
        }
    }
    // K-means is exact once every row is its own centroid.
    let km = compressed_accuracy(&net, &x, &y, &all, &at(Probe::of(Method::Kmeans), 50));
    assert_eq!(km.unwrap(), 1.0);
    // Feeding the residual of an exact compression forward leaves nothing to classify by.
    let r = compressed_accuracy(&net, &x, &y, &all, &at(Probe::residual(Method::Nmf), types));
    let r = r.unwrap();
    assert!(r < 0.5, "residual at the planted rank: {r}");
}

#[test]
fn compression_at_full_width_gives_back_the_exact_accuracy() {
    let dev = Device::Cpu;
    // Random networks, random inputs, labels = the network's own predictions but for a few
    // flipped ones, so that the exact accuracy is neither 0 nor 1.
    for arch in [Arch::Fc, Arch::Cnn] {
        let net = Net::init(arch, 7, &dev).unwrap();
        let n = 12;
        let x = Tensor::randn(0f32, 1.0, (n, INPUT_DIM), &dev).unwrap();
        let logits = net.forward(&x).unwrap();
        let mut y: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        for v in y.iter_mut().take(3) {
            *v = (*v + 1) % 10;
        }
        let y = Tensor::from_vec(y, n, &dev).unwrap();
        let exact = deepfactor::probe::accuracy(&logits, &y).unwrap();
        assert!((exact - 0.75).abs() < 1e-12);
        let set = LayerSet::new(arch.default_layer_set());
        let idx: Vec<usize> = set.resolve(arch).unwrap().iter().map(|(i, _)| *i).collect();
        let width = set.width(arch).unwrap();
        let s = CompressionSettings::default();
        let mut probes = vec![
            Probe::of(Method::Nmf),
            Probe::of(Method::Pca),
            Probe::of(Method::Random),
        ];
        if arch == Arch::Fc {
            probes.push(Probe::of(Method::Kmeans)); // 12 rows ≤ K
        }
        for probe in probes {
            let c = Compression {
                probe,
                k: width,
                settings: &s,
                seed: 0,
            };
            let a = compressed_accuracy(&net, &x, &y, &idx, &c).unwrap();
            assert_eq!(a, exact, "{arch} {probe}");
        }
        // And a real compression changes the logits.
        let k1 = net
            .forward_with(&x, &mut |i, a| {
                if i != idx[0] {
                    return Ok(None);
                }
                let m = deepfactor::probe::activation_matrix(a)?;
                let c = deepfactor::probe::compress(&m, 1, Probe::of(Method::Pca), &s, 0)?;
                Ok(Some(deepfactor::probe::activation_tensor(&c, a)?))
            })
            .unwrap();
        assert_ne!(
            k1.to_vec2::<f32>().unwrap(),
            logits.to_vec2::<f32>().unwrap(),
            "{arch}: K = 1 left the logits unchanged"
        );
    }
}

#[test]
fn activation_matrix_round_trip_for_conv_maps() {
    let dev = Device::Cpu;
    let t = Tensor::arange(0f32, 2.0 * 3.0 * 2.0 * 2.0, &dev)
        .unwrap()
        .reshape((2, 3, 2, 2))
        .unwrap();
    let m = deepfactor::probe::activation_matrix(&t).unwrap();
    assert_eq!(m.shape(), (8, 3));
    // Row 0 is sample 0, cell (0, 0): channels 0, 1, 2 at offsets 0, 4, 8.
    assert_eq!(m.row(0), &[0.0, 4.0, 8.0]);
    // Row 5 is sample 1, cell (0, 1).
    assert_eq!(m.row(5), &[13.0, 17.0, 21.0]);
    let back = deepfactor::probe::activation_tensor(&m, &t).unwrap();
    assert_eq!(
        back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Training

fn tiny_data(n_train: usize, n_test: usize) -> FashionMnist {
    let make = |n: usize, off: usize| {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = (i % CLASSES) as u8;
            for p in 0..INPUT_DIM {
                let band = p / 56 == class as usize + 2;
                pixels.push(if band {
                    220
                } else {
                    ((i + off) * 13 + p * 7) as u8 % 40
                });
            }
            labels.push(class);
        }
        LabeledImages {
            images: Images {
                count: n,
                rows: 28,
                cols: 28,
                pixels,
            },
            labels,
        }
    };
    FashionMnist {
        train: make(n_train, 0),
        test: make(n_test, 1000),
    }
}

#[test]
fn training_is_deterministic_for_a_seed_and_checkpoints_round_trip() {
    let data = tiny_data(60, 20);
    let mut cfg = TrainConfig::new(Arch::Fc);
    cfg.p = 0.5;
    cfg.batch_size = 16;
    cfg.max_epochs = 2;
    let dev = Device::Cpu;
    let run = |cfg: &TrainConfig| train(&data, cfg, &dev, &mut |_| {}, None).unwrap();
    let (a, ra) = run(&cfg);
    let (b, rb) = run(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let pa = Checkpoint::save(&dir.path().join("a"), &a, &ra).unwrap();
    let pb = Checkpoint::save(&dir.path().join("b"), &b, &rb).unwrap();
    assert_eq!(
        std::fs::read(&pa).unwrap(),
        std::fs::read(&pb).unwrap(),
        "same seed, same weights bit for bit"
    );
    assert_eq!(ra.history, rb.history);
    assert_eq!(ra.epochs, 2);
    assert!((ra.replaced_fraction - 0.5).abs() < 0.2);
    // Another seed gives other weights.
    let mut other = cfg.clone();
    other.seed = 1;
    let (c, rc) = run(&other);
    let pc = Checkpoint::save(&dir.path().join("c"), &c, &rc).unwrap();
    assert_ne!(std::fs::read(&pa).unwrap(), std::fs::read(&pc).unwrap());
    // The checkpoint reloads to the same network and the same training data.
    let back = Checkpoint::load(&pa, &dev).unwrap();
    assert_eq!(back.record, ra);
    let x = deepfactor::probe::pixels(&data.test, &[0, 1, 2], &dev).unwrap();
    assert_eq!(
        a.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
        back.net.forward(&x).unwrap().to_vec2::<f32>().unwrap()
    );
    assert!(back.training_set(&data).is_ok());
    // Another data set is noticed.
    let e = back
        .training_set(&tiny_data(61, 20))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fingerprint"), "{e}");
    // A damaged checkpoint names its file.
    std::fs::write(&pa, b"not safetensors").unwrap();
    let e = Checkpoint::load(&pa, &dev).unwrap_err().to_string();
    assert!(e.contains("a/fc-p0.5-s0.safetensors"), "{e}");
}

#[test]
fn training_fits_every_label_of_a_small_set() {
    let data = tiny_data(40, 10);
    let mut cfg = TrainConfig::new(Arch::Fc);
    cfg.p = 1.0; // every label wrong: only memorization fits them
    cfg.batch_size = 20;
    cfg.max_epochs = 60;
    let (_, r) = train(&data, &cfg, &Device::Cpu, &mut |_| {}, None).unwrap();
    assert!(
        r.fitted,
        "{} epochs, train accuracy {}",
        r.epochs, r.train_accuracy
    );
    assert_eq!(r.train_accuracy, 1.0);
    assert!(r.epochs < 60);
    assert!(
        r.test_error > 0.5,
        "random labels cannot generalize: {}",
        r.test_error
    );
}

#[test]
fn measure_gives_curves_for_every_probe_and_is_repeatable() {
    let data = tiny_data(100, 10);
    let net = Net::init(Arch::Fc, 3, &Device::Cpu).unwrap();
    let mut cfg = ProbeConfig::new(Arch::Fc);
    cfg.batch_size = 6;
    cfg.batches = 3;
    cfg.k_grid = Some(vec![1, 2, 4, 8, 2048]);
    cfg.layer_sets.push(LayerSet::new(vec!["fc3".into()]));
    let m = deepfactor::probe::measure(&net, &data.train, &cfg, &|_, _| {}).unwrap();
    // 2 sets × (6 single-class probes + 4 multi-class).
    assert_eq!(m.curves.len(), 20);
    for c in &m.curves {
        assert_eq!(c.k, vec![1, 2, 4, 8, 2048]);
        assert_eq!(c.width, 2048);
        // Batches of 6 rows: NMF, PCA and k-means are exact from K = 6 on, so their AuC ends at
        // the first grid K past it; random ablation only at the full width.
        let span = if c.probe.method == Method::Random {
            2048
        } else {
            8
        };
        assert_eq!(c.span, span, "{}", c.probe);
        let end = c.k.iter().position(|&k| k == span).unwrap() + 1;
        let want = auc(&c.k[..end], &c.accuracy[..end], span).unwrap();
        assert!((c.auc - want).abs() < 1e-12, "{}", c.probe);
        assert!((0.0..=1.0).contains(&c.auc), "{c:?}");
        let rows = if c.batch_kind == BatchKind::SingleClass {
            10
        } else {
            3
        };
        assert_eq!(c.batch_auc.len(), rows);
        let mean = c.batch_auc.iter().sum::<f64>() / rows as f64;
        assert!((mean - c.auc).abs() < 1e-9);
        // K = width: the exact accuracy (residual: all zeros).
        if !c.probe.residual {
            let base = m
                .base_accuracy
                .iter()
                .find(|(k, _)| *k == c.batch_kind)
                .unwrap()
                .1;
            assert!((c.accuracy[4] - base).abs() < 1e-12, "{}", c.probe);
        }
    }
    let again = deepfactor::probe::measure(&net, &data.train, &cfg, &|_, _| {}).unwrap();
    assert_eq!(again.curves, m.curves);
    // A measurement stored without spans is scored again to the same numbers.
    let mut old = m.clone();
    for c in &mut old.curves {
        c.span = 0;
        c.auc = -1.0;
        c.batch_auc.iter_mut().for_each(|a| *a = -1.0);
    }
    old.rescore(Arch::Fc).unwrap();
    assert_eq!(old.curves, m.curves);
}

// ---------------------------------------------------------------------------------------------
// Plots and the command line

#[test]
fn plots_are_pngs_with_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plot.png");
    let panel = Panel {
        title: "nmf".into(),
        x_label: "K".into(),
        y_label: "accuracy".into(),
        series: vec![Series {
            label: "p=0".into(),
            points: vec![(1.0, 0.1), (10.0, 0.8), (100.0, 1.0)],
            color: 0,
            line: true,
            markers: true,
            faint: false,
        }],
        log_x: true,
        ..Default::default()
    };
    deepfactor::probe::write_panels(&p, "A TITLE", &[panel.clone(), panel], 2).unwrap();
    let img = image::open(&p).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1240, 490));
    // The title is drawn with the bitmap font: dark pixels in the top strip, centred.
    let dark = (0..40)
        .flat_map(|y| (500..740).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
        .count();
    assert!(dark > 50, "{dark} dark title pixels");
    assert!(deepfactor::probe::write_panels(&p, "x", &[], 1).is_err());
}

#[test]
fn cli_study_end_to_end_on_a_tiny_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    synthetic_dataset(&data, 200, 50);
    let out = dir.path().join("study");
    let bin = env!("CARGO_BIN_EXE_deepfactor");
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = vec![
            "probe",
            "study",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--p",
            "0,1",
            "--seeds",
            "1",
            "--train-subset",
            "200",
            "--batch-size",
            "50",
            "--max-epochs",
            "3",
            "--k",
            "1,4,128,2048",
            "--probe-batch-size",
            "5",
            "--probe-batches",
            "2",
            "--early-stopping-runs",
            "1",
            "--track-epochs",
            "2",
            "--track-every",
            "2",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap()
    };
    let o = run(&["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let nets = v["networks"].as_array().unwrap();
    assert_eq!(nets.len(), 2);
    for n in nets {
        for key in ["p", "seed", "train_accuracy", "test_error"] {
            assert!(n[key].is_number(), "{key} in {n}");
        }
        for m in ["nmf", "pca", "kmeans", "random"] {
            assert!(n["auc"][m].is_number(), "auc.{m}");
        }
    }
    for m in ["nmf", "pca", "kmeans", "random"] {
        assert!(v["pearson_r"].get(m).is_some(), "pearson_r.{m}");
    }
    assert_eq!(v["early_stopping"].as_array().unwrap().len(), 1);
    for f in [
        "study.json",
        "nets/fc-p0-s0.safetensors",
        "nets/fc-p1-s0.json",
        "measure/fc-p1-s0.json",
        "early-stop/fc-p0-s0.early-stop.json",
        "plots/curves-single-class.png",
        "plots/curves-multi-class.png",
        "plots/auc-vs-p.png",
        "plots/auc-vs-test-error.png",
        "plots/early-stopping.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // A second run resumes from what is there and prints the table.
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("reusing"), "{err}");
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("Pearson r") && table.contains("Early stopping"),
        "{table}"
    );
    // measure on a checkpoint, and a clear error for a bad data folder.
    let o = std::process::Command::new(bin)
        .args([
            "probe",
            "measure",
            "--data",
            data.to_str().unwrap(),
            "--k",
            "1,2048",
        ])
        .args([
            "--probe-batch-size",
            "5",
            "--probes",
            "nmf,random",
            "--json",
        ])
        .arg(out.join("nets/fc-p0-s0.safetensors"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v[0]["auc"]["nmf"].is_number() && v[0]["auc"].get("pca").is_none());
    let o = std::process::Command::new(bin)
        .args(["probe", "train", "--data", "/nonexistent", "--out"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/train-images-idx3-ubyte.gz"));
}

#[test]
fn nmf_on_tensors_follows_the_slice_engine() {
    // The GPU path of the NMF probe, run here on the CPU, against the CPU engine.
    let dev = Device::Cpu;
    let net = Net::init(Arch::Fc, 1, &dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (20, INPUT_DIM), &dev).unwrap();
    let mut acts = None;
    net.forward_with(&x, &mut |i, a| {
        if i == 1 {
            acts = Some(a.clone());
        }
        Ok(None)
    })
    .unwrap();
    let a = acts.unwrap();
    let m = deepfactor::probe::activation_matrix(&a).unwrap();
    let s = CompressionSettings::default();
    for k in [1, 3, 8, 20] {
        let t = deepfactor::probe::compress_nmf_tensor(&a, k, false, &s).unwrap();
        let c = deepfactor::probe::compress(&m, k, Probe::of(Method::Nmf), &s, 0).unwrap();
        let t = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let num: f64 = t
            .iter()
            .zip(c.as_slice())
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let rel = num.sqrt() / m.frobenius_norm();
        assert!(rel < 1e-3, "K = {k}: relative difference {rel}");
        // The residual is what the reconstruction leaves.
        let r = deepfactor::probe::compress_nmf_tensor(&a, k, true, &s).unwrap();
        let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for ((x, y), z) in r.iter().zip(&t).zip(m.as_slice()) {
            assert!((x + y - z).abs() < 1e-4);
        }
    }
}
