//! Library errors as Python exceptions. Every exception raised for a library error is a
//! `deepfactor.Error`; the ones about bad input are also `ValueError`, the ones about a
//! missing file also `FileNotFoundError`, so both `except deepfactor.Error` and the
//! built-in classes catch them. The message is the library's, unchanged.

use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

pyo3::create_exception!(
    deepfactor,
    Error,
    PyException,
    "Base class of every error deepfactor raises; the message names the file and the problem."
);

static INVALID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `type(name, (deepfactor.Error, base), {...})`: a subclass of both.
fn subclass<'py>(
    py: Python<'py>,
    name: &str,
    base: Bound<'py, PyType>,
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__doc__", doc)?;
    ns.set_item("__module__", "deepfactor")?;
    let bases = PyTuple::new(py, [py.get_type::<Error>(), base])?;
    let t = py
        .import("builtins")?
        .getattr("type")?
        .call1((name, bases, ns))?;
    Ok(t.cast_into::<PyType>()?)
}

/// Adds `Error`, `InvalidArgument` and `FileNotFound` to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let invalid = subclass(
        py,
        "InvalidArgument",
        py.get_type::<PyValueError>(),
        "Bad input: a wrong dtype, shape or value (NaN, negative for NMF), an unknown option.",
    )?;
    let not_found = subclass(
        py,
        "FileNotFound",
        py.get_type::<PyFileNotFoundError>(),
        "A file or folder that does not exist.",
    )?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("InvalidArgument", &invalid)?;
    m.add("FileNotFound", &not_found)?;
    let _ = INVALID.set(py, invalid.unbind());
    let _ = NOT_FOUND.set(py, not_found.unbind());
    Ok(())
}

/// The class for `e`.
fn class_of<'py>(py: Python<'py>, e: &crate::Error) -> Bound<'py, PyType> {
    let lock = match e {
        crate::Error::InvalidArgument(_) | crate::Error::Numeric(_) => &INVALID,
        crate::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            &NOT_FOUND
        }
        _ => return py.get_type::<Error>(),
    };
    match lock.get(py) {
        Some(t) => t.bind(py).clone(),
        // Only before the module finished initialising.
        None => py.get_type::<Error>(),
    }
}

/// A library error as a Python exception with the same message.
pub(super) fn to_py(e: crate::Error) -> PyErr {
    Python::attach(|py| PyErr::from_type(class_of(py, &e), e.to_string()))
}

/// A bad-argument exception (`deepfactor.InvalidArgument`, a `ValueError`).
pub(super) fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(crate::Error::invalid(msg))
}

/// `Result` → `PyResult`, mapping the error with [`to_py`].
pub(super) trait OrRaise<T> {
    /// The value, or the library error as a Python exception.
    fn or_raise(self) -> PyResult<T>;
}

impl<T> OrRaise<T> for crate::Result<T> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
