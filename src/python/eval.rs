//! `deepfactor.GroundTruth` and `deepfactor.evaluate`: scoring rankings with the official
//! protocols.

use super::errors::{invalid, OrRaise};
use crate::eval::{
    evaluate_with, GroundTruth, GroundTruthKind, Protocol, Provenance, Rankings, ResultsRecord,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;

/// A retrieval ground truth: ``GroundTruth(path, images=None)`` loads an Oxford-layout folder
/// (``gt/`` and ``jpg/``), the folder of ``*_query.txt`` files itself (``images``: the
/// folder of the database images), or a revisited ``gnd_*.pkl``.
#[pyclass(module = "deepfactor", name = "GroundTruth", frozen)]
pub(super) struct PyGroundTruth {
    inner: GroundTruth,
}

#[pymethods]
impl PyGroundTruth {
    #[new]
    #[pyo3(signature = (path, images = None))]
    fn new(py: Python<'_>, path: PathBuf, images: Option<PathBuf>) -> PyResult<Self> {
        let inner = py
            .detach(|| GroundTruth::load_with_images(&path, images.as_deref()))
            .or_raise()?;
        Ok(PyGroundTruth { inner })
    }

    /// The data set's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// ``"classic"`` (good/ok/junk lists) or ``"revisited"`` (easy/hard/junk).
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner.kind() {
            GroundTruthKind::Classic => "classic",
            GroundTruthKind::Revisited => "revisited",
        }
    }

    /// The folder of the database images, when the ground truth knows it.
    #[getter]
    fn images_dir(&self) -> Option<PathBuf> {
        self.inner.images_dir().map(PathBuf::from)
    }

    /// The database image names (file stems), in ground-truth order.
    #[getter]
    fn images(&self) -> Vec<String> {
        self.inner.images().to_vec()
    }

    /// The queries, in order: dicts with ``name``, ``image`` (the query image's name) and
    /// ``box`` (``(x1, y1, x2, y2)`` in its pixels, or ``None``).
    #[getter]
    fn queries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for q in self.inner.queries() {
            let d = PyDict::new(py);
            d.set_item("name", &q.name)?;
            d.set_item("image", &q.image)?;
            d.set_item("box", q.bbox.map(|b| (b.x1, b.y1, b.x2, b.y2)))?;
            list.append(d)?;
        }
        Ok(list)
    }

    fn __len__(&self) -> usize {
        self.inner.queries().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "GroundTruth({:?}, {} queries, {} images)",
            self.inner.name(),
            self.inner.queries().len(),
            self.inner.images().len()
        )
    }
}

/// evaluate(ground_truth, rankings, protocol=None, distractors=None) -> dict
///
/// Scores ranked lists against a ground truth, as ``deepfactor eval --ranking`` does.
/// ``ground_truth`` is a :class:`GroundTruth` or a path to load one from; ``rankings`` maps
/// each query name to its ranked database image names (file stems), or is the path of a
/// ranking file (one line per query: its name, then the ranked names). ``protocol`` is
/// ``"classic"`` (Oxford/Paris mAP), ``"revisited"`` (Easy/Medium/Hard) or ``"map@K"``
/// (default: revisited for revisited ground truth, classic otherwise). With
/// ``distractors=True`` ranked images the ground truth does not list count as irrelevant
/// (default: when it does not list its database). Returns the results record: ``map`` (in
/// percent), ``per_query``, ``protocol``, ``dataset``, … — the JSON ``deepfactor eval
/// --json`` prints.
#[pyfunction]
#[pyo3(signature = (ground_truth, rankings, protocol = None, distractors = None))]
fn evaluate<'py>(
    py: Python<'py>,
    ground_truth: &Bound<'py, PyAny>,
    rankings: &Bound<'py, PyAny>,
    protocol: Option<&str>,
    distractors: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let loaded;
    let gt = match ground_truth.cast::<PyGroundTruth>() {
        Ok(g) => &g.get().inner,
        Err(_) => {
            let path: PathBuf = ground_truth
                .extract()
                .map_err(|_| invalid("ground_truth must be a deepfactor.GroundTruth or a path"))?;
            loaded = GroundTruth::load(&path).or_raise()?;
            &loaded
        }
    };
    let rankings = if let Ok(d) = rankings.cast::<PyDict>() {
        let mut r = Rankings::new();
        for (q, images) in d.iter() {
            let q: String = q
                .extract()
                .map_err(|_| invalid("rankings: query names must be strings"))?;
            let images: Vec<String> = images
                .extract()
                .map_err(|_| invalid(format!("rankings[{q:?}]: must be a list of image names")))?;
            r.insert(q, images).or_raise()?;
        }
        r
    } else {
        let path: PathBuf = rankings.extract().map_err(|_| {
            invalid("rankings must be a dict of query name → ranked image names, or a path")
        })?;
        Rankings::load(&path).or_raise()?
    };
    let protocol: Protocol = match protocol {
        Some(p) => p.parse().or_raise()?,
        None => match gt.kind() {
            GroundTruthKind::Revisited => Protocol::Revisited,
            GroundTruthKind::Classic => Protocol::Classic,
        },
    };
    let distractors = distractors.unwrap_or(!gt.lists_database());
    let evaluation = py
        .detach(|| evaluate_with(gt, &rankings, protocol, distractors))
        .or_raise()?;
    let json = ResultsRecord::new(&evaluation, Provenance::default()).to_json();
    py.import("json")?.call_method1("loads", (json,))
}

/// Adds `GroundTruth` and `evaluate` to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyGroundTruth>()?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    Ok(())
}
