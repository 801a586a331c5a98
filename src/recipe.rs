//! The recipe: everything that decides what a descriptor means.
//!
//! Two descriptors can be compared only when they were made by the same recipe. An index
//! records its recipe in the manifest and refuses queries and additions made with another.

use serde::{Deserialize, Serialize};

/// How descriptors are made: backbone, weights, layer, preprocessing, factorization and
/// pooling. A plain value type that serialises to JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Backbone name, e.g. `efficientnet-lite0`.
    pub backbone: String,
    /// Fingerprint of the weights and preprocessing (hex).
    pub weights_fingerprint: String,
    /// Layer whose activations are used, e.g. `head`.
    pub layer: String,
    /// Shorter side of the network input, in pixels.
    pub input_size: u32,
    /// Optional cap on the longer side of the network input.
    pub max_side: Option<u32>,
    /// Convolution padding: `zero` or `reflect`.
    #[serde(default = "default_padding")]
    pub padding: String,
    /// Whether a layer that can be negative was shifted to be non-negative.
    #[serde(default)]
    pub shift_negative: bool,
    /// Descriptor kind, e.g. `nmf-vu`.
    pub descriptor: String,
    /// NMF rank, for NMF descriptors.
    pub k: Option<usize>,
    /// Whether CroW channel weights are applied before factorization or pooling.
    pub crow: bool,
    /// Identity of the whitening applied, if any.
    pub whitening: Option<String>,
    /// Dimension of the final descriptor.
    pub dim: usize,
}

fn default_padding() -> String {
    "zero".to_string()
}

impl Recipe {
    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {} (weights {}), layer {}, input {}",
            self.descriptor,
            self.backbone,
            &self.weights_fingerprint[..self.weights_fingerprint.len().min(12)],
            self.layer,
            self.input_size
        );
        if let Some(m) = self.max_side {
            s.push_str(&format!(" (max {m})"));
        }
        if self.padding != "zero" {
            s.push_str(&format!(", {} padding", self.padding));
        }
        if self.shift_negative {
            s.push_str(", shifted");
        }
        if let Some(k) = self.k {
            s.push_str(&format!(", K={k}"));
        }
        if self.crow {
            s.push_str(", CroW");
        }
        match &self.whitening {
            Some(w) => s.push_str(&format!(", whitening {w}")),
            None => s.push_str(", no whitening"),
        }
        s.push_str(&format!(", {} dims", self.dim));
        s
    }

    /// `Ok` when `other` makes comparable descriptors, else [`crate::Error::RecipeMismatch`].
    pub fn check_compatible(&self, other: &Recipe) -> crate::Result<()> {
        if self == other {
            Ok(())
        } else {
            Err(crate::Error::RecipeMismatch {
                index: self.describe(),
                other: other.describe(),
            })
        }
    }
}
