//! `deepfactor coseg`: co-segmentation and co-localization of an image set (or of every class
//! of a data set), with masks, boxes, overlays, an HTML report, scores against ground truth,
//! and the factor–part table.

use crate::recipe_args::device;
use anyhow::{bail, Context};
use clap::Args;
use deepfactor::backbone::{Backbone, BackboneBuilder, BackboneKind, Padding, WeightSource};
use deepfactor::coseg::{
    Coseg, CosegBuilder, CosegModel, FeatureStack, Method, Normalise, OneShotChoice, OneShotMode,
    OneShotRule, Refine, Threshold, DEFAULT_ONE_SHOT_KS, DEFAULT_TAU_MERGE,
};
use deepfactor::eval::{
    score_box, score_mask, CosegDatasetRecord, CosegGroundTruth, CosegImageRecord, CosegRecord,
    ImageScore, Mask, OneShotRecord, PartMatcher, SetScores, SkippedRecord,
};
use deepfactor::report::{coseg_overlay, palette, CosegReport, CosegView};
use deepfactor::BBox;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Images of one set processed in parallel when making masks and outputs.
const MASK_CHUNK: usize = 8;
/// Pictures in the HTML report: all of a set up to this many; in data-set mode, this many
/// per class.
const REPORT_MAX: usize = 240;
const REPORT_PER_CLASS: usize = 8;
const REPORT_SIDE: u32 = 320;
const OVERLAY_SIDE: u32 = 640;
const OVERLAY_ALPHA: f32 = 0.5;

/// Arguments of `deepfactor coseg`.
#[derive(Args, Debug)]
pub struct CosegArgs {
    /// Folder of images sharing an object (every image file under it). Or use --dataset.
    images: Option<PathBuf>,
    /// A data set of classes instead: `DIR/images/<class>/*` (+ `masks/<class>/*.png`,
    /// `boxes/<class>.txt`, `parts/<class>/<image>/*.png`), as iCoseg, the VOC
    /// co-segmentation set and `datasets/voc2007.py` lay them out. Runs every class.
    #[arg(long, value_name = "DIR", conflicts_with = "images")]
    dataset: Option<PathBuf>,
    /// Ground-truth masks for IMAGES: `<stem>.png` (0 = background, non-zero = object), the
    /// image's size. Images without one are segmented but not scored.
    #[arg(long, value_name = "DIR")]
    masks: Option<PathBuf>,
    /// Part masks for IMAGES: `DIR/<stem>/<part>.png`; prints the factor–part table.
    #[arg(long, value_name = "DIR")]
    parts: Option<PathBuf>,
    /// How the object's factors are chosen: auto (default), border (the thesis' K = 2 rule)
    /// or single (K = 1).
    #[arg(long, default_value = "auto")]
    method: Method,
    /// Rank of the joint factorization (default: 8 for auto, 2 for border, 1 for single).
    #[arg(long)]
    k: Option<usize>,
    /// Divide each object heatmap by its maximum in the image (default) or over the set.
    #[arg(long, default_value = "image", value_name = "image|set")]
    normalise: String,
    /// Threshold: otsu (default) or a fixed fraction such as 0.75 (the thesis).
    #[arg(long, default_value = "otsu", value_name = "otsu|FRACTION")]
    threshold: String,
    /// Refine masks by the image's colours and edges (colour, default) or not (none).
    #[arg(long, default_value = "colour", value_name = "colour|none")]
    refine: String,
    /// The thesis' settings: set normalisation, threshold 0.75, no refinement.
    #[arg(long)]
    thesis: bool,
    /// One-shot: this image (name, file name or path) and its mask choose the object's
    /// factors among runs with K = 2, 4, 6, 8; it is left out of the scores. With --dataset:
    /// `first` (the first image of each class).
    #[arg(long, value_name = "IMAGE")]
    one_shot: Option<String>,
    /// How --one-shot uses the annotated image: appearance (default: the unsupervised
    /// co-segmentation weighted by the annotated object's appearance), matched (the thesis:
    /// merged factor groups of K = 2, 4, 6, 8, the best fit on the annotated image), select
    /// (those and each rank's unsupervised choice) or vote (the K = 8 unsupervised choice
    /// corrected factor by factor).
    #[arg(long, value_name = "MODE")]
    one_shot_mode: Option<OneShotMode>,
    /// Write masks (`masks/<name>.png`), boxes (`boxes.txt`), overlays (`overlays/<name>.jpg`)
    /// and factor heatmaps (`heatmaps/<name>.json`) here (per class with --dataset).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write an HTML report of the set(s) here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// Backbone: efficientnet-lite0 (default), vgg16, vgg19, resnet50.
    #[arg(long)]
    backbone: Option<BackboneKind>,
    /// Weights file (.safetensors or .pth); default: the backbone's default weights.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Layer (default: the backbone's last convolutional layer).
    #[arg(long)]
    layer: Option<String>,
    /// Shorter side of the network input in pixels.
    #[arg(long, default_value_t = deepfactor::backbone::DEFAULT_INPUT_SIZE)]
    size: u32,
    /// Reflection instead of zero padding (VGG, ResNet; the thesis for ResNet).
    #[arg(long)]
    reflect: bool,
    /// Device: cpu (default) or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// One set to co-segment, with whatever ground truth it has.
struct SetInput {
    name: String,
    images: Vec<PathBuf>,
    masks: Vec<Option<PathBuf>>,
    boxes: Vec<Vec<BBox>>,
    parts: Vec<Vec<(String, PathBuf)>>,
    /// Whether any ground truth exists (masks or boxes).
    has_truth: bool,
    /// Problems found while listing (e.g. an image without a mask).
    notes: Vec<SkippedRecord>,
}

/// Everything made for one image that outlives its processing.
struct ImageOut {
    record: CosegImageRecord,
    score: Option<ImageScore>,
    view: Option<CosegView>,
    failure: Option<SkippedRecord>,
}

pub fn run(args: CosegArgs) -> anyhow::Result<()> {
    let coseg = configure(&args)?;
    // The inputs are checked before the network is loaded.
    let sets = inputs(&args)?;
    let kind = args.backbone.unwrap_or(BackboneKind::EfficientNetLite0);
    let mut b = BackboneBuilder::new(kind)
        .weights(match &args.weights {
            Some(p) => WeightSource::File(p.clone()),
            None => WeightSource::Default,
        })
        .input_size(args.size)
        .padding(if args.reflect {
            Padding::Reflect
        } else {
            Padding::Zero
        })
        .device(device(&args.device)?);
    if let Some(l) = &args.layer {
        b = b.layer(l.clone());
    }
    let backbone = b.build().context("loading the backbone")?;
    let dataset_mode = args.dataset.is_some();
    let mut records = Vec::new();
    let mut views: Vec<CosegView> = Vec::new();
    let mut report_notes = Vec::new();
    for set in &sets {
        let out_dir = args.out.as_ref().map(|o| {
            if dataset_mode {
                o.join(&set.name)
            } else {
                o.clone()
            }
        });
        let keep = if args.report.is_none() {
            0
        } else if dataset_mode {
            REPORT_PER_CLASS
        } else {
            REPORT_MAX
        };
        let (record, set_views) = run_set(&args, &coseg, &backbone, set, out_dir.as_deref(), keep)?;
        if !args.json && dataset_mode {
            eprintln!("{}", summary_line(&record));
        }
        if keep > 0 && set.images.len() > keep {
            report_notes.push(format!(
                "{}: the first {keep} of {} images are shown.",
                set.name,
                set.images.len()
            ));
        }
        views.extend(set_views);
        records.push(record);
    }
    if let Some(path) = &args.report {
        write_report(path, &records, views, report_notes, dataset_mode)?;
        if !args.json {
            eprintln!("report: {}", path.display());
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if dataset_mode {
        let root = args
            .dataset
            .as_ref()
            .map_or(String::new(), |d| d.display().to_string());
        let rec = CosegDatasetRecord::new(root, records);
        if args.json {
            writeln!(out, "{}", rec.to_json())?;
        } else {
            print_dataset_table(&mut out, &rec)?;
        }
    } else if let Some(rec) = records.into_iter().next() {
        if args.json {
            writeln!(out, "{}", rec.to_json())?;
        } else {
            print_set_table(&mut out, &rec)?;
        }
    }
    Ok(())
}

/// The co-segmentation settings from the arguments.
fn configure(args: &CosegArgs) -> anyhow::Result<Coseg> {
    let mut b = if args.thesis {
        CosegBuilder::thesis(args.method)
    } else {
        let normalise = match args.normalise.as_str() {
            "image" => Normalise::Image,
            "set" => Normalise::Set,
            o => bail!("--normalise {o:?}: expected image or set"),
        };
        let threshold = match args.threshold.as_str() {
            "otsu" => Threshold::Otsu,
            t => Threshold::Fixed(
                t.parse()
                    .with_context(|| format!("--threshold {t:?}: expected otsu or a number"))?,
            ),
        };
        let refine = match args.refine.as_str() {
            "colour" | "color" => Refine::Colour,
            "none" => Refine::None,
            o => bail!("--refine {o:?}: expected colour or none"),
        };
        CosegBuilder::default()
            .method(args.method)
            .normalise(normalise)
            .threshold(threshold)
            .refine(refine)
    };
    if let Some(k) = args.k {
        b = b.k(k);
    }
    if let Some(m) = args.one_shot_mode {
        if args.one_shot.is_none() {
            bail!("--one-shot-mode needs --one-shot IMAGE");
        }
        b = b.one_shot_mode(m);
    }
    Ok(b.build()?)
}

/// The sets named by the arguments, with their ground truth.
fn inputs(args: &CosegArgs) -> anyhow::Result<Vec<SetInput>> {
    if let Some(root) = &args.dataset {
        if args.masks.is_some() || args.parts.is_some() {
            bail!("--masks and --parts apply to an image folder; a data set has its own");
        }
        if args.one_shot.as_deref().is_some_and(|s| s != "first") {
            bail!("with --dataset, --one-shot takes `first` (the first image of each class)");
        }
        let gt = CosegGroundTruth::load(root)?;
        let sets: Vec<SetInput> = gt
            .classes
            .iter()
            .map(|c| SetInput {
                name: c.name.clone(),
                images: c.images.iter().map(|i| i.image.clone()).collect(),
                masks: c.images.iter().map(|i| i.mask.clone()).collect(),
                boxes: c.images.iter().map(|i| i.boxes.clone()).collect(),
                parts: c.images.iter().map(|i| i.parts.clone()).collect(),
                has_truth: gt.has_masks || gt.has_boxes,
                notes: Vec::new(),
            })
            .collect();
        if sets.iter().all(|s| s.images.is_empty()) {
            bail!("{}: no images in any class folder", root.display());
        }
        return Ok(sets);
    }
    let Some(dir) = &args.images else {
        bail!("name an image folder, or a data set with --dataset DIR");
    };
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    let found = deepfactor::images::image_files(dir);
    let mut notes: Vec<SkippedRecord> = found
        .unreadable
        .iter()
        .map(|(p, r)| SkippedRecord {
            path: p.display().to_string(),
            reason: r.clone(),
        })
        .collect();
    if found.files.is_empty() {
        bail!(
            "{}: no image files (jpg, png, webp, tif, bmp) in it",
            dir.display()
        );
    }
    let mut masks = Vec::new();
    if let Some(mdir) = &args.masks {
        if !mdir.is_dir() {
            bail!("--masks {}: not a folder", mdir.display());
        }
        for p in &found.files {
            let m = mdir.join(format!("{}.png", stem(p)));
            if m.is_file() {
                masks.push(Some(m));
            } else {
                notes.push(SkippedRecord {
                    path: p.display().to_string(),
                    reason: format!("not scored: no mask {}", m.display()),
                });
                masks.push(None);
            }
        }
    } else {
        masks = vec![None; found.files.len()];
    }
    let parts = found
        .files
        .iter()
        .map(|p| match &args.parts {
            Some(pdir) => part_files(&pdir.join(stem(p))),
            None => Ok(Vec::new()),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(vec![SetInput {
        name: dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        has_truth: args.masks.is_some(),
        boxes: vec![Vec::new(); found.files.len()],
        images: found.files,
        masks,
        parts,
        notes,
    }])
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// `<dir>/<part>.png`, sorted by part name; none when the folder does not exist.
fn part_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "png") {
            out.push((stem(&p), p));
        }
    }
    out.sort();
    Ok(out)
}

fn progress(json: bool, what: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} images  {{per_sec}}  ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Co-segments one set: features, factorization (unsupervised or one-shot), then masks,
/// scores and outputs image by image. Returns its record and up to `keep` report pictures.
fn run_set(
    args: &CosegArgs,
    coseg: &Coseg,
    backbone: &Backbone,
    set: &SetInput,
    out_dir: Option<&Path>,
    keep: usize,
) -> anyhow::Result<(CosegRecord, Vec<CosegView>)> {
    let t0 = Instant::now();
    let bar = progress(args.json, &format!("{} features", set.name));
    let stack = FeatureStack::extract(backbone, &set.images, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let t_features = t0.elapsed().as_secs_f64();
    for s in stack.skipped() {
        if !args.json {
            eprintln!("skipped {}: {}", s.path.display(), s.reason);
        }
    }
    if stack.is_empty() {
        bail!(
            "{}: none of its {} images could be read",
            set.name,
            set.images.len()
        );
    }
    // Ground truth of the images in the stack (some may have been skipped).
    let index: Vec<usize> = (0..stack.len())
        .map(|i| {
            set.images
                .iter()
                .position(|p| p == stack.path(i))
                .context("an image of the stack is not in its set")
        })
        .collect::<anyhow::Result<_>>()?;

    let t1 = Instant::now();
    let (model, one_shot) = match &args.one_shot {
        None => (coseg.run(&stack)?, None),
        Some(which) => {
            let a = if which == "first" {
                0
            } else {
                find_image(&stack, which)?
            };
            let mask_path = set.masks[index[a]].as_ref().with_context(|| {
                format!(
                    "--one-shot {}: that image has no ground-truth mask (give --masks)",
                    stack.path(a).display()
                )
            })?;
            let truth = Mask::load(mask_path)?;
            let (m, c) = coseg
                .one_shot(&stack, a, &truth, &DEFAULT_ONE_SHOT_KS, DEFAULT_TAU_MERGE)
                .with_context(|| format!("one-shot selection with {}", mask_path.display()))?;
            (m, Some(c))
        }
    };
    let t_fact = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    if let Some(d) = out_dir {
        for sub in ["masks", "overlays", "heatmaps"] {
            std::fs::create_dir_all(d.join(sub))
                .with_context(|| format!("creating {}", d.join(sub).display()))?;
        }
    }
    let bar = progress(args.json, &format!("{} masks", set.name));
    bar.set_length(stack.len() as u64);
    let mut outs: Vec<ImageOut> = Vec::with_capacity(stack.len());
    for chunk in (0..stack.len()).collect::<Vec<_>>().chunks(MASK_CHUNK) {
        let done: Vec<ImageOut> = chunk
            .par_iter()
            .map(|&i| {
                let annotated = one_shot.as_ref().is_some_and(|c| c.annotated == i);
                process_image(
                    &model,
                    &stack,
                    set,
                    index[i],
                    i,
                    out_dir,
                    i < keep,
                    annotated,
                )
            })
            .collect();
        outs.extend(done);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(d) = out_dir {
        write_boxes(&d.join("boxes.txt"), &outs)?;
    }

    let parts_table = if set.parts.iter().any(|p| !p.is_empty()) {
        Some(parts(&model, &stack, set, &index)?)
    } else {
        None
    };
    let t_masks = t2.elapsed().as_secs_f64();

    let scores: Vec<ImageScore> = outs.iter().filter_map(|o| o.score).collect();
    let set_scores = SetScores::of(&scores);
    let mut skipped: Vec<SkippedRecord> = set.notes.clone();
    skipped.extend(stack.skipped().iter().map(|s| SkippedRecord {
        path: s.path.display().to_string(),
        reason: s.reason.clone(),
    }));
    let mut views = Vec::new();
    let mut lines = Vec::new();
    for o in outs {
        if let Some(f) = o.failure {
            if !args.json {
                eprintln!("{}: {}", f.path, f.reason);
            }
            skipped.push(f);
        }
        views.extend(o.view);
        lines.push(o.record);
    }
    let mut record = CosegRecord::new(&set.name, &set_scores, lines, model.provenance(backbone));
    record.skipped = skipped;
    record.object_factors = model.object.clone();
    record.border_ratios = model.stats.border_ratio.clone();
    record.rel_error = model.factors.rel_error();
    record.one_shot = one_shot.as_ref().map(|c| one_shot_record(c, &stack));
    record.seconds.features = t_features;
    record.seconds.factorization = t_fact;
    record.seconds.masks = t_masks;
    if let Some(t) = &parts_table {
        if !args.json {
            print_parts(t)?;
        }
    }
    Ok((record, views))
}

fn one_shot_record(c: &OneShotChoice, stack: &FeatureStack) -> OneShotRecord {
    let r = &c.runs[c.chosen];
    OneShotRecord {
        annotated: stack.name(c.annotated).to_string(),
        k: r.k,
        rule: rule_name(r.rule).to_string(),
        factors: r.factors.clone(),
        iou: 100.0 * r.iou,
        runs: c
            .runs
            .iter()
            .map(|r| (r.k, rule_name(r.rule).to_string(), 100.0 * r.iou))
            .collect(),
    }
}

fn rule_name(r: OneShotRule) -> &'static str {
    match r {
        OneShotRule::Matched => "matched",
        OneShotRule::Auto => "auto",
        OneShotRule::Vote => "vote",
        OneShotRule::Appearance => "appearance",
    }
}

/// The stack's image named `which` (name, file name or path).
fn find_image(stack: &FeatureStack, which: &str) -> anyhow::Result<usize> {
    let p = Path::new(which);
    (0..stack.len())
        .find(|&i| {
            stack.name(i) == which
                || stack.path(i) == p
                || stack.path(i).file_name()
                    == p.file_name().filter(|_| p.components().count() == 1)
        })
        .with_context(|| format!("--one-shot {which:?}: no such image in the set"))
}

/// Masks, scores and outputs of image `i` (ground truth at `gt` in the set's lists). A
/// failure (unreadable image, mask of another size) is reported in the result, not raised.
#[allow(clippy::too_many_arguments)]
fn process_image(
    model: &CosegModel,
    stack: &FeatureStack,
    set: &SetInput,
    gt: usize,
    i: usize,
    out_dir: Option<&Path>,
    view: bool,
    annotated: bool,
) -> ImageOut {
    let name = stack.name(i).to_string();
    let fail = |reason: String| ImageOut {
        record: CosegImageRecord::new(&name, None, None),
        score: None,
        view: None,
        failure: Some(SkippedRecord {
            path: stack.path(i).display().to_string(),
            reason,
        }),
    };
    let image = match deepfactor::images::load_rgb(stack.path(i)) {
        Ok(im) => im,
        Err(e) => return fail(e.to_string()),
    };
    let seg = match model.segment(i, &image) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let mut failure = None;
    let truth = match &set.masks[gt] {
        Some(p) => match Mask::load_truth(p, seg.mask.width(), seg.mask.height()) {
            Ok(m) => Some(m),
            Err(reason) => {
                failure = Some(reason);
                None
            }
        },
        None => None,
    };
    let score = if annotated {
        None
    } else if let Some(t) = &truth {
        score_mask(&seg.mask, seg.bbox.as_ref(), t).ok()
    } else if !set.boxes[gt].is_empty() {
        Some(score_box(seg.bbox.as_ref(), &set.boxes[gt]))
    } else {
        None
    };
    let mut record = CosegImageRecord::new(&name, seg.bbox.as_ref(), score.as_ref());
    record.annotated = annotated;
    let heatmaps = model.factor_heatmaps(i).unwrap_or_default();
    let colours: Vec<(&deepfactor::heatmap::Heatmap, image::Rgb<u8>)> = heatmaps
        .iter()
        .enumerate()
        .map(|(k, h)| (h, palette(k)))
        .collect();
    if let Some(d) = out_dir {
        if let Err(e) = write_outputs(d, &name, &image, &seg, &colours, truth.as_ref()) {
            failure = Some(format!("outputs not written: {e:#}"));
        }
    }
    let view = view.then(|| CosegView {
        name: name.clone(),
        picture: coseg_overlay(
            &image,
            &colours,
            Some(&seg.mask),
            truth.as_ref(),
            seg.bbox.as_ref(),
            REPORT_SIDE,
            OVERLAY_ALPHA,
        ),
        caption: caption(&record, set),
    });
    ImageOut {
        record,
        score,
        view,
        failure: failure.map(|reason| SkippedRecord {
            path: stack.path(i).display().to_string(),
            reason,
        }),
    }
}

fn caption(r: &CosegImageRecord, set: &SetInput) -> Vec<String> {
    let mut lines = Vec::new();
    if r.annotated {
        lines.push("one-shot annotation (not scored)".into());
    }
    if let Some(j) = r.jaccard {
        lines.push(format!(
            "Jaccard {j:.1} · precision {:.1}",
            r.precision.unwrap_or(0.0)
        ));
    }
    if let Some(c) = r.corloc {
        lines.push(format!(
            "box IoU {:.1} · {}",
            r.box_iou.unwrap_or(0.0),
            if c > 0.0 { "localized" } else { "missed" }
        ));
    } else if set.has_truth && !r.annotated {
        lines.push("no ground truth".into());
    }
    match r.bbox {
        Some([x1, y1, x2, y2]) => lines.push(format!("box {x1:.0}, {y1:.0} – {x2:.0}, {y2:.0}")),
        None => lines.push("nothing found".into()),
    }
    lines
}

/// `masks/<name>.png`, `overlays/<name>.jpg`, `heatmaps/<name>.json` under `dir`.
fn write_outputs(
    dir: &Path,
    name: &str,
    image: &image::RgbImage,
    seg: &deepfactor::coseg::Segment,
    colours: &[(&deepfactor::heatmap::Heatmap, image::Rgb<u8>)],
    truth: Option<&Mask>,
) -> anyhow::Result<()> {
    let file = sanitize(name);
    let (w, h) = (seg.mask.width() as u32, seg.mask.height() as u32);
    let bits: Vec<u8> = seg
        .mask
        .bits()
        .iter()
        .map(|&b| if b { 255 } else { 0 })
        .collect();
    let png = image::GrayImage::from_raw(w, h, bits).context("mask buffer")?;
    let p = dir.join("masks").join(format!("{file}.png"));
    png.save(&p)
        .with_context(|| format!("writing {}", p.display()))?;
    let pic = coseg_overlay(
        image,
        colours,
        Some(&seg.mask),
        truth,
        seg.bbox.as_ref(),
        OVERLAY_SIDE,
        OVERLAY_ALPHA,
    );
    let p = dir.join("overlays").join(format!("{file}.jpg"));
    pic.save(&p)
        .with_context(|| format!("writing {}", p.display()))?;
    let maps: Vec<&deepfactor::heatmap::Heatmap> = colours.iter().map(|(h, _)| *h).collect();
    let json = serde_json::json!({
        "name": name,
        "object": seg.heatmap,
        "factors": maps,
    });
    let p = dir.join("heatmaps").join(format!("{file}.json"));
    std::fs::write(&p, serde_json::to_string(&json)?)
        .with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}

/// A name made safe as a file name (path separators and control characters replaced).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn write_boxes(path: &Path, outs: &[ImageOut]) -> anyhow::Result<()> {
    let mut text = String::from("# <image> x1 y1 x2 y2 (pixels; no box: nothing found)\n");
    for o in outs {
        match o.record.bbox {
            Some([x1, y1, x2, y2]) => {
                text += &format!("{} {x1:.0} {y1:.0} {x2:.0} {y2:.0}\n", o.record.name);
            }
            None => text += &format!("{}\n", o.record.name),
        }
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn parts(
    model: &CosegModel,
    stack: &FeatureStack,
    set: &SetInput,
    index: &[usize],
) -> anyhow::Result<deepfactor::coseg::PartsTable> {
    let mut with_parts = Vec::new();
    for (i, &gt) in index.iter().enumerate().take(stack.len()) {
        let files = &set.parts[gt];
        if files.is_empty() {
            continue;
        }
        let masks = files
            .iter()
            .map(|(n, p)| Ok((n.clone(), Mask::load(p)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        with_parts.push((i, masks));
    }
    let matcher = PartMatcher::builder()
        .factor_merge_threshold(DEFAULT_TAU_MERGE)
        .build()?;
    Ok(model.match_parts(&with_parts, &matcher)?)
}

fn print_parts(t: &deepfactor::coseg::PartsTable) -> anyhow::Result<()> {
    let stderr = std::io::stderr();
    let mut o = stderr.lock();
    let m = &t.matching;
    writeln!(o, "factor–part IoU over {} images (percent):", t.images)?;
    write!(o, "{:>8}", "")?;
    for p in &t.parts {
        write!(o, " {:>10}", trim(p, 10))?;
    }
    writeln!(o)?;
    for (f, row) in m.iou.iter().enumerate() {
        write!(o, "{:>8}", format!("f{f}"))?;
        for v in row {
            write!(o, " {:>10.1}", 100.0 * v)?;
        }
        writeln!(o)?;
    }
    writeln!(o, "matches after merging:")?;
    let scores = m.part_scores();
    for (b, group) in m.part_groups.iter().enumerate() {
        let names: Vec<&str> = group.iter().map(|&j| t.parts[j].as_str()).collect();
        let factors = m
            .matches
            .iter()
            .find(|x| x.part_group == b)
            .map(|x| {
                m.factor_groups[x.factor_group]
                    .iter()
                    .map(|f| format!("f{f}"))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .unwrap_or_else(|| "–".into());
        writeln!(
            o,
            "  {:<24} ← {:<12} IoU {:.1}",
            names.join("+"),
            factors,
            100.0 * scores[b]
        )?;
    }
    writeln!(o, "  mean part IoU {:.1}", 100.0 * m.mean_part_iou())?;
    Ok(())
}

fn trim(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn summary_line(r: &CosegRecord) -> String {
    format!(
        "{}: {} images · Jaccard {} · pooled {} · precision {} · CorLoc {} · object factors {:?} of {}",
        r.set,
        r.images.len(),
        pct(r.jaccard),
        pct(r.jaccard_pooled),
        pct(r.precision),
        pct(r.corloc),
        r.object_factors,
        r.provenance.k
    )
}

fn print_set_table(o: &mut impl std::io::Write, r: &CosegRecord) -> anyhow::Result<()> {
    writeln!(
        o,
        "{:<28} {:>8} {:>9} {:>7}  box",
        "image", "Jaccard", "precision", "CorLoc"
    )?;
    for i in &r.images {
        let b = i.bbox.map_or_else(
            || "–".to_string(),
            |[x1, y1, x2, y2]| format!("{x1:.0},{y1:.0},{x2:.0},{y2:.0}"),
        );
        writeln!(
            o,
            "{:<28} {:>8} {:>9} {:>7}  {b}{}",
            trim(&i.name, 28),
            pct(i.jaccard),
            pct(i.precision),
            pct(i.corloc),
            if i.annotated { "  (annotation)" } else { "" }
        )?;
    }
    writeln!(o, "{}", summary_line(r))?;
    writeln!(
        o,
        "{} {} · {} · method {} · K {} · {} normalisation · threshold {} · refine {}",
        r.provenance.backbone,
        r.provenance.layer,
        r.provenance.input_size,
        r.provenance.method,
        r.provenance.k,
        r.provenance.normalise,
        r.provenance.threshold,
        r.provenance.refine
    )?;
    if let Some(s) = &r.one_shot {
        writeln!(
            o,
            "one-shot: annotated {}, chose factors {:?} of K = {} ({}; IoU {:.1} on it)",
            s.annotated, s.factors, s.k, s.rule, s.iou
        )?;
    }
    if !r.skipped.is_empty() {
        writeln!(
            o,
            "{} image(s) skipped or not scored (see above)",
            r.skipped.len()
        )?;
    }
    Ok(())
}

fn print_dataset_table(o: &mut impl std::io::Write, d: &CosegDatasetRecord) -> anyhow::Result<()> {
    writeln!(
        o,
        "{:<16} {:>7} {:>8} {:>8} {:>9} {:>7}",
        "class", "images", "Jaccard", "pooled", "precision", "CorLoc"
    )?;
    for c in &d.classes {
        writeln!(
            o,
            "{:<16} {:>7} {:>8} {:>8} {:>9} {:>7}",
            trim(&c.set, 16),
            c.images.len(),
            pct(c.jaccard),
            pct(c.jaccard_pooled),
            pct(c.precision),
            pct(c.corloc)
        )?;
    }
    writeln!(
        o,
        "{:<16} {:>7} {:>8} {:>8} {:>9} {:>7}",
        "mean",
        d.classes.iter().map(|c| c.images.len()).sum::<usize>(),
        pct(d.mean.jaccard),
        pct(d.mean.jaccard_pooled),
        pct(d.mean.precision),
        pct(d.mean.corloc)
    )?;
    if let Some(c) = d.classes.first() {
        let p = &c.provenance;
        writeln!(
            o,
            "{} {} · {} px · method {} · K {} · {} normalisation · threshold {} · refine {} · {:.0} s features, {:.0} s factorization, {:.0} s masks",
            p.backbone,
            p.layer,
            p.input_size,
            p.method,
            p.k,
            p.normalise,
            p.threshold,
            p.refine,
            d.seconds.features,
            d.seconds.factorization,
            d.seconds.masks
        )?;
    }
    Ok(())
}

fn write_report(
    path: &Path,
    records: &[CosegRecord],
    views: Vec<CosegView>,
    mut notes: Vec<String>,
    dataset: bool,
) -> anyhow::Result<()> {
    let first = records.first().context("no set was co-segmented")?;
    let p = &first.provenance;
    let mut scores = Vec::new();
    let all: Vec<SetScores> = records.iter().map(CosegRecord::scores).collect();
    let s = SetScores::mean(&all);
    for (k, v) in [
        ("Jaccard", s.jaccard),
        ("pooled Jaccard", s.jaccard_pooled),
        ("precision", s.precision),
        ("CorLoc", s.corloc),
    ] {
        if v.is_some() {
            scores.push((k.to_string(), pct(v)));
        }
    }
    if dataset {
        for r in records {
            scores.push((
                r.set.clone(),
                format!("J {} · CorLoc {}", pct(r.jaccard), pct(r.corloc)),
            ));
        }
    }
    let settings = vec![
        (
            "backbone".to_string(),
            format!("{} {} at {} px", p.backbone, p.layer, p.input_size),
        ),
        ("method".to_string(), format!("{}, K = {}", p.method, p.k)),
        (
            "masks".to_string(),
            format!(
                "{} normalisation, threshold {}, refine {}",
                p.normalise, p.threshold, p.refine
            ),
        ),
    ];
    let legend = if dataset {
        Vec::new()
    } else {
        (0..first.provenance.k)
            .map(|k| {
                let object = first.object_factors.contains(&k);
                (
                    format!("factor {k}{}", if object { " (object)" } else { "" }),
                    palette(k),
                )
            })
            .collect()
    };
    for r in records {
        for s in &r.skipped {
            notes.push(format!("{}: {}", s.path, s.reason));
        }
    }
    let report = CosegReport {
        title: if dataset {
            format!("Co-segmentation of {} classes", records.len())
        } else {
            format!("Co-segmentation of {}", first.set)
        },
        subtitle: format!(
            "{} images · colours mark factors (legend), white the object's outline and box",
            records.iter().map(|r| r.images.len()).sum::<usize>()
        ),
        legend,
        scores,
        settings,
        views,
        notes,
    };
    report.write_html(path, 85)?;
    Ok(())
}
