//! deepfactor: embedded image search built on deep feature factorization.
//!
//! A CNN layer's activations for one or more images form a non-negative matrix `A`
//! (cells × channels). Non-negative matrix factorization gives `A ≈ U·V`: the columns of `U`
//! are heatmaps ("where"), the rows of `V` concept vectors ("what"). The crate turns that one
//! decomposition into image descriptors, index files, region queries with localization, and
//! co-segmentation. See `ARCHITECTURE.md` for a walk through the modules in pipeline order.

//!
//! # The public API
//!
//! The core data types are at the crate root: [`Activations`] (a layer's output for one
//! image), [`BBox`] and [`CellGrid`] (pixels and feature-map cells), the [`Recipe`] (with
//! [`BackboneSpec`], [`DescriptorSpec`], [`NmfSpec`], [`WhiteningRef`]) and the one [`Error`].
//! Every other item lives in exactly one public module, in pipeline order:
//!
//! - [`images`] — finding and decoding image files;
//! - [`backbone`] — networks: images in, [`Activations`] of a named layer out;
//! - [`linalg`] — the dense [`linalg::Matrix`] and the numerical kernels under everything;
//! - [`nmf`] — the factorization `A ≈ U·V` and its compression baselines;
//! - [`heatmap`] — [`heatmap::Heatmap`], binarization, boxes, the factor filter;
//! - [`descriptor`] — image and region descriptors, whitening;
//! - [`pipeline`] — a backbone and a describer together, as an index's extractor;
//! - [`index`] — index files: build, update, open, search;
//! - [`query`] — region queries with expansion and localization, and benchmark runs;
//! - [`localize`] — where a query's region is in the hits;
//! - [`report`] — HTML and PNG reports of a search and of a co-segmentation;
//! - [`eval`] — ground truth and metrics;
//! - [`coseg`] — co-segmentation and co-localization of image sets;
//! - [`probe`] — beside the pipeline: memorization probes (train small nets, compress their
//!   activations, area under the accuracy-vs-K curve).
//!
//! Submodules are private: each module re-exports what it offers, so an item has one path.

mod activations;
pub mod backbone;
pub mod coseg;
pub mod descriptor;
mod durable;
mod error;
pub mod eval;
mod geometry;
pub mod heatmap;
pub mod images;
pub mod index;
pub mod linalg;
pub mod localize;
pub mod nmf;
pub mod pipeline;
pub mod probe;
#[cfg(feature = "python")]
mod python;
pub mod query;
mod recipe;
pub mod report;

pub use activations::Activations;
pub use error::{Error, Result};
pub use geometry::{BBox, CellGrid};
pub(crate) use linalg::Matrix;
pub use recipe::{BackboneSpec, DescriptorSpec, NmfSpec, Recipe, WhiteningRef};
