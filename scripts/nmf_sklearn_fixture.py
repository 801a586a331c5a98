#!/usr/bin/env python3
"""Writes tests/fixtures/nmf/sklearn.json: a small fixed non-negative matrix and scikit-learn's
NMF figures on it (solver='mu'), for the agreement test in tests/deepfactor/nmf.rs.

Run from the repository root:  /root/venv-ref/bin/python scripts/nmf_sklearn_fixture.py

The matrix imitates ReLU activations (a non-negative low-rank part plus noise, clipped at 0,
about 60% zeros). Its values are rounded to float32 so that both sides factorize exactly
the same numbers; scikit-learn then runs in float64 as the reference implementation did.
"""
import json
import pathlib
import warnings

import numpy as np
import sklearn
from sklearn.decomposition import NMF

warnings.filterwarnings("ignore")  # ConvergenceWarning at small max_iter

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "nmf" / "sklearn.json"


def activations(rng, p, c, rank):
    w = rng.gamma(0.6, 1.0, size=(p, rank))
    h = rng.gamma(0.6, 1.0, size=(rank, c))
    x = w @ h + rng.normal(0.0, 0.6, size=(p, c)) - 1.9
    return np.maximum(x, 0.0).astype(np.float32).astype(np.float64)


def f32_list(x):
    # Shortest decimal that round-trips through float32: the Rust side parses it exactly.
    return [float(str(np.float32(v))) for v in np.asarray(x, dtype=np.float32).ravel()]


def rel_error(x, w, h):
    return float(np.linalg.norm(x - w @ h) / np.linalg.norm(x))


def main():
    rng = np.random.default_rng(20240611)
    a = activations(rng, 96, 64, 6)
    b = activations(rng, 40, 64, 6)  # new rows for transform
    cases = []
    for init in ["nndsvda", "nndsvd"]:
        for k in [1, 4, 8]:
            for max_iter in [10, 50, 200]:
                m = NMF(k, solver="mu", init=init, max_iter=max_iter, tol=0, random_state=0)
                w = m.fit_transform(a)
                cases.append(
                    dict(init=init, k=k, max_iter=max_iter, tol=0.0, iterations=int(m.n_iter_),
                         rel_error=rel_error(a, w, m.components_))
                )
            m = NMF(k, solver="mu", init=init, max_iter=200, tol=1e-4, random_state=0)
            w = m.fit_transform(a)
            cases.append(
                dict(init=init, k=k, max_iter=200, tol=1e-4, iterations=int(m.n_iter_),
                     rel_error=rel_error(a, w, m.components_))
            )
    m = NMF(4, solver="mu", init="nndsvda", max_iter=200, tol=0, random_state=0)
    m.fit(a)
    h = m.components_
    wb = m.transform(b)
    doc = dict(
        generator="scripts/nmf_sklearn_fixture.py",
        sklearn=sklearn.__version__,
        numpy=np.__version__,
        a=dict(rows=a.shape[0], cols=a.shape[1], data=f32_list(a)),
        cases=cases,
        transform=dict(
            b=dict(rows=b.shape[0], cols=b.shape[1], data=f32_list(b)),
            v=dict(rows=h.shape[0], cols=h.shape[1], data=f32_list(h)),
            iterations=int(m.n_iter_),
            rel_error=rel_error(b, wb, h.astype(np.float32).astype(np.float64)),
        ),
        zeros=float(np.mean(a == 0)),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes, {doc['zeros']:.0%} zeros)")
    for c in cases:
        print(c)


if __name__ == "__main__":
    main()
