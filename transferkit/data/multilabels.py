"""Multi-label targets: label sets read from a JSON list, a separated CSV cell or 0/1 columns, and their encoder.

Imports only transferkit.core and transferkit.data. In Examples a multi-label row's label is a *tuple* of class
names (NFC, numbers in one spelling: transferkit.data.labels.label_name), sorted and without repeats; the empty
tuple is a row with none of the labels (allowed: the data doctor warns about it). Tuples keep multi-label rows apart
from token classification, whose labels are lists of tags. ``MultiLabelMap`` encodes a tuple as a 0/1 row over
its ``names`` (float32, what BCE-with-logits takes).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from transferkit.core.errors import DataError
from transferkit.data.labels import _natural_key, label_name

DEFAULT_SEP = "|"
_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no", ""}


def is_label_set(label: object) -> bool:
    """A multi-label row's label (a tuple of names)."""
    return isinstance(label, tuple)


def label_set(value: Any, sep: str | None) -> tuple[str, ...] | None:
    """The sorted, de-duplicated names in a JSON list, or in a string split on ``sep``; None when missing.

    Raises TypeError for a value that holds no label names (a JSON object, a list of lists)."""
    if value is None:
        return None
    if isinstance(value, list):
        names = [label_name(v) for v in value]
    elif isinstance(value, str) and sep:
        names = [label_name(v) for v in value.split(sep)]
    else:
        names = [label_name(value)]
    return tuple(sorted({n for n in names if n is not None}, key=_natural_key))


def indicator_set(row: dict[str, Any], columns: Sequence[str]) -> tuple[str, ...]:
    """The names of the 0/1 (or true/false, yes/no) ``columns`` set in ``row``; ValueError for another value."""
    chosen = []
    for column in columns:
        value = row.get(column)
        text = "" if value is None else str(value).strip().lower()
        if text in _TRUE:
            chosen.append(label_name(column))
        elif text not in _FALSE:
            raise ValueError(column)
    return tuple(sorted({c for c in chosen if c is not None}, key=_natural_key))


@dataclass(frozen=True)
class MultiLabelMap:
    """The label names of a multi-label task (sorted); ``encode`` gives one 0/1 row per example."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: Iterable[tuple[str, ...] | None], source: str) -> MultiLabelMap:
        names = tuple(sorted({n for y in labels if y for n in y}, key=_natural_key))
        if len(names) < 2:
            found = f"only '{names[0]}'" if names else "none"
            raise DataError(f"{source}: found {found} as label; multi-label needs at least 2 label names. Check the "
                            "label column (--label-column, --label-sep or --label-columns).")
        return cls(names)

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: Sequence[tuple[str, ...] | None], source: str = "data") -> list[list[float]]:
        """0/1 rows over ``names``; a label the model does not know, or a missing label set, is a DataError."""
        index = {n: i for i, n in enumerate(self.names)}
        unknown = sorted({n for y in labels if y for n in y} - set(index))
        if unknown:
            raise DataError(f"{source}: label(s) {', '.join(repr(u) for u in unknown[:5])} are not among the model's "
                            f"labels ({', '.join(self.names[:10])}). Use data with the same label names.")
        rows = []
        for i, y in enumerate(labels):
            if y is None:
                raise DataError(f"{source}: row {i + 1} has no label set; multi-label rows need a list of labels "
                                "(an empty list for none).")
            row = [0.0] * len(self.names)
            for n in y:
                row[index[n]] = 1.0
            rows.append(row)
        return rows
