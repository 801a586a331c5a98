"""deepfactor.Index: build → search → hits with boxes and heatmaps on the sample photos, the
same hits and scores as the CLI, updates, and clear exceptions for bad input and damaged
indexes."""

import json
import shutil

import numpy as np
import pytest

import deepfactor
from conftest import PHOTOS, cli

QUERY = PHOTOS / "box_in_scene.jpg"
REGION = (90.0, 150.0, 255.0, 280.0)


@pytest.fixture(scope="module")
def built(weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "photos.dfi"
    seen = []
    index = deepfactor.Index.build(PHOTOS, path, weights=str(weights), progress=lambda d, t: seen.append((d, t)))
    return index, path, seen


def test_build_indexes_every_photo(built):
    index, path, seen = built
    n = len(list(PHOTOS.glob("*.jpg")))
    assert len(index) == n
    assert index.report["counts"]["indexed"] == n
    assert index.report["failures"] == []
    assert seen and seen[-1] == (n, n)
    assert index.recipe["descriptor"].startswith("nmf-vu") and index.recipe["k"] == 8
    assert index.verify()["documents"] == n
    assert str(index.path) == str(path)


def test_region_search_localizes_the_hits(built):
    index, _, _ = built
    hits = index.search(QUERY, box=REGION, k=5, localize="joint")
    assert len(hits) == 5
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    names = [h.path.name for h in hits[:2]]
    assert "box.jpg" in names and "box_in_scene.jpg" in names
    boxed = [h for h in hits if h.box is not None]
    assert len(boxed) >= 2
    for h in boxed:
        x1, y1, x2, y2 = h.box
        g = h.grid
        assert 0 <= x1 < x2 <= g["image_width"] and 0 <= y1 < y2 <= g["image_height"]
        assert h.heatmap.dtype == np.float32
        assert h.heatmap.shape == (g["rows"], g["cols"])
        assert abs(float(h.heatmap.max()) - 1.0) < 1e-5
        assert h.strength is not None and h.strength > 0
    # The query itself: its own region comes back where it was.
    me = next(h for h in hits if h.path.name == "box_in_scene.jpg")
    assert me.box is not None
    inter = max(0.0, min(me.box[2], REGION[2]) - max(me.box[0], REGION[0])) * max(
        0.0, min(me.box[3], REGION[3]) - max(me.box[1], REGION[1])
    )
    assert inter > 0
    assert "Hit(rank=" in repr(hits[0])


def test_hits_and_scores_equal_the_cli(built):
    index, path, _ = built
    for extra, kwargs in [((), {}), (("--box", "90,150,255,280"), {"box": REGION}),
                          (("--box", "90,150,255,280", "--localize", "stored"), {"box": REGION, "localize": "stored"}),
                          (("--qe", "2"), {"qe": 2}),
                          (("--box", "90,150,255,280", "--factors", "off"), {"box": REGION, "factors": "off"}),
                          (("--box", "90,150,255,280", "--crop-check", "always", "--factor-source", "with-crop"),
                           {"box": REGION, "crop_check": "always", "factor_source": "with-crop"})]:
        out = json.loads(cli("search", str(path), str(QUERY), "-k", "6", "--exact", "--json", *extra))
        hits = index.search(QUERY, k=6, exact=True, **kwargs)
        assert [h.id for h in hits] == [h["id"] for h in out["hits"]], extra
        assert [h.score for h in hits] == [np.float32(h["score"]) for h in out["hits"]], extra
        for h, c in zip(hits, out["hits"]):
            for key in ("global_score", "factor_score", "crop_score"):
                want = c.get(key)
                got = getattr(h, key)
                assert (got is None) == (want is None), (extra, key)
                if want is not None:
                    assert np.float32(got) == np.float32(want), (extra, key)
            want = [(m["query_factor"], m["image_factor"], np.float32(m["score"])) for m in c.get("factor_matches", [])]
            assert [(q, i, np.float32(s)) for q, i, s in h.factor_matches] == want, extra
        for h, c in zip(hits, out["hits"]):
            loc = c.get("location")
            if loc and loc.get("bbox"):
                b = loc["bbox"]
                # JSON carries the shortest decimal of each float32: equal as float32.
                want = [np.float32(b[k]) for k in ("x1", "y1", "x2", "y2")]
                assert [np.float32(x) for x in h.box] == want, extra


def test_open_and_query_by_pixels(built, weights):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    index, path, _ = built
    again = deepfactor.Index.open(path, weights=str(weights))
    assert len(again) == len(index)
    a = [(h.id, h.score) for h in index.search(QUERY, k=3)]
    b = [(h.id, h.score) for h in again.search(str(QUERY), k=3)]
    assert a == b
    pixels = np.asarray(Image.open(PHOTOS / "chelsea.jpg").convert("RGB"))
    top = again.search(pixels, k=1)[0]
    assert top.path.name == "chelsea.jpg"
    assert again.search(Image.open(PHOTOS / "chelsea.jpg"), k=1)[0].path.name == "chelsea.jpg"
    with pytest.raises(ValueError, match="crop check"):
        again.search(QUERY, box=REGION, crop_check="sometimes")
    with pytest.raises(ValueError, match="crop query needs the image file"):
        again.search(pixels, box=(0, 0, 50, 50), box_mode="crop")


def test_add_then_search_finds_the_new_image(built, weights, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    _, path, _ = built
    copy = tmp_path / "copy.dfi"
    shutil.copytree(path, copy)
    index = deepfactor.Index.open(copy, weights=str(weights))
    n = len(index)
    flipped = tmp_path / "chelsea_flipped.png"
    Image.open(PHOTOS / "chelsea.jpg").transpose(Image.FLIP_LEFT_RIGHT).save(flipped)
    report = index.add([flipped])
    assert report["counts"]["indexed"] == 1
    assert len(index) == n + 1
    assert index.search(flipped, k=1)[0].path.name == "chelsea_flipped.png"


def test_bad_input_raises(built, weights, tmp_path):
    index, path, _ = built
    with pytest.raises(ValueError, match="box"):
        index.search(QUERY, box=(100, 100, 50, 50))
    with pytest.raises(ValueError, match="filter"):
        index.search(QUERY, box=REGION, box_mode="nope")
    with pytest.raises(ValueError, match="localize"):
        index.search(QUERY, localize="everywhere")
    with pytest.raises(ValueError, match="top_k"):
        index.search(QUERY, k=0)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        index.search(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="no-photos"):
        deepfactor.Index.build(tmp_path / "no-photos", tmp_path / "x.dfi", weights=str(weights))
    with pytest.raises(deepfactor.Error, match="recipe mismatch"):
        deepfactor.Index.build(PHOTOS, path, descriptor="mac", weights=str(weights))
    with pytest.raises(deepfactor.Error):
        deepfactor.Index.open(tmp_path / "no-index")


def test_a_damaged_index_raises_naming_the_file(built, weights, tmp_path):
    _, path, _ = built
    damaged = tmp_path / "damaged.dfi"
    shutil.copytree(path, damaged)
    segments = sorted(p for p in damaged.rglob("*") if p.is_file() and p.stat().st_size > 4096)
    assert segments, list(damaged.rglob("*"))
    victim = segments[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(deepfactor.Error, match=victim.name):
        deepfactor.Index.open(damaged, weights=str(weights)).verify()
    victim.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(deepfactor.Error, match=victim.name):
        deepfactor.Index.open(damaged, weights=str(weights)).verify()
