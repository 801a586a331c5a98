"""deepfactor: embedded image search built on deep feature factorization.

A CNN layer's activations ``A`` (cells × channels) are factorized, ``A ≈ U·V``: the columns of
``U`` are heatmaps ("where"), the rows of ``V`` concept vectors ("what"). deepfactor turns
that decomposition into image descriptors, index files, region queries and localization.

This package is the Rust library compiled as a Python extension (``deepfactor._native``):
numpy arrays in and out, the GIL released during long work, library errors raised as
:class:`Error` (and ``ValueError`` / ``FileNotFoundError`` where natural) with the library's
messages.

- :func:`nmf`, :func:`nmf_joint`, :func:`nmf_transform`, :func:`nmf_fit_v` — the factorization;
- :class:`Backbone` — images (paths, PIL images, uint8 arrays) → activations (H×W×C float32);
- :func:`describe` — activations → a descriptor (NMF V+U, NMF V, CroW, MAC, SPoC, GeM, R-MAC);
- :class:`Index` — build, open, add, search (hits with boxes and heatmaps);
- :class:`GroundTruth`, :func:`evaluate` — the official retrieval protocols on rankings;
- :func:`coseg` — co-segmentation and co-localization of an image set (masks, boxes, heatmaps,
  the scores record of ``deepfactor coseg --json``);
- :func:`compress`, :func:`probe_measure` — the memorization probes: a probe's rank-K
  compression, and a checkpoint's measurement (the record of ``deepfactor probe measure --json``).
"""

from ._native import (
    Backbone,
    Error,
    FileNotFound,
    GroundTruth,
    Hit,
    Index,
    InvalidArgument,
    __version__,
    compress,
    coseg,
    describe,
    evaluate,
    nmf,
    nmf_fit_v,
    nmf_joint,
    nmf_transform,
    probe_measure,
)

__all__ = [
    "Backbone",
    "Error",
    "FileNotFound",
    "GroundTruth",
    "Hit",
    "Index",
    "InvalidArgument",
    "__version__",
    "compress",
    "coseg",
    "describe",
    "evaluate",
    "nmf",
    "nmf_fit_v",
    "nmf_joint",
    "nmf_transform",
    "probe_measure",
]
