//! The pipeline: a backbone and a describer together, turning image files into descriptors
//! (and the factors an index keeps). It is the [`Extractor`] that
//! builds indexes, and what describes queries.

use crate::backbone::{Backbone, BackboneBuilder, BackboneKind, WeightSource};
use crate::descriptor::{Describer, Description, DescriptorConfig, Whitening};
use crate::index::{Extracted, Extractor, StoredFactors};
use crate::Activations;
use crate::{BackboneSpec, WhiteningRef};
use crate::{Error, Recipe, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The file in an index directory that holds the whitening its recipe names:
/// `<id>.whitening` (the whitening file format of [`Whitening::save`]).
pub fn whitening_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.whitening"))
}

/// Stores `whitening` beside an index (write to a temporary file, fsync, rename, fsync the
/// directory), so that the index's recipe can name it. Call before the first commit.
pub fn store_index_whitening(dir: &Path, whitening: &Whitening) -> Result<()> {
    let path = whitening_file(dir, whitening.id());
    if path.is_file() && Whitening::load(&path).is_ok_and(|w| w.id() == whitening.id()) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{}.whitening.tmp", whitening.id()));
    let bytes = whitening.to_bytes()?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Persisting the rename; not all platforms can fsync a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// The whitening an index's recipe names, read from beside the index; `None` when the recipe
/// names none. A missing, damaged or different file is an error naming it.
pub fn load_index_whitening(index: &crate::index::Index) -> Result<Option<Arc<Whitening>>> {
    let Some(WhiteningRef { id, .. }) = &index.recipe().whitening else {
        return Ok(None);
    };
    let path = whitening_file(index.dir(), id);
    if !path.is_file() {
        return Err(Error::IndexFormat {
            path,
            section: "whitening".into(),
            reason: format!("the recipe names whitening {id}, whose file is missing"),
        });
    }
    let w = Whitening::load(&path)?;
    if w.id() != id.as_str() {
        return Err(Error::IndexFormat {
            path,
            section: "whitening".into(),
            reason: format!("holds whitening {}, the recipe names {id}", w.id()),
        });
    }
    Ok(Some(Arc::new(w)))
}
