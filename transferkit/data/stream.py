"""Inference batches over Examples that report an unreadable input as a row error instead of raising.

Imports only transferkit.core and transferkit.data. Prediction at scale must not die on the one corrupt file in
a million, and neither runtime (torch or onnxruntime) may see different tensors for the same input: both read
their batches from here, built with the eval transform / tokenizer of the bundle's own preprocessing spec.
Inputs are decoded batch by batch, so no more than a few batches of pictures are ever held decoded (image files
are decoded by worker processes where cores are idle: transferkit.data.workers). Texts can come in
batches sorted by length (``by_length``), which pad less.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from transferkit.data.audio import AudioDecodeError
from transferkit.data.audio_loader import AudioCollator, AudioDataset
from transferkit.data.examples import Examples
from transferkit.data.images import ImageDecodeError
from transferkit.data.loaders import TextCollator
from transferkit.data.preprocess import PreprocessSpec, image_to_tensor, image_transform, load_tokenizer
from transferkit.data.text_tokens import length_order, pad, tokenize
from transferkit.data.workers import MIN_ITEMS, decode_workers, one_thread


@dataclass
class InferenceBatch:
    """``inputs`` (None when every row failed) holds the readable rows, at ``positions`` of the Examples."""

    positions: list[int]
    inputs: dict[str, torch.Tensor] | None
    errors: list[tuple[int, ImageDecodeError | AudioDecodeError]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.positions) + len(self.errors)


class _SafeImages(Dataset):
    def __init__(self, examples: Examples, spec: PreprocessSpec):
        self.examples, self.transform = examples, image_transform(spec)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return {"index": i,
                    "pixel_values": image_to_tensor(self.examples.inputs[i], self.transform, self.examples.max_pixels)}
        except ImageDecodeError as exc:
            return {"index": i, "error": exc}


class _Texts(Dataset):
    def __init__(self, examples: Examples):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "text": str(self.examples.inputs[i])}


class _Collate:
    """Stack the readable rows; keep the others as (position, error)."""

    def __init__(self, spec: PreprocessSpec):
        self.collate = TextCollator(spec) if spec.modality == "text" else AudioCollator(spec) \
            if spec.modality == "audio" else None  # images: stacked here

    def __call__(self, items: list[dict[str, Any]]) -> InferenceBatch:
        good = [it for it in items if "error" not in it]
        errors = [(it["index"], it["error"]) for it in items if "error" in it]
        if not good:
            return InferenceBatch([], None, errors)
        if self.collate is not None:
            inputs = self.collate(good)
            inputs.pop("index")
        else:
            inputs = {"pixel_values": torch.stack([it["pixel_values"] for it in good])}
        return InferenceBatch([it["index"] for it in good], inputs, errors)


def inference_batches(examples: Examples, spec: PreprocessSpec, batch_size: int,
                      by_length: bool = False) -> Iterator[InferenceBatch]:
    """Batches in input order; the same ``spec`` always gives the same tensors, whichever runtime consumes them.

    ``by_length`` (texts): batches of similar token counts instead, each window of LENGTH_WINDOW batches sorted by
    length (``positions`` say where each row belongs; the consumer restores input order)."""
    if by_length and spec.modality == "text":
        yield from _length_batches(examples, spec, batch_size)
        return
    dataset = _Texts(examples) if spec.modality == "text" else AudioDataset(examples, None, spec, safe=True) \
        if spec.modality == "audio" else _SafeImages(examples, spec)
    workers = _image_decode_workers(examples, batch_size) if spec.modality == "image" else 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_Collate(spec),
                        num_workers=workers, worker_init_fn=one_thread if workers else None)
    yield from loader


def _image_decode_workers(examples: Examples, batch_size: int) -> int:
    """Worker processes that decode image files while the model runs (transferkit.data.workers.decode_workers: only
    on cores the load leaves idle); 0 for in-memory arrays and for inputs too few to repay starting a worker."""
    files = bool(examples.inputs) and isinstance(examples.inputs[0], (str, Path))
    return decode_workers() if files and len(examples) >= max(MIN_ITEMS, 2 * batch_size) else 0


LENGTH_WINDOW = 32  # batches of texts sorted by length together: bounds the token ids held at once


def _length_batches(examples: Examples, spec: PreprocessSpec, batch_size: int) -> Iterator[InferenceBatch]:
    """Texts a window at a time: tokenised once, sorted by token count, cut into batches padded to their longest."""
    tokenizer = load_tokenizer(spec)
    size = batch_size * LENGTH_WINDOW
    for start in range(0, len(examples), size):
        rows = tokenize(examples.inputs[start:start + size], spec)
        order = length_order(rows)
        for b in range(0, len(order), batch_size):
            chunk = order[b:b + batch_size]
            yield InferenceBatch([start + j for j in chunk], pad([rows[j] for j in chunk], tokenizer))
