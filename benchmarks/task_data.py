"""Data builders for the task benchmarks: multi-label image tiles made of Fashion-MNIST pictures.

Each tile is a 56x56 canvas (a 2x2 grid of 28x28 cells) holding 2-4 Fashion-MNIST images of distinct classes in
random cells (empty cells stay black, the dataset's background); its labels are those classes. Written the way
real image data arrives, ``images/*.png`` + ``labels.csv`` (columns ``image,labels``, labels joined with '|'), so
the table reader of transferkit.data.image_tables is what reads it:

    transferkit fit --data tiles/labels.csv --image-column image --label-column labels --task multilabel

Fashion-MNIST comes from the Debian package dataset-fashion-mnist (transferkit's builtin:fashion-mnist).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.data.builtins import DATASETS

CELL = 28
GRID = 2  # cells per side: up to GRID * GRID images per tile
LABEL_SEP = "|"


def write_fashion_tiles(out_dir: str | Path, count: int, seed: int = 0, split: str = "train",
                        min_items: int = 2, max_items: int = 4) -> Path:
    """Write ``count`` tiles to ``out_dir/images/NNNNN.png`` and ``out_dir/labels.csv``; returns the CSV's path.

    ``split``: 'train' or 'test' of Fashion-MNIST (use different splits for training and test tiles); ``seed``
    fixes which pictures, how many (``min_items``..``max_items``, at most 4) and where they go.
    """
    if not 1 <= min_items <= max_items <= GRID * GRID:
        raise ValueError(f"need 1 <= min_items <= max_items <= {GRID * GRID}; got {min_items}, {max_items}")
    source = DATASETS["fashion-mnist"]().get(split)
    if source is None:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    labels = np.array(source.labels)
    classes = sorted(set(source.labels))
    by_class = {c: np.flatnonzero(labels == c) for c in classes}
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(count):
        k = int(rng.integers(min_items, max_items + 1))
        chosen = rng.choice(len(classes), size=k, replace=False)
        cells = rng.choice(GRID * GRID, size=k, replace=False)
        canvas = np.zeros((GRID * CELL, GRID * CELL), dtype=np.uint8)
        for c, cell in zip(chosen, cells):
            picture = source.inputs[int(rng.choice(by_class[classes[c]]))]
            row, col = divmod(int(cell), GRID)
            canvas[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL] = picture
        name = f"images/{n:05d}.png"
        Image.fromarray(canvas).save(out / name)
        rows.append({"image": name, "labels": LABEL_SEP.join(sorted(classes[c] for c in chosen))})
    table = out / "labels.csv"
    with open(table, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    return table
