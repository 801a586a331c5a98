#!/usr/bin/env python3
"""Reference values for the descriptor tests (tests/fixtures/descriptor/reference.json).

An independent NumPy / scikit-learn implementation of the formulas in the thesis and in
../shared/data/REFERENCE.md, run on small seeded activations:

- CroW channel weights log(sum Q / Q_c) (0 for never-active channels) and spatial weights
  (S / ||S||_2)^(1/2), as in Kalantidis et al.'s code;
- MAC, SPoC (sum), GeM (p = 3, clamp 1e-6), CroW, R-MAC (L = 3, overlap 0.4, plus the global
  MAC term) ported line by line from cnnimageretrieval-pytorch's `rmac`;
- NMF V and NMF V+U on sklearn's NMF(K, solver='mu', init='nndsvda', max_iter=200, tol=0) of
  the CroW-weighted activations, V+U with a 13x13 Gaussian of variance 2, zero padding;
- the region filter (> 75% of a heatmap's mass on cells whose centres lie in the box), which
  keeps rows of V, or rows of V' computed over all factors;
- scikit-learn's Ledoit-Wolf shrinkage of two small matrices (one with n < d).

Run with the reference venv: /root/venv-ref/bin/python scripts/descriptor_fixtures.py
"""
import json
import math
import os

import numpy as np
from scipy.signal import convolve2d
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.decomposition import NMF

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "descriptor", "reference.json")


def l2n(v):
    return v / np.linalg.norm(v)


def crow_channel(a):
    q = (a > 0).mean(axis=0)
    s = q.sum()
    return np.array([math.log(s / x) if x > 0 else 0.0 for x in q])


def crow_spatial(a):
    s = a.sum(axis=1)
    return np.sqrt(s / np.linalg.norm(s))


def rmac(x, L=3, eps=1e-6):  # x: C x H x W
    ovr = 0.4
    steps = np.array([2, 3, 4, 5, 6, 7], dtype=np.float64)
    H, W = x.shape[1], x.shape[2]
    w = min(W, H)
    b = (max(H, W) - w) / (steps - 1)
    idx = int(np.argmin(np.abs(((w ** 2 - w * b) / w ** 2) - ovr)))
    Wd = Hd = 0
    if H < W:
        Wd = idx + 1
    elif H > W:
        Hd = idx + 1
    v = x.max(axis=(1, 2))
    v = v / (np.linalg.norm(v) + eps)
    for l in range(1, L + 1):
        wl = math.floor(2 * w / (l + 1))
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if l + Wd == 1 else (W - wl) / (l + Wd - 1)
        cenW = np.floor(wl2 + np.arange(l - 1 + Wd + 1) * b) - wl2
        b = 0 if l + Hd == 1 else (H - wl) / (l + Hd - 1)
        cenH = np.floor(wl2 + np.arange(l - 1 + Hd + 1) * b) - wl2
        for i_ in cenH:
            for j_ in cenW:
                if wl == 0:
                    continue
                R = x[:, int(i_):int(i_) + wl, int(j_):int(j_) + wl]
                vt = R.max(axis=(1, 2))
                vt = vt / (np.linalg.norm(vt) + eps)
                v = v + vt
    return v


def gaussian13():
    t = np.arange(13) - 6.0
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 2.0))
    return g / g.sum()


def vu_rows(u, v, rows, cols):
    """V' = U'^T U' V over all factors (U' = blurred heatmaps, unit columns)."""
    g = gaussian13()
    cols_ = []
    for j in range(u.shape[1]):
        b = convolve2d(u[:, j].reshape(rows, cols), g, mode="same", boundary="fill").ravel()
        n = np.linalg.norm(b)
        cols_.append(b / n if n > 0 else b)
    up = np.stack(cols_, axis=1)  # cells x K
    return up.T @ up @ v


def nmf_vector(rows_):
    return l2n(sum(l2n(r) for r in rows_ if np.linalg.norm(r) > 0))


def mass_inside(u, rows, cols, width, height, box):
    x1, y1, x2, y2 = box
    inside = np.zeros(rows * cols, dtype=bool)
    for r in range(rows):
        for c in range(cols):
            cx, cy = (c + 0.5) * width / cols, (r + 0.5) * height / rows
            inside[r * cols + c] = x1 <= cx < x2 and y1 <= cy < y2
    out = []
    for j in range(u.shape[1]):
        h = u[:, j]
        out.append(float(h[inside].sum() / h.sum()) if h.sum() > 0 else 0.0)
    return out


def main():
    rng = np.random.default_rng(20240607)
    rows, cols, C, K = 6, 9, 20, 3
    width, height = cols * 32, rows * 32
    # Three spatial blobs, each with its own channels, over sparse background noise.
    a = np.zeros((rows, cols, C))
    for (r0, c0, ch) in [(0, 0, range(0, 7)), (1, 3, range(7, 14)), (3, 1, range(12, 20))]:
        for r in range(r0, min(rows, r0 + 3)):
            for c in range(c0, min(cols, c0 + 4)):
                for k in ch:
                    a[r, c, k] = rng.uniform(0.5, 3.0)
    noise = rng.uniform(0, 1, size=a.shape)
    a = np.where(noise > 0.93, a + rng.uniform(0, 0.5, size=a.shape), a)
    a[:, :, 19] = 0.0  # a never-active channel
    a = a.astype(np.float32).astype(np.float64)
    A = a.reshape(rows * cols, C)

    cw = crow_channel(A)
    sw = crow_spatial(A)
    x = a.transpose(2, 0, 1)  # C x H x W
    out = {
        "rows": rows, "cols": cols, "channels": C, "k": K,
        "image_width": width, "image_height": height,
        "activations": A.ravel().tolist(),
        "crow_channel_weights": cw.tolist(),
        "crow_spatial_weights": sw.tolist(),
        "mac": l2n(A.max(axis=0)).tolist(),
        "spoc": l2n(A.sum(axis=0)).tolist(),
        "gem": l2n(np.mean(np.maximum(A, 1e-6) ** 3, axis=0) ** (1 / 3)).tolist(),
        "crow": l2n((A * sw[:, None]).sum(axis=0) * cw).tolist(),
        "rmac": l2n(rmac(x)).tolist(),
    }
    Aw = A * cw[None, :]
    m = NMF(K, solver="mu", init="nndsvda", max_iter=200, tol=0)
    u = m.fit_transform(Aw)
    v = m.components_
    out["nmf_v"] = nmf_vector(list(v)).tolist()
    vp = vu_rows(u, v, rows, cols)
    out["nmf_vu"] = nmf_vector(list(vp)).tolist()
    box = [0.0, 0.0, 9 * 32.0, 5 * 32.0]  # the first two blobs, two thirds of the third
    masses = mass_inside(u, rows, cols, width, height, box)
    kept = [j for j in range(K) if masses[j] > 0.75]
    if not kept:
        kept = [int(np.argmax(masses))]
    out["box"] = box
    out["box_masses_sorted"] = sorted(masses)
    out["box_kept"] = len(kept)
    out["nmf_v_box"] = nmf_vector([v[j] for j in kept]).tolist()
    out["nmf_vu_box"] = nmf_vector([vp[j] for j in kept]).tolist()

    lw = []
    for (n, d, seed) in [(40, 6, 1), (5, 12, 2)]:
        r = np.random.default_rng(seed)
        X = r.normal(size=(n, d)) @ r.normal(size=(d, d))
        X = X.astype(np.float32).astype(np.float64)
        lw.append({"n": n, "d": d, "x": X.ravel().tolist(), "shrinkage": float(ledoit_wolf_shrinkage(X))})
    out["ledoit_wolf"] = lw
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("wrote", OUT, "masses", masses, "kept", kept)


if __name__ == "__main__":
    main()
