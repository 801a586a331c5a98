//! `deepfactor.coseg`: co-segmentation and co-localization of an image set, the library's
//! [`crate::coseg`] path as `deepfactor coseg` runs it (same masks, boxes and record).

use super::errors::{invalid, OrRaise};
use super::progress::Progress;
use crate::coseg::{CosegBuilder, FeatureStack, Method, Normalise, Refine, Threshold};
use crate::eval::SkippedRecord;
use crate::eval::{score_mask, CosegImageRecord, CosegRecord, ImageScore, Mask, SetScores};
use numpy::ndarray::Array2;
use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::path::{Path, PathBuf};

/// One image's result before it becomes Python objects.
struct Out {
    path: PathBuf,
    name: String,
    mask: Mask,
    bbox: Option<crate::BBox>,
    heatmap: crate::heatmap::Heatmap,
}

/// The co-segmentation settings (the CLI's `--method`, `--k`, `--normalise`, `--threshold`,
/// `--refine`, `--thesis`).
fn configure(
    method: &str,
    k: Option<usize>,
    normalise: &str,
    threshold: &str,
    refine: &str,
    thesis: bool,
) -> PyResult<crate::coseg::Coseg> {
    let method = Method::from_name(method).or_raise()?;
    let mut b = if thesis {
        CosegBuilder::thesis(method)
    } else {
        let normalise = match normalise {
            "image" => Normalise::Image,
            "set" => Normalise::Set,
            o => {
                return Err(invalid(format!(
                    "normalise {o:?}: expected \"image\" or \"set\""
                )))
            }
        };
        let threshold =
            match threshold {
                "otsu" => Threshold::Otsu,
                t => Threshold::Fixed(t.parse().map_err(|_| {
                    invalid(format!("threshold {t:?}: expected \"otsu\" or a number"))
                })?),
            };
        let refine = match refine {
            "colour" | "color" => Refine::Colour,
            "none" => Refine::None,
            o => {
                return Err(invalid(format!(
                    "refine {o:?}: expected \"colour\" or \"none\""
                )))
            }
        };
        CosegBuilder::default()
            .method(method)
            .normalise(normalise)
            .threshold(threshold)
            .refine(refine)
    };
    if let Some(k) = k {
        b = b.k(k);
    }
    b.build().or_raise()
}

/// The image files: every image under a folder (in the CLI's order), or the paths given.
fn image_paths(images: &Bound<'_, PyAny>) -> PyResult<(String, Vec<PathBuf>, Vec<SkippedRecord>)> {
    if let Ok(dir) = images.extract::<PathBuf>() {
        if !dir.is_dir() {
            return Err(invalid(format!(
                "{}: not a folder (give a folder or a list of image paths)",
                dir.display()
            )));
        }
        let found = crate::images::image_files(&dir);
        let notes = found
            .unreadable
            .iter()
            .map(|(p, r)| SkippedRecord {
                path: p.display().to_string(),
                reason: r.clone(),
            })
            .collect();
        if found.files.is_empty() {
            return Err(invalid(format!(
                "{}: no image files (jpg, png, webp, tif, bmp) in it",
                dir.display()
            )));
        }
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        return Ok((name, found.files, notes));
    }
    let paths = images
        .try_iter()
        .map_err(|_| invalid("images must be a folder or a list of image paths"))?
        .map(|p| {
            p?.extract::<PathBuf>()
                .map_err(|_| invalid("images must be a folder or a list of image paths"))
        })
        .collect::<PyResult<Vec<_>>>()?;
    if paths.is_empty() {
        return Err(invalid("images: no image was given"));
    }
    Ok(("images".to_string(), paths, Vec::new()))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// coseg(images, k=None, method="auto", layer=None, backbone="efficientnet-lite0",
/// weights=None, size=512, reflect=False, masks=None, normalise="image", threshold="otsu",
/// refine="colour", thesis=False, progress=None) -> dict
///
/// Co-segmentation and co-localization of images that share an object, as
/// ``deepfactor coseg`` does it: one joint NMF of the set's activations, the object's factors
/// chosen by ``method`` (``"auto"``, ``"border"`` or ``"single"``; ``k`` defaults to 8, 2
/// and 1), then a mask and a box per image. ``images`` is a folder (every image file under
/// it, in the CLI's order) or a list of paths. ``masks`` is a folder of ground-truth masks
/// ``<stem>.png`` (as the CLI's ``--masks``): images with one are scored.
///
/// Returns ``{"images": [...], "record": {...}, "skipped": [...]}``: per image a dict with
/// ``path``, ``name``, ``mask`` (uint8 H×W array, 1 = object, the image's size), ``box``
/// (``(x1, y1, x2, y2)`` pixels, or ``None`` when nothing was found), ``heatmap`` (float32
/// rows × columns over the feature-map cells) and ``grid`` (``(rows, cols, image_width,
/// image_height)``); ``record`` is the JSON record ``deepfactor coseg --json`` prints, as a
/// dict (scores, object factors, provenance); ``skipped`` lists ``(path, reason)`` of images
/// that could not be read or scored. The GIL is released while the network and NMF run.
#[pyfunction]
#[pyo3(signature = (images, k = None, method = "auto", layer = None,
                    backbone = "efficientnet-lite0", weights = None,
                    size = crate::backbone::DEFAULT_INPUT_SIZE, reflect = false, masks = None,
                    normalise = "image", threshold = "otsu", refine = "colour", thesis = false,
                    progress = None))]
#[allow(clippy::too_many_arguments)]
fn coseg<'py>(
    py: Python<'py>,
    images: &Bound<'py, PyAny>,
    k: Option<usize>,
    method: &str,
    layer: Option<String>,
    backbone: &str,
    weights: Option<PathBuf>,
    size: u32,
    reflect: bool,
    masks: Option<PathBuf>,
    normalise: &str,
    threshold: &str,
    refine: &str,
    thesis: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let coseg = configure(method, k, normalise, threshold, refine, thesis)?;
    let (set_name, paths, mut skipped) = image_paths(images)?;
    if let Some(m) = &masks {
        if !m.is_dir() {
            return Err(invalid(format!("masks {}: not a folder", m.display())));
        }
    }
    // Ground-truth masks `<stem>.png`; images without one are noted (as the CLI does).
    let mut mask_files = std::collections::HashMap::new();
    if let Some(dir) = &masks {
        for p in &paths {
            let m = dir.join(format!("{}.png", stem(p)));
            if m.is_file() {
                mask_files.insert(p.clone(), m);
            } else {
                skipped.push(SkippedRecord {
                    path: p.display().to_string(),
                    reason: format!("not scored: no mask {}", m.display()),
                });
            }
        }
    }
    let progress = Progress::new(progress)?;
    let (outs, record) = py
        .detach(|| -> crate::Result<(Vec<Out>, CosegRecord)> {
            let net = super::backbone::build(backbone, layer, weights, size, None, reflect)?;
            let stack = FeatureStack::extract(&net, &paths, |d, t| progress.report(d, t))?;
            skipped.extend(stack.skipped().iter().map(|s| SkippedRecord {
                path: s.path.display().to_string(),
                reason: s.reason.clone(),
            }));
            if stack.is_empty() {
                return Err(crate::Error::invalid(format!(
                    "none of the {} images could be read",
                    paths.len()
                )));
            }
            let model = coseg.run(&stack)?;
            let mut outs = Vec::with_capacity(stack.len());
            let mut lines = Vec::with_capacity(stack.len());
            let mut scores: Vec<ImageScore> = Vec::new();
            let mut failures = Vec::new();
            for i in 0..stack.len() {
                let path = stack.path(i).to_path_buf();
                let name = stack.name(i).to_string();
                // As the CLI: an image that fails here is noted, not raised.
                let seg = match crate::images::load_rgb(&path).and_then(|im| model.segment(i, &im))
                {
                    Ok(s) => s,
                    Err(e) => {
                        failures.push(SkippedRecord {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        });
                        lines.push(CosegImageRecord::new(&name, None, None));
                        continue;
                    }
                };
                // As the CLI: a mask that cannot be read or has another size is noted, and the
                // image is not scored.
                let truth = match mask_files.get(&path) {
                    Some(p) => match Mask::load_truth(p, seg.mask.width(), seg.mask.height()) {
                        Ok(m) => Some(m),
                        Err(reason) => {
                            failures.push(SkippedRecord {
                                path: path.display().to_string(),
                                reason,
                            });
                            None
                        }
                    },
                    None => None,
                };
                let score = truth
                    .as_ref()
                    .and_then(|t| score_mask(&seg.mask, seg.bbox.as_ref(), t).ok());
                scores.extend(score);
                lines.push(CosegImageRecord::new(
                    &name,
                    seg.bbox.as_ref(),
                    score.as_ref(),
                ));
                outs.push(Out {
                    path,
                    name,
                    mask: seg.mask,
                    bbox: seg.bbox,
                    heatmap: seg.heatmap,
                });
            }
            skipped.extend(failures);
            let mut record = CosegRecord::new(
                &set_name,
                &SetScores::of(&scores),
                lines,
                model.provenance(&net),
            );
            record.skipped = skipped;
            record.object_factors = model.object.clone();
            record.border_ratios = model.stats.border_ratio.clone();
            record.rel_error = model.factors.rel_error();
            Ok((outs, record))
        })
        .or_raise()?;
    progress.finish()?;
    let items = PyList::empty(py);
    for o in outs {
        let d = PyDict::new(py);
        d.set_item("path", &o.path)?;
        d.set_item("name", &o.name)?;
        let (w, h) = (o.mask.width(), o.mask.height());
        let bits: Vec<u8> = o.mask.bits().iter().map(|&b| u8::from(b)).collect();
        let mask = Array2::from_shape_vec((h, w), bits)
            .map_err(|e| invalid(format!("mask of {w}×{h}: {e}")))?;
        d.set_item("mask", PyArray2::from_owned_array(py, mask))?;
        d.set_item("box", o.bbox.map(|b| (b.x1, b.y1, b.x2, b.y2)))?;
        let g = *o.heatmap.grid();
        let heat = Array2::from_shape_vec((g.rows, g.cols), o.heatmap.into_values())
            .map_err(|e| invalid(format!("heatmap of {}×{}: {e}", g.rows, g.cols)))?;
        d.set_item("heatmap", PyArray2::from_owned_array(py, heat))?;
        d.set_item("grid", (g.rows, g.cols, g.image_width, g.image_height))?;
        items.append(d)?;
    }
    let out = PyDict::new(py);
    let skipped = PyList::empty(py);
    for s in &record.skipped {
        skipped.append(PyTuple::new(py, [s.path.clone(), s.reason.clone()])?)?;
    }
    let json = py
        .import("json")?
        .call_method1("loads", (record.to_json(),))?;
    out.set_item("images", items)?;
    out.set_item("record", json)?;
    out.set_item("skipped", skipped)?;
    Ok(out)
}

/// Adds `coseg` to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(coseg, m)?)?;
    Ok(())
}
