#!/usr/bin/env bash
# Crash-safety harness for index files: kills a writer process (SIGKILL) at random points
# while it adds, deletes, commits, merges and compacts, N times in a row (default 200), and
# checks after every kill that the index opens, shows exactly the last acknowledged commit
# (or the one after it), lost nothing committed, and passes verify(). See
# tests/deepfactor/index/crash.rs.
#
# Usage: scripts/index-crash-test.sh [TRIALS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export DF_CRASH_TRIALS="${1:-200}"
export DF_CRASH_SEED="${2:-7}"
exec cargo test --test deepfactor index::crash::crash_safety_many -- --ignored --nocapture
