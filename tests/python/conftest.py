"""Shared helpers of the Python package's tests.

Run by ``./scripts/test.sh`` after ``cargo test`` (which builds the Rust example and the CLI
these tests compare against). Tests that need what is absent skip with a message: the real
weights and photos (``scripts/setup.sh`` puts them in ``~/.cache/deepfactor``), cargo.
"""

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "examples" / "photos"
FIXTURES = ROOT / "tests" / "fixtures"


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("DEEPFACTOR_HOME", pathlib.Path.home() / ".cache" / "deepfactor"))


def lite0_weights() -> pathlib.Path:
    env = os.environ.get("DEEPFACTOR_EFFICIENTNET_LITE0_WEIGHTS")
    if env:
        return pathlib.Path(env)
    return cache_dir() / "weights" / "efficientnet-lite0-57934424.pth"


@pytest.fixture(scope="session")
def weights() -> pathlib.Path:
    w = lite0_weights()
    if not w.is_file():
        pytest.skip(f"EfficientNet-Lite0 weights absent ({w}); run scripts/setup.sh")
    return w


def cargo_run(*args: str, bin_args=(), example=None, timeout=1800) -> subprocess.CompletedProcess:
    """Runs a target of this crate (dev profile, as cargo test builds it)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not on PATH: the native reference cannot be run")
    cmd = [cargo, "run", "--quiet"]
    cmd += ["--example", example] if example else ["--bin", "deepfactor"]
    cmd += ["--", *bin_args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r


def reference(*args: str) -> None:
    """Runs ``cargo run --example reference_outputs -- ARGS``."""
    cargo_run(example="reference_outputs", bin_args=args)


def cli(*args: str) -> str:
    """Runs the ``deepfactor`` CLI and returns its stdout."""
    return cargo_run(bin_args=args).stdout


def fixture_matrix() -> np.ndarray:
    import json

    d = json.loads((FIXTURES / "nmf" / "sklearn.json").read_text())
    a = d["a"]
    return np.asarray(a["data"], dtype=np.float32).reshape(a["rows"], a["cols"])
