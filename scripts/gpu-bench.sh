#!/usr/bin/env bash
# The GPU run: our indexing compute (EfficientNet-Lite0 features + NMF + NMF V+U descriptor, a
# batch of equal-size 683×512 images, `pipeline` bench group) and batched NMF alone (256 images of
# 1376×512, K = 8, 200 iterations, `nmf` bench group, case batch-dense) on the GPU, against the
# same work in PyTorch on the same card in the same run (scripts/gpu_bench_torch.py), the two
# sides interleaved rep by rep. Prints, and writes to $OUT/gpu-bench.txt when $OUT is set:
#   gpu=<name>
#   pipeline device=cuda batch=<b> ours_img_s=<x> torch_img_s=<y> ratio=<x/y>
#   nmf device=cuda batch=<n> K=8 ours_ms=<ms/iteration> torch_ms=<ms/iteration> ratio=<torch/ours>
# (ratio > 1: we are faster; each figure is the best of its reps.)
#
# Two steps, as ../shared/GPU.md describes (the GPU machine has no cargo and no internet):
#   scripts/gpu-bench.sh prepare   here: builds the bench binary with --features cuda (the CUDA
#       toolkit of GPU.md in $CUDA_ROOT, default ~/.cache/cuda13/x/nvidia/cu13) and copies it,
#       stripped, with the Lite0 weights if scripts/setup.sh fetched them, to target/gpubin/;
#       then links the CPU build's binaries back into target/release (the CUDA build put its
#       own there; they would not start without the driver).
#   scripts/gpu-bench.sh run [--batch 16] [--iters 3] [--reps 2] [--nmf-batch 256]
#       on the GPU machine, from the repository root, with target/gpubin carried over. The
#       PyTorch side needs only torch (its Lite0 is written out in gpu_bench_torch.py); $PYTHON
#       (default python3) must have it.
# Without weights in target/gpubin both sides use random ones (speed does not depend on them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
gpubin=$root/target/gpubin
die() { echo "gpu-bench.sh: $*" >&2; exit 2; }
mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in
prepare)
    R=${CUDA_ROOT:-$HOME/.cache/cuda13/x/nvidia/cu13}
    [ -x "$R/bin/nvcc" ] || die "no nvcc in $R/bin: install the CUDA 13.0 toolkit as ../shared/GPU.md says, or set CUDA_ROOT"
    [ -f "$R/lib/stubs/libcuda.so" ] || die "no link-time stub $R/lib/stubs/libcuda.so (../shared/GPU.md, step 1)"
    export CUDA_ROOT=$R CUDA_HOME=$R CUDA_PATH=$R PATH=$R/bin:$PATH \
        CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} LIBRARY_PATH=$R/lib:$R/lib/stubs
    exe=$(scripts/bench_exe.sh --features cuda)
    [ -n "$exe" ] && [ -x "$exe" ] || die "cargo built no bench binary"
    rm -rf "$gpubin"
    mkdir -p "$gpubin"
    cp "$exe" "$gpubin/deepfactor-bench"
    strip "$gpubin/deepfactor-bench" 2>/dev/null || true
    w=${DEEPFACTOR_HOME:-$HOME/.cache/deepfactor}/weights/efficientnet-lite0-57934424.pth
    [ -f "$w" ] && cp "$w" "$gpubin/lite0.pth"
    du -sh "$gpubin"/* >&2
    # The device tool carries at most 64 MiB; without the weights both sides use random ones.
    if [ "$(du -cb "$gpubin" | tail -n1 | cut -f1)" -gt $((60 << 20)) ] && [ -f "$gpubin/lite0.pth" ]; then
        rm "$gpubin/lite0.pth"
        echo "gpu-bench.sh: left the weights out (over 60 MiB with them); random weights on both sides" >&2
    fi
    env -u LIBRARY_PATH cargo build --release --quiet >&2
    echo "gpu-bench.sh: ready; on the GPU machine run scripts/gpu-bench.sh run, carrying target/gpubin" >&2
    ;;
run)
    batch=16 iters=3 reps=2 nmf_batch=256
    while [ $# -gt 0 ]; do
        case "$1" in
            --batch) batch=$2; shift 2 ;;
            --iters) iters=$2; shift 2 ;;
            --reps) reps=$2; shift 2 ;;
            --nmf-batch) nmf_batch=$2; shift 2 ;;
            *) die "unknown argument $1 (see the head of this script)" ;;
        esac
    done
    for v in "$batch" "$iters" "$reps" "$nmf_batch"; do
        [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "--batch, --iters, --reps and --nmf-batch take positive integers"
    done
    bin=$gpubin/deepfactor-bench
    [ -x "$bin" ] || die "no $bin: run scripts/gpu-bench.sh prepare here first and carry target/gpubin"
    PYTHON=${PYTHON:-python3}
    "$PYTHON" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null \
        || die "$PYTHON has no torch with CUDA; set PYTHON"
    # The machine's CUDA 13 libraries, wherever its installation keeps them.
    L=$(find / \( -name 'libcublas.so.13*' -o -name 'libcurand.so.10*' -o -name 'libcudart.so.13*' \) \
        2>/dev/null | xargs -r -n1 dirname | sort -u | tr '\n' ':')
    export LD_LIBRARY_PATH=$L${LD_LIBRARY_PATH:-}
    weights=() torch_weights=()
    if [ -f "$gpubin/lite0.pth" ]; then
        weights=(--weights "$gpubin/lite0.pth") torch_weights=(--weights "$gpubin/lite0.pth")
    fi
    report=${OUT:+$OUT/gpu-bench.txt}
    say() { echo "$*"; [ -z "$report" ] || echo "$*" >>"$report"; }
    field() { sed -nE "s/.*[ ^]$1=([^ ]+).*/\1/p" <<<" $2" | head -n1; }
    best() { tr ' ' '\n' | grep -v '^$' | sort -g | sed -n "${1}p"; }
    say "gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 || echo unknown)"
    oi="" ti="" om="" tm=""
    for r in $(seq "$reps"); do
        ours=$("$bin" pipeline --device cuda --batch "$batch" --iters "$iters" \
            --photos examples/photos "${weights[@]}")
        theirs=$("$PYTHON" scripts/gpu_bench_torch.py pipeline --device cuda --batch "$batch" \
            --iters "$iters" --photos examples/photos "${torch_weights[@]}")
        echo "  rep $r: $ours | $theirs" >&2
        oi="$oi $(field ours_img_s "$ours")" ti="$ti $(field torch_img_s "$theirs")"
        ours=$("$bin" nmf --device cuda --cases batch-dense --batch "$nmf_batch" --iters 200)
        theirs=$("$PYTHON" scripts/gpu_bench_torch.py nmf --device cuda --nmf-batch "$nmf_batch" \
            --nmf-iters 200)
        echo "  rep $r: $ours | $theirs" >&2
        om="$om $(field ours_ms "$ours")" tm="$tm $(field torch_ms "$theirs")"
    done
    o=$(best '$' <<<"$oi") t=$(best '$' <<<"$ti")
    say "$(awk -v b="$batch" -v o="$o" -v t="$t" 'BEGIN {
        printf "pipeline device=cuda batch=%d ours_img_s=%.1f torch_img_s=%.1f ratio=%.2f\n", b, o, t, o / t }')"
    o=$(best 1 <<<"$om") t=$(best 1 <<<"$tm")
    say "$(awk -v b="$nmf_batch" -v o="$o" -v t="$t" 'BEGIN {
        printf "nmf device=cuda batch=%d K=8 ours_ms=%.3f torch_ms=%.3f ratio=%.2f\n", b, o, t, t / o }')"
    ;;
*)
    sed -n '2,24p' "$0" >&2
    exit 2
    ;;
esac
