#!/usr/bin/env bash
# Query latency of the crop check: every query of a ground truth run with the check off (the
# baseline), auto (the default: the cut-out only where the region's factor coverage is below
# the level) and always, back to back on the same index, with mAP. Usage:
#   scripts/bench_crop_check.sh INDEX GT_DIR
# e.g. scripts/bench_crop_check.sh target/r12/instance-dev.dfi ../shared/data/instance-dev
# Needs a release build (cargo build --release). Prints per mode: mAP, mean ms per query
# (network, description, cut-out and search), the cut-out's mean ms per query, the queries that
# checked their cut-out, and the query time's ratio to the check off.
set -euo pipefail
index=${1:?index directory}
gt=${2:?ground-truth folder (gt/ and jpg/)}
bin=${DEEPFACTOR:-$(dirname "$0")/../target/release/deepfactor}
printf '%-8s %7s %10s %10s %8s %8s\n' mode mAP "ms/query" "cut-out ms" checks "vs off"
base=""
for mode in off auto always; do
  read -r map ms crop checks < <("$bin" eval --index "$index" --gt "$gt" --json --crop-check "$mode" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); f=d["factor_search"] or {}; print(round(d["map"],2), d["mean_query_ms"], d["mean_crop_ms"], f.get("crop_checks", 0))')
  [ -z "$base" ] && base=$ms
  printf '%-8s %7s %10.0f %10.0f %8s %8.2f\n' "$mode" "$map" "$ms" "$crop" "$checks" \
    "$(python3 -c "print($ms/$base)")"
done
