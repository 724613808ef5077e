"""torch Datasets and DataLoaders over Examples, with seeded shuffling so an epoch's order is reproducible.

Imports only transferkit.core and transferkit.data. The data path's speed lives beside it: pictures cached once
per run (data.image_cache), decode workers and per-draw augmentation seeds (data.workers), texts tokenised once
and batched by length (data.text_tokens).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from transferkit.data.audio_loader import AudioCollator, AudioDataset
from transferkit.data.examples import Examples
from transferkit.data.image_cache import PictureCache
from transferkit.data.labels import LabelMap
from transferkit.data.preprocess import (
    PreprocessSpec,
    image_to_tensor,
    image_transform,
    load_tokenizer,
    train_image_transform,
)
from transferkit.data.text_tokens import length_order, pad, tokenize
from transferkit.data.workers import MIN_ITEMS, decode_workers, draw_seed, one_thread, seeded


class ImageDataset(Dataset):
    """Model-ready pictures; ``cache``: decoded and resized once (transferkit.data.image_cache), else every time.

    An item is asked for by its index, or by (index, seed) from an EpochSampler with ``draw_seeds``: its
    augmentation then runs under that seed (transferkit.data.workers)."""

    def __init__(self, examples: Examples, targets: list[int] | None, spec: PreprocessSpec, augment: str = "none",
                 hflip: float = 0.0, cache: bool = False):
        self.examples, self.targets = examples, targets
        self.cache = PictureCache(examples, spec, augment, hflip) if cache else None
        self.numpy_draws = augment in ("randaugment", "trivial")  # timm draws from numpy too
        self.transform = train_image_transform(spec, augment, hflip) if augment != "none" else image_transform(spec)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        with seeded(seed, self.numpy_draws):
            pixels = self.cache(i) if self.cache is not None else \
                image_to_tensor(self.examples.inputs[i], self.transform, self.examples.max_pixels)
        item = {"pixel_values": pixels, "index": i}
        if self.targets is not None:  # a multi-label 0/1 row as one tensor (default_collate would transpose a list)
            target = self.targets[i]
            item["labels"] = torch.tensor(target, dtype=torch.float32) if isinstance(target, list) else target
        return item


class TextDataset(Dataset):
    """Texts with their encodings, tokenised once when the dataset is built (``spec``; None: by the collator)."""

    def __init__(self, examples: Examples, targets: list[int] | None, spec: PreprocessSpec | None = None):
        self.examples, self.targets = examples, targets
        self.tokens = tokenize(examples.inputs, spec) if spec is not None else None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"text": self.examples.inputs[i], "index": i}
        if self.tokens is not None:
            item["tokens"] = self.tokens[i]
        if self.targets is not None:
            item["labels"] = self.targets[i]
        return item


class TextCollator:
    """Pad a batch to its longest item (cheaper than padding everything to max_length); items without their
    ``tokens`` (transferkit.data.text_tokens) are tokenised here."""

    def __init__(self, spec: PreprocessSpec):
        self.tokenizer = load_tokenizer(spec)
        self.max_length = spec.max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "tokens" in items[0]:
            batch = pad([it["tokens"] for it in items], self.tokenizer)
        else:
            batch = dict(self.tokenizer([it["text"] for it in items], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt"))
        batch["index"] = torch.tensor([it["index"] for it in items])
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items])
        return batch


class EpochSampler(Sampler[int]):
    """A shuffled (or class-balanced) order that depends only on (seed, epoch) and can start mid-epoch.

    This is what makes resume exact: the loop calls ``set_epoch(epoch, start)`` and the remaining batches are
    the very ones the interrupted run would have seen. ``weights`` (one per example) draws with replacement in
    proportion to them: the balanced sampler.
    """

    def __init__(self, n: int, seed: int, weights: list[float] | None = None, draw_seeds: bool = False):
        self.n, self.seed, self.weights, self.draw_seeds = n, seed, weights, draw_seeds
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        if self.weights is None:
            return torch.randperm(self.n, generator=generator).tolist()
        weights = torch.tensor(self.weights, dtype=torch.double)
        return torch.multinomial(weights, self.n, replacement=True, generator=generator).tolist()

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        """Indices; with ``draw_seeds``, (index, seed of that draw) pairs (transferkit.data.workers.draw_seed)."""
        rest = self.order()[self.start:]
        if not self.draw_seeds:
            return iter(rest)
        return ((i, draw_seed(self.seed, self.epoch, self.start + k)) for k, i in enumerate(rest))

    def __len__(self) -> int:
        return self.n - self.start


def balanced_weights(targets: list[int]) -> list[float]:
    """Per-example weights 1/count(class): every class is drawn equally often."""
    counts = Counter(targets)
    return [1.0 / counts[t] for t in targets]


def make_loader(
    examples: Examples,
    spec: PreprocessSpec,
    label_map: LabelMap | None,
    batch_size: int,
    shuffle_seed: int | None = None,
    augment: str | bool = "none",
    hflip: float = 0.0,
    balanced: bool = False,
    cache: bool = False,
    by_length: bool = False,
) -> DataLoader:
    """A loader over ``examples``; ``shuffle_seed`` (None = keep order) drives an EpochSampler.

    ``augment`` names the training transform for images (never used for evaluation or prediction; for audio,
    any policy but "none" means random crops and transferkit.data.audio_augment);
    ``balanced`` samples classes equally (needs labels and a shuffle seed).
    ``cache`` (images): decode and resize each picture once (transferkit.data.image_cache; decide with its
    ``plan_cache``); an uncached loader of MIN_ITEMS image files and two batches or more decodes in worker processes
    (transferkit.data.workers). Augmented image draws are seeded per draw either way.
    ``by_length`` (texts, no shuffle): batches of similar token counts, shortest first; each batch's ``index``
    says where its rows belong (transferkit.train.inference.predict_logits puts them back in input order).
    """
    if isinstance(augment, bool):
        augment = "light" if augment else "none"
    labeled = label_map is not None and examples.labels is not None
    targets = label_map.encode(examples.labels, examples.source) if labeled else None
    if examples.is_tokens:  # sentences of words -> sub-word windows, one output row per word
        from transferkit.data.token_loader import make_token_loader  # it imports this module's sampler

        return make_token_loader(examples, spec, targets, batch_size, shuffle_seed)
    workers = 0
    if examples.modality == "image":
        dataset, collate = ImageDataset(examples, targets, spec, augment, hflip, cache), None
        files = bool(examples.inputs) and isinstance(examples.inputs[0], (str, Path))  # arrays need no decoding
        workers = decode_workers() if files and not cache and len(examples) >= max(MIN_ITEMS, 2 * batch_size) else 0
    elif examples.modality == "audio":  # augment other than "none": random crops + audio_augment (training only)
        dataset = AudioDataset(examples, targets, spec, augment)
        collate = AudioCollator(spec, train=augment != "none")
    else:
        dataset, collate = TextDataset(examples, targets, spec), TextCollator(spec)  # tokenised once, here
    sampler = None
    if shuffle_seed is not None:
        weights = balanced_weights(targets) if balanced and targets is not None else None
        seeds = examples.modality == "image" and augment != "none"
        sampler = EpochSampler(len(examples), shuffle_seed, weights, draw_seeds=seeds)
    elif by_length and isinstance(dataset, TextDataset):
        sampler = length_order(dataset.tokens)
    # A private generator: creating an iterator then draws its worker seed from it, not from the global RNG,
    # so evaluating or resuming mid-epoch does not shift the random stream that augmentation and dropout use.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator().manual_seed(0),
                      collate_fn=collate, num_workers=workers, worker_init_fn=one_thread if workers else None,
                      persistent_workers=workers > 0)

