"""deepfactor.GroundTruth and deepfactor.evaluate: the same numbers as `deepfactor eval`."""

import json

import pytest

import deepfactor
from conftest import FIXTURES, cli

GT = FIXTURES / "eval" / "oxford"
RANKINGS = FIXTURES / "eval" / "rankings_oxford.txt"


def rankings_dict():
    out = {}
    for line in RANKINGS.read_text().splitlines():
        if line.strip():
            q, *images = line.split()
            out[q] = images
    return out


def test_ground_truth_lists_queries_with_boxes():
    gt = deepfactor.GroundTruth(GT)
    assert len(gt) == len(gt.queries) > 0
    q = gt.queries[0]
    assert set(q) == {"name", "image", "box"}
    assert q["box"] is None or len(q["box"]) == 4
    assert gt.kind == "classic"
    assert gt.images


def test_evaluate_equals_the_cli():
    want = json.loads(cli("eval", "--gt", str(GT), "--ranking", str(RANKINGS), "--json"))
    from_file = deepfactor.evaluate(str(GT), RANKINGS)
    from_dict = deepfactor.evaluate(deepfactor.GroundTruth(GT), rankings_dict())
    for got in (from_file, from_dict):
        assert got["map"] == want["map"]
        assert got["per_query"] == want["per_query"]
        assert got["protocol"] == want["protocol"]


def test_bad_rankings_and_ground_truth_raise(tmp_path):
    gt = deepfactor.GroundTruth(GT)
    with pytest.raises(ValueError, match="protocol"):
        deepfactor.evaluate(gt, rankings_dict(), protocol="best")
    with pytest.raises(ValueError, match="list of image names"):
        deepfactor.evaluate(gt, {"all_souls_1": 3})
    with pytest.raises(deepfactor.Error):
        deepfactor.GroundTruth(tmp_path / "absent")
    bad = tmp_path / "ranking.txt"
    bad.write_text("no_such_query a b c\n")
    with pytest.raises(deepfactor.Error):
        deepfactor.evaluate(gt, bad)
