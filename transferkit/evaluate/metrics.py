"""Classification metrics as pure functions over arrays, delegating the formulas to scikit-learn.

Imports nothing from transferkit.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]) -> dict[str, Any]:
    """accuracy, macro-F1, n, the per-class report and the confusion matrix (rows = true, cols = predicted)."""
    labels = list(range(len(label_names)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(label_names),
                                   output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "n": int(len(y_true)),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in label_names},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar part of a metrics dict (what `evaluate --json` and tables show)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
