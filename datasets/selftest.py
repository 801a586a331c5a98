#!/usr/bin/env python3
"""Offline check of the dataset scripts' layout steps.

The scripts cannot be tested against the real servers without internet access. This builds
tiny archives with the official file names and internal structure, puts them where the
scripts keep their downloads (ROOT/.archives, ROOT/<dataset>/...), runs every script with
--no-verify (the tiny archives have neither the real checksums nor the real counts), and
checks the layouts they write. pascal_part.py is run only when scipy is installed.

Usage: python3 datasets/selftest.py [--keep DIR]
"""

import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import read_png_indexed, write_png_gray  # noqa: E402

JPEG = b"\xff\xd8\xff\xe0 tiny test jpeg \xff\xd9"


def tar(path, files):
    """files: {member name: bytes}"""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w:gz" if path.endswith("gz") else "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def png_bytes(w, h, rows, palette=False):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.png")
        write_png_gray(p, w, h, rows)
        data = open(p, "rb").read()
    if palette:  # turn colour type 0 into 3 with a PLTE chunk, same samples
        import struct
        import zlib

        ihdr_end = 8 + 8 + 13 + 4
        ihdr = bytearray(data[8:ihdr_end])
        ihdr[8 + 9] = 3
        crc = struct.pack(">I", zlib.crc32(bytes(ihdr[4:-4])))
        ihdr[-4:] = crc
        plte = bytes(768)
        chunk = struct.pack(">I", len(plte)) + b"PLTE" + plte + struct.pack(">I", zlib.crc32(b"PLTE" + plte))
        data = data[:8] + bytes(ihdr) + chunk + data[ihdr_end:]
    return data


def run(script, root, *extra):
    cmd = [sys.executable, os.path.join(HERE, script), "--root", root, "--no-verify", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{script} failed:\n{r.stderr}")
    return r.stderr


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok: {what}")


def lines(path):
    with open(path) as f:
        return f.read().split("\n")[:-1]


def oxford_paris(root):
    arch = os.path.join(root, ".archives")
    tar(os.path.join(arch, "oxbuild_images-v1.tgz"), {f"oxbuild_images/all_souls_00000{i}.jpg": JPEG for i in range(1, 4)})
    tar(
        os.path.join(arch, "gt_files_170407.tgz"),
        {
            "all_souls_1_query.txt": b"oxc1_all_souls_000001 1.5 2 30 40\n",
            "all_souls_1_good.txt": b"all_souls_000001\n",
            "all_souls_1_ok.txt": b"all_souls_000002\n",
            "all_souls_1_junk.txt": b"all_souls_000003\n",
        },
    )
    run("oxford5k.py", root)
    ox = os.path.join(root, "oxford5k")
    check(sorted(os.listdir(os.path.join(ox, "jpg"))) == [f"all_souls_00000{i}.jpg" for i in range(1, 4)], "oxford5k: jpg/ flattened")
    check(len(os.listdir(os.path.join(ox, "gt"))) == 4, "oxford5k: gt/ holds the four files")
    check(not os.path.exists(arch), "oxford5k: archives removed")
    with open(os.path.join(ox, "gt", "all_souls_1_junk.txt"), "a") as f:
        f.write("all_souls_000001\n")
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "oxford5k.py"), "--root", root, "--no-verify"], capture_output=True, text=True
    )
    check(r.returncode == 1 and "already listed in all_souls_1_good.txt:1" in r.stderr, "oxford5k: inconsistent ground truth reported")
    with open(os.path.join(ox, "gt", "all_souls_1_junk.txt"), "w") as f:
        f.write("all_souls_000003\n")

    tar(
        os.path.join(arch, "paris_1-v1.tgz"),
        {"paris/defense/paris_defense_000001.jpg": JPEG, "paris/louvre/paris_louvre_000136.jpg": b""},
    )
    tar(os.path.join(arch, "paris_2-v1.tgz"), {"paris/triomphe/paris_triomphe_000001.jpg": JPEG})
    tar(
        os.path.join(arch, "paris_120310.tgz"),
        {
            "defense_1_query.txt": b"paris_defense_000001 0 0 10 10\n",
            "defense_1_good.txt": b"paris_defense_000001\n",
            "defense_1_ok.txt": b"paris_louvre_000136\nparis_triomphe_000001\n",
            "defense_1_junk.txt": b"",
        },
    )
    run("paris6k.py", root)
    pa = os.path.join(root, "paris6k")
    check(sorted(os.listdir(os.path.join(pa, "jpg"))) == ["paris_defense_000001.jpg", "paris_triomphe_000001.jpg"], "paris6k: corrupt image removed")
    check(lines(os.path.join(pa, "gt", "defense_1_ok.txt")) == ["paris_triomphe_000001"], "paris6k: list entry of the corrupt image removed")

    cfg = {
        "gnd": [{"bbx": [1.0, 2.0, 3.0, 4.0], "easy": [0], "hard": [], "junk": [1]}],
        "imlist": ["all_souls_000002", "all_souls_000003"],
        "qimlist": ["all_souls_000001"],
    }
    os.makedirs(os.path.join(root, "roxford5k"))
    with open(os.path.join(root, "roxford5k", "gnd_roxford5k.pkl"), "wb") as f:
        pickle.dump(cfg, f, protocol=3)
    run("roxford5k.py", root)
    rox = os.path.join(root, "roxford5k", "jpg")
    check(sorted(os.listdir(rox)) == [f"all_souls_00000{i}.jpg" for i in range(1, 4)], "roxford5k: images of imlist and qimlist linked")

    # A pickle holding objects other than plain values is refused.
    bad = dict(cfg, gnd=[dict(cfg["gnd"][0], easy=range(1))])
    os.makedirs(os.path.join(root, "rparis6k"))
    with open(os.path.join(root, "rparis6k", "gnd_rparis6k.pkl"), "wb") as f:
        pickle.dump(bad, f, protocol=3)
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "rparis6k.py"), "--root", root, "--no-verify"], capture_output=True, text=True
    )
    check(r.returncode == 1 and "expected plain Python values" in r.stderr, "rparis6k: pickle with globals refused")


def voc(root):
    arch = os.path.join(root, ".archives")
    xml = (
        "<annotation><object><name>{c}</name><difficult>{d}</difficult><truncated>{t}</truncated>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>"
    )
    k = "VOCdevkit/VOC2007/"
    tar(
        os.path.join(arch, "VOCtrainval_06-Nov-2007.tar"),
        {
            k + "ImageSets/Main/trainval.txt": b"000001\n000002\n",
            k + "JPEGImages/000001.jpg": JPEG,
            k + "JPEGImages/000002.jpg": JPEG,
            k + "Annotations/000001.xml": xml.format(c="cat", d=0, t=0).encode(),
            k + "Annotations/000002.xml": xml.format(c="cat", d=1, t=0).encode(),
        },
    )
    tar(os.path.join(arch, "VOCtest_06-Nov-2007.tar"), {k + "ImageSets/Main/test.txt": b"000003\n"})
    run("voc2007.py", root)
    co = os.path.join(root, "voc2007-coloc")
    check(os.listdir(os.path.join(co, "images", "cat")) == ["000001.jpg"], "voc2007: difficult-only image left out")
    check(lines(os.path.join(co, "boxes", "cat.txt")) == ["000001 0 1 10 20"], "voc2007: box in half-open pixels")

    k = "VOCdevkit/VOC2010/"
    seg = png_bytes(4, 2, [bytes([0, 3, 3, 255]), bytes([15, 15, 0, 3])], palette=True)
    tar(
        os.path.join(arch, "VOCtrainval_03-May-2010.tar"),
        {
            k + "ImageSets/Main/trainval.txt": b"2010_000001\n",
            k + "ImageSets/Segmentation/trainval.txt": b"2010_000001\n",
            k + "JPEGImages/2010_000001.jpg": JPEG,
            k + "Annotations/2010_000001.xml": (
                "<annotation>"
                + xml.format(c="bird", d=0, t=0)[12:-13]
                + xml.format(c="person", d=0, t=1)[12:-13]
                + "</annotation>"
            ).encode(),
            k + "SegmentationClass/2010_000001.png": seg,
        },
    )
    run("voc2010.py", root)
    cs = os.path.join(root, "voc2010-coseg")
    check(sorted(os.listdir(os.path.join(cs, "images"))) == ["bird", "person"], "voc2010: classes from the class map")
    w, h, rows = read_png_indexed(os.path.join(cs, "masks", "bird", "2010_000001.png"))
    check((w, h, rows) == (4, 2, [bytes([0, 255, 255, 0]), bytes([0, 0, 0, 255])]), "voc2010: bird mask (void → 0)")
    check(lines(os.path.join(cs, "boxes", "person.txt")) == ["2010_000001 0 1 10 20"], "voc2010: boxes per class")

    try:
        import numpy as np
        from scipy.io import savemat
    except ImportError:
        print("skip: pascal_part.py (no scipy)")
        return
    part_dt = [("part_name", object), ("mask", object)]
    parts = np.zeros((1, 2), dtype=part_dt)
    parts[0, 0] = ("head", np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint8))
    parts[0, 1] = ("torso", np.array([[0, 1, 0, 0], [0, 1, 0, 0]], dtype=np.uint8))
    obj_dt = [("class", object), ("class_ind", object), ("mask", object), ("parts", object)]
    objs = np.zeros((1, 2), dtype=obj_dt)
    objs[0, 0] = ("bird", np.array([[3]]), np.array([[1, 1, 0, 0], [0, 1, 0, 0]], dtype=np.uint8), parts)
    objs[0, 1] = ("person", np.array([[15]]), np.array([[0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.uint8), np.zeros((0, 0)))
    anno = np.zeros((1, 1), dtype=[("imname", object), ("objects", object)])
    anno[0, 0] = ("2010_000001.jpg", objs)
    with tempfile.TemporaryDirectory() as d:
        mat = os.path.join(d, "2010_000001.mat")
        savemat(mat, {"anno": anno})
        tar(os.path.join(arch, "pascal-part-trainval.tar.gz"), {"Annotations_Part/2010_000001.mat": open(mat, "rb").read()})
    run("pascal_part.py", root)
    pp = os.path.join(root, "pascal-part")
    check(os.listdir(os.path.join(pp, "images")) == ["bird"], "pascal_part: only classes with parts")
    check(sorted(os.listdir(os.path.join(pp, "parts", "bird", "2010_000001"))) == ["head.png", "torso.png"], "pascal_part: one mask per part")
    _, _, rows = read_png_indexed(os.path.join(pp, "parts", "bird", "2010_000001", "torso.png"))
    check(rows == [bytes([0, 255, 0, 0]), bytes([0, 255, 0, 0])], "pascal_part: part mask pixels")


def icoseg(root):
    arch = os.path.join(root, ".archives")
    os.makedirs(arch, exist_ok=True)
    mask = png_bytes(2, 1, [bytes([0, 255])])
    with zipfile.ZipFile(os.path.join(arch, "CMU_Cornell_iCoseg_dataset.zip"), "w") as z:
        z.writestr("CMU_Cornell_iCoseg_dataset/dataset_public/images/Red Sox Players/1.jpg", JPEG)
        z.writestr("CMU_Cornell_iCoseg_dataset/dataset_public/ground_truth/Red Sox Players/1.png", mask)
    run("icoseg.py", root)
    ic = os.path.join(root, "icoseg")
    check(os.path.isfile(os.path.join(ic, "masks", "Red Sox Players", "1.png")), "icoseg: masks beside images")


def main():
    keep = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--keep" else None
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or tmp
        oxford_paris(root)
        voc(root)
        icoseg(root)
    print("all dataset layout checks passed")


if __name__ == "__main__":
    main()
