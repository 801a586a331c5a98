"""deepfactor.Backbone and deepfactor.describe: the activations of a real photo equal the
library's own, whatever form the image comes in; bad images raise clear exceptions."""

import numpy as np
import pytest

import deepfactor
from conftest import FIXTURES, PHOTOS, reference

PHOTO = PHOTOS / "chelsea.jpg"


@pytest.fixture(scope="module")
def backbone(weights):
    return deepfactor.Backbone("efficientnet-lite0", weights=str(weights))


def test_features_of_a_photo_equal_the_library(backbone, tmp_path):
    out = tmp_path / "features.npy"
    reference("features", str(PHOTO), str(out))
    want = np.load(out)
    got = backbone.features(str(PHOTO))
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert got.shape[2] == backbone.channels == 1280
    np.testing.assert_array_equal(got, want)


def test_paths_pil_images_and_arrays_give_the_same_features(backbone, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    # A lossless file, so that every route sees the same pixels.
    pixels = np.asarray(Image.open(PHOTO).convert("RGB"))
    png = tmp_path / "chelsea.png"
    Image.fromarray(pixels).save(png)
    from_path = backbone.features(png)
    from_array = backbone.features(pixels)
    from_pil = backbone.features(Image.open(png))
    np.testing.assert_array_equal(from_path, from_array)
    np.testing.assert_array_equal(from_path, from_pil)
    # A list gives a list, in order, with progress reported.
    seen = []
    many = backbone.features([png, pixels[:200, :300].copy()], progress=lambda d, t: seen.append((d, t)))
    assert isinstance(many, list) and len(many) == 2
    np.testing.assert_array_equal(many[0], from_path)
    assert seen[-1] == (2, 2)


def test_descriptors_from_features(backbone):
    feats = backbone.features(str(PHOTO))
    h, w, c = feats.shape
    for kind, dim in [("nmf-vu", c), ("nmf-v", c), ("mac", c), ("gem", c)]:
        d = deepfactor.describe(feats, descriptor=kind)
        assert d.dtype == np.float32 and d.shape == (dim,), kind
        assert abs(float(np.linalg.norm(d)) - 1.0) < 1e-4, kind
    whole = deepfactor.describe(feats)
    region = deepfactor.describe(feats, box=(0, 0, w / 2, h / 2))
    assert not np.array_equal(whole, region)
    with pytest.raises(ValueError, match="unknown descriptor"):
        deepfactor.describe(feats, descriptor="sift")
    with pytest.raises(ValueError, match="3-D float32"):
        deepfactor.describe(feats[0])


def test_missing_and_corrupt_images_raise(backbone, tmp_path):
    missing = tmp_path / "nothing.jpg"
    with pytest.raises(FileNotFoundError, match="nothing.jpg") as e:
        backbone.features(missing)
    assert isinstance(e.value, deepfactor.Error)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with pytest.raises(deepfactor.Error, match="corrupt.jpg"):
        backbone.features(corrupt)
    with pytest.raises(deepfactor.Error, match="empty.jpg"):
        backbone.features(FIXTURES / "images" / "empty.jpg")
    with pytest.raises(ValueError, match="uint8"):
        backbone.features(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="× 3"):
        backbone.features(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="PIL image"):
        backbone.features(42)


def test_unknown_backbone_and_layer_raise(weights):
    with pytest.raises(deepfactor.Error, match="resnet18"):
        deepfactor.Backbone("resnet18")
    with pytest.raises(deepfactor.Error, match="nope"):
        deepfactor.Backbone("efficientnet-lite0", layer="nope", weights=str(weights))
