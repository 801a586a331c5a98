#!/usr/bin/env python3
"""Writes the small image fixtures for the decoding tests (needs Pillow and numpy).

    python3 scripts/make_image_fixtures.py

Output in tests/fixtures/images/: a CMYK JPEG, a 16-bit PNG, a grayscale JPEG, a JPEG whose EXIF
orientation says "rotate 90° clockwise", a truncated JPEG, a text file named .jpg, an empty
file, and a PNG whose header claims 40000×40000 pixels (with no pixel data).
"""
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "images")
os.makedirs(OUT, exist_ok=True)


def gradient(w, h):
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return np.stack([x, y, 255 - x], -1).astype(np.uint8)


rgb = Image.fromarray(gradient(48, 32))
rgb.convert("CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=95)
g16 = (np.linspace(0, 65535, 48 * 32).reshape(32, 48)).astype(np.uint16)
Image.fromarray(g16).save(os.path.join(OUT, "gray16.png"))
rgb.convert("L").save(os.path.join(OUT, "gray.jpg"), quality=95)

# 48×32 stored, EXIF orientation 6 → displayed 32×48.
exif = Image.Exif()
exif[0x0112] = 6
rgb.save(os.path.join(OUT, "exif-rotate90.jpg"), quality=95, exif=exif.tobytes())

buf = io.BytesIO()
Image.fromarray(gradient(64, 64)).save(buf, "JPEG", quality=95)
data = buf.getvalue()
open(os.path.join(OUT, "truncated.jpg"), "wb").write(data[: len(data) // 2])

open(os.path.join(OUT, "text.jpg"), "w").write("this is not an image\n")
open(os.path.join(OUT, "empty.jpg"), "wb").close()


def chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
open(os.path.join(OUT, "huge-header.png"), "wb").write(png)
print("wrote", sorted(os.listdir(OUT)))
