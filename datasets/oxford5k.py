#!/usr/bin/env python3
"""Oxford Buildings (Oxford5k): 5,063 Flickr images of 11 Oxford landmarks, 55 queries.

Downloads the images and the classic ground truth from the Visual Geometry Group (University
of Oxford), checks them, and lays them out for `deepfactor eval --gt ROOT/oxford5k`:

    ROOT/oxford5k/jpg/<image>.jpg        5,063 images
    ROOT/oxford5k/gt/<q>_query.txt       55 queries ("oxc1_<image> x1 y1 x2 y2")
    ROOT/oxford5k/gt/<q>_{good,ok,junk}.txt

Usage: python3 datasets/oxford5k.py [--root data] [--keep-archives] [--no-verify]
"""

import os

from _common import (
    DatasetError,
    check_classic_layout,
    check_count,
    download,
    extract,
    files_under,
    finish,
    flatten,
    log,
    main_guard,
    parse_args,
)

HOME = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/"
# The VGG site serves the files from thor.robots.ox.ac.uk; both addresses are tried.
IMAGES = {
    "name": "oxbuild_images-v1.tgz",
    "urls": [
        HOME + "oxbuild_images-v1.tgz",
        "https://thor.robots.ox.ac.uk/oxbuildings/oxbuild_images-v1.tgz",
        "https://thor.robots.ox.ac.uk/datasets/oxford-buildings/oxbuild_images-v1.tgz",
    ],
    "md5": "8f0017cc5d671f35011d6968269fbf47",
}
GROUND_TRUTH = {
    "name": "gt_files_170407.tgz",
    "urls": [
        HOME + "gt_files_170407.tgz",
        "https://thor.robots.ox.ac.uk/oxbuildings/gt_files_170407.tgz",
        "https://thor.robots.ox.ac.uk/datasets/oxford-buildings/gt_files_170407.tgz",
    ],
    "md5": "06c4dee0ad954f6ee122c82390548537",
}
# The VGG page says 5,062 images; the archive holds 5,063 (as reported by users, and as
# ROxford5k's 4,993 database + 70 query images, all taken from it, imply).
N_IMAGES = 5063
N_QUERIES = 55


def fetch_images(args, jpg_dir):
    """Downloads, verifies and extracts the 5,063 images into jpg_dir; returns the archive."""
    archive = download(
        IMAGES["urls"], os.path.join(args.archives, IMAGES["name"]), md5=IMAGES["md5"], no_verify=args.no_verify
    )
    tmp = jpg_dir + ".tmp"
    extract(archive, tmp)
    flatten(files_under(tmp, {".jpg"}), jpg_dir)
    _rmtree(tmp)
    check_count("Oxford images", len(files_under(jpg_dir, {".jpg"})), N_IMAGES, args.no_verify)
    return archive


def _rmtree(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main():
    args = parse_args(__doc__.splitlines()[0])
    out = os.path.join(args.root, "oxford5k")
    jpg, gt = os.path.join(out, "jpg"), os.path.join(out, "gt")
    archives = []
    if os.path.isdir(jpg) and (args.no_verify or len(files_under(jpg, {".jpg"})) == N_IMAGES):
        log(f"{jpg}: already complete")
    else:
        if os.path.isdir(jpg):
            raise DatasetError(f"{jpg} exists but is incomplete; delete it and run again")
        archives.append(fetch_images(args, jpg))
    if not os.path.isdir(gt):
        archive = download(
            GROUND_TRUTH["urls"],
            os.path.join(args.archives, GROUND_TRUTH["name"]),
            md5=GROUND_TRUTH["md5"],
            no_verify=args.no_verify,
        )
        archives.append(archive)
        tmp = gt + ".tmp"
        extract(archive, tmp)
        flatten(files_under(tmp, {".txt"}), gt)
        _rmtree(tmp)
    queries = [f for f in os.listdir(gt) if f.endswith("_query.txt")]
    check_count("Oxford queries", len(queries), N_QUERIES, args.no_verify)
    for q in queries:
        for kind in ("good", "ok", "junk"):
            if not os.path.isfile(os.path.join(gt, q.replace("_query.txt", f"_{kind}.txt"))):
                raise DatasetError(f"{gt}: {q} has no {kind} list")
    check_classic_layout(gt, jpg)
    finish(args, archives)
    log(f"done: deepfactor eval --gt {out} --ranking <file>")


if __name__ == "__main__":
    main_guard(main)
