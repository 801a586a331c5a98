"""Per-call overhead of the Python package against the library and the CLI.

    pip install .
    cargo build --release --example reference_outputs --bin deepfactor
    python examples/python/overhead.py [--index DIR]

NMF: the median time of ``deepfactor.nmf`` on a seeded random matrix against the library's
``Nmf::fit`` on the same matrix (``reference_outputs time-nmf``, release build), for a tiny and
a realistic size. Search: the median wall time of ``Index.search`` against the time the
library reports for the same query (``timings.total_ms`` of ``deepfactor search --json``) and
the CLI's wall time per query (a process: start, weights, search). Every line prints the
ratio against the baseline measured in the same run.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import tempfile
import time

import numpy as np

import deepfactor

ROOT = pathlib.Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"


def lcg_matrix(rows, cols):
    """The matrix `reference_outputs time-nmf` factorizes, bit for bit."""
    state = 12345
    out = np.empty(rows * cols, np.float32)
    for i in range(rows * cols):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out[i] = np.float32(state >> 40) / np.float32(1 << 24)
    return out.reshape(rows, cols)


def median_time(f, calls):
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=pathlib.Path, default=None, help="an index of examples/photos (built if absent)")
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args()

    print("| call | Python | library | ratio |")
    print("|---|---|---|---|")
    for rows, cols, k, iters, calls in [(16, 8, 2, 10, 2000), (352, 1280, 8, 200, 5)]:
        a = lcg_matrix(rows, cols)
        py = median_time(lambda: deepfactor.nmf(a, k, max_iter=iters, tol=0.0), calls)
        out = subprocess.run(
            [str(RELEASE / "examples" / "reference_outputs"), "time-nmf", str(rows), str(cols), str(k), str(iters), str(calls)],
            check=True, capture_output=True, text=True,
        ).stdout
        lib = float(out)
        print(f"| nmf {rows}×{cols}, K={k}, {iters} it | {py * 1e6:.1f} µs | {lib * 1e6:.1f} µs | {py / lib:.2f} |")

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or pathlib.Path(tmp) / "photos.dfi"
        index = deepfactor.Index.build(ROOT / "examples" / "photos", index_dir)
        query = ROOT / "examples" / "photos" / "box_in_scene.jpg"
        for label, kwargs, flags in [
            ("search (whole image)", {}, []),
            ("search (region, filter)", {"box": (90, 150, 255, 280)}, ["--box", "90,150,255,280"]),
        ]:
            index.search(query, k=10, exact=True, **kwargs)  # warm
            py = median_time(lambda: index.search(query, k=10, exact=True, **kwargs), args.calls)
            lib, cli = [], []
            for _ in range(args.calls):
                t = time.perf_counter()
                out = subprocess.run(
                    [str(RELEASE / "deepfactor"), "search", str(index_dir), str(query), "-k", "10", "--exact", "--json", *flags],
                    check=True, capture_output=True, text=True,
                ).stdout
                cli.append(time.perf_counter() - t)
                lib.append(json.loads(out)["timings"]["total_ms"] / 1000)
            lib_s, cli_s = statistics.median(lib), statistics.median(cli)
            print(f"| {label} | {py * 1e3:.1f} ms | {lib_s * 1e3:.1f} ms (CLI process {cli_s * 1e3:.0f} ms) | "
                  f"{py / lib_s:.2f} (vs CLI {py / cli_s:.2f}) |")


if __name__ == "__main__":
    main()
