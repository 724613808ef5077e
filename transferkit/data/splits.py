"""Stratified train/val splits (random ones for regression) and per-class subsampling, all seeded.

Imports only transferkit.core and transferkit.data.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

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
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(examples.labels or []):
        by_class[label].append(i)
    held: list[int] = []
    for label in sorted(by_class):  # per class: round(fraction * n), at least 1 held out and 1 kept
        idx = rng.permutation(np.array(by_class[label]))
        n_held = min(len(idx) - 1, max(1, int(fraction * len(idx) + 0.5)))
        held.extend(idx[:n_held].tolist())
    held_set = set(held)
    train = [i for i in range(len(examples)) if i not in held_set]
    return examples.subset(train), examples.subset(sorted(held))


def random_split(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Split off ``fraction`` of the examples at random (regression: a number target has no classes to stratify)."""
    if len(examples) < 2:
        raise DataError(f"{examples.source}: {len(examples)} example(s) are too few to split off a validation set. "
                        "Add examples or pass --val-data.")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_held = min(len(examples) - 1, max(1, int(fraction * len(examples) + 0.5)))
    return examples.subset(sorted(order[n_held:].tolist())), examples.subset(sorted(order[:n_held].tolist()))


def held_out_split(examples: Examples, fraction: float, seed: int, task: str = "classification",
                   ) -> tuple[Examples, Examples]:
    """The validation split fit draws: stratified by class, or at random (regression; tokens: whole sentences)."""
    split = stratified_split if task == "classification" else random_split
    return split(examples, fraction, seed)
