"""torch Datasets and DataLoaders over Examples, with seeded shuffling so an epoch's order is reproducible.

Imports only transferkit.core and transferkit.data.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from transferkit.data.examples import Examples
from transferkit.data.labels import LabelMap
from transferkit.data.preprocess import (
    PreprocessSpec,
    image_to_tensor,
    image_transform,
    load_tokenizer,
    train_image_transform,
)


class ImageDataset(Dataset):
    def __init__(self, examples: Examples, targets: list[int] | None, spec: PreprocessSpec, augment: bool):
        self.examples, self.targets = examples, targets
        self.transform = train_image_transform(spec) if augment else image_transform(spec)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"pixel_values": image_to_tensor(self.examples.inputs[i], self.transform), "index": i}
        if self.targets is not None:
            item["labels"] = self.targets[i]
        return item


class TextDataset(Dataset):
    def __init__(self, examples: Examples, targets: list[int] | None):
        self.examples, self.targets = examples, targets

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"text": self.examples.inputs[i], "index": i}
        if self.targets is not None:
            item["labels"] = self.targets[i]
        return item


class TextCollator:
    """Tokenize a batch with dynamic padding (cheaper than padding everything to max_length)."""

    def __init__(self, spec: PreprocessSpec):
        self.tokenizer = load_tokenizer(spec)
        self.max_length = spec.max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self.tokenizer([it["text"] for it in items], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt"))
        batch["index"] = torch.tensor([it["index"] for it in items])
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items])
        return batch


def make_loader(
    examples: Examples,
    spec: PreprocessSpec,
    label_map: LabelMap | None,
    batch_size: int,
    shuffle_seed: int | None = None,
    augment: bool = False,
) -> DataLoader:
    """A loader over ``examples``; ``shuffle_seed`` (None = keep order) seeds a generator for the epoch order.

    ``augment`` applies the training transform to images (never used for evaluation or prediction).
    """
    labeled = label_map is not None and examples.labels is not None
    targets = label_map.encode(examples.labels, examples.source) if labeled else None
    if examples.modality == "image":
        dataset, collate = ImageDataset(examples, targets, spec, augment), None
    else:
        dataset, collate = TextDataset(examples, targets), TextCollator(spec)
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle_seed is not None, generator=generator,
                      collate_fn=collate, num_workers=0)
