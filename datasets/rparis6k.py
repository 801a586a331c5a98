#!/usr/bin/env python3
"""Revisited Paris (RParis6k): the Paris6k images re-annotated, 70 queries, Easy/Medium/Hard.

Downloads the revisitop ground truth (Radenović et al., CVPR 2018, Czech Technical University)
and lays it out with the images (hard links into ROOT/paris6k/jpg, downloaded by paris6k.py's
code when absent) for `deepfactor eval --gt ROOT/rparis6k`:

    ROOT/rparis6k/gnd_rparis6k.pkl     imlist (6,322), qimlist (70), gnd (easy/hard/junk/bbx)
    ROOT/rparis6k/jpg/<image>.jpg      the 6,322 database and 70 query images

Usage: python3 datasets/rparis6k.py [--root data] [--keep-archives] [--no-verify]
"""

import os

import _revisitop
import paris6k
from _common import finish, log, main_guard, parse_args


def main():
    args = parse_args(__doc__.splitlines()[0])
    source = os.path.join(args.root, "paris6k", "jpg")
    out, archives = _revisitop.prepare(args, "rparis6k", 6322, 70, source, paris6k.fetch_images)
    finish(args, archives)
    log(f"done: deepfactor eval --gt {out} --ranking <file>   (revisited protocol)")


if __name__ == "__main__":
    main_guard(main)
