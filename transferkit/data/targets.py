"""Numeric targets (regression): which label values are numbers, the task a label column suggests, and the
encoder that turns label strings into floats for the loaders.

Imports only transferkit.core. Labels stay strings in Examples (transferkit.data.labels.label_name writes numbers
in one spelling); a regression task reads them back here. Detection rule (``detect_task``): every label parses as a
finite number AND there are more distinct values than a classification would have — more than
``MAX_CLASSES_GUESS`` distinct values, or non-integer values — and at least half of the rows hold a value no other
row has, or any value is non-integer. A small file (``FEW_ROWS`` rows or more, but too few for that) is regression
too when most of its values are non-integer and nearly every row's value is distinct (``FEW_DISTINCT_SHARE``), as a
score's are. Integer codes such as 0..9 or star ratings 1..5 stay classification (pass ``--task regression`` to
treat them as numbers).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from transferkit.core.errors import DataError

MAX_CLASSES_GUESS = 20  # more distinct numeric values than this looks like a target, not a class set
DISTINCT_SHARE = 0.5  # ... when at least this share of the rows are distinct too
FEW_ROWS = 5  # a smaller file is regression when most values are non-integer and ...
FEW_DISTINCT_SHARE = 0.9  # ... at least this share of its rows hold distinct values


def numeric_target(label: str | None) -> float | None:
    """The finite float a label string stands for; None when it is missing, not a number, NaN or infinite."""
    if label is None:
        return None
    try:
        value = float(str(label).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class TaskGuess:
    """The task a label column suggests, and the sentence that says why (shown by fit, metrics.json, report)."""

    name: str
    reason: str


def detect_task(labels: Sequence[str | None]) -> TaskGuess:
    """classification or regression from the training labels (see the module docstring for the rule)."""
    present = [y for y in labels if y is not None]
    values = [numeric_target(y) for y in present]
    if not present or any(v is None for v in values):
        return TaskGuess("classification", "")
    distinct = len(set(values))
    fractional = any(not float(v).is_integer() for v in values)
    many = distinct > MAX_CLASSES_GUESS and (fractional or distinct >= DISTINCT_SHARE * len(values))
    if not (many or _few_scores(values, distinct)):
        return TaskGuess("classification", "")
    return TaskGuess("regression", f"task: regression (detected: {len(values):,} numeric labels, {distinct:,} "
                                   "distinct; pass --task classification to override)")


def _few_scores(values: Sequence[float], distinct: int) -> bool:
    """A small file of scores: enough rows, most values non-integer, nearly every value distinct."""
    fractional = sum(1 for v in values if not float(v).is_integer())
    return (len(values) >= FEW_ROWS and fractional > len(values) / 2
            and distinct >= FEW_DISTINCT_SHARE * len(values))


@dataclass(frozen=True)
class NumericTargets:
    """What a LabelMap is for classification, for one numeric target: ``encode`` gives floats (the user's units).

    ``names`` is the single output's name; ``mean``/``std`` are the training targets' (the head standardises
    with them and un-standardises its output, so bundles predict in the user's units).
    """

    mean: float = 0.0
    std: float = 1.0
    names: tuple[str, ...] = ("value",)

    @classmethod
    def from_labels(cls, labels: Sequence[str | None], source: str) -> NumericTargets:
        values = cls().encode(labels, source)
        if not values:
            raise DataError(f"{source}: no training targets; regression needs rows with a number in the label column.")
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        if std == 0:
            raise DataError(f"{source}: every training target is {values[0]:g}; a constant cannot be learned. "
                            "Check the label column (--label-column) or add rows with other values.")
        return cls(mean, std)

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: Sequence[str | None], source: str = "data") -> list[float]:
        """Float targets; a missing, non-numeric, NaN or infinite target is a DataError naming the row."""
        out = []
        for i, label in enumerate(labels):
            value = numeric_target(label)
            if value is None:
                raise DataError(f"{source}: row {i + 1} has target {label!r}, which is not a finite number; regression "
                                "needs a number in every row's label column. Fix or drop that row.")
            out.append(value)
        return out

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}
