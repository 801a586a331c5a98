#!/usr/bin/env bash
# Builds the one bench binary (`cargo bench --no-run --bench deepfactor`, extra arguments passed
# on, e.g. --features cuda or --manifest-path) and prints its path, so that scripts can run it
# directly: no cargo invocation, and no lock on the build folder, between their timed runs.
set -euo pipefail
cargo bench --quiet --no-run --bench deepfactor --message-format=json "$@" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and "bench" in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])'
