//! `deepfactor.Backbone` (images → activations) and `deepfactor.describe` (activations →
//! descriptor).

use super::arrays::{activations, activations_array, image_input, vector_array, ImageInput};
use super::errors::{invalid, OrRaise};
use super::progress::Progress;
use crate::backbone::{BackboneBuilder, BackboneKind, Padding, Prepared, WeightSource};
use crate::descriptor::{DescriptorConfig, DescriptorKind};
use crate::{BBox, Result};
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use std::path::PathBuf;

/// Images run through the network per progress report.
const CHUNK: usize = 8;

/// A pretrained CNN cut at a named layer: images in, activations out.
///
/// ``Backbone(name="efficientnet-lite0", layer=None, weights=None, size=512, max_side=None,
/// reflect=False)``: ``name`` is one of ``efficientnet-lite0``, ``vgg16``, ``vgg19``,
/// ``resnet50``; ``layer`` defaults to the backbone's last convolutional layer; ``weights`` is
/// a ``.safetensors`` or ``.pth`` file (default: the backbone's default weights, as the CLI);
/// ``size`` is the shorter side of the network input; ``reflect`` pads with reflection
/// (VGG, ResNet).
#[pyclass(module = "deepfactor", name = "Backbone", frozen)]
pub(super) struct PyBackbone {
    pub(super) inner: crate::backbone::Backbone,
}

/// A box `(x1, y1, x2, y2)` in pixels.
pub(super) fn bbox(b: Option<(f32, f32, f32, f32)>) -> PyResult<Option<BBox>> {
    b.map(|(x1, y1, x2, y2)| BBox::new(x1, y1, x2, y2))
        .transpose()
        .or_raise()
}

/// The backbone these options name (the CLI's `--backbone`, `--layer`, `--weights`,
/// `--size`, `--max-side`, `--reflect`).
pub(super) fn build(
    name: &str,
    layer: Option<String>,
    weights: Option<PathBuf>,
    size: u32,
    max_side: Option<u32>,
    reflect: bool,
) -> Result<crate::backbone::Backbone> {
    let kind = BackboneKind::from_name(name)?;
    let mut b = BackboneBuilder::new(kind)
        .weights(weights.map_or(WeightSource::Default, WeightSource::File))
        .input_size(size)
        .max_side(max_side)
        .padding(if reflect {
            Padding::Reflect
        } else {
            Padding::Zero
        });
    if let Some(l) = layer {
        b = b.layer(l);
    }
    b.build()
}

#[pymethods]
impl PyBackbone {
    #[new]
    #[pyo3(signature = (name = "efficientnet-lite0", layer = None, weights = None, size = 512,
                        max_side = None, reflect = false))]
    fn new(
        py: Python<'_>,
        name: &str,
        layer: Option<String>,
        weights: Option<PathBuf>,
        size: u32,
        max_side: Option<u32>,
        reflect: bool,
    ) -> PyResult<Self> {
        let inner = py
            .detach(|| build(name, layer, weights, size, max_side, reflect))
            .or_raise()?;
        Ok(PyBackbone { inner })
    }

    /// The backbone's name, e.g. ``"efficientnet-lite0"``.
    #[getter]
    fn name(&self) -> &'static str {
        self.inner.kind().name()
    }

    /// The layer whose activations come out.
    #[getter]
    fn layer(&self) -> String {
        self.inner.layer().name.clone()
    }

    /// Channels of that layer.
    #[getter]
    fn channels(&self) -> usize {
        self.inner.layer().channels
    }

    /// Stride of that layer relative to the network input, in pixels.
    #[getter]
    fn stride(&self) -> usize {
        self.inner.layer().stride
    }

    /// The weights file used.
    #[getter]
    fn weights(&self) -> PathBuf {
        self.inner.weights_path().to_path_buf()
    }

    /// Fingerprint of the weights and preprocessing (what index recipes record).
    #[getter]
    fn fingerprint(&self) -> &str {
        self.inner.fingerprint()
    }

    /// features(images, progress=None) -> ndarray | list[ndarray]
    ///
    /// The layer's activations of one image, or of each image of a list: float32 arrays of
    /// rows × columns × channels (the feature map's cells; ``stride`` pixels of network input
    /// each). An image is a path, a PIL image, or an H×W×3 uint8 RGB array. Files are
    /// decoded as the CLI decodes them (EXIF orientation applied). ``progress(done, total)``
    /// is called as images are done. The GIL is released while the network runs.
    #[pyo3(signature = (images, progress = None))]
    fn features<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let progress = Progress::new(progress)?;
        let single = !(images.is_instance_of::<PyList>() || images.is_instance_of::<PyTuple>());
        let inputs: Vec<ImageInput> = if single {
            vec![image_input(images)?]
        } else {
            images
                .try_iter()?
                .map(|i| image_input(&i?))
                .collect::<PyResult<_>>()?
        };
        let total = inputs.len();
        let backbone = &self.inner;
        let acts = py
            .detach(|| -> Result<Vec<_>> {
                let mut out = Vec::with_capacity(total);
                for chunk in inputs.chunks(CHUNK) {
                    let prepared = chunk
                        .iter()
                        .map(|i| match i {
                            ImageInput::Path(p) => backbone.prepare_path(p),
                            ImageInput::Pixels(img) => backbone.preprocess().prepare(img),
                        })
                        .collect::<Result<Vec<Prepared>>>()?;
                    out.extend(backbone.extract_batch(&prepared)?);
                    progress.report(out.len(), total);
                }
                Ok(out)
            })
            .or_raise()?;
        progress.finish()?;
        let mut arrays = acts
            .into_iter()
            .map(|a| activations_array(py, a).map(Bound::into_any))
            .collect::<PyResult<Vec<_>>>()?;
        if single {
            arrays.pop().ok_or_else(|| invalid("no image was given"))
        } else {
            Ok(PyList::new(py, arrays)?.into_any())
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Backbone({:?}, layer={:?}, channels={}, stride={})",
            self.name(),
            self.layer(),
            self.channels(),
            self.stride()
        )
    }
}

/// describe(features, descriptor="nmf-vu", k=8, crow=True, box=None, image_size=None) -> ndarray
///
/// The descriptor of activations (rows × columns × channels float32, as
/// :meth:`Backbone.features` gives): a unit-length float32 vector, compared by dot product.
/// ``descriptor`` is one of ``nmf-vu``, ``nmf-v``, ``crow``, ``mac``, ``spoc``, ``gem``,
/// ``rmac``; ``k`` is the NMF rank; ``crow=False`` turns CroW channel weighting off. With
/// ``box=(x1, y1, x2, y2)`` the descriptor is the region's (NMF kinds: the factors whose
/// heatmap has more than 75% of its mass in the box); the box is in the pixels of an image of
/// ``image_size=(width, height)`` (default: one pixel per cell).
#[pyfunction]
#[pyo3(signature = (features, descriptor = "nmf-vu", k = 8, crow = true, r#box = None,
                    image_size = None))]
fn describe<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    descriptor: &str,
    k: usize,
    crow: bool,
    r#box: Option<(f32, f32, f32, f32)>,
    image_size: Option<(u32, u32)>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let acts = activations(features, image_size)?;
    let kind: DescriptorKind = descriptor.parse().or_raise()?;
    let describer = DescriptorConfig::new(kind)
        .k(k)
        .crow(crow)
        .build()
        .or_raise()?;
    let region = bbox(r#box)?;
    let d = py
        .detach(|| match &region {
            Some(b) => describer.describe_region(&acts, b),
            None => describer.describe(&acts),
        })
        .or_raise()?;
    Ok(vector_array(py, d.vector))
}

/// Adds `Backbone` and `describe` to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBackbone>()?;
    m.add_function(wrap_pyfunction!(describe, m)?)?;
    Ok(())
}
