"""Stratified train/val splits and per-class subsampling, both seeded.

Imports only transferkit.core and transferkit.data.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from sklearn.model_selection import train_test_split

from transferkit.core.errors import DataError
from transferkit.data.examples import Examples


def subsample_per_class(examples: Examples, k: int, seed: int) -> Examples:
    """Keep at most ``k`` examples of each class, drawn at random with ``seed``."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(examples.labels or []):
        by_class[label].append(i)
    keep: list[int] = []
    for label in sorted(by_class):
        idx = np.array(by_class[label])
        keep.extend(rng.permutation(idx)[:k].tolist())
    return examples.subset(sorted(keep))


def stratified_split(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Split off ``fraction`` of the examples (at least one per class) as a stratified held-out set."""
    counts = examples.class_counts()
    too_small = [name for name, n in counts.items() if n < 2]
    if too_small:
        raise DataError(
            f"{examples.source}: class(es) {', '.join(too_small)} have a single example, too few to split off a "
            "validation set. Add examples or pass --val-data."
        )
    n_held = max(len(counts), int(round(fraction * len(examples))))
    if len(examples) - n_held < len(counts):
        raise DataError(f"{examples.source}: {len(examples)} examples are too few to split train/val; add more.")
    idx = np.arange(len(examples))
    train_idx, held_idx = train_test_split(idx, test_size=n_held, stratify=examples.labels, random_state=seed)
    return examples.subset(sorted(train_idx)), examples.subset(sorted(held_idx))
