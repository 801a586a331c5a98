"""deepfactor.nmf and its joint and fixed-factor twins: equal to the Rust library bit for bit,
within 1% of scikit-learn's MU, and clear exceptions for bad input."""

import json
import threading

import numpy as np
import pytest

import deepfactor
from conftest import FIXTURES, fixture_matrix, reference


def rel_error(a, u, v):
    a64 = a.astype(np.float64)
    return np.linalg.norm(a64 - u.astype(np.float64) @ v.astype(np.float64)) / np.linalg.norm(a64)


@pytest.mark.parametrize(
    "k,init,max_iter",
    [(8, "nndsvda", 200), (3, "nndsvd", 50), (5, "random:7", 100)],
)
def test_equals_the_rust_library_exactly(tmp_path, k, init, max_iter):
    reference("nmf", str(FIXTURES / "nmf" / "sklearn.json"), str(k), init, str(max_iter), "0", str(tmp_path))
    want_u = np.load(tmp_path / "u.npy")
    want_v = np.load(tmp_path / "v.npy")
    a = fixture_matrix()
    name, _, seed = init.partition(":")
    u, v = deepfactor.nmf(a, k, init=name, max_iter=max_iter, tol=0.0, seed=int(seed or 0))
    assert u.dtype == np.float32 and v.dtype == np.float32
    assert u.shape == (a.shape[0], k) and v.shape == (k, a.shape[1])
    np.testing.assert_array_equal(u, want_u)
    np.testing.assert_array_equal(v, want_v)


def test_agrees_with_the_committed_scikit_learn_figures():
    d = json.loads((FIXTURES / "nmf" / "sklearn.json").read_text())
    a = fixture_matrix()
    checked = 0
    for case in d["cases"]:
        if case["init"] not in ("nndsvda", "nndsvd"):
            continue
        u, v = deepfactor.nmf(a, case["k"], init=case["init"], max_iter=case["max_iter"], tol=case["tol"])
        ours = rel_error(a, u, v)
        assert abs(ours - case["rel_error"]) <= 0.01 * case["rel_error"], (case, ours)
        checked += 1
    assert checked > 0


def test_agrees_with_scikit_learn_mu():
    sklearn = pytest.importorskip("sklearn.decomposition", reason="scikit-learn is not installed")
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(120, 48)), 0).astype(np.float32)
    for k in (2, 6, 10):
        model = sklearn.NMF(n_components=k, init="nndsvda", solver="mu", max_iter=200, tol=0.0)
        w = model.fit_transform(a.astype(np.float64))
        theirs = rel_error(a, w, model.components_)
        u, v = deepfactor.nmf(a, k, max_iter=200, tol=0.0)
        ours = rel_error(a, u, v)
        assert abs(ours - theirs) <= 0.01 * theirs, (k, ours, theirs)


def test_any_strides_give_the_same_factors():
    a = fixture_matrix()
    fortran = np.asfortranarray(a)
    strided = np.zeros((a.shape[0], a.shape[1] * 2), np.float32)
    strided[:, ::2] = a
    u, v = deepfactor.nmf(a, 4, max_iter=30)
    for other in (fortran, strided[:, ::2]):
        u2, v2 = deepfactor.nmf(other, 4, max_iter=30)
        np.testing.assert_array_equal(u, u2)
        np.testing.assert_array_equal(v, v2)


def test_joint_splits_u_per_matrix_and_shares_v():
    a = fixture_matrix()
    parts = [a[:30], a[30:70], a[70:]]
    us, v = deepfactor.nmf_joint(parts, 5, max_iter=60)
    u_all, v_all = deepfactor.nmf(np.ascontiguousarray(a), 5, max_iter=60)
    assert [u.shape for u in us] == [(30, 5), (40, 5), (a.shape[0] - 70, 5)]
    np.testing.assert_array_equal(np.vstack(us), u_all)
    np.testing.assert_array_equal(v, v_all)


def test_fixed_factor_fits_recover_a_product():
    rng = np.random.default_rng(1)
    u0 = rng.random((50, 3)).astype(np.float32)
    v0 = rng.random((3, 20)).astype(np.float32)
    a = (u0 @ v0).astype(np.float32)
    u = deepfactor.nmf_transform(a, v0, max_iter=500)
    assert u.shape == (50, 3)
    assert rel_error(a, u, v0) < 0.02
    v = deepfactor.nmf_fit_v(a, u0, max_iter=500)
    assert v.shape == (3, 20)
    assert rel_error(a, u0, v) < 0.02


def test_runs_in_threads_with_the_gil_released():
    a = fixture_matrix()
    want = deepfactor.nmf(a, 6, max_iter=100)
    results = [None] * 4

    def work(i):
        results[i] = deepfactor.nmf(a, 6, max_iter=100)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for u, v in results:
        np.testing.assert_array_equal(u, want[0])
        np.testing.assert_array_equal(v, want[1])


@pytest.mark.parametrize(
    "a,message",
    [
        (np.ones((4, 3), np.float64), "must be a 2-D float32 array"),
        (np.ones(12, np.float32), "must be a 2-D float32 array"),
        ([[1.0, 2.0], [3.0, 4.0]], "must be a numpy array"),
        (np.array([[1.0, -2.0], [3.0, 4.0]], np.float32), "negative"),
        (np.array([[1.0, np.nan], [3.0, 4.0]], np.float32), "NaN"),
        (np.zeros((0, 3), np.float32), "empty|0×3|rows"),
    ],
)
def test_bad_input_raises_value_error(a, message):
    with pytest.raises(ValueError, match=message) as e:
        deepfactor.nmf(a, 2)
    assert isinstance(e.value, deepfactor.Error)


def test_bad_options_raise_value_error():
    a = fixture_matrix()
    with pytest.raises(ValueError, match="rank K must be at least 1"):
        deepfactor.nmf(a, 0)
    with pytest.raises(ValueError, match="init"):
        deepfactor.nmf(a, 2, init="svd")
    with pytest.raises(ValueError, match="tolerance"):
        deepfactor.nmf(a, 2, tol=-1.0)
    with pytest.raises(ValueError, match="channels"):
        deepfactor.nmf_joint([a, a[:, :10]], 2)
    with pytest.raises(ValueError, match="does not fit"):
        deepfactor.nmf_transform(a, np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="sequence"):
        deepfactor.nmf_joint(3, 2)
