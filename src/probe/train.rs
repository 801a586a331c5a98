//! Training the probe networks: label randomization, Adam, train until every training label
//! (randomized ones included) is fitted, checkpoints as safetensors with a JSON record beside.

use super::data::{FashionMnist, LabeledImages, PIXEL_MEAN, PIXEL_STD};
use super::labels::{balanced_subset, randomize_labels, rng, stream};
use super::net::{Arch, Net, INPUT_DIM};
use super::optim::Adam;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::ParamsAdamW;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Default minibatch size.
pub const DEFAULT_BATCH_SIZE: usize = 128;
/// Default Adam learning rate. Chosen by measurement on the FC net, 5,000 images, p = 1,
/// batches of 128: every label fitted after 31 epochs at 2.5e-4, while 1e-3 reached 80% after
/// 70 epochs (and took 69 epochs to fit even the clean labels, oscillating near 99%); at 1e-4,
/// 5e-4 and 3e-3 the first epochs went slower than at 2.5e-4.
pub const DEFAULT_LEARNING_RATE: f64 = 2.5e-4;
/// Default limit on epochs (training stops earlier once every training label is fitted).
pub const DEFAULT_MAX_EPOCHS: usize = 300;
/// Default seed of the balanced training subset (the same subset for every network of a
/// study, whatever its own seed).
pub const DEFAULT_SUBSET_SEED: u64 = 0;
/// Batch size of evaluation passes (no effect on the results).
const EVAL_BATCH: usize = 1000;
/// Epoch-mean training accuracy from which a full pass checks whether training is done.
const CHECK_FROM_RUNNING_ACCURACY: f64 = 0.98;

/// What to train: the network, its data and the optimizer. Every field is recorded in the
/// checkpoint's JSON so that the run can be repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub arch: Arch,
    /// Probability with which each training label is replaced by another class.
    pub p: f64,
    /// Seed of the weights, the label randomization and the batch order.
    pub seed: u64,
    /// Train on a class-balanced subset of this many training images (all when `None`).
    pub train_subset: Option<usize>,
    /// Seed of that subset.
    pub subset_seed: u64,
    /// Minibatch size.
    pub batch_size: usize,
    /// Adam settings (`weight_decay` 0: plain Adam).
    pub optimizer: AdamSettings,
    /// Multiply the learning rate by `lr_decay` every `lr_decay_every` epochs (0: constant).
    pub lr_decay_every: usize,
    /// Factor of that decay.
    pub lr_decay: f64,
    /// Stop after this many epochs even if some training label is still not fitted.
    pub max_epochs: usize,
    /// Stop as soon as every training label is fitted (else run all `max_epochs`).
    pub stop_when_fitted: bool,
}

/// Adam's hyper-parameters as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 is Adam.
    pub weight_decay: f64,
}

impl Default for AdamSettings {
    fn default() -> Self {
        AdamSettings {
            lr: DEFAULT_LEARNING_RATE,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl TrainConfig {
    /// The defaults for `arch`: p = 0, seed 0, the whole training set, batches of
    /// [`DEFAULT_BATCH_SIZE`], Adam at [`DEFAULT_LEARNING_RATE`], constant rate, at most
    /// [`DEFAULT_MAX_EPOCHS`] epochs.
    pub fn new(arch: Arch) -> Self {
        TrainConfig {
            arch,
            p: 0.0,
            seed: 0,
            train_subset: None,
            subset_seed: DEFAULT_SUBSET_SEED,
            batch_size: DEFAULT_BATCH_SIZE,
            optimizer: AdamSettings::default(),
            lr_decay_every: 0,
            lr_decay: 1.0,
            max_epochs: DEFAULT_MAX_EPOCHS,
            stop_when_fitted: true,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(Error::invalid(format!(
                "p must lie in [0, 1], got {}",
                self.p
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("the batch size must be at least 1"));
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return Err(Error::invalid(format!(
                "the learning rate must be positive, got {}",
                self.optimizer.lr
            )));
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0) {
            return Err(Error::invalid(format!(
                "the learning-rate decay must be positive, got {}",
                self.lr_decay
            )));
        }
        if self.train_subset == Some(0) {
            return Err(Error::invalid(
                "the training subset must hold at least 1 image",
            ));
        }
        Ok(())
    }

    /// The file stem of this configuration's checkpoint: `fc-p0.2-s1`.
    pub fn stem(&self) -> String {
        format!("{}-p{}-s{}", self.arch, self.p, self.seed)
    }
}

/// The training set a configuration trains on, with the labels it trains with.
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// Indices into the full training set.
    pub indices: Vec<usize>,
    /// The images and the labels trained with (randomized with probability `p`).
    pub data: LabeledImages,
    /// The true labels.
    pub true_labels: Vec<u8>,
    /// Fraction of labels replaced.
    pub replaced_fraction: f64,
}

impl TrainingSet {
    /// Selects the subset and randomizes its labels as `cfg` says.
    pub fn new(data: &FashionMnist, cfg: &TrainConfig) -> Result<Self> {
        let indices = match cfg.train_subset {
            Some(n) => balanced_subset(&data.train.labels, n, cfg.subset_seed)?,
            None => (0..data.train.len()).collect(),
        };
        let mut set = data.train.select(&indices);
        let true_labels = set.labels.clone();
        let r = randomize_labels(&true_labels, cfg.p, cfg.seed)?;
        set.labels = r.labels.clone();
        Ok(TrainingSet {
            indices,
            data: set,
            true_labels,
            replaced_fraction: r.replaced_fraction(),
        })
    }

    /// A fingerprint of the indices and training labels (BLAKE3, hex), recorded so that a
    /// checkpoint's measurements can verify they use the same training data.
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        for i in &self.indices {
            h.update(&(*i as u64).to_le_bytes());
        }
        h.update(&self.data.labels);
        h.finalize().to_hex()[..16].to_string()
    }
}

/// Standardized pixels `(x/255 − mean)/std` of `images[indices]` as an `n × 784` tensor.
pub fn pixels(data: &LabeledImages, indices: &[usize], device: &Device) -> Result<Tensor> {
    let n = data.images.rows * data.images.cols;
    if n != INPUT_DIM {
        return Err(Error::invalid(format!(
            "images of {}×{}: the probe networks take 28×28",
            data.images.rows, data.images.cols
        )));
    }
    let mut v = Vec::with_capacity(indices.len() * n);
    for &i in indices {
        v.extend(
            data.images
                .image(i)
                .iter()
                .map(|&p| (p as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD),
        );
    }
    Ok(Tensor::from_vec(v, (indices.len(), n), device)?)
}

/// Labels of `data[indices]` as a `u32` tensor.
pub fn label_tensor(labels: &[u8], indices: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = indices.iter().map(|&i| labels[i] as u32).collect();
    Ok(Tensor::from_vec(v, indices.len(), device)?)
}

/// Mean cross-entropy and accuracy of `net` on `data` (labels as given there).
pub fn evaluate(net: &Net, data: &LabeledImages) -> Result<(f64, f64)> {
    let all: Vec<usize> = (0..data.len()).collect();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for chunk in all.chunks(EVAL_BATCH) {
        let x = pixels(data, chunk, net.device())?;
        let y = label_tensor(&data.labels, chunk, net.device())?;
        let logits = net.forward(&x)?.detach();
        let l = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
        loss += l as f64 * chunk.len() as f64;
        correct += count_correct(&logits, &y)?;
    }
    let n = data.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

fn count_correct(logits: &Tensor, y: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1)?;
    Ok(pred
        .eq(y)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as usize)
}

/// One epoch of the training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean minibatch loss.
    pub loss: f64,
    /// Mean minibatch accuracy (weights as they were before each step).
    pub running_accuracy: f64,
    /// Accuracy of a full pass over the training set after the epoch, where one was made.
    pub train_accuracy: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
}

/// Everything about a trained network: its settings, its data and the results. Written as
/// JSON beside the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// The settings trained with.
    pub settings: TrainConfig,
    /// Training images used.
    pub train_size: usize,
    /// Fraction of training labels replaced (close to `p`).
    pub replaced_fraction: f64,
    /// [`TrainingSet::fingerprint`] of the data trained on.
    pub data_fingerprint: String,
    /// Epochs run.
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Whether every training label was fitted (training accuracy 1).
    pub fitted: bool,
    /// Accuracy on the training set with the labels trained with.
    pub train_accuracy: f64,
    /// Mean cross-entropy there.
    pub train_loss: f64,
    /// Error on the (true-labelled) test set.
    pub test_error: f64,
    /// Mean cross-entropy there.
    pub test_loss: f64,
    /// Wall-clock seconds of training (evaluations included).
    pub seconds: f64,
    /// CPU seconds the process used meanwhile (all threads; `None` off Linux).
    pub cpu_seconds: Option<f64>,
    /// Threads candle used on the CPU.
    pub threads: usize,
    /// The device, as `cpu` or `cuda:N`.
    pub device: String,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
    /// Software that trained it (`deepfactor`) and its version.
    pub software: String,
}

/// A progress report, after every epoch.
#[derive(Debug, Clone, Copy)]
pub struct EpochProgress {
    /// 1-based epoch.
    pub epoch: usize,
    /// The epoch limit.
    pub max_epochs: usize,
    /// Mean minibatch loss.
    pub loss: f64,
    /// Mean minibatch accuracy.
    pub running_accuracy: f64,
}

/// Called every so many optimizer steps while training (early-stopping curves): the network,
/// the step count and the epoch as a fraction.
pub type StepObserver<'a> = dyn FnMut(&Net, usize, f64) -> Result<()> + 'a;

/// Trains a network as `cfg` says on `data`, from its seeded initialisation.
///
/// Deterministic: the weights, the subset, the label randomization and the batch order all
/// come from seeded ChaCha8 streams, and candle's CPU kernels give the same result run after
/// run for a given thread count (see the module docs for what was checked).
pub fn train(
    data: &FashionMnist,
    cfg: &TrainConfig,
    device: &Device,
    progress: &mut dyn FnMut(EpochProgress),
    observer: Option<(usize, &mut StepObserver<'_>)>,
) -> Result<(Net, TrainingRecord)> {
    cfg.validate()?;
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    let set = TrainingSet::new(data, cfg)?;
    let n = set.data.len();
    let net = Net::init(cfg.arch, cfg.seed, device)?;
    let o = cfg.optimizer;
    let mut opt = Adam::new(
        net.vars(),
        ParamsAdamW {
            lr: o.lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
        },
        device.is_cpu(),
    )?;
    let x_all = pixels(&set.data, &(0..n).collect::<Vec<_>>(), device)?;
    let y_all = label_tensor(&set.data.labels, &(0..n).collect::<Vec<_>>(), device)?;
    let mut history = Vec::new();
    let mut steps = 0usize;
    let mut observer = observer;
    let batches_per_epoch = n.div_ceil(cfg.batch_size);
    if let Some((_, obs)) = observer.as_mut() {
        obs(&net, 0, 0.0)?;
    }
    let mut epoch = 0;
    while epoch < cfg.max_epochs {
        epoch += 1;
        let lr = match (epoch - 1).checked_div(cfg.lr_decay_every) {
            Some(q) => o.lr * cfg.lr_decay.powi(q as i32),
            None => o.lr,
        };
        opt.set_learning_rate(lr);
        let mut order: Vec<u32> = (0..n as u32).collect();
        let mut r = rng(cfg.seed, stream::ORDER, epoch as u64);
        for i in (1..n).rev() {
            let j = r.random_range(0..=i);
            order.swap(i, j);
        }
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let idx = Tensor::from_slice(chunk, chunk.len(), device)?;
            let x = x_all.index_select(&idx, 0)?;
            let y = y_all.index_select(&idx, 0)?;
            let logits = net.forward(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
            steps += 1;
            loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            correct += count_correct(&logits.detach(), &y)?;
            if let Some((every, obs)) = observer.as_mut() {
                if *every > 0 && steps.is_multiple_of(*every) {
                    let at = epoch as f64 - 1.0 + (b + 1) as f64 / batches_per_epoch as f64;
                    obs(&net, steps, at)?;
                }
            }
        }
        let running = correct as f64 / n as f64;
        let loss = loss_sum / n as f64;
        let train_accuracy = if running >= CHECK_FROM_RUNNING_ACCURACY || epoch == cfg.max_epochs {
            Some(evaluate(&net, &set.data)?.1)
        } else {
            None
        };
        history.push(EpochRecord {
            epoch,
            loss,
            running_accuracy: running,
            train_accuracy,
            lr,
        });
        progress(EpochProgress {
            epoch,
            max_epochs: cfg.max_epochs,
            loss,
            running_accuracy: running,
        });
        if cfg.stop_when_fitted && train_accuracy == Some(1.0) {
            break;
        }
    }
    let (train_loss, train_accuracy) = evaluate(&net, &set.data)?;
    let (test_loss, test_accuracy) = evaluate(&net, &data.test)?;
    let record = TrainingRecord {
        settings: cfg.clone(),
        train_size: n,
        replaced_fraction: set.replaced_fraction,
        data_fingerprint: set.fingerprint(),
        epochs: epoch,
        steps,
        fitted: train_accuracy == 1.0,
        train_accuracy,
        train_loss,
        test_error: 1.0 - test_accuracy,
        test_loss,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: process_cpu_seconds().zip(cpu_start).map(|(b, a)| b - a),
        threads: candle_core::utils::get_num_threads(),
        device: device_name(device),
        history,
        software: format!("deepfactor {}", env!("CARGO_PKG_VERSION")),
    };
    Ok((net, record))
}

/// CPU seconds (user + system, all threads) this process has used so far, from
/// `/proc/self/stat` (`None` where that does not exist). On a shared machine the difference
/// over a step, divided by the threads it kept busy, estimates what the step would take alone.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// A trained network on disk: `STEM.safetensors` (the parameters) and `STEM.json` (its
/// [`TrainingRecord`]).
#[derive(Debug)]
pub struct Checkpoint {
    /// The network.
    pub net: Net,
    /// Its record.
    pub record: TrainingRecord,
    /// The safetensors file.
    pub path: PathBuf,
}

impl Checkpoint {
    /// Writes `net` and `record` into `dir` under `record.settings.stem()`; returns the
    /// safetensors path. The JSON is written last, so a checkpoint with a record is complete.
    pub fn save(dir: &Path, net: &Net, record: &TrainingRecord) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let stem = record.settings.stem();
        let path = dir.join(format!("{stem}.safetensors"));
        net.save(&path)?;
        let json = dir.join(format!("{stem}.json"));
        let text = serde_json::to_string_pretty(record)
            .map_err(|e| Error::dataset(&json, format!("cannot serialise the record: {e}")))?;
        let tmp = json.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &json).map_err(|e| Error::io(&json, e))?;
        Ok(path)
    }

    /// Reads a checkpoint from its safetensors or JSON path (the other is found beside it).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let weights = path.with_extension("safetensors");
        let json = path.with_extension("json");
        let text = std::fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
        let record: TrainingRecord = serde_json::from_str(&text)
            .map_err(|e| Error::dataset(&json, format!("not a probe training record: {e}")))?;
        let net = Net::load(record.settings.arch, &weights, device)?;
        Ok(Checkpoint {
            net,
            record,
            path: weights,
        })
    }

    /// The training set this network was trained on, checked against the recorded
    /// fingerprint.
    pub fn training_set(&self, data: &FashionMnist) -> Result<TrainingSet> {
        let set = TrainingSet::new(data, &self.record.settings)?;
        if set.fingerprint() != self.record.data_fingerprint {
            return Err(Error::dataset(
                self.path.with_extension("json"),
                format!(
                    "the data here give training-set fingerprint {}, the network was trained on {} \
                     (another copy of the data set?)",
                    set.fingerprint(),
                    self.record.data_fingerprint
                ),
            ));
        }
        Ok(set)
    }
}
