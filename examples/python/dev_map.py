"""The dev-set mAP row of NMF V+U, from Python, next to the CLI's numbers.

A notebook-style walk through the Python package on the instance development set (658
photos, 36 queries with boxes): build the index, run every query in the five settings of the
table in the closing notes (crop, full image, crop + QE5, filter, filter + QE5), score the
rankings with the classic protocol, then run ``deepfactor eval --index … --json`` on the same
index for each setting and check the two agree exactly.

    pip install .                      # the package, from the checkout
    cargo build --release              # the CLI to compare with
    python examples/python/dev_map.py [--data ../shared/data/instance-dev] [--index DIR]

The index is kept (default ``target/dev_map/instance-dev.dfi``); a second run only checks it
is up to date.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

import deepfactor

ROOT = pathlib.Path(__file__).resolve().parents[2]

# %% Settings: the columns of the table (box mode, query expansion).
COLUMNS = [
    ("crop", "crop", 0),
    ("full", None, 0),
    ("crop + QE5", "crop", 5),
    ("filter", "filter", 0),
    ("filter + QE5", "filter", 5),
]


def progress(label):
    """A progress callback printing one updating line."""
    start = time.time()

    def report(done, total):
        rate = done / max(time.time() - start, 1e-9)
        print(f"\r{label}: {done}/{total} ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)

    return report


def image_path(images: pathlib.Path, name: str) -> pathlib.Path:
    for p in images.glob(name + ".*"):
        return p
    raise FileNotFoundError(images / f"{name}.jpg")


def rankings_from_python(index, gt, images, box_mode, qe):
    """Every query of ``gt`` searched with the package: query name → ranked image names."""
    rankings = {}
    for q in gt.queries:
        box = q["box"] if box_mode else None
        hits = index.search(
            image_path(images, q["image"]),
            box=box,
            box_mode=box_mode or "filter",
            k=len(index),
            qe=qe,
            exact=True,
        )
        rankings[q["name"]] = [h.path.stem for h in hits]
    return rankings


def cli_map(cli, index_dir, data, box_mode, qe):
    out = subprocess.run(
        [str(cli), "eval", "--index", str(index_dir), "--gt", str(data), "--box", box_mode or "none",
         "--qe", str(qe), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["map"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "instance-dev",
                    help="the instance development set (default ../shared/data/instance-dev)")
    ap.add_argument("--index", type=pathlib.Path, default=ROOT / "target" / "dev_map" / "instance-dev.dfi")
    ap.add_argument("--cli", type=pathlib.Path, default=ROOT / "target" / "release" / "deepfactor")
    ap.add_argument("--weights", type=pathlib.Path, default=None)
    ap.add_argument("--no-cli", action="store_true", help="only the Python numbers")
    ap.add_argument("--columns", default=",".join(c[0] for c in COLUMNS),
                    help="comma-separated columns to run (default: all five)")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: no such data set (see ../shared/data/README.md)")

    # %% 1. The index: NMF V+U descriptors of every photo (EfficientNet-Lite0 head, 512 px, K=8).
    t = time.time()
    index = deepfactor.Index.build(
        args.data / "jpg", args.index, descriptor="nmf-vu",
        weights=str(args.weights) if args.weights else None, progress=progress("index"),
    )
    print(f"{index!r} in {time.time() - t:.0f} s; report: {json.dumps(index.report['counts'])}")

    # %% 2. The ground truth and the queries.
    gt = deepfactor.GroundTruth(args.data)
    images = args.data / "jpg"
    print(f"{gt!r}")

    # %% 3. Every setting from Python, scored with the classic protocol.
    rows = []
    wanted = [c.strip() for c in args.columns.split(",")]
    for label, box_mode, qe in COLUMNS:
        if label not in wanted:
            continue
        t = time.time()
        rankings = rankings_from_python(index, gt, images, box_mode, qe)
        # As `deepfactor eval --index`: ranked images the ground truth does not list are
        # distractors.
        record = deepfactor.evaluate(gt, rankings, protocol="classic", distractors=True)
        py_s = time.time() - t
        cli = None
        if not args.no_cli:
            t = time.time()
            cli = cli_map(args.cli, args.index, args.data, box_mode, qe)
            cli_s = time.time() - t
        rows.append((label, record["map"], cli))
        print(f"{label:>14}: Python {record['map']!r} ({py_s:.0f} s)"
              + (f"   CLI {cli!r} ({cli_s:.0f} s)" if cli is not None else ""), flush=True)

    # %% 4. The row, and the check.
    print("\n| NMF V+U | " + " | ".join(label for label, _, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    print("| Python | " + " | ".join(f"{m:.2f}" for _, m, _ in rows) + " |")
    if not args.no_cli:
        print("| CLI | " + " | ".join(f"{c:.2f}" for _, _, c in rows) + " |")
        differ = [label for label, m, c in rows if m != c]
        if differ:
            sys.exit(f"Python and the CLI differ in: {', '.join(differ)}")
        print("Python and the CLI agree exactly in every column.")


if __name__ == "__main__":
    main()
