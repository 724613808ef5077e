"""Audio augmentation: shape and dtype kept, reproducible from the generator, the input really changed, and the
global random streams left alone."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from transferkit.data.audio_augment import augment_waveform, mask_features

SR = 16000


def _tone(seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(t.size)).astype(np.float32)


def test_augment_waveform_keeps_shape_and_is_reproducible():
    wave = _tone()
    a = augment_waveform(wave, SR, np.random.default_rng(7))
    b = augment_waveform(wave, SR, np.random.default_rng(7))
    assert a.shape == wave.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(wave, _tone())  # the input is not modified


def test_augment_waveform_changes_the_input_and_differs_between_draws():
    wave = _tone()
    rng = np.random.default_rng(0)
    outs = [augment_waveform(wave, SR, rng) for _ in range(16)]
    changed = [not np.allclose(out, wave) for out in outs]
    # each of three transforms applies with p=0.5: all three skipped on 1 draw in 8 on average
    assert sum(changed) >= 10
    distinct = {out.tobytes() for out in outs if not np.allclose(out, wave)}
    assert len(distinct) == sum(changed)


def test_augment_waveform_does_not_disturb_global_random_streams():
    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    augment_waveform(_tone(), SR, np.random.default_rng(1))
    assert (random.random(), np.random.rand()) == expected


def test_augment_waveform_empty_clip():
    assert augment_waveform(np.zeros(0, np.float32), SR, np.random.default_rng(0)).shape == (0,)


def test_mask_features_masks_bands_and_frames_reproducibly():
    features = torch.randn(80, 300, generator=torch.Generator().manual_seed(0))
    a = mask_features(features, np.random.default_rng(5))
    b = mask_features(features, np.random.default_rng(5))
    assert a.shape == features.shape and a.dtype == features.dtype
    assert torch.equal(a, b)
    fill = features.mean()
    masked_rows = [i for i in range(80) if torch.all(a[i] == fill)]
    masked_cols = [j for j in range(300) if torch.all(a[:, j] == fill)]
    assert 1 <= len(masked_rows) <= 2 * int(0.15 * 80)
    assert 1 <= len(masked_cols) <= 2 * int(0.1 * 300)
    keep = torch.ones_like(features, dtype=torch.bool)
    keep[masked_rows] = False
    keep[:, masked_cols] = False
    assert torch.equal(a[keep], features[keep])  # nothing else touched
    assert not torch.equal(mask_features(features, np.random.default_rng(6)), a)


def test_mask_features_batch_shares_masks_and_leaves_input():
    features = torch.randn(2, 80, 50)
    before = features.clone()
    out = mask_features(features, np.random.default_rng(0))
    assert torch.equal(features, before)
    fill = features.mean()
    assert torch.equal(out[0] == fill, out[1] == fill) and bool((out[0] == fill).any())


def test_mask_features_refuses_1d():
    with pytest.raises(ValueError, match="n_mels, frames"):
        mask_features(torch.zeros(10), np.random.default_rng(0))
