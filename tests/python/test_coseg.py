"""deepfactor.coseg against the CLI's `deepfactor coseg DIR --masks MASKS --json`."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

import deepfactor
from conftest import ROOT, cli

# As the Rust tests: $DEEPFACTOR_DATA, else ../shared/data from the repository root.
VOC = pathlib.Path(os.environ.get("DEEPFACTOR_DATA", ROOT / ".." / "shared" / "data")) / "voc-coseg"
CLASS = "Aero"
SIZE = "224"


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> pathlib.Path:
    images = VOC / "images" / CLASS
    if not images.is_dir() or not (VOC / "masks" / CLASS).is_dir():
        pytest.skip(f"the VOC co-segmentation set is absent ({VOC}); set DEEPFACTOR_DATA to the shared data folder")
    d = tmp_path_factory.mktemp("coseg") / CLASS
    d.mkdir()
    for p in sorted(images.iterdir())[:4]:
        shutil.copy(p, d / p.name)
    return d


def without_volatile(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("seconds", "date")}


def test_coseg_matches_cli(small_set, weights):
    masks = VOC / "masks" / CLASS
    got = deepfactor.coseg(small_set, size=int(SIZE), weights=weights, masks=masks)
    want = json.loads(
        cli("coseg", str(small_set), "--masks", str(masks), "--size", SIZE,
            "--weights", str(weights), "--json")
    )
    assert without_volatile(got["record"]) == without_volatile(want)
    assert want["jaccard"] is not None and len(want["images"]) == 4
    for item, line in zip(got["images"], want["images"]):
        assert item["name"] == line["name"]
        with Image.open(item["path"]) as im:
            w, h = im.size
        assert item["mask"].dtype == np.uint8 and item["mask"].shape == (h, w)
        assert set(np.unique(item["mask"])) <= {0, 1}
        assert item["mask"].any()
        box = item["box"]
        assert box is not None and line["box"] == pytest.approx(list(box))
        rows, cols, iw, ih = item["grid"]
        assert item["heatmap"].dtype == np.float32 and item["heatmap"].shape == (rows, cols)
        assert (iw, ih) == (w, h)
        assert (item["heatmap"] >= 0).all() and item["heatmap"].max() > 0


def test_coseg_list_of_paths_and_bad_input(small_set, weights):
    paths = sorted(small_set.iterdir())[:3]
    got = deepfactor.coseg([str(p) for p in paths], method="single", size=int(SIZE), weights=weights)
    assert [pathlib.Path(i["path"]) for i in got["images"]] == paths
    assert got["record"]["provenance"]["k"] == 1
    assert got["record"]["jaccard"] is None
    with pytest.raises(deepfactor.InvalidArgument, match="co-segmentation method"):
        deepfactor.coseg(paths, method="nope", weights=weights)
    with pytest.raises(deepfactor.InvalidArgument, match="not a folder"):
        deepfactor.coseg(small_set / "missing", weights=weights)
    with pytest.raises(deepfactor.InvalidArgument, match="threshold"):
        deepfactor.coseg(paths, threshold="high", weights=weights)
