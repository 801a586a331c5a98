//! `deepfactor.compress` and `deepfactor.probe_measure`: the memorization probes of
//! [`crate::probe`] (the compressions, and a checkpoint's measurement as
//! `deepfactor probe measure` makes it).

use super::arrays::{matrix, matrix_array};
use super::errors::OrRaise;
use super::progress::Progress;
use crate::probe::{
    compress as compress_matrix, measure, Checkpoint, CompressionSettings, FashionMnist, LayerSet,
    NetworkRecord, Probe, ProbeConfig, DEFAULT_DATA_DIR, DEFAULT_PROBE_BATCHES,
    DEFAULT_PROBE_BATCH_SIZE,
};
use numpy::PyArray2;
use pyo3::prelude::*;
use std::path::PathBuf;

/// compress(a, k, method="nmf", seed=0) -> ndarray
///
/// The rank-``k`` compression of a probe (thesis ch. 3) of ``a`` (rows × columns float32,
/// non-negative for NMF): ``"nmf"`` (``U·V``), ``"pca"`` (uncentred projection onto the top
/// ``k`` right singular vectors), ``"kmeans"`` (each row replaced by its centroid),
/// ``"random"`` (``k`` random columns kept, the others zeroed), or the residuals
/// ``"nmf-residual"``, ``"pca-residual"`` (``a`` minus the compression). Where the compression
/// is exact (NMF and PCA at ``k ≥ min(rows, columns)``, k-means at ``k ≥ rows``, random at
/// ``k ≥ columns``) ``a`` comes back unchanged. ``seed`` keys k-means and random ablation.
/// The GIL is released while it runs.
#[pyfunction]
#[pyo3(signature = (a, k, method = "nmf", seed = 0))]
fn compress<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    k: usize,
    method: &str,
    seed: u64,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let a = matrix(a, "a")?;
    let probe: Probe = method.parse().or_raise()?;
    let settings = CompressionSettings::default();
    let out = py
        .detach(|| compress_matrix(&a, k, probe, &settings, seed))
        .or_raise()?;
    matrix_array(py, out)
}

/// probe_measure(checkpoint, data="/usr/share/datasets/fashion-mnist", probes=None,
/// layers=None, k=None, batch_size=50, batches=10, seed=0, progress=None) -> dict
///
/// The memorization probes of a trained network, as ``deepfactor probe measure --json``
/// measures them: ``checkpoint`` is a ``.safetensors`` file from ``deepfactor probe train``
/// (or its ``.json`` record), ``data`` the folder of the Fashion-MNIST idx files. ``probes``
/// (default: all six), ``layers`` (compressed together; default: every FC layer, or the CNN's
/// final block), ``k`` (the K grid; default: 1…8, then ×1.4 steps up to the width),
/// ``batch_size``, ``batches`` (multi-class probe batches) and ``seed`` are the CLI's
/// ``--probes``, ``--layers``, ``--k``, ``--probe-batch-size``, ``--probe-batches`` and
/// ``--probe-seed``, with its defaults. Returns one element of the CLI's JSON array as a dict
/// (settings, accuracies, a curve and AuC per probe, batch kind and layer set). The GIL is
/// released while it runs; ``progress(done, total)`` counts probe jobs.
#[pyfunction]
#[pyo3(signature = (checkpoint, data = PathBuf::from(DEFAULT_DATA_DIR), probes = None,
                    layers = None, k = None, batch_size = DEFAULT_PROBE_BATCH_SIZE,
                    batches = DEFAULT_PROBE_BATCHES, seed = 0, progress = None))]
#[allow(clippy::too_many_arguments)]
fn probe_measure<'py>(
    py: Python<'py>,
    checkpoint: PathBuf,
    data: PathBuf,
    probes: Option<Vec<String>>,
    layers: Option<Vec<String>>,
    k: Option<Vec<usize>>,
    batch_size: usize,
    batches: usize,
    seed: u64,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let probes = probes
        .map(|ps| ps.iter().map(|p| p.parse::<Probe>()).collect())
        .transpose()
        .or_raise()?;
    let progress = Progress::new(progress)?;
    let json = py
        .detach(|| -> crate::Result<String> {
            let data = FashionMnist::load(&data)?;
            let ck = Checkpoint::load(&checkpoint, &candle_core::Device::Cpu)?;
            let set = ck.training_set(&data)?;
            let mut cfg = ProbeConfig::new(ck.record.settings.arch);
            if let Some(p) = probes {
                let p: Vec<Probe> = p;
                cfg.multi_class_probes = p.iter().copied().filter(|p| !p.residual).collect();
                cfg.probes = p;
            }
            if let Some(l) = layers {
                cfg.layer_sets = vec![LayerSet::new(l)];
            }
            cfg.k_grid = k;
            cfg.batch_size = batch_size;
            cfg.batches = batches;
            cfg.seed = seed;
            let m = measure(&ck.net, &set.data, &cfg, &|d, t| progress.report(d, t))?;
            let record = NetworkRecord::new(&ck.path, &ck.record, &m);
            serde_json::to_string(&record).map_err(|e| crate::Error::invalid(e.to_string()))
        })
        .or_raise()?;
    progress.finish()?;
    py.import("json")?.call_method1("loads", (json,))
}

/// Adds `compress` and `probe_measure` to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(probe_measure, m)?)?;
    Ok(())
}
