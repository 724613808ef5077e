"""The batches both runtimes (PyTorch, onnxruntime) run, and how a model's output becomes one row per prediction.

Imports transferkit.core, transferkit.data and transferkit.train. A task with one row per input reads its batches
from transferkit.data.stream. A task that answers per word (tokens, ``Task.per_word``) reads them from
transferkit.data.token_loader: sentences cut into overlapping sub-word windows, every word owned by one window.
The model's output is then the logits at every sub-word position, [windows, positions, tags] — exactly what the
ONNX graph computes — and ``ModelBatch.rows`` gathers each word's first sub-word from it in Python (``word_rows``):
one code path for both runtimes, so an export tags the same words from the same numbers as its bundle.
Texts given to a token model are cut into words (``as_sentences``); entity offsets refer to the text.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.core.errors import ConfigError
from transferkit.data.conll import split_words
from transferkit.data.examples import Examples
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.stream import inference_batches
from transferkit.data.token_loader import TokenCollator
from transferkit.train.inference import predict_logits


@dataclass
class ModelBatch:
    """``inputs`` (None when no input of the batch gave any) holds the tensors of the inputs at ``positions``."""

    positions: list[int]
    inputs: dict[str, torch.Tensor] | None
    errors: list[tuple[int, Any]] = field(default_factory=list)  # (position, ImageDecodeError) of unreadable ones
    word_rows: np.ndarray | None = None  # per word, in order: its first sub-word in the flat [windows * positions]
    counts: list[int] | None = None  # per position: its number of words (rows)

    def rows(self, outputs: np.ndarray) -> np.ndarray:
        """The model's output for this batch -> one row per input, or per word (all sentences concatenated)."""
        if self.word_rows is None:
            return outputs
        return outputs.reshape(-1, outputs.shape[-1])[self.word_rows]

    def per_input(self, rows: np.ndarray) -> list[np.ndarray]:
        """Per-word rows -> one array of rows per position (empty for a sentence without words)."""
        return np.split(rows, np.cumsum(self.counts)[:-1]) if self.counts else []


def as_sentences(examples: Examples) -> Examples:
    """Every input as a list of words: a text cut by ``split_words`` (its id: the text itself, which entity offsets
    refer to), a list of words kept (its id: the source's, by default the words joined by spaces)."""
    if examples.modality != "text":
        raise ConfigError(f"{examples.source}: a token-classification bundle tags the words of texts; pass a CoNLL "
                          "file, a JSONL with a tokens list, a .txt with one sentence per line, or texts.")
    words, ids = [], []
    for x, id_ in zip(examples.inputs, examples.ids):
        if isinstance(x, str):
            words.append(split_words(x))
            ids.append(x)
        else:
            words.append([str(w) for w in x])
            ids.append(id_)
    return Examples("text", words, None, examples.source, ids)


def model_batches(examples: Examples, spec: PreprocessSpec, batch_size: int, per_word: bool = False
                  ) -> Iterator[ModelBatch]:
    """Batches in input order; the same ``spec`` always gives the same tensors, whichever runtime consumes them."""
    if not per_word:
        for batch in inference_batches(examples, spec, batch_size):
            yield ModelBatch(batch.positions, batch.inputs, list(batch.errors))
        return
    sentences, collator = as_sentences(examples), TokenCollator(spec)
    for start in range(0, len(sentences), batch_size):
        positions = list(range(start, min(start + batch_size, len(sentences))))
        counts = [len(sentences.inputs[i]) for i in positions]
        items = [{"words": sentences.inputs[i], "index": i} for i in positions if sentences.inputs[i]]
        if not items:  # only empty texts: nothing to run, no rows
            yield ModelBatch(positions, None, word_rows=np.zeros(0, np.int64), counts=counts)
            continue
        inputs = collator(items)
        word_rows = inputs.pop("word_rows").numpy()
        inputs.pop("index")
        yield ModelBatch(positions, inputs, word_rows=word_rows, counts=counts)


def torch_rows(model: nn.Module, batch: ModelBatch, precision: str) -> np.ndarray:
    """The bundle model's rows for one batch at ``precision`` (float32 numpy)."""
    return batch.rows(predict_logits(model, [batch.inputs], precision)[0])
