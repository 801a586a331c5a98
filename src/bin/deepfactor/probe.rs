//! `deepfactor probe`: train small networks on Fashion-MNIST with randomized labels, compress
//! their activations, and relate the area under the accuracy-vs-K curve to memorization.

use crate::recipe_args::device;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use deepfactor::probe::{
    early_stop_panel, measure, run_study, train, train_or_load, train_tracked, write_panels, Arch,
    BatchKind, Checkpoint, EarlyStopReport, EpochProgress, FashionMnist, LayerSet, Method,
    NetworkRecord, Panel, Probe, ProbeConfig, Series, StudyConfig, StudyObserver, StudyRecord,
    TrackConfig, TrainConfig, CLASS_NAMES, DEFAULT_BATCH_SIZE, DEFAULT_DATA_DIR,
    DEFAULT_LEARNING_RATE, DEFAULT_MAX_EPOCHS, DEFAULT_PROBE_BATCHES, DEFAULT_PROBE_BATCH_SIZE,
    DEFAULT_PS, DEFAULT_SMOOTHING_EPOCHS, DEFAULT_SUBSET_SEED,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Arguments of `deepfactor probe`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Train networks (one per p and seed) until every training label is fitted; with
    /// --track-every, also record the early-stopping curves.
    Train(TrainArgs),
    /// Probe trained networks: accuracy vs K under NMF, PCA, k-means and random ablation,
    /// and the AuC.
    Measure(MeasureArgs),
    /// Train the grid over p and seeds, probe every network, correlate AuC with the test
    /// error, run early stopping, write records and plots.
    Study(StudyArgs),
}

/// Where the data are and what to train.
#[derive(Args, Debug, Clone)]
struct NetArgs {
    /// Network: fc (784-128-512-2048-2048-10) or cnn.
    #[arg(long, default_value = "fc")]
    arch: Arch,
    /// Label-randomization levels, comma-separated.
    #[arg(long = "p", value_delimiter = ',', default_values_t = DEFAULT_PS.to_vec())]
    ps: Vec<f64>,
    /// Number of seeds per level (--first-seed, and on).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// First seed (the seeds are S, S+1, …, S+N−1): to spread a grid over processes that
    /// share an --out folder.
    #[arg(long, value_name = "S", default_value_t = 0)]
    first_seed: u64,
    /// Train on a class-balanced subset of this many training images.
    #[arg(long, value_name = "N")]
    train_subset: Option<usize>,
    /// Seed of that subset (the same subset for every network).
    #[arg(long, default_value_t = DEFAULT_SUBSET_SEED)]
    subset_seed: u64,
    /// Minibatch size.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = DEFAULT_LEARNING_RATE)]
    lr: f64,
    /// Multiply the learning rate by --lr-decay every this many epochs (0: constant).
    #[arg(long, default_value_t = 0)]
    lr_decay_every: usize,
    /// Factor of that decay.
    #[arg(long, default_value_t = 0.5)]
    lr_decay: f64,
    /// Epoch limit (training stops earlier once every label is fitted).
    #[arg(long, default_value_t = DEFAULT_MAX_EPOCHS)]
    max_epochs: usize,
    /// Folder with the four Fashion-MNIST idx(.gz) files.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Device: cpu or cuda[:N] (builds with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl NetArgs {
    fn seed_range(&self) -> std::ops::Range<u64> {
        self.first_seed..self.first_seed.saturating_add(self.seeds)
    }

    fn config(&self) -> TrainConfig {
        let mut c = TrainConfig::new(self.arch);
        c.train_subset = self.train_subset;
        c.subset_seed = self.subset_seed;
        c.batch_size = self.batch_size;
        c.optimizer.lr = self.lr;
        c.lr_decay_every = self.lr_decay_every;
        c.lr_decay = self.lr_decay;
        c.max_epochs = self.max_epochs;
        c
    }

    fn load_data(&self) -> anyhow::Result<FashionMnist> {
        FashionMnist::load(&self.data)
            .with_context(|| format!("loading Fashion-MNIST from {}", self.data.display()))
    }
}

/// What to measure.
#[derive(Args, Debug, Clone)]
struct ProbeOpts {
    /// Probes, comma-separated: nmf, pca, kmeans, random, nmf-residual, pca-residual.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    probes: Option<Vec<Probe>>,
    /// Probes on multi-class batches (default: the four non-residual ones).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    multi_class_probes: Option<Vec<Probe>>,
    /// Batch kinds, comma-separated: single-class, multi-class.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    batch_kinds: Option<Vec<BatchKind>>,
    /// Layers compressed together (comma-separated; default: every FC layer, or the CNN's
    /// final 512-channel block).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    layers: Option<Vec<String>>,
    /// Also measure each layer of the set on its own.
    #[arg(long)]
    per_layer: bool,
    /// K grid, comma-separated (default: 1…8, then ×1.4 steps up to the width).
    #[arg(long = "k", value_delimiter = ',', value_name = "LIST")]
    k_grid: Option<Vec<usize>>,
    /// Centre the activations before PCA (the thesis' PCA is uncentred).
    #[arg(long)]
    pca_centered: bool,
    /// Samples per probe batch.
    #[arg(long, default_value_t = DEFAULT_PROBE_BATCH_SIZE)]
    probe_batch_size: usize,
    /// Multi-class probe batches.
    #[arg(long, default_value_t = DEFAULT_PROBE_BATCHES)]
    probe_batches: usize,
    /// Seed of the probe batches, k-means and random ablation.
    #[arg(long, default_value_t = 0)]
    probe_seed: u64,
}

impl ProbeOpts {
    fn config(&self, arch: Arch) -> ProbeConfig {
        let mut c = ProbeConfig::new(arch);
        if let Some(p) = &self.probes {
            c.probes = p.clone();
            c.multi_class_probes = p.iter().copied().filter(|p| !p.residual).collect();
        }
        if let Some(p) = &self.multi_class_probes {
            c.multi_class_probes = p.clone();
        }
        if let Some(k) = &self.batch_kinds {
            c.batch_kinds = k.clone();
        }
        let set = self
            .layers
            .clone()
            .unwrap_or_else(|| arch.default_layer_set());
        c.layer_sets = vec![LayerSet::new(set.clone())];
        if self.per_layer && set.len() > 1 {
            c.layer_sets
                .extend(set.iter().map(|l| LayerSet::new(vec![l.clone()])));
        }
        c.k_grid = self.k_grid.clone();
        c.compression.pca_centered = self.pca_centered;
        c.batch_size = self.probe_batch_size;
        c.batches = self.probe_batches;
        c.seed = self.probe_seed;
        c
    }
}

/// Arguments of `deepfactor probe train`.
#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Probe settings of the tracked curves (with --track-every).
    #[command(flatten)]
    probe: ProbeOpts,
    /// Folder for the checkpoints (STEM.safetensors + STEM.json).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Track the early-stopping curves every N optimizer steps (NMF and random-ablation AuC on
    /// single-class batches, test loss); tracked runs train all --max-epochs.
    #[arg(long, value_name = "N")]
    track_every: Option<usize>,
    /// Smoothing radius of the tracked curves, in epochs.
    #[arg(long, default_value_t = DEFAULT_SMOOTHING_EPOCHS)]
    smoothing_epochs: f64,
    /// Retrain even where a checkpoint with the same settings exists.
    #[arg(long)]
    force: bool,
    /// Print JSON (the training records) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `deepfactor probe measure`.
#[derive(Args, Debug)]
struct MeasureArgs {
    /// Checkpoints (.safetensors or their .json records).
    #[arg(required = true)]
    checkpoints: Vec<PathBuf>,
    #[command(flatten)]
    probe: ProbeOpts,
    /// Folder with the four Fashion-MNIST idx(.gz) files.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Device: cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write a curves plot per network into this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print one JSON record per network (a JSON array) instead of tables.
    #[arg(long)]
    json: bool,
}

/// Arguments of `deepfactor probe study`.
#[derive(Args, Debug)]
struct StudyArgs {
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    probe: ProbeOpts,
    /// Folder for everything (checkpoints, records, plots); an interrupted study resumes.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Early-stopping runs on p = 0 (seeds 0, 1, …).
    #[arg(long, default_value_t = 3)]
    early_stopping_runs: usize,
    /// Early stopping: track every N optimizer steps (default: about 4 points per epoch).
    #[arg(long, value_name = "N")]
    track_every: Option<usize>,
    /// Early stopping: smoothing radius in epochs.
    #[arg(long, default_value_t = DEFAULT_SMOOTHING_EPOCHS)]
    smoothing_epochs: f64,
    /// Early stopping: epochs of each tracked run (it does not stop when every label is
    /// fitted).
    #[arg(long, default_value_t = 20)]
    track_epochs: usize,
    /// Early stopping: K grid of the tracked probes, comma-separated (default: --k, else
    /// 1, 2, 4, … and the width).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    track_k: Option<Vec<usize>>,
    /// Print the study's JSON record instead of tables.
    #[arg(long)]
    json: bool,
}

/// Runs `deepfactor probe`.
pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Train(a) => run_train(a),
        Action::Measure(a) => run_measure(a),
        Action::Study(a) => run_study_cmd(a),
    }
}

/// Progress bars on stderr.
struct Bars {
    epochs: ProgressBar,
    jobs: ProgressBar,
}

impl Bars {
    fn new() -> Self {
        let style = |t: &str| {
            ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let epochs = ProgressBar::hidden();
        epochs.set_style(style("{prefix} epoch {pos}/{len} {msg} {elapsed}"));
        let jobs = ProgressBar::hidden();
        jobs.set_style(style(
            "{prefix} probes {bar:30} {pos}/{len} {elapsed}<{eta}",
        ));
        Bars { epochs, jobs }
    }

    fn show(bar: &ProgressBar) {
        if bar.is_hidden() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }
}

impl StudyObserver for Bars {
    fn stage(&mut self, message: &str) {
        self.epochs.finish_and_clear();
        self.jobs.finish_and_clear();
        eprintln!("{message}");
        self.epochs.reset();
        self.jobs.reset();
    }

    fn epoch(&mut self, p: EpochProgress) {
        Bars::show(&self.epochs);
        self.epochs.set_length(p.max_epochs as u64);
        self.epochs.set_position(p.epoch as u64);
        self.epochs.set_message(format!(
            "loss {:.3}, running accuracy {:.4}",
            p.loss, p.running_accuracy
        ));
    }

    fn probing(&self, done: usize, total: usize) {
        Bars::show(&self.jobs);
        self.jobs.set_length(total as u64);
        self.jobs.set_position(done as u64);
    }
}

fn combos(net: &NetArgs) -> anyhow::Result<Vec<TrainConfig>> {
    if net.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let mut v = Vec::new();
    for &p in &net.ps {
        for seed in net.seed_range() {
            let mut c = net.config();
            c.p = p;
            c.seed = seed;
            c.validate()?;
            v.push(c);
        }
    }
    Ok(v)
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    let data = a.net.load_data()?;
    let dev = device(&a.net.device)?;
    let mut bars = Bars::new();
    let mut records = Vec::new();
    let mut early: Vec<(String, EarlyStopReport)> = Vec::new();
    for mut cfg in combos(&a.net)? {
        if let Some(every) = a.track_every {
            cfg.stop_when_fitted = false;
            bars.stage(&format!("training {} with tracking", cfg.stem()));
            let mut track = TrackConfig::new(&a.probe.config(cfg.arch), every, cfg.arch)?;
            track.smoothing_epochs = a.smoothing_epochs;
            let (net, record, report) =
                train_tracked(&data, &cfg, &track, &dev, &mut |e| bars.epoch(e))?;
            deepfactor::probe::Checkpoint::save(&a.out, &net, &record)?;
            let json = a.out.join(format!("{}.early-stop.json", cfg.stem()));
            std::fs::write(&json, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {}", json.display()))?;
            early.push((cfg.stem(), report));
            records.push(record);
        } else if a.force {
            bars.stage(&format!("training {}", cfg.stem()));
            let (net, record) = train(&data, &cfg, &dev, &mut |e| bars.epoch(e), None)?;
            Checkpoint::save(&a.out, &net, &record)?;
            records.push(record);
        } else {
            records.push(train_or_load(&data, &cfg, &a.out, &dev, &mut bars)?.record);
        }
    }
    bars.stage("done");
    if !early.is_empty() {
        let panels: Vec<Panel> = early.iter().map(|(s, r)| early_stop_panel(s, r)).collect();
        let path = a.out.join("early-stopping.png");
        write_panels(&path, "Early stopping: curves scaled to [0, 1]", &panels, 3)?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>6} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "network", "epochs", "fitted", "train acc", "test err", "test loss", "seconds"
    );
    for r in &records {
        println!(
            "{:<16} {:>6} {:>8} {:>9.4} {:>9.4} {:>9.3} {:>8.1}",
            r.settings.stem(),
            r.epochs,
            r.fitted,
            r.train_accuracy,
            r.test_error,
            r.test_loss,
            r.seconds
        );
    }
    for (stem, r) in &early {
        println!(
            "{stem}: NMF AuC peak at epoch {:.2} (test error {:.4}), RA AuC peak at {:.2} ({:.4}), \
             test-loss minimum at {:.2} ({:.4}); best test error {:.4}",
            r.nmf_peak.epoch,
            r.nmf_peak.test_error,
            r.random_peak.epoch,
            r.random_peak.test_error,
            r.loss_min.epoch,
            r.loss_min.test_error,
            r.best_test_error
        );
    }
    Ok(())
}

fn run_measure(a: MeasureArgs) -> anyhow::Result<()> {
    let data = FashionMnist::load(&a.data)
        .with_context(|| format!("loading Fashion-MNIST from {}", a.data.display()))?;
    let dev = device(&a.device)?;
    let mut bars = Bars::new();
    let mut records = Vec::new();
    for path in &a.checkpoints {
        let ck = Checkpoint::load(path, &dev)?;
        let set = ck.training_set(&data)?;
        let cfg = a.probe.config(ck.record.settings.arch);
        bars.stage(&format!("probing {}", path.display()));
        let obs: &Bars = &bars;
        let m = measure(&ck.net, &set.data, &cfg, &|d, t| obs.probing(d, t))?;
        let record = NetworkRecord::new(&ck.path, &ck.record, &m);
        if let Some(dir) = &a.out {
            std::fs::create_dir_all(dir)?;
            let png = dir.join(format!("{}-curves.png", ck.record.settings.stem()));
            write_panels(&png, &ck.record.settings.stem(), &curve_panels(&record), 3)?;
            let json = dir.join(format!("{}-measure.json", ck.record.settings.stem()));
            std::fs::write(
                &json,
                serde_json::to_string_pretty(&serde_json::json!({
                    "record": record, "measurement": m
                }))?,
            )?;
        }
        records.push(record);
    }
    bars.stage("done");
    if a.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    for r in &records {
        print_network(r);
    }
    Ok(())
}

/// One panel per batch kind and layer set: every probe's curve.
fn curve_panels(r: &NetworkRecord) -> Vec<Panel> {
    let mut panels: Vec<Panel> = Vec::new();
    for c in &r.curves {
        let title = format!("{} {}", c.layers, c.batch_kind.name());
        let idx = match panels.iter().position(|p| p.title == title) {
            Some(i) => i,
            None => {
                panels.push(Panel {
                    title,
                    x_label: "K".into(),
                    y_label: "accuracy".into(),
                    log_x: true,
                    y_range: Some((0.0, 1.02)),
                    ..Default::default()
                });
                panels.len() - 1
            }
        };
        let color = Probe::all().iter().position(|p| *p == c.probe).unwrap_or(0);
        panels[idx].series.push(Series {
            label: format!("{} ({:.3})", c.probe, c.auc),
            points: c
                .k
                .iter()
                .map(|&k| k as f64)
                .zip(c.accuracy.clone())
                .collect(),
            color,
            line: true,
            markers: false,
            faint: false,
        });
    }
    panels
}

fn print_network(r: &NetworkRecord) {
    println!(
        "{}-p{}-s{}: train accuracy {:.4}, test error {:.4}, {} epochs{}",
        r.arch,
        r.p,
        r.seed,
        r.train_accuracy,
        r.test_error,
        r.epochs,
        if r.fitted {
            ""
        } else {
            " (NOT every label fitted)"
        }
    );
    println!(
        "  AuC ({}; probe batches' own accuracy {})",
        r.layers,
        joined(
            r.base_accuracy.iter().map(|(k, v)| format!("{k} {v:.3}")),
            ", "
        )
    );
    println!(
        "  {:<14} {:>13} {:>13}",
        "probe", "single-class", "multi-class"
    );
    let fmt = |v: Option<&f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for m in Method::ALL {
        let n = m.to_string();
        println!(
            "  {:<14} {:>13} {:>13}",
            n,
            fmt(r.auc.get(&n)),
            fmt(r.auc_multi_class.get(&n))
        );
    }
    for (n, v) in &r.auc_residual {
        println!(
            "  {:<14} {:>13} {:>13}",
            format!("{n}-residual"),
            format!("{v:.4}"),
            "-"
        );
    }
    if let Some(per) = r.auc_per_class.get("nmf") {
        println!("  NMF AuC per class (single-class batches):");
        for (c, v) in per.iter().enumerate() {
            println!(
                "    {:<12} {v:.4}",
                CLASS_NAMES.get(c).copied().unwrap_or("?")
            );
        }
    }
    println!(
        "  time: training {:.1} s, probing {:.1} s",
        r.train_seconds, r.measure_seconds
    );
}

fn run_study_cmd(a: StudyArgs) -> anyhow::Result<()> {
    let data = a.net.load_data()?;
    let dev = device(&a.net.device)?;
    if a.net.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let train = a.net.config();
    train.validate()?;
    let n = train.train_subset.unwrap_or(data.train.len());
    let track_every = a
        .track_every
        .unwrap_or_else(|| (n.div_ceil(train.batch_size) / 4).max(1));
    let config = StudyConfig {
        probe: a.probe.config(train.arch),
        train,
        ps: a.net.ps.clone(),
        seeds: a.net.seed_range().collect(),
        early_stopping_runs: a.early_stopping_runs,
        track_every,
        smoothing_epochs: a.smoothing_epochs,
        track_epochs: a.track_epochs,
        track_k_grid: a.track_k.clone(),
    };
    let mut bars = Bars::new();
    let record = run_study(&data, &config, &a.out, &dev, &mut bars)?;
    bars.stage(&format!("done; records and plots in {}", a.out.display()));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print_study(&record, &a.out);
    }
    Ok(())
}

fn print_study(r: &StudyRecord, out: &Path) {
    let methods: Vec<String> = Method::ALL.iter().map(|m| m.to_string()).collect();
    println!(
        "{} net, {} training images, {} seeds; AuC on single-class batches ({}), multi-class in brackets",
        r.config.train.arch,
        r.networks.first().map_or(0, |_| r
            .config
            .train
            .train_subset
            .unwrap_or(60_000)),
        r.config.seeds.len(),
        r.networks.first().map_or("", |n| n.layers.as_str())
    );
    print!(
        "{:>4} {:>4} {:>9} {:>8}",
        "p", "seed", "train acc", "test err"
    );
    for m in &methods {
        print!(" {:>17}", m);
    }
    println!(" {:>8} {:>8}", "train s", "probe s");
    for n in &r.networks {
        print!(
            "{:>4} {:>4} {:>9.4} {:>8.4}",
            n.p, n.seed, n.train_accuracy, n.test_error
        );
        for m in &methods {
            let s = n.auc.get(m).map_or("-".into(), |v| format!("{v:.4}"));
            let mc = n
                .auc_multi_class
                .get(m)
                .map_or("".into(), |v| format!(" [{v:.4}]"));
            print!(" {:>17}", format!("{s}{mc}"));
        }
        println!(" {:>8.1} {:>8.1}", n.train_seconds, n.measure_seconds);
    }
    println!("\nPearson r of AuC with test error (single-class [multi-class]):");
    for m in &methods {
        println!(
            "  {:<14} {:>7.3} [{:>7.3}]",
            m,
            r.pearson_r.get(m).copied().unwrap_or(f64::NAN),
            r.pearson_r_multi_class.get(m).copied().unwrap_or(f64::NAN)
        );
    }
    for (k, v) in &r.pearson_r {
        if k.ends_with("-residual") {
            println!("  {k:<14} {v:>7.3}");
        }
    }
    println!("\nSeparation of the p levels: η² (variance explained by p), mean AuC per p:");
    for (kind, sep) in [
        ("single", &r.separation),
        ("multi", &r.separation_multi_class),
    ] {
        for (m, s) in sep {
            println!(
                "  {kind:<6} {m:<14} η² {:.3}  r(p) {:>6.3}  falls with p: {:<5}  means {}",
                s.eta_squared,
                s.r_with_p,
                s.falls_with_p,
                joined(s.mean_by_p.iter().map(|v| format!("{v:.4}")), " ")
            );
        }
    }
    if !r.early_stopping.is_empty() {
        println!("\nEarly stopping (p = 0): epoch (test error) of each stopping point");
        println!(
            "  {:>4} {:>16} {:>16} {:>16} {:>9} {:>9} {:>7}",
            "seed",
            "NMF AuC peak",
            "RA AuC peak",
            "test-loss min",
            "best err",
            "final err",
            "epochs"
        );
        for e in &r.early_stopping {
            println!(
                "  {:>4} {:>16} {:>16} {:>16} {:>9.4} {:>9.4} {:>7}",
                e.seed,
                format!("{:.2} ({:.4})", e.nmf_peak_epoch, e.nmf_peak_test_error),
                format!(
                    "{:.2} ({:.4})",
                    e.random_peak_epoch, e.random_peak_test_error
                ),
                format!("{:.2} ({:.4})", e.loss_min_epoch, e.loss_min_test_error),
                e.best_test_error,
                e.final_test_error,
                e.epochs
            );
        }
    }
    println!(
        "\nTime: training per network by p: {}; probing {:.1} s per network; per probe (thread-seconds): {}",
        joined(
            r.config
                .ps
                .iter()
                .zip(&r.train_seconds_by_p)
                .map(|(p, s)| format!("p={p} {s:.0} s")),
            ", "
        ),
        r.measure_seconds_mean,
        joined(
            r.probe_seconds_mean
                .iter()
                .map(|(k, s)| format!("{k} {s:.1}")),
            ", "
        )
    );
    println!(
        "Records: {}/study.json; plots: {}/plots/",
        out.display(),
        out.display()
    );
}

/// The items separated by `sep`.
fn joined(items: impl Iterator<Item = String>, sep: &str) -> String {
    items.collect::<Vec<_>>().join(sep)
}
