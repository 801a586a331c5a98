#!/usr/bin/env python3
"""CMU-Cornell iCoseg: 643 images in 38 groups with pixel-wise foreground masks.

Downloads the dataset (Batra et al., CVPR 2010) from its project page at Cornell, checks the
counts, and lays it out in deepfactor's co-segmentation layout (CosegGroundTruth::load):

    ROOT/icoseg/images/<group>/<name>.jpg   643 images, 38 groups
    ROOT/icoseg/masks/<group>/<name>.png    their ground-truth masks (non-zero = object)

Usage: python3 datasets/icoseg.py [--root data] [--keep-archives] [--no-verify]
"""

import os
import shutil

from _common import DatasetError, check_count, download, extract, files_under, finish, log, main_guard, parse_args

URLS = ["http://chenlab.ece.cornell.edu/projects/touch-coseg/CMU_Cornell_iCoseg_dataset.zip"]
N_IMAGES = 643
N_GROUPS = 38


def main():
    args = parse_args(__doc__.splitlines()[0])
    out = os.path.join(args.root, "icoseg")
    if os.path.isdir(os.path.join(out, "images")):
        raise DatasetError(f"{out} exists; delete it to rebuild")
    # No checksum is published: the counts and the image/mask pairing are checked.
    archive = download(URLS, os.path.join(args.archives, "CMU_Cornell_iCoseg_dataset.zip"), no_verify=args.no_verify)
    tmp = out + ".tmp"
    extract(archive, tmp)
    pub = None
    for dirpath, dirnames, _ in os.walk(tmp):
        if "images" in dirnames and "ground_truth" in dirnames:
            pub = dirpath
            break
    if pub is None:
        raise DatasetError(f"{archive}: no folder with images/ and ground_truth/ inside")
    groups = sorted(d for d in os.listdir(os.path.join(pub, "images")) if os.path.isdir(os.path.join(pub, "images", d)))
    n = 0
    for g in groups:
        for img in files_under(os.path.join(pub, "images", g), {".jpg", ".jpeg"}):
            stem = os.path.splitext(os.path.basename(img))[0]
            mask = os.path.join(pub, "ground_truth", g, stem + ".png")
            if not os.path.isfile(mask):
                raise DatasetError(f"no ground-truth mask for {g}/{os.path.basename(img)}")
            os.makedirs(os.path.join(out, "images", g), exist_ok=True)
            os.makedirs(os.path.join(out, "masks", g), exist_ok=True)
            shutil.move(img, os.path.join(out, "images", g, stem + ".jpg"))
            shutil.move(mask, os.path.join(out, "masks", g, stem + ".png"))
            n += 1
    shutil.rmtree(tmp, ignore_errors=True)
    check_count("iCoseg groups", len(groups), N_GROUPS, args.no_verify)
    check_count("iCoseg images with masks", n, N_IMAGES, args.no_verify)
    finish(args, [archive])
    log(f"done: {out}")


if __name__ == "__main__":
    main_guard(main)
