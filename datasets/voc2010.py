#!/usr/bin/env python3
"""PASCAL VOC 2010: trainval (10,103 annotated photos, 20 classes), boxes and segmentations.

Downloads trainval from the PASCAL VOC site (University of Oxford mirror), checks its MD5,
extracts it unchanged, and derives the co-segmentation layout (CosegGroundTruth::load), whose
14-class subset ../shared/data/voc-coseg and semantic-dev were drawn from:

    ROOT/voc2010/VOCdevkit/VOC2010/...          the official release
    ROOT/voc2010-coseg/images/<class>/<id>.jpg  segmentation-trainval images with the class
    ROOT/voc2010-coseg/masks/<class>/<id>.png   255 where SegmentationClass is that class,
                                                else 0 (VOC's 255 "void" border → 0)
    ROOT/voc2010-coseg/boxes/<class>.txt        "<id> x1 y1 x2 y2" per object of the class

An image joins every class present in its SegmentationClass map. This is our derivation from
the official annotation, not the exact subset of any co-segmentation paper.

Usage: python3 datasets/voc2010.py [--root data] [--keep-archives] [--no-verify]
"""

import os

import _voc
from _common import check_count, finish, log, main_guard, parse_args, read_png_indexed, write_png_gray

ARCHIVES = [("VOCtrainval_03-May-2010.tar", "da459979d0c395079b5c75ee67908abb")]


def main():
    args = parse_args(__doc__.splitlines()[0])
    devkit, archives = _voc.fetch(args, 2010, ARCHIVES)
    check_count("VOC2010 trainval images", len(_voc.read_ids(devkit, "Main/trainval.txt")), 10103, args.no_verify)
    seg_ids = _voc.read_ids(devkit, "Segmentation/trainval.txt")
    check_count("VOC2010 segmentation trainval images", len(seg_ids), 1928, args.no_verify)
    out = os.path.join(args.root, "voc2010-coseg")
    boxes = {c: [] for c in _voc.CLASSES}
    counts = {c: 0 for c in _voc.CLASSES}
    for image_id in seg_ids:
        w, h, rows = read_png_indexed(os.path.join(devkit, "SegmentationClass", image_id + ".png"))
        present = set()
        for r in rows:
            present.update(r)
        objs = _voc.objects(devkit, image_id)
        for k, cls in enumerate(_voc.CLASSES, start=1):
            if k not in present:
                continue
            _voc.link_image(devkit, image_id, out, cls)
            write_png_gray(
                os.path.join(out, "masks", cls, image_id + ".png"),
                w,
                h,
                (bytes(255 if v == k else 0 for v in r) for r in rows),
            )
            boxes[cls] += [(image_id, box) for name, _, _, box in objs if name == cls]
            counts[cls] += 1
    for cls in _voc.CLASSES:
        _voc.write_boxes(os.path.join(out, "boxes", cls + ".txt"), boxes[cls])
        log(f"  {cls}: {counts[cls]} images")
    finish(args, archives)
    log(f"done: {out}")


if __name__ == "__main__":
    main_guard(main)
