"""The preprocessing spec a backbone declares, and the transforms/tokenizer built from it.

Imports only transferkit.core and transferkit.data. The spec is plain data so it can be saved in a bundle
and replayed exactly at predict time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torchvision.transforms import v2 as T

from transferkit.core.errors import ConfigError
from transferkit.data.images import load_image


@dataclass(frozen=True)
class PreprocessSpec:
    modality: str
    image_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    tokenizer: str | None = None
    max_length: int = 256

    def with_image_size(self, size: int | None) -> PreprocessSpec:
        if size is None:
            return self
        if not isinstance(size, int) or size < 16:
            raise ConfigError(f"The 'image_size' parameter must be an int >= 16 pixels. Got {size!r} instead.")
        return replace(self, image_size=size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        d = dict(d)
        for key in ("mean", "std"):
            d[key] = tuple(d[key])
        return cls(**d)


_INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def image_transform(spec: PreprocessSpec) -> T.Compose:
    """Deterministic eval transform: resize to a square of ``image_size``, scale to [0, 1], normalise."""
    return T.Compose([
        T.Resize((spec.image_size, spec.image_size), interpolation=_INTERPOLATION[spec.interpolation], antialias=True),
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(spec.mean, spec.std),
    ])


def train_image_transform(spec: PreprocessSpec) -> T.Compose:
    """Training transform: a mild random resized crop. No flips (they change digits, text and many objects) and
    no padding affine (its fill colour is wrong for half the datasets: white on Fashion-MNIST cost 7 points)."""
    return T.Compose([
        T.RandomResizedCrop((spec.image_size, spec.image_size), scale=(0.75, 1.0), ratio=(0.85, 1.18),
                            interpolation=_INTERPOLATION[spec.interpolation], antialias=True),
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(spec.mean, spec.std),
    ])


def image_to_tensor(item: Any, transform: T.Compose) -> torch.Tensor:
    return transform(load_image(item))


def load_tokenizer(spec: PreprocessSpec):  # -> transformers.PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    if spec.tokenizer is None:
        raise ConfigError("A text preprocessing spec needs a 'tokenizer' (a local folder or hub id).")
    return AutoTokenizer.from_pretrained(spec.tokenizer)
