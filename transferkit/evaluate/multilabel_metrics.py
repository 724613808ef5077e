"""The multi-label report: micro/macro/samples F1, subset accuracy, Hamming loss, mAP and a per-label table.

Imports scikit-learn only (REPORTS['multilabel'] in transferkit.evaluate.metrics). Targets and predictions are 0/1
arrays [n, L]; ``scores`` the per-label sigmoid scores (0.5 at each label's tuned threshold: see
transferkit.tasks.multilabel). mAP is scikit-learn's average precision, averaged over the labels that have a
positive in ``y_true`` (a label without one has no precision-recall curve).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss, precision_recall_fscore_support


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str],
                      scores: np.ndarray | None = None, thresholds: Sequence[float] | None = None) -> dict[str, Any]:
    """The headline numbers plus ``per_label`` rows {label, precision, recall, f1, support[, threshold]}."""
    t = np.asarray(y_true).reshape(len(y_true), -1) > 0.5
    p = np.asarray(y_pred).reshape(len(y_pred), -1) > 0.5
    if not len(t):
        return {"n": 0}
    out: dict[str, Any] = {
        "micro_f1": float(f1_score(t, p, average="micro", zero_division=0.0)),
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0.0)),
        "samples_f1": float(f1_score(t, p, average="samples", zero_division=0.0)),
        "subset_accuracy": float(accuracy_score(t, p)),
        "hamming_loss": float(hamming_loss(t, p)),
    }
    with_positives = np.flatnonzero(t.any(axis=0))
    if scores is not None and len(with_positives):
        s = np.asarray(scores, np.float64)
        out["map"] = float(np.mean([average_precision_score(t[:, j], s[:, j]) for j in with_positives]))
    else:  # no scores given, or no label with a positive: no precision-recall curve to average
        out["map"] = None
    precision, recall, f1, support = precision_recall_fscore_support(t, p, average=None, zero_division=0.0)
    out["per_label"] = [{"label": name, "precision": float(precision[j]), "recall": float(recall[j]),
                         "f1": float(f1[j]), "support": int(support[j]),
                         **({"threshold": float(thresholds[j])} if thresholds is not None else {})}
                        for j, name in enumerate(label_names)]
    out["n"] = int(len(t))
    return out
