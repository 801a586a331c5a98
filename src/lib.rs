//! deepfactor: embedded image search built on deep feature factorization.
//!
//! A CNN layer's activations for one or more images form a non-negative matrix `A`
//! (cells × channels). Non-negative matrix factorization gives `A ≈ U·V`: the columns of `U`
//! are heatmaps ("where"), the rows of `V` concept vectors ("what"). The crate turns that one
//! decomposition into image descriptors, index files, region queries with localization, and
//! co-segmentation. See `ARCHITECTURE.md` for a walk through the modules in pipeline order.

mod activations;
pub mod backbone;
pub mod descriptor;
mod durable;
pub mod error;
pub mod eval;
pub mod geometry;
pub mod heatmap;
pub mod images;
pub mod index;
pub mod linalg;
pub mod localize;
pub mod nmf;
pub mod pipeline;
pub mod query;
mod recipe;
pub mod report;

pub use activations::Activations;
pub use error::{Error, Result};
pub use geometry::{BBox, CellGrid};
pub use linalg::Matrix;
pub use recipe::{BackboneSpec, DescriptorSpec, NmfSpec, Recipe, WhiteningRef};
