//! Localization metrics: box IoU against ground truth, and CorLoc.
//!
//! Box IoU is [`BBox::iou`]: intersection area over union area, 0 when the boxes do not
//! overlap or either box is degenerate (zero width or height). CorLoc is the fraction of
//! images whose predicted box has IoU **strictly greater** than 0.5 with at least one of the
//! image's ground-truth boxes; an image without a prediction counts as a miss.

use super::ground_truth::GroundTruth;
use crate::{BBox, Error, Result};
use std::collections::HashMap;

/// The IoU a predicted box must exceed to count as a correct localization.
pub const CORLOC_IOU: f32 = 0.5;

/// Whether `predicted` localizes one of `truth` (IoU > [`CORLOC_IOU`]).
pub fn is_correct_localization(predicted: Option<&BBox>, truth: &[BBox]) -> bool {
    predicted.is_some_and(|p| truth.iter().any(|t| p.iou(t) > CORLOC_IOU))
}

/// CorLoc in `[0, 1]` over `(prediction, ground-truth boxes)` pairs, one per image; `None`
/// when there are no images.
pub fn corloc<'a, I>(items: I) -> Option<f64>
where
    I: IntoIterator<Item = (Option<&'a BBox>, &'a [BBox])>,
{
    let (mut hits, mut n) = (0usize, 0usize);
    for (pred, truth) in items {
        n += 1;
        if is_correct_localization(pred, truth) {
            hits += 1;
        }
    }
    (n > 0).then(|| hits as f64 / n as f64)
}

/// A predicted box for one database image of one query's results.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxPrediction {
    /// The query's name.
    pub query: String,
    /// The database image's name.
    pub image: String,
    /// The predicted box, or `None` when nothing was localized.
    pub bbox: Option<BBox>,
}

/// IoU of one ground-truth box with its prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalizationScore {
    /// The query's name.
    pub query: String,
    /// The database image's name.
    pub image: String,
    /// IoU in `[0, 1]` (0 when there is no prediction).
    pub iou: f64,
}

/// Localization scores over every `(query, image)` box of a ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalizationEvaluation {
    /// Mean IoU in percent.
    pub mean_iou: f64,
    /// CorLoc in percent (IoU > 0.5).
    pub corloc: f64,
    /// Per ground-truth box, in ground-truth order.
    pub boxes: Vec<LocalizationScore>,
    /// How many ground-truth boxes had no prediction entry (scored as IoU 0).
    pub missing: usize,
}

/// Scores predicted boxes against the localization ground truth of `gt` (the
/// `<q>_boxes.txt` files): for each query and each image with a ground-truth box, the IoU
/// of the prediction for that pair. Pairs without a prediction score 0 and are counted in
/// `missing`; predictions for pairs without ground truth are ignored. Errors when `gt` has
/// no boxes, a prediction names an unknown query, or a pair is predicted twice.
pub fn evaluate_localization(
    gt: &GroundTruth,
    predictions: &[BoxPrediction],
) -> Result<LocalizationEvaluation> {
    let mut by_pair: HashMap<(&str, &str), Option<&BBox>> = HashMap::new();
    for p in predictions {
        if gt.query(&p.query).is_none() {
            return Err(Error::invalid(format!(
                "box prediction for unknown query {:?} of {}",
                p.query,
                gt.name()
            )));
        }
        if by_pair
            .insert((p.query.as_str(), p.image.as_str()), p.bbox.as_ref())
            .is_some()
        {
            return Err(Error::invalid(format!(
                "query {:?} predicts a box in {:?} twice",
                p.query, p.image
            )));
        }
    }
    let mut boxes = Vec::new();
    let (mut sum, mut hits, mut missing) = (0.0, 0usize, 0usize);
    for q in gt.queries() {
        for (idx, truth) in &q.boxes {
            let image = &gt.images()[*idx];
            let pred = match by_pair.get(&(q.name.as_str(), image.as_str())) {
                Some(p) => *p,
                None => {
                    missing += 1;
                    None
                }
            };
            let iou = pred.map_or(0.0, |p| f64::from(p.iou(truth)));
            if is_correct_localization(pred, std::slice::from_ref(truth)) {
                hits += 1;
            }
            sum += iou;
            boxes.push(LocalizationScore {
                query: q.name.clone(),
                image: image.clone(),
                iou,
            });
        }
    }
    if boxes.is_empty() {
        return Err(Error::invalid(format!(
            "{} has no localization ground truth (no <query>_boxes.txt files)",
            gt.name()
        )));
    }
    let n = boxes.len() as f64;
    Ok(LocalizationEvaluation {
        mean_iou: 100.0 * sum / n,
        corloc: 100.0 * hits as f64 / n,
        boxes,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox::new(x1, y1, x2, y2).unwrap()
    }

    #[test]
    fn corloc_by_hand() {
        let truth = [b(0.0, 0.0, 10.0, 10.0)];
        let two = [b(50.0, 50.0, 60.0, 60.0), b(0.0, 0.0, 10.0, 10.0)];
        let exact = b(0.0, 0.0, 10.0, 10.0);
        let third = b(5.0, 0.0, 15.0, 10.0); // IoU 50/150
        let half = b(0.0, 0.0, 20.0, 10.0); // IoU 100/200 = 0.5, not > 0.5
        let degenerate = b(3.0, 3.0, 3.0, 8.0);
        let items: Vec<(Option<&BBox>, &[BBox])> = vec![
            (Some(&exact), &truth),
            (Some(&third), &truth),
            (Some(&half), &truth),
            (Some(&degenerate), &truth),
            (None, &truth),
            (Some(&exact), &two),
        ];
        // Hits: exact on one box, exact on the second of two boxes.
        assert_eq!(corloc(items), Some(2.0 / 6.0));
        assert_eq!(corloc(Vec::<(Option<&BBox>, &[BBox])>::new()), None);
        // A degenerate ground-truth box can never be localized.
        assert!(!is_correct_localization(Some(&degenerate), &[degenerate]));
        // An image without ground-truth boxes is a miss.
        assert!(!is_correct_localization(Some(&exact), &[]));
    }
}
