"""Frozen-feature extraction and its on-disk cache, keyed by weights hash + preprocessing + data fingerprint.

Imports transferkit.core, transferkit.data and transferkit.backbones. A second run on the same data with the
same backbone reads the features back instead of running the network again. A token-classification loader
(batches with ``word_rows``) gives one feature row per word: what the per-token linear probe fits.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferkit.backbones.base import Backbone
from transferkit.core.io import atomic_write, sha256_text
from transferkit.core.runtime import autocast
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERKIT_CACHE", Path.home() / ".cache" / "transferkit")) / "features"


@torch.inference_mode()
def extract_features(backbone: Backbone, loader: DataLoader, precision: str, desc: str = "features") -> np.ndarray:
    backbone.eval()
    device = next(backbone.parameters()).device
    chunks = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with autocast(precision, device):
            if "word_rows" in batch:  # token classification: one row per word, at its first sub-word
                hidden = backbone.embed_tokens(batch)
                features = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["word_rows"])
            else:
                features = backbone.embed(batch)
            chunks.append(features.float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, backbone.feature_dim), np.float32)


class FeatureCache:
    """Features as safetensors files named by a hash of everything that determines them."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder else default_cache_dir()
        self.hits = 0

    @staticmethod
    def key(weights_sha256: str, preprocessing: dict, data_fingerprint: str, precision: str) -> str:
        blob = json.dumps([weights_sha256, preprocessing, data_fingerprint, precision], sort_keys=True)
        return sha256_text(blob)[:32]

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.folder / f"{key}.safetensors"
        if path.exists():
            try:
                self.hits += 1
                return load_file(str(path))["features"]
            except Exception:  # a damaged cache entry is recomputed, never trusted
                self.hits -= 1
                path.unlink(missing_ok=True)
        features = compute()
        atomic_write(path, lambda p: save_file({"features": np.ascontiguousarray(features)}, str(p)))
        return features


def cached_features(backbone: Backbone, examples: Examples, precision: str, cache: FeatureCache | None = None,
                    desc: str = "features", batch_size: int = 64) -> tuple[np.ndarray, bool]:
    """``examples``' frozen features [n, feature_dim] with the backbone's preprocessing, read from ``cache`` when
    an earlier run computed them for the same inputs (the key fit's linear probe uses), and whether they were.
    A backbone without pretrained weights (``weights_sha256`` None) is never cached."""
    compute = lambda: extract_features(backbone, make_loader(examples, backbone.preprocessing, None, batch_size),  # noqa: E731
                                       precision, desc)
    if backbone.weights_sha256 is None:
        return compute(), False
    cache = cache or FeatureCache()
    hits = cache.hits
    key = cache.key(backbone.weights_sha256, backbone.preprocessing.to_dict(), examples.fingerprint(), precision)
    features = cache.get_or_compute(key, compute)
    return features, cache.hits > hits
