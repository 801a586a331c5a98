#!/usr/bin/env bash
# The memorization-probe study of the closing note (issue 13), reduced to run on a 2-core CPU:
# the FC net on a class-balanced 5,000-image subset of Fashion-MNIST, p ∈ {0, 0.2, …, 1},
# 2 seeds, every probe, 3 early-stopping runs of 20 epochs; with PROBE_CNN=1 also the conv net
# on p ∈ {0, 1}. Output (checkpoints, JSON records, PNG plots, the printed tables) goes to $OUT
# (default target/probe-study); an interrupted run resumes where it stopped. Extra arguments
# go to the FC study (e.g. --seeds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/probe-study}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}

./scripts/setup.sh
cargo build --release --quiet --bin deepfactor
BIN=target/release/deepfactor
mkdir -p "$OUT"

echo "== FC net: 6 levels × 2 seeds, probes, early stopping → $OUT/fc"
nice -n 10 "$BIN" probe study --arch fc --data "$DATA" --out "$OUT/fc" \
    --p 0,0.2,0.4,0.6,0.8,1 --seeds 2 --train-subset 5000 \
    --early-stopping-runs 3 --track-epochs 20 "$@" | tee "$OUT/fc.txt"

if [ "${PROBE_CNN:-0}" = 1 ]; then
    echo "== conv net: p ∈ {0, 1}, 1 seed → $OUT/cnn"
    nice -n 10 "$BIN" probe study --arch cnn --data "$DATA" --out "$OUT/cnn" \
        --p 0,1 --seeds 1 --train-subset 5000 --early-stopping-runs 0 | tee "$OUT/cnn.txt"
fi
