//! Retrieval ground truth: the Oxford5k / Paris6k folder layout and the revisited pickles.
//!
//! # Oxford / Paris layout (also `../shared/data/instance-dev` and `semantic-dev`)
//!
//! ```text
//! <dir>/jpg/<image>.jpg          the database (file stem = image name; any image extension)
//! <dir>/gt/<q>_query.txt         "<image> x1 y1 x2 y2": the query image and its region
//! <dir>/gt/<q>_good.txt          one image name per line
//! <dir>/gt/<q>_ok.txt            one image name per line
//! <dir>/gt/<q>_junk.txt          one image name per line
//! <dir>/gt/<q>_boxes.txt         optional: "<image> x1 y1 x2 y2", where the query's object
//!                                lies in other images (localization ground truth)
//! <dir>/queries.txt              optional: the query names, in order; otherwise every
//!                                gt/*_query.txt, sorted by name
//! ```
//!
//! The `gt/` folder may also be given itself, as Oxford and Paris distribute it (a folder of
//! `*_query.txt`, `*_good.txt`, … files, with an optional `queries.txt` inside): the database
//! images are then those of the folder given with [`GroundTruth::load_with_images`], else of
//! a `jpg/` folder beside it, else the names the ground-truth files mention (any other image
//! ranked counts as a distractor when evaluating with distractors).
//!
//! Oxford's query files prefix the image name with `oxc1_`; the prefix is stripped when the
//! name with it is not a database image. Relevant images are good ∪ ok; junk images count
//! neither way. Blank lines are ignored; everything else must parse.
//!
//! # Revisited ROxford5k / RParis6k (`gnd_roxford5k.pkl`, `gnd_rparis6k.pkl`)
//!
//! A Python pickle of a dict with `imlist` (database image names), `qimlist` (query image
//! names, not in the database) and `gnd`, a list with one dict per query holding `easy`,
//! `hard` and `junk` (0-based indices into `imlist`) and `bbx` (the query region
//! `[x1, y1, x2, y2]`). Pickles in the same structure with `ok` and `junk` lists instead (the
//! classic Oxford/Paris files of the cnnimageretrieval project) load as classic ground truth.
//! Queries are named by their `qimlist` entry.
//!
//! Loaders refuse anything malformed with [`Error::GroundTruth`] naming the file and, for text
//! files, the line: a missing file, an unparsable line, a box with `x2 < x1` or `y2 < y1`, an
//! image that is not in the database, and an image listed twice for one query (in the same
//! list or in two of them).

use crate::images::has_image_extension;
use crate::{BBox, Error, Result};
use serde_pickle::value::{HashableValue, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The prefix of Oxford5k's query image names.
pub const OXFORD_QUERY_PREFIX: &str = "oxc1_";

/// Which annotation scheme a ground truth follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroundTruthKind {
    /// Good / ok / junk lists (Oxford5k, Paris6k and their layout).
    Classic,
    /// Easy / hard / junk lists (ROxford5k, RParis6k).
    Revisited,
}

/// A setup of the revisited protocol: which lists are positives and which are junk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Positives: easy. Junk: junk ∪ hard.
    Easy,
    /// Positives: easy ∪ hard. Junk: junk.
    Medium,
    /// Positives: hard. Junk: junk ∪ easy.
    Hard,
}

impl Setup {
    /// The three setups, in the order they are reported.
    pub const ALL: [Setup; 3] = [Setup::Easy, Setup::Medium, Setup::Hard];

    /// `"easy"`, `"medium"` or `"hard"`.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Easy => "easy",
            Setup::Medium => "medium",
            Setup::Hard => "hard",
        }
    }
}

/// The relevance lists of one query, as indices into [`GroundTruth::images`].
#[derive(Debug, Clone, PartialEq)]
pub enum Relevance {
    /// Oxford5k / Paris6k lists.
    Classic {
        /// Clear pictures of the object.
        good: Vec<usize>,
        /// More than 25% of the object clearly visible.
        ok: Vec<usize>,
        /// Ignored when scoring.
        junk: Vec<usize>,
    },
    /// ROxford5k / RParis6k lists.
    Revisited {
        /// Easy positives.
        easy: Vec<usize>,
        /// Hard positives.
        hard: Vec<usize>,
        /// Ignored when scoring (in every setup).
        junk: Vec<usize>,
    },
}

impl Relevance {
    /// The standard `(positives, junk)`: good ∪ ok and junk for classic lists; the Medium
    /// setup (easy ∪ hard, junk) for revisited ones.
    pub fn standard(&self) -> (Vec<usize>, Vec<usize>) {
        match self {
            Relevance::Classic { good, ok, junk } => (concat(good, ok), junk.clone()),
            Relevance::Revisited { .. } => self
                .revisited(Setup::Medium)
                .unwrap_or_else(|| (Vec::new(), Vec::new())),
        }
    }

    /// `(positives, junk)` of a revisited setup; `None` for classic lists.
    pub fn revisited(&self, setup: Setup) -> Option<(Vec<usize>, Vec<usize>)> {
        match self {
            Relevance::Classic { .. } => None,
            Relevance::Revisited { easy, hard, junk } => Some(match setup {
                Setup::Easy => (easy.clone(), concat(junk, hard)),
                Setup::Medium => (concat(easy, hard), junk.clone()),
                Setup::Hard => (hard.clone(), concat(junk, easy)),
            }),
        }
    }
}

fn concat(a: &[usize], b: &[usize]) -> Vec<usize> {
    a.iter().chain(b).copied().collect()
}

/// One query of a ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruthQuery {
    /// The query's name (the `<q>` of `<q>_query.txt`, or the revisited `qimlist` entry).
    pub name: String,
    /// The query image's name (without `oxc1_`).
    pub image: String,
    /// The query region in the query image's pixels, where given.
    pub bbox: Option<BBox>,
    /// Relevance lists.
    pub relevance: Relevance,
    /// Localization ground truth (`<q>_boxes.txt`): where the query's object lies in other
    /// images, as `(image index, box)`; empty when not given.
    pub boxes: Vec<(usize, BBox)>,
}

/// Ground truth for a retrieval benchmark: the database image list and the queries.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    name: String,
    source: PathBuf,
    images_dir: Option<PathBuf>,
    database_listed: bool,
    kind: GroundTruthKind,
    images: Vec<String>,
    image_index: HashMap<String, usize>,
    queries: Vec<GroundTruthQuery>,
    query_index: HashMap<String, usize>,
}

impl GroundTruth {
    /// Loads ground truth from `path`: an Oxford-layout folder (with `gt/` and `jpg/`), its
    /// `gt/` folder itself (a folder of `*_query.txt` files), a revisited pickle, or a folder
    /// holding exactly one `gnd_*.pkl`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        GroundTruth::load_with_images(path, None)
    }

    /// [`GroundTruth::load`], with the database images of an Oxford-layout ground truth taken
    /// from `images` (default: `jpg/` beside `gt/`). Pickles list their database themselves.
    pub fn load_with_images(path: impl AsRef<Path>, images: Option<&Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            return load_pickle(path);
        }
        if !path.is_dir() {
            return Err(gt_err(path, None, "no such file or folder"));
        }
        if path.join("gt").is_dir() {
            let images = images.map_or_else(|| path.join("jpg"), Path::to_path_buf);
            return load_classic(path, &path.join("gt"), Some(&images));
        }
        if has_query_files(path)? {
            let beside = path.parent().map(|p| p.join("jpg"));
            let images = match images {
                Some(dir) => Some(dir.to_path_buf()),
                None => beside.filter(|d| d.is_dir()),
            };
            return load_classic(path, path, images.as_deref());
        }
        let mut pickles: Vec<PathBuf> = read_dir_sorted(path)?
            .into_iter()
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("gnd_") && n.ends_with(".pkl"))
            })
            .collect();
        match pickles.len() {
            1 => load_pickle(&pickles.remove(0)),
            0 => Err(gt_err(
                path,
                None,
                "neither a gt/ folder or *_query.txt files (Oxford layout) nor a gnd_*.pkl \
                 file (revisited) here",
            )),
            _ => Err(gt_err(
                path,
                None,
                format!(
                    "{} gnd_*.pkl files here; name the one to use",
                    pickles.len()
                ),
            )),
        }
    }

    /// The dataset's name: the folder name, or the pickle's name without `gnd_` and `.pkl`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The folder whose images are the database, when a folder listed it.
    pub fn images_dir(&self) -> Option<&Path> {
        self.images_dir.as_deref()
    }

    /// Whether [`GroundTruth::images`] is the whole database (listed by an image folder or a
    /// pickle), not only the images the ground-truth files name (a bare `gt/` folder without
    /// images); [`crate::eval::evaluate`] counts other ranked images as distractors then.
    pub fn lists_database(&self) -> bool {
        self.database_listed
    }

    /// Classic or revisited annotation.
    pub fn kind(&self) -> GroundTruthKind {
        self.kind
    }

    /// Database image names, in database order.
    pub fn images(&self) -> &[String] {
        &self.images
    }

    /// The database index of an image name.
    pub fn image_index(&self, name: &str) -> Option<usize> {
        self.image_index.get(name).copied()
    }

    /// The queries, in order.
    pub fn queries(&self) -> &[GroundTruthQuery] {
        &self.queries
    }

    /// A query by name.
    pub fn query(&self, name: &str) -> Option<&GroundTruthQuery> {
        self.query_index.get(name).map(|&i| &self.queries[i])
    }

    /// Keeps only the named queries, in the order given; unknown or repeated names are an
    /// error. Useful to evaluate a subset.
    pub fn select(&self, names: &[&str]) -> Result<GroundTruth> {
        let mut queries = Vec::with_capacity(names.len());
        let mut query_index = HashMap::new();
        for &n in names {
            let q = self.query(n).ok_or_else(|| {
                Error::invalid(format!("{}: no query named {n:?}", self.source.display()))
            })?;
            if query_index.insert(n.to_string(), queries.len()).is_some() {
                return Err(Error::invalid(format!("query {n:?} selected twice")));
            }
            queries.push(q.clone());
        }
        Ok(GroundTruth {
            queries,
            query_index,
            ..self.clone()
        })
    }
}

pub(crate) fn gt_err(path: &Path, line: Option<usize>, reason: impl Into<String>) -> Error {
    Error::GroundTruth {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        out.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// Reads a text ground-truth file; a missing file is a ground-truth error naming it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| {
            gt_err(
                path,
                None,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(gt_err(path, None, "missing file"))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The non-blank lines of a text, with their 1-based numbers, split on whitespace.
pub(crate) fn fields(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, f)| !f.is_empty())
}

/// Parses `x1 y1 x2 y2` for a ground-truth line.
pub(crate) fn parse_box(path: &Path, line: usize, parts: &[&str]) -> Result<BBox> {
    let mut v = [0f32; 4];
    for (slot, p) in v.iter_mut().zip(parts) {
        *slot = p.parse::<f32>().map_err(|_| {
            gt_err(
                path,
                Some(line),
                format!("{p:?} is not a number (expected x1 y1 x2 y2)"),
            )
        })?;
    }
    if !v.iter().all(|x| x.is_finite()) {
        return Err(gt_err(path, Some(line), "box has a non-finite coordinate"));
    }
    if v[2] < v[0] || v[3] < v[1] {
        return Err(gt_err(
            path,
            Some(line),
            format!(
                "box ({}, {}, {}, {}) has x2 < x1 or y2 < y1",
                v[0], v[1], v[2], v[3]
            ),
        ));
    }
    BBox::new(v[0], v[1], v[2], v[3]).map_err(|e| gt_err(path, Some(line), e.to_string()))
}

/// Lists database images in `jpg/`: name = file stem; refuses a missing or empty folder and
/// two files with the same stem.
pub(crate) fn list_images(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Err(gt_err(dir, None, "missing image folder"));
    }
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for p in read_dir_sorted(dir)? {
        if !p.is_file() {
            continue;
        }
        if !has_image_extension(&p) {
            continue;
        }
        let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else {
            return Err(gt_err(&p, None, "image file name is not UTF-8"));
        };
        if let Some(other) = seen.insert(stem.to_string(), p.clone()) {
            return Err(gt_err(
                &p,
                None,
                format!(
                    "duplicate image name {stem:?} (also {})",
                    other
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
            ));
        }
        out.push((stem.to_string(), p));
    }
    if out.is_empty() {
        return Err(gt_err(
            dir,
            None,
            format!(
                "no images (.{}) in this folder",
                crate::images::IMAGE_EXTENSIONS.join(", .")
            ),
        ));
    }
    Ok(out)
}

/// Per-query bookkeeping so that an image listed twice is reported with both places.
struct Listed<'a> {
    seen: HashMap<usize, (&'a Path, usize)>,
}

impl<'a> Listed<'a> {
    fn new() -> Self {
        Listed {
            seen: HashMap::new(),
        }
    }

    fn add(&mut self, idx: usize, name: &str, path: &'a Path, line: usize) -> Result<()> {
        if let Some((p0, l0)) = self.seen.insert(idx, (path, line)) {
            let where0 = if p0 == path {
                format!("line {l0}")
            } else {
                format!(
                    "{}:{l0}",
                    p0.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                )
            };
            return Err(gt_err(
                path,
                Some(line),
                format!("duplicate entry: {name:?} is already listed at {where0}"),
            ));
        }
        Ok(())
    }
}

fn read_list<'a>(
    path: &'a Path,
    index: &HashMap<String, usize>,
    listed: &mut Listed<'a>,
) -> Result<Vec<usize>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (line, f) in fields(&text) {
        if f.len() != 1 {
            return Err(gt_err(
                path,
                Some(line),
                format!("expected one image name, found {} fields", f.len()),
            ));
        }
        let idx = *index.get(f[0]).ok_or_else(|| {
            gt_err(
                path,
                Some(line),
                format!("unknown image name {:?} (not in the database)", f[0]),
            )
        })?;
        listed.add(idx, f[0], path, line)?;
        out.push(idx);
    }
    Ok(out)
}

fn read_query_names(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let mut names: Vec<String> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, f) in fields(&text) {
        if f.len() != 1 {
            return Err(gt_err(
                path,
                Some(line),
                format!("expected one query name, found {} fields", f.len()),
            ));
        }
        if let Some(l0) = seen.insert(f[0].to_string(), line) {
            return Err(gt_err(
                path,
                Some(line),
                format!(
                    "duplicate entry: query {:?} is already listed at line {l0}",
                    f[0]
                ),
            ));
        }
        names.push(f[0].to_string());
    }
    if names.is_empty() {
        return Err(gt_err(path, None, "lists no queries"));
    }
    Ok(names)
}

/// Whether `dir` holds `*_query.txt` files.
fn has_query_files(dir: &Path) -> Result<bool> {
    Ok(read_dir_sorted(dir)?
        .iter()
        .any(|p| p.is_file() && query_name(p).is_some()))
}

/// `<q>` of a `<q>_query.txt` file.
fn query_name(p: &Path) -> Option<String> {
    p.file_name()?
        .to_str()?
        .strip_suffix("_query.txt")
        .map(String::from)
}

/// An Oxford-layout ground truth: `root` names it (and may hold `queries.txt`), `gt_dir`
/// holds the query files, `images` lists the database (else the files' own names do).
fn load_classic(root: &Path, gt_dir: &Path, images: Option<&Path>) -> Result<GroundTruth> {
    let queries_file = [root.join("queries.txt"), gt_dir.join("queries.txt")]
        .into_iter()
        .find(|p| p.is_file());
    let names = match &queries_file {
        Some(f) => read_query_names(f)?,
        None => {
            let names: Vec<String> = read_dir_sorted(gt_dir)?
                .iter()
                .filter_map(|p| query_name(p))
                .collect();
            if names.is_empty() {
                return Err(gt_err(gt_dir, None, "no <query>_query.txt files"));
            }
            names
        }
    };
    let images_dir = images.map(Path::to_path_buf);
    let images: Vec<String> = match images {
        Some(dir) => list_images(dir)?.into_iter().map(|(n, _)| n).collect(),
        None => mentioned_images(gt_dir, &names)?,
    };
    let image_index: HashMap<String, usize> = images
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();

    let mut queries = Vec::with_capacity(names.len());
    let mut query_index = HashMap::new();
    for name in names {
        let query = load_classic_query(gt_dir, &name, &image_index)?;
        query_index.insert(name, queries.len());
        queries.push(query);
    }
    Ok(GroundTruth {
        name: folder_name(root),
        source: root.to_path_buf(),
        database_listed: images_dir.is_some(),
        images_dir,
        kind: GroundTruthKind::Classic,
        images,
        image_index,
        queries,
        query_index,
    })
}

/// Every image name the files of `names` mention (query images without Oxford's prefix,
/// relevance lists, boxes), sorted: the database of a ground truth given without images.
fn mentioned_images(gt_dir: &Path, names: &[String]) -> Result<Vec<String>> {
    let mut all = std::collections::BTreeSet::new();
    for q in names {
        let qpath = gt_dir.join(format!("{q}_query.txt"));
        if let Some((_, f)) = fields(&read_text(&qpath)?).next() {
            let image = f[0].strip_prefix(OXFORD_QUERY_PREFIX).unwrap_or(f[0]);
            all.insert(image.to_string());
        }
        for list in ["good", "ok", "junk", "boxes"] {
            let p = gt_dir.join(format!("{q}_{list}.txt"));
            if list == "boxes" && !p.is_file() {
                continue;
            }
            for (_, f) in fields(&read_text(&p)?) {
                all.insert(f[0].to_string());
            }
        }
    }
    Ok(all.into_iter().collect())
}

fn folder_name(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canon.file_name().map_or_else(
        || canon.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn load_classic_query(
    gt_dir: &Path,
    name: &str,
    index: &HashMap<String, usize>,
) -> Result<GroundTruthQuery> {
    let qpath = gt_dir.join(format!("{name}_query.txt"));
    let text = read_text(&qpath)?;
    let mut lines = fields(&text);
    let Some((line, f)) = lines.next() else {
        return Err(gt_err(&qpath, None, "empty query file"));
    };
    if f.len() != 5 {
        return Err(gt_err(
            &qpath,
            Some(line),
            format!("expected \"<image> x1 y1 x2 y2\", found {} fields", f.len()),
        ));
    }
    if let Some((extra, _)) = lines.next() {
        return Err(gt_err(
            &qpath,
            Some(extra),
            "a query file holds one line (\"<image> x1 y1 x2 y2\")",
        ));
    }
    let image = if index.contains_key(f[0]) {
        f[0]
    } else {
        f[0].strip_prefix(OXFORD_QUERY_PREFIX).unwrap_or(f[0])
    };
    if !index.contains_key(image) {
        return Err(gt_err(
            &qpath,
            Some(line),
            format!("unknown image name {:?} (not in the database)", f[0]),
        ));
    }
    let bbox = parse_box(&qpath, line, &f[1..])?;

    let good_p = gt_dir.join(format!("{name}_good.txt"));
    let ok_p = gt_dir.join(format!("{name}_ok.txt"));
    let junk_p = gt_dir.join(format!("{name}_junk.txt"));
    let mut listed = Listed::new();
    let good = read_list(&good_p, index, &mut listed)?;
    let ok = read_list(&ok_p, index, &mut listed)?;
    let junk = read_list(&junk_p, index, &mut listed)?;

    let boxes_p = gt_dir.join(format!("{name}_boxes.txt"));
    let boxes = if boxes_p.is_file() {
        read_boxes(&boxes_p, index)?
    } else {
        Vec::new()
    };

    Ok(GroundTruthQuery {
        name: name.to_string(),
        image: image.to_string(),
        bbox: Some(bbox),
        relevance: Relevance::Classic { good, ok, junk },
        boxes,
    })
}

fn read_boxes(path: &Path, index: &HashMap<String, usize>) -> Result<Vec<(usize, BBox)>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for (line, f) in fields(&text) {
        if f.len() != 5 {
            return Err(gt_err(
                path,
                Some(line),
                format!("expected \"<image> x1 y1 x2 y2\", found {} fields", f.len()),
            ));
        }
        let idx = *index.get(f[0]).ok_or_else(|| {
            gt_err(
                path,
                Some(line),
                format!("unknown image name {:?} (not in the database)", f[0]),
            )
        })?;
        if let Some(l0) = seen.insert(idx, line) {
            return Err(gt_err(
                path,
                Some(line),
                format!("duplicate entry: {:?} already has a box at line {l0}", f[0]),
            ));
        }
        out.push((idx, parse_box(path, line, &f[1..])?));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Revisited pickles

fn load_pickle(path: &Path) -> Result<GroundTruth> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // decode_strings: Python 2 `str` objects (protocols 0–2) become text, like Python 3 ones.
    let value =
        serde_pickle::value_from_slice(&bytes, serde_pickle::DeOptions::new().decode_strings())
            .map_err(|e| {
                gt_err(
                    path,
                    None,
                    format!(
                        "not a readable pickle of plain Python values: {e} (the official gnd \
                     files hold dicts, lists, strings and numbers; numpy arrays are not read)"
                    ),
                )
            })?;
    let Value::Dict(top) = value else {
        return Err(gt_err(
            path,
            None,
            format!("expected a dict at the top, found {}", type_name(&value)),
        ));
    };
    let imlist = string_list(path, &top, "imlist")?;
    let qimlist = string_list(path, &top, "qimlist")?;
    let Some(gnd) = dict_get(&top, "gnd") else {
        return Err(gt_err(path, None, "no 'gnd' entry"));
    };
    let Value::List(gnd) = gnd else {
        return Err(gt_err(
            path,
            None,
            format!("'gnd' should be a list, found {}", type_name(gnd)),
        ));
    };
    if gnd.len() != qimlist.len() {
        return Err(gt_err(
            path,
            None,
            format!(
                "'gnd' has {} entries but 'qimlist' has {} queries",
                gnd.len(),
                qimlist.len()
            ),
        ));
    }
    if qimlist.is_empty() {
        return Err(gt_err(path, None, "'qimlist' is empty: no queries"));
    }
    let image_index = unique_index(path, &imlist, "imlist")?;
    let query_index = unique_index(path, &qimlist, "qimlist")?;

    let mut queries = Vec::with_capacity(gnd.len());
    let mut kind = None;
    for (i, entry) in gnd.iter().enumerate() {
        let Value::Dict(d) = entry else {
            return Err(gt_err(
                path,
                None,
                format!("gnd[{i}] should be a dict, found {}", type_name(entry)),
            ));
        };
        let n = imlist.len();
        let mut listed: HashMap<usize, &'static str> = HashMap::new();
        let mut list = |key: &'static str, required: bool| -> Result<Vec<usize>> {
            let Some(v) = dict_get(d, key) else {
                return if required {
                    Err(gt_err(path, None, format!("gnd[{i}] has no '{key}' list")))
                } else {
                    Ok(Vec::new())
                };
            };
            let items = index_list(path, v, &format!("gnd[{i}]['{key}']"), n)?;
            for &idx in &items {
                if let Some(k0) = listed.insert(idx, key) {
                    return Err(gt_err(
                        path,
                        None,
                        format!(
                            "duplicate entry: gnd[{i}]['{key}'] lists image {idx} ({:?}), \
                             already in '{k0}'",
                            imlist[idx]
                        ),
                    ));
                }
            }
            Ok(items)
        };
        let (relevance, this_kind) =
            if dict_get(d, "easy").is_some() || dict_get(d, "hard").is_some() {
                let easy = list("easy", true)?;
                let hard = list("hard", true)?;
                let junk = list("junk", true)?;
                (
                    Relevance::Revisited { easy, hard, junk },
                    GroundTruthKind::Revisited,
                )
            } else if dict_get(d, "ok").is_some() {
                let ok = list("ok", true)?;
                let junk = list("junk", false)?;
                (
                    Relevance::Classic {
                        good: ok,
                        ok: Vec::new(),
                        junk,
                    },
                    GroundTruthKind::Classic,
                )
            } else {
                return Err(gt_err(
                    path,
                    None,
                    format!("gnd[{i}] has neither 'easy'/'hard'/'junk' nor 'ok'/'junk' lists"),
                ));
            };
        if *kind.get_or_insert(this_kind) != this_kind {
            return Err(gt_err(
                path,
                None,
                format!("gnd[{i}] mixes revisited (easy/hard) and classic (ok) entries"),
            ));
        }
        let bbox = match dict_get(d, "bbx") {
            None | Some(Value::None) => None,
            Some(v) => Some(pickle_box(path, v, &format!("gnd[{i}]['bbx']"))?),
        };
        queries.push(GroundTruthQuery {
            name: qimlist[i].clone(),
            image: qimlist[i].clone(),
            bbox,
            relevance,
            boxes: Vec::new(),
        });
    }
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    Ok(GroundTruth {
        name: stem.strip_prefix("gnd_").unwrap_or(&stem).to_string(),
        source: path.to_path_buf(),
        images_dir: None,
        database_listed: true,
        // gnd is non-empty (qimlist is), so the loop set it.
        kind: kind.unwrap_or(GroundTruthKind::Revisited),
        images: imlist,
        image_index,
        queries,
        query_index,
    })
}

fn dict_get<'a>(
    d: &'a std::collections::BTreeMap<HashableValue, Value>,
    key: &str,
) -> Option<&'a Value> {
    d.get(&HashableValue::String(key.to_string()))
        .or_else(|| d.get(&HashableValue::Bytes(key.as_bytes().to_vec())))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::I64(_) | Value::Int(_) => "an int",
        Value::F64(_) => "a float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a str",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Set(_) | Value::FrozenSet(_) => "a set",
        Value::Dict(_) => "a dict",
    }
}

fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::List(x) | Value::Tuple(x) => Some(x),
        _ => None,
    }
}

fn string_list(
    path: &Path,
    top: &std::collections::BTreeMap<HashableValue, Value>,
    key: &str,
) -> Result<Vec<String>> {
    let v = dict_get(top, key).ok_or_else(|| gt_err(path, None, format!("no '{key}' entry")))?;
    let list = items(v).ok_or_else(|| {
        gt_err(
            path,
            None,
            format!("'{key}' should be a list of names, found {}", type_name(v)),
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, s)| match s {
            Value::String(s) => Ok(s.clone()),
            Value::Bytes(b) => String::from_utf8(b.clone())
                .map_err(|_| gt_err(path, None, format!("{key}[{i}] is not UTF-8"))),
            other => Err(gt_err(
                path,
                None,
                format!("{key}[{i}] should be a str, found {}", type_name(other)),
            )),
        })
        .collect()
}

fn unique_index(path: &Path, names: &[String], key: &str) -> Result<HashMap<String, usize>> {
    let mut index = HashMap::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = index.insert(n.clone(), i) {
            return Err(gt_err(
                path,
                None,
                format!("duplicate entry: {key}[{i}] = {n:?} repeats {key}[{j}]"),
            ));
        }
    }
    Ok(index)
}

fn index_list(path: &Path, v: &Value, what: &str, n: usize) -> Result<Vec<usize>> {
    let list = items(v).ok_or_else(|| {
        gt_err(
            path,
            None,
            format!(
                "{what} should be a list of image indices, found {}",
                type_name(v)
            ),
        )
    })?;
    let mut out = Vec::with_capacity(list.len());
    for (j, x) in list.iter().enumerate() {
        let Value::I64(k) = x else {
            return Err(gt_err(
                path,
                None,
                format!("{what}[{j}] should be an int, found {}", type_name(x)),
            ));
        };
        if *k < 0 || *k as u64 >= n as u64 {
            return Err(gt_err(
                path,
                None,
                format!("{what}[{j}] = {k} is not an index into imlist ({n} images)"),
            ));
        }
        out.push(*k as usize);
    }
    Ok(out)
}

fn pickle_box(path: &Path, v: &Value, what: &str) -> Result<BBox> {
    let list = items(v)
        .filter(|l| l.len() == 4)
        .ok_or_else(|| gt_err(path, None, format!("{what} should be [x1, y1, x2, y2]")))?;
    let mut c = [0f32; 4];
    for (slot, x) in c.iter_mut().zip(list) {
        *slot = match x {
            Value::I64(k) => *k as f32,
            Value::F64(f) => *f as f32,
            other => {
                return Err(gt_err(
                    path,
                    None,
                    format!("{what} holds {}, not a number", type_name(other)),
                ))
            }
        };
    }
    if !c.iter().all(|x| x.is_finite()) {
        return Err(gt_err(
            path,
            None,
            format!("{what} has a non-finite coordinate"),
        ));
    }
    if c[2] < c[0] || c[3] < c[1] {
        return Err(gt_err(
            path,
            None,
            format!("{what} = {c:?} has x2 < x1 or y2 < y1"),
        ));
    }
    BBox::new(c[0], c[1], c[2], c[3]).map_err(|e| gt_err(path, None, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setups_take_the_right_lists() {
        let r = Relevance::Revisited {
            easy: vec![1, 2],
            hard: vec![3],
            junk: vec![4],
        };
        assert_eq!(r.revisited(Setup::Easy), Some((vec![1, 2], vec![4, 3])));
        assert_eq!(r.revisited(Setup::Medium), Some((vec![1, 2, 3], vec![4])));
        assert_eq!(r.revisited(Setup::Hard), Some((vec![3], vec![4, 1, 2])));
        assert_eq!(r.standard(), (vec![1, 2, 3], vec![4]));
        let c = Relevance::Classic {
            good: vec![0],
            ok: vec![5],
            junk: vec![6],
        };
        assert_eq!(c.standard(), (vec![0, 5], vec![6]));
        assert_eq!(c.revisited(Setup::Easy), None);
    }

    #[test]
    fn box_lines_are_checked() {
        let p = Path::new("x_query.txt");
        assert!(parse_box(p, 1, &["1", "2", "3", "4"]).is_ok());
        let e = parse_box(p, 3, &["5", "0", "1", "1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("x_query.txt:3") && e.contains("x2 < x1"), "{e}");
        let e = parse_box(p, 2, &["a", "0", "1", "1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x_query.txt:2") && e.contains("not a number"),
            "{e}"
        );
        assert!(parse_box(p, 1, &["nan", "0", "1", "1"]).is_err());
    }
}
