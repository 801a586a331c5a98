"""Shared helpers of the dataset scripts: download, verify, extract, lay out.

Standard library only. Every script takes --root (where datasets go, default ./data),
--no-verify (skip checksum and count checks, for a changed upstream file; the script still
says what it skipped) and --keep-archives (keep the downloaded archives in ROOT/.archives;
by default they are deleted once the layout is complete).
"""

import argparse
import hashlib
import os
import shutil
import struct
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib

USER_AGENT = "deepfactor-datasets/1 (+https://github.com; research benchmark download)"
CHUNK = 1 << 20


class DatasetError(Exception):
    """A failure the user must act on; printed without a traceback."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args(description, extra=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--root", default="data", help="folder that receives the datasets (default: ./data)")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip checksum, size and count checks (use only if upstream changed a file)",
    )
    p.add_argument("--keep-archives", action="store_true", help="keep downloaded archives in ROOT/.archives")
    if extra:
        extra(p)
    args = p.parse_args()
    args.root = os.path.abspath(args.root)
    args.archives = os.path.join(args.root, ".archives")
    return args


def main_guard(fn):
    """Runs fn(), turning DatasetError into a one-line message and exit status 1."""
    try:
        fn()
    except DatasetError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted; partial downloads are kept as *.part and resumed next time")
        sys.exit(130)


def md5sum(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path, md5=None, size=None, no_verify=False):
    """Checks a downloaded file's size and MD5 (where known)."""
    if no_verify:
        log(f"  not verifying {os.path.basename(path)} (--no-verify)")
        return
    got_size = os.path.getsize(path)
    if size is not None and got_size != size:
        raise DatasetError(
            f"{path}: {got_size} bytes, expected {size}. Delete it and run again; if upstream "
            "changed the file, re-run with --no-verify."
        )
    if md5 is not None:
        got = md5sum(path)
        if got != md5:
            raise DatasetError(
                f"{path}: MD5 {got}, expected {md5}. Delete it and run again; if upstream "
                "changed the file, re-run with --no-verify."
            )
        log(f"  MD5 ok: {os.path.basename(path)}")


def download(urls, dest, md5=None, size=None, no_verify=False):
    """Downloads the first reachable URL of `urls` to `dest` (resuming a `.part` file), then
    verifies it. An existing `dest` that verifies is kept."""
    if isinstance(urls, str):
        urls = [urls]
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.exists(dest):
        log(f"  have {os.path.basename(dest)}")
        verify(dest, md5, size, no_verify)
        return dest
    part = dest + ".part"
    errors = []
    for url in urls:
        for attempt in range(3):
            try:
                _fetch(url, part)
                os.replace(part, dest)
                verify(dest, md5, size, no_verify)
                return dest
            except (urllib.error.URLError, OSError, ConnectionError) as e:
                errors.append(f"{url}: {e}")
                log(f"  {url}: {e} (attempt {attempt + 1} of 3)")
                time.sleep(2 * (attempt + 1))
    raise DatasetError(f"could not download {os.path.basename(dest)}:\n  " + "\n  ".join(errors))


def _fetch(url, part):
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        status = getattr(resp, "status", 200)
        if have and status != 206:
            have = 0  # the server ignored the range: start over
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        mode = "ab" if have else "wb"
        done, last = have, 0.0
        log(f"  downloading {url}" + (f" ({total / 1e6:.1f} MB)" if total else ""))
        with open(part, mode) as f:
            for block in iter(lambda: resp.read(CHUNK), b""):
                f.write(block)
                done += len(block)
                now = time.time()
                if now - last > 5:
                    last = now
                    pct = f" {100 * done / total:.0f}%" if total else ""
                    log(f"    {done / 1e6:.0f} MB{pct}")
        if total is not None and done != total:
            raise ConnectionError(f"connection closed after {done} of {total} bytes")


def _safe_target(dest, name):
    target = os.path.realpath(os.path.join(dest, name))
    root = os.path.realpath(dest)
    if target != root and not target.startswith(root + os.sep):
        raise DatasetError(f"archive member {name!r} would land outside {dest}; refusing")
    return target


def extract(archive, dest, members=None):
    """Extracts a .tar/.tgz/.tar.gz/.zip into `dest`, refusing members that would escape it
    and links. `members`, if given, is a predicate on member names."""
    os.makedirs(dest, exist_ok=True)
    log(f"  extracting {os.path.basename(archive)}")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if members and not members(info.filename):
                    continue
                _safe_target(dest, info.filename)
                z.extract(info, dest)
        return
    with tarfile.open(archive) as t:
        for m in t:
            if members and not members(m.name):
                continue
            _safe_target(dest, m.name)
            if not (m.isfile() or m.isdir()):
                continue
            t.extract(m, dest)


def files_under(folder, exts):
    """Every file below `folder` whose extension (lower case, with dot) is in `exts`."""
    out = []
    for dirpath, _, names in os.walk(folder):
        for n in names:
            if os.path.splitext(n)[1].lower() in exts:
                out.append(os.path.join(dirpath, n))
    return sorted(out)


def flatten(files, dst):
    """Moves files into `dst` (one level), refusing two files with one name."""
    os.makedirs(dst, exist_ok=True)
    seen = set()
    for f in files:
        name = os.path.basename(f)
        if name in seen:
            raise DatasetError(f"two files named {name} in the archive; cannot flatten")
        seen.add(name)
        shutil.move(f, os.path.join(dst, name))


def link_or_copy(src, dst):
    """Hard-links `src` to `dst` (falling back to a copy across file systems)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def check_count(what, got, expected, no_verify):
    if got == expected:
        log(f"  {what}: {got} (as expected)")
    elif no_verify:
        log(f"  {what}: {got}, expected {expected} (not checked: --no-verify)")
    else:
        raise DatasetError(
            f"{what}: found {got}, expected {expected}. The download may be incomplete; "
            "delete the dataset folder and run again (or --no-verify if upstream changed)."
        )


def finish(args, archives):
    if args.keep_archives:
        return
    for a in archives:
        if os.path.exists(a):
            os.remove(a)
    try:
        os.rmdir(args.archives)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Minimal PNG reading and writing (8-bit greyscale / palette, non-interlaced), enough for the
# PASCAL VOC class maps and our binary masks without third-party packages.


def write_png_gray(path, width, height, rows):
    """Writes an 8-bit greyscale PNG; `rows` yields `height` bytes-like rows of `width`."""
    raw = bytearray()
    n = 0
    for row in rows:
        row = bytes(row)
        if len(row) != width:
            raise ValueError(f"row of {len(row)} bytes in a {width}-wide PNG")
        raw += b"\x00" + row
        n += 1
    if n != height:
        raise ValueError(f"{n} rows in a {height}-high PNG")

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(bytes(raw), 6)))
        f.write(chunk(b"IEND", b""))


def read_png_indexed(path):
    """Reads an 8-bit palette or greyscale, non-interlaced PNG; returns (width, height, rows)
    with the raw sample values (palette indices for a palette PNG)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise DatasetError(f"{path}: not a PNG")
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        elif tag == b"IEND":
            break
    if header is None:
        raise DatasetError(f"{path}: no IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (0, 3) or interlace != 0:
        raise DatasetError(
            f"{path}: PNG with bit depth {depth}, colour type {colour}, interlace {interlace}; "
            "only 8-bit greyscale/palette, non-interlaced is read here"
        )
    raw = zlib.decompress(bytes(idat))
    stride = width
    rows, prev = [], bytearray(stride)
    for y in range(height):
        off = y * (stride + 1)
        kind = raw[off]
        line = bytearray(raw[off + 1 : off + 1 + stride])
        if kind == 1:
            for x in range(1, stride):
                line[x] = (line[x] + line[x - 1]) & 0xFF
        elif kind == 2:
            for x in range(stride):
                line[x] = (line[x] + prev[x]) & 0xFF
        elif kind == 3:
            for x in range(stride):
                left = line[x - 1] if x else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 0xFF
        elif kind == 4:
            for x in range(stride):
                a = line[x - 1] if x else 0
                b = prev[x]
                c = prev[x - 1] if x else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        elif kind != 0:
            raise DatasetError(f"{path}: bad PNG filter {kind} on row {y}")
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def check_classic_layout(gt_dir, jpg_dir):
    """Checks what deepfactor's loader will check: every listed image exists, and no image is
    listed twice for one query (in one list or across good/ok/junk). Raises with every
    problem found (the loader would refuse the first)."""
    images = {os.path.splitext(n)[0] for n in os.listdir(jpg_dir)}
    problems = []
    for q in sorted(f for f in os.listdir(gt_dir) if f.endswith("_query.txt")):
        qname = q[: -len("_query.txt")]
        with open(os.path.join(gt_dir, q)) as f:
            first = f.read().split()
        if len(first) != 5:
            problems.append(f"{q}: expected '<image> x1 y1 x2 y2'")
        else:
            name = first[0] if first[0] in images else first[0].removeprefix("oxc1_")
            if name not in images:
                problems.append(f"{q}: unknown image {first[0]}")
            x1, y1, x2, y2 = (float(v) for v in first[1:])
            if x2 < x1 or y2 < y1:
                problems.append(f"{q}: inverted box")
        seen = {}
        for kind in ("good", "ok", "junk"):
            fname = f"{qname}_{kind}.txt"
            with open(os.path.join(gt_dir, fname)) as f:
                for n, line in enumerate(f, 1):
                    name = line.strip()
                    if not name:
                        continue
                    if name not in images:
                        problems.append(f"{fname}:{n}: unknown image {name}")
                    if name in seen:
                        problems.append(f"{fname}:{n}: {name} already listed in {seen[name]}")
                    seen[name] = f"{fname}:{n}"
    if problems:
        raise DatasetError(
            f"{gt_dir}: the ground truth has {len(problems)} problem(s) deepfactor's loader "
            "refuses:\n  " + "\n  ".join(problems[:20])
        )
    log("  ground truth consistent with the images")
