"""Shared steps of voc2007.py, voc2010.py and pascal_part.py."""

import os
import xml.etree.ElementTree as ET

from _common import DatasetError, download, extract, link_or_copy, log

BASE = "http://host.robots.ox.ac.uk/pascal/VOC/"
CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]


def fetch(args, year, archives):
    """Downloads and extracts `archives` [(file, md5)] of a VOC year into ROOT/voc<year>;
    returns (devkit folder, downloaded archives)."""
    dest = os.path.join(args.root, f"voc{year}")
    devkit = os.path.join(dest, "VOCdevkit", f"VOC{year}")
    done = os.path.join(dest, ".extracted")
    paths = []
    if os.path.exists(done):
        log(f"{devkit}: already extracted")
        return devkit, paths
    for name, md5 in archives:
        p = download(BASE + f"voc{year}/" + name, os.path.join(args.archives, name), md5=md5, no_verify=args.no_verify)
        paths.append(p)
        extract(p, dest)
    if not os.path.isdir(devkit):
        raise DatasetError(f"{dest}: the archives did not contain VOCdevkit/VOC{year}")
    open(done, "w").close()
    return devkit, paths


def read_ids(devkit, image_set):
    path = os.path.join(devkit, "ImageSets", image_set)
    if not os.path.isfile(path):
        raise DatasetError(f"missing {path}")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def objects(devkit, image_id):
    """[(class, difficult, truncated, (x1, y1, x2, y2))] of an image, boxes converted from
    VOC's 1-based inclusive pixel indices to half-open pixel coordinates [x1, x2)."""
    path = os.path.join(devkit, "Annotations", image_id + ".xml")
    root = ET.parse(path).getroot()
    out = []
    for obj in root.findall("object"):
        name = obj.findtext("name", "").strip()
        if name not in CLASSES:
            raise DatasetError(f"{path}: unknown class {name!r}")
        b = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DatasetError(f"{path}: inverted box for {name}")
        out.append(
            (
                name,
                obj.findtext("difficult", "0").strip() == "1",
                obj.findtext("truncated", "0").strip() == "1",
                (xmin - 1, ymin - 1, xmax, ymax),
            )
        )
    return out


def write_boxes(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for image_id, (x1, y1, x2, y2) in lines:
            f.write(f"{image_id} {x1:g} {y1:g} {x2:g} {y2:g}\n")


def link_image(devkit, image_id, out, cls):
    link_or_copy(
        os.path.join(devkit, "JPEGImages", image_id + ".jpg"),
        os.path.join(out, "images", cls, image_id + ".jpg"),
    )
