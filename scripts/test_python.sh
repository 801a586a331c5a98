#!/usr/bin/env bash
# The Python package's tests: a virtual environment in target/pyenv with maturin, numpy,
# pytest, Pillow (and scikit-learn when it can be had: its test skips otherwise), the package
# installed from this checkout as README.md says (`pip install .`, a release build of the crate
# with the `python` feature), then pytest on tests/python. Without python3 (and its venv
# module) it skips with a message. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "test: python3 with the venv module is not available; skipping the Python package's tests" >&2
    exit 0
fi
env=target/pyenv
if [ ! -x "$env/bin/python" ]; then
    python3 -m venv "$env"
fi
py="$env/bin/python"
export PATH="$PWD/$env/bin:$PATH"   # maturin, for the build without isolation
"$py" -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" numpy pytest pillow
"$py" -m pip install -q --disable-pip-version-check scikit-learn \
    || echo "test: scikit-learn could not be installed; the comparison with it will skip" >&2
start=$(date +%s)
# The build backend is already in the environment: no isolated build environment needed.
"$py" -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps .
echo "test: Python package built and installed in $(( $(date +%s) - start )) s" >&2
"$py" -m pytest -q tests/python "$@"
