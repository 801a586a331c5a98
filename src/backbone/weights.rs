//! Where weights come from, how they are read, and their fingerprint.
//!
//! Sources: the Hugging Face hub (hf-hub, cached in the usual `HF_HOME` cache), a local
//! `.safetensors` file, or a local PyTorch `.pth` (zip or legacy format). With
//! `HF_HUB_OFFLINE=1` (or `DEEPFACTOR_OFFLINE=1`) nothing touches the network: a file that is
//! not in the cache gives an error naming the file and how to get it.

use super::pth;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where to get a backbone's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightSource {
    /// The backbone's default: a local file if one is configured or was put in place by the
    /// setup script, else its default hub repository.
    Default,
    /// A file in a Hugging Face hub repository.
    Hub {
        /// Repository id, e.g. `timm/vgg16.tv_in1k`.
        repo: String,
        /// File name in the repository, e.g. `model.safetensors`.
        file: String,
    },
    /// A local `.safetensors` or PyTorch `.pth` file.
    File(PathBuf),
}

/// The directory where deepfactor keeps downloaded weights: `$DEEPFACTOR_HOME`, else
/// `$XDG_CACHE_HOME/deepfactor`, else `~/.cache/deepfactor`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEEPFACTOR_HOME") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("deepfactor");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache")
        .join("deepfactor")
}

/// Whether network access is forbidden (`HF_HUB_OFFLINE` or `DEEPFACTOR_OFFLINE` set to a
/// true value).
pub fn offline() -> bool {
    ["HF_HUB_OFFLINE", "DEEPFACTOR_OFFLINE"].iter().any(|v| {
        std::env::var(v).is_ok_and(|s| {
            matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
    })
}

/// Resolves a hub file to a local path: from the cache if present, else downloaded (unless
/// offline).
pub fn hub_file(model: &str, repo: &str, file: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    if let Some(p) = cache.model(repo.to_string()).get(file) {
        return Ok(p);
    }
    let url = format!("https://huggingface.co/{repo}/resolve/main/{file}");
    let help = format!(
        "Download {url} and pass it with --weights FILE (or WeightSource::File), \
         or run once with network access to fill the hub cache ({}).",
        cache.path().display()
    );
    if offline() {
        return Err(Error::WeightsUnavailable {
            model: model.to_string(),
            reason: format!("{file} of {repo} is not in the hub cache and the hub is offline"),
            help,
        });
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| Error::WeightsUnavailable {
            model: model.to_string(),
            reason: format!("cannot start the hub client: {e}"),
            help: help.clone(),
        })?;
    api.model(repo.to_string())
        .get(file)
        .map_err(|e| Error::WeightsUnavailable {
            model: model.to_string(),
            reason: format!("downloading {file} from {repo} failed: {e}"),
            help,
        })
}

/// Weights read from a file: every tensor as `f32` on the CPU, and the file's fingerprint.
#[derive(Debug)]
pub struct TensorMap {
    /// The file they came from.
    pub path: PathBuf,
    /// Tensors by name.
    pub tensors: HashMap<String, Tensor>,
    /// BLAKE3 hash of the file's bytes, hex.
    pub file_hash: String,
    /// When set, [`TensorMap::take`] generates any missing tensor (seeded, deterministic), so
    /// a model can be built without weights: for benchmarks and shape checks only.
    pub synthetic_seed: Option<u64>,
}

impl TensorMap {
    /// Reads a `.safetensors` or `.pth` file (format recognised from its content).
    pub fn read(path: &Path) -> Result<Self> {
        let head = pth::head(path, 16)?;
        let tensors: Vec<(String, Tensor)> =
            if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
                pth::read_pth(path)?
            } else if head.len() >= 9 && head[8] == b'{' {
                read_safetensors(path)?
            } else if head.is_empty() {
                return Err(Error::weights(path, "the file is empty"));
            } else {
                return Err(Error::weights(
                    path,
                    "not a weights file (expected .safetensors or a PyTorch .pth checkpoint)",
                ));
            };
        let file_hash = hash_file(path)?;
        Ok(TensorMap {
            path: path.to_path_buf(),
            tensors: tensors.into_iter().collect(),
            file_hash,
            synthetic_seed: None,
        })
    }

    /// Tensors given in memory; `label` stands for the file in messages and the fingerprint.
    pub fn from_tensors(label: &str, tensors: HashMap<String, Tensor>) -> Self {
        TensorMap {
            path: PathBuf::from(label),
            tensors,
            file_hash: label.to_string(),
            synthetic_seed: None,
        }
    }

    /// An empty map that generates every tensor a model asks for, from `seed`: weights uniform
    /// in ±√(6/fan-in), biases and batch-norm shifts in ±0.1, batch-norm scales and variances
    /// in 0.5..1.5. Optional parts (classifiers) are left out. For benchmarks and tests: the
    /// network computes at full cost but means nothing.
    pub fn synthetic(seed: u64) -> Self {
        TensorMap {
            path: PathBuf::from(format!("synthetic-{seed}")),
            tensors: HashMap::new(),
            file_hash: format!("synthetic-{seed}"),
            synthetic_seed: Some(seed),
        }
    }

    fn generate(name: &str, shape: &[usize], seed: u64) -> Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let name_hash = blake3::hash(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&name_hash.as_bytes()[..8]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ u64::from_le_bytes(first));
        let n: usize = shape.iter().product();
        let (low, high) =
            if name.ends_with("running_var") || (shape.len() == 1 && name.ends_with(".weight")) {
                (0.5, 1.5)
            } else if shape.len() == 1 {
                (-0.1, 0.1)
            } else {
                let fan_in: usize = shape[1..].iter().product();
                let b = (6.0 / fan_in.max(1) as f64).sqrt();
                (-b, b)
            };
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(low..high) as f32).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }

    /// Takes the tensor `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = match (self.tensors.remove(name), self.synthetic_seed) {
            (Some(t), _) => t,
            (None, Some(seed)) => Self::generate(name, shape, seed)?,
            (None, None) => {
                return Err(Error::weights(
                    &self.path,
                    format!("tensor {name:?} is missing"),
                ))
            }
        };
        if t.dims() != shape {
            return Err(Error::weights(
                &self.path,
                format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t)
    }

    /// Whether a tensor of that name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Renames tensors: every name for which `f` returns `Some(new)` is renamed.
    pub fn rename(&mut self, f: impl Fn(&str) -> Option<String>) {
        let old = std::mem::take(&mut self.tensors);
        self.tensors = old
            .into_iter()
            .map(|(k, v)| (f(&k).unwrap_or(k), v))
            .collect();
    }
}

fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::weights(path, format!("malformed safetensors file: {e}")))?;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        use safetensors::Dtype as D;
        let values: Vec<f32> = match view.dtype() {
            D::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            D::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            D::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            D::F64 => data
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            // Integer tensors (e.g. batch-norm counters) are not used by any model.
            _ => continue,
        };
        let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)
            .map_err(|e| Error::weights(path, format!("tensor {name:?}: {e}")))?;
        out.push((name, t));
    }
    Ok(out)
}

/// BLAKE3 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Writes tensors to a `.safetensors` file (f32), e.g. to convert a `.pth` once.
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (k, v) in tensors {
        owned.push((
            k.clone(),
            v.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            v.dims().to_vec(),
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(k, data, shape)| {
            let bytes: &[u8] = bytemuck_f32(data);
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::weights(path, format!("tensor {k:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::weights(path, format!("cannot serialise: {e}")))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // safetensors stores little-endian values; every platform we build for is little-endian.
    bytemuck::cast_slice(v)
}
