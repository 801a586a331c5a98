#!/usr/bin/env bash
# Feature-extraction speed on the CPU: deepfactor (candle) against PyTorch on the same models,
# input size and thread count. Prints one line per backbone:
#   backbone=<name> ours_img_s=<x> torch_img_s=<y> ratio=<ours/torch>
# Needs a Python with torch and timm ($PYTHON, default python3). Extra arguments go to both.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ours=$(RAYON_NUM_THREADS=${THREADS:-2} cargo bench --quiet --bench deepfactor -- backbone "$@")
theirs=$("$PYTHON" scripts/bench_backbone_torch.py --threads "${THREADS:-2}" "$@")
echo "$ours"
echo "$theirs"
while read -r line; do
    name=$(sed -E 's/.*backbone=([^ ]+).*/\1/' <<<"$line")
    o=$(sed -E 's/.*ours_img_s=([^ ]+).*/\1/' <<<"$line")
    t=$(grep "backbone=$name " <<<"$theirs" | sed -E 's/.*torch_img_s=([^ ]+).*/\1/')
    [ -n "$t" ] && awk -v n="$name" -v o="$o" -v t="$t" \
        'BEGIN { printf "backbone=%s ours_img_s=%.3f torch_img_s=%.3f ratio=%.3f\n", n, o, t, o / t }'
done <<<"$ours"
