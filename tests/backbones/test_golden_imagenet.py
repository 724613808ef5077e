"""Golden tests for EfficientNet-Lite1/2 and MobileNetV2: their ImageNet answers on real photos, and fixed numbers.

Images: scikit-learn's china.jpg (a temple) and matplotlib's grace_hopper.jpg (a portrait in navy uniform), with
each model's ImageNet evaluation recipe from its timm pretrained_cfg (timm.data.create_transform: resize the
shorter side to size / crop_pct, bicubic, center crop, normalise). The logits are ``imagenet_classifier(name)``
applied to ``build_backbone(name).embed``, so this also checks that the registered backbone is the ImageNet model
minus its classifier. The exact numbers live in golden_imagenet.json, written by
``.venv/bin/python -m tests.backbones.make_golden imagenet``; regenerate only when a change of numbers is intended.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden_imagenet.json"
MODELS = ("efficientnet_lite1", "efficientnet_lite2", "mobilenetv2")
IMAGES = ("china.jpg", "grace_hopper.jpg")
PALACE, MILITARY_UNIFORM = 698, 652
ATOL, PREFIX = 1e-4, 10


def photos() -> list:
    """The two photos as RGB PIL images, in IMAGES order."""
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_images

    samples = load_sample_images()
    china = samples.images[[Path(f).name for f in samples.filenames].index("china.jpg")]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [Image.fromarray(china), Image.open(hopper).convert("RGB")]


def embeddings_and_logits(name: str) -> tuple[np.ndarray, np.ndarray]:
    """[2, feature_dim] embeddings of the photos and [2, 1000] ImageNet logits, for one registered backbone."""
    from timm.data import create_transform, resolve_data_config

    from transferkit.backbones import build_backbone
    from transferkit.backbones.vision import imagenet_classifier

    backbone = build_backbone(name).eval()
    transform = create_transform(**resolve_data_config({}, model=backbone.model))
    assert transform.transforms[1].size == (backbone.preprocessing.image_size,) * 2  # the center crop
    pixels = torch.stack([transform(image) for image in photos()])
    with torch.inference_mode():
        features = backbone.embed({"pixel_values": pixels})
        logits = imagenet_classifier(name)(features)
    return features.float().numpy(), logits.float().numpy()


@pytest.fixture(scope="module", params=MODELS)
def outputs(request) -> tuple[str, np.ndarray, np.ndarray]:
    return (request.param, *embeddings_and_logits(request.param))


def test_imagenet_answers_on_real_photos(outputs):
    name, _, logits = outputs
    assert logits.shape == (2, 1000)
    temple, hopper = (np.argsort(-row)[:5].tolist() for row in logits)
    assert temple[0] == PALACE, f"{name}: temple top-5 {temple}"
    assert MILITARY_UNIFORM in hopper, f"{name}: Grace Hopper top-5 {hopper}"


def test_embeddings_match_golden(outputs):
    name, features, logits = outputs
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN.name} is missing; generate it with .venv/bin/python -m tests.backbones.make_golden imagenet")
    golden = json.loads(GOLDEN.read_text())[name]
    assert features.shape == (2, 1280)
    for row, row_logits, ref in zip(features, logits, golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["embedding_prefix"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(row), ref["norm"], rtol=1e-5)
        largest = np.array(ref["largest"])  # [PREFIX, 2]: channel, value (the prefix is mostly ReLU zeros)
        np.testing.assert_allclose(row[largest[:, 0].astype(int)], largest[:, 1], atol=ATOL, rtol=0)
        assert np.argsort(-row_logits)[:5].tolist() == ref["top5"]


def test_imagenet_classifier_refuses_a_backbone_without_one():
    from transferkit.backbones.vision import imagenet_classifier
    from transferkit.core.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="efficientnet_lite0-slim.*Valid names: efficientnet_lite0, "):
        imagenet_classifier("efficientnet_lite0-slim")


@pytest.mark.parametrize("name, file", [("efficientnet_lite1", "efficientnet-lite1-77cc7160.pth"),
                                        ("efficientnet_lite2", "efficientnet-lite2-9656183e.pth"),
                                        ("mobilenetv2", "mobilenet_v2-b0353104.pth")])
def test_bundles_record_the_package_file(name: str, file: str):
    """The file a bundle's manifest records (and compares on load) is the package's, named by its hash prefix."""
    from transferkit.backbones.provenance import pretrained_record, weights_file

    path = weights_file(name)
    assert path is not None and path.name == file and path.is_file()
    record = pretrained_record(name)
    assert record["pretrained_file"] == str(path)
    assert record["pretrained_file_sha256"].startswith(file.rsplit("-", 1)[1].split(".")[0])
