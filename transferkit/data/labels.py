"""The label map: class name <-> index, sorted so the same data always gives the same indices; and the class
name a label value read from a file stands for.

Imports only transferkit.core. One spelling per class: a label value is NFC-normalised and stripped of surrounding
spaces (macOS writes accents decomposed, Linux composed), numbers that are equal are one class (JSON 1 and 1.0,
CSV "1" and "1.0" are class '1'; "01" is not written as a number, so it stays a name, as codes do), and JSON
true/false are the classes 'true'/'false', not numbers. A missing value (None, or nothing but spaces) has no name.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

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


# A number as JSON writes one (RFC 8259): no leading zeros, no '+', no bare '.5', so codes like '007' stay names.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def label_name(value: object) -> str | None:
    """The class name of a label value read from a CSV cell or a JSON value; None when the value is missing.

    Raises TypeError for a JSON list or object, which names no single class.
    """
    if value is None:
        return None
    if isinstance(value, bool):  # before int: True == 1 in Python, but a yes/no label is not the number 1
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_name(value)
    if not isinstance(value, str):
        raise TypeError(f"a {type(value).__name__} is not a class label")
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        return None
    if _NUMBER.fullmatch(name):
        number = int(name) if name.lstrip("-").isdigit() else float(name)
        return _number_name(number) if math.isfinite(number) else name  # '1e999' overflows: keep it as written
    return name


def _number_name(number: int | float) -> str:
    """'1' for 1 and 1.0; floats otherwise in their shortest round-trip form ('0.1', '1e+300')."""
    if isinstance(number, int):
        return str(number)
    if number.is_integer() and abs(number) < 2**53:  # beyond 2**53 a float is no longer an exact integer
        return str(int(number))
    return repr(number)


def _natural_key(name: str) -> tuple:
    """Sort '2' before '10' and '-1' before '0.5' so number labels keep their numeric order."""
    if (name.isascii() and name.isdigit()) or _NUMBER.fullmatch(name):  # '①' and '²' are digits to isdigit()
        return (0, Decimal(name), name)
    return (1, 0, name)
