"""Token-classification answers: per sentence its words, their tags and the entities with character offsets — the
JSON object `predict --out x.jsonl` writes per line and `serve` answers per input — and the JSONL/CSV files.

Imports transferkit.core, transferkit.tasks and transferkit.serve (the Predictor, for typing only). The Predictor
(PyTorch or ONNX) computes the per-word scores through transferkit.export.rows (sub-word windows, each word read at
its first sub-word in the window that owns it) and builds its answer here with ``sentence_rows``, so predict,
serve and the Python API answer the same JSON, rounded to ``DIGITS`` places. Rows keep input order.

CSV columns: text, words and tags (JSON lists), entities (a JSON list of {text, type, start, end, score}).
"""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferkit.core.errors import ConfigError
from transferkit.core.io import atomic_write, atomic_write_text
from transferkit.tasks import Task

if TYPE_CHECKING:
    from transferkit.data.examples import Examples
    from transferkit.serve.predictor import Predictor

FIELDS = ("text", "words", "tags", "entities")
DIGITS = 6


@dataclass
class TokenPredictions:
    """One dict per input sentence: text, words, tags, entities."""

    rows: list[dict[str, Any]]
    label_names: tuple[str, ...]
    errors: dict[int, str] = field(default_factory=dict)  # none: every sentence is tagged (the readers refuse)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> list[str]:
        return [row["text"] for row in self.rows]

    @property
    def tags(self) -> list[list[str]]:
        return [row["tags"] for row in self.rows]

    @property
    def entities(self) -> list[list[dict[str, Any]]]:
        return [row["entities"] for row in self.rows]


def sentence_rows(task: Task, names: Sequence[str], texts: Sequence[str], words: Sequence[Sequence[str]],
                  scores: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Per sentence (its text, its words, the tag scores of its words): the answer predict writes and serve sends."""
    return [task.sentence_response(text, w, part, names, digits=DIGITS) for text, w, part in zip(texts, words, scores)]


def predict_tokens(predictor: Predictor, examples: Examples, out: Path | None, top_k: int | None = None,
                   progress: bool = False) -> TokenPredictions:
    """Tag every sentence of ``examples`` (texts, or words per input) with a token Predictor; with ``out`` write
    .jsonl or .csv."""
    if top_k is not None:
        raise ConfigError("--top-k ranks classes per input; a token-classification bundle answers a tag per word "
                          "with its score. Drop --top-k.")
    if out is not None and Path(out).suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"--out {out}: write predictions to a .csv or .jsonl file.")
    predictions = predictor.predict(examples, progress=progress)
    if out is not None:
        _write(Path(out), predictions.rows)
    return predictions


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix.lower() == ".jsonl":
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(FIELDS))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row[k] if k == "text" else json.dumps(row[k], ensure_ascii=False)
                                 for k in FIELDS})

    atomic_write(path, write)
