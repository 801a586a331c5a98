//! The Python extension module `deepfactor._native` (cargo feature `python`; `pip install .`
//! builds it with maturin from `pyproject.toml`). The Python package around it is
//! `src/python/deepfactor/`: it re-exports everything from here and carries the type stubs.
//!
//! Every function is a thin wrapper over the public library API: arrays come in as numpy
//! `float32`/`uint8` and are copied once into the library's row-major [`crate::linalg::Matrix`]
//! (or image); results go back as numpy arrays that take over the library's buffers without a
//! copy. Long work (the network, NMF, index builds, searches) runs with the GIL released.
//! Library errors become Python exceptions with the same message: [`errors`] holds the
//! mapping.

use pyo3::prelude::*;

mod arrays;
mod backbone;
mod coseg;
mod errors;
mod eval;
mod index;
mod nmf;
mod probe;
mod progress;

/// The module `deepfactor._native`.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    nmf::register(m)?;
    backbone::register(m)?;
    index::register(m)?;
    eval::register(m)?;
    coseg::register(m)?;
    probe::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
