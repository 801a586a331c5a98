//! One-shot co-segmentation (thesis §4.3.2): one image of the set comes with its object mask,
//! which picks the object's factors.
//!
//! The set is factorized several times (`K` ∈ [`DEFAULT_ONE_SHOT_KS`]). In each run, every
//! factor's coarse mask in the annotated image is compared with the true mask as the factor–
//! part matching of [`crate::eval::parts`] does with a single part: factors lying inside the
//! object — intersection over the factor's own area above `τ_merge` ([`DEFAULT_TAU_MERGE`],
//! thesis eqs. 4.5–4.10) — are merged into one group, and the group (or single factor) that
//! is the object's mutual best match by IoU is that run's answer. The run whose answer has
//! the highest IoU on the annotated image wins; its factors then segment every image.

use super::{Coseg, CosegModel, FeatureStack};
use crate::eval::{Mask, PartMatcher};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The ranks tried by one-shot selection (thesis).
pub const DEFAULT_ONE_SHOT_KS: [usize; 4] = [2, 4, 6, 8];
/// Intersection over a factor's area above which it is merged into the object (thesis).
pub const DEFAULT_TAU_MERGE: f64 = 0.2;

/// What one factorization offered for the annotated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneShotRun {
    /// The rank.
    pub k: usize,
    /// The factors matched to the object (after merging).
    pub factors: Vec<usize>,
    /// Their IoU with the true mask on the annotated image, in `[0, 1]`.
    pub iou: f64,
}

/// The outcome of one-shot selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneShotChoice {
    /// The annotated image (index in the stack).
    pub annotated: usize,
    /// Every run, in the order of the ranks tried.
    pub runs: Vec<OneShotRun>,
    /// The index of the winning run in `runs`.
    pub chosen: usize,
}

impl Coseg {
    /// One-shot co-segmentation: `truth` is the object mask of image `annotated` (the size of
    /// that image); `ks` the ranks to try (e.g. [`DEFAULT_ONE_SHOT_KS`]), `tau_merge` the
    /// merging threshold ([`DEFAULT_TAU_MERGE`]). Masks and boxes follow this configuration's
    /// normalisation, threshold and refinement.
    pub fn one_shot(
        &self,
        stack: &FeatureStack,
        annotated: usize,
        truth: &Mask,
        ks: &[usize],
        tau_merge: f64,
    ) -> Result<(CosegModel, OneShotChoice)> {
        if annotated >= stack.len() {
            return Err(Error::invalid(format!(
                "annotated image {annotated} of a set of {}",
                stack.len()
            )));
        }
        let g = stack.grid(annotated);
        if (truth.width(), truth.height()) != (g.image_width as usize, g.image_height as usize) {
            return Err(Error::invalid(format!(
                "the mask of {} is {}×{}, the image {}×{}",
                stack.path(annotated).display(),
                truth.width(),
                truth.height(),
                g.image_width,
                g.image_height
            )));
        }
        if ks.is_empty() || ks.contains(&0) {
            return Err(Error::invalid(format!(
                "one-shot ranks {ks:?}: need at least one, each at least 1"
            )));
        }
        let matcher = PartMatcher::builder()
            .factor_merge_threshold(tau_merge)
            .build()?;
        let mut runs = Vec::new();
        let mut models = Vec::new();
        for &k in ks {
            let factors = self.factorize(stack, k)?;
            let probe = self.model(factors, Vec::new(), "one-shot".into());
            let masks = probe.factor_masks(annotated, g.image_width, g.image_height)?;
            let m = matcher.match_masks(&masks, std::slice::from_ref(truth))?;
            let (factors, iou) = match m.matches.iter().find(|x| x.part_group == 0) {
                Some(x) => (m.factor_groups[x.factor_group].clone(), x.iou),
                None => {
                    // No mutual match (no factor overlaps the object): the best single one.
                    let best = (0..masks.len())
                        .max_by(|&a, &b| m.iou[a][0].total_cmp(&m.iou[b][0]).then(b.cmp(&a)))
                        .unwrap_or(0);
                    (vec![best], m.iou.get(best).map_or(0.0, |r| r[0]))
                }
            };
            runs.push(OneShotRun { k, factors, iou });
            models.push(probe);
        }
        let chosen = (0..runs.len())
            .max_by(|&a, &b| runs[a].iou.total_cmp(&runs[b].iou).then(b.cmp(&a)))
            .unwrap_or(0);
        let probe = models.swap_remove(chosen);
        let model = self.model(
            probe.factors,
            runs[chosen].factors.clone(),
            "one-shot".into(),
        );
        Ok((
            model,
            OneShotChoice {
                annotated,
                runs,
                chosen,
            },
        ))
    }
}
