//! numpy arrays in and out: `float32` matrices, `H×W×C` activations, `uint8` images, and
//! anything that names an image (a path, a PIL image, a `uint8` array).

use super::errors::{invalid, OrRaise};
use crate::linalg::Matrix;
use crate::{Activations, CellGrid};
use numpy::ndarray::{Array1, Array2, Array3};
use numpy::{PyArray1, PyArray2, PyArray3, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray};
use numpy::{PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::path::PathBuf;

/// A shape as Python writes it: `(3,)`, `(20, 10)`.
fn shape(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    match parts.len() {
        1 => format!("({},)", parts[0]),
        _ => format!("({})", parts.join(", ")),
    }
}

/// `obj` as a numpy array of element type `T` and `ndim` dimensions, or a `ValueError`
/// saying what `what` must be and what it got.
fn checked<'a, 'py, T: numpy::Element>(
    obj: &'a Bound<'py, PyAny>,
    ndim: usize,
    what: &str,
    shape_hint: &str,
) -> PyResult<&'a Bound<'py, PyUntypedArray>> {
    let py = obj.py();
    let want = numpy::dtype::<T>(py);
    let Ok(arr) = obj.cast::<PyUntypedArray>() else {
        let kind = obj.get_type().name()?;
        return Err(invalid(format!(
            "{what} must be a numpy array of {} ({shape_hint}), got {kind}",
            want.str()?
        )));
    };
    if !arr.dtype().is_equiv_to(&want) || arr.ndim() != ndim {
        return Err(invalid(format!(
            "{what} must be a {ndim}-D {} array ({shape_hint}), got {} of shape {}",
            want.str()?,
            arr.dtype().str()?,
            shape(arr.shape())
        )));
    }
    Ok(arr)
}

/// A 2-D `float32` array as a [`Matrix`]: one copy into row-major order (any strides).
pub(super) fn matrix(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Matrix> {
    checked::<f32>(obj, 2, what, "rows × columns")?;
    let arr: PyReadonlyArray2<'_, f32> = obj.extract()?;
    let view = arr.as_array();
    let (rows, cols) = view.dim();
    let data = match view.as_slice() {
        Some(s) => s.to_vec(),
        None => view.iter().copied().collect(),
    };
    Matrix::from_vec(rows, cols, data).or_raise()
}

/// A [`Matrix`] as a 2-D `float32` array, taking over its buffer.
pub(super) fn matrix_array(py: Python<'_>, m: Matrix) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let shape = m.shape();
    let a = Array2::from_shape_vec(shape, m.into_vec())
        .map_err(|e| invalid(format!("matrix of {shape:?}: {e}")))?;
    Ok(PyArray2::from_owned_array(py, a))
}

/// A vector as a 1-D `float32` array, taking over its buffer.
pub(super) fn vector_array(py: Python<'_>, v: Vec<f32>) -> Bound<'_, PyArray1<f32>> {
    PyArray1::from_owned_array(py, Array1::from_vec(v))
}

/// Activations as an `H×W×C` `float32` array (rows × columns of cells × channels), taking
/// over their buffer: the library's cells × channels matrix is that array, row-major.
pub(super) fn activations_array(
    py: Python<'_>,
    a: Activations,
) -> PyResult<Bound<'_, PyArray3<f32>>> {
    let (rows, cols) = (a.grid.rows, a.grid.cols);
    let c = a.data.cols();
    let arr = Array3::from_shape_vec((rows, cols, c), a.data.into_vec())
        .map_err(|e| invalid(format!("activations of {rows}×{cols}×{c}: {e}")))?;
    Ok(PyArray3::from_owned_array(py, arr))
}

/// An `H×W×C` `float32` array as [`Activations`] of an image of `image_size` pixels (width,
/// height; default: one pixel per cell).
pub(super) fn activations(
    obj: &Bound<'_, PyAny>,
    image_size: Option<(u32, u32)>,
) -> PyResult<Activations> {
    checked::<f32>(obj, 3, "features", "rows × columns × channels")?;
    let arr: PyReadonlyArray3<'_, f32> = obj.extract()?;
    let view = arr.as_array();
    let (rows, cols, c) = view.dim();
    let data = match view.as_slice() {
        Some(s) => s.to_vec(),
        None => view.iter().copied().collect(),
    };
    let (image_width, image_height) = image_size.unwrap_or((cols as u32, rows as u32));
    if rows == 0 || cols == 0 || c == 0 || image_width == 0 || image_height == 0 {
        return Err(invalid(format!(
            "features of {rows}×{cols}×{c} for an image of {image_width}×{image_height}: \
             every size must be at least 1"
        )));
    }
    Ok(Activations {
        grid: CellGrid {
            rows,
            cols,
            image_width,
            image_height,
        },
        data: Matrix::from_vec(rows * cols, c, data).or_raise()?,
    })
}

/// Something that names an image.
pub(super) enum ImageInput {
    /// An image file.
    Path(PathBuf),
    /// Decoded pixels (from a `uint8` array or a PIL image).
    Pixels(image::RgbImage),
}

/// `obj` as an image: a `str`/`os.PathLike` path, a PIL image (converted to RGB), or an
/// `H×W×3` `uint8` array.
pub(super) fn image_input(obj: &Bound<'_, PyAny>) -> PyResult<ImageInput> {
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(ImageInput::Path(p));
    }
    let py = obj.py();
    let pixels = if obj.cast::<PyUntypedArray>().is_ok() {
        obj.clone()
    } else if obj.hasattr("convert")? && obj.hasattr("mode")? {
        // A PIL image: its RGB pixels through numpy's array interface.
        let rgb = obj.call_method1("convert", ("RGB",))?;
        py.import("numpy")?.call_method1("asarray", (rgb,))?
    } else {
        let kind = obj.get_type().name()?;
        return Err(invalid(format!(
            "an image must be a path, a PIL image or an H×W×3 uint8 array, got {kind}"
        )));
    };
    let arr = checked::<u8>(&pixels, 3, "an image array", "height × width × 3")?;
    let dims = arr.shape().to_vec();
    if dims[2] != 3 {
        return Err(invalid(format!(
            "an image array must be height × width × 3 (RGB), got shape {}",
            shape(&dims)
        )));
    }
    let (h, w) = (dims[0], dims[1]);
    let max = crate::images::MAX_IMAGE_SIDE as usize;
    if h == 0 || w == 0 || h > max || w > max {
        return Err(invalid(format!(
            "an image array of {w}×{h} pixels: each side must be between 1 and {max}"
        )));
    }
    let typed = pixels.cast::<numpy::PyArray3<u8>>()?.readonly();
    let view = typed.as_array();
    let data = match view.as_slice() {
        Some(s) => s.to_vec(),
        None => view.iter().copied().collect(),
    };
    image::RgbImage::from_raw(w as u32, h as u32, data)
        .map(ImageInput::Pixels)
        .ok_or_else(|| invalid(format!("an image array of {w}×{h}×3 has the wrong length")))
}
