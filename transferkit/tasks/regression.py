"""Regression: one number per example — a linear head on standardised targets, MSE or Huber, selected by R².

Imports transferkit.core, transferkit.data and transferkit.tasks.base. Targets are floats in the user's units
(transferkit.data.targets.NumericTargets encodes the label strings). The head holds the training targets' mean
and std as buffers saved with the weights: it learns the standardised target (so learning rates and the zero
init behave as for classification — a fresh head predicts the mean) and its ``forward`` un-standardises, so every
consumer — validation, evaluate, predict, serve and the ONNX export — sees values in the user's units.
Distillation: the teacher's prediction, standardised with the student's training mean/std like the labels, is an
MSE target (the temperature has no meaning for one number); an unlabeled row's target is NaN.
Loss (``--loss``, TrainConfig.loss): MSE by default, or torch's Huber with ``--huber-delta`` (default 1.0) on the
standardised target, i.e. in training-target stds — errors beyond it count linearly, so a few outlying targets pull
the head less. Outliers inflate the std itself, so a smaller delta resists them more (tests/test_regression_end_to_end
measures both). It is the head's training loss (distillation's soft term too); validation's ``val_loss`` stays MSE
in the user's units and R² selects. The closed-form ridge probe (strategies/linear_probe.py) fits squared error;
task_choice refuses ``--loss huber`` for strategies that do not train with the loop.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from torch import nn

from transferkit.tasks.base import Task


class RegressionHead(nn.Module):
    """Dropout + Linear(d, 1) on the standardised target; outputs ``z * std + mean`` ([n, 1]); trains with
    ``loss`` ('mse' or 'huber')."""

    task = "regression"

    def __init__(self, in_dim: int, n_outputs: int = 1, dropout: float = 0.0, loss: str = "mse",
                 huber_delta: float = 1.0):
        super().__init__()
        self.loss_name, self.huber_delta = loss, huber_delta
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, 1)
        nn.init.zeros_(self.linear.weight)  # a fresh head predicts the training mean
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def set_target_scale(self, mean: float, std: float) -> None:
        self.target_mean.fill_(float(mean))
        self.target_std.fill_(float(std))

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        if weight is not None:
            raise ValueError("a regression head has no classes to weight")

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.standardised(features) * self.target_std + self.target_mean

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """MSE (or Huber, delta in target stds) between standardised prediction and standardised target."""
        z = (outputs.float()[:, 0] - self.target_mean) / self.target_std
        t = (targets.float() - self.target_mean) / self.target_std
        if self.loss_name == "huber":
            return F.huber_loss(z, t, delta=self.huber_delta)
        return F.mse_loss(z, t)


class RegressionTask(Task):
    """One float per example; targets are floats, outputs [n, 1] in the user's units."""

    name = "regression"
    selection_metric = "val_r2"
    metric_names: ClassVar[tuple[str, ...]] = ("r2", "mae", "rmse")
    row_fields: ClassVar[tuple[str, ...]] = ("value",)

    def head(self, feature_dim: int, n_outputs: int = 1, dropout: float = 0.0, loss: str | None = None,
             huber_delta: float = 1.0, **options: Any) -> RegressionHead:
        """A fresh head; ``loss`` is its training loss ('mse' or 'huber'; None: mse)."""
        return RegressionHead(feature_dim, 1, dropout, loss=loss or "mse", huber_delta=huber_delta)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Plain MSE in the user's units (what validation reports; R² selects)."""
        return F.mse_loss(outputs.float()[:, 0], targets.float())

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()

    def decode(self, outputs: Any) -> Any:
        return outputs[:, 0]

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        targets, predictions = np.asarray(targets, np.float64), np.asarray(predictions, np.float64)
        r2 = float(r2_score(targets, predictions)) if len(targets) > 1 and np.ptp(targets) > 0 else 0.0
        return {"r2": r2, "mae": float(mean_absolute_error(targets, predictions)),
                "rmse": float(np.sqrt(mean_squared_error(targets, predictions)))}

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     head: nn.Module) -> torch.Tensor:
        """The head's loss (MSE, or Huber) between the standardised student and teacher predictions."""
        return head.loss(student, teacher[:, 0])

    def labeled(self, targets: torch.Tensor) -> torch.Tensor:
        return ~torch.isnan(targets)

    def missing_target(self, example: Any, n_outputs: int) -> float:
        return float("nan")

    def response(self, scores: np.ndarray, names: tuple[str, ...] | list[str], top_k: int | None = None,
                 digits: int | None = None) -> list[dict[str, Any]]:
        """{"value": float} per row (``top_k`` has no meaning for one number and is ignored)."""
        return [{"value": round(float(row[0]), digits) if digits is not None else float(row[0])} for row in scores]

    def agreement(self, check: dict[str, Any], spec: str = ".1%") -> str:
        """Values, not logits: the largest difference in the target's units and one model's R² against the other's."""
        return f"max |difference| {check['max_abs_diff']:.1e}, R² of the values {check['r2_vs_reference']:.6f}"

    def int8_cost(self, accuracy: dict[str, Any]) -> str:
        return (f"R² {accuracy['r2_fp32']:.4f} -> {accuracy['r2_int8']:.4f}, MAE {accuracy['mae_fp32']:.4f} -> "
                f"{accuracy['mae_int8']:.4f} on {accuracy['n']} {accuracy['split']} examples")
