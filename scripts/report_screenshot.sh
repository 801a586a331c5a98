#!/usr/bin/env bash
# Photographs an HTML search report in headless Chromium: the check that the page renders in a
# real browser, offline (name resolution is disabled, so anything fetched from outside would be
# missing from the picture).
#
#   scripts/report_screenshot.sh [OUT_DIR [PAGE.html]]
#
# Without PAGE.html it first writes the demo report (real photos from scripts/setup.sh,
# synthetic heatmaps and boxes: examples/report_demo.rs) into OUT_DIR (default
# target/report-demo). The screenshot is OUT_DIR/screenshot.png (WIDTH×HEIGHT from the
# environment, default 1400×1800). Needs Debian's chromium (`apt-get install -y chromium`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/report-demo}
WIDTH=${WIDTH:-1400}
HEIGHT=${HEIGHT:-1800}
BROWSER=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$BROWSER" ]; then
    echo "report_screenshot: chromium is not installed (apt-get install -y chromium)" >&2
    exit 2
fi
mkdir -p "$OUT"
if [ -n "${2:-}" ]; then
    PAGE=$2
else
    cargo run --quiet --example report_demo -- --out "$OUT" >/dev/null
    PAGE=$OUT/report.html
fi
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
SHOT=$(realpath "$OUT")/screenshot.png
rm -f "$SHOT"
"$BROWSER" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$PROFILE" \
    --host-resolver-rules='MAP * ~NOTFOUND' --hide-scrollbars \
    --window-size="$WIDTH,$HEIGHT" --screenshot="$SHOT" "file://$(realpath "$PAGE")" \
    >"$PROFILE/chromium.log" 2>&1 || { cat "$PROFILE/chromium.log" >&2; exit 1; }
if [ ! -s "$SHOT" ]; then
    cat "$PROFILE/chromium.log" >&2
    echo "report_screenshot: chromium wrote no screenshot" >&2
    exit 1
fi
echo "$SHOT"
