#!/usr/bin/env python3
"""PyTorch CPU baseline for `cargo bench --bench deepfactor -- backbone`.

Runs timm's VGG-16, VGG-19, ResNet-50 and tf_efficientnet_lite0 (random weights) up to the same
layers (conv5_3, conv5_4, layer4, head) on a 512×683 input and prints images per second and the
process's CPU seconds per image (all threads).
Usage: bench_backbone_torch.py [--iters N] [--batch B] [--threads T] [--only NAME]
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
a = p.parse_args()
torch.set_num_threads(a.threads)
x = torch.randn(a.batch, 3, 512, 683)
for name, (arch, fwd) in MODELS.items():
    if a.only and a.only != name:
        continue
    m = timm.create_model(arch, pretrained=False).eval()
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
