"""Shared steps of roxford5k.py and rparis6k.py: the revisitop ground truth and its images."""

import io
import os
import pickle

from _common import DatasetError, check_count, download, link_or_copy, log

GND_URLS = [
    "http://cmp.felk.cvut.cz/revisitop/data/datasets/{d}/gnd_{d}.pkl",
    "https://cmp.felk.cvut.cz/revisitop/data/datasets/{d}/gnd_{d}.pkl",
    # The same files as distributed with cnnimageretrieval-pytorch.
    "http://cmp.felk.cvut.cz/cnnimageretrieval/data/test/{d}/gnd_{d}.pkl",
]


class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global: the gnd files hold only dicts, lists, strings and numbers, and this
    is also what deepfactor's own (Rust) reader accepts."""

    def find_class(self, module, name):
        raise DatasetError(
            f"the ground-truth pickle references {module}.{name}; expected plain Python values"
        )


def load_gnd(path):
    with open(path, "rb") as f:
        cfg = _PlainUnpickler(io.BytesIO(f.read())).load()
    for key in ("imlist", "qimlist", "gnd"):
        if key not in cfg:
            raise DatasetError(f"{path}: no '{key}' entry")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise DatasetError(f"{path}: {len(cfg['gnd'])} gnd entries for {len(cfg['qimlist'])} queries")
    n = len(cfg["imlist"])
    for i, g in enumerate(cfg["gnd"]):
        for key in ("easy", "hard", "junk"):
            if any(not (0 <= k < n) for k in g[key]):
                raise DatasetError(f"{path}: gnd[{i}]['{key}'] has an index outside imlist")
    return cfg


def prepare(args, dataset, n_images, n_queries, source_jpg, fetch_source):
    """Downloads gnd_<dataset>.pkl, checks it, and links the images it names from source_jpg
    (filled by fetch_source(args, source_jpg) when absent) into ROOT/<dataset>/jpg."""
    out = os.path.join(args.root, dataset)
    os.makedirs(out, exist_ok=True)
    gnd_path = os.path.join(out, f"gnd_{dataset}.pkl")
    # No checksum is published for the pickles: their structure and counts are checked.
    download([u.format(d=dataset) for u in GND_URLS], gnd_path, no_verify=args.no_verify)
    cfg = load_gnd(gnd_path)
    check_count(f"{dataset} database images", len(cfg["imlist"]), n_images, args.no_verify)
    check_count(f"{dataset} queries", len(cfg["qimlist"]), n_queries, args.no_verify)

    archives = []
    if not os.path.isdir(source_jpg):
        log(f"{source_jpg} is absent: downloading the images first")
        got = fetch_source(args, source_jpg)
        archives += got if isinstance(got, list) else [got]
    jpg = os.path.join(out, "jpg")
    missing = []
    for name in list(cfg["imlist"]) + list(cfg["qimlist"]):
        src = os.path.join(source_jpg, name + ".jpg")
        if not os.path.isfile(src):
            missing.append(name)
            continue
        link_or_copy(src, os.path.join(jpg, name + ".jpg"))
    if missing:
        raise DatasetError(
            f"{len(missing)} images named by gnd_{dataset}.pkl are not in {source_jpg} "
            f"(first: {missing[0]}); delete that folder and run again"
        )
    log(f"  linked {len(cfg['imlist']) + len(cfg['qimlist'])} images into {jpg}")
    return out, archives
