#!/usr/bin/env bash
# The test suite, as README.md gives it: fetches the real weights and photos the tests use
# (scripts/setup.sh; tests that need them skip with a message when they cannot be had), then
# runs every Rust test, then the Python package's tests (scripts/test_python.sh: builds the
# package into target/pyenv and runs pytest on tests/python; skips with a message without
# python3). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || echo "test: setup failed; tests that need real weights or photos will skip" >&2
rc=0
cargo test --no-fail-fast "$@" || rc=$?
./scripts/test_python.sh || rc=$?
exit "$rc"
