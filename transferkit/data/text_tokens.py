"""Texts tokenised once per loader (not once per epoch), padded per batch, and inference batches by length.

Imports only transferkit.core and transferkit.data. A training run builds its train and validation loaders once,
so their texts are tokenised once per run; a batch is padded to its longest item, exactly as the tokenizer's own
``padding=True`` would (same ids, masks and type ids; tests/data/test_text_tokens.py). For inference,
``length_order`` sorts a window of texts by token count, so a batch pads short texts to short lengths; the
consumer puts the rows back in input order by their positions.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from transferkit.data.preprocess import PreprocessSpec, load_tokenizer

CHUNK = 1024  # texts per tokenizer call: bounds the tokenizer's temporary Python lists


def tokenize(texts: Sequence[Any], spec: PreprocessSpec) -> list[dict[str, np.ndarray]]:
    """Per text, its truncated (to ``spec.max_length``), unpadded encoding: model input name -> int32 ids [tokens]."""
    tokenizer = load_tokenizer(spec)
    rows: list[dict[str, np.ndarray]] = []
    for start in range(0, len(texts), CHUNK):
        chunk = [str(t) for t in texts[start:start + CHUNK]]
        encoded = tokenizer(chunk, truncation=True, max_length=spec.max_length)
        keys = [k for k in tokenizer.model_input_names if k in encoded]
        rows += [{k: np.asarray(encoded[k][j], dtype=np.int32) for k in keys} for j in range(len(chunk))]
    return rows


def pad(rows: Sequence[dict[str, np.ndarray]], tokenizer: Any) -> dict[str, torch.Tensor]:
    """Encodings of ``tokenize`` stacked into int64 tensors [batch, longest], padded on the tokenizer's side with
    its pad id (ids), its pad type id (type ids) and 0 (masks)."""
    longest = max(len(r["input_ids"]) for r in rows)
    fills = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id}
    left = tokenizer.padding_side == "left"
    batch = {}
    for key in rows[0]:
        out = np.full((len(rows), longest), fills.get(key, 0), dtype=np.int64)
        for j, row in enumerate(rows):
            n = len(row[key])
            if left:
                out[j, longest - n:] = row[key]
            else:
                out[j, :n] = row[key]
        batch[key] = torch.from_numpy(out)
    return batch


def length_order(rows: Sequence[dict[str, np.ndarray]]) -> list[int]:
    """Positions of ``rows`` from the fewest tokens to the most (stable: equal lengths keep their order)."""
    return sorted(range(len(rows)), key=lambda j: len(rows[j]["input_ids"]))
