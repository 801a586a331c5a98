//! Label randomization (Zhang et al. 2017, as the thesis uses it) and balanced training
//! subsets.

use super::data::CLASSES;
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Stream ids that keep the seeded draws of the study apart.
pub(crate) mod stream {
    /// Label randomization.
    pub const LABELS: u64 = 1;
    /// The balanced training subset.
    pub const SUBSET: u64 = 2;
    /// Weight initialisation.
    pub const INIT: u64 = 3;
    /// Order of the training batches.
    pub const ORDER: u64 = 4;
    /// Probe batches.
    pub const PROBE: u64 = 5;
    /// Random ablation.
    pub const ABLATION: u64 = 6;
}

/// A ChaCha8 generator for `(seed, stream, extra)`: one independent, reproducible stream per
/// purpose.
pub(crate) fn rng(seed: u64, stream: u64, extra: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    key[16..24].copy_from_slice(&extra.to_le_bytes());
    key[24..].copy_from_slice(b"dfprobe1");
    ChaCha8Rng::from_seed(key)
}

/// Labels after randomization: each label is replaced, with probability `p`, by one drawn
/// uniformly from the *other* classes (so a replaced label is never the true one). The draw
/// depends on `(seed, p)` only; the same pair always gives the same labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomizedLabels {
    /// The labels to train with.
    pub labels: Vec<u8>,
    /// Which labels were replaced.
    pub replaced: Vec<bool>,
}

impl RandomizedLabels {
    /// The fraction of labels replaced.
    pub fn replaced_fraction(&self) -> f64 {
        if self.replaced.is_empty() {
            return 0.0;
        }
        self.replaced.iter().filter(|r| **r).count() as f64 / self.replaced.len() as f64
    }
}

/// Randomizes `labels` (each `< CLASSES`) with probability `p ∈ [0, 1]` under `seed`.
pub fn randomize_labels(labels: &[u8], p: f64, seed: u64) -> Result<RandomizedLabels> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid(format!(
            "label randomization p must lie in [0, 1], got {p}"
        )));
    }
    if let Some(l) = labels.iter().find(|&&l| l as usize >= CLASSES) {
        return Err(Error::invalid(format!(
            "label {l} is not a class (0..{CLASSES})"
        )));
    }
    let mut r = rng(seed, stream::LABELS, p.to_bits());
    let mut out = Vec::with_capacity(labels.len());
    let mut replaced = Vec::with_capacity(labels.len());
    for &l in labels {
        // Two draws per item whatever the outcome, so item i's fate does not depend on the
        // earlier items' outcomes.
        let u: f64 = r.random();
        let other = r.random_range(0..CLASSES as u8 - 1);
        if u < p {
            out.push(if other >= l { other + 1 } else { other });
            replaced.push(true);
        } else {
            out.push(l);
            replaced.push(false);
        }
    }
    Ok(RandomizedLabels {
        labels: out,
        replaced,
    })
}

/// A class-balanced subset of `n` items of `labels` (⌊n/CLASSES⌋ per class, the remainder
/// going to the lowest classes), drawn under `seed`, returned in ascending index order.
pub fn balanced_subset(labels: &[u8], n: usize, seed: u64) -> Result<Vec<usize>> {
    if n > labels.len() {
        return Err(Error::invalid(format!(
            "a training subset of {n} items was asked for, but the training set has {}",
            labels.len()
        )));
    }
    let mut r = rng(seed, stream::SUBSET, 0);
    let mut chosen = Vec::with_capacity(n);
    for class in 0..CLASSES {
        let want = n / CLASSES + usize::from(class < n % CLASSES);
        let mut members: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == class)
            .collect();
        if members.len() < want {
            return Err(Error::invalid(format!(
                "class {class} has {} items, fewer than the {want} a balanced subset of {n} needs",
                members.len()
            )));
        }
        for i in 0..want {
            let j = r.random_range(i..members.len());
            members.swap(i, j);
        }
        chosen.extend_from_slice(&members[..want]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}
