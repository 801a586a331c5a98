#!/usr/bin/env bash
# Localization latency: ms per hit of every localization variant on the same query and the
# same hits, against the thesis' joint path (network on the hits, mass-selected factors), in
# one run. Usage:
#   scripts/bench_localize.sh INDEX GT_DIR [QUERY_NAME] [HITS] [REPEATS]
# e.g. scripts/bench_localize.sh target/loc/instance-loc-dev.dfi ../shared/data/instance-loc-dev ld000 10 3
# Needs a release build (cargo build --release). Prints one row per variant: the median
# localize time over the repeats (the search's own `localize_ms`), per hit, and its ratio to
# the thesis' joint path. The sharpened row includes reading the hits' images (and the
# query's, for the calibration); it against the row above it is the cost of sharpening.
set -euo pipefail
index=${1:?index directory}
gt=${2:?ground-truth folder (gt/ and jpg/)}
name=${3:-$(ls "$gt/gt" | grep _query.txt | head -1 | sed 's/_query.txt//')}
hits=${4:-10}
repeats=${5:-3}
bin=${DEEPFACTOR:-$(dirname "$0")/../target/release/deepfactor}
read -r image x1 y1 x2 y2 < "$gt/gt/${name}_query.txt"

file=$(ls "$gt/jpg/$image".* | head -1)
run() { # variant, extra args...
  local v=$1; shift
  for _ in $(seq "$repeats"); do
    "$bin" search "$index" "$file" --box "$x1,$y1,$x2,$y2" -k "$hits" --exact \
      --localize "$v" --localize-top "$hits" --json "$@" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); n=sum(1 for h in r["hits"] if h.get("location")); print(r["timings"]["localize_ms"], n)'
  done | sort -n | awk -v r="$repeats" 'NR==int((r+1)/2){print}'
}
printf '%-44s %10s %6s %10s %8s\n' variant "ms total" hits "ms/hit" "vs old"
base=""
while IFS='|' read -r label variant args; do
  read -r ms n < <(run "$variant" $args)
  per=$(python3 -c "print(f'{$ms/max($n,1):.1f}')")
  [ -z "$base" ] && base=$ms
  ratio=$(python3 -c "print(f'{$ms/$base:.3f}')")
  printf '%-44s %10.1f %6d %10s %8s\n' "$label" "$ms" "$n" "$per" "$ratio"
done <<'VARIANTS'
joint, thesis selection (old default)|joint|--selection mass --whole-view off
stored, best match (old stored)|stored|--matching best --whole-view off
joint, matched concepts|joint|
joint on stored reconstructions, matched|joint-stored|
stored, standardized + whole view|stored|--sharpen none
stored, standardized + whole view + sharpen colour (default)|stored|--sharpen colour
VARIANTS
