//! Activations: what a network layer says about one image, as the later stages use it.

use crate::{CellGrid, Matrix};

/// Activations of one image at one layer: a `(rows·cols) × channels` matrix, one row per cell
/// of the feature map (row-major), and the [`CellGrid`] that lays those cells over the
/// original image's pixels. Made by a [`crate::backbone::Backbone`] (or read from a cache);
/// factorized by [`crate::nmf`], described by [`crate::descriptor`], localized in by
/// [`crate::localize`].
#[derive(Debug, Clone)]
pub struct Activations {
    /// The cells' grid over the original image.
    pub grid: CellGrid,
    /// `(rows·cols) × channels`, row-major over cells.
    pub data: Matrix,
}
