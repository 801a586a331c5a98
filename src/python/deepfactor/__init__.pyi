"""Type stubs of the deepfactor package (the extension module deepfactor._native)."""

import os
from typing import Any, Callable, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

PathLike = Union[str, "os.PathLike[str]"]
#: A path, a PIL image, or an H×W×3 uint8 RGB array.
ImageLike = Union[PathLike, npt.NDArray[np.uint8], Any]
Box = Tuple[float, float, float, float]
Progress = Callable[[int, int], object]
F32 = npt.NDArray[np.float32]

class Error(Exception):
    """Base class of every error deepfactor raises; the message names the file and the problem."""

class InvalidArgument(Error, ValueError):
    """Bad input: a wrong dtype, shape or value (NaN, negative for NMF), an unknown option."""

class FileNotFound(Error, FileNotFoundError):
    """A file or folder that does not exist."""

def nmf(
    a: F32,
    k: int,
    init: Literal["nndsvda", "nndsvd", "random"] = "nndsvda",
    max_iter: int = 200,
    tol: float = 0.0,
    seed: int = 0,
) -> Tuple[F32, F32]:
    """A ≈ U·V by multiplicative updates: U is rows × k, V is k × columns (float32)."""

def nmf_joint(
    arrays: Sequence[F32],
    k: int,
    init: Literal["nndsvda", "nndsvd", "random"] = "nndsvda",
    max_iter: int = 200,
    tol: float = 0.0,
    seed: int = 0,
) -> Tuple[list[F32], F32]:
    """One factorization of the matrices stacked by rows: each one's U, and the shared V."""

def nmf_transform(a: F32, v: F32, max_iter: int = 200, tol: float = 0.0) -> F32:
    """U for fixed concepts V (k × columns)."""

def nmf_fit_v(a: F32, u: F32, max_iter: int = 200, tol: float = 0.0) -> F32:
    """V for fixed heatmaps U (rows × k)."""

def describe(
    features: F32,
    descriptor: Literal["nmf-vu", "nmf-v", "crow", "mac", "spoc", "gem", "rmac"] = "nmf-vu",
    k: int = 8,
    crow: bool = True,
    box: Optional[Box] = None,
    image_size: Optional[Tuple[int, int]] = None,
) -> F32:
    """The unit-length descriptor of H×W×C activations (of the region `box`, if given)."""

class Backbone:
    """A pretrained CNN cut at a named layer: images in, activations out."""

    def __init__(
        self,
        name: Literal["efficientnet-lite0", "vgg16", "vgg19", "resnet50"] = "efficientnet-lite0",
        layer: Optional[str] = None,
        weights: Optional[PathLike] = None,
        size: int = 512,
        max_side: Optional[int] = None,
        reflect: bool = False,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def layer(self) -> str: ...
    @property
    def channels(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def weights(self) -> os.PathLike[str]: ...
    @property
    def fingerprint(self) -> str: ...
    @overload
    def features(self, images: Union[list[ImageLike], Tuple[ImageLike, ...]], progress: Optional[Progress] = None) -> list[F32]: ...
    @overload
    def features(self, images: ImageLike, progress: Optional[Progress] = None) -> F32:
        """Activations, rows × columns × channels float32, of one image or of each of a list."""

class Hit:
    """One search result."""

    @property
    def rank(self) -> int: ...
    @property
    def id(self) -> int: ...
    @property
    def path(self) -> "os.PathLike[str]": ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> Optional[Box]:
        """Where the query's region is in this image (pixels), with localization."""
    @property
    def heatmap(self) -> Optional[F32]:
        """The region's heatmap over this image's cells (rows × columns, max 1)."""
    @property
    def grid(self) -> Optional[dict[str, int]]:
        """rows, cols, image_width, image_height of the heatmap."""
    @property
    def strength(self) -> Optional[float]: ...
    @property
    def global_score(self) -> Optional[float]:
        """Factor-level search: the global descriptor's cosine."""
    @property
    def factor_score(self) -> Optional[float]:
        """Factor-level search: the image's aggregated factor score."""
    @property
    def factor_matches(self) -> list[tuple[int, int, float]]:
        """(query_factor, image_factor, cosine) per query factor, with factor-level search."""
    @property
    def crop_score(self) -> Optional[float]:
        """Crop check: the cut-out's standardized score here, when the check ran."""

class Index:
    """An index directory, opened for searching."""

    @staticmethod
    def build(
        photos_dir: PathLike,
        path: PathLike,
        descriptor: Literal["nmf-vu", "nmf-v", "crow", "mac", "spoc", "gem", "rmac"] = "nmf-vu",
        backbone: Literal["efficientnet-lite0", "vgg16", "vgg19", "resnet50"] = "efficientnet-lite0",
        layer: Optional[str] = None,
        weights: Optional[PathLike] = None,
        size: int = 512,
        max_side: Optional[int] = None,
        reflect: bool = False,
        k: int = 8,
        crow: bool = True,
        whitening: Optional[PathLike] = None,
        remove_missing: bool = False,
        commit_every: int = 256,
        progress: Optional[Progress] = None,
    ) -> "Index":
        """Indexes (or updates the index of) a folder of photos."""
    @staticmethod
    def open(path: PathLike, weights: Optional[PathLike] = None) -> "Index": ...
    def add(self, paths: Sequence[PathLike], progress: Optional[Progress] = None) -> dict[str, Any]: ...
    def search(
        self,
        image: ImageLike,
        box: Optional[Box] = None,
        box_mode: Literal["filter", "crop"] = "filter",
        k: int = 10,
        qe: int = 0,
        localize: Optional[Literal["joint", "stored", "none"]] = None,
        localize_top: Optional[int] = None,
        exact: bool = False,
        min_score: Optional[float] = None,
        factors: Literal["auto", "off", "on"] = "auto",
        factor_source: Literal["query", "with-crop"] = "query",
        crop_check: Literal["auto", "off", "always"] = "auto",
    ) -> list[Hit]: ...
    def verify(self) -> dict[str, Any]: ...
    @property
    def path(self) -> "os.PathLike[str]": ...
    @property
    def recipe(self) -> dict[str, Any]: ...
    @property
    def report(self) -> Optional[dict[str, Any]]: ...
    def __len__(self) -> int: ...

class GroundTruth:
    """A retrieval ground truth (Oxford layout, query folder, or revisited pickle)."""

    def __init__(self, path: PathLike, images: Optional[PathLike] = None) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> Literal["classic", "revisited"]: ...
    @property
    def images_dir(self) -> Optional["os.PathLike[str]"]: ...
    @property
    def images(self) -> list[str]: ...
    @property
    def queries(self) -> list[dict[str, Any]]: ...
    def __len__(self) -> int: ...

def evaluate(
    ground_truth: Union[GroundTruth, PathLike],
    rankings: Union[dict[str, list[str]], PathLike],
    protocol: Optional[str] = None,
    distractors: Optional[bool] = None,
) -> dict[str, Any]:
    """Scores rankings; returns the results record (`map` in percent, `per_query`, …)."""

def coseg(
    images: Union[PathLike, Sequence[PathLike]],
    k: Optional[int] = None,
    method: Literal["auto", "border", "single"] = "auto",
    layer: Optional[str] = None,
    backbone: str = "efficientnet-lite0",
    weights: Optional[PathLike] = None,
    size: int = 512,
    reflect: bool = False,
    masks: Optional[PathLike] = None,
    normalise: Literal["image", "set"] = "image",
    threshold: str = "otsu",
    refine: Literal["colour", "none"] = "colour",
    thesis: bool = False,
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """Co-segments a folder or list of images as `deepfactor coseg` does.

    Returns ``{"images": [...], "record": {...}, "skipped": [(path, reason), ...]}``: per image
    ``path``, ``name``, ``mask`` (uint8 H×W, 1 = object), ``box`` (pixels or None),
    ``heatmap`` (float32 rows × columns of cells) and ``grid`` (rows, cols, image width,
    image height); ``record`` is the JSON of ``deepfactor coseg --json`` (scores when
    ``masks`` names a folder of ``<stem>.png`` ground truth).
    """

def compress(
    a: F32,
    k: int,
    method: Literal["nmf", "pca", "kmeans", "random", "nmf-residual", "pca-residual"] = "nmf",
    seed: int = 0,
) -> F32:
    """A probe's rank-k compression of `a` (rows × columns float32), same shape; exact
    (returned unchanged) where the method's rank-k approximation is."""

def probe_measure(
    checkpoint: PathLike,
    data: PathLike = "/usr/share/datasets/fashion-mnist",
    probes: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    k: Optional[Sequence[int]] = None,
    batch_size: int = 50,
    batches: int = 10,
    seed: int = 0,
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """A trained checkpoint's memorization probes: one record of
    `deepfactor probe measure --json` (curves and AuC per probe, batch kind and layer set)."""
