#!/usr/bin/env python3
"""Paris (Paris6k): 6,412 Flickr images of 11 Paris landmarks (20 of them corrupt), 55 queries.

Downloads the images and the classic ground truth from the Visual Geometry Group (University
of Oxford), checks them, removes the 20 corrupt images (and their entries in the ground-truth
lists, as is standard practice: 6,392 images remain) and lays them out for
`deepfactor eval --gt ROOT/paris6k`:

    ROOT/paris6k/jpg/<image>.jpg         6,392 images
    ROOT/paris6k/gt/<q>_query.txt        55 queries ("<image> x1 y1 x2 y2")
    ROOT/paris6k/gt/<q>_{good,ok,junk}.txt
    ROOT/paris6k/removed_corrupt.txt     what was removed

Usage: python3 datasets/paris6k.py [--root data] [--keep-archives] [--no-verify]
"""

import os
import shutil

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

HOME = "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/"
IMAGE_ARCHIVES = [
    {
        "name": name,
        "urls": [
            HOME + name,
            "https://thor.robots.ox.ac.uk/parisbuildings/" + name,
            "https://thor.robots.ox.ac.uk/datasets/paris-buildings/" + name,
        ],
    }
    for name in ("paris_1-v1.tgz", "paris_2-v1.tgz")
]
GROUND_TRUTH = {
    "name": "paris_120310.tgz",
    "urls": [
        HOME + "paris_120310.tgz",
        "https://thor.robots.ox.ac.uk/parisbuildings/paris_120310.tgz",
        "https://thor.robots.ox.ac.uk/datasets/paris-buildings/paris_120310.tgz",
    ],
}
N_ARCHIVE_IMAGES = 6412
N_QUERIES = 55
# Images in the archives that no decoder can read (widely reported; RParis6k excludes them).
CORRUPT = [
    "paris_louvre_000136", "paris_louvre_000146", "paris_moulinrouge_000422",
    "paris_museedorsay_001059", "paris_notredame_000188", "paris_pantheon_000284",
    "paris_pantheon_000960", "paris_pantheon_000974", "paris_pompidou_000195",
    "paris_pompidou_000196", "paris_pompidou_000201", "paris_pompidou_000467",
    "paris_pompidou_000640", "paris_sacrecoeur_000299", "paris_sacrecoeur_000330",
    "paris_sacrecoeur_000353", "paris_triomphe_000662", "paris_triomphe_000833",
    "paris_triomphe_000863", "paris_triomphe_000867",
]


def fetch_images(args, jpg_dir):
    """Downloads and extracts both image archives into jpg_dir, removes the corrupt images;
    returns the archives. The archives carry no published checksum: counts are checked."""
    archives = []
    tmp = jpg_dir + ".tmp"
    for a in IMAGE_ARCHIVES:
        path = download(a["urls"], os.path.join(args.archives, a["name"]), no_verify=args.no_verify)
        archives.append(path)
        extract(path, tmp)
    flatten(files_under(tmp, {".jpg"}), jpg_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    check_count("Paris images in the archives", len(files_under(jpg_dir, {".jpg"})), N_ARCHIVE_IMAGES, args.no_verify)
    for name in CORRUPT:
        p = os.path.join(jpg_dir, name + ".jpg")
        if os.path.exists(p):
            os.remove(p)
    return archives


def main():
    args = parse_args(__doc__.splitlines()[0])
    out = os.path.join(args.root, "paris6k")
    jpg, gt = os.path.join(out, "jpg"), os.path.join(out, "gt")
    archives = []
    expected = N_ARCHIVE_IMAGES - len(CORRUPT)
    if os.path.isdir(jpg) and (args.no_verify or len(files_under(jpg, {".jpg"})) == expected):
        log(f"{jpg}: already complete")
    else:
        if os.path.isdir(jpg):
            raise DatasetError(f"{jpg} exists but is incomplete; delete it and run again")
        archives += fetch_images(args, jpg)
    if not os.path.isdir(gt):
        archive = download(GROUND_TRUTH["urls"], os.path.join(args.archives, GROUND_TRUTH["name"]), no_verify=args.no_verify)
        archives.append(archive)
        tmp = gt + ".tmp"
        extract(archive, tmp)
        flatten(files_under(tmp, {".txt"}), gt)
        shutil.rmtree(tmp, ignore_errors=True)
    queries = sorted(f for f in os.listdir(gt) if f.endswith("_query.txt"))
    check_count("Paris queries", len(queries), N_QUERIES, args.no_verify)

    # Drop the corrupt images from the lists so that every listed image exists.
    corrupt, removed = set(CORRUPT), []
    for q in queries:
        qname = q[: -len("_query.txt")]
        with open(os.path.join(gt, q)) as f:
            if f.read().split()[0] in corrupt:
                raise DatasetError(f"query {qname} uses a corrupt image; cannot build the layout")
        for kind in ("good", "ok", "junk"):
            p = os.path.join(gt, f"{qname}_{kind}.txt")
            if not os.path.isfile(p):
                raise DatasetError(f"{gt}: {q} has no {kind} list")
            with open(p) as f:
                names = f.read().split()
            kept = [n for n in names if n not in corrupt]
            removed += [f"{qname}_{kind}.txt {n}" for n in names if n in corrupt]
            if len(kept) != len(names):
                with open(p, "w") as f:
                    f.write("".join(n + "\n" for n in kept))
    with open(os.path.join(out, "removed_corrupt.txt"), "w") as f:
        f.write("# corrupt images removed from jpg/\n")
        f.write("".join(n + "\n" for n in CORRUPT))
        f.write("# list entries removed\n")
        f.write("".join(r + "\n" for r in removed))
    log(f"  removed {len(CORRUPT)} corrupt images and {len(removed)} list entries naming them")
    check_count("Paris images", len(files_under(jpg, {".jpg"})), expected, args.no_verify)
    check_classic_layout(gt, jpg)
    finish(args, archives)
    log(f"done: deepfactor eval --gt {out} --ranking <file>")


if __name__ == "__main__":
    main_guard(main)
