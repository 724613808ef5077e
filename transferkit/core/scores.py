"""The one definition of a macro average, shared by every place that scores predictions or selects a model.

Imports nothing from transferkit. It lives in core, not in transferkit.evaluate, because the training loop and
the strategies (which may not import evaluate) select models by the very macro-F1 the reports show.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score


def macro_labels(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> list[int]:
    """The classes a macro average runs over: those present in this split's labels or predictions.

    This is scikit-learn's default when ``labels=`` is not forced. A class absent from both has no F1 to speak
    of; counting it as 0 would score perfect predictions on a one-class split at 1/K.
    """
    return sorted({int(y) for y in np.asarray(y_true).ravel()} | {int(y) for y in np.asarray(y_pred).ravel()})


def macro_f1(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Macro-F1 over ``macro_labels`` (0.0 for an empty split); a class predicted but never true scores 0."""
    labels = macro_labels(y_true, y_pred)
    if not labels:
        return 0.0
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
