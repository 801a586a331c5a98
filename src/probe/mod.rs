//! Memorization probes (thesis ch. 3; Collins, Bigdeli & Süsstrunk, "Detecting Memorization
//! in ReLU Networks", 2018): how compressible a network's ReLU activations are under NMF
//! tells whether it memorized its training data.
//!
//! The pipeline, in the order a study runs it:
//!
//! 1. **Data** — Fashion-MNIST from the standard idx files ([`FashionMnist::load`];
//!    `/usr/share/datasets/fashion-mnist` from the Debian package `dataset-fashion-mnist` is
//!    [`DEFAULT_DATA_DIR`]), optionally a class-balanced subset ([`balanced_subset`]).
//! 2. **Label randomization** — each training label replaced with probability `p` by another
//!    class ([`randomize_labels`]; never the true label; fixed per `(seed, p)`).
//! 3. **Training** ([`train`]) — the FC net 784→128→512→2048→2048→10 or the CNN ([`Arch`]),
//!    in candle with candle-nn's Adam, until every training label is fitted. A
//!    [`Checkpoint`] is a safetensors file with its [`TrainingRecord`] (settings, data
//!    fingerprint, results) as JSON beside it.
//! 4. **Probes** ([`measure`]) — on probe batches of 50 training samples (single-class: one
//!    batch per training label; multi-class: i.i.d.), the activations of a layer set are
//!    replaced, one layer after another during the forward pass, by a rank-`K` compression
//!    (NMF, PCA, k-means, random ablation; [`compress`]) or its residual, for every `K` of a
//!    grid; the accuracy on the batch's training labels gives a curve per probe, and its
//!    area ([`auc`], trapezoids up to the `K` where the compression becomes exact, divided by
//!    that `K`) one number.
//! 5. **Study** ([`run_study`]) — the grid over `p` and seeds, Pearson r of AuC with the test
//!    error per method, how well each method separates the `p` levels ([`Separation`]),
//!    early stopping ([`train_tracked`]: the first peak of the NMF AuC while training on
//!    clean labels vs. the test-loss minimum), tables, JSON records and PNG plots
//!    ([`write_panels`]).
//!
//! # Determinism
//! Every random choice (weights, subset, label noise, batch order, probe batches, k-means
//! seeding, ablated units) comes from a ChaCha8 stream keyed by the seed and its purpose.
//! Training on the CPU gives bit-identical weights run after run for the same seed and thread
//! count: candle's CPU matrix products (the `gemm` crate) split work over output blocks, never
//! over the reduction, and its reductions run sequentially per row; the tests check one seed
//! twice. Probe measurements run their jobs in parallel but each job is a pure function of
//! its inputs, so results do not depend on scheduling. CUDA (`--features cuda`) is not
//! bit-reproducible (cuBLAS picks kernels at run time).
//!
//! # What a K means
//! For a layer set, one `K` applies to every layer in it (capped at each layer's width for
//! random ablation). Where the best rank-`K` compression is exact — NMF and PCA at
//! `K ≥ min(rows, width)`, k-means at `K ≥ rows`, random ablation at `K ≥ width` — the
//! activations pass unchanged, so `K = width` gives back the network's own accuracy. The AuC
//! of a curve ends at the first `K` of the grid where its compression is exact on every layer
//! of the set ([`auc_span`]) and is divided by that `K`: past it every network shows its own
//! accuracy (1 for a fitted network on its training labels), which would only add the same
//! constant to every AuC. With probe batches of 50 an FC layer's matrix has rank ≤ 50, so the
//! NMF, PCA and k-means AuCs of the FC net span `K = 1…60` of the default grid, random
//! ablation's `1…2048`. The thesis' Pearson r and the separation statistics
//! ([`Separation::eta_squared`]) do not depend on this choice (it is an affine map of the
//! AuC over the whole width when every network is fitted).
//!

mod compress;
mod data;
mod early_stop;
mod labels;
mod measure;
mod net;
mod optim;
mod plot;
mod study;
mod train;

pub use compress::{compress, compress_nmf_tensor, is_exact, CompressionSettings, Method, Probe};
pub use data::{
    read_idx_images, read_idx_labels, FashionMnist, Images, LabeledImages, CLASSES, CLASS_NAMES,
    DEFAULT_DATA_DIR, MAX_IDX_BYTES, PIXEL_MEAN, PIXEL_STD,
};
pub use early_stop::{
    argmin, first_local_max, smooth, train_tracked, EarlyStopReport, StopPoint, TrackConfig,
    TrackPoint, DEFAULT_SMOOTHING_EPOCHS, DEFAULT_TRACK_TEST_SUBSET,
};
pub use labels::{balanced_subset, randomize_labels, RandomizedLabels};
pub use measure::{
    accuracy, auc, auc_span, coarse_k_grid, compressed_accuracy, default_k_grid, measure,
    probe_batches, BatchKind, Compression, Curve, LayerSet, Measurement, ProbeBatch, ProbeConfig,
    DEFAULT_PROBE_BATCHES, DEFAULT_PROBE_BATCH_SIZE, DEFAULT_PROBE_SEED,
};
pub use net::{
    activation_matrix, activation_rows, activation_tensor, rows_to_activation, Arch, HookResult,
    LayerInfo, Net, CNN_CONVS, FC_WIDTHS, INPUT_DIM, INPUT_SIDE,
};
pub use optim::FusedAdamW;
pub use plot::{write_panels, Panel, Series};
pub use study::{
    early_stop_panel, pearson, run_study, separation, summarize, train_or_load, write_study_plots,
    CurveSummary, EarlyStopSummary, NetworkRecord, Separation, StudyConfig, StudyObserver,
    StudyRecord, DEFAULT_PS,
};
pub use train::{
    evaluate, label_tensor, pixels, process_cpu_seconds, train, AdamSettings, Checkpoint,
    EpochProgress, EpochRecord, StepObserver, TrainConfig, TrainingRecord, TrainingSet,
    DEFAULT_BATCH_SIZE, DEFAULT_LEARNING_RATE, DEFAULT_MAX_EPOCHS, DEFAULT_SUBSET_SEED,
};
