#!/usr/bin/env python3
"""R1M: the revisitop 1M distractor images (Radenović et al., CVPR 2018).

By default downloads only the listing, revisitop1m.txt (one image path per line, relative to
jpg/), which `deepfactor::eval::load_image_list` reads. With --images it also downloads and
extracts the 100 image archives (very large: check the free space first; each archive's size
is printed as it downloads):

    ROOT/revisitop1m/revisitop1m.txt   1,001,001 lines
    ROOT/revisitop1m/jpg/...           the images (with --images)

Usage: python3 datasets/revisitop1m.py [--root data] [--images] [--keep-archives] [--no-verify]
"""

import os

from _common import check_count, download, extract, finish, log, main_guard, parse_args

BASE = "http://ptak.felk.cvut.cz/revisitop/revisitop1m/"
N_ARCHIVES = 100
N_IMAGES = 1001001


def main():
    args = parse_args(
        __doc__.splitlines()[0],
        extra=lambda p: p.add_argument("--images", action="store_true", help="also download the images"),
    )
    out = os.path.join(args.root, "revisitop1m")
    listing = download(BASE + "revisitop1m.txt", os.path.join(out, "revisitop1m.txt"), no_verify=args.no_verify)
    with open(listing) as f:
        names = [line.strip() for line in f if line.strip()]
    check_count("R1M listing entries", len(names), N_IMAGES, args.no_verify)
    check_count("distinct R1M entries", len(set(names)), len(names), args.no_verify)
    if not args.images:
        log("listing done (add --images for the images)")
        return
    jpg = os.path.join(out, "jpg")
    for i in range(1, N_ARCHIVES + 1):
        name = f"revisitop1m.{i}.tar.gz"
        done_mark = os.path.join(out, f".extracted.{i}")
        if os.path.exists(done_mark):
            continue
        log(f"[{i}/{N_ARCHIVES}]")
        archive = download(BASE + "jpg/" + name, os.path.join(args.archives, name), no_verify=args.no_verify)
        extract(archive, jpg)
        open(done_mark, "w").close()
        finish(args, [archive])
    missing = [n for n in names if not os.path.isfile(os.path.join(jpg, n))]
    if missing and not names[0].lower().endswith((".jpg", ".jpeg", ".png")):
        missing = [n for n in names if not os.path.isfile(os.path.join(jpg, n + ".jpg"))]
    check_count("R1M listed images missing from jpg/", len(missing), 0, args.no_verify)
    log("done")


if __name__ == "__main__":
    main_guard(main)
