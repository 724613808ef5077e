"""The preprocessing spec a backbone declares, and the transforms/tokenizer/audio feature extractor built from it.

Imports only transferkit.core and transferkit.data. The spec is plain data so it can be saved in a bundle
and replayed exactly at predict time.
"""
from __future__ import annotations

import functools
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
    # audio (transferkit.data.audio): clips are mono at ``sample_rate``, cropped/padded to ``clip_seconds``;
    # ``feature_extractor``: a folder with a transformers preprocessor_config.json (None: raw waveforms)
    sample_rate: int = 16000
    clip_seconds: float = 5.0
    feature_extractor: str | None = None

    def with_clip_seconds(self, seconds: float | None) -> PreprocessSpec:
        if seconds is None:
            return self
        check_clip_seconds(seconds)
        return replace(self, clip_seconds=float(seconds))

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
        return cls(**d)  # a bundle saved before a field existed gets that field's default


def check_clip_seconds(seconds: object) -> None:
    """ConfigError unless ``seconds`` is a finite number > 0 (the length every audio clip is cropped/padded to)."""
    ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 < seconds < float("inf")
    if not ok:
        raise ConfigError(f"The 'clip_seconds' parameter must be a number of seconds > 0. Got {seconds!r} instead.",
                          cli=f"--clip-seconds must be a number of seconds > 0. Got {seconds!r} instead.")


_INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def image_transform(spec: PreprocessSpec) -> T.Compose:
    """Deterministic eval transform: resize to a square of ``image_size``, scale to [0, 1], normalise."""
    return T.Compose([
        T.Resize((spec.image_size, spec.image_size), interpolation=_INTERPOLATION[spec.interpolation], antialias=True),
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(spec.mean, spec.std),
    ])


AUGMENT_POLICIES = ("none", "light", "randaugment", "trivial")
_TIMM_AUTO_AUGMENT = {
    # timm's ImageNet recipe, capped at 9: at magnitude 10 posterize keeps 0 bits and Pillow raises
    "randaugment": "rand-m9-mstd0.5-inc1-mmax9",
    "trivial": "rand-n1-mstd101-inc1",  # TrivialAugment: 1 op, magnitude drawn uniformly (mstd > 100)
}
_CROP_SCALE, _CROP_RATIO = (0.75, 1.0), (0.85, 1.18)


def train_image_transform(spec: PreprocessSpec, policy: str = "light", hflip: float = 0.0) -> Any:
    """Training transform for ``policy``; 'none' is the eval transform.

    'light' is a mild random resized crop (the measured default). No flips unless asked (``hflip`` > 0): they
    change digits, text and many objects. No padding affine: its fill colour is wrong for half the datasets
    (white on Fashion-MNIST cost 7 points). 'randaugment' and 'trivial' come from timm's transform factory
    with the same crop.
    """
    if policy not in AUGMENT_POLICIES:
        raise ConfigError(f"The 'augment' parameter must be one of {AUGMENT_POLICIES}. Got {policy!r} instead.")
    if policy == "none":
        return image_transform(spec)
    if policy == "light":
        steps = [T.RandomResizedCrop((spec.image_size, spec.image_size), scale=_CROP_SCALE, ratio=_CROP_RATIO,
                                     interpolation=_INTERPOLATION[spec.interpolation], antialias=True)]
        if hflip > 0:
            steps.append(T.RandomHorizontalFlip(hflip))
        return T.Compose([*steps, T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)])
    from timm.data import create_transform

    return create_transform(spec.image_size, is_training=True, scale=_CROP_SCALE, ratio=_CROP_RATIO, hflip=hflip,
                            color_jitter=0.0, auto_augment=_TIMM_AUTO_AUGMENT[policy], interpolation=spec.interpolation,
                            mean=spec.mean, std=spec.std)


def image_to_tensor(item: Any, transform: T.Compose, max_pixels: int | None = None) -> torch.Tensor:
    return transform(load_image(item, max_pixels))


def load_tokenizer(spec: PreprocessSpec):  # -> transformers.PreTrainedTokenizerBase
    if spec.tokenizer is None:
        raise ConfigError("A text preprocessing spec needs a 'tokenizer' (a local folder or hub id).")
    return _tokenizer(spec.tokenizer)


@functools.lru_cache(maxsize=8)
def _tokenizer(name_or_path: str):
    """Loading a tokenizer takes ~80 ms: once per process and path, not once per predict call or loader.
    Fast tokenizers are safe to share between loaders (calls do not change their state)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def load_feature_extractor(spec: PreprocessSpec):  # -> transformers.FeatureExtractionMixin | None
    """The audio spec's transformers feature extractor (log-mel for Whisper, normalisation for wav2vec2), or None
    when the backbone reads raw waveforms."""
    return _feature_extractor(spec.feature_extractor) if spec.feature_extractor else None


@functools.lru_cache(maxsize=8)
def _feature_extractor(name_or_path: str):
    from transformers import AutoFeatureExtractor

    return AutoFeatureExtractor.from_pretrained(name_or_path)
