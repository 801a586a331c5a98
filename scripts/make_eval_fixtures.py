#!/usr/bin/env python3
"""Writes the tiny ground-truth fixtures of the evaluation tests (tests/fixtures/eval/).

Plain python3 (pickle, struct, zlib); no third-party packages. Re-running it rewrites the same
bytes. The expected scores live in the Rust tests, computed by hand from the published
definitions; this script only writes inputs.

- oxford/: an Oxford5k-layout folder (jpg/ + gt/ with query/good/ok/junk/boxes files; one
  query file with Oxford's `oxc1_` prefix) and rankings_oxford.txt.
- revisited/gnd_tiny.pkl: a revisitop-structured pickle (dict of imlist, qimlist and gnd, a
  list of dicts with easy/hard/junk index lists and bbx), in pickle protocol 3 like the
  official gnd_roxford5k.pkl / gnd_rparis6k.pkl (written by Python 3), and
  rankings_revisited.txt.
- revisited_variants/: the same ground truth in protocols 0, 2 and 5, and a classic
  ok/junk pickle in the same structure (as the cnnimageretrieval gnd_oxford5k.pkl).
- coseg/: a co-segmentation layout (images/, masks/, boxes/, parts/).
- revisitop1m_tiny.txt: an image listing in the format of revisitop1m.txt.
"""

import os
import pickle
import struct
import sys
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "eval")

# An 8×8 mid-grey baseline JPEG (331 bytes), so that every fixture image decodes.
TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a18"
    "1616183123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c"
    "656763ffc0000b080008000801011100ffc4001f0000010501010101010100000000000000000102030405"
    "060708090a0bffc400b5100002010303020403050504040000017d01020300041105122131410613516107"
    "227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a4344"
    "45464748494a535455565758595a636465666768696a737475767778797a838485868788898a9293949596"
    "9798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3"
    "e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f002bffd9"
)


def write(path, data):
    path = os.path.join(ROOT, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)


def png_gray(width, height, on):
    """A greyscale 8-bit PNG: 255 where on(x, y), else 0."""
    raw = b"".join(
        b"\x00" + bytes(255 if on(x, y) else 0 for x in range(width)) for y in range(height)
    )

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def lines(*items):
    return "".join(f"{x}\n" for x in items)


def oxford():
    images = [f"all_souls_{i:06d}" for i in range(1, 7)] + [f"ashmolean_{i:06d}" for i in range(1, 5)]
    for name in images:
        write(f"oxford/jpg/{name}.jpg", TINY_JPEG)
    gt = "oxford/gt/"
    write(gt + "all_souls_1_query.txt", "oxc1_all_souls_000001 10.5 20.0 200.25 300.0\n")
    write(gt + "all_souls_1_good.txt", lines("all_souls_000001", "all_souls_000002"))
    write(gt + "all_souls_1_ok.txt", lines("all_souls_000003"))
    write(gt + "all_souls_1_junk.txt", lines("all_souls_000004"))
    write(gt + "all_souls_1_boxes.txt", lines("all_souls_000002 5 5 100 100", "all_souls_000003 0.5 1.5 60.0 80.0"))
    write(gt + "ashmolean_1_query.txt", "ashmolean_000001 0 0 50 60\n")
    write(gt + "ashmolean_1_good.txt", lines("ashmolean_000001", "ashmolean_000002"))
    write(gt + "ashmolean_1_ok.txt", "")
    write(gt + "ashmolean_1_junk.txt", lines("ashmolean_000003"))
    write(
        "rankings_oxford.txt",
        lines(
            "all_souls_1 all_souls_000004 all_souls_000001 ashmolean_000001 all_souls_000003 "
            "all_souls_000005 all_souls_000002 all_souls_000006 ashmolean_000002 ashmolean_000003 "
            "ashmolean_000004",
            "ashmolean_1 ashmolean_000001 ashmolean_000003 ashmolean_000004 ashmolean_000002 "
            "all_souls_000001 all_souls_000002",
        ),
    )


def revisited_gnd():
    imlist = [f"db_{i:03d}" for i in range(12)]
    qimlist = ["q_a", "q_b", "q_c"]
    gnd = [
        {"bbx": [10.0, 20.0, 110.5, 220.0], "easy": [0, 3], "hard": [5], "junk": [1]},
        {"bbx": [0.0, 0.0, 64.0, 48.0], "easy": [], "hard": [2, 4, 11], "junk": [6, 7]},
        {"bbx": [3.25, 4.5, 30.0, 40.0], "easy": [8], "hard": [9], "junk": []},
    ]
    return {"gnd": gnd, "imlist": imlist, "qimlist": qimlist}


def revisited():
    cfg = revisited_gnd()
    write("revisited/gnd_tiny.pkl", pickle.dumps(cfg, protocol=3))
    for p in (0, 2, 5):
        write(f"revisited_variants/gnd_tiny_p{p}.pkl", pickle.dumps(cfg, protocol=p))
    classic = {
        "gnd": [
            {"bbx": [1.0, 2.0, 3.0, 4.0], "ok": [0, 2], "junk": [1]},
            {"bbx": [5.0, 6.0, 7.0, 8.0], "ok": [3], "junk": []},
        ],
        "imlist": ["a", "b", "c", "d"],
        "qimlist": ["a", "d"],
    }
    write("revisited_variants/gnd_tinyclassic.pkl", pickle.dumps(classic, protocol=3))
    db = lambda *ix: " ".join(f"db_{i:03d}" for i in ix)
    write(
        "rankings_revisited.txt",
        lines(
            "q_a " + db(1, 0, 2, 5, 3, 4, 6, 7, 8, 9, 10, 11),
            "q_b " + db(6, 2, 0, 4, 7, 1, 3, 11, 5, 8, 9, 10),
            "q_c " + db(0, 9, 1, 8, 2, 3, 4, 5, 6, 7, 10, 11),
        ),
    )


def coseg():
    # Class "bird": two 8×8 images; class "cow": one.
    for cls, name in [("bird", "b1"), ("bird", "b2"), ("cow", "c1")]:
        write(f"coseg/images/{cls}/{name}.jpg", TINY_JPEG)
    write("coseg/masks/bird/b1.png", png_gray(8, 8, lambda x, y: 2 <= x < 6 and 2 <= y < 6))
    write("coseg/masks/bird/b2.png", png_gray(8, 8, lambda x, y: x < 4))
    write("coseg/masks/cow/c1.png", png_gray(8, 8, lambda x, y: False))
    write("coseg/boxes/bird.txt", lines("b1 2 2 6 6", "b2 0 0 4 8", "b2 5 5 7 7"))
    write("coseg/boxes/cow.txt", lines("c1 0 0 8 8"))
    write("coseg/parts/bird/b1/head.png", png_gray(8, 8, lambda x, y: 2 <= x < 6 and 2 <= y < 3))
    write("coseg/parts/bird/b1/body.png", png_gray(8, 8, lambda x, y: 2 <= x < 6 and 3 <= y < 6))


def listing():
    write("revisitop1m_tiny.txt", lines("jpg/0/00/0000a1b2.jpg", "jpg/0/00/0000c3d4.jpg", "jpg/9/ff/9fffe5f6.jpg"))


def main():
    oxford()
    revisited()
    coseg()
    listing()
    print(f"wrote fixtures under {os.path.normpath(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
