//! Early stopping without a validation set (thesis §3.5.3): while a network trains on clean
//! labels, track the NMF and random-ablation AuC on single-class probe batches; the first
//! local maximum of the (smoothed) NMF AuC is the stopping point, compared with the minimum
//! of the test loss.

use super::compress::{Method, Probe};
use super::data::{FashionMnist, LabeledImages};
use super::labels::balanced_subset;
use super::measure::{coarse_k_grid, measure, BatchKind, ProbeConfig};
use super::net::Net;
use super::train::{evaluate, train, Checkpoint, TrainConfig, TrainingRecord, TrainingSet};
use crate::{Error, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Default smoothing radius in epochs (thesis: two epochs).
pub const DEFAULT_SMOOTHING_EPOCHS: f64 = 2.0;
/// Default size of the (class-balanced) test subset whose loss is tracked.
pub const DEFAULT_TRACK_TEST_SUBSET: usize = 2000;

/// How to track a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackConfig {
    /// Measure every this many optimizer steps.
    pub every: usize,
    /// Moving-average radius, in epochs.
    pub smoothing_epochs: f64,
    /// Test images whose loss and error are tracked (a balanced subset; `None`: all).
    pub test_subset: Option<usize>,
    /// The probe settings (NMF and random ablation on single-class batches; the K grid
    /// defaults to [`coarse_k_grid`]).
    pub probe: ProbeConfig,
}

impl TrackConfig {
    /// Tracking every `every` steps with the batches, layer sets and compression settings of
    /// `probe`, restricted to NMF and random ablation on single-class batches; the K grid is
    /// `probe`'s when it sets one, else [`coarse_k_grid`] of the first set's width.
    pub fn new(probe: &ProbeConfig, every: usize, arch: super::net::Arch) -> Result<Self> {
        let mut probe = probe.clone();
        probe.probes = vec![Probe::of(Method::Nmf), Probe::of(Method::Random)];
        probe.multi_class_probes = Vec::new();
        probe.batch_kinds = vec![BatchKind::SingleClass];
        probe.layer_sets.truncate(1);
        let first = probe
            .layer_sets
            .first()
            .ok_or_else(|| Error::invalid("tracking needs a layer set"))?;
        if probe.k_grid.is_none() {
            probe.k_grid = Some(coarse_k_grid(first.width(arch)?));
        }
        Ok(TrackConfig {
            every,
            smoothing_epochs: DEFAULT_SMOOTHING_EPOCHS,
            test_subset: Some(DEFAULT_TRACK_TEST_SUBSET),
            probe,
        })
    }
}

/// One tracked point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackPoint {
    /// Optimizer steps so far.
    pub step: usize,
    /// Epochs so far (fractional).
    pub epoch: f64,
    /// NMF AuC (single-class batches).
    pub nmf_auc: f64,
    /// Random-ablation AuC (single-class batches).
    pub random_auc: f64,
    /// Loss on the tracked test images.
    pub test_loss: f64,
    /// Error there.
    pub test_error: f64,
}

/// A stopping point chosen from one curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopPoint {
    /// Index into the tracked points.
    pub index: usize,
    /// Its step.
    pub step: usize,
    /// Its epoch.
    pub epoch: f64,
    /// The (unsmoothed) test error there.
    pub test_error: f64,
    /// The (unsmoothed) test loss there.
    pub test_loss: f64,
}

/// The curves of one tracked run and the stopping points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopReport {
    /// The settings.
    pub track: TrackConfig,
    /// The raw points.
    pub points: Vec<TrackPoint>,
    /// Smoothing radius in points.
    pub radius_points: usize,
    /// Smoothed NMF AuC.
    pub nmf_smoothed: Vec<f64>,
    /// Smoothed random-ablation AuC.
    pub random_smoothed: Vec<f64>,
    /// Smoothed test loss.
    pub loss_smoothed: Vec<f64>,
    /// First local maximum of the smoothed NMF AuC.
    pub nmf_peak: StopPoint,
    /// First local maximum of the smoothed random-ablation AuC.
    pub random_peak: StopPoint,
    /// Minimum of the smoothed test loss.
    pub loss_min: StopPoint,
    /// Lowest test error over the run (for reference).
    pub best_test_error: f64,
    /// Seconds spent tracking (probes and test passes), out of the run.
    pub tracking_seconds: f64,
}

/// Moving average with a window of `radius` points each side, clipped at the ends.
pub fn smooth(values: &[f64], radius: usize) -> Vec<f64> {
    (0..values.len())
        .map(|i| {
            let lo = i.saturating_sub(radius);
            let hi = (i + radius + 1).min(values.len());
            values[lo..hi].iter().sum::<f64>() / (hi - lo) as f64
        })
        .collect()
}

/// Index of the first local maximum: the first point higher than the next one after a run
/// of non-decreasing points (a plateau counts at its start); the last point when the series
/// never falls; `None` for an empty series.
pub fn first_local_max(values: &[f64]) -> Option<usize> {
    if values.is_empty() {
        return None;
    }
    let mut best = 0;
    for i in 1..values.len() {
        if values[i] > values[best] {
            best = i;
        } else if values[i] < values[best] {
            return Some(best);
        }
    }
    Some(values.len() - 1)
}

/// Index of the smallest value (the first of ties).
pub fn argmin(values: &[f64]) -> Option<usize> {
    (0..values.len()).reduce(|b, i| if values[i] < values[b] { i } else { b })
}

/// Trains `cfg` (normally p = 0) while tracking the curves every `track.every` steps; returns
/// the network, its training record and the early-stopping report.
pub fn train_tracked(
    data: &FashionMnist,
    cfg: &TrainConfig,
    track: &TrackConfig,
    device: &Device,
    progress: &mut dyn FnMut(super::train::EpochProgress),
) -> Result<(Net, TrainingRecord, EarlyStopReport)> {
    if track.every == 0 {
        return Err(Error::invalid(
            "tracking needs a step interval of at least 1",
        ));
    }
    let set = TrainingSet::new(data, cfg)?;
    let test: LabeledImages = match track.test_subset {
        Some(n) if n < data.test.len() => {
            data.test.select(&balanced_subset(&data.test.labels, n, 0)?)
        }
        _ => data.test.clone(),
    };
    let mut points = Vec::new();
    let mut tracking = 0.0f64;
    let mut observe = |net: &Net, step: usize, epoch: f64| -> Result<()> {
        let t = Instant::now();
        let m = measure(net, &set.data, &track.probe, &|_, _| {})?;
        let set_name = &track.probe.layer_sets[0].name;
        let get = |method| {
            m.curve(Probe::of(method), set_name, BatchKind::SingleClass)
                .map_or(f64::NAN, |c| c.auc)
        };
        let (test_loss, test_acc) = evaluate(net, &test)?;
        points.push(TrackPoint {
            step,
            epoch,
            nmf_auc: get(Method::Nmf),
            random_auc: get(Method::Random),
            test_loss,
            test_error: 1.0 - test_acc,
        });
        tracking += t.elapsed().as_secs_f64();
        Ok(())
    };
    let (net, record) = train(
        data,
        cfg,
        device,
        progress,
        Some((track.every, &mut observe)),
    )?;
    let steps_per_epoch = set.data.len().div_ceil(cfg.batch_size) as f64;
    let radius_points =
        (track.smoothing_epochs * steps_per_epoch / track.every as f64).round() as usize;
    let report = report(track.clone(), points, radius_points, tracking)?;
    Ok((net, record, report))
}

/// Smooths the tracked curves and picks the stopping points.
pub fn report(
    track: TrackConfig,
    points: Vec<TrackPoint>,
    radius_points: usize,
    tracking_seconds: f64,
) -> Result<EarlyStopReport> {
    let col = |f: fn(&TrackPoint) -> f64| -> Vec<f64> { points.iter().map(f).collect() };
    let nmf_smoothed = smooth(&col(|p| p.nmf_auc), radius_points);
    let random_smoothed = smooth(&col(|p| p.random_auc), radius_points);
    let loss_smoothed = smooth(&col(|p| p.test_loss), radius_points);
    let stop = |i: Option<usize>| -> Result<StopPoint> {
        let i = i.ok_or_else(|| Error::invalid("no tracked points"))?;
        let p = &points[i];
        Ok(StopPoint {
            index: i,
            step: p.step,
            epoch: p.epoch,
            test_error: p.test_error,
            test_loss: p.test_loss,
        })
    };
    Ok(EarlyStopReport {
        nmf_peak: stop(first_local_max(&nmf_smoothed))?,
        random_peak: stop(first_local_max(&random_smoothed))?,
        loss_min: stop(argmin(&loss_smoothed))?,
        best_test_error: points
            .iter()
            .map(|p| p.test_error)
            .fold(f64::INFINITY, f64::min),
        track,
        points,
        radius_points,
        nmf_smoothed,
        random_smoothed,
        loss_smoothed,
        tracking_seconds,
    })
}

/// Saves a tracked run: the checkpoint and `STEM.early-stop.json` beside it.
pub fn save_tracked(
    dir: &std::path::Path,
    net: &Net,
    record: &TrainingRecord,
    report: &EarlyStopReport,
) -> Result<std::path::PathBuf> {
    let path = Checkpoint::save(dir, net, record)?;
    let json = dir.join(format!("{}.early-stop.json", record.settings.stem()));
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::dataset(&json, format!("cannot serialise the report: {e}")))?;
    std::fs::write(&json, text).map_err(|e| Error::io(&json, e))?;
    Ok(path)
}
