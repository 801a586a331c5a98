#!/usr/bin/env python3
"""Times scikit-learn's and a plain numpy multiplicative-update NMF on the matrices that the
`nmf` bench wrote (`cargo bench --bench deepfactor -- nmf --out DIR`).

    python scripts/bench_nmf_sklearn.py DIR [--dtype float64|float32] [--cases a,b] [--iters N]

Prints one line per case: `case=<name> K=<k> sklearn_ms=<ms per iteration> numpy_ms=<ms>`.
scikit-learn runs `NMF(K, solver='mu', init='nndsvda', tol=0, max_iter=N)` (initialisation
included, like the Rust side) on a dense array or a scipy CSR matrix, as the case says; batched
cases fit each image in turn. The numpy loop is the same update, dense or CSR, from sklearn's
own NNDSVDa start, timed without the initialisation.
"""
import argparse
import json
import pathlib
import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _initialize_nmf

warnings.filterwarnings("ignore")
EPS = np.finfo(np.float32).eps


def sklearn_fit(x, k, iters):
    m = NMF(k, solver="mu", init="nndsvda", max_iter=iters, tol=0, random_state=0)
    m.fit_transform(x)


def numpy_loop(x, k, iters):
    w, h = _initialize_nmf(x, k, init="nndsvda", random_state=0)
    t = time.perf_counter()
    for _ in range(iters):
        num = x @ h.T
        den = w @ (h @ h.T)
        den[den == 0] = EPS
        w *= num / den
        num = (x.T @ w).T if sp.issparse(x) else w.T @ x
        den = (w.T @ w) @ h
        den[den == 0] = EPS
        h *= num / den
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--cases", default="")
    ap.add_argument("--iters", type=int, default=0, help="override the manifest's iterations")
    args = ap.parse_args()
    d = pathlib.Path(args.dir)
    cases = json.loads((d / "cases.json").read_text())
    only = set(filter(None, args.cases.split(",")))
    loaded = {}
    for c in cases:
        if only and c["case"] not in only:
            continue
        iters = args.iters or c["iters"]
        if c["file"] not in loaded:
            loaded[c["file"]] = np.load(d / c["file"]).astype(args.dtype)
        a = loaded[c["file"]]
        mats = [a] if a.ndim == 2 else list(a)
        if c["sparse"]:
            mats = [sp.csr_matrix(m) for m in mats]
        t = time.perf_counter()
        for m in mats:
            sklearn_fit(m, c["k"], iters)
        sk = (time.perf_counter() - t) / iters * 1e3
        npt = sum(numpy_loop(m, c["k"], iters) for m in mats) / iters * 1e3
        print(f"case={c['case']} K={c['k']} sklearn_ms={sk:.3f} numpy_ms={npt:.3f}", flush=True)


if __name__ == "__main__":
    main()
