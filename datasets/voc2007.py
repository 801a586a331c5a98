#!/usr/bin/env python3
"""PASCAL VOC 2007: 9,963 Flickr photos, 20 classes, object boxes (trainval 5,011, test 4,952).

Downloads trainval and test from the PASCAL VOC site (University of Oxford mirror), checks
their MD5, extracts them unchanged, and derives the co-localization layout used for CorLoc
(CosegGroundTruth::load):

    ROOT/voc2007/VOCdevkit/VOC2007/...      the official release
    ROOT/voc2007-coloc/images/<class>/<id>.jpg
    ROOT/voc2007-coloc/boxes/<class>.txt    "<id> x1 y1 x2 y2" per object of the class

An image of trainval joins a class when it has at least one object of that class that is
neither difficult nor truncated (the usual "VOC07 all" co-localization selection); its boxes
are all objects of the class, so a prediction on any instance counts. Boxes are in half-open
pixel coordinates (VOC's 1-based inclusive xmin becomes xmin - 1).

Usage: python3 datasets/voc2007.py [--root data] [--keep-archives] [--no-verify]
"""

import os

import _voc
from _common import check_count, finish, log, main_guard, parse_args

ARCHIVES = [
    ("VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
    ("VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),
]


def main():
    args = parse_args(__doc__.splitlines()[0])
    devkit, archives = _voc.fetch(args, 2007, ARCHIVES)
    trainval = _voc.read_ids(devkit, "Main/trainval.txt")
    test = _voc.read_ids(devkit, "Main/test.txt")
    check_count("VOC2007 trainval images", len(trainval), 5011, args.no_verify)
    check_count("VOC2007 test images", len(test), 4952, args.no_verify)
    out = os.path.join(args.root, "voc2007-coloc")
    per_class = {c: [] for c in _voc.CLASSES}
    members = {c: 0 for c in _voc.CLASSES}
    for image_id in trainval:
        objs = _voc.objects(devkit, image_id)
        for cls in _voc.CLASSES:
            mine = [o for o in objs if o[0] == cls]
            if any(not difficult and not truncated for _, difficult, truncated, _ in mine):
                _voc.link_image(devkit, image_id, out, cls)
                per_class[cls] += [(image_id, box) for *_, box in mine]
                members[cls] += 1
    for cls, lines in per_class.items():
        _voc.write_boxes(os.path.join(out, "boxes", cls + ".txt"), lines)
        log(f"  {cls}: {members[cls]} images")
    finish(args, archives)
    log(f"done: {out}")


if __name__ == "__main__":
    main_guard(main)
