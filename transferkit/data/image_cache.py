"""Decode and resize each image once per run: a uint8 cache of the first resize step, when it fits in memory.

Imports only transferkit.core and transferkit.data. Without it, a training run decodes (Pillow) and resizes every
image again in every epoch, and validation every validation image. ``plan_cache`` adds up, from the image headers
(or array shapes), what the cache of the run's loaders would hold and turns it on when that fits
``memory_cap()`` (min(2 GB, 1/4 of the available memory); ``TRANSFERKIT_IMAGE_CACHE_MB`` overrides, 0 turns the
cache off); otherwise the loaders decode as before, in DataLoader workers (transferkit.data.workers). The plan
is written to the run's metrics.json (``data_path``) and logged.

A cached picture is a uint8 CHW tensor, filled the first time an image is read; what follows it is the very
transform of the uncached path (transferkit.data.preprocess), run on that tensor:
- augment 'none' and every evaluation loader: the cache holds the eval transform's resized square (Pillow's
  resize, as uncached), and the transform's own resize leaves a tensor of that size as it is; the tensors, and a
  seeded run's logits, are identical with the cache on or off (tests/data/test_image_cache.py).
- 'light': the cache holds the picture shrunk (never enlarged; aspect kept) to a shorter side of ``train_side``:
  the smallest crop the random resized crop takes still has at least ``image_size`` pixels across. The crop, the
  flip, scaling and normalisation then run on the uint8 tensor (torchvision v2): the same family and parameters,
  and the same draws (per-draw seeds, transferkit.data.workers). Where the results differ: a picture that was
  shrunk is cropped in its cached pixels, and the offsets drawn over that smaller range (torch.randint) land
  elsewhere, so its crops are other crops of the same distribution; and every crop is resized by torch's bicubic
  instead of Pillow's (values within a few levels of 255).
- 'randaugment' / 'trivial': timm's transform runs on the cached picture turned back into a PIL image (its
  operations are Pillow's); the same draws, crop offsets in cached pixels as above.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from transferkit.data.examples import Examples
from transferkit.data.images import load_image, open_image
from transferkit.data.preprocess import (
    _CROP_RATIO,
    _CROP_SCALE,
    _INTERPOLATION,
    PreprocessSpec,
    image_transform,
    train_image_transform,
)

CAP_BYTES = 2 * 1024 ** 3  # the most a run's picture cache may hold, whatever the machine has
CAP_ENV = "TRANSFERKIT_IMAGE_CACHE_MB"


def available_memory() -> int:
    """Bytes of memory available to new allocations now (psutil's ``available``: free + reclaimable caches)."""
    import psutil  # a dependency of accelerate, listed in pyproject.toml

    return int(psutil.virtual_memory().available)


def memory_cap() -> int:
    """Bytes the cache may hold: ``TRANSFERKIT_IMAGE_CACHE_MB`` when set, else min(2 GB, 1/4 of available memory)
    shared by the processes of a multi-process run on this machine (``LOCAL_WORLD_SIZE``): each caches every
    picture it is dealt, and over the epochs it is dealt them all."""
    value = os.environ.get(CAP_ENV, "").strip()
    if value:
        try:
            return max(0, int(float(value) * 1024 ** 2))
        except ValueError:
            from transferkit.core.errors import ConfigError

            raise ConfigError(f"{CAP_ENV}={value!r}: set it to a number of megabytes (0 turns the image cache "
                              "off), or unset it.") from None
    return min(CAP_BYTES, available_memory() // 4) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def train_side(spec: PreprocessSpec) -> int:
    """Shorter side (pixels) a training picture is cached at: the smallest random resized crop (scale and ratio at
    their minimum, on a square) is then still ``image_size`` pixels across."""
    return math.ceil(spec.image_size / math.sqrt(_CROP_SCALE[0] * _CROP_RATIO[0]))


def cached_size(size: tuple[int, int], spec: PreprocessSpec, augment: str) -> tuple[int, int]:
    """(width, height) a picture of ``size`` is cached at; torchvision's rounding of a shorter-side resize."""
    if augment == "none":
        return spec.image_size, spec.image_size
    width, height = size
    side, short = train_side(spec), min(width, height)
    if short <= side:
        return width, height
    long = int(side * max(width, height) / short)
    return (side, long) if width <= height else (long, side)


def input_size(item: Any) -> tuple[int, int] | None:
    """(width, height) of an image input without decoding its pixels (a file's header); None when unreadable
    (the loaders report it as they do uncached)."""
    if isinstance(item, Image.Image):
        return item.size
    if isinstance(item, np.ndarray):
        return int(item.shape[1]), int(item.shape[0])
    try:
        with open(Path(item), "rb") as stream, open_image(stream) as image:
            return image.size
    except (OSError, SyntaxError, ValueError):
        return None


@dataclass(frozen=True)
class CachePlan:
    """Whether the run's loaders cache their pictures: ``needed_bytes`` (estimated; the sum stops counting once it
    passes the cap) against ``cap_bytes``."""

    enabled: bool
    images: int
    needed_bytes: int
    cap_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """For metrics.json; the cap (it follows the memory free at the time) only where it turned the cache off,
        so a resumed run's metrics equal the uninterrupted run's."""
        out = {"image_cache": "on" if self.enabled else "off", **asdict(self)}
        del out["enabled"]
        if self.enabled:
            del out["cap_bytes"]
        return out

    def describe(self, workers: int = 0) -> str:
        """The log line: what the run does and why; ``workers``: the uncached training loader's decoding processes."""
        need, cap = _mb(self.needed_bytes), _mb(self.cap_bytes)
        if self.enabled:
            return f"image cache on: {self.images} images decoded and resized once ({need})"
        where = f"in {workers} DataLoader worker process{'es' if workers != 1 else ''}" if workers else \
            "in the training process"
        need = f"need over {need}" if self.needed_bytes > self.cap_bytes else f"need {need}"
        return (f"image cache off: {self.images} images {need}, {cap} allowed ({CAP_ENV}); they are decoded "
                f"again in every epoch, {where}")


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1024 ** 2:,.1f} MB"


def plan_cache(parts: Sequence[tuple[Examples, str]], spec: PreprocessSpec, cap_bytes: int | None = None
               ) -> CachePlan:
    """The cache plan for loaders over ``parts`` ((examples, augment policy) each) with ``spec``.

    ``cap_bytes`` defaults to ``memory_cap()``. Reads one header per image file (no pixels); stops reading once
    the total passes the cap."""
    cap = memory_cap() if cap_bytes is None else cap_bytes
    total, images = 0, sum(len(examples) for examples, _ in parts)
    for examples, augment in parts:
        for item in examples.inputs:
            size = (1, 1) if augment == "none" else input_size(item)
            width, height = cached_size(size or (0, 0), spec, augment)
            total += 3 * width * height
            if total > cap:
                return CachePlan(False, images, total, cap)
    return CachePlan(images > 0 and total <= cap, images, total, cap)


class PictureCache:
    """Pictures of ``examples`` as uint8 CHW tensors, each decoded and resized the first time it is read; calling
    it with an index returns the model-ready float tensor [3, image_size, image_size] (see the module docstring)."""

    def __init__(self, examples: Examples, spec: PreprocessSpec, augment: str = "none", hflip: float = 0.0):
        self.examples = examples
        self.pictures: list[torch.Tensor | None] = [None] * len(examples)
        interpolation = _INTERPOLATION[spec.interpolation]
        if augment == "none":
            self.resize: Callable[[Image.Image], Image.Image] = T.Resize(
                (spec.image_size, spec.image_size), interpolation=interpolation, antialias=True)
            self.finish: Callable[[torch.Tensor], torch.Tensor] = image_transform(spec)
        else:
            self.resize = _Shrink(train_side(spec), interpolation)
            transform = train_image_transform(spec, augment, hflip)
            self.finish = transform if augment == "light" else T.Compose([T.ToPILImage(), transform])

    def picture(self, i: int) -> torch.Tensor:
        """The cached uint8 picture [3, h, w] of example ``i`` (decoded now if it is not yet)."""
        picture = self.pictures[i]
        if picture is None:
            image = load_image(self.examples.inputs[i], self.examples.max_pixels)
            picture = self.pictures[i] = T.functional.pil_to_tensor(self.resize(image))
        return picture

    def __call__(self, i: int) -> torch.Tensor:
        return self.finish(T.functional.to_image(self.picture(i)))

    @property
    def nbytes(self) -> int:
        """Bytes the pictures cached so far hold."""
        return sum(p.numel() for p in self.pictures if p is not None)


class _Shrink:
    """Resize a PIL image so its shorter side is ``side`` when it is longer (never enlarges)."""

    def __init__(self, side: int, interpolation: T.InterpolationMode):
        self.side, self.interpolation = side, interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        if min(image.size) <= self.side:
            return image
        return T.functional.resize(image, self.side, interpolation=self.interpolation, antialias=True)
