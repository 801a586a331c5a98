//! Co-segmentation: joint heatmaps, the factor rules on constructed sets, masks and boxes,
//! one-shot merging, scores, bad input through the command line, the report in a browser,
//! and the real VOC co-segmentation set when `../shared/data` is there.

use crate::common;
use deepfactor::coseg::{
    AppearanceModel, Coseg, CosegBuilder, CosegModel, FeatureStack, Method, Normalise, OneShotMode,
    OneShotRule, Refine, Threshold, DEFAULT_ONE_SHOT_KS, DEFAULT_TAU_MERGE,
};
use deepfactor::eval::{score_mask, ImageScore, Mask, SetScores};
use deepfactor::linalg::{Csr, Matrix};
use deepfactor::nmf::{Layout, Nmf};
use deepfactor::{Activations, CellGrid};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Cell size of the constructed images, in pixels.
const CELL: usize = 16;
/// Channels of the constructed activations: 0–3 object (4–5 its lower half when split), 6–11
/// background textures.
const CHANNELS: usize = 12;

/// A constructed image's activations: an object of `oh × ow` cells at `(or, oc)` in a
/// `rows × cols` grid, its cells active on the object channels (the upper and lower halves on
/// different channels when `split`), every other cell on one of two background textures.
fn constructed(
    rows: usize,
    cols: usize,
    (or, oc, oh, ow): (usize, usize, usize, usize),
    split: bool,
    seed: usize,
) -> Activations {
    let mut data = vec![0f32; rows * cols * CHANNELS];
    for r in 0..rows {
        for c in 0..cols {
            let cell = &mut data[(r * cols + c) * CHANNELS..(r * cols + c + 1) * CHANNELS];
            let jitter =
                |k: usize| 0.8 + 0.4 * (((r * 7 + c * 13 + k * 5 + seed * 11) % 10) as f32 / 10.0);
            let inside = (or..or + oh).contains(&r) && (oc..oc + ow).contains(&c);
            if inside {
                let lower = split && r >= or + oh / 2;
                let base = if lower { 4 } else { 0 };
                let n = if split { 2 } else { 4 };
                for (k, v) in cell.iter_mut().enumerate().skip(base).take(n) {
                    *v = 3.0 * jitter(k);
                }
            } else {
                // Two textures in stripes: sky-like rows at the top, ground-like below.
                let base = if r < rows / 2 { 6 } else { 9 };
                for (k, v) in cell.iter_mut().enumerate().skip(base).take(3) {
                    *v = jitter(k);
                }
            }
        }
    }
    Activations {
        grid: CellGrid {
            rows,
            cols,
            image_width: (cols * CELL) as u32,
            image_height: (rows * CELL) as u32,
        },
        data: Matrix::from_vec(rows * cols, CHANNELS, data).unwrap(),
    }
}

/// A set of constructed images of different sizes, the object in the middle of each.
fn constructed_set(split: bool) -> (FeatureStack, Vec<Activations>) {
    let shapes = [
        (8, 10, (2, 3, 4, 4)),
        (9, 12, (3, 4, 4, 5)),
        (10, 8, (3, 2, 5, 4)),
        (8, 8, (2, 2, 4, 4)),
    ];
    let mut stack = FeatureStack::new(CHANNELS).unwrap();
    let mut acts = Vec::new();
    for (i, &(rows, cols, obj)) in shapes.iter().enumerate() {
        let a = constructed(rows, cols, obj, split, i);
        stack
            .push(format!("img{i}"), Path::new(&format!("img{i}.png")), &a)
            .unwrap();
        acts.push(a);
    }
    (stack, acts)
}

/// The pixels of the object of a constructed image.
fn object_mask(a: &Activations, (or, oc, oh, ow): (usize, usize, usize, usize)) -> Mask {
    let g = a.grid;
    Mask::from_fn(g.image_width as usize, g.image_height as usize, |x, y| {
        (or * CELL..(or + oh) * CELL).contains(&y) && (oc * CELL..(oc + ow) * CELL).contains(&x)
    })
}

const OBJECTS: [(usize, usize, usize, usize); 4] =
    [(2, 3, 4, 4), (3, 4, 4, 5), (3, 2, 5, 4), (2, 2, 4, 4)];

#[test]
fn joint_heatmaps_are_slices_of_one_factorization() {
    let (stack, acts) = constructed_set(false);
    let coseg = Coseg::builder()
        .method(Method::Auto)
        .k(3)
        .max_iter(50)
        .build()
        .unwrap();
    let joint = coseg.factorize(&stack, 3).unwrap();
    // The same factorization of the dense stacked matrix, image by image.
    let mut rows = Vec::new();
    for a in &acts {
        rows.extend_from_slice(a.data.as_slice());
    }
    let n: usize = acts.iter().map(|a| a.grid.len()).sum();
    let dense = Matrix::from_vec(n, CHANNELS, rows).unwrap();
    let f = Nmf::new(3)
        .max_iter(50)
        .tol(0.0)
        .layout(Layout::Sparse)
        .build()
        .unwrap()
        .fit(&dense)
        .unwrap();
    let mut start = 0;
    for (i, a) in acts.iter().enumerate() {
        assert_eq!(joint.rows(i), start..start + a.grid.len());
        for k in 0..3 {
            let h = joint.heatmap(i, k).unwrap();
            assert_eq!(h.grid(), &a.grid);
            let want: Vec<f32> = (start..start + a.grid.len())
                .map(|r| f.u.get(r, k))
                .collect();
            for (x, y) in h.values().iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "image {i} factor {k}: {x} vs {y}"
                );
            }
        }
        start += a.grid.len();
    }
    assert!(joint.heatmap(4, 0).is_err() && joint.heatmap(0, 3).is_err());
    // The stack really is held sparse.
    let csr: &Csr = stack.matrix();
    assert!(csr.nnz() < n * CHANNELS / 2);
}

#[test]
fn border_rule_picks_the_object_in_the_middle() {
    let (stack, _) = constructed_set(false);
    for (method, k) in [(Method::Border, 2), (Method::Auto, 4), (Method::Auto, 8)] {
        let model = Coseg::builder()
            .method(method)
            .k(k)
            .build()
            .unwrap()
            .run(&stack)
            .unwrap();
        assert!(!model.object.is_empty(), "{method:?} K={k}");
        // Every chosen factor lives inside the objects; every other one mostly outside.
        for (i, &(or, oc, oh, ow)) in OBJECTS.iter().enumerate().take(stack.len()) {
            let h = model.object_heatmap(i).unwrap();
            let g = h.grid();
            let (mut inside, mut total) = (0f32, 0f32);
            for r in 0..g.rows {
                for c in 0..g.cols {
                    let v = h.values()[r * g.cols + c];
                    total += v;
                    if (or..or + oh).contains(&r) && (oc..oc + ow).contains(&c) {
                        inside += v;
                    }
                }
            }
            assert!(
                inside > 0.95 * total,
                "{method:?} K={k} image {i}: {inside} of {total}"
            );
        }
        let s = &model.stats;
        for &f in &model.object {
            assert!(s.border_ratio[f] < 0.1, "{:?}", s.border_ratio);
        }
    }
    // K = 1 has only the one factor, which covers the background too.
    let single = Coseg::builder()
        .method(Method::Single)
        .build()
        .unwrap()
        .run(&stack)
        .unwrap();
    assert_eq!(single.object, vec![0]);
    assert!(Coseg::builder()
        .method(Method::Border)
        .k(1)
        .build()
        .is_err());
}

#[test]
fn masks_and_boxes_follow_the_object() {
    let (stack, acts) = constructed_set(false);
    for refine in [Refine::None, Refine::Colour] {
        let model = CosegBuilder::default()
            .method(Method::Border)
            .refine(refine)
            .build()
            .unwrap()
            .run(&stack)
            .unwrap();
        for (i, a) in acts.iter().enumerate() {
            // A picture whose object is a different colour, so the colour model agrees.
            let truth = object_mask(a, OBJECTS[i]);
            let img = RgbImage::from_fn(a.grid.image_width, a.grid.image_height, |x, y| {
                if truth.get(x as usize, y as usize) {
                    Rgb([200, 40, 40])
                } else {
                    Rgb([40, 90, 200])
                }
            });
            let seg = model.segment(i, &img).unwrap();
            let s = score_mask(&seg.mask, seg.bbox.as_ref(), &truth).unwrap();
            assert!(s.corloc, "{refine:?} image {i}: box {:?}", seg.bbox);
            let j = s.jaccard.unwrap();
            assert!(
                j > if refine == Refine::Colour { 0.9 } else { 0.6 },
                "{refine:?} image {i}: J {j}"
            );
            // The box is the box of the mask's largest component.
            assert_eq!(seg.bbox, seg.mask.largest_component().bbox());
            // An image of another size is refused.
            assert!(model.segment(i, &RgbImage::new(7, 7)).is_err());
        }
    }
    // Set normalisation with the thesis' threshold keeps only the strongest image's peak.
    let thesis = CosegBuilder::thesis(Method::Border)
        .build()
        .unwrap()
        .run(&stack)
        .unwrap();
    assert_eq!(thesis.settings.normalise, Normalise::Set);
    assert_eq!(thesis.settings.threshold, Threshold::Fixed(0.75));
}

#[test]
fn one_shot_merges_the_planted_factors() {
    // The object's halves are different concepts: the unsupervised border rule with K = 2
    // cannot hold both in one factor; one-shot with the annotated mask finds and merges both.
    let (stack, acts) = constructed_set(true);
    let coseg = Coseg::builder()
        .refine(Refine::None)
        .one_shot_mode(OneShotMode::Select)
        .build()
        .unwrap();
    let truth = object_mask(&acts[0], OBJECTS[0]);
    let (model, choice) = coseg
        .one_shot(&stack, 0, &truth, &[2, 4, 6], DEFAULT_TAU_MERGE)
        .unwrap();
    let run = &choice.runs[choice.chosen];
    assert!(run.factors.len() >= 2, "{choice:?}");
    assert!(run.iou > 0.6, "{choice:?}");
    assert_eq!(model.object, run.factors);
    assert_eq!(model.settings.method, "one-shot");
    // Each rank offers its matched group and its unsupervised choice; the winner has the best
    // IoU on the annotated image.
    assert_eq!(choice.runs.len(), 6, "{choice:?}");
    for (r, k) in choice.runs.chunks(2).zip([2, 4, 6]) {
        assert_eq!((r[0].k, r[0].rule), (k, OneShotRule::Matched));
        assert_eq!((r[1].k, r[1].rule), (k, OneShotRule::Auto));
    }
    assert!(choice.runs.iter().all(|r| r.iou <= run.iou));
    // The thesis' one-shot: matched groups only, and it finds the halves as well.
    let thesis = Coseg::builder()
        .refine(Refine::None)
        .one_shot_mode(OneShotMode::Matched)
        .build()
        .unwrap();
    let (_, only) = thesis
        .one_shot(&stack, 0, &truth, &[2, 4, 6], DEFAULT_TAU_MERGE)
        .unwrap();
    assert_eq!(only.runs.len(), 3);
    assert!(only.runs.iter().all(|r| r.rule == OneShotRule::Matched));
    assert!(only.runs[only.chosen].factors.len() >= 2, "{only:?}");
    // The vote: one factorization with the largest rank; both halves lie inside the mask.
    let vote = Coseg::builder()
        .refine(Refine::None)
        .one_shot_mode(OneShotMode::Vote)
        .build()
        .unwrap();
    let (voted, v) = vote
        .one_shot(&stack, 0, &truth, &[2, 4, 6], DEFAULT_TAU_MERGE)
        .unwrap();
    assert_eq!(v.runs.len(), 1);
    assert_eq!((v.runs[0].k, v.runs[0].rule), (6, OneShotRule::Vote));
    assert!(v.runs[0].factors.len() >= 2 && v.runs[0].iou > 0.6, "{v:?}");
    assert_eq!(voted.object, v.runs[0].factors);
    // Both halves are found in the other images.
    for i in 1..stack.len() {
        let img = RgbImage::from_pixel(
            acts[i].grid.image_width,
            acts[i].grid.image_height,
            Rgb([9, 9, 9]),
        );
        let seg = model.segment(i, &img).unwrap();
        let s = score_mask(
            &seg.mask,
            seg.bbox.as_ref(),
            &object_mask(&acts[i], OBJECTS[i]),
        )
        .unwrap();
        assert!(s.corloc && s.jaccard.unwrap() > 0.6, "image {i}: {s:?}");
    }
    // A mask of another size, an image out of range, no ranks: refused.
    assert!(coseg
        .one_shot(&stack, 0, &Mask::empty(3, 3), &[2], 0.2)
        .is_err());
    assert!(coseg.one_shot(&stack, 9, &truth, &[2], 0.2).is_err());
    assert!(coseg.one_shot(&stack, 0, &truth, &[], 0.2).is_err());
}

/// A block of cells: first row, first column, rows, columns.
type Block = (usize, usize, usize, usize);

/// A set whose images hold two things away from the border: the object (channels 0–3) and a
/// distractor (channels 4–5, a `3 × 3`-cell block) — both "common", so the border rule takes
/// both; only an annotation says which one is meant.
fn distractor_set() -> (FeatureStack, Vec<Activations>, Vec<Block>) {
    distractor_set_of(|row, r, c, i| {
        row[4] = 2.5 + 0.1 * ((r + c + i) % 3) as f32;
        row[5] = 2.5;
    })
}

/// The top left cell of each image's `3 × 3`-cell distractor in [`distractor_set_of`].
const DISTRACTORS: [(usize, usize); 5] = [(3, 9), (2, 10), (5, 9), (6, 10), (2, 9)];

/// [`distractor_set`]'s layout with the distractor's cells (zeroed first) set by `cell(row,
/// r, c, image)`.
fn distractor_set_of(
    cell: impl Fn(&mut [f32], usize, usize, usize),
) -> (FeatureStack, Vec<Activations>, Vec<Block>) {
    let shapes = [
        (10, 14, (3, 2, 4, 4)),
        (11, 15, (4, 2, 4, 5)),
        (10, 13, (2, 3, 5, 4)),
        (12, 14, (3, 2, 5, 5)),
        (10, 14, (4, 3, 4, 4)),
    ];
    let mut stack = FeatureStack::new(CHANNELS).unwrap();
    let (mut acts, mut objects) = (Vec::new(), Vec::new());
    for (i, (&(rows, cols, obj), &(dr, dc))) in shapes.iter().zip(&DISTRACTORS).enumerate() {
        let mut a = constructed(rows, cols, obj, false, i);
        for r in dr..dr + 3 {
            for c in dc..dc + 3 {
                let row = a.data.row_mut(r * cols + c);
                row.fill(0.0);
                cell(row, r, c, i);
            }
        }
        stack
            .push(format!("img{i}"), Path::new(&format!("img{i}.png")), &a)
            .unwrap();
        acts.push(a);
        objects.push(obj);
    }
    (stack, acts, objects)
}

/// Image `i` of a constructed set segmented by `model` on a flat grey picture (so that the
/// mask is the heatmap's doing): the mask and its scores against the object's true mask.
fn segment_constructed(
    model: &CosegModel,
    acts: &[Activations],
    objects: &[Block],
    i: usize,
) -> (Mask, ImageScore) {
    let g = acts[i].grid;
    let img = RgbImage::from_pixel(g.image_width, g.image_height, Rgb([9, 9, 9]));
    let seg = model.segment(i, &img).unwrap();
    let score = score_mask(
        &seg.mask,
        seg.bbox.as_ref(),
        &object_mask(&acts[i], objects[i]),
    );
    (seg.mask, score.unwrap())
}

#[test]
fn one_shot_by_appearance_keeps_the_annotated_object() {
    // Unsupervised, the border rule takes the object and the distractor; the annotated image
    // shows the object alone, and one-shot by appearance keeps it and drops the distractor in
    // every other image: never worse than the unsupervised masks, and here better.
    let (stack, acts, objects) = distractor_set();
    let coseg = Coseg::builder().refine(Refine::None).build().unwrap();
    assert_eq!(coseg.one_shot_mode(), OneShotMode::Appearance);
    let unsupervised = coseg.run(&stack).unwrap();
    let truth = object_mask(&acts[0], objects[0]);
    let (model, choice) = coseg
        .one_shot(&stack, 0, &truth, &DEFAULT_ONE_SHOT_KS, DEFAULT_TAU_MERGE)
        .unwrap();
    assert_eq!(choice.runs.len(), 1);
    assert_eq!(choice.runs[0].rule, OneShotRule::Appearance);
    // The same factorization and factors as the unsupervised run; only the weighting differs.
    assert_eq!(model.object, unsupervised.object);
    assert_eq!(model.factors, unsupervised.factors);
    assert!(choice.runs[0].iou > 0.6, "{choice:?}");
    let (mut sum_one, mut sum_un) = (0.0, 0.0);
    for i in 1..stack.len() {
        let score = |m: &CosegModel| segment_constructed(m, &acts, &objects, i).1;
        let (one, un) = (score(&model), score(&unsupervised));
        assert!(
            one.corloc && one.jaccard.unwrap() > 0.8,
            "image {i}: {one:?}"
        );
        assert!(
            one.jaccard.unwrap() >= un.jaccard.unwrap(),
            "image {i}: one-shot {one:?}, unsupervised {un:?}"
        );
        sum_one += one.jaccard.unwrap();
        sum_un += un.jaccard.unwrap();
    }
    assert!(sum_one > sum_un + 0.4, "{sum_one} vs {sum_un}");
    // The distractor's cells weigh far less than the object's in the object heatmap (with
    // the object-mean cosine, whose likeness there is 0, they are 0).
    let h = model.object_heatmap(1).unwrap();
    let cols = h.grid().cols;
    assert!(h.values()[2 * cols + 10] < 0.5 * h.max(), "{h:?}");
    let (mean, _) = Coseg::builder()
        .refine(Refine::None)
        .appearance_model(AppearanceModel::Mean)
        .build()
        .unwrap()
        .one_shot(&stack, 0, &truth, &[8], 0.2)
        .unwrap();
    assert_eq!(mean.object_heatmap(1).unwrap().values()[2 * cols + 10], 0.0);
    // With γ = 0 the one-shot heatmaps are the unsupervised ones; γ outside [0, 1] is refused.
    let (plain, _) = Coseg::builder()
        .refine(Refine::None)
        .appearance_weight(0.0)
        .build()
        .unwrap()
        .one_shot(&stack, 0, &truth, &[8], 0.2)
        .unwrap();
    for i in 0..stack.len() {
        assert_eq!(
            plain.object_heatmap(i).unwrap(),
            unsupervised.object_heatmap(i).unwrap()
        );
    }
    assert!(Coseg::builder().appearance_weight(1.5).build().is_err());
    // An annotation that marks nothing is refused, naming the image.
    let err = coseg
        .one_shot(
            &stack,
            0,
            &Mask::empty(truth.width(), truth.height()),
            &[8],
            0.2,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("img0.png"), "{err}");
    // The mode names round-trip; the thesis keeps its own one-shot.
    for m in [
        OneShotMode::Appearance,
        OneShotMode::Matched,
        OneShotMode::Select,
        OneShotMode::Vote,
    ] {
        assert_eq!(m.name().parse::<OneShotMode>().unwrap(), m);
    }
    assert!("best".parse::<OneShotMode>().is_err());
    assert_eq!(
        CosegBuilder::thesis(Method::Border)
            .build()
            .unwrap()
            .one_shot_mode(),
        OneShotMode::Matched
    );
}

#[test]
fn one_shot_ridge_drops_a_lookalike_that_the_object_mean_keeps() {
    // The distractor looks like the object (its cells hold the object's channels at half
    // their strength, cosine 0.7 with the object's mean) and carries a channel of its own;
    // the annotated image shows it outside the mask. The object-mean cosine keeps it; the
    // ridge likeness learns from the annotated image's background that the extra channel
    // means "not the object" and drops it.
    let (stack, acts, objects) = distractor_set_of(|row, r, c, i| {
        for v in &mut row[..4] {
            *v = 1.5 + 0.1 * ((r + c + i) % 3) as f32;
        }
        row[5] = 3.0;
    });
    let truth = object_mask(&acts[0], objects[0]);
    let one_shot = |m: AppearanceModel| {
        Coseg::builder()
            .refine(Refine::None)
            .appearance_model(m)
            .build()
            .unwrap()
            .one_shot(&stack, 0, &truth, &DEFAULT_ONE_SHOT_KS, DEFAULT_TAU_MERGE)
            .unwrap()
            .0
    };
    let (ridge, mean) = (
        one_shot(AppearanceModel::default()),
        one_shot(AppearanceModel::Mean),
    );
    let (mut sum_ridge, mut sum_mean) = (0.0, 0.0);
    for (i, &(dr, dc)) in DISTRACTORS.iter().enumerate().skip(1) {
        // The scores, and the share of the distractor's pixels inside the mask.
        let score = |model: &CosegModel| {
            let (mask, score) = segment_constructed(model, &acts, &objects, i);
            let mut n = 0;
            for y in dr * CELL..(dr + 3) * CELL {
                for x in dc * CELL..(dc + 3) * CELL {
                    n += usize::from(mask.get(x, y));
                }
            }
            (score, n as f64 / (9 * CELL * CELL) as f64)
        };
        let ((r, cr), (m, cm)) = (score(&ridge), score(&mean));
        assert!(
            cm > 0.5 && cr < 0.05,
            "image {i}: distractor covered by the ridge {cr}, by the mean {cm}"
        );
        assert!(
            r.corloc && r.jaccard.unwrap() > 0.85,
            "image {i}: ridge {r:?}, mean {m:?}"
        );
        assert!(
            r.jaccard.unwrap() > m.jaccard.unwrap(),
            "image {i}: {r:?} {m:?}"
        );
        sum_ridge += r.jaccard.unwrap();
        sum_mean += m.jaccard.unwrap();
    }
    assert!(sum_ridge > sum_mean + 0.3, "{sum_ridge} vs {sum_mean}");
    // A ridge shrinkage that is not positive is refused.
    for rho in [0.0, -1.0, f32::NAN] {
        assert!(Coseg::builder()
            .appearance_model(AppearanceModel::Ridge(rho))
            .build()
            .is_err());
    }
}

/// Mask → box, the co-localization rule, on hand-made masks: the box around the largest
/// 8-connected component, edges exclusive.
#[test]
fn boxes_of_hand_made_masks() {
    use deepfactor::BBox;
    let boxed = |m: &Mask| m.largest_component().bbox();
    // 12 × 8: a 3 × 2 blob at (1, 1) and a 4 × 3 blob at (6, 4); the larger one wins.
    let two = Mask::from_fn(12, 8, |x, y| {
        ((1..4).contains(&x) && (1..3).contains(&y))
            || ((6..10).contains(&x) && (4..7).contains(&y))
    });
    assert_eq!(boxed(&two), Some(BBox::new(6.0, 4.0, 10.0, 7.0).unwrap()));
    // The box around all foreground would have held both blobs.
    assert_eq!(two.bbox(), Some(BBox::new(1.0, 1.0, 10.0, 7.0).unwrap()));
    // A diagonal staircase is one 8-connected component (5 pixels) and beats a 2 × 2 block.
    let stairs = Mask::from_fn(10, 10, |x, y| {
        (x < 5 && x == y) || ((8..10).contains(&x) && (0..2).contains(&y))
    });
    assert_eq!(boxed(&stairs), Some(BBox::new(0.0, 0.0, 5.0, 5.0).unwrap()));
    // Equal components: the first in raster order.
    let tie = Mask::from_fn(6, 4, |x, y| (x == 0 || x == 5) && y < 2);
    assert_eq!(boxed(&tie), Some(BBox::new(0.0, 0.0, 1.0, 2.0).unwrap()));
    // A full mask: the whole image; an empty one: no box (a CorLoc miss).
    assert_eq!(
        boxed(&Mask::from_fn(7, 3, |_, _| true)),
        Some(BBox::new(0.0, 0.0, 7.0, 3.0).unwrap())
    );
    assert_eq!(boxed(&Mask::empty(5, 5)), None);
    let truth = Mask::from_fn(5, 5, |x, y| x < 2 && y < 2);
    assert!(!score_mask(&Mask::empty(5, 5), None, &truth).unwrap().corloc);
}

#[test]
fn scores_on_hand_computed_masks() {
    // 10 × 10: truth a 4 × 5 block (20 px); prediction a 5 × 5 block overlapping it in 4 × 4.
    let truth = Mask::from_fn(10, 10, |x, y| (2..6).contains(&x) && (2..7).contains(&y));
    let pred = Mask::from_fn(10, 10, |x, y| (2..7).contains(&x) && (3..8).contains(&y));
    let b = pred.largest_component().bbox();
    let s = score_mask(&pred, b.as_ref(), &truth).unwrap();
    // |∩| = 4 × 4 = 16, |∪| = 20 + 25 − 16 = 29; wrong pixels 29 − 16 = 13 of 100.
    assert_eq!(s.jaccard, Some(16.0 / 29.0));
    assert_eq!(s.precision, Some(0.87));
    // Boxes 5×5 at (2,3) and 4×5 at (2,2): IoU 16 / 29 > 0.5.
    assert!(s.corloc);
    let set = SetScores::of(&[s, score_mask(&Mask::empty(10, 10), None, &truth).unwrap()]);
    assert!((set.jaccard.unwrap() - 50.0 * 16.0 / 29.0).abs() < 1e-9);
    assert!((set.jaccard_pooled.unwrap() - 100.0 * 16.0 / 49.0).abs() < 1e-9);
    assert_eq!(set.corloc, Some(50.0));
}

fn deepfactor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deepfactor"))
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bad input that is caught before the network runs: clear errors naming the problem.
#[test]
fn bad_input_is_refused_before_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, _, err) = output(deepfactor().arg("coseg").arg(&empty));
    assert!(
        !ok && err.contains("no image files") && err.contains("empty"),
        "{err}"
    );
    let (ok, _, err) = output(deepfactor().arg("coseg").arg(dir.path().join("missing")));
    assert!(!ok && err.contains("not a folder"), "{err}");
    let (ok, _, err) = output(
        deepfactor()
            .args(["coseg", "--threshold", "high"])
            .arg(&empty),
    );
    assert!(!ok && err.contains("--threshold"), "{err}");
    // A data set whose image has no mask: the loader names the missing file.
    let ds = dir.path().join("ds");
    std::fs::create_dir_all(ds.join("images/cat")).unwrap();
    std::fs::create_dir_all(ds.join("masks/cat")).unwrap();
    RgbImage::new(8, 8)
        .save(ds.join("images/cat/a.png"))
        .unwrap();
    let (ok, _, err) = output(deepfactor().args(["coseg", "--json", "--dataset"]).arg(&ds));
    assert!(
        !ok && err.contains("missing mask") && err.contains("a.png"),
        "{err}"
    );
}

/// Bad images and masks in a set that runs: skipped or left unscored, and said so; never a
/// panic. Needs the real weights.
#[test]
fn bad_images_and_masks_are_skipped_and_reported() {
    let (Some(weights), Some(photos)) = (common::lite0_weights(), common::photos()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for name in ["chelsea.png", "coffee.png", "astronaut.png"] {
        std::fs::copy(photos.join(name), set.join(name)).unwrap();
    }
    std::fs::write(
        set.join("corrupt.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    // chelsea: a proper mask; coffee: a mask of another size; astronaut: none.
    let (w, h) = image::image_dimensions(set.join("chelsea.png")).unwrap();
    image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x > w / 3 { 255 } else { 0 }]))
        .save(masks.join("chelsea.png"))
        .unwrap();
    image::GrayImage::new(10, 10)
        .save(masks.join("coffee.png"))
        .unwrap();
    let out = dir.path().join("out");
    let report = dir.path().join("report.html");
    let (ok, stdout, err) = output(
        deepfactor()
            .args(["coseg", "--json", "--k", "3", "--weights"])
            .arg(&weights)
            .arg(&set)
            .arg("--masks")
            .arg(&masks)
            .arg("--out")
            .arg(&out)
            .arg("--report")
            .arg(&report),
    );
    assert!(ok, "{err}");
    let rec: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let skipped = rec["skipped"].as_array().unwrap();
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{} {}", s["path"], s["reason"]))
        .collect();
    let has = |file: &str, word: &str| reasons.iter().any(|r| r.contains(file) && r.contains(word));
    assert!(
        has("corrupt.jpg", "corrupt") || has("corrupt.jpg", "decod"),
        "{reasons:?}"
    );
    assert!(has("astronaut", "no mask"), "{reasons:?}");
    assert!(has("coffee", "10×10"), "{reasons:?}");
    // Three images segmented, one scored.
    let images = rec["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert_eq!(rec["scored_images"], 1);
    for key in ["jaccard", "jaccard_pooled", "precision", "corloc"] {
        assert!(rec[key].is_number(), "{key}: {}", rec[key]);
        let chelsea = images.iter().find(|i| i["name"] == "chelsea").unwrap();
        assert!(chelsea[key].is_number(), "{key}");
        let astronaut = images.iter().find(|i| i["name"] == "astronaut").unwrap();
        assert!(astronaut[key].is_null(), "{key}");
    }
    // Outputs: a mask per image at the image's size, boxes, overlays, heatmaps, the report.
    let m = image::open(out.join("masks/chelsea.png")).unwrap();
    assert_eq!((m.width(), m.height()), (w, h));
    let boxes = std::fs::read_to_string(out.join("boxes.txt")).unwrap();
    assert!(boxes.lines().any(|l| l.starts_with("coffee")));
    assert!(out.join("overlays/astronaut.jpg").is_file());
    let hm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("heatmaps/coffee.json")).unwrap())
            .unwrap();
    assert_eq!(hm["factors"].as_array().unwrap().len(), 3);
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains("chelsea") && page.contains("data:image/jpeg;base64,"));
}

/// The HTML report, opened in headless Chromium by `scripts/report_screenshot.sh`: the
/// embedded pictures must show. Skips when Chromium is not installed.
#[test]
fn coseg_report_renders_in_headless_chromium() {
    use deepfactor::report::{CosegReport, CosegView};
    let found = ["chromium", "chromium-browser"].iter().any(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        eprintln!("SKIP: chromium is not installed (apt-get install -y chromium)");
        return;
    }
    let marker = Rgb([250, 20, 200]);
    let views = (0..6)
        .map(|i| CosegView {
            name: format!("image <{i}>"),
            picture: RgbImage::from_pixel(320, 240, marker),
            caption: vec![format!("Jaccard {}", 10 * i)],
        })
        .collect();
    let report = CosegReport {
        title: "Co-segmentation test".into(),
        subtitle: "six pictures".into(),
        legend: vec![("factor 0 (object)".into(), Rgb([230, 25, 75]))],
        scores: vec![("Jaccard".into(), "50.0".into())],
        settings: vec![("method".into(), "auto".into())],
        views,
        notes: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("coseg & report.html");
    report.write_html(&page, 90).unwrap();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("coseg-chromium");
    let status = Command::new("bash")
        .arg(common::repo_root().join("scripts/report_screenshot.sh"))
        .arg(&out)
        .arg(&page)
        .env("WIDTH", "1200")
        .env("HEIGHT", "900")
        .status()
        .unwrap();
    assert!(status.success(), "screenshot script failed: {status}");
    let shot = image::open(out.join("screenshot.png")).unwrap().into_rgb8();
    let n = shot
        .pixels()
        .filter(|p| (0..3).all(|k| (i32::from(p[k]) - i32::from(marker[k])).abs() <= 12))
        .count();
    // Six 230-pixel-wide pictures at least partly on a 1200 × 900 screen.
    assert!(
        n > 100_000,
        "only {n} marker pixels: the pictures did not render"
    );
}

/// The VOC co-segmentation set of `../shared/data`, two classes, with the real weights: the
/// default beats the thesis' settings and the trivial baselines. Skips without the data or
/// the weights.
#[test]
fn real_voc_classes_beat_the_baselines() {
    let (Some(root), Some(weights)) = (common::shared_data("voc-coseg"), common::lite0_weights())
    else {
        return;
    };
    let gt = deepfactor::eval::CosegGroundTruth::load(&root).unwrap();
    let backbone = deepfactor::backbone::BackboneBuilder::new(
        deepfactor::backbone::BackboneKind::EfficientNetLite0,
    )
    .weights(deepfactor::backbone::WeightSource::File(weights))
    .build()
    .unwrap();
    let mut default = Vec::new();
    let mut thesis = Vec::new();
    let mut whole = Vec::new();
    for name in ["Sofa", "Sheep"] {
        let class = gt.class(name).unwrap();
        let paths: Vec<PathBuf> = class.images.iter().map(|i| i.image.clone()).collect();
        let stack = FeatureStack::extract(&backbone, &paths, |_, _| {}).unwrap();
        assert_eq!(stack.len(), paths.len());
        let truths: Vec<Mask> = class
            .images
            .iter()
            .map(|i| Mask::load(i.mask.as_ref().unwrap()).unwrap())
            .collect();
        let images: Vec<RgbImage> = paths
            .iter()
            .map(|p| deepfactor::images::load_rgb(p).unwrap())
            .collect();
        for (builder, out) in [
            (CosegBuilder::default(), &mut default),
            (CosegBuilder::thesis(Method::Border), &mut thesis),
        ] {
            let model = builder.build().unwrap().run(&stack).unwrap();
            let scores: Vec<_> = (0..stack.len())
                .map(|i| {
                    let seg = model.segment(i, &images[i]).unwrap();
                    score_mask(&seg.mask, seg.bbox.as_ref(), &truths[i]).unwrap()
                })
                .collect();
            out.push(SetScores::of(&scores));
        }
        let scores: Vec<_> = truths
            .iter()
            .map(|t| {
                let all = Mask::from_fn(t.width(), t.height(), |_, _| true);
                score_mask(&all, all.bbox().as_ref(), t).unwrap()
            })
            .collect();
        whole.push(SetScores::of(&scores));
    }
    let (d, t, w) = (
        SetScores::mean(&default),
        SetScores::mean(&thesis),
        SetScores::mean(&whole),
    );
    eprintln!("default {d:?}\nthesis {t:?}\nwhole image {w:?}");
    assert!(
        d.jaccard.unwrap() > 40.0 && d.corloc.unwrap() > 45.0,
        "{d:?}"
    );
    assert!(
        d.jaccard.unwrap() > t.jaccard.unwrap() + 20.0,
        "{d:?} vs {t:?}"
    );
    assert!(
        d.jaccard.unwrap() > w.jaccard.unwrap() + 15.0 && d.corloc.unwrap() > w.corloc.unwrap()
    );
}
