#!/usr/bin/env bash
# The main job end to end, as README.md gives it: fetch the default weights, index the sample
# photos, search by a region of one of them, print the results and write a visual report.
# Output goes to $OUT (default target/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/quickstart}

./scripts/setup.sh
cargo build --release --quiet --bin deepfactor
BIN=target/release/deepfactor

rm -rf "$OUT"
mkdir -p "$OUT"
echo "== index the sample photos (examples/photos) into $OUT/photos.dfi"
"$BIN" index build examples/photos -o "$OUT/photos.dfi"
"$BIN" index info "$OUT/photos.dfi"
echo
echo "== search: the cookie box in box_in_scene.jpg (region 90,150,255,280)"
"$BIN" search "$OUT/photos.dfi" examples/photos/box_in_scene.jpg --box 90,150,255,280 -k 5 \
    --report "$OUT/report.html" --sheet "$OUT/sheet.png"
echo
echo "report: $OUT/report.html (open it in a browser; it works offline)"
echo "sheet:  $OUT/sheet.png"
