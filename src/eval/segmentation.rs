//! Co-segmentation and co-localization scores of a set of predicted masks and boxes.
//!
//! Per image, against its true mask:
//! - **Jaccard**: `|P ∩ T| / |P ∪ T|` (1 when both are empty), the usual co-segmentation
//!   score; its mean over images is the set's `jaccard`.
//! - **precision**: pixel accuracy, the share of pixels labelled correctly (object or not).
//! - **CorLoc** hit: the predicted box has IoU > 0.5 ([`CORLOC_IOU`](super::CORLOC_IOU)) with the box around the
//!   true mask's largest 8-connected component (with box ground truth instead of masks: with
//!   any of the image's boxes). An image without a predicted box is a miss.
//!
//! Over the set: the means of the above (percent), and **pooled Jaccard** — the IoU of all
//! pixels of the set at once, `Σ|P ∩ T| / Σ|P ∪ T|` (the thesis' figure), which weighs large
//! images and objects more.

use super::localization::is_correct_localization;
use super::mask::Mask;
use crate::{BBox, Error, Result};
use serde::{Deserialize, Serialize};

/// The scores of one image (fractions in `[0, 1]`; `None` where the ground truth does not
/// allow the score, e.g. Jaccard with box-only ground truth).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ImageScore {
    /// Mask IoU.
    pub jaccard: Option<f64>,
    /// Pixel accuracy.
    pub precision: Option<f64>,
    /// Whether the box localizes the object.
    pub corloc: bool,
    /// IoU of the predicted box with the true box it is scored against (the best one when
    /// there are several); 0 without a prediction.
    pub box_iou: f64,
    /// `|P ∩ T|` in pixels (for the pooled Jaccard).
    pub intersection: u64,
    /// `|P ∪ T|` in pixels.
    pub union: u64,
}

/// Scores a predicted mask (and its box) against the true mask; the true box is the box
/// around the true mask's largest component. Refuses masks of different sizes, naming both.
pub fn score_mask(predicted: &Mask, bbox: Option<&BBox>, truth: &Mask) -> Result<ImageScore> {
    if (predicted.width(), predicted.height()) != (truth.width(), truth.height()) {
        return Err(Error::invalid(format!(
            "predicted mask is {}×{}, the true mask {}×{}",
            predicted.width(),
            predicted.height(),
            truth.width(),
            truth.height()
        )));
    }
    let inter = predicted.intersection_area(truth)? as u64;
    let (pa, ta) = (predicted.area() as u64, truth.area() as u64);
    let union = pa + ta - inter;
    let n = (truth.width() * truth.height()) as u64;
    let truth_box: Vec<BBox> = truth.largest_component().bbox().into_iter().collect();
    let mut s = score_box(bbox, &truth_box);
    s.jaccard = Some(if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    });
    s.precision = Some(if n == 0 {
        1.0
    } else {
        (n - (union - inter)) as f64 / n as f64
    });
    s.intersection = inter;
    s.union = union;
    Ok(s)
}

/// Scores a predicted box against true boxes alone (CorLoc and box IoU).
pub fn score_box(bbox: Option<&BBox>, truth: &[BBox]) -> ImageScore {
    let box_iou = bbox.map_or(0.0, |p| {
        truth
            .iter()
            .map(|t| f64::from(p.iou(t)))
            .fold(0.0, f64::max)
    });
    ImageScore {
        corloc: is_correct_localization(bbox, truth),
        box_iou,
        ..ImageScore::default()
    }
}

/// Scores over a set (percent; `None` where no image had the ground truth for it).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SetScores {
    /// Mean per-image Jaccard.
    pub jaccard: Option<f64>,
    /// Σ intersections / Σ unions.
    pub jaccard_pooled: Option<f64>,
    /// Mean pixel accuracy.
    pub precision: Option<f64>,
    /// Share of images localized.
    pub corloc: Option<f64>,
    /// Images scored.
    pub images: usize,
}

impl SetScores {
    /// The scores of `images` (none: every score `None`).
    pub fn of(images: &[ImageScore]) -> SetScores {
        let n = images.len();
        if n == 0 {
            return SetScores::default();
        }
        let mean = |f: &dyn Fn(&ImageScore) -> Option<f64>| -> Option<f64> {
            let v: Vec<f64> = images.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| 100.0 * v.iter().sum::<f64>() / v.len() as f64)
        };
        let with_masks = images.iter().any(|s| s.jaccard.is_some());
        let (inter, union): (u64, u64) = images
            .iter()
            .filter(|s| s.jaccard.is_some())
            .fold((0, 0), |(a, b), s| (a + s.intersection, b + s.union));
        SetScores {
            jaccard: mean(&|s| s.jaccard),
            jaccard_pooled: with_masks.then(|| {
                if union == 0 {
                    100.0
                } else {
                    100.0 * inter as f64 / union as f64
                }
            }),
            precision: mean(&|s| s.precision),
            corloc: Some(100.0 * images.iter().filter(|s| s.corloc).count() as f64 / n as f64),
            images: n,
        }
    }

    /// The mean of several sets' scores, each set counting once (the usual per-class mean);
    /// a score is averaged over the sets that have it.
    pub fn mean(sets: &[SetScores]) -> SetScores {
        let avg = |f: &dyn Fn(&SetScores) -> Option<f64>| -> Option<f64> {
            let v: Vec<f64> = sets.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        SetScores {
            jaccard: avg(&|s| s.jaccard),
            jaccard_pooled: avg(&|s| s.jaccard_pooled),
            precision: avg(&|s| s.precision),
            corloc: avg(&|s| s.corloc),
            images: sets.iter().map(|s| s.images).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox::new(x1, y1, x2, y2).unwrap()
    }

    #[test]
    fn scores_by_hand() {
        // 4 × 2: truth is the left half (4 px), prediction the left three columns (6 px).
        let truth = Mask::from_fn(4, 2, |x, _| x < 2);
        let pred = Mask::from_fn(4, 2, |x, _| x < 3);
        let pbox = pred.largest_component().bbox();
        let s = score_mask(&pred, pbox.as_ref(), &truth).unwrap();
        assert_eq!(s.jaccard, Some(4.0 / 6.0));
        assert_eq!(s.precision, Some(6.0 / 8.0));
        assert_eq!((s.intersection, s.union), (4, 6));
        // Boxes (0,0)-(3,2) and (0,0)-(2,2): IoU 4/6 > 0.5.
        assert!(s.corloc && (s.box_iou - 4.0 / 6.0).abs() < 1e-6);
        // An empty prediction: no box, Jaccard 0, a miss.
        let e = score_mask(&Mask::empty(4, 2), None, &truth).unwrap();
        assert_eq!((e.jaccard, e.corloc, e.box_iou), (Some(0.0), false, 0.0));
        // Both empty: a perfect Jaccard, but no box to localize.
        let z = score_mask(&Mask::empty(4, 2), None, &Mask::empty(4, 2)).unwrap();
        assert_eq!(
            (z.jaccard, z.precision, z.corloc),
            (Some(1.0), Some(1.0), false)
        );
        // Another size is refused.
        assert!(score_mask(&Mask::empty(3, 2), None, &truth).is_err());

        let set = SetScores::of(&[s, e]);
        assert_eq!(set.images, 2);
        assert!((set.jaccard.unwrap() - 100.0 * (4.0 / 6.0) / 2.0).abs() < 1e-9);
        // Pooled: (4 + 0) / (6 + 4).
        assert!((set.jaccard_pooled.unwrap() - 40.0).abs() < 1e-9);
        assert!((set.precision.unwrap() - 100.0 * (0.75 + 0.5) / 2.0).abs() < 1e-9);
        assert_eq!(set.corloc, Some(50.0));
    }

    #[test]
    fn box_ground_truth_and_means() {
        let truth = [b(0.0, 0.0, 10.0, 10.0), b(20.0, 20.0, 30.0, 30.0)];
        let s = score_box(Some(&b(21.0, 20.0, 30.0, 30.0)), &truth);
        assert!(s.corloc && (s.box_iou - 0.9).abs() < 1e-6 && s.jaccard.is_none());
        let set = SetScores::of(&[s, score_box(None, &truth)]);
        assert_eq!(
            (set.jaccard, set.jaccard_pooled, set.corloc),
            (None, None, Some(50.0))
        );
        let m = SetScores::mean(&[
            set,
            SetScores {
                jaccard: Some(30.0),
                jaccard_pooled: Some(20.0),
                precision: Some(90.0),
                corloc: Some(100.0),
                images: 3,
            },
        ]);
        assert_eq!((m.jaccard, m.corloc, m.images), (Some(30.0), Some(75.0), 5));
        assert_eq!(SetScores::of(&[]), SetScores::default());
    }
}
