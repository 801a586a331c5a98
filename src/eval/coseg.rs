//! Co-segmentation / co-localization ground truth, and plain image lists.
//!
//! # Layout (`../shared/data/voc-coseg`, and what `datasets/` writes for iCoseg, PASCAL VOC
//! and PASCAL-Part)
//!
//! ```text
//! <dir>/images/<class>/<name>.jpg        the images of each class (or group); .jpeg/.png too
//! <dir>/masks/<class>/<name>.png         optional: foreground mask (non-zero = object)
//! <dir>/boxes/<class>.txt                optional: "<name> x1 y1 x2 y2", one line per object
//!                                        box (an image may have several)
//! <dir>/parts/<class>/<name>/<part>.png  optional: one binary mask per annotated part
//! ```
//!
//! When `masks/` exists every image must have its mask and every mask its image; the same
//! for the class files of `boxes/`. Box files name images of their class and refuse
//! `x2 < x1` and repeated lines.

use super::ground_truth::{fields, gt_err, list_images, parse_box, read_text};
use crate::{BBox, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One image of a co-segmentation class.
#[derive(Debug, Clone, PartialEq)]
pub struct CosegImage {
    /// The image's name (file stem).
    pub name: String,
    /// The image file.
    pub image: PathBuf,
    /// Its foreground mask file, when the set has masks.
    pub mask: Option<PathBuf>,
    /// Its object boxes, when the set has boxes (may be empty for an image).
    pub boxes: Vec<BBox>,
    /// Its part masks `(part name, file)`, sorted by name; empty when none.
    pub parts: Vec<(String, PathBuf)>,
}

/// One class (group) of images sharing an object category.
#[derive(Debug, Clone, PartialEq)]
pub struct CosegClass {
    /// The class name (folder name).
    pub name: String,
    /// Its images, sorted by name.
    pub images: Vec<CosegImage>,
}

/// A co-segmentation / co-localization set.
#[derive(Debug, Clone, PartialEq)]
pub struct CosegGroundTruth {
    /// Where it was loaded from.
    pub root: PathBuf,
    /// The classes, sorted by name.
    pub classes: Vec<CosegClass>,
    /// Whether the set has masks.
    pub has_masks: bool,
    /// Whether the set has boxes.
    pub has_boxes: bool,
}

impl CosegGroundTruth {
    /// Loads the layout described in the module docs.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let images_dir = dir.join("images");
        if !images_dir.is_dir() {
            return Err(gt_err(&images_dir, None, "missing image folder"));
        }
        let masks_dir = dir.join("masks");
        let boxes_dir = dir.join("boxes");
        let parts_dir = dir.join("parts");
        let has_masks = masks_dir.is_dir();
        let has_boxes = boxes_dir.is_dir();

        let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(&images_dir)
            .map_err(|e| crate::Error::io(&images_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(gt_err(&images_dir, None, "no class folders"));
        }

        let mut classes = Vec::with_capacity(class_dirs.len());
        for cdir in class_dirs {
            let Some(cname) = cdir.file_name().and_then(|n| n.to_str()).map(String::from) else {
                return Err(gt_err(&cdir, None, "class folder name is not UTF-8"));
            };
            let listed = list_images(&cdir)?;
            let index: HashMap<String, usize> = listed
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (n.clone(), i))
                .collect();
            let mut images: Vec<CosegImage> = listed
                .into_iter()
                .map(|(name, image)| CosegImage {
                    name,
                    image,
                    mask: None,
                    boxes: Vec::new(),
                    parts: Vec::new(),
                })
                .collect();

            if has_masks {
                let mdir = masks_dir.join(&cname);
                for img in &mut images {
                    let m = mdir.join(format!("{}.png", img.name));
                    if !m.is_file() {
                        return Err(gt_err(
                            &m,
                            None,
                            format!("missing mask of image {:?}", img.name),
                        ));
                    }
                    img.mask = Some(m);
                }
                if mdir.is_dir() {
                    for entry in std::fs::read_dir(&mdir).map_err(|e| crate::Error::io(&mdir, e))? {
                        let p = entry.map_err(|e| crate::Error::io(&mdir, e))?.path();
                        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                        if p.extension().is_some_and(|e| e == "png") && !index.contains_key(stem) {
                            return Err(gt_err(&p, None, "mask without an image"));
                        }
                    }
                }
            }

            if has_boxes {
                let bpath = boxes_dir.join(format!("{cname}.txt"));
                let text = read_text(&bpath)?;
                let mut seen: HashMap<String, usize> = HashMap::new();
                for (line, f) in fields(&text) {
                    if f.len() != 5 {
                        return Err(gt_err(
                            &bpath,
                            Some(line),
                            format!("expected \"<image> x1 y1 x2 y2\", found {} fields", f.len()),
                        ));
                    }
                    let i = *index.get(f[0]).ok_or_else(|| {
                        gt_err(
                            &bpath,
                            Some(line),
                            format!("unknown image name {:?} (not in images/{cname}/)", f[0]),
                        )
                    })?;
                    if let Some(l0) = seen.insert(f.join(" "), line) {
                        return Err(gt_err(
                            &bpath,
                            Some(line),
                            format!("duplicate entry: same box as line {l0}"),
                        ));
                    }
                    images[i].boxes.push(parse_box(&bpath, line, &f[1..])?);
                }
            }

            for img in &mut images {
                let pdir = parts_dir.join(&cname).join(&img.name);
                if !pdir.is_dir() {
                    continue;
                }
                let mut parts = Vec::new();
                for entry in std::fs::read_dir(&pdir).map_err(|e| crate::Error::io(&pdir, e))? {
                    let p = entry.map_err(|e| crate::Error::io(&pdir, e))?.path();
                    if p.extension().is_some_and(|e| e == "png") {
                        let name = p
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .ok_or_else(|| gt_err(&p, None, "part file name is not UTF-8"))?
                            .to_string();
                        parts.push((name, p));
                    }
                }
                parts.sort();
                img.parts = parts;
            }

            classes.push(CosegClass {
                name: cname,
                images,
            });
        }
        Ok(CosegGroundTruth {
            root: dir.to_path_buf(),
            classes,
            has_masks,
            has_boxes,
        })
    }

    /// Total number of images.
    pub fn len(&self) -> usize {
        self.classes.iter().map(|c| c.images.len()).sum()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A class by name.
    pub fn class(&self, name: &str) -> Option<&CosegClass> {
        self.classes.iter().find(|c| c.name == name)
    }
}

/// Reads a plain image list (e.g. `revisitop1m.txt`, the 1M distractor listing): one image
/// path per line, relative to the dataset's image folder. Blank lines are skipped; a line with
/// inner whitespace or a repeated entry is an error naming the line.
pub fn load_image_list(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = read_text(path)?;
    let mut out = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (line, f) in fields(&text) {
        if f.len() != 1 {
            return Err(gt_err(
                path,
                Some(line),
                format!("expected one image path, found {} fields", f.len()),
            ));
        }
        if let Some(l0) = seen.insert(f[0], line) {
            return Err(gt_err(
                path,
                Some(line),
                format!("duplicate entry: {:?} is already listed at line {l0}", f[0]),
            ));
        }
        out.push(f[0].to_string());
    }
    if out.is_empty() {
        return Err(gt_err(path, None, "lists no images"));
    }
    Ok(out)
}
