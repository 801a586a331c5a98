"""deepfactor.compress and deepfactor.probe_measure (the memorization probes)."""

import json
import pathlib

import numpy as np
import pytest

import deepfactor
from conftest import cli

FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")


def activations(rows=12, cols=9, rank=4, seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((rows, rank)) @ rng.random((rank, cols))).astype(np.float32)


def test_compress_full_rank_gives_the_matrix_back():
    a = activations()
    for method in ("nmf", "pca"):
        out = deepfactor.compress(a, min(a.shape), method)
        assert out.dtype == np.float32 and out.shape == a.shape
        np.testing.assert_allclose(out, a, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(deepfactor.compress(a, a.shape[1], "random"), a)
    np.testing.assert_array_equal(deepfactor.compress(a, a.shape[0], "kmeans"), a)
    # The residual of an exact compression is zero.
    assert np.abs(deepfactor.compress(a, min(a.shape), "pca-residual")).max() < 1e-6


def test_compress_below_full_rank():
    a = activations(rank=4)
    # The matrix has rank 4: rank-4 PCA and NMF reproduce it, rank 2 cannot.
    u, s, vt = np.linalg.svd(a.astype(np.float64), full_matrices=False)
    for k in (2, 4):
        want = a @ vt[:k].T @ vt[:k]  # the thesis' uncentred projection
        got = deepfactor.compress(a, k, "pca")
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(a).max())
    # Multiplicative updates converge slowly: 200 iterations leave about 1% at the true rank.
    nmf4 = deepfactor.compress(a, 4, "nmf")
    nmf2 = deepfactor.compress(a, 2, "nmf")
    assert np.linalg.norm(nmf4 - a) / np.linalg.norm(a) < 0.03
    assert np.linalg.norm(nmf4 - a) < np.linalg.norm(nmf2 - a)
    # No rank-2 approximation beats truncated SVD (Eckart–Young).
    assert np.linalg.norm(nmf2 - a) >= np.sqrt((s[2:] ** 2).sum()) * (1 - 1e-4)
    resid = deepfactor.compress(a, 2, "nmf-residual")
    np.testing.assert_allclose(resid, a - nmf2, atol=1e-5)
    kept = deepfactor.compress(a, 3, "random", seed=7)
    zero_cols = np.flatnonzero(~kept.any(axis=0))
    assert len(zero_cols) == a.shape[1] - 3
    keep = np.setdiff1d(np.arange(a.shape[1]), zero_cols)
    np.testing.assert_array_equal(kept[:, keep], a[:, keep])
    km = deepfactor.compress(a, 3, "kmeans", seed=1)
    assert len({tuple(r) for r in km}) <= 3


def test_compress_bad_input():
    a = activations()
    with pytest.raises(deepfactor.InvalidArgument, match="unknown probe"):
        deepfactor.compress(a, 2, "svd")
    with pytest.raises(deepfactor.InvalidArgument, match="residual"):
        deepfactor.compress(a, 2, "kmeans-residual")
    with pytest.raises(deepfactor.InvalidArgument, match="at least 1"):
        deepfactor.compress(a, 0, "pca")
    with pytest.raises(ValueError):
        deepfactor.compress(-a, 2, "nmf")
    with pytest.raises(deepfactor.InvalidArgument, match="float32"):
        deepfactor.compress(a.astype(np.float64), 2, "pca")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    if not (FASHION / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is absent ({FASHION}; Debian package dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("probe")
    cli("probe", "train", "--p", "0", "--train-subset", "200", "--max-epochs", "2",
        "--out", str(out))
    found = sorted(out.glob("*.safetensors"))
    assert len(found) == 1, found
    return found[0]


def test_probe_measure_matches_cli(checkpoint):
    opts = dict(probes=["nmf", "random"], k=[1, 4, 16], batch_size=10, batches=2, seed=5)
    got = deepfactor.probe_measure(checkpoint, **opts)
    want = json.loads(cli("probe", "measure", str(checkpoint), "--probes", "nmf,random",
                          "--k", "1,4,16", "--probe-batch-size", "10", "--probe-batches", "2", "--probe-seed", "5", "--json"))
    assert len(want) == 1
    volatile = ("measure_seconds", "measure_cpu_seconds", "probe_seconds")
    strip = lambda r: {k: v for k, v in r.items() if k not in volatile}
    assert strip(got) == strip(want[0])
    assert {c["probe"]["method"] for c in got["curves"]} == {"nmf", "random"}
    assert set(got["auc"]) >= {"nmf", "random"}
    with pytest.raises(deepfactor.InvalidArgument, match="unknown probe"):
        deepfactor.probe_measure(checkpoint, probes=["svd"])
    with pytest.raises(deepfactor.Error):
        deepfactor.probe_measure(checkpoint.with_suffix(".missing"))
