"""Metrics as pure functions over arrays, delegating the formulas to scikit-learn and torchmetrics.

Imports transferkit.core.scores (and transferkit.evaluate.token_metrics for the tokens report): macro averages
run over the classes present in a split's labels or predictions, the definition the training loop selects
models by (so history.json and metrics.json agree).
``REPORTS`` names the report function of each task (transferkit.tasks), keyed by the task's name.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr
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

from transferkit.core.scores import macro_labels
from transferkit.evaluate.multilabel_metrics import multilabel_report
from transferkit.evaluate.token_metrics import token_report

CALIBRATION_BINS = 15


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str],
                           probabilities: np.ndarray | None = None) -> dict[str, Any]:
    """The classification report (per class and micro/macro/weighted averages), the confusion matrix
    (rows = true, cols = predicted) and, given class probabilities, top-k accuracy and calibration.

    Every class keeps its per-class row. Macro averages run over the ``macro_n_classes`` classes present in this
    split's labels or predictions; ``absent_classes`` names the others (support 0, never predicted), which have
    no F1 to average. Micro and weighted averages are the same either way.
    """
    labels = list(range(len(label_names)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(label_names),
                                   output_dict=True, zero_division=0)
    present = macro_labels(y_true, y_pred)
    averages: dict[str, dict[str, float]] = {}
    for average in ("micro", "macro", "weighted"):
        chosen = present if average == "macro" and present else labels
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=chosen, average=average, zero_division=0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": averages["macro"]["f1"],
        "weighted_f1": averages["weighted"]["f1"],
        "n": int(len(y_true)),
        "averages": averages,
        "macro_n_classes": len(present),
        "absent_classes": [name for i, name in enumerate(label_names) if i not in present],
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
    """Expected calibration error of the top label and the reliability diagram's points, from the same bins.

    Bins are scikit-learn's calibration_curve bins (equal width, a confidence of exactly 1.0 in the last bin);
    the ECE is the count-weighted mean gap |accuracy - confidence| over those bins, so the number in the diagram's
    title is the one its points show. (torchmetrics' ECE agrees except that it gives confidences of exactly 1.0
    a bin of their own; the tests cross-check the two.)
    """
    confidence = probabilities.max(1)
    correct = (probabilities.argmax(1) == y_true).astype(int)
    accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform", pos_label=1)
    bin_ids = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], confidence)  # scikit-learn's own binning
    counts = np.bincount(bin_ids, minlength=n_bins)
    counts = counts[counts > 0]
    ece = float(np.sum(counts / counts.sum() * np.abs(accuracy - mean_conf)))
    return {"ece": ece, "reliability": {"confidence": [float(x) for x in mean_conf],
                                        "accuracy": [float(x) for x in accuracy],
                                        "count": [int(c) for c in counts]}}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² (for regression heads)."""
    return {"mae": float(mean_absolute_error(y_true, y_pred)),
            "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
            "r2": float(r2_score(y_true, y_pred)), "n": int(len(y_true))}


# The full report per task name (model.task.name / the manifest's "task"): per-class tables, confusion and
# calibration are reports, so they live here rather than in transferkit.tasks (which sits before evaluate).
# Each takes (targets, predictions, label names, scores or None).
def regression_report(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str] = ("value",),
                      scores: np.ndarray | None = None) -> dict[str, Any]:
    """MAE, RMSE, R², Spearman's rank correlation (scipy) and n (the plots take the values from the run itself)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    out: dict[str, Any] = regression_metrics(y_true, y_pred) if len(y_true) else {"n": 0}
    if len(y_true) > 1 and np.ptp(y_true) > 0 and np.ptp(y_pred) > 0:
        out["spearman"] = float(spearmanr(y_true, y_pred).statistic)
    elif len(y_true):
        out["spearman"] = 0.0  # a constant prediction (or target) ranks nothing
    return out


REPORTS: dict[str, Callable[..., dict[str, Any]]] = {"classification": classification_metrics,
                                                     "multilabel": multilabel_report,
                                                     "regression": regression_report, "tokens": token_report}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar part of a metrics dict (what `evaluate --json` and tables show)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
