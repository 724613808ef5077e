"""Training-time augmentation for audio: time shift, gain and added noise on the waveform (audiomentations), and
SpecAugment-style time and frequency masks on log-mel features.

Imports only transferkit.core and transferkit.data. audiomentations draws its parameters from Python's global
``random`` and its noise from numpy's global ``np.random``; to make a run reproducible from the dataset's own
``np.random.Generator`` (and to leave the callers' global streams alone), each call seeds both from ``rng``
inside a lock and restores them afterwards. ``mask_features`` is a few lines of torch (torchaudio's masking is not
available for this torch): the masked bands and frames take the mean of the feature map, as SpecAugment
implementations do on normalised log-mels, so a mask never looks like a silent (padded) stretch.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from audiomentations import AddGaussianSNR, Compose, Gain, Shift

SHIFT_FRACTION = 0.2  # at most a fifth of the clip, rolled over, either way
GAIN_DB = 6.0  # +-6 dB
NOISE_SNR_DB = (15.0, 40.0)  # Gaussian noise relative to the clip's own loudness: quiet clips stay audible
WAVE_P = 0.5  # each transform applies with this probability, independently
FREQ_MASKS, FREQ_MASK_FRACTION = 2, 0.15  # SpecAugment's F=27 of 80 mel bins is 0.34; two narrower bands here
TIME_MASKS, TIME_MASK_FRACTION = 2, 0.1  # each up to a tenth of the frames

_TRANSFORM = Compose([
    Shift(min_shift=-SHIFT_FRACTION, max_shift=SHIFT_FRACTION, rollover=True, p=WAVE_P),
    Gain(min_gain_db=-GAIN_DB, max_gain_db=GAIN_DB, p=WAVE_P),
    AddGaussianSNR(min_snr_db=NOISE_SNR_DB[0], max_snr_db=NOISE_SNR_DB[1], p=WAVE_P),
])
_GLOBAL_RNG_LOCK = threading.Lock()


@contextmanager
def _seeded_globals(rng: np.random.Generator) -> Iterator[None]:
    """Python's and numpy's global generators seeded from ``rng`` for the block, then put back as they were."""
    seed = int(rng.integers(2**32))
    with _GLOBAL_RNG_LOCK:
        saved_random, saved_numpy = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(saved_random)
            np.random.set_state(saved_numpy)


def augment_waveform(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A randomly shifted, louder or quieter and noisier copy of a mono float32 ``wave`` (same shape and dtype);
    the same ``rng`` state gives the same result."""
    samples = np.ascontiguousarray(wave, dtype=np.float32)
    if samples.size == 0:
        return samples.copy()
    with _seeded_globals(rng):
        out = _TRANSFORM(samples=samples.copy(), sample_rate=int(sample_rate))
    return np.asarray(out, dtype=np.float32)


def mask_features(features: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """SpecAugment's frequency and time masking of [n_mels, frames] features (leading batch dimensions share the
    masks): ``FREQ_MASKS`` bands and ``TIME_MASKS`` stretches of frames, each 1 to a fraction of the axis wide,
    set to the mean of the features. Returns a new tensor; the input is not modified."""
    if features.ndim < 2:
        raise ValueError(f"mask_features expects [n_mels, frames] features, got shape {tuple(features.shape)}")
    out = features.clone()
    n_mels, frames = out.shape[-2:]
    if n_mels == 0 or frames == 0:
        return out
    fill = out.mean()
    for _ in range(FREQ_MASKS):
        start, stop = _span(n_mels, FREQ_MASK_FRACTION, rng)
        out[..., start:stop, :] = fill
    for _ in range(TIME_MASKS):
        start, stop = _span(frames, TIME_MASK_FRACTION, rng)
        out[..., :, start:stop] = fill
    return out


def _span(size: int, fraction: float, rng: np.random.Generator) -> tuple[int, int]:
    """A random [start, stop) of 1 to ``fraction * size`` positions (at least one) inside ``range(size)``."""
    width = int(rng.integers(1, max(1, int(fraction * size)) + 1))
    start = int(rng.integers(0, size - width + 1))
    return start, start + width
