//! `deepfactor.nmf` and its joint and fixed-factor twins.

use super::arrays::{matrix, matrix_array};
use super::errors::{invalid, OrRaise};
use crate::nmf::{Init, Nmf};
use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// A float32 matrix handed to Python.
type Array<'py> = Bound<'py, PyArray2<f32>>;

/// The configured NMF.
fn configure(k: usize, init: &str, seed: u64, max_iter: usize, tol: f64) -> PyResult<Nmf> {
    let init = match init {
        "nndsvda" => Init::Nndsvda,
        "nndsvd" => Init::Nndsvd,
        "random" => Init::Random { seed },
        other => {
            return Err(invalid(format!(
                "init {other:?}: expected \"nndsvda\", \"nndsvd\" or \"random\""
            )))
        }
    };
    Nmf::new(k)
        .init(init)
        .max_iter(max_iter)
        .tol(tol)
        .build()
        .or_raise()
}

/// nmf(A, k, init="nndsvda", max_iter=200, tol=0.0, seed=0) -> (U, V)
///
/// Non-negative matrix factorization ``A ≈ U·V`` by Lee–Seung multiplicative updates (the
/// Frobenius loss, as scikit-learn's ``NMF(solver="mu")``). ``A`` is a 2-D float32 array
/// (rows × columns, finite, non-negative), ``U`` is rows × k, ``V`` is k × columns, both
/// float32. ``init`` is ``"nndsvda"``, ``"nndsvd"`` or ``"random"`` (seeded by ``seed``);
/// ``tol=0`` runs all ``max_iter`` iterations. The GIL is released while it runs.
#[pyfunction]
#[pyo3(signature = (a, k, init = "nndsvda", max_iter = 200, tol = 0.0, seed = 0))]
fn nmf<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    k: usize,
    init: &str,
    max_iter: usize,
    tol: f64,
    seed: u64,
) -> PyResult<(Array<'py>, Array<'py>)> {
    let a = matrix(a, "A")?;
    let nmf = configure(k, init, seed, max_iter, tol)?;
    let f = py.detach(|| nmf.fit(&a)).or_raise()?;
    Ok((matrix_array(py, f.u)?, matrix_array(py, f.v)?))
}

/// nmf_joint(arrays, k, init="nndsvda", max_iter=200, tol=0.0, seed=0) -> (list[U], V)
///
/// One factorization of several matrices stacked by rows (all with the same number of
/// columns): shared concepts ``V`` (k × columns) and each matrix's own ``U`` (its rows × k),
/// in the order given. This is how deepfactor co-localizes a region across images.
#[pyfunction]
#[pyo3(signature = (arrays, k, init = "nndsvda", max_iter = 200, tol = 0.0, seed = 0))]
fn nmf_joint<'py>(
    py: Python<'py>,
    arrays: &Bound<'py, PyAny>,
    k: usize,
    init: &str,
    max_iter: usize,
    tol: f64,
    seed: u64,
) -> PyResult<(Bound<'py, PyList>, Array<'py>)> {
    let mats = arrays
        .try_iter()
        .map_err(|_| invalid("arrays must be a sequence of 2-D float32 arrays"))?
        .enumerate()
        .map(|(i, a)| matrix(&a?, &format!("arrays[{i}]")))
        .collect::<PyResult<Vec<_>>>()?;
    let nmf = configure(k, init, seed, max_iter, tol)?;
    let refs: Vec<_> = mats.iter().collect();
    let j = py.detach(|| nmf.fit_joint(&refs)).or_raise()?;
    let us = j
        .u_per_image
        .into_iter()
        .map(|u| matrix_array(py, u))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((PyList::new(py, us)?, matrix_array(py, j.factorization.v)?))
}

/// Which factor a fixed-factor fit holds fixed.
#[derive(Clone, Copy, PartialEq)]
enum Fixed {
    /// `V` fixed, `U` fitted ([`Nmf::transform`]).
    V,
    /// `U` fixed, `V` fitted ([`Nmf::fit_v`]).
    U,
}

/// The factor fitted for `a` with the other one, `fixed`, held.
fn fit_fixed<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    fixed: &Bound<'py, PyAny>,
    which: Fixed,
    max_iter: usize,
    tol: f64,
) -> PyResult<Array<'py>> {
    let a = matrix(a, "A")?;
    let (k, f) = match which {
        Fixed::V => matrix(fixed, "V").map(|v| (v.rows(), v))?,
        Fixed::U => matrix(fixed, "U").map(|u| (u.cols(), u))?,
    };
    let nmf = configure(k.max(1), "nndsvda", 0, max_iter, tol)?;
    let fitted = py
        .detach(|| match which {
            Fixed::V => nmf.transform(&a, &f).map(|r| r.u),
            Fixed::U => nmf.fit_v(&a, &f).map(|r| r.v),
        })
        .or_raise()?;
    matrix_array(py, fitted)
}

/// nmf_transform(A, V, max_iter=200, tol=0.0) -> U
///
/// ``U`` for fixed concepts ``V`` (k × columns): projects ``A`` onto stored concept vectors,
/// as scikit-learn's ``NMF.transform`` (``U`` starts at ``sqrt(mean(A)/k)``, only ``U`` is
/// updated).
#[pyfunction]
#[pyo3(signature = (a, v, max_iter = 200, tol = 0.0))]
fn nmf_transform<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
    max_iter: usize,
    tol: f64,
) -> PyResult<Array<'py>> {
    fit_fixed(py, a, v, Fixed::V, max_iter, tol)
}

/// nmf_fit_v(A, U, max_iter=200, tol=0.0) -> V
///
/// ``V`` for fixed heatmaps ``U`` (rows × k), the mirror image of :func:`nmf_transform`.
#[pyfunction]
#[pyo3(signature = (a, u, max_iter = 200, tol = 0.0))]
fn nmf_fit_v<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    u: &Bound<'py, PyAny>,
    max_iter: usize,
    tol: f64,
) -> PyResult<Array<'py>> {
    fit_fixed(py, a, u, Fixed::U, max_iter, tol)
}

/// Adds the NMF functions to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(nmf, m)?)?;
    m.add_function(wrap_pyfunction!(nmf_joint, m)?)?;
    m.add_function(wrap_pyfunction!(nmf_transform, m)?)?;
    m.add_function(wrap_pyfunction!(nmf_fit_v, m)?)?;
    Ok(())
}
