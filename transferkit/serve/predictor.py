"""Predictor: a loaded bundle that turns Examples into labels, scores and probabilities.

Imports transferkit.core, transferkit.data, transferkit.train and transferkit.export. Uses only the bundle's
own preprocessing, never one re-specified by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transferkit.core.errors import DataError
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader
from transferkit.export.bundle import Bundle, load_bundle
from transferkit.train.inference import predict_logits


@dataclass
class Predictions:
    ids: list[str]
    probabilities: np.ndarray  # [n, k]
    label_names: tuple[str, ...]

    @property
    def indices(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def labels(self) -> list[str]:
        return [self.label_names[i] for i in self.indices]

    @property
    def scores(self) -> np.ndarray:
        return self.probabilities.max(1)


class Predictor:
    def __init__(self, bundle: Bundle, batch_size: int = 64, precision: str | None = None):
        """``precision`` defaults to the one the run evaluated with, so predictions match its metrics."""
        self.bundle, self.batch_size = bundle, batch_size
        self.precision = precision or bundle.manifest.get("inference_precision", "fp32")

    @classmethod
    def from_bundle(cls, folder: Path, **kwargs) -> Predictor:
        return cls(load_bundle(folder), **kwargs)

    @property
    def modality(self) -> str:
        return self.bundle.preprocessing.modality

    def predict(self, examples: Examples, progress: bool = False) -> Predictions:
        if examples.modality != self.modality:
            raise DataError(f"{examples.source} holds {examples.modality} data but this bundle is a "
                            f"{self.modality} model.")
        loader = make_loader(examples, self.bundle.preprocessing, None, self.batch_size)
        logits, _ = predict_logits(self.bundle.model, loader, self.precision, progress=progress)
        probs = self.bundle.model.head.probabilities(torch.from_numpy(logits)).numpy()
        return Predictions(examples.ids, probs, self.bundle.label_map.names)
