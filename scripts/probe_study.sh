#!/usr/bin/env bash
# The memorization-probe study of the closing note (issue 13), reduced to run on a shared
# 2-core CPU: the FC net on a class-balanced 5,000-image subset of Fashion-MNIST,
# p ∈ {0, 0.2, …, 1}, 2 seeds, every probe on single- and multi-class batches, and 3
# early-stopping runs on p = 0 (12 epochs, tracked twice per epoch on the K grid
# 1, 2, 4, 8, 16, width). Two processes share the training and probing (and the output
# folder): seed 0 of every level, and seeds 1… of every level; a last pass reuses everything
# they wrote, runs the early-stopping runs and prints the tables of the whole grid. A cut-off
# run still leaves each pass's own tables. With PROBE_CNN=1 also the conv net on p ∈ {0, 1}.
# Output (checkpoints, JSON records, PNG plots, the printed tables) goes to $OUT (default
# target/probe-study); an interrupted run resumes where it stopped. SEEDS=N sets the seeds per
# level (default 2); extra arguments go to every FC pass (e.g. --train-subset 10000).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/probe-study}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
SEEDS=${SEEDS:-2}

[ -n "${SKIP_SETUP:-}" ] || ./scripts/setup.sh
cargo build --release --quiet --bin deepfactor
BIN=target/release/deepfactor
mkdir -p "$OUT"

fc_study() {
    nice -n 10 "$BIN" probe study --arch fc --data "$DATA" --out "$OUT/fc" \
        --p 0,0.2,0.4,0.6,0.8,1 --train-subset 5000 "$@"
}
EARLY=(--early-stopping-runs 3 --track-epochs 12 --track-every 20 --track-k 1,2,4,8,16,2048)

# Seed 0 and seeds 1… of every level side by side, then the whole grid with the early-stopping
# runs (which reuse p = 0, seed 0 from the first pass).
echo "== FC net: seed 0, and seeds 1…$((SEEDS - 1)) beside it → $OUT/fc"
fc_study --seeds 1 --early-stopping-runs 0 "$@" > "$OUT/fc-seed0.txt" &
first=$!
if [ "$SEEDS" -gt 1 ]; then
    fc_study --first-seed 1 --seeds $((SEEDS - 1)) --early-stopping-runs 0 "$@" \
        > "$OUT/fc-seeds1.txt"
fi
wait "$first"
echo "== FC net: the whole grid ($SEEDS seeds) and early stopping → $OUT/fc"
fc_study --seeds "$SEEDS" "${EARLY[@]}" "$@" | tee "$OUT/fc.txt"

if [ "${PROBE_CNN:-0}" = 1 ]; then
    echo "== conv net: p ∈ {0, 1}, 1 seed → $OUT/cnn"
    nice -n 10 "$BIN" probe study --arch cnn --data "$DATA" --out "$OUT/cnn" \
        --p 0,1 --seeds 1 --train-subset 5000 --early-stopping-runs 0 | tee "$OUT/cnn.txt"
fi
