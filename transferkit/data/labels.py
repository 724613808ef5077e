"""The label map: class name <-> index, sorted so the same data always gives the same indices.

Imports only transferkit.core.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from transferkit.core.errors import DataError

NO_LABEL = -100  # torch's cross-entropy ignore_index: such examples add no hard-label loss


@dataclass(frozen=True)
class LabelMap:
    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: Iterable[str], source: str) -> LabelMap:
        names = tuple(sorted(set(labels), key=_natural_key))
        if len(names) < 2:
            found = f"only '{names[0]}'" if names else "none"
            raise DataError(
                f"{source}: found {found} as class; classification needs at least 2 classes. "
                "Add examples of another class (a second class folder or label value)."
            )
        return cls(names)

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: Sequence[str | None], source: str = "data") -> list[int]:
        """Class indices; a None label (an unlabeled example of a distillation transfer set) becomes NO_LABEL."""
        index = {n: i for i, n in enumerate(self.names)}
        unknown = sorted(set(labels) - set(index) - {None})
        if unknown:
            raise DataError(
                f"{source}: label(s) {', '.join(repr(u) for u in unknown[:5])} are not among the model's classes "
                f"({', '.join(self.names)}). Use data with the same label set."
            )
        return [NO_LABEL if label is None else index[label] for label in labels]


def _natural_key(name: str) -> tuple:
    """Sort '2' before '10' so digit labels keep their numeric order."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)
