"""TransferClassifier: a scikit-learn-style facade (fit / predict / predict_proba / score) over transferkit.api.

Accepts texts (strings), image paths, or image arrays (a list, or an [n, H, W(, C)] uint8 array).
``__init__`` only stores parameters; learned state ends in ``_``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from transferkit import api
from transferkit.core.errors import DataError, NotFittedError
from transferkit.data.examples import Examples
from transferkit.serve.predictor import Predictor


def _to_examples(X: Any, y: Any | None, source: str) -> Examples:
    items = list(X)  # a list, or an array whose first axis indexes examples
    if not items:
        raise DataError(f"{source}: X is empty.")
    first = items[0]
    is_text = isinstance(first, str) and Path(first).suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp")
    labels = None if y is None else [str(v) for v in y]
    if labels is not None and len(labels) != len(items):
        raise DataError(f"{source}: X has {len(items)} items but y has {len(labels)}.")
    return Examples("text" if is_text else "image", items, labels, source)


class TransferClassifier:
    """Fine-tune (or probe) a pretrained backbone as a classifier.

    >>> clf = TransferClassifier(model="minilm", strategy="linear-probe").fit(texts, labels)
    >>> clf.predict(["new text"])
    """

    def __init__(self, model: str = "auto", strategy: str = "finetune", epochs: int = 10, batch_size: int | None = None,
                 lr: float = 1e-3, image_size: int | None = None, seed: int = 0, out: str | None = None,
                 progress: bool = False):
        self.model, self.strategy, self.epochs, self.batch_size = model, strategy, epochs, batch_size
        self.lr, self.image_size, self.seed, self.out, self.progress = lr, image_size, seed, out, progress

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("model", "strategy", "epochs", "batch_size", "lr", "image_size",
                                              "seed", "out", "progress")}

    def set_params(self, **params: Any) -> TransferClassifier:
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, X: Any, y: Any) -> TransferClassifier:
        examples = _to_examples(X, y, "X")
        originals = {str(v): v for v in y}
        out = self.out or tempfile.mkdtemp(prefix="transferkit-")
        result = api.fit(examples, model=self.model, strategy=self.strategy, epochs=self.epochs,
                         batch_size=self.batch_size, lr=self.lr, image_size=self.image_size, seed=self.seed,
                         out=out, progress=self.progress)
        self.predictor_ = Predictor.from_bundle(result.bundle_dir)
        self.classes_ = np.array([originals[name] for name in self.predictor_.bundle.label_map.names])
        self.result_ = result
        return self

    def _check_fitted(self) -> Predictor:
        if not hasattr(self, "predictor_"):
            raise NotFittedError("This TransferClassifier is not fitted yet; call fit(X, y) first.")
        return self.predictor_

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._check_fitted().predict(_to_examples(X, None, "X")).probabilities

    def predict(self, X: Any) -> np.ndarray:
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(1)]

    def score(self, X: Any, y: Any) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def save(self, folder: str | Path) -> Path:
        """Copy the fitted bundle to ``folder`` (loadable with TransferClassifier.load or the CLI)."""
        import shutil

        src = self._check_fitted().bundle.path
        shutil.copytree(src, folder, dirs_exist_ok=True)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> TransferClassifier:
        clf = cls()
        clf.predictor_ = Predictor.from_bundle(Path(folder))
        clf.classes_ = np.array(clf.predictor_.bundle.label_map.names)
        return clf
