"""Multi-label classification: a set of labels per example — one sigmoid per label, BCE, per-label thresholds.

Imports transferkit.core and transferkit.tasks.base (torch, numpy, scikit-learn). Targets are 0/1 rows over the
label names (transferkit.data.multilabels.MultiLabelMap). Choices written down here:
- Decision thresholds are tuned per label on the validation split after training (``tune_thresholds``: the
  threshold on a 0.05 grid that maximises that label's F1; 0.5 when validation has no positive of that label)
  and folded into the head as a logit offset (``MultilabelHead.set_thresholds``): the head outputs
  ``logit - logit(threshold)``, so every consumer — evaluate, predict, serve, ONNX and int8 — decides "score > 0.5"
  with no state of its own, and the per-label scores it reports are 0.5 exactly at the label's tuned threshold.
  The thresholds themselves are recorded in the bundle manifest (``thresholds``) and the report.
- Early stopping follows validation micro-F1 (at 0.5, before thresholds exist); the loss is BCE-with-logits.
- Distillation: the teacher's per-label probabilities at temperature T, ``sigmoid(logit / T)`` of its raw logits
  (its thresholds' offset taken back out), are BCE targets for ``student / T``, scaled by T^2 as in KD; the
  teacher needs the student's label set. An unlabeled row's target is a row of NaN.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from transferkit.tasks.base import Task

THRESHOLD_GRID = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))


class MultilabelHead(nn.Module):
    """Dropout + Linear(d, L); outputs per-label logits minus the logit of each label's decision threshold."""

    task = "multilabel"

    def __init__(self, in_dim: int, n_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, n_outputs)
        self.register_buffer("threshold_logit", torch.zeros(n_outputs))  # saved with the weights

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        if weight is not None:
            raise ValueError("class weights are not supported for a multi-label head")

    def set_thresholds(self, thresholds: np.ndarray) -> None:
        t = torch.as_tensor(np.clip(thresholds, 1e-4, 1 - 1e-4), dtype=torch.float32)
        self.threshold_logit.copy_(torch.log(t / (1 - t)).to(self.threshold_logit.device))

    def thresholds(self) -> list[float]:
        """Each label's decision threshold on its raw probability."""
        return [round(float(t), 4) for t in torch.sigmoid(self.threshold_logit)]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features)) - self.threshold_logit

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """BCE-with-logits on the raw logits (the threshold offset added back)."""
        return F.binary_cross_entropy_with_logits(outputs.float() + self.threshold_logit, targets.float())


def tune_thresholds(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, the grid threshold with the best F1 on (``scores``, ``targets``); 0.5 for a label without
    positives (ties go to the threshold nearest 0.5)."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets) > 0.5
    out = np.full(scores.shape[1], 0.5)
    order = sorted(THRESHOLD_GRID, key=lambda t: abs(t - 0.5))
    for j in range(scores.shape[1]):
        if not targets[:, j].any():
            continue
        f1 = [f1_score(targets[:, j], scores[:, j] > t, zero_division=0.0) for t in order]
        out[j] = order[int(np.argmax(f1))]
    return out


class MultilabelTask(Task):
    """A set of labels per example; targets are 0/1 rows (float32), outputs one logit per label."""

    name = "multilabel"
    selection_metric = "val_micro_f1"
    metric_names: ClassVar[tuple[str, ...]] = ("micro_f1", "macro_f1")
    row_fields: ClassVar[tuple[str, ...]] = ("labels", "scores")

    def head(self, feature_dim: int, n_outputs: int, dropout: float = 0.0, **options: Any) -> MultilabelHead:
        return MultilabelHead(feature_dim, n_outputs, dropout)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs.float(), targets.float())

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().sigmoid()

    def decode(self, outputs: Any) -> Any:
        """0/1 per label: the head's output is above its label's threshold (a logit above 0)."""
        above = outputs > 0
        return above.long() if isinstance(above, torch.Tensor) else np.asarray(above, np.int64)

    def decode_scores(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores) > 0.5).astype(np.int64)

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        t, p = np.asarray(targets) > 0.5, np.asarray(predictions) > 0.5
        return {"micro_f1": float(f1_score(t, p, average="micro", zero_division=0.0)),
                "macro_f1": float(f1_score(t, p, average="macro", zero_division=0.0))}

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     head: nn.Module) -> torch.Tensor:
        t = temperature
        soft = torch.sigmoid(teacher.float() / t)
        return F.binary_cross_entropy_with_logits(student.float() / t, soft) * t * t

    def labeled(self, targets: torch.Tensor) -> torch.Tensor:
        return ~torch.isnan(targets).any(-1)

    def missing_target(self, example: Any, n_outputs: int) -> list[float]:
        return [float("nan")] * n_outputs

    def raw_outputs(self, head: nn.Module, outputs: torch.Tensor) -> torch.Tensor:
        """The logits before the thresholds' offset (``MultilabelHead.forward`` subtracts it)."""
        return outputs + head.threshold_logit

    def response(self, scores: np.ndarray, names: tuple[str, ...] | list[str], top_k: int | None = None,
                 digits: int | None = None) -> list[dict[str, Any]]:
        """{"labels": [names above threshold], "scores": {name: score}} per row (``top_k``: only the k best
        scores are listed)."""
        def number(value: Any) -> float:
            return round(float(value), digits) if digits is not None else float(value)

        rows = []
        for row in np.asarray(scores):
            order = np.argsort(-row, kind="stable")[:top_k] if top_k else range(len(names))
            rows.append({"labels": [names[i] for i in range(len(names)) if row[i] > 0.5],
                         "scores": {names[i]: number(row[i]) for i in order}})
        return rows

    def agreement(self, check: dict[str, Any], spec: str = ".1%") -> str:
        """``top1_agreement`` counts inputs whose whole label set agrees (every per-label decision)."""
        return (f"max |logit diff| {check['max_abs_diff']:.1e}, same label set (every per-label decision) on "
                f"{format(check['top1_agreement'], spec)} of inputs")

    def int8_cost(self, accuracy: dict[str, Any]) -> str:
        return (f"subset accuracy {accuracy['accuracy_fp32']:.4f} -> {accuracy['accuracy_int8']:.4f} on "
                f"{accuracy['n']} {accuracy['split']} examples")
