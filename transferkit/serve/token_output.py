"""Predict with a token-classification bundle: per sentence its words, their tags and the entities with character
offsets, written as JSONL or CSV.

Imports transferkit.core, transferkit.data, transferkit.tasks, transferkit.train and transferkit.export. The
per-input Predictor (serve, ONNX) answers one row of scores per input; a sentence answers one row per word, so
predict reads the bundle here with the torch runtime (ONNX and serve refuse token bundles, saying so). Rows keep
input order; the model's word rows are cut back into sentences by the number of words each input has.

CSV columns: text, words and tags (JSON lists), entities (a JSON list of {text, type, start, end, score}).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.core.errors import ConfigError
from transferkit.core.io import atomic_write, atomic_write_text
from transferkit.data.conll import split_words
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader
from transferkit.export.bundle import MANIFEST, load_bundle, recorded_precision
from transferkit.train.inference import predict_logits

FIELDS = ("text", "words", "tags", "entities")


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


def predict_tokens(bundle_dir: Path, examples: Examples, out: Path | None, runtime: str = "auto",
                   top_k: int | None = None, batch_size: int = 64, progress: bool = False) -> TokenPredictions:
    """Tag every sentence of ``examples`` (words per input) with the bundle; with ``out`` write .jsonl or .csv."""
    if runtime == "onnx":
        raise ConfigError("--runtime onnx: token-classification bundles are not exported to ONNX yet; predict with "
                          "--runtime torch (or auto).")
    if top_k is not None:
        raise ConfigError("--top-k ranks classes per input; a token-classification bundle answers a tag per word "
                          "with its score. Drop --top-k.")
    if out is not None and Path(out).suffix.lower() not in (".csv", ".jsonl"):
        raise ConfigError(f"--out {out}: write predictions to a .csv or .jsonl file.")
    if not examples.is_tokens:  # texts (a CSV/JSONL text column): cut into words, offsets into each text
        if examples.modality != "text":
            raise ConfigError(f"{examples.source}: a token-classification bundle tags the words of texts; pass a "
                              "CoNLL file, a JSONL with a tokens list, a .txt with one sentence per line or texts.")
        examples = Examples("text", [split_words(str(t)) for t in examples.inputs], None, examples.source,
                            [str(t) for t in examples.inputs])
    bundle = load_bundle(Path(bundle_dir))
    model, names = bundle.model, bundle.label_map.names
    precision = recorded_precision(bundle.manifest, bundle.path / MANIFEST)
    loader = make_loader(examples, bundle.preprocessing, None, batch_size)
    logits, _ = predict_logits(model, loader, precision, progress=progress, desc=f"predict {examples.source}")
    scores = model.task.probabilities(torch.from_numpy(logits)).numpy()
    ends = np.cumsum([len(words) for words in examples.inputs])
    rows = [model.task.sentence_response(text, words, part, names, digits=6)
            for text, words, part in zip(examples.ids, examples.inputs, np.split(scores, ends[:-1]))]
    if out is not None:
        _write(Path(out), rows)
    return TokenPredictions(rows, tuple(names))


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
