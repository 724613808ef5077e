"""The frozen-feature cache: a second linear-probe run on the same data reads features back, never recomputes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import transferkit
from transferkit.backbones import features as features_module
from transferkit.backbones.features import FeatureCache


def test_second_run_reuses_cached_features(digits_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = tmp_path / "cache"
    first = transferkit.fit(str(digits_folder), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                            cache_dir=str(cache), out=str(tmp_path / "a"), progress=False)
    entries = sorted(p.name for p in (cache).glob("*.safetensors"))
    assert len(entries) == 2  # train and val features

    def must_not_run(*args, **kwargs):
        raise AssertionError("features were recomputed although they were cached")

    monkeypatch.setattr(features_module, "extract_features", must_not_run)
    monkeypatch.setattr(transferkit.api, "extract_features", must_not_run)
    second = transferkit.fit(str(digits_folder), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                             cache_dir=str(cache), out=str(tmp_path / "b"), progress=False)
    assert sorted(p.name for p in cache.glob("*.safetensors")) == entries
    assert second.metrics["val"]["confusion_matrix"] == first.metrics["val"]["confusion_matrix"]


def test_cache_key_changes_with_preprocessing_and_data():
    base = FeatureCache.key("w", {"image_size": 64}, "data", "fp32")
    assert FeatureCache.key("w", {"image_size": 64}, "data", "fp32") == base
    assert FeatureCache.key("w", {"image_size": 96}, "data", "fp32") != base
    assert FeatureCache.key("w", {"image_size": 64}, "other", "fp32") != base
    assert FeatureCache.key("w2", {"image_size": 64}, "data", "fp32") != base


def test_damaged_cache_entry_is_recomputed(tmp_path: Path):
    cache = FeatureCache(tmp_path)
    (tmp_path / "k.safetensors").write_bytes(b"not a safetensors file")
    out = cache.get_or_compute("k", lambda: np.ones((2, 3), np.float32))
    assert out.shape == (2, 3)
    assert cache.get_or_compute("k", lambda: np.zeros((1, 1), np.float32)).shape == (2, 3)
