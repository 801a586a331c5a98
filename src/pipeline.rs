//! The pipeline: a backbone and a describer together, turning image files into descriptors
//! (and the factors an index keeps). It is the [`Extractor`] that
//! builds indexes, and what describes queries.

use crate::backbone::{Backbone, BackboneBuilder, BackboneKind, Prepared, WeightSource};
use crate::descriptor::{Describer, Description, DescriptorConfig, Shrinkage, Whitening};
use crate::index::{Extracted, Extractor, Index, StoredFactors};
use crate::nmf::Factorization;
use crate::BackboneSpec;
use crate::{Activations, CellGrid, Matrix};
use crate::{Error, Recipe, Result};
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

/// Images decoded and run through the network at a time when learning a whitening.
const WHITENING_BATCH: usize = 8;

/// What [`Pipeline::learn_whitening`] made.
#[derive(Debug, Clone)]
pub struct LearnedWhitening {
    /// The whitening.
    pub whitening: Whitening,
    /// Images learned from.
    pub images: usize,
    /// Local vectors learned from.
    pub vectors: usize,
    /// The images skipped, each with why (a message naming it).
    pub skipped: Vec<String>,
}

/// A backbone and a describer, with the recipe they make.
#[derive(Debug)]
pub struct Pipeline {
    backbone: Backbone,
    describer: Describer,
    recipe: Recipe,
    store_factors: bool,
}

impl Pipeline {
    /// A pipeline from its parts. Per-image factors are stored in indexes for the NMF kinds.
    pub fn new(backbone: Backbone, describer: Describer) -> Self {
        let recipe = describer.recipe(&backbone);
        let store_factors = describer.kind().is_nmf();
        Pipeline {
            backbone,
            describer,
            recipe,
            store_factors,
        }
    }

    /// Rebuilds the pipeline an index was made with, from its recipe: the backbone (weights
    /// from `weights`, which must have the recipe's fingerprint), and the describer (with the
    /// index's whitening, if the recipe names one).
    pub fn from_recipe(
        recipe: &Recipe,
        weights: WeightSource,
        device: Device,
        whitening: Option<Arc<Whitening>>,
    ) -> Result<Self> {
        let kind = match &recipe.backbone {
            BackboneSpec::Builtin(kind) => *kind,
            BackboneSpec::External(name) => {
                return Err(Error::invalid(format!(
                    "the recipe names backbone {name:?}, which deepfactor does not have ({}): \
                     its descriptors were made by another extractor",
                    BackboneKind::ALL.map(|k| k.name()).join(", ")
                )))
            }
        };
        let backbone = BackboneBuilder::new(kind)
            .weights(weights)
            .layer(recipe.layer.clone())
            .input_size(recipe.input_size)
            .max_side(recipe.max_side)
            .padding(recipe.padding)
            .shift_negative(recipe.shift_negative)
            .device(device)
            .build()?;
        if backbone.fingerprint() != recipe.weights_fingerprint {
            return Err(Error::RecipeMismatch {
                index: recipe.describe(),
                other: format!(
                    "weights {} (fingerprint {}); pass the weights the index was built with",
                    backbone.weights_path().display(),
                    &backbone.fingerprint()[..12]
                ),
            });
        }
        let cfg = DescriptorConfig::from_recipe(recipe, whitening)?;
        let pipeline = Pipeline::new(backbone, cfg.build()?);
        recipe.check_compatible(&pipeline.recipe)?;
        Ok(pipeline)
    }

    /// The pipeline `index` was built with: its recipe rebuilt (see
    /// [`Pipeline::from_recipe`]) with the whitening the index keeps beside it. The one way
    /// to get the pipeline that searches or extends an index.
    pub fn for_index(index: &Index, weights: WeightSource, device: Device) -> Result<Self> {
        Pipeline::from_recipe(index.recipe(), weights, device, index.whitening()?)
    }

    /// The backbone.
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// The describer.
    pub fn describer(&self) -> &Describer {
        &self.describer
    }

    /// The recipe of the descriptors made.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// Whether per-image factors go into indexes.
    pub fn stores_factors(&self) -> bool {
        self.store_factors
    }

    /// Activations and description of one image file.
    pub fn describe_path(&self, path: &Path) -> Result<(Activations, Description)> {
        let acts = self.backbone.extract_path(path)?;
        let d = self.describer.describe(&acts)?;
        Ok((acts, d))
    }

    /// Learns a PCA whitening for this pipeline's descriptors from the image files `images`
    /// (a training set, not the images to be searched): every image's
    /// [`Describer::local_vectors`] (before any whitening the describer applies), learned
    /// with `shrinkage` and at most `max_dim` axes, recorded as training set `name` with the
    /// number of images actually used. Images that cannot be read or described are skipped
    /// and listed; fewer than two usable images is an error. `progress(done, total)` is called
    /// as images are processed.
    pub fn learn_whitening(
        &self,
        images: &[PathBuf],
        name: &str,
        shrinkage: Shrinkage,
        max_dim: Option<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<LearnedWhitening> {
        let mut data = Vec::new();
        let (mut vectors, mut used) = (0usize, 0usize);
        let mut skipped = Vec::new();
        let mut done = 0;
        for chunk in images.chunks(WHITENING_BATCH) {
            for (path, acts) in chunk.iter().zip(self.backbone.extract_paths(chunk)) {
                match acts.and_then(|acts| self.describer.local_vectors(&acts)) {
                    Ok(v) => {
                        vectors += v.rows();
                        used += 1;
                        data.extend_from_slice(v.as_slice());
                    }
                    Err(e) => skipped.push(e.naming(path)),
                }
                done += 1;
                progress(done, images.len());
            }
        }
        if used < 2 {
            return Err(Error::invalid(format!(
                "whitening needs at least 2 usable images, {used} of {} were",
                images.len()
            )));
        }
        let channels = self.backbone.layer().channels;
        let matrix = crate::Matrix::from_vec(vectors, channels, data)?;
        let mut learner = Whitening::learner(name, used).shrinkage(shrinkage);
        if let Some(d) = max_dim {
            learner = learner.max_dim(d);
        }
        let whitening = learner.learn(&matrix)?;
        Ok(LearnedWhitening {
            whitening,
            images: used,
            vectors,
            skipped,
        })
    }

    /// What an index keeps of `path`'s activations.
    fn extracted(&self, acts: &Activations, path: &Path) -> Result<Extracted> {
        let mut x = self.stored(self.describer.describe(acts)?)?;
        x.warning = crate::images::truncation(path)?;
        Ok(x)
    }

    /// What an index keeps of a description (no warning: that belongs to the file).
    fn stored(&self, d: Description) -> Result<Extracted> {
        let factors = match (&d.factors, self.store_factors) {
            (Some(f), true) => Some(StoredFactors::quantize(
                &f.v,
                &f.u,
                d.grid.rows,
                d.grid.cols,
            )?),
            _ => None,
        };
        Ok(Extracted {
            descriptor: d.vector,
            width: d.grid.image_width,
            height: d.grid.image_height,
            factors,
            warning: None,
        })
    }

    /// Whether a batch's factorizations run on the backbone's device, batched: on a GPU, for
    /// the NMF descriptors of a non-negative layer.
    fn factorizes_on_device(&self) -> bool {
        !self.backbone.device().is_cpu()
            && self.describer.nmf().is_some()
            && self.backbone.layer().non_negative
    }

    /// What an index keeps of prepared images of one input size, in one forward pass. On a
    /// GPU with an NMF descriptor the factorizations run there too, the batch at once
    /// ([`Nmf::fit_tensor`](crate::nmf::Nmf::fit_tensor), CroW weights included), and only
    /// the factors come back to describe; otherwise each image's activations are described on
    /// the CPU, in parallel.
    pub fn extract_prepared(&self, images: &[Prepared]) -> Result<Vec<Extracted>> {
        use rayon::prelude::*;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(hw) = images
            .iter()
            .map(Prepared::input_hw)
            .find(|hw| *hw != images[0].input_hw())
        {
            return Err(Error::invalid(format!(
                "a batch holds inputs of {:?} and {hw:?}; group images by input size",
                images[0].input_hw()
            )));
        }
        if self.factorizes_on_device() {
            self.factorize_batch(images)
        } else {
            self.backbone
                .extract_batch(images)?
                .par_iter()
                .map(|a| self.stored(self.describer.describe(a)?))
                .collect()
        }
    }

    /// The batch path of [`Pipeline::extract_prepared`] (on any device): the network, CroW
    /// weights and the factorizations of the batch on the backbone's device; the factors
    /// described on the CPU.
    fn factorize_batch(&self, images: &[Prepared]) -> Result<Vec<Extracted>> {
        let (Some(nmf), layer) = (self.describer.nmf(), self.backbone.layer().name.as_str()) else {
            return Err(Error::invalid("the descriptor has no factors"));
        };
        let input = Tensor::stack(
            &images.iter().map(|p| p.tensor.clone()).collect::<Vec<_>>(),
            0,
        )?;
        let maps = self
            .backbone
            .forward_layers(&input, &[layer])?
            .pop()
            .ok_or_else(|| Error::Numeric("layer was not computed".into()))?;
        let (b, c, h, w) = maps.dims4()?;
        let mut a = maps.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?;
        if self.describer.crow() {
            // Channel weights from each image's count of positive cells per channel.
            let counts = a.gt(0f32)?.to_dtype(DType::F32)?.sum(1)?.to_vec2::<f32>()?;
            let weights: Vec<f32> = counts
                .iter()
                .flat_map(|n| {
                    // Counts of cells: whole numbers, exact in f32 below 2²⁴ cells.
                    let n: Vec<usize> = n.iter().map(|&x| x.round() as usize).collect();
                    crate::descriptor::crow::channel_weights_from_counts(&n, h * w)
                })
                .collect();
            let weights = Tensor::from_vec(weights, (b, 1, c), a.device())?;
            a = a.broadcast_mul(&weights)?;
        }
        let f = nmf.fit_tensor(&a)?;
        let (u, v) = (f.u.to_device(&Device::Cpu)?, f.v.to_device(&Device::Cpu)?);
        let k = v.dim(1)?;
        images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let grid = CellGrid {
                    rows: h,
                    cols: w,
                    image_width: image.image_width,
                    image_height: image.image_height,
                };
                let factors = Factorization {
                    u: Matrix::from_vec(h * w, k, u.get(i)?.flatten_all()?.to_vec1()?)?,
                    v: Matrix::from_vec(k, c, v.get(i)?.flatten_all()?.to_vec1()?)?,
                    iterations: f.iterations.get(i).copied().unwrap_or(0),
                    rel_error: f.rel_error.get(i).copied().unwrap_or(0.0),
                };
                self.stored(self.describer.describe_factors(&grid, factors, None)?)
            })
            .collect()
    }
}

impl Extractor for Pipeline {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// A bounded three-stage pipeline: a thread decodes and resizes the files in order, the
    /// calling thread runs the network (on the rayon pool, batching consecutive images of one
    /// input size), and a thread factorizes and describes what comes out. Each queue between
    /// the stages holds at most a batch, so memory stays bounded and decoding and describing
    /// overlap the network.
    fn extract(&self, paths: &[PathBuf]) -> Vec<Result<Extracted>> {
        let depth = self.backbone.batch_size();
        let mut results: Vec<Option<Result<Extracted>>> = paths.iter().map(|_| None).collect();
        std::thread::scope(|scope| {
            let (prepared_tx, prepared_rx) = sync_channel::<(usize, Result<Prepared>)>(depth);
            let (acts_tx, acts_rx) = sync_channel::<(usize, Result<Staged>)>(depth);
            scope.spawn(move || {
                for (i, p) in paths.iter().enumerate() {
                    // The receiver hangs up only when the network stage ended early.
                    if prepared_tx
                        .send((i, self.backbone.prepare_path(p)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
            let describing = scope.spawn(move || {
                acts_rx
                    .into_iter()
                    .map(|(i, staged)| {
                        let r = staged.and_then(|s| match s {
                            Staged::Activations(a) => self.extracted(&a, &paths[i]),
                            Staged::Extracted(mut x) => {
                                x.warning = crate::images::truncation(&paths[i])?;
                                Ok(x)
                            }
                        });
                        (i, r)
                    })
                    .collect::<Vec<_>>()
            });
            let mut batch: Vec<(usize, Prepared)> = Vec::with_capacity(depth);
            for (i, prepared) in prepared_rx {
                match prepared {
                    Err(e) => {
                        if acts_tx.send((i, Err(e))).is_err() {
                            break;
                        }
                    }
                    Ok(p) => {
                        if batch
                            .first()
                            .is_some_and(|(_, b)| b.input_hw() != p.input_hw())
                        {
                            self.run_network(&mut batch, &acts_tx);
                        }
                        batch.push((i, p));
                        if batch.len() == depth {
                            self.run_network(&mut batch, &acts_tx);
                        }
                    }
                }
            }
            self.run_network(&mut batch, &acts_tx);
            drop(acts_tx);
            match describing.join() {
                Ok(described) => {
                    for (i, r) in described {
                        results[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        results
            .into_iter()
            .zip(paths)
            .map(|(r, p)| {
                r.unwrap_or_else(|| Err(Error::image(p, "no result from the feature pipeline")))
                    .map_err(|e| match e {
                        e @ (Error::Image { .. } | Error::Io { .. }) => e,
                        other => Error::image(p, other.to_string()),
                    })
            })
            .collect()
    }
}

impl Pipeline {
    /// Runs the network on `batch` (images of one input size), empties it, and passes each
    /// image's activations — or, when the factorizations run on the device, what the index
    /// keeps — or the batch's error on.
    fn run_network(
        &self,
        batch: &mut Vec<(usize, Prepared)>,
        out: &SyncSender<(usize, Result<Staged>)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let (ids, images): (Vec<usize>, Vec<Prepared>) = batch.drain(..).unzip();
        let staged = if self.factorizes_on_device() {
            self.extract_prepared(&images)
                .map(|x| x.into_iter().map(Staged::Extracted).collect::<Vec<_>>())
        } else {
            self.backbone
                .extract_batch(&images)
                .map(|a| a.into_iter().map(Staged::Activations).collect())
        };
        let results: Vec<Result<Staged>> = match staged {
            Ok(acts) if acts.len() == ids.len() => acts.into_iter().map(Ok).collect(),
            Ok(_) => ids
                .iter()
                .map(|_| Err(Error::Numeric("the network returned too few maps".into())))
                .collect(),
            Err(e) => {
                let msg = e.to_string();
                ids.iter()
                    .map(|_| Err(Error::Numeric(msg.clone())))
                    .collect()
            }
        };
        for (i, r) in ids.into_iter().zip(results) {
            // The describing stage hangs up only if it panicked, which the join reports.
            if out.send((i, r)).is_err() {
                return;
            }
        }
    }
}

/// An image between the network stage and the describing one.
enum Staged {
    /// Activations, to describe.
    Activations(Activations),
    /// Already described (factorized on the device).
    Extracted(Extracted),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::TensorMap;
    use crate::descriptor::DescriptorKind;

    #[test]
    fn batched_factorization_describes_as_the_per_image_path() {
        let backbone = BackboneBuilder::new(BackboneKind::EfficientNetLite0)
            .input_size(96)
            .build_from_tensors(TensorMap::synthetic(5))
            .unwrap();
        let pipeline = Pipeline::new(
            backbone,
            DescriptorConfig::new(DescriptorKind::NmfVu)
                .build()
                .unwrap(),
        );
        let images: Vec<Prepared> = (0..3u32)
            .map(|seed| {
                let img = image::RgbImage::from_fn(128, 96, |x, y| {
                    let v = seed
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(x * 31 + y * 17);
                    image::Rgb([(v % 251) as u8, (v / 7 % 253) as u8, (v / 13 % 247) as u8])
                });
                pipeline.backbone().preprocess().prepare(&img).unwrap()
            })
            .collect();
        let batched = pipeline.factorize_batch(&images).unwrap();
        let alone = pipeline.extract_prepared(&images).unwrap();
        assert_eq!(batched.len(), 3);
        for (b, a) in batched.iter().zip(&alone) {
            assert_eq!((b.width, b.height), (a.width, a.height));
            let cos: f32 = b
                .descriptor
                .iter()
                .zip(&a.descriptor)
                .map(|(x, y)| x * y)
                .sum();
            assert!(
                cos > 0.999,
                "batched and per-image descriptors differ: cosine {cos}"
            );
            assert!(b.factors.is_some());
        }
        let mixed = [
            images[0].clone(),
            pipeline
                .backbone()
                .preprocess()
                .prepare(&image::RgbImage::new(96, 128))
                .unwrap(),
        ];
        assert!(
            pipeline.extract_prepared(&mixed).is_err(),
            "inputs of two sizes in one batch"
        );
    }
}
