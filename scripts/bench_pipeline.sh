#!/usr/bin/env bash
# Indexing throughput: `deepfactor index build` (decode → resize → EfficientNet-Lite0 → NMF →
# NMF V+U descriptor → index segment, default recipe) against a Python pipeline doing the same
# work (scripts/bench_pipeline_torch.py: PIL + PyTorch + scikit-learn NMF), on the same real
# photos with the same thread count. The photos are split into chunks and the two sides
# alternate chunk by chunk (ours first on odd chunks, Python first on even ones), so that load
# from other processes hits both alike. Prints one line per chunk to stderr, then:
#   pipeline images=<n> threads=<t> ours_img_s=<x> python_img_s=<y> ratio=<x/y>
# Our time is the whole `index build` process (start-up, weights, commits included); Python's
# starts after its imports and model load.
#
# Usage: scripts/bench_pipeline.sh [--photos DIR] [--count 500] [--chunks 5] [--threads 2]
#                                  [--weights LITE0.pth]
# Defaults: $DEEPFACTOR_DATA (or ../shared/data)/instance-dev/jpg, the weights scripts/setup.sh fetched
# (~/.cache/deepfactor/weights/efficientnet-lite0-57934424.pth). Needs a Python with torch,
# timm, scikit-learn, scipy and pillow: $PYTHON (default python3), e.g. /opt/pyref/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PYTHON=${PYTHON:-python3}
photos=${DEEPFACTOR_DATA:-../shared/data}/instance-dev/jpg count=500 chunks=5 threads=${THREADS:-2}
weights=${DEEPFACTOR_EFFICIENTNET_LITE0_WEIGHTS:-${DEEPFACTOR_HOME:-$HOME/.cache/deepfactor}/weights/efficientnet-lite0-57934424.pth}
while [ $# -gt 0 ]; do
    case "$1" in
        --photos) photos=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --chunks) chunks=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --weights) weights=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "bench_pipeline.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
die() { echo "bench_pipeline.sh: $*" >&2; exit 2; }
[ -d "$photos" ] || die "no photo folder $photos (give one with --photos)"
[ -f "$weights" ] || die "no EfficientNet-Lite0 weights at $weights (run scripts/setup.sh or give --weights)"
[[ "$count" =~ ^[1-9][0-9]*$ && "$chunks" =~ ^[1-9][0-9]*$ && "$threads" =~ ^[1-9][0-9]*$ ]] \
    || die "--count, --chunks and --threads take positive integers"
"$PYTHON" -c 'import torch, timm, sklearn, scipy, PIL' 2>/dev/null \
    || die "$PYTHON lacks torch, timm, scikit-learn, scipy or pillow; set PYTHON=/path/to/python"
cargo build --release --quiet >&2
work=$root/target/bench_pipeline
rm -rf "$work"
mkdir -p "$work"
# A copy, so that a build during the run cannot swap the binary under it.
bin=$work/deepfactor
cp "${CARGO_TARGET_DIR:-$root/target}/release/deepfactor" "$bin"
photos=$(cd "$photos" && pwd)
mapfile -t files < <(find "$photos" -maxdepth 1 -type f \
    \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) -printf '%f\n' | sort | head -n "$count")
n=${#files[@]}
[ "$n" -ge "$chunks" ] || die "$photos holds $n photos, fewer than --chunks $chunks"
per=$(( (n + chunks - 1) / chunks ))
for ((c = 0; c < chunks; c++)); do
    mkdir -p "$work/chunk$c"
    : >"$work/chunk$c.txt"
    for f in "${files[@]:c*per:per}"; do
        ln -s "$photos/$f" "$work/chunk$c/$f"
        echo "$photos/$f" >>"$work/chunk$c.txt"
    done
done
ours() {
    local t0 t1
    t0=$(date +%s.%N)
    RAYON_NUM_THREADS=$threads "$bin" index build "$work/chunk$1" -o "$work/index$1" --json \
        >"$work/ours$1.json" 2>"$work/ours$1.err" || { cat "$work/ours$1.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
python_side() {
    OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads \
        "$PYTHON" scripts/bench_pipeline_torch.py --list "$work/chunk$1.txt" --weights "$weights" \
        --threads "$threads" --out "$work/python$1.npz" | sed -nE 's/.*seconds=([^ ]+).*/\1/p'
}
ours_total=0 python_total=0 images=0
for ((c = 0; c < chunks; c++)); do
    m=$(wc -l <"$work/chunk$c.txt")
    [ "$m" -gt 0 ] || continue
    if ((c % 2 == 0)); then o=$(ours "$c"); p=$(python_side "$c"); else p=$(python_side "$c"); o=$(ours "$c"); fi
    [ -n "$p" ] || die "the Python pipeline printed no timing"
    echo "  chunk $c: $m images, ours ${o}s, python ${p}s" >&2
    ours_total=$(awk -v a="$ours_total" -v b="$o" 'BEGIN { print a + b }')
    python_total=$(awk -v a="$python_total" -v b="$p" 'BEGIN { print a + b }')
    images=$((images + m))
done
awk -v n="$images" -v t="$threads" -v o="$ours_total" -v p="$python_total" 'BEGIN {
    printf "pipeline images=%d threads=%d ours_img_s=%.3f python_img_s=%.3f ratio=%.2f\n",
        n, t, n / o, n / p, p / o }'
