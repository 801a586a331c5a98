#!/usr/bin/env bash
# Where the time goes, layer by layer, beside PyTorch: the `backbone --layers` bench group (our
# milliseconds from the input to each checkpoint) and bench_backbone_torch.py --layers (the same
# checkpoints in PyTorch, stamped by forward hooks), at 512×683, batch 1. Prints one line per
# checkpoint with each side's milliseconds since the previous one and their ratio
# (torch / ours: > 1 where we are faster), then the sums per stage. Ours are differences of
# separate runs to successive layers, so on a busy machine a small layer's figure is noisy.
#
# Usage: scripts/profile_backbone.sh [--only NAME] [--iters N] [--threads T]
# Needs a Python with torch and timm: $PYTHON (default python3), e.g. PYTHON=/opt/pyref/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
iters=3 threads=${THREADS:-2} only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "profile_backbone.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
"$PYTHON" -c 'import torch, timm' 2>/dev/null || {
    echo "profile_backbone.sh: $PYTHON lacks torch or timm; set PYTHON=/path/to/python" >&2; exit 2; }
bin=$(scripts/bench_exe.sh)
for name in ${only:-vgg16 vgg19 resnet50 efficientnet-lite0}; do
    ours=$(RAYON_NUM_THREADS=$threads "$bin" backbone --layers --iters "$iters" --only "$name")
    theirs=$("$PYTHON" scripts/bench_backbone_torch.py --layers --iters "$iters" \
        --threads "$threads" --only "$name")
    printf '%s\n%s\n' "$ours" "$theirs" | awk -v bb="$name" '
        function val(key,   i, kv) { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) return kv[2] } return "" }
        $1 == "layer" {
            n = val("name")
            if (!(n in seen)) { seen[n] = 1; order[++count] = n }
            if (val("ours_ms") != "") ours[n] = val("ours_ms"); else torch[n] = val("torch_ms")
        }
        function stage(n) {
            if (n ~ /^conv[0-9]_|^pool/) { sub(/_.*/, "", n); sub(/^pool/, "conv", n); return n }
            if (n ~ /^layer/) { sub(/\..*/, "", n); return n }
            if (n ~ /^blocks\./) { split(n, p, "."); b = p[2] + 0
                return "stage" (b < 1 ? 1 : b < 3 ? 2 : b < 5 ? 3 : b < 8 ? 4 : b < 11 ? 5 : b < 15 ? 6 : 7) }
            return n
        }
        END {
            po = 0; pt = 0
            for (i = 1; i <= count; i++) {
                n = order[i]; o = ours[n] - po; t = torch[n] - pt; po = ours[n]; pt = torch[n]
                printf "profile backbone=%s layer=%s ours_ms=%.1f torch_ms=%.1f ratio=%.2f\n", bb, n, o, t, (o > 0 ? t / o : 0)
                s = stage(n); if (!(s in so)) sorder[++ns] = s; so[s] += o; st[s] += t
            }
            for (i = 1; i <= ns; i++) { s = sorder[i]
                printf "stage backbone=%s stage=%s ours_ms=%.1f torch_ms=%.1f ratio=%.2f\n", bb, s, so[s], st[s], (so[s] > 0 ? st[s] / so[s] : 0) }
            printf "total backbone=%s ours_ms=%.1f torch_ms=%.1f ratio=%.2f\n", bb, po, pt, (po > 0 ? pt / po : 0)
        }'
done
