#!/usr/bin/env python3
"""PyTorch CPU baseline for `cargo bench --bench deepfactor -- backbone`.

Runs timm's VGG-16, VGG-19, ResNet-50 and tf_efficientnet_lite0 (random weights) up to the same
layers (conv5_3, conv5_4, layer4, head) on a 512×683 input and prints images per second and the
process's CPU seconds per image (all threads).
With --layers, a profile instead: for each checkpoint (VGG's convolutions with their ReLU and
its poolings, ResNet's stem, pooling and blocks, Lite0's blocks and head — the checkpoints of the
Rust bench's `backbone --layers`) the milliseconds from the input to its end, best of --iters,
stamped by forward hooks in one pass: `layer backbone=<name> name=<layer> torch_ms=<ms>`.
Usage: bench_backbone_torch.py [--iters N] [--batch B] [--threads T] [--only NAME] [--layers]
"""
import argparse
import time

import timm
import torch

MODELS = {
    "vgg16": ("vgg16", lambda m, x: m.features[:30](x)),      # up to conv5_3's ReLU
    "vgg19": ("vgg19", lambda m, x: m.features[:36](x)),      # up to conv5_4's ReLU
    "resnet50": ("resnet50", lambda m, x: m.forward_features(x)),
    "efficientnet-lite0": ("tf_efficientnet_lite0", lambda m, x: m.forward_features(x)),
}

p = argparse.ArgumentParser()
p.add_argument("--iters", type=int, default=5)
p.add_argument("--batch", type=int, default=1)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--only")
p.add_argument("--layers", action="store_true")
a = p.parse_args()


def checkpoints(name, m):
    """(our layer name, module whose end is that layer) in order, up to the default layer."""
    if name.startswith("vgg"):
        out, stage, conv, feats = [], 1, 0, list(m.features)
        last = {"vgg16": 29, "vgg19": 35}[name]
        for i, mod in enumerate(feats[: last + 1]):
            if isinstance(mod, torch.nn.Conv2d):
                conv += 1
                out.append((f"conv{stage}_{conv}", feats[i + 1]))  # its ReLU
            elif isinstance(mod, torch.nn.MaxPool2d):
                out.append((f"pool{stage}", mod))
                stage, conv = stage + 1, 0
        return out
    if name == "resnet50":
        out = [("conv1", m.act1), ("maxpool", m.maxpool)]
        for s, layer in enumerate([m.layer1, m.layer2, m.layer3, m.layer4]):
            out += [(f"layer{s + 1}.{b}", blk) for b, blk in enumerate(layer)]
        return out
    blocks = [blk for stage in m.blocks for blk in stage]
    return [(f"blocks.{i}", blk) for i, blk in enumerate(blocks)] + [("head", m.bn2)]


def profile(name, m, fwd):
    stamps = {}
    cps = checkpoints(name, m)
    for layer, mod in cps:
        mod.register_forward_hook(lambda *_, layer=layer: stamps.__setitem__(layer, time.perf_counter()))
    best = {}
    with torch.no_grad():
        fwd(m, x)
        for _ in range(a.iters):
            t = time.perf_counter()
            fwd(m, x)
            for layer, _ in cps:
                best[layer] = min(best.get(layer, float("inf")), (stamps[layer] - t) * 1e3)
    for layer, _ in cps:
        print(f"layer backbone={name} name={layer} torch_ms={best[layer]:.2f}")

torch.set_num_threads(a.threads)
x = torch.randn(a.batch, 3, 512, 683)
for name, (arch, fwd) in MODELS.items():
    if a.only and a.only != name:
        continue
    m = timm.create_model(arch, pretrained=False).eval()
    if a.layers:
        profile(name, m, fwd)
        continue
    with torch.no_grad():
        fwd(m, x)
        t = time.perf_counter()
        c = time.process_time()
        for _ in range(a.iters):
            fwd(m, x)
        s = time.perf_counter() - t
        cpu = time.process_time() - c
    print(f"backbone={name} torch_img_s={a.iters * a.batch / s:.3f} "
          f"torch_cpu_s_per_img={cpu / (a.iters * a.batch):.3f}")
