"""Metrics as pure functions over arrays, delegating the formulas to scikit-learn and torchmetrics.

Imports nothing from transferkit.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    top_k_accuracy_score,
)

CALIBRATION_BINS = 15


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str],
                           probabilities: np.ndarray | None = None) -> dict[str, Any]:
    """The classification report (per class and micro/macro/weighted averages), the confusion matrix
    (rows = true, cols = predicted) and, given class probabilities, top-k accuracy and calibration."""
    labels = list(range(len(label_names)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(label_names),
                                   output_dict=True, zero_division=0)
    averages = {}
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average, zero_division=0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": averages["macro"]["f1"],
        "weighted_f1": averages["weighted"]["f1"],
        "n": int(len(y_true)),
        "averages": averages,
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in label_names},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if probabilities is not None and len(y_true):
        out.update(top_k_accuracy(y_true, probabilities))
        out.update(calibration(y_true, probabilities))
    return out


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, ks: Sequence[int] = (2, 3, 5)) -> dict[str, float]:
    """Top-k accuracy for each k below the number of classes (top-K is trivially 1)."""
    n_classes = probabilities.shape[1]
    labels = list(range(n_classes))
    return {f"top{k}_accuracy": float(top_k_accuracy_score(y_true, probabilities, k=k, labels=labels))
            for k in ks if k < n_classes}


def calibration(y_true: np.ndarray, probabilities: np.ndarray, n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error of the top label (torchmetrics, L1, equal-width bins) and the reliability
    diagram's points (scikit-learn's calibration_curve on 'top label correct' vs its confidence)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = torch.as_tensor(probabilities, dtype=torch.float32)
    target = torch.as_tensor(y_true, dtype=torch.long)
    ece = multiclass_calibration_error(probs, target, num_classes=probs.shape[1], n_bins=n_bins, norm="l1")
    confidence = probabilities.max(1)
    correct = (probabilities.argmax(1) == y_true).astype(int)
    accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform", pos_label=1)
    bin_ids = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], confidence)  # scikit-learn's own binning
    counts = np.bincount(bin_ids, minlength=n_bins)
    return {"ece": float(ece), "reliability": {"confidence": [float(x) for x in mean_conf],
                                               "accuracy": [float(x) for x in accuracy],
                                               "count": [int(c) for c in counts if c > 0]}}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² (for regression heads)."""
    return {"mae": float(mean_absolute_error(y_true, y_pred)),
            "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
            "r2": float(r2_score(y_true, y_pred)), "n": int(len(y_true))}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar part of a metrics dict (what `evaluate --json` and tables show)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
