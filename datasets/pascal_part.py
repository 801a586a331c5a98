#!/usr/bin/env python3
"""PASCAL-Part: part masks for the objects of PASCAL VOC 2010 trainval (Chen et al., CVPR 2014).

Downloads the part annotation (Annotations_Part/<id>.mat, one per trainval image) from the
project page, needs the VOC 2010 images (run voc2010.py first; this script runs its download
step when ROOT/voc2010 is absent), and writes the co-segmentation layout with parts
(CosegGroundTruth::load), used for the factor–part matching of deepfactor::eval::parts:

    ROOT/pascal-part/images/<class>/<id>.jpg
    ROOT/pascal-part/masks/<class>/<id>.png          union of the image's objects of the class
    ROOT/pascal-part/parts/<class>/<id>/<part>.png   union over those objects of each part

An image joins a class when at least one of its objects of that class has part annotations.
Part names are the annotation's own (e.g. head, torso, lfleg, wheel_1); masks are 0 / 255.

Reading the MATLAB files needs scipy and numpy (pip install scipy); everything else is the
standard library.

Usage: python3 datasets/pascal_part.py [--root data] [--keep-archives] [--no-verify]
"""

import os

import _voc
import voc2010
from _common import DatasetError, check_count, download, extract, files_under, finish, log, main_guard, parse_args, write_png_gray

URLS = [
    "http://roozbehm.info/pascal-parts/trainval.tar.gz",
    "http://www.stat.ucla.edu/~xianjie.chen/pascal_part_dataset/trainval.tar.gz",
]
N_ANNOTATED = 10103


def main():
    args = parse_args(__doc__.splitlines()[0])
    try:
        import numpy as np
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("PASCAL-Part's .mat files need scipy and numpy: pip install scipy")
    devkit, archives = _voc.fetch(args, 2010, voc2010.ARCHIVES)
    ann_root = os.path.join(args.root, "pascal-part-annotations")
    if not os.path.isdir(os.path.join(ann_root, "Annotations_Part")):
        # No checksum is published: the number of annotation files is checked.
        archive = download(URLS, os.path.join(args.archives, "pascal-part-trainval.tar.gz"), no_verify=args.no_verify)
        archives.append(archive)
        extract(archive, ann_root)
    mats = files_under(ann_root, {".mat"})
    check_count("PASCAL-Part annotation files", len(mats), N_ANNOTATED, args.no_verify)

    out = os.path.join(args.root, "pascal-part")
    counts = {}
    for path in mats:
        image_id = os.path.splitext(os.path.basename(path))[0]
        anno = loadmat(path)["anno"][0, 0]
        by_class = {}
        for obj in anno["objects"][0, :]:
            cls = str(obj["class"][0])
            parts = obj["parts"]
            n_parts = parts.shape[1] if parts.ndim == 2 else 0
            entry = by_class.setdefault(cls, {"mask": None, "parts": {}, "has_parts": False})
            m = obj["mask"] > 0
            entry["mask"] = m if entry["mask"] is None else (entry["mask"] | m)
            for k in range(n_parts):
                part = parts[0, k]
                name = str(part["part_name"][0])
                pm = part["mask"] > 0
                old = entry["parts"].get(name)
                entry["parts"][name] = pm if old is None else (old | pm)
                entry["has_parts"] = True
        for cls, entry in by_class.items():
            if not entry["has_parts"]:
                continue
            if cls not in _voc.CLASSES:
                raise DatasetError(f"{path}: unknown class {cls!r}")
            _voc.link_image(devkit, image_id, out, cls)
            _write_mask(os.path.join(out, "masks", cls, image_id + ".png"), entry["mask"], np)
            for name, pm in entry["parts"].items():
                if "/" in name or name.startswith("."):
                    raise DatasetError(f"{path}: odd part name {name!r}")
                _write_mask(os.path.join(out, "parts", cls, image_id, name + ".png"), pm, np)
            counts[cls] = counts.get(cls, 0) + 1
    for cls in sorted(counts):
        log(f"  {cls}: {counts[cls]} images with parts")
    finish(args, archives)
    log(f"done: {out}")


def _write_mask(path, mask, np):
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    rows = (np.where(m[y], 255, 0).astype(np.uint8).tobytes() for y in range(h))
    write_png_gray(path, w, h, rows)


if __name__ == "__main__":
    main_guard(main)
