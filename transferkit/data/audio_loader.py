"""Audio clips -> the backbone's batch: decoded mono at the spec's rate, cropped to ``clip_seconds``, then turned into
features by the spec's transformers feature extractor (or kept as raw waveforms).

Imports only transferkit.core and transferkit.data. The batch (the audio contract every audio backbone reads):
- with ``spec.feature_extractor``: what ``AutoFeatureExtractor(...)(waves, padding="max_length", max_length=clip
  samples, return_attention_mask=True)`` gives: Whisper {"input_features": [B, 80, frames], "attention_mask":
  [B, frames]}, wav2vec2-style {"input_values": [B, samples], "attention_mask": [B, samples]};
- without: {"input_values": [B, samples] float32 (zero-padded), "attention_mask": [B, samples] long};
attention_mask marks the real (unpadded) audio; plus "index" and, when labeled, "labels".
In training with augmentation on, each clip is cropped at a random start and goes through
transferkit.data.audio_augment (waveform: shift, gain, noise; log-mel features: SpecAugment masks). The random
draws come from torch's global generator, as the image transforms' do, so a seeded run (and its resume, which
restores that generator) sees the same crops; evaluation and prediction crop at the centre and never augment.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from transferkit.data.audio import AudioDecodeError, clip_samples, crop_or_pad, load_audio
from transferkit.data.examples import Examples
from transferkit.data.preprocess import PreprocessSpec, load_feature_extractor


def _augmenter() -> Any:
    """transferkit.data.audio_augment (augment_waveform, mask_features), or None where it is not installed."""
    try:
        from transferkit.data import audio_augment
    except ModuleNotFoundError as exc:
        if exc.name not in ("transferkit.data.audio_augment", "audiomentations"):
            raise
        return None
    return audio_augment


def _torch_seeded_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's global one (seeded by the run, saved in checkpoints)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


class AudioDataset(Dataset):
    """Each item: the clip's real samples (at most ``clip_seconds``), its index and label. ``augment`` other than
    "none" (training): random crop + waveform augmentation; ``safe``: an unusable clip becomes {"error": ...}
    (prediction reports it as a row error) instead of raising."""

    def __init__(self, examples: Examples, targets: list[Any] | None, spec: PreprocessSpec, augment: str = "none",
                 safe: bool = False):
        self.examples, self.targets, self.spec, self.safe = examples, targets, spec, safe
        self.train = augment != "none"
        self.samples = clip_samples(spec.clip_seconds, spec.sample_rate)
        self.augment = _augmenter() if self.train else None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            wave = load_audio(self.examples.inputs[i], self.spec.sample_rate)
        except AudioDecodeError as exc:
            if not self.safe:
                raise
            return {"index": i, "error": exc}
        rng = _torch_seeded_rng() if self.train else None
        real = min(len(wave), self.samples)
        wave = crop_or_pad(wave, self.samples, rng)[:real]
        if self.augment is not None and rng is not None:
            wave = self.augment.augment_waveform(wave, self.spec.sample_rate, rng)[:real]
        item: dict[str, Any] = {"wave": wave, "index": i}
        if self.targets is not None:
            item["labels"] = self.targets[i]
        return item


class AudioCollator:
    """Pad a batch of clips to ``clip_seconds`` and build the backbone's inputs (the module docstring's contract)."""

    def __init__(self, spec: PreprocessSpec, train: bool = False):
        self.spec, self.train = spec, train
        self.samples = clip_samples(spec.clip_seconds, spec.sample_rate)
        self.extractor = load_feature_extractor(spec)
        self.augment = _augmenter() if train else None

    def features(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        if self.extractor is None:
            values = torch.zeros(len(waves), self.samples, dtype=torch.float32)
            mask = torch.zeros(len(waves), self.samples, dtype=torch.long)
            for row, wave in enumerate(waves):
                values[row, :len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
                mask[row, :len(wave)] = 1
            return {"input_values": values, "attention_mask": mask}
        batch = dict(self.extractor(waves, sampling_rate=self.spec.sample_rate, padding="max_length",
                                    max_length=self.samples, truncation=True, return_attention_mask=True,
                                    return_tensors="pt"))
        batch["attention_mask"] = batch["attention_mask"].long()
        for key in ("input_features", "input_values"):
            if key in batch:
                batch[key] = batch[key].float()
        if self.augment is not None and "input_features" in batch:  # SpecAugment on log-mels, one draw per clip
            batch["input_features"] = torch.stack([self.augment.mask_features(f, _torch_seeded_rng())
                                                   for f in batch["input_features"]])
        return batch

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.features([it["wave"] for it in items])
        batch["index"] = torch.tensor([it["index"] for it in items])
        if "labels" in items[0]:
            labels = [it["labels"] for it in items]
            batch["labels"] = torch.tensor(labels, dtype=torch.float32) if isinstance(labels[0], list) \
                else torch.tensor(labels)
        return batch
