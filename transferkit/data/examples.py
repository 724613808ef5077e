"""The in-memory form every data source produces: inputs + labels + a modality, and its fingerprint.

Imports only transferkit.core.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from transferkit.core.errors import DataError

Modality = Literal["image", "text", "audio"]


@dataclass
class Examples:
    """A list of inputs (image paths/arrays, texts, or audio file paths) with optional string labels.

    ``ids`` is what `predict` writes next to each prediction (a path, a text, or an index). Token classification
    (transferkit.data.conll): each input is a sentence's list of words, each label its list of IOB2 tags, and
    the id the text the words came from.
    """

    modality: Modality
    inputs: list[Any]
    labels: list[Any] | None
    source: str
    ids: list[str] = field(default_factory=list)
    lines: list[int] | None = None  # for rows of a text file: each input's line number, so checks can name it
    # The decode cap these images were checked with (fit/compare --max-pixels): the loaders decode with the same
    # cap, so an image the data doctor accepted is never refused mid-run. None: data.images' default.
    max_pixels: int | None = None
    # images (or audio clips) listed in a table: the column read as their paths (ids: the paths as written)
    image_column: str | None = None
    # Token files that mix prefixed tags (B-X) with tags that have none ('0', 'X-LOC'): each sentence's tags as
    # written, for the doctor to name the bare ones (``labels`` reads them as new entity types). None otherwise.
    raw_labels: list[Any] | None = None

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = [_default_id(x, i) for i, x in enumerate(self.inputs)]
        if self.labels is not None and len(self.labels) != len(self.inputs):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: list[int] | np.ndarray) -> Examples:
        idx = [int(i) for i in indices]
        labels = [self.labels[i] for i in idx] if self.labels is not None else None
        lines = [self.lines[i] for i in idx] if self.lines is not None else None
        raw = [self.raw_labels[i] for i in idx] if self.raw_labels is not None else None
        return Examples(self.modality, [self.inputs[i] for i in idx], labels, self.source, [self.ids[i] for i in idx],
                        lines, self.max_pixels, self.image_column, raw)

    @property
    def is_tokens(self) -> bool:
        """Sentences of words (token classification) rather than one input per label."""
        return bool(self.inputs) and isinstance(self.inputs[0], list)

    def class_counts(self) -> dict[str, int]:
        """Examples per label (token classification: tags per tag; multi-label: rows per label name)."""
        flat = (t for y in self.labels or [] if y is not None for t in (y if isinstance(y, (list, tuple)) else [y]))
        return dict(sorted(Counter(flat).items()))

    def fingerprint(self) -> str:
        """A hash of the inputs' content (or path + size + mtime for files) and labels, in order."""
        digest = hashlib.sha256(self.modality.encode())
        for x in self.inputs:
            digest.update(_input_bytes(x))
        for label in self.labels or []:
            digest.update(b"\1" if label is None else _input_bytes(label) if isinstance(label, list)
                          else b"\2" + _input_bytes(list(label)) if isinstance(label, tuple)  # a multi-label set
                          else label.encode("utf-8") + b"\0")
        return digest.hexdigest()


def a_modality(modality: str) -> str:
    """'an image', 'an audio', 'a text': the article a modality takes in a sentence."""
    return f"{'an' if modality[:1] in 'aeiou' else 'a'} {modality}"


def check_modality(examples: Examples, expected: str, what: str = "this bundle") -> None:
    """DataError unless ``examples`` hold ``expected`` data (a bundle of one modality cannot read another's)."""
    if examples.modality != expected:
        raise DataError(f"{examples.source} holds {examples.modality} data but {what} is {a_modality(expected)} "
                        f"model; pass {expected} data.")


def _default_id(x: Any, i: int) -> str:
    if isinstance(x, (str, Path)):
        return str(x)
    if isinstance(x, list):  # a sentence's words: the text their character offsets refer to
        return " ".join(x)
    return str(i)


def _input_bytes(x: Any) -> bytes:
    if isinstance(x, np.ndarray):
        return str(x.shape).encode() + np.ascontiguousarray(x).tobytes()
    if isinstance(x, Path) or (isinstance(x, str) and os.path.sep in x and os.path.exists(x)):
        st = os.stat(x)
        return f"{x}|{st.st_size}|{st.st_mtime_ns}\0".encode()
    if isinstance(x, str):
        return x.encode("utf-8") + b"\0"
    if isinstance(x, list):  # a sentence's words or tags; the length keeps ['a b'] apart from ['a', 'b']
        return f"[{len(x)}]".encode() + b"".join(str(w).encode("utf-8") + b"\0" for w in x)
    if hasattr(x, "tobytes"):  # PIL image
        return x.tobytes()
    raise TypeError(f"cannot fingerprint input of type {type(x).__name__}")


@dataclass
class DataSplits:
    """What a source yields: a training split and, where the source has them, val and test splits."""

    train: Examples
    val: Examples | None = None
    test: Examples | None = None

    def get(self, split: str) -> Examples | None:
        return {"train": self.train, "val": self.val, "test": self.test}[split]
