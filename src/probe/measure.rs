//! Probing a trained network: accuracy-vs-K curves of its compressed layers on probe batches,
//! and their area under the curve (AuC).

use super::compress::{
    compress, compress_nmf_tensor, is_exact, CompressionSettings, Method, Probe,
};
use super::data::{LabeledImages, CLASSES};
use super::labels::{rng, stream};
use super::net::{
    activation_matrix, activation_rows, activation_tensor, rows_to_activation, Arch, LayerInfo, Net,
};
use super::train::{label_tensor, pixels};
use crate::{Error, Result};
use candle_core::Tensor;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Samples per probe batch (thesis §3.4).
pub const DEFAULT_PROBE_BATCH_SIZE: usize = 50;
/// Probe batches per kind (thesis: 10; single-class batches are one per class).
pub const DEFAULT_PROBE_BATCHES: usize = 10;
/// Seed of the probe batches.
pub const DEFAULT_PROBE_SEED: u64 = 0;

/// How a probe batch is drawn from the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchKind {
    /// All samples share one training label (the label the net was trained with).
    SingleClass,
    /// Samples drawn uniformly (i.i.d. batches).
    MultiClass,
}

impl BatchKind {
    /// `"single-class"` or `"multi-class"`.
    pub fn name(self) -> &'static str {
        match self {
            BatchKind::SingleClass => "single-class",
            BatchKind::MultiClass => "multi-class",
        }
    }
}

impl std::str::FromStr for BatchKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "single-class" | "single" => Ok(BatchKind::SingleClass),
            "multi-class" | "multi" => Ok(BatchKind::MultiClass),
            other => Err(Error::invalid(format!(
                "unknown batch kind {other:?}: expected single-class or multi-class"
            ))),
        }
    }
}

/// One probe batch: indices into the training set the network was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeBatch {
    /// How it was drawn.
    pub kind: BatchKind,
    /// The training label of every sample, for single-class batches.
    pub class: Option<u8>,
    /// The samples.
    pub indices: Vec<usize>,
}

/// Draws probe batches of `size` samples from a training set with `labels`: one per class
/// (single-class; `count` is ignored) or `count` independent uniform batches (multi-class),
/// each without repetition, from a ChaCha8 stream of `seed`.
pub fn probe_batches(
    labels: &[u8],
    kind: BatchKind,
    count: usize,
    size: usize,
    seed: u64,
) -> Result<Vec<ProbeBatch>> {
    if size == 0 {
        return Err(Error::invalid("probe batches need at least 1 sample"));
    }
    let mut out = Vec::new();
    match kind {
        BatchKind::SingleClass => {
            for class in 0..CLASSES as u8 {
                let members: Vec<usize> =
                    (0..labels.len()).filter(|&i| labels[i] == class).collect();
                if members.len() < size {
                    return Err(Error::invalid(format!(
                        "class {class} has {} training samples, fewer than a probe batch of {size}",
                        members.len()
                    )));
                }
                let mut r = rng(seed, stream::PROBE, class as u64);
                out.push(ProbeBatch {
                    kind,
                    class: Some(class),
                    indices: sample(&members, size, &mut r),
                });
            }
        }
        BatchKind::MultiClass => {
            if labels.len() < size {
                return Err(Error::invalid(format!(
                    "{} training samples, fewer than a probe batch of {size}",
                    labels.len()
                )));
            }
            let all: Vec<usize> = (0..labels.len()).collect();
            for b in 0..count {
                let mut r = rng(seed, stream::PROBE, 1000 + b as u64);
                out.push(ProbeBatch {
                    kind,
                    class: None,
                    indices: sample(&all, size, &mut r),
                });
            }
        }
    }
    Ok(out)
}

/// `size` distinct items of `from` (partial Fisher–Yates), in draw order.
fn sample(from: &[usize], size: usize, r: &mut impl Rng) -> Vec<usize> {
    let mut v = from.to_vec();
    for i in 0..size {
        let j = r.random_range(i..v.len());
        v.swap(i, j);
    }
    v.truncate(size);
    v
}

/// Layers compressed together, one after another in the forward pass, at the same `K`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSet {
    /// A name for reports (`fc1+fc2+fc3+fc4`, or one layer's name).
    pub name: String,
    /// The layers, by name.
    pub layers: Vec<String>,
}

impl LayerSet {
    /// A set of `layers`, named by joining them with `+`.
    pub fn new(layers: Vec<String>) -> Self {
        LayerSet {
            name: layers.join("+"),
            layers,
        }
    }

    /// Resolves the names against `arch`: the layers' indices and infos, in forward order.
    pub fn resolve(&self, arch: Arch) -> Result<Vec<(usize, LayerInfo)>> {
        let all = arch.layers();
        let mut out = Vec::new();
        for name in &self.layers {
            let i = all.iter().position(|l| &l.name == name).ok_or_else(|| {
                Error::invalid(format!(
                    "the {arch} network has no layer {name:?} (it has {})",
                    all.iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            out.push((i, all[i].clone()));
        }
        if out.is_empty() {
            return Err(Error::invalid(format!(
                "layer set {:?} is empty",
                self.name
            )));
        }
        out.sort_by_key(|(i, _)| *i);
        out.dedup_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// The width that normalizes the AuC: the widest layer of the set (at `K` equal to it no
    /// layer is compressed by rank).
    pub fn width(&self, arch: Arch) -> Result<usize> {
        Ok(self
            .resolve(arch)?
            .iter()
            .map(|(_, l)| l.width)
            .max()
            .unwrap_or(1))
    }
}

/// The default K grid over `1..=width`: every K up to 8, then steps growing by about 1.4×,
/// ending at `width`.
pub fn default_k_grid(width: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = (1..=width.min(8)).collect();
    let mut k = 8.0f64;
    loop {
        k *= 1.4;
        let r = k.round() as usize;
        if r >= width {
            break;
        }
        if ks.last() != Some(&r) {
            ks.push(r);
        }
    }
    if ks.last() != Some(&width) {
        ks.push(width);
    }
    ks
}

/// A coarse grid (powers of two and `width`), for tracking during training.
pub fn coarse_k_grid(width: usize) -> Vec<usize> {
    let mut ks = Vec::new();
    let mut k = 1;
    while k < width {
        ks.push(k);
        k *= 2;
    }
    ks.push(width);
    ks
}

/// Area under an accuracy-vs-K curve by trapezoids over the grid, divided by `width` (so at
/// most 1 for accuracies in `[0, 1]` and a grid inside `1..=width`).
pub fn auc(ks: &[usize], accuracy: &[f64], width: usize) -> Result<f64> {
    if ks.len() != accuracy.len() || ks.is_empty() {
        return Err(Error::invalid(format!(
            "AuC of {} K values and {} accuracies",
            ks.len(),
            accuracy.len()
        )));
    }
    if width == 0 || ks.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::invalid(
            "AuC needs a strictly increasing K grid and a positive width",
        ));
    }
    let area: f64 = ks
        .windows(2)
        .zip(accuracy.windows(2))
        .map(|(k, a)| (k[1] - k[0]) as f64 * (a[0] + a[1]) / 2.0)
        .sum();
    Ok(area / width as f64)
}

/// Where a probe's AuC ends: the first `K` of `grid` from which its compression is exact on
/// every layer of the set for batches of `rows` samples ([`is_exact`]; for a residual probe,
/// the same `K` as its compression), else the grid's last `K`. Past it the curve is the
/// network's own accuracy whatever the network, so the AuC stops there and is divided by it:
/// with batches of 50, NMF and PCA are exact on an FC layer from `K = 50` on, and an area over
/// `1…2048` divided by 2048 would put every network within 0.001 of 1.
pub fn auc_span(probe: Probe, grid: &[usize], rows: usize, layers: &[LayerInfo]) -> usize {
    grid.iter()
        .copied()
        .find(|&k| {
            layers
                .iter()
                .all(|l| is_exact(probe.method, k, rows * l.spatial, l.width))
        })
        .or_else(|| grid.last().copied())
        .unwrap_or(1)
}

/// The AuC of a curve over `grid` up to `span` (a `K` of the grid), divided by `span`.
fn auc_to(grid: &[usize], accuracy: &[f64], span: usize) -> Result<f64> {
    let end = grid
        .iter()
        .position(|&k| k == span)
        .map_or(grid.len(), |i| i + 1);
    auc(&grid[..end], &accuracy[..end.min(accuracy.len())], span)
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// The probes.
    pub probes: Vec<Probe>,
    /// Probes run on multi-class batches (default: the replacement probes; residual probes
    /// only on single-class batches).
    pub multi_class_probes: Vec<Probe>,
    /// The layer sets, each compressed as a whole.
    pub layer_sets: Vec<LayerSet>,
    /// Batch kinds measured.
    pub batch_kinds: Vec<BatchKind>,
    /// Samples per batch.
    pub batch_size: usize,
    /// Multi-class batches.
    pub batches: usize,
    /// K grid; `None`: [`default_k_grid`] of each set's width.
    pub k_grid: Option<Vec<usize>>,
    /// Compression settings.
    pub compression: CompressionSettings,
    /// Seed of the probe batches, k-means and random ablation.
    pub seed: u64,
}

impl ProbeConfig {
    /// The thesis' setup for `arch`: every probe, the default layer set (all FC layers; the
    /// CNN's final block), both batch kinds, 10 batches of 50.
    pub fn new(arch: Arch) -> Self {
        ProbeConfig {
            probes: Probe::all(),
            multi_class_probes: Probe::all().into_iter().filter(|p| !p.residual).collect(),
            layer_sets: vec![LayerSet::new(arch.default_layer_set())],
            batch_kinds: vec![BatchKind::SingleClass, BatchKind::MultiClass],
            batch_size: DEFAULT_PROBE_BATCH_SIZE,
            batches: DEFAULT_PROBE_BATCHES,
            k_grid: None,
            compression: CompressionSettings::default(),
            seed: DEFAULT_PROBE_SEED,
        }
    }

    /// The K grid of a set of width `width`: the configured grid (checked), or the default.
    pub fn grid(&self, width: usize) -> Result<Vec<usize>> {
        match &self.k_grid {
            None => Ok(default_k_grid(width)),
            Some(g) => {
                let mut g: Vec<usize> = g.iter().copied().filter(|&k| k <= width).collect();
                g.sort_unstable();
                g.dedup();
                if g.first() == Some(&0) || g.is_empty() {
                    return Err(Error::invalid(format!(
                        "the K grid must hold values in 1..={width}"
                    )));
                }
                Ok(g)
            }
        }
    }

    fn probes_for(&self, kind: BatchKind) -> &[Probe] {
        match kind {
            BatchKind::SingleClass => &self.probes,
            BatchKind::MultiClass => &self.multi_class_probes,
        }
    }
}

/// An accuracy-vs-K curve of one probe, layer set and batch kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// The probe (`nmf`, …, `pca-residual`).
    pub probe: Probe,
    /// The layer set's name.
    pub layers: String,
    /// The batch kind.
    pub batch_kind: BatchKind,
    /// The set's width (its widest layer): the grid's default end.
    pub width: usize,
    /// Where the AuC ends and what divides it ([`auc_span`]).
    #[serde(default)]
    pub span: usize,
    /// The K grid.
    pub k: Vec<usize>,
    /// Accuracy at each K, mean over the batches.
    pub accuracy: Vec<f64>,
    /// Accuracy at each K per batch (`[batch][k]`).
    pub batch_accuracy: Vec<Vec<f64>>,
    /// AuC of the mean curve over `1…span`, divided by `span` (equal to the mean of the
    /// batches' AuCs).
    pub auc: f64,
    /// AuC per batch (per class, in class order, for single-class batches).
    pub batch_auc: Vec<f64>,
}

/// All curves of one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The settings measured with.
    pub config: ProbeConfig,
    /// The batches, per kind.
    pub batches: Vec<ProbeBatch>,
    /// Uncompressed accuracy of each batch kind (mean over its batches).
    pub base_accuracy: Vec<(BatchKind, f64)>,
    /// The curves.
    pub curves: Vec<Curve>,
    /// Wall-clock seconds of the whole measurement.
    pub seconds: f64,
    /// CPU seconds the process used meanwhile (all threads; `None` off Linux).
    pub cpu_seconds: Option<f64>,
    /// Seconds spent per probe (summed over its curves).
    pub probe_seconds: Vec<(Probe, f64)>,
}

impl Measurement {
    /// Recomputes every curve's span and AuC from its accuracies ([`auc_span`]): for
    /// measurements stored before the AuC ended at the span.
    pub fn rescore(&mut self, arch: Arch) -> Result<()> {
        for c in &mut self.curves {
            let set = self
                .config
                .layer_sets
                .iter()
                .find(|s| s.name == c.layers)
                .ok_or_else(|| Error::invalid(format!("no layer set {}", c.layers)))?;
            let infos: Vec<LayerInfo> = set.resolve(arch)?.into_iter().map(|(_, l)| l).collect();
            c.span = auc_span(c.probe, &c.k, self.config.batch_size, &infos);
            c.auc = auc_to(&c.k, &c.accuracy, c.span)?;
            c.batch_auc = c
                .batch_accuracy
                .iter()
                .map(|r| auc_to(&c.k, r, c.span))
                .collect::<Result<_>>()?;
        }
        Ok(())
    }

    /// The curve of `probe` on `layers` and `kind`, if measured.
    pub fn curve(&self, probe: Probe, layers: &str, kind: BatchKind) -> Option<&Curve> {
        self.curves
            .iter()
            .find(|c| c.probe == probe && c.layers == layers && c.batch_kind == kind)
    }
}

/// One compression of a probe: which, at what rank, with which settings and seed.
#[derive(Debug, Clone, Copy)]
pub struct Compression<'a> {
    /// The probe.
    pub probe: Probe,
    /// The rank `K`.
    pub k: usize,
    /// Its settings.
    pub settings: &'a CompressionSettings,
    /// Seed of k-means and random ablation (mixed with the layer index).
    pub seed: u64,
}

/// Accuracy of `net` on the batch `x`/`y` with the layers of `set` (indices) compressed as `c`
/// says, one after another during the forward pass.
pub fn compressed_accuracy(
    net: &Net,
    x: &Tensor,
    y: &Tensor,
    set: &[usize],
    c: &Compression<'_>,
) -> Result<f64> {
    let logits = net.forward_with(x, &mut |i, a| {
        if !set.contains(&i) {
            return Ok(None);
        }
        if c.probe.method == Method::Nmf && !a.device().is_cpu() {
            // On a GPU, NMF runs there; the other methods are cheap on the host.
            let rows = activation_rows(a)?;
            let r = compress_nmf_tensor(&rows, c.k, c.probe.residual, c.settings)?;
            return Ok(Some(rows_to_activation(&r, a)?));
        }
        let m = activation_matrix(a)?;
        let r = compress(&m, c.k, c.probe, c.settings, c.seed ^ ((i as u64) << 32))?;
        Ok(Some(activation_tensor(&r, a)?))
    })?;
    accuracy(&logits, y)
}

/// Fraction of rows of `logits` whose arg-max is the label in `y`.
pub fn accuracy(logits: &Tensor, y: &Tensor) -> Result<f64> {
    let n = y.dim(0)?;
    let hits = logits
        .argmax(1)?
        .eq(y)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(hits as f64 / n.max(1) as f64)
}

/// Measures every curve of `config` for `net` on its training set `train` (images with the
/// labels it was trained with). Jobs (batch × K) run in parallel; the result does not depend
/// on the number of threads.
pub fn measure(
    net: &Net,
    train: &LabeledImages,
    config: &ProbeConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Measurement> {
    let start = Instant::now();
    let cpu_start = super::train::process_cpu_seconds();
    let arch = net.arch();
    let mut batches = Vec::new();
    for &kind in &config.batch_kinds {
        batches.extend(probe_batches(
            &train.labels,
            kind,
            config.batches,
            config.batch_size,
            config.seed,
        )?);
    }
    let inputs: Vec<(Tensor, Tensor)> = batches
        .iter()
        .map(|b| {
            Ok((
                pixels(train, &b.indices, net.device())?,
                label_tensor(&train.labels, &b.indices, net.device())?,
            ))
        })
        .collect::<Result<_>>()?;
    // Each batch's own accuracy: also the result of every replacement probe that is exact on
    // every layer of its set (which then needs no forward pass).
    let batch_base: Vec<f64> = inputs
        .iter()
        .map(|(x, y)| accuracy(&net.forward(x)?, y))
        .collect::<Result<_>>()?;
    let mut base_accuracy = Vec::new();
    for &kind in &config.batch_kinds {
        let v: Vec<f64> = (0..batches.len())
            .filter(|&b| batches[b].kind == kind)
            .map(|b| batch_base[b])
            .collect();
        base_accuracy.push((kind, v.iter().sum::<f64>() / v.len().max(1) as f64));
    }
    // Jobs: (set, probe, batch, k).
    struct Job {
        set: usize,
        probe: Probe,
        batch: usize,
        k: usize,
    }
    let mut resolved = Vec::new();
    let mut infos = Vec::new();
    let mut grids = Vec::new();
    for s in &config.layer_sets {
        let r = s.resolve(arch)?;
        grids.push(config.grid(s.width(arch)?)?);
        resolved.push(r.iter().map(|(i, _)| *i).collect::<Vec<_>>());
        infos.push(r.into_iter().map(|(_, l)| l).collect::<Vec<_>>());
    }
    let mut jobs = Vec::new();
    for (si, grid) in grids.iter().enumerate() {
        for (bi, b) in batches.iter().enumerate() {
            for &probe in config.probes_for(b.kind) {
                for &k in grid {
                    jobs.push(Job {
                        set: si,
                        probe,
                        batch: bi,
                        k,
                    });
                }
            }
        }
    }
    // Costly jobs first, so that the parallel tail is short.
    jobs.sort_by_key(|j| std::cmp::Reverse((j.probe.method == Method::Nmf, j.k)));
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = jobs.len();
    let results: Vec<(f64, f64)> = jobs
        .par_iter()
        .map(|j| {
            let t = Instant::now();
            let (x, y) = &inputs[j.batch];
            let seed = config.seed.wrapping_add(j.batch as u64);
            let c = Compression {
                probe: j.probe,
                k: j.k,
                settings: &config.compression,
                seed,
            };
            let rows = batches[j.batch].indices.len();
            let exact = !j.probe.residual
                && infos[j.set]
                    .iter()
                    .all(|l| is_exact(j.probe.method, j.k, rows * l.spatial, l.width));
            let acc = if exact {
                batch_base[j.batch]
            } else {
                compressed_accuracy(net, x, y, &resolved[j.set], &c)?
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n, total);
            Ok((acc, t.elapsed().as_secs_f64()))
        })
        .collect::<Result<_>>()?;
    let mut curves = Vec::new();
    let mut probe_seconds: Vec<(Probe, f64)> = Vec::new();
    for (si, set) in config.layer_sets.iter().enumerate() {
        let width = set.width(arch)?;
        let grid = &grids[si];
        for &kind in &config.batch_kinds {
            let bidx: Vec<usize> = (0..batches.len())
                .filter(|&b| batches[b].kind == kind)
                .collect();
            for &probe in config.probes_for(kind) {
                let mut batch_accuracy = vec![vec![0.0; grid.len()]; bidx.len()];
                for (j, (acc, secs)) in jobs.iter().zip(&results) {
                    if j.set != si || j.probe != probe || batches[j.batch].kind != kind {
                        continue;
                    }
                    let row = bidx.iter().position(|&b| b == j.batch).unwrap_or(0);
                    let col = grid.iter().position(|&k| k == j.k).unwrap_or(0);
                    batch_accuracy[row][col] = *acc;
                    match probe_seconds.iter_mut().find(|(p, _)| *p == probe) {
                        Some((_, s)) => *s += secs,
                        None => probe_seconds.push((probe, *secs)),
                    }
                }
                let accuracy: Vec<f64> = (0..grid.len())
                    .map(|c| {
                        batch_accuracy.iter().map(|r| r[c]).sum::<f64>()
                            / batch_accuracy.len().max(1) as f64
                    })
                    .collect();
                let span = auc_span(probe, grid, config.batch_size, &infos[si]);
                let batch_auc = batch_accuracy
                    .iter()
                    .map(|r| auc_to(grid, r, span))
                    .collect::<Result<Vec<_>>>()?;
                curves.push(Curve {
                    probe,
                    layers: set.name.clone(),
                    batch_kind: kind,
                    width,
                    span,
                    k: grid.clone(),
                    auc: auc_to(grid, &accuracy, span)?,
                    accuracy,
                    batch_accuracy,
                    batch_auc,
                });
            }
        }
    }
    Ok(Measurement {
        config: config.clone(),
        batches,
        base_accuracy,
        curves,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: super::train::process_cpu_seconds()
            .zip(cpu_start)
            .map(|(b, a)| b - a),
        probe_seconds,
    })
}
