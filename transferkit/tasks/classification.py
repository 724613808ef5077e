"""Single-label classification: a linear head over pooled features, softmax cross-entropy, argmax decoding.

Imports transferkit.core, transferkit.data, transferkit.tasks.base and transferkit.tasks.prototypes. The numbers
are the ones transferkit computed before the tasks layer existed: a fresh head predicts uniformly (loss ln K),
validation reports plain cross-entropy, accuracy and macro-F1 (transferkit.core.scores), and early stopping follows
val macro-F1 with val loss breaking ties (small validation sets saturate at 1.0). Distillation is Hinton et al.'s
KD (``kd_loss``); a teacher may know more classes than the student (its softmax is then read over the student's
classes only). The head is linear, or a prototype head (transferkit.tasks.prototypes: few-shot, the protonet
strategy) when asked for by ``kind``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.core.scores import macro_f1
from transferkit.data.labels import NO_LABEL
from transferkit.tasks.base import Task
from transferkit.tasks.prototypes import PrototypeHead


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2-scaled KL divergence between the softened teacher and student distributions, mean over the rows."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, -1), F.log_softmax(teacher_logits.float() / t, -1),
                    reduction="batchmean", log_target=True) * t * t


class ClassificationHead(nn.Module):
    """Dropout + linear layer -> one logit per class; softmax cross-entropy."""

    task = "classification"

    def __init__(self, in_dim: int, n_outputs: int, dropout: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, n_outputs)
        nn.init.zeros_(self.linear.weight)  # a fresh head predicts uniformly: loss starts at ln(K)
        nn.init.zeros_(self.linear.bias)
        # Per-class loss weights for imbalanced data; not persistent: a bundle predicts the same without them.
        self.register_buffer("class_weight", None, persistent=False)

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        self.class_weight = None if weight is None else weight.to(self.linear.weight.device, torch.float32)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on class indices, or on soft targets (rows of probabilities, from mixup/cutmix, which
        already carry any label smoothing)."""
        smoothing = 0.0 if labels.is_floating_point() else self.label_smoothing
        return F.cross_entropy(logits.float(), labels, weight=self.class_weight, label_smoothing=smoothing)


class ClassificationTask(Task):
    """One class per example; targets are class indices (int64), outputs one logit per class."""

    name = "classification"
    selection_metric = "val_macro_f1"
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")

    def head(self, feature_dim: int, n_outputs: int, dropout: float = 0.0, label_smoothing: float = 0.0,
             kind: str = "linear", metric: str = "cosine", learn_scale: bool = True,
             **options: Any) -> nn.Module:
        """A linear head, or with ``kind='prototype'`` (a manifest's ``head`` entry, the protonet strategy) a
        PrototypeHead comparing features with class prototypes by ``metric``."""
        if kind == "prototype":
            return PrototypeHead(feature_dim, n_outputs, metric, learn_scale=learn_scale,
                                 label_smoothing=label_smoothing)
        if kind != "linear":
            raise ValueError(f"unknown classification head kind {kind!r}; expected 'linear' or 'prototype'")
        return ClassificationHead(feature_dim, n_outputs, dropout, label_smoothing=label_smoothing)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(-1)

    def decode(self, outputs: Any) -> Any:
        return outputs.argmax(1)

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        return {"accuracy": float((predictions == targets).mean()), "macro_f1": macro_f1(targets, predictions)}

    def selection_score(self, targets: np.ndarray, predictions: np.ndarray) -> float:
        return macro_f1(targets, predictions)

    teacher_may_add_labels: ClassVar[bool] = True

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     head: nn.Module) -> torch.Tensor:
        return kd_loss(student, teacher, temperature)

    def labeled(self, targets: torch.Tensor) -> torch.Tensor:
        """Class indices other than NO_LABEL; soft rows (mixup/cutmix) are all labeled."""
        if targets.is_floating_point():
            return torch.ones(targets.shape[0], dtype=torch.bool, device=targets.device)
        return targets != NO_LABEL

    def missing_target(self, example: Any, n_outputs: int) -> int:
        return NO_LABEL

    def response(self, scores: np.ndarray, names: tuple[str, ...] | list[str], top_k: int | None = None,
                 digits: int | None = None) -> list[dict[str, Any]]:
        """{"label", "score"} per row, plus a "top_k" list of {"label", "score"} (ties keep class order)."""
        def number(value: Any) -> float:
            return round(float(value), digits) if digits is not None else float(value)

        rows = []
        for row in scores:
            best = int(row.argmax())
            item: dict[str, Any] = {"label": names[best], "score": number(row[best])}
            if top_k:
                order = np.argsort(-row, kind="stable")[:top_k]
                item["top_k"] = [{"label": names[i], "score": number(row[i])} for i in order]
            rows.append(item)
        return rows
