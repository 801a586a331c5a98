#!/usr/bin/env bash
# Runs the `nmf` bench (release) and scikit-learn/numpy on the same matrices, and prints one
# line per case:
#   case=<name> K=<k> ours_ms=<ms per iteration> sklearn_ms=<ms> ratio=<sklearn/ours> numpy_ms=<ms>
#
# Usage: scripts/bench_nmf.sh [bench options, e.g. --iters 200 --ks 1,8,64,500 --cases dense,sparse]
# Environment: PYTHON (default /root/venv-ref/bin/python, else python3), SKLEARN_DTYPE
# (float64 as the reference implementation, or float32), OUT (default target/nmf-bench),
# FEATURES (extra cargo flags, e.g. FEATURES="--features cuda" with `--device cuda` to time
# the candle tensor path on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/root/venv-ref/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OUT=${OUT:-target/nmf-bench}
DTYPE=${SKLEARN_DTYPE:-float64}
FEATURES=${FEATURES:-}
mkdir -p "$OUT"
# shellcheck disable=SC2086  # FEATURES is a list of flags
cargo bench $FEATURES --bench deepfactor -- nmf --out "$OUT" "$@" | tee "$OUT/ours.txt" >&2
"$PYTHON" scripts/bench_nmf_sklearn.py "$OUT" --dtype "$DTYPE" | tee "$OUT/sklearn.txt" >&2
"$PYTHON" - "$OUT/ours.txt" "$OUT/sklearn.txt" "$DTYPE" <<'PY'
import sys
def rows(path):
    out = {}
    for line in open(path):
        kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "case" in kv:
            out[(kv["case"], kv["K"])] = kv
    return out
ours, sk, dtype = rows(sys.argv[1]), rows(sys.argv[2]), sys.argv[3]
for key, o in ours.items():
    s = sk.get(key)
    if s is None:
        continue
    a, b = float(o["ours_ms"]), float(s["sklearn_ms"])
    print(f"case={key[0]} K={key[1]} ours_ms={a:.3f} sklearn_ms={b:.3f} ratio={b / a:.2f} "
          f"numpy_ms={float(s['numpy_ms']):.3f} sklearn_dtype={dtype}")
PY
