//! `deepfactor.Index` (build, open, add, search) and `deepfactor.Hit`.

use super::arrays::{image_input, matrix_array, ImageInput};
use super::backbone::{bbox, build as build_backbone};
use super::errors::{invalid, OrRaise};
use super::progress::Progress;
use crate::backbone::WeightSource;
use crate::descriptor::{DescriptorConfig, DescriptorKind, Whitening};
use crate::index::{CropCheck, Index, IndexOptions, IndexWriter, UpdateOptions, UpdateProgress};
use crate::linalg::Matrix;
use crate::localize::Localizer;
use crate::pipeline::Pipeline;
use crate::query::{BoxMode, Expansion, FactorMode, FactorSource, Localize, Query, Searcher};
use crate::{Error, Result};
use candle_core::Device;
use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A serialisable value as a Python object (through JSON).
fn to_python<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| invalid(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// One search result.
#[pyclass(module = "deepfactor", name = "Hit", frozen)]
pub(super) struct PyHit {
    /// Rank, from 1.
    #[pyo3(get)]
    rank: usize,
    /// Id of the image in the index.
    #[pyo3(get)]
    id: u64,
    /// The image file.
    #[pyo3(get)]
    path: PathBuf,
    /// Cosine similarity to the (expanded) query.
    #[pyo3(get)]
    score: f32,
    /// Where the query's region is in this image, ``(x1, y1, x2, y2)`` in its pixels; ``None``
    /// without localization (or when the region's heatmap is zero here).
    #[pyo3(get, name = "box")]
    bbox: Option<(f32, f32, f32, f32)>,
    /// The region's heatmap over this image's feature-map cells (rows × columns float32,
    /// maximum 1), with localization; else ``None``.
    #[pyo3(get)]
    heatmap: Option<Py<PyArray2<f32>>>,
    /// The heatmap's grid: ``{"rows", "cols", "image_width", "image_height"}`` (cell ``(r, c)``
    /// covers ``image_width/cols`` × ``image_height/rows`` pixels); ``None`` without a heatmap.
    #[pyo3(get)]
    grid: Option<Py<PyDict>>,
    /// Joint localization: the region's heatmap peak here relative to the query's (1 for the
    /// query itself, small where the region is probably absent); else ``None``.
    #[pyo3(get)]
    strength: Option<f32>,
    /// Factor-level search: the global descriptor's cosine; ``None`` when the global
    /// descriptor alone ranked (then ``score`` is that cosine).
    #[pyo3(get)]
    global_score: Option<f32>,
    /// Factor-level search: the image's aggregated factor score; else ``None``.
    #[pyo3(get)]
    factor_score: Option<f32>,
    /// Factor-level search: for each query factor its best-matching factor here, as
    /// ``(query_factor, image_factor, cosine)``; empty without factor-level search.
    #[pyo3(get)]
    factor_matches: Vec<(usize, usize, f32)>,
    /// Crop check: the cut-out's standardized score for this image when the check ran; else
    /// ``None``.
    #[pyo3(get)]
    crop_score: Option<f32>,
}

#[pymethods]
impl PyHit {
    fn __repr__(&self) -> String {
        format!(
            "Hit(rank={}, id={}, score={:.4}, path={:?}, box={:?})",
            self.rank,
            self.id,
            self.score,
            self.path.display().to_string(),
            self.bbox
        )
    }
}

/// How descriptors of a new index are made: the CLI's `index build` options.
struct RecipeOptions {
    backbone: String,
    layer: Option<String>,
    weights: Option<PathBuf>,
    size: u32,
    max_side: Option<u32>,
    reflect: bool,
    descriptor: String,
    k: usize,
    crow: bool,
    whitening: Option<PathBuf>,
}

impl RecipeOptions {
    fn weight_source(&self) -> WeightSource {
        self.weights
            .clone()
            .map_or(WeightSource::Default, WeightSource::File)
    }

    /// The pipeline these options make.
    fn pipeline(&self) -> Result<Pipeline> {
        let backbone = build_backbone(
            &self.backbone,
            self.layer.clone(),
            self.weights.clone(),
            self.size,
            self.max_side,
            self.reflect,
        )?;
        let kind: DescriptorKind = self.descriptor.parse()?;
        let mut cfg = DescriptorConfig::new(kind).k(self.k).crow(self.crow);
        if let Some(p) = &self.whitening {
            cfg = cfg.whitening(Arc::new(Whitening::load(p)?));
        }
        Ok(Pipeline::new(backbone, cfg.build()?))
    }

    /// The pipeline for the index at `dir`: the options' for a new index; for an existing one
    /// its own (with the whitening kept beside it), after checking the options agree with it.
    fn pipeline_for(&self, dir: &Path) -> Result<Pipeline> {
        let asked = self.pipeline()?;
        if !Index::exists(dir) {
            return Ok(asked);
        }
        let index = Index::open(dir)?;
        index.recipe().check_compatible(asked.recipe())?;
        Pipeline::for_index(&index, self.weight_source(), Device::Cpu)
    }
}

/// An index directory, opened for searching; build or open one with :meth:`Index.build` and
/// :meth:`Index.open`. Safe to share between threads: searches run with the GIL released.
#[pyclass(module = "deepfactor", name = "Index", frozen)]
pub(super) struct PyIndex {
    dir: PathBuf,
    weights: WeightSource,
    searcher: RwLock<Searcher>,
    /// What the last build or add did.
    report: RwLock<Option<crate::index::UpdateReport>>,
}

impl PyIndex {
    fn open_dir(dir: &Path, weights: WeightSource) -> Result<PyIndex> {
        let index = Index::open(dir)?;
        let pipeline = Pipeline::for_index(&index, weights.clone(), Device::Cpu)?;
        let searcher = Searcher::new(index, pipeline, Localizer::builder().build()?)?;
        Ok(PyIndex {
            dir: dir.to_path_buf(),
            weights,
            searcher: RwLock::new(searcher),
            report: RwLock::new(None),
        })
    }

    fn searcher(&self) -> PyResult<std::sync::RwLockReadGuard<'_, Searcher>> {
        self.searcher
            .read()
            .map_err(|_| invalid("the index was left inconsistent by a failed call"))
    }
}

/// Reports an update's progress to a Python callback.
fn forward(progress: &Progress) -> impl FnMut(&UpdateProgress) + '_ {
    move |p: &UpdateProgress| progress.report(p.done, p.total)
}

#[pymethods]
impl PyIndex {
    /// Index.build(photos_dir, path, descriptor="nmf-vu", backbone="efficientnet-lite0",
    /// layer=None, weights=None, size=512, max_side=None, reflect=False, k=8, crow=True,
    /// whitening=None, remove_missing=False, commit_every=256, progress=None) -> Index
    ///
    /// Indexes a folder of photos (recursively) into the index directory ``path``, as
    /// ``deepfactor index build`` does: a new index takes the options; an existing one is
    /// updated (new and changed files added, unchanged ones skipped, an interrupted build
    /// resumed) with its own recipe, and options that contradict it are refused. Unreadable
    /// images are skipped and listed in :attr:`Index.report`. ``progress(done, total)`` is
    /// called as files are looked at. The GIL is released while it runs.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (photos_dir, path, descriptor = "nmf-vu", backbone = "efficientnet-lite0",
                        layer = None, weights = None, size = 512, max_side = None,
                        reflect = false, k = 8, crow = true, whitening = None,
                        remove_missing = false, commit_every = 256, progress = None))]
    fn build(
        py: Python<'_>,
        photos_dir: PathBuf,
        path: PathBuf,
        descriptor: &str,
        backbone: &str,
        layer: Option<String>,
        weights: Option<PathBuf>,
        size: u32,
        max_side: Option<u32>,
        reflect: bool,
        k: usize,
        crow: bool,
        whitening: Option<PathBuf>,
        remove_missing: bool,
        commit_every: usize,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<PyIndex> {
        let progress = Progress::new(progress)?;
        let options = RecipeOptions {
            backbone: backbone.to_string(),
            layer,
            weights,
            size,
            max_side,
            reflect,
            descriptor: descriptor.to_string(),
            k,
            crow,
            whitening,
        };
        let (ix, report) = py
            .detach(|| -> Result<_> {
                if !photos_dir.is_dir() {
                    return Err(Error::io(
                        &photos_dir,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not a directory of photos",
                        ),
                    ));
                }
                let pipeline = options.pipeline_for(&path)?;
                let mut writer = IndexWriter::open_or_create_with_whitening(
                    &path,
                    pipeline.recipe().clone(),
                    IndexOptions::new(),
                    pipeline.describer().whitening(),
                )?;
                let update = UpdateOptions::new()
                    .remove_missing(remove_missing)
                    .commit_every(commit_every);
                let report = crate::index::update_from_folder(
                    &mut writer,
                    &photos_dir,
                    &pipeline,
                    &update,
                    &mut forward(&progress),
                )?;
                drop(writer);
                let index = Index::open(&path)?;
                let searcher = Searcher::new(index, pipeline, Localizer::builder().build()?)?;
                Ok((searcher, report))
            })
            .or_raise()?;
        progress.finish()?;
        Ok(PyIndex {
            dir: path,
            weights: options.weight_source(),
            searcher: RwLock::new(ix),
            report: RwLock::new(Some(report)),
        })
    }

    /// Index.open(path, weights=None) -> Index
    ///
    /// Opens an index directory for searching, with the pipeline it was built with
    /// (``weights``: the backbone weights file, if not the default; it must be the one the
    /// index was built with). A damaged index raises :class:`deepfactor.Error` naming the file
    /// and the problem.
    #[staticmethod]
    #[pyo3(signature = (path, weights = None))]
    fn open(py: Python<'_>, path: PathBuf, weights: Option<PathBuf>) -> PyResult<PyIndex> {
        let weights = weights.map_or(WeightSource::Default, WeightSource::File);
        py.detach(|| PyIndex::open_dir(&path, weights)).or_raise()
    }

    /// add(paths, progress=None) -> dict
    ///
    /// Adds image files to the index with its recipe and commits (``deepfactor index add``);
    /// returns the update report (counts, failures, warnings) and reopens the index so that
    /// searches see the new images.
    #[pyo3(signature = (paths, progress = None))]
    fn add<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let progress = Progress::new(progress)?;
        let report = py.detach(|| -> PyResult<_> {
            let mut searcher = self
                .searcher
                .write()
                .map_err(|_| invalid("the index was left inconsistent by a failed call"))?;
            let report = (|| -> Result<_> {
                let mut writer = IndexWriter::open(&self.dir)?;
                let report = crate::index::add_files(
                    &mut writer,
                    &paths,
                    searcher.pipeline(),
                    &UpdateOptions::new(),
                    &mut forward(&progress),
                )?;
                drop(writer);
                let index = Index::open(&self.dir)?;
                let pipeline = Pipeline::for_index(&index, self.weights.clone(), Device::Cpu)?;
                *searcher = Searcher::new(index, pipeline, Localizer::builder().build()?)?;
                Ok(report)
            })()
            .or_raise()?;
            Ok(report)
        })?;
        progress.finish()?;
        let out = to_python(py, &report)?;
        if let Ok(mut r) = self.report.write() {
            *r = Some(report);
        }
        Ok(out)
    }

    /// search(image, box=None, box_mode="filter", k=10, qe=0, localize=None,
    /// localize_top=None, exact=False, min_score=None, factors="auto",
    /// factor_source="query", crop_check="auto") -> list[Hit]
    ///
    /// The ``k`` best images for ``image`` (a path, a PIL image or an H×W×3 uint8 array), or
    /// for the region ``box=(x1, y1, x2, y2)`` of it (in its pixels): ``box_mode="filter"``
    /// keeps the query's factors whose heatmap has more than 75% of its mass in the box,
    /// ``"crop"`` describes the cut-out (a path only). ``qe=n`` averages the query with its
    /// first ``n`` hits (query expansion). ``localize="joint"`` factorizes the query with its
    /// hits and gives each localized hit a box and a heatmap, ``"stored"`` does it from the
    /// factors the index keeps (no network run on the hits); ``localize_top`` hits are
    /// localized (default: all ``k``). ``exact=True`` scans every descriptor instead of the
    /// graph. ``factors`` is the factor-level search (``"auto"``: region queries on an index
    /// with factor vectors; ``"off"``; ``"on"``: every query), ``factor_source="with-crop"``
    /// also matches the cut-out's factors, ``crop_check`` describes the cut-out too where the
    /// kept factors explain little of the region (``"auto"``), never (``"off"``) or always
    /// (``"always"``) — the CLI's ``--factors``, ``--factor-source`` and ``--crop-check``.
    /// The GIL is released while it runs.
    #[pyo3(signature = (image, r#box = None, box_mode = "filter", k = 10, qe = 0,
                        localize = None, localize_top = None, exact = false, min_score = None,
                        factors = "auto", factor_source = "query", crop_check = "auto"))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        r#box: Option<(f32, f32, f32, f32)>,
        box_mode: &str,
        k: usize,
        qe: usize,
        localize: Option<&str>,
        localize_top: Option<usize>,
        exact: bool,
        min_score: Option<f32>,
        factors: &str,
        factor_source: &str,
        crop_check: &str,
    ) -> PyResult<Vec<PyHit>> {
        let input = image_input(image)?;
        let mode: BoxMode = box_mode.parse().or_raise()?;
        let factors: FactorMode = factors.parse().or_raise()?;
        let factor_source: FactorSource = factor_source.parse().or_raise()?;
        let crop_check = CropCheck::new().mode(crop_check.parse().or_raise()?);
        let top = localize_top.unwrap_or(k);
        let localize = match localize {
            None | Some("none") => Localize::None,
            Some("joint") => Localize::Joint(top),
            Some("stored") => Localize::Stored(top),
            Some(other) => {
                return Err(invalid(format!(
                    "localize {other:?}: expected \"joint\", \"stored\" or None"
                )))
            }
        };
        let region = bbox(r#box)?;
        let searcher = self.searcher()?;
        let results = py
            .detach(|| -> Result<_> {
                let mut q = match &input {
                    ImageInput::Path(p) => Query::new(p),
                    ImageInput::Pixels(img) => {
                        let backbone = searcher.pipeline().backbone();
                        Query::from_activations(
                            backbone.extract(&backbone.preprocess().prepare(img)?)?,
                        )
                    }
                };
                q = q
                    .box_mode(mode)
                    .top_k(k)
                    .localize(localize)
                    .exact(exact)
                    .factor_mode(factors)
                    .factor_source(factor_source)
                    .crop_check(crop_check);
                if let Some(b) = region {
                    q = q.region(b);
                }
                if qe > 0 {
                    q = q.expansion(Expansion::Average(qe));
                }
                if let Some(s) = min_score {
                    q = q.min_score(s);
                }
                searcher.search(&q)
            })
            .or_raise()?;
        results
            .hits
            .into_iter()
            .map(|h| {
                let (bbox, heatmap, grid, strength) = match h.location {
                    Some(loc) => {
                        let g = *loc.heatmap.grid();
                        let grid = PyDict::new(py);
                        grid.set_item("rows", g.rows)?;
                        grid.set_item("cols", g.cols)?;
                        grid.set_item("image_width", g.image_width)?;
                        grid.set_item("image_height", g.image_height)?;
                        let values = Matrix::from_vec(g.rows, g.cols, loc.heatmap.into_values())
                            .or_raise()?;
                        (
                            loc.bbox.map(|b| (b.x1, b.y1, b.x2, b.y2)),
                            Some(matrix_array(py, values)?.unbind()),
                            Some(grid.unbind()),
                            loc.strength,
                        )
                    }
                    None => (None, None, None, None),
                };
                Ok(PyHit {
                    rank: h.rank,
                    id: h.id,
                    path: h.path,
                    score: h.score,
                    bbox,
                    heatmap,
                    grid,
                    strength,
                    global_score: h.global_score,
                    factor_score: h.factor_score,
                    factor_matches: h
                        .factor_matches
                        .iter()
                        .map(|m| (m.query_factor, m.image_factor, m.score))
                        .collect(),
                    crop_score: h.crop_score,
                })
            })
            .collect()
    }

    /// verify() -> dict
    ///
    /// Checks every file of the index (structure, contents, checksums), as
    /// ``deepfactor index verify``; raises :class:`deepfactor.Error` naming the file and
    /// section at the first problem.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let searcher = self.searcher()?;
        let report = py.detach(|| searcher.index().verify()).or_raise()?;
        to_python(py, &report)
    }

    /// The index directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The recipe the index was built with (backbone, weights fingerprint, layer, input size,
    /// descriptor and its parameters, whitening), as a dict.
    #[getter]
    fn recipe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, self.searcher()?.index().recipe())
    }

    /// What the last :meth:`build` or :meth:`add` of this object did (counts, failures,
    /// warnings), or ``None``.
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let r = self
            .report
            .read()
            .map_err(|_| invalid("the index was left inconsistent by a failed call"))?;
        r.as_ref().map(|r| to_python(py, r)).transpose()
    }

    /// Number of live images.
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.searcher()?.index().len())
    }

    fn __repr__(&self) -> PyResult<String> {
        let s = self.searcher()?;
        Ok(format!(
            "Index({:?}, {} images, {})",
            self.dir.display().to_string(),
            s.index().len(),
            s.index().recipe().describe()
        ))
    }
}

/// Adds `Index` and `Hit` to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyIndex>()?;
    m.add_class::<PyHit>()?;
    Ok(())
}
