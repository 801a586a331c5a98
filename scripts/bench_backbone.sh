#!/usr/bin/env bash
# Feature-extraction speed on the CPU: deepfactor against PyTorch on the same models, input size
# (512×683), batch size and thread count, the two sides interleaved (ours, theirs, ours, …) so
# that load from other processes hits both alike. Prints one line per backbone and setting:
#   backbone=<name> batch=<b> threads=<t> ours_img_s=<x> torch_img_s=<y> ratio=<x/y>
#       ours_cpu_s=<cpu s/img> torch_cpu_s=<cpu s/img> cpu_ratio=<torch cpu / ours>
# ratio is the median over --reps of each pair's ratio (> 1: we are faster); img/s are medians.
# CPU seconds per image count every thread of the process (OpenMP's spin-waiting included).
# With --against REV (e.g. main) the engine of git revision REV runs too, in the same rotation
# (its bench binary built from `git archive REV` under target/against/, in this target folder),
# and each line adds  before_img_s=<z> speedup=<x/z>  (median of each rep's ratio).
#
# Usage: scripts/bench_backbone.sh [--iters N] [--reps R] [--batch 1,8] [--threads 1,2]
#                                  [--only NAME] [--against REV]
# Needs a Python with torch and timm: $PYTHON (default python3), e.g. PYTHON=/opt/pyref/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
iters=2 reps=3 batches=1 threads=${THREADS:-2} only="" against=""
while [ $# -gt 0 ]; do
    case "$1" in
        --iters) iters=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --batch) batches=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --against) against=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "bench_backbone.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
"$PYTHON" -c 'import torch, timm' 2>/dev/null || {
    echo "bench_backbone.sh: $PYTHON lacks torch or timm; set PYTHON=/path/to/python" >&2; exit 2; }
root=$(pwd)
before_bin=""
if [ -n "$against" ]; then
    rev=$(git rev-parse --short "$against^{commit}") || exit 2
    src=$root/target/against/$rev
    if [ ! -f "$src/Cargo.toml" ]; then
        mkdir -p "$src"
        git archive "$rev" | tar -x -C "$src"
    fi
    before_bin=$(CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target} scripts/bench_exe.sh \
        --manifest-path "$src/Cargo.toml")
    [ -x "$before_bin" ] || { echo "bench_backbone.sh: no bench binary for $against" >&2; exit 1; }
    # That build linked its own binaries into target/release; link this tree's back.
    cargo build --release --quiet >&2
fi
ours_bin=$(scripts/bench_exe.sh)
[ -x "$ours_bin" ] || { echo "bench_backbone.sh: cargo built no bench binary" >&2; exit 1; }
names=${only:-vgg16 vgg19 resnet50 efficientnet-lite0}
field() { sed -nE "s/.*[ ^]$1=([^ ]+).*/\1/p" <<<" $2"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
errlog=$(mktemp)
trap 'rm -f "$errlog"' EXIT
for b in ${batches//,/ }; do
    for t in ${threads//,/ }; do
        for name in $names; do
            oi="" ti="" oc="" tc="" r="" cr="" bi="" br=""
            for _ in $(seq "$reps"); do
                ours=$(RAYON_NUM_THREADS=$t "$ours_bin" backbone \
                    --iters "$iters" --batch "$b" --only "$name" 2>"$errlog") || { cat "$errlog" >&2; exit 1; }
                theirs=$("$PYTHON" scripts/bench_backbone_torch.py --iters "$iters" --batch "$b" \
                    --threads "$t" --only "$name")
                if [ -n "$before_bin" ]; then
                    before=$(RAYON_NUM_THREADS=$t "$before_bin" backbone --iters "$iters" \
                        --batch "$b" --only "$name" 2>"$errlog") || { cat "$errlog" >&2; exit 1; }
                    z=$(field ours_img_s "$before")
                    echo "  $name batch=$b threads=$t: before ($against) $z img/s" >&2
                    bi="$bi $z"
                    br="$br $(awk -v o="$(field ours_img_s "$ours")" -v z="$z" 'BEGIN { print o / z }')"
                fi
                o=$(field ours_img_s "$ours") c=$(field ours_cpu_s_per_img "$ours")
                y=$(field torch_img_s "$theirs") d=$(field torch_cpu_s_per_img "$theirs")
                echo "  $name batch=$b threads=$t: ours $o img/s ($c cpu s/img), torch $y img/s ($d cpu s/img)" >&2
                oi="$oi $o" ti="$ti $y" oc="$oc $c" tc="$tc $d"
                r="$r $(awk -v o="$o" -v y="$y" 'BEGIN { print o / y }')"
                cr="$cr $(awk -v c="$c" -v d="$d" 'BEGIN { print (c > 0) ? d / c : "nan" }')"
            done
            extra=""
            if [ -n "$before_bin" ]; then
                extra=$(printf ' before_img_s=%.3f speedup=%.2f' "$(median <<<"$bi")" "$(median <<<"$br")")
            fi
            printf 'backbone=%s batch=%s threads=%s ours_img_s=%.3f torch_img_s=%.3f ratio=%.2f ours_cpu_s=%.3f torch_cpu_s=%.3f cpu_ratio=%.2f%s\n' \
                "$name" "$b" "$t" "$(median <<<"$oi")" "$(median <<<"$ti")" "$(median <<<"$r")" \
                "$(median <<<"$oc")" "$(median <<<"$tc")" "$(median <<<"$cr")" "$extra"
        done
    done
done
