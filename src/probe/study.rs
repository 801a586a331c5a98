//! The study: train a grid of networks over label-randomization levels and seeds, probe each,
//! relate the AuC to the test error, run early stopping, write records and plots.

use super::compress::{Method, Probe};
use super::data::FashionMnist;
use super::early_stop::{save_tracked, train_tracked, EarlyStopReport, TrackConfig};
use super::measure::{measure, BatchKind, Curve, Measurement, ProbeConfig};
use super::plot::{write_panels, Panel, Series};
use super::train::{train, Checkpoint, EpochProgress, TrainConfig, TrainingRecord};
use crate::{Error, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The label-randomization levels of the thesis.
pub const DEFAULT_PS: [f64; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];

/// A curve's mean accuracies (what a study keeps of each curve).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSummary {
    /// The probe.
    pub probe: Probe,
    /// The layer set.
    pub layers: String,
    /// The batch kind.
    pub batch_kind: BatchKind,
    /// The K grid.
    pub k: Vec<usize>,
    /// Mean accuracy at each K.
    pub accuracy: Vec<f64>,
    /// AuC.
    pub auc: f64,
}

impl From<&Curve> for CurveSummary {
    fn from(c: &Curve) -> Self {
        CurveSummary {
            probe: c.probe,
            layers: c.layers.clone(),
            batch_kind: c.batch_kind,
            k: c.k.clone(),
            accuracy: c.accuracy.clone(),
            auc: c.auc,
        }
    }
}

/// The record of one probed network (`--json` of `probe measure`, one per network in a
/// study). The headline AuCs are those of the first layer set on single-class batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Label-randomization level.
    pub p: f64,
    /// Seed.
    pub seed: u64,
    /// Architecture.
    pub arch: super::Arch,
    /// Training accuracy (labels trained with).
    pub train_accuracy: f64,
    /// Test error (true labels).
    pub test_error: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Whether training fitted every label.
    pub fitted: bool,
    /// Epochs trained.
    pub epochs: usize,
    /// Single-class AuC per method (`nmf`, `pca`, `kmeans`, `random`).
    pub auc: BTreeMap<String, f64>,
    /// Multi-class AuC per method.
    pub auc_multi_class: BTreeMap<String, f64>,
    /// Single-class AuC of the residual probes (`nmf`, `pca`).
    pub auc_residual: BTreeMap<String, f64>,
    /// Single-class AuC per class (class order) per probe.
    pub auc_per_class: BTreeMap<String, Vec<f64>>,
    /// The layer set of the headline numbers.
    pub layers: String,
    /// Uncompressed accuracy of the probe batches per kind.
    pub base_accuracy: BTreeMap<String, f64>,
    /// Every curve (means over batches).
    pub curves: Vec<CurveSummary>,
    /// Seconds of training.
    pub train_seconds: f64,
    /// CPU seconds of training (all threads).
    pub train_cpu_seconds: Option<f64>,
    /// Seconds of probing (all probes).
    pub measure_seconds: f64,
    /// CPU seconds of probing (all threads).
    pub measure_cpu_seconds: Option<f64>,
    /// Seconds per probe, summed over its jobs (CPU-thread seconds).
    pub probe_seconds: BTreeMap<String, f64>,
    /// The checkpoint.
    pub checkpoint: PathBuf,
}

impl NetworkRecord {
    /// The record of a network from its training record and measurement.
    pub fn new(checkpoint: &Path, t: &TrainingRecord, m: &Measurement) -> Self {
        let layers = m
            .config
            .layer_sets
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let pick = |probe: Probe, kind: BatchKind| m.curve(probe, &layers, kind);
        let mut auc = BTreeMap::new();
        let mut auc_multi_class = BTreeMap::new();
        let mut auc_residual = BTreeMap::new();
        let mut auc_per_class = BTreeMap::new();
        for method in Method::ALL {
            if let Some(c) = pick(Probe::of(method), BatchKind::SingleClass) {
                auc.insert(method.to_string(), c.auc);
                auc_per_class.insert(method.to_string(), c.batch_auc.clone());
            }
            if let Some(c) = pick(Probe::of(method), BatchKind::MultiClass) {
                auc_multi_class.insert(method.to_string(), c.auc);
            }
            if let Some(c) = pick(Probe::residual(method), BatchKind::SingleClass) {
                auc_residual.insert(method.to_string(), c.auc);
                auc_per_class.insert(Probe::residual(method).name(), c.batch_auc.clone());
            }
        }
        NetworkRecord {
            p: t.settings.p,
            seed: t.settings.seed,
            arch: t.settings.arch,
            train_accuracy: t.train_accuracy,
            test_error: t.test_error,
            test_loss: t.test_loss,
            fitted: t.fitted,
            epochs: t.epochs,
            auc,
            auc_multi_class,
            auc_residual,
            auc_per_class,
            layers,
            base_accuracy: m
                .base_accuracy
                .iter()
                .map(|(k, a)| (k.name().to_string(), *a))
                .collect(),
            curves: m.curves.iter().map(CurveSummary::from).collect(),
            train_seconds: t.seconds,
            train_cpu_seconds: t.cpu_seconds,
            measure_seconds: m.seconds,
            measure_cpu_seconds: m.cpu_seconds,
            probe_seconds: m
                .probe_seconds
                .iter()
                .map(|(p, s)| (p.name(), *s))
                .collect(),
            checkpoint: checkpoint.to_path_buf(),
        }
    }
}

/// Pearson's correlation coefficient (`NaN` when either side is constant or fewer than two
/// pairs).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// How well a measure separates the randomization levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Separation {
    /// Mean value per level, in the order of the study's `ps`.
    pub mean_by_p: Vec<f64>,
    /// Share of the variance explained by the level (η², between-level sum of squares over
    /// the total; 1 when seeds agree perfectly within every level). Scale-free, so measures
    /// with different ranges compare.
    pub eta_squared: f64,
    /// Pearson r of the value with p over all networks.
    pub r_with_p: f64,
    /// Whether the level means fall strictly as p rises.
    pub falls_with_p: bool,
}

/// [`Separation`] of `values` grouped by `levels` (`ps` gives the order of the levels).
pub fn separation(ps: &[f64], levels: &[f64], values: &[f64]) -> Separation {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let mut mean_by_p = Vec::new();
    let mut between = 0.0;
    for &p in ps {
        let group: Vec<f64> = levels
            .iter()
            .zip(values)
            .filter(|(l, _)| **l == p)
            .map(|(_, v)| *v)
            .collect();
        let m = group.iter().sum::<f64>() / group.len().max(1) as f64;
        between += group.len() as f64 * (m - mean).powi(2);
        mean_by_p.push(if group.is_empty() { f64::NAN } else { m });
    }
    let total: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    Separation {
        eta_squared: if total > 0.0 {
            between / total
        } else {
            f64::NAN
        },
        r_with_p: pearson(levels, values),
        falls_with_p: mean_by_p.windows(2).all(|w| w[1] < w[0]),
        mean_by_p,
    }
}

/// What an early-stopping run found (the study keeps this of each run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopSummary {
    /// Seed of the run.
    pub seed: u64,
    /// Epoch of the first local maximum of the smoothed NMF AuC.
    pub nmf_peak_epoch: f64,
    /// Test error there.
    pub nmf_peak_test_error: f64,
    /// Epoch of the first local maximum of the smoothed random-ablation AuC.
    pub random_peak_epoch: f64,
    /// Test error there.
    pub random_peak_test_error: f64,
    /// Epoch of the minimum of the smoothed test loss.
    pub loss_min_epoch: f64,
    /// Test error there.
    pub loss_min_test_error: f64,
    /// Lowest test error of the run.
    pub best_test_error: f64,
    /// Test error at the end of training.
    pub final_test_error: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Seconds of the run (training and tracking).
    pub seconds: f64,
    /// Of which tracking.
    pub tracking_seconds: f64,
}

/// Settings of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyConfig {
    /// Template of every network's training (its `p` and `seed` are set per network).
    pub train: TrainConfig,
    /// Randomization levels.
    pub ps: Vec<f64>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// The probes.
    pub probe: ProbeConfig,
    /// Early-stopping runs (p = 0, seeds 0, 1, …); 0 for none.
    pub early_stopping_runs: usize,
    /// Early stopping: track every this many steps.
    pub track_every: usize,
    /// Early stopping: smoothing radius in epochs.
    pub smoothing_epochs: f64,
    /// Early stopping: epochs of the tracked runs (they go on after every label is fitted, so
    /// that the curves show what follows).
    pub track_epochs: usize,
    /// Early stopping: the K grid of the tracked probes (`None`: the probes' grid when they
    /// set one, else [`super::measure::coarse_k_grid`]).
    #[serde(default)]
    pub track_k_grid: Option<Vec<usize>>,
}

/// The study's record (`--json` of `probe study`, and `study.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// The settings.
    pub config: StudyConfig,
    /// Every network.
    pub networks: Vec<NetworkRecord>,
    /// Pearson r of the single-class AuC with the test error, per method.
    pub pearson_r: BTreeMap<String, f64>,
    /// The same on multi-class batches.
    pub pearson_r_multi_class: BTreeMap<String, f64>,
    /// How each single-class AuC separates the p levels, per method (and residual probe).
    pub separation: BTreeMap<String, Separation>,
    /// The same on multi-class batches.
    pub separation_multi_class: BTreeMap<String, Separation>,
    /// Early-stopping runs.
    pub early_stopping: Vec<EarlyStopSummary>,
    /// Mean seconds to train a network, per p.
    pub train_seconds_by_p: Vec<f64>,
    /// Mean seconds to probe a network (all probes).
    pub measure_seconds_mean: f64,
    /// Mean CPU-thread seconds per probe and network.
    pub probe_seconds_mean: BTreeMap<String, f64>,
    /// Wall-clock seconds of the whole study (work done in this run; cached steps count 0).
    pub seconds: f64,
    /// CPU seconds the study process used (all threads); on a shared machine, this over the
    /// number of cores estimates the wall-clock time alone.
    pub cpu_seconds: Option<f64>,
    /// Software and version.
    pub software: String,
}

/// Progress reports of a study.
pub trait StudyObserver: Sync {
    /// A new stage (`training fc-p0.2-s1`, …).
    fn stage(&mut self, message: &str);
    /// An epoch finished.
    fn epoch(&mut self, progress: EpochProgress);
    /// Probe jobs done of total.
    fn probing(&self, done: usize, total: usize);
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::dataset(path, format!("cannot serialise: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A network of `cfg` from `dir` when one trained with exactly these settings is there,
/// else trained now and saved there.
pub fn train_or_load(
    data: &FashionMnist,
    cfg: &TrainConfig,
    dir: &Path,
    device: &Device,
    observer: &mut dyn StudyObserver,
) -> Result<Checkpoint> {
    let json = dir.join(format!("{}.json", cfg.stem()));
    if let Some(r) = read_json::<TrainingRecord>(&json) {
        if &r.settings == cfg {
            if let Ok(c) = Checkpoint::load(&json, device) {
                observer.stage(&format!("reusing {}", json.display()));
                return Ok(c);
            }
        }
    }
    observer.stage(&format!("training {}", cfg.stem()));
    let (net, record) = train(data, cfg, device, &mut |e| observer.epoch(e), None)?;
    let path = Checkpoint::save(dir, &net, &record)?;
    Ok(Checkpoint { net, record, path })
}

/// Runs (or resumes) a study in `out`: `nets/` (checkpoints), `measure/` (one
/// [`NetworkRecord`] per network, with its full [`Measurement`]), `early-stop/`, `plots/`,
/// and `study.json`. Steps whose results are already in `out` with the same settings are
/// read back instead of redone.
pub fn run_study(
    data: &FashionMnist,
    config: &StudyConfig,
    out: &Path,
    device: &Device,
    observer: &mut dyn StudyObserver,
) -> Result<StudyRecord> {
    let start = std::time::Instant::now();
    let cpu_start = super::train::process_cpu_seconds();
    if config.ps.is_empty() || config.seeds.is_empty() {
        return Err(Error::invalid("a study needs at least one p and one seed"));
    }
    let mut networks = Vec::new();
    for &p in &config.ps {
        for &seed in &config.seeds {
            let mut cfg = config.train.clone();
            cfg.p = p;
            cfg.seed = seed;
            let ck = train_or_load(data, &cfg, &out.join("nets"), device, observer)?;
            let mpath = out.join("measure").join(format!("{}.json", cfg.stem()));
            #[derive(Serialize, Deserialize)]
            struct Stored {
                record: NetworkRecord,
                fingerprint: String,
                measurement: Measurement,
            }
            let cached = read_json::<Stored>(&mpath).filter(|s| {
                s.measurement.config == config.probe
                    && s.fingerprint == ck.record.data_fingerprint
                    && s.record.train_seconds == ck.record.seconds
            });
            let record = match cached {
                Some(mut s) => {
                    observer.stage(&format!("reusing {}", mpath.display()));
                    if s.measurement.curves.iter().any(|c| c.span == 0) {
                        // Stored before the AuC ended at the span: score it again.
                        s.measurement.rescore(cfg.arch)?;
                        s.record = NetworkRecord::new(&ck.path, &ck.record, &s.measurement);
                        write_json(&mpath, &s)?;
                    }
                    s.record
                }
                None => {
                    observer.stage(&format!("probing {}", cfg.stem()));
                    let set = ck.training_set(data)?;
                    let obs: &dyn StudyObserver = observer;
                    let m = measure(&ck.net, &set.data, &config.probe, &|d, t| obs.probing(d, t))?;
                    let record = NetworkRecord::new(&ck.path, &ck.record, &m);
                    write_json(
                        &mpath,
                        &Stored {
                            record: record.clone(),
                            fingerprint: ck.record.data_fingerprint.clone(),
                            measurement: m,
                        },
                    )?;
                    record
                }
            };
            networks.push(record);
        }
    }
    let mut early_stopping = Vec::new();
    let mut reports = Vec::new();
    for run in 0..config.early_stopping_runs {
        let mut cfg = config.train.clone();
        cfg.p = 0.0;
        cfg.seed = run as u64;
        cfg.max_epochs = config.track_epochs;
        cfg.stop_when_fitted = false;
        let mut track = TrackConfig::new(&config.probe, config.track_every, cfg.arch)?;
        track.smoothing_epochs = config.smoothing_epochs;
        if let Some(ks) = &config.track_k_grid {
            track.probe.k_grid = Some(ks.clone());
        }
        let dir = out.join("early-stop");
        let rpath = dir.join(format!("{}.early-stop.json", cfg.stem()));
        let cached = read_json::<EarlyStopReport>(&rpath)
            .filter(|r| r.track == track)
            .and_then(|r| {
                let t = read_json::<TrainingRecord>(&dir.join(format!("{}.json", cfg.stem())))?;
                (t.settings == cfg).then_some((t, r))
            });
        let (record, report) = match cached {
            Some(x) => {
                observer.stage(&format!("reusing {}", rpath.display()));
                x
            }
            None => {
                observer.stage(&format!(
                    "early-stopping run {} of {}",
                    run + 1,
                    config.early_stopping_runs
                ));
                let (net, record, report) =
                    train_tracked(data, &cfg, &track, device, &mut |e| observer.epoch(e))?;
                save_tracked(&dir, &net, &record, &report)?;
                (record, report)
            }
        };
        early_stopping.push(EarlyStopSummary {
            seed: cfg.seed,
            nmf_peak_epoch: report.nmf_peak.epoch,
            nmf_peak_test_error: report.nmf_peak.test_error,
            random_peak_epoch: report.random_peak.epoch,
            random_peak_test_error: report.random_peak.test_error,
            loss_min_epoch: report.loss_min.epoch,
            loss_min_test_error: report.loss_min.test_error,
            best_test_error: report.best_test_error,
            final_test_error: record.test_error,
            epochs: record.epochs,
            seconds: record.seconds,
            tracking_seconds: report.tracking_seconds,
        });
        reports.push(report);
    }
    let mut record = summarize(
        config,
        networks,
        early_stopping,
        start.elapsed().as_secs_f64(),
    );
    record.cpu_seconds = super::train::process_cpu_seconds()
        .zip(cpu_start)
        .map(|(b, a)| b - a);
    write_json(&out.join("study.json"), &record)?;
    observer.stage("plotting");
    write_study_plots(&record, &reports, &out.join("plots"))?;
    Ok(record)
}

/// The study's statistics from its networks.
pub fn summarize(
    config: &StudyConfig,
    networks: Vec<NetworkRecord>,
    early_stopping: Vec<EarlyStopSummary>,
    seconds: f64,
) -> StudyRecord {
    let levels: Vec<f64> = networks.iter().map(|n| n.p).collect();
    let errors: Vec<f64> = networks.iter().map(|n| n.test_error).collect();
    let column = |f: &dyn Fn(&NetworkRecord) -> Option<f64>| -> Option<Vec<f64>> {
        networks.iter().map(f).collect()
    };
    let mut pearson_r = BTreeMap::new();
    let mut pearson_r_multi_class = BTreeMap::new();
    let mut sep = BTreeMap::new();
    let mut sep_multi = BTreeMap::new();
    for m in Method::ALL {
        let name = m.to_string();
        if let Some(v) = column(&|n| n.auc.get(&name).copied()) {
            pearson_r.insert(name.clone(), pearson(&v, &errors));
            sep.insert(name.clone(), separation(&config.ps, &levels, &v));
        }
        if let Some(v) = column(&|n| n.auc_multi_class.get(&name).copied()) {
            pearson_r_multi_class.insert(name.clone(), pearson(&v, &errors));
            sep_multi.insert(name.clone(), separation(&config.ps, &levels, &v));
        }
        if let Some(v) = column(&|n| n.auc_residual.get(&name).copied()) {
            pearson_r.insert(format!("{name}-residual"), pearson(&v, &errors));
            sep.insert(
                format!("{name}-residual"),
                separation(&config.ps, &levels, &v),
            );
        }
    }
    let train_seconds_by_p = config
        .ps
        .iter()
        .map(|&p| {
            let v: Vec<f64> = networks
                .iter()
                .filter(|n| n.p == p)
                .map(|n| n.train_seconds)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        })
        .collect();
    let n = networks.len().max(1) as f64;
    let mut probe_seconds_mean = BTreeMap::new();
    for net in &networks {
        for (k, s) in &net.probe_seconds {
            *probe_seconds_mean.entry(k.clone()).or_insert(0.0) += s / n;
        }
    }
    StudyRecord {
        config: config.clone(),
        measure_seconds_mean: networks.iter().map(|n| n.measure_seconds).sum::<f64>() / n,
        pearson_r,
        pearson_r_multi_class,
        separation: sep,
        separation_multi_class: sep_multi,
        early_stopping,
        train_seconds_by_p,
        probe_seconds_mean,
        seconds,
        cpu_seconds: None,
        software: format!("deepfactor {}", env!("CARGO_PKG_VERSION")),
        networks,
    }
}

/// Writes the study's plots into `dir`: `curves-single-class.png` and
/// `curves-multi-class.png` (accuracy vs K per method, one line per p, seeds averaged),
/// `auc-vs-p.png`, `auc-vs-test-error.png` (with r) and `early-stopping.png`.
pub fn write_study_plots(
    record: &StudyRecord,
    early: &[EarlyStopReport],
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let ps = &record.config.ps;
    let nets = &record.networks;
    for kind in [BatchKind::SingleClass, BatchKind::MultiClass] {
        let mut panels = Vec::new();
        for probe in Probe::all() {
            let mut series = Vec::new();
            for (pi, &p) in ps.iter().enumerate() {
                let curves: Vec<&CurveSummary> = nets
                    .iter()
                    .filter(|n| n.p == p)
                    .filter_map(|n| {
                        n.curves.iter().find(|c| {
                            c.probe == probe && c.batch_kind == kind && c.layers == n.layers
                        })
                    })
                    .collect();
                let Some(first) = curves.first() else {
                    continue;
                };
                let pts = first
                    .k
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| {
                        let a =
                            curves.iter().map(|c| c.accuracy[i]).sum::<f64>() / curves.len() as f64;
                        (k as f64, a)
                    })
                    .collect();
                series.push(Series {
                    label: format!("p={p}"),
                    points: pts,
                    color: pi,
                    line: true,
                    markers: false,
                    faint: false,
                });
            }
            if !series.is_empty() {
                panels.push(Panel {
                    title: probe.name(),
                    x_label: "K".into(),
                    y_label: "accuracy".into(),
                    series,
                    log_x: true,
                    y_range: Some((0.0, 1.02)),
                    vlines: Vec::new(),
                });
            }
        }
        if !panels.is_empty() {
            write_panels(
                &dir.join(format!("curves-{}.png", kind.name())),
                &format!("Accuracy vs K ({} batches, mean over seeds)", kind.name()),
                &panels,
                3,
            )?;
        }
    }
    let mut vs_p = Vec::new();
    let mut vs_err = Vec::new();
    for m in Method::ALL {
        let name = m.to_string();
        let mut series = Vec::new();
        for (ci, (label, get)) in [
            (
                "single-class",
                Box::new(|n: &NetworkRecord| n.auc.get(&name).copied())
                    as Box<dyn Fn(&NetworkRecord) -> Option<f64>>,
            ),
            (
                "multi-class",
                Box::new(|n: &NetworkRecord| n.auc_multi_class.get(&name).copied()),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let pts: Vec<(f64, f64)> = nets
                .iter()
                .filter_map(|n| get(n).map(|a| (n.p, a)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let means: Vec<(f64, f64)> = ps
                .iter()
                .filter_map(|&p| {
                    let v: Vec<f64> = pts.iter().filter(|q| q.0 == p).map(|q| q.1).collect();
                    (!v.is_empty()).then(|| (p, v.iter().sum::<f64>() / v.len() as f64))
                })
                .collect();
            series.push(Series {
                label: label.into(),
                points: means,
                color: ci,
                line: true,
                markers: false,
                faint: false,
            });
            series.push(Series {
                label: String::new(),
                points: pts,
                color: ci,
                line: false,
                markers: true,
                faint: false,
            });
            if ci == 0 {
                let e: Vec<(f64, f64)> = nets
                    .iter()
                    .filter_map(|n| get(n).map(|a| (n.test_error, a)))
                    .collect();
                vs_err.push(Panel {
                    title: format!(
                        "{name}: r = {:.2}",
                        record.pearson_r.get(&name).copied().unwrap_or(f64::NAN)
                    ),
                    x_label: "test error".into(),
                    y_label: "AuC (single-class)".into(),
                    series: vec![Series {
                        label: String::new(),
                        points: e,
                        color: 0,
                        line: false,
                        markers: true,
                        faint: false,
                    }],
                    ..Default::default()
                });
            }
        }
        if !series.is_empty() {
            vs_p.push(Panel {
                title: name.clone(),
                x_label: "p (randomized labels)".into(),
                y_label: "AuC".into(),
                series,
                ..Default::default()
            });
        }
    }
    if !vs_p.is_empty() {
        write_panels(
            &dir.join("auc-vs-p.png"),
            "AuC vs label randomization",
            &vs_p,
            2,
        )?;
        write_panels(
            &dir.join("auc-vs-test-error.png"),
            "AuC vs test error (Pearson r)",
            &vs_err,
            2,
        )?;
    }
    if !early.is_empty() {
        let panels: Vec<Panel> = early
            .iter()
            .enumerate()
            .map(|(i, r)| early_stop_panel(&format!("run {}", i + 1), r))
            .collect();
        write_panels(
            &dir.join("early-stopping.png"),
            "Early stopping (p = 0): each curve scaled to its range after epoch 1",
            &panels,
            panels.len().min(3),
        )?;
    }
    Ok(())
}

/// One early-stopping run as a panel: the three curves min–max scaled, raw (faint) and
/// smoothed, with the three stopping points.
pub fn early_stop_panel(title: &str, r: &EarlyStopReport) -> Panel {
    let epochs: Vec<f64> = r.points.iter().map(|p| p.epoch).collect();
    // Each curve is scaled to the range its raw values take after the first epoch (the
    // untrained start would squeeze the rest against one edge); earlier values are clamped.
    let settled: Vec<bool> = {
        let any = epochs.iter().any(|&e| e >= 1.0);
        epochs.iter().map(|&e| !any || e >= 1.0).collect()
    };
    let scale = |v: &[f64], range_of: &[f64]| -> Vec<f64> {
        let (lo, hi) = range_of
            .iter()
            .zip(&settled)
            .filter(|(_, s)| **s)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| {
                (a.min(*x), b.max(*x))
            });
        v.iter()
            .map(|x| {
                if hi > lo {
                    ((x - lo) / (hi - lo)).clamp(-0.02, 1.02)
                } else {
                    0.5
                }
            })
            .collect()
    };
    let raw = |f: fn(&super::early_stop::TrackPoint) -> f64| -> Vec<f64> {
        r.points.iter().map(f).collect()
    };
    let mut series = Vec::new();
    for (ci, (label, raw_v, smooth_v)) in [
        ("NMF AuC", raw(|p| p.nmf_auc), &r.nmf_smoothed),
        ("RA AuC", raw(|p| p.random_auc), &r.random_smoothed),
        ("test loss", raw(|p| p.test_loss), &r.loss_smoothed),
    ]
    .into_iter()
    .enumerate()
    {
        // Raw and smoothed on one scale (that of the raw values).
        let a = scale(&raw_v, &raw_v);
        let b = scale(smooth_v, &raw_v);
        series.push(Series {
            label: String::new(),
            points: epochs.iter().copied().zip(a.iter().copied()).collect(),
            color: ci,
            line: true,
            markers: false,
            faint: true,
        });
        series.push(Series {
            label: label.into(),
            points: epochs.iter().copied().zip(b.iter().copied()).collect(),
            color: ci,
            line: true,
            markers: false,
            faint: false,
        });
    }
    Panel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: "scaled value".into(),
        series,
        y_range: Some((-0.02, 1.02)),
        vlines: vec![
            (r.nmf_peak.epoch, "NMF peak".into(), 0),
            (r.random_peak.epoch, "RA peak".into(), 1),
            (r.loss_min.epoch, "loss min".into(), 2),
        ],
        ..Default::default()
    }
}
