//! The pipeline: a backbone and a describer together, turning image files into descriptors
//! (and the factors an index keeps). It is the [`Extractor`] that
//! builds indexes, and what describes queries.

use crate::backbone::{Backbone, BackboneBuilder, BackboneKind, WeightSource};
use crate::descriptor::{Describer, Description, DescriptorConfig, Shrinkage, Whitening};
use crate::index::{Extracted, Extractor, Index, StoredFactors};
use crate::Activations;
use crate::BackboneSpec;
use crate::{Error, Recipe, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
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

    fn extracted(&self, acts: &Activations, path: &Path) -> Result<Extracted> {
        let d = self.describer.describe(acts)?;
        let factors = match (&d.factors, self.store_factors) {
            (Some(f), true) => Some(StoredFactors::quantize(
                &f.v,
                &f.u,
                acts.grid.rows,
                acts.grid.cols,
            )?),
            _ => None,
        };
        Ok(Extracted {
            descriptor: d.vector,
            width: acts.grid.image_width,
            height: acts.grid.image_height,
            factors,
            warning: crate::images::truncation(path)?,
        })
    }
}

impl Extractor for Pipeline {
    fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    fn extract(&self, paths: &[PathBuf]) -> Vec<Result<Extracted>> {
        use rayon::prelude::*;
        let acts = self.backbone.extract_paths(paths);
        acts.into_par_iter()
            .zip(paths.par_iter())
            .map(|(a, p)| {
                a.and_then(|a| self.extracted(&a, p)).map_err(|e| match e {
                    e @ (Error::Image { .. } | Error::Io { .. }) => e,
                    other => Error::image(p, other.to_string()),
                })
            })
            .collect()
    }
}
