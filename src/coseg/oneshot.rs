//! One-shot co-segmentation (thesis §4.3.2): one image of the set comes with its object mask,
//! which picks the object's factors.
//!
//! How the annotated image is used is an [`OneShotMode`]:
//! - [`OneShotMode::Matched`] (the thesis, and the default):
//!   the set is factorized with every `K` of [`DEFAULT_ONE_SHOT_KS`]; in each run every
//!   factor's coarse mask in the annotated image is compared with the true mask as the
//!   factor–part matching of [`crate::eval::PartMatcher`] does with a single part: factors
//!   lying inside the object — intersection over the factor's own area above `τ_merge`
//!   ([`DEFAULT_TAU_MERGE`], thesis eqs. 4.5–4.10) — are merged, and the group that is the
//!   object's mutual best match by IoU is the run's candidate; the best IoU wins.
//! - [`OneShotMode::Select`]: each run also offers its unsupervised
//!   ([`super::Method::Auto`]) choice, and every candidate is scored by the IoU of its own
//!   coarse object mask (normalised and thresholded as configured, no refinement).
//! - [`OneShotMode::Vote`]: one factorization; the unsupervised choice corrected by majority
//!   of each clearly present factor's mass inside or outside the mask.
//!
//! Measured on the VOC co-segmentation set (Lite0 `head`, first image of each class
//! annotated), none beats the unsupervised default (see the module docs of
//! [`crate::coseg`]): one image is a weak signal, and the candidate that fits it best often
//! generalises worse. Mean CorLoc / Jaccard, development half | held-out half: `Matched`
//! 61.9 / 50.5 | 55.7 / 46.0; `Select` 58.5 / 47.6 | 57.1 / 47.1; `Vote` 61.4 / 52.0 |
//! 45.2 / 37.2. `Matched` is the default: best CorLoc on the development half.

use super::{Coseg, CosegModel, FeatureStack};
use crate::eval::{jaccard, Mask, PartMatcher};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The ranks tried by one-shot selection (thesis).
pub const DEFAULT_ONE_SHOT_KS: [usize; 4] = [2, 4, 6, 8];
/// Intersection over a factor's area above which it is merged into the object (thesis).
pub const DEFAULT_TAU_MERGE: f64 = 0.2;

/// How one-shot co-segmentation uses the annotated image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OneShotMode {
    /// The thesis: per rank the matched factor group; the one with the best IoU on the
    /// annotated image wins.
    #[default]
    Matched,
    /// Per rank the matched group and the unsupervised choice; the candidate whose coarse
    /// object mask has the best IoU on the annotated image wins.
    Select,
    /// One factorization with the largest rank: the unsupervised choice, corrected where the
    /// annotated image shows a factor clearly — a factor with at least `1/(2K)` of the
    /// image's heatmap energy is the object's when most of its mass there lies inside the
    /// mask, and not when most lies outside; factors (nearly) absent from it keep their
    /// unsupervised label.
    Vote,
}

/// How a one-shot candidate was found in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OneShotRule {
    /// Factors merged and matched to the annotated mask (the thesis).
    Matched,
    /// The run's unsupervised border-ratio choice.
    Auto,
    /// The unsupervised choice corrected by the annotated image ([`OneShotMode::Vote`]).
    Vote,
}

/// One candidate: what one factorization offered for the annotated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneShotRun {
    /// The rank.
    pub k: usize,
    /// How the factors were found.
    pub rule: OneShotRule,
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
    /// Every candidate, in the order of the ranks tried (per rank: matched, then auto).
    pub runs: Vec<OneShotRun>,
    /// The index of the winning candidate in `runs`.
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
        if self.cfg.one_shot == OneShotMode::Vote {
            return self.one_shot_vote(stack, annotated, truth, ks);
        }
        let offer_auto = self.cfg.one_shot == OneShotMode::Select;
        let mut runs = Vec::new();
        // Per candidate, the index of its run's factorization in `fits`.
        let mut fit_of = Vec::new();
        let mut fits = Vec::new();
        for &k in ks {
            let factors = self.factorize(stack, k)?;
            let probe = self.model(factors, Vec::new(), "one-shot".into());
            let masks = probe.factor_masks(annotated, g.image_width, g.image_height)?;
            let m = matcher.match_masks(&masks, std::slice::from_ref(truth))?;
            let (matched, matched_iou) = match m.matches.iter().find(|x| x.part_group == 0) {
                Some(x) => (m.factor_groups[x.factor_group].clone(), x.iou),
                None => {
                    // No mutual match (no factor overlaps the object): the best single one.
                    let best = (0..masks.len())
                        .max_by(|&a, &b| m.iou[a][0].total_cmp(&m.iou[b][0]).then(b.cmp(&a)))
                        .unwrap_or(0);
                    (vec![best], m.iou.get(best).map_or(0.0, |r| r[0]))
                }
            };
            let mut offered = vec![(OneShotRule::Matched, matched, matched_iou)];
            if offer_auto {
                let auto = probe.stats.below_mean_ratio(self.cfg.border_alpha);
                offered.push((OneShotRule::Auto, auto, 0.0));
                // Every candidate scored the same way: its own coarse object mask.
                for (_, factors, iou) in &mut offered {
                    let coarse = probe.coarse_mask(annotated, factors)?;
                    *iou = jaccard(truth, &coarse)?;
                }
            }
            for (rule, factors, iou) in offered {
                runs.push(OneShotRun {
                    k,
                    rule,
                    factors,
                    iou,
                });
                fit_of.push(fits.len());
            }
            fits.push(probe.factors);
        }
        let chosen = (0..runs.len())
            .max_by(|&a, &b| runs[a].iou.total_cmp(&runs[b].iou).then(b.cmp(&a)))
            .unwrap_or(0);
        let factors = fits.swap_remove(fit_of[chosen]);
        let model = self.model(factors, runs[chosen].factors.clone(), "one-shot".into());
        Ok((
            model,
            OneShotChoice {
                annotated,
                runs,
                chosen,
            },
        ))
    }

    /// [`OneShotMode::Vote`] (arguments checked by [`Coseg::one_shot`]).
    fn one_shot_vote(
        &self,
        stack: &FeatureStack,
        annotated: usize,
        truth: &Mask,
        ks: &[usize],
    ) -> Result<(CosegModel, OneShotChoice)> {
        let k = ks.iter().copied().max().unwrap_or(1);
        let factors = self.factorize(stack, k)?;
        let probe = self.model(factors, Vec::new(), "one-shot".into());
        let auto = probe.stats.below_mean_ratio(self.cfg.border_alpha);
        let (w, h) = (truth.width() as u32, truth.height() as u32);
        // Per factor: its mass in the annotated image, the share inside the mask, its energy.
        let mut shares = Vec::with_capacity(k);
        let mut energies = Vec::with_capacity(k);
        for j in 0..k {
            let up = probe.factors.heatmap(annotated, j)?.upsample(w, h);
            let (mut inside, mut total) = (0f64, 0f64);
            for (y, row) in up.chunks(w as usize).enumerate() {
                for (x, &v) in row.iter().enumerate() {
                    total += f64::from(v);
                    if truth.get(x, y) {
                        inside += f64::from(v);
                    }
                }
            }
            shares.push(if total > 0.0 { inside / total } else { 0.0 });
            energies.push(total * f64::from(probe.factors.concept_norm(j)));
        }
        let image_energy: f64 = energies.iter().sum();
        let mut object: Vec<usize> = (0..k)
            .filter(|&j| {
                if energies[j] > 0.0 && energies[j] >= image_energy / (2 * k) as f64 {
                    shares[j] > 0.5
                } else {
                    auto.contains(&j)
                }
            })
            .collect();
        if object.is_empty() {
            object = (0..k)
                .max_by(|&a, &b| shares[a].total_cmp(&shares[b]).then(b.cmp(&a)))
                .into_iter()
                .collect();
        }
        let iou = jaccard(truth, &probe.coarse_mask(annotated, &object)?)?;
        let model = self.model(probe.factors, object.clone(), "one-shot".into());
        Ok((
            model,
            OneShotChoice {
                annotated,
                runs: vec![OneShotRun {
                    k,
                    rule: OneShotRule::Vote,
                    factors: object,
                    iou,
                }],
                chosen: 0,
            },
        ))
    }
}
