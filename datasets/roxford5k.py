#!/usr/bin/env python3
"""Revisited Oxford (ROxford5k): the Oxford5k images re-annotated, 70 queries, Easy/Medium/Hard.

Downloads the revisitop ground truth (Radenović et al., CVPR 2018, Czech Technical University)
and lays it out with the images (hard links into ROOT/oxford5k/jpg, downloaded by
oxford5k.py's code when absent) for `deepfactor eval --gt ROOT/roxford5k`:

    ROOT/roxford5k/gnd_roxford5k.pkl   imlist (4,993), qimlist (70), gnd (easy/hard/junk/bbx)
    ROOT/roxford5k/jpg/<image>.jpg     the 4,993 database and 70 query images

Usage: python3 datasets/roxford5k.py [--root data] [--keep-archives] [--no-verify]
"""

import os

import _revisitop
import oxford5k
from _common import finish, log, main_guard, parse_args


def main():
    args = parse_args(__doc__.splitlines()[0])
    source = os.path.join(args.root, "oxford5k", "jpg")
    out, archives = _revisitop.prepare(args, "roxford5k", 4993, 70, source, oxford5k.fetch_images)
    finish(args, archives)
    log(f"done: deepfactor eval --gt {out} --ranking <file>   (revisited protocol)")


if __name__ == "__main__":
    main_guard(main)
