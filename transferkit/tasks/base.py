"""The task contract: what a kind of prediction (single-label classification today) owns end to end.

Imports transferkit.core only (and torch/numpy). A task builds the head, names the plain loss validation
reports, turns head outputs into scores (``probabilities``) and predictions (``decode``), gives the training loop
its early-stopping score, and turns scores into the rows predict and serve answer. Everything that used to assume
softmax + argmax asks the model's task instead (``model.task``; a bundle's manifest ``task`` via
transferkit.export.bundle.bundle_task).

Choices written down here:
- The head keeps the *training* loss (class weights, label smoothing and soft mixup targets are head settings
  strategies reach through ``model.loss``); ``Task.loss`` is the plain loss validation reports and early stopping
  breaks ties with, exactly what the loop computed before this layer existed.
- Full evaluation reports (per-class tables, confusion matrix, calibration, plots) stay in transferkit.evaluate:
  tasks sit before evaluate and must not import it. ``Task.metrics`` returns the headline numbers the loop and
  strategies need (computed here with transferkit.core.scores / scikit-learn), and evaluate/metrics.py keeps one
  report function per task name (``REPORTS``), so a new task adds its file here plus one report function there.
- ``decode`` accepts raw head outputs or the task's scores alike (for classification softmax keeps the order);
  a task whose decoding differs between the two (multi-label thresholds) overrides ``decode_scores``.
- The closed-form probe head (strategies/linear_probe.py ``fit_logistic_head``) stays in strategies and writes
  into a head the task built (api's before-adaptation probe asks ``model.task.head``); a task whose probe is
  not multinomial logistic (ridge, one-vs-rest) is the point to add ``Task.probe``, not before.
- Distillation (strategies/distill.py) asks the task for its soft-target loss (``distill_loss``: the teacher's
  outputs, in the student's label order, against the student's), which rows carry a hard label
  (``labeled``: --unlabeled-data rows do not) and what an unlabeled example's target encodes to
  (``missing_target``); a teacher's outputs are read before any decision offset (``raw_outputs``). A task
  whose teacher may know more labels than the student (a softmax restricted to the student's classes)
  sets ``teacher_may_add_labels``; the others need the same label set.
- TransferModel lives in transferkit.tasks.model (not in backbones, which may not import tasks) and carries
  ``model.task``; transferkit.backbones.heads is gone rather than re-exported, since a backbones module
  re-exporting tasks would break the layering.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


class Task:
    """One kind of prediction. Subclasses set ``name`` and ``selection_metric`` and implement the methods."""

    name: ClassVar[str]
    selection_metric: ClassVar[str]  # the validation row key early stopping follows
    higher_is_better: ClassVar[bool] = True
    metric_names: ClassVar[tuple[str, ...]] = ()  # the keys of ``metrics``, in the order history rows list them
    row_fields: ClassVar[tuple[str, ...]] = ("label", "score")  # the keys of each ``response`` row (predict CSV)
    per_word: ClassVar[bool] = False  # one output row per word of each input (tokens) instead of one per input
    batch_size: ClassVar[int | None] = None  # training batch when --batch-size is unset; None: TrainConfig's rule

    def head(self, feature_dim: int, n_outputs: int, dropout: float = 0.0, **options: Any) -> nn.Module:
        """A fresh head mapping ``feature_dim`` features to ``n_outputs`` outputs."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The plain (unweighted, unsmoothed) loss validation reports."""
        raise NotImplementedError

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Head outputs -> the scores a bundle reports (float32)."""
        raise NotImplementedError

    def decode(self, outputs: Any) -> Any:
        """Head outputs (torch or numpy, [n, ...]) -> predictions of the same array kind."""
        raise NotImplementedError

    def decode_scores(self, scores: np.ndarray) -> np.ndarray:
        """``probabilities`` rows -> predictions; by default the same as decoding the raw outputs."""
        return self.decode(scores)

    # ---- export checks in words (`transferkit export` prints them; the numbers: export/onnx.compare_logits) ----
    def agreement(self, check: dict[str, Any], spec: str = ".1%") -> str:
        """How two runtimes' outputs on the same inputs agree (``max_abs_diff``, ``top1_agreement``)."""
        return (f"max |logit diff| {check['max_abs_diff']:.1e}, top-1 agreement "
                f"{format(check['top1_agreement'], spec)}")

    def int8_cost(self, accuracy: dict[str, Any]) -> str:
        """What int8 costs on labeled data (the ``accuracy`` entry of an int8 export)."""
        return (f"accuracy {accuracy['accuracy_fp32']:.4f} -> {accuracy['accuracy_int8']:.4f} on {accuracy['n']} "
                f"{accuracy['split']} examples")

    def metrics(self, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Headline numbers for ``predictions`` against ``targets``."""
        raise NotImplementedError

    def selection_score(self, targets: np.ndarray, predictions: np.ndarray) -> float:
        """The score early stopping and the probe's hyper-parameter search select by."""
        return self.metrics(targets, predictions)[self.selection_metric.removeprefix("val_")]

    def validation(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """One validation row: ``val_loss`` plus ``val_<metric>`` for each headline metric."""
        loss = self.loss(torch.from_numpy(outputs), torch.from_numpy(targets)).item()
        scores = self.metrics(targets, self.decode(outputs))
        return {"val_loss": loss, **{f"val_{k}": v for k, v in scores.items()}}

    def empty_validation(self) -> dict[str, None]:
        """The validation row of an epoch that was not validated (same keys, no values)."""
        return {"val_loss": None, **{f"val_{k}": None for k in self.metric_names}}

    def improves(self, score: float, loss: float, best_score: float, best_loss: float) -> bool:
        """A better selection score, or the same score with a lower validation loss."""
        if score != best_score:
            return score > best_score if self.higher_is_better else score < best_score
        return loss < best_loss

    def response(self, scores: np.ndarray, names: tuple[str, ...] | list[str], top_k: int | None = None,
                 digits: int | None = None) -> list[dict[str, Any]]:
        """Rows of ``scores`` -> the dicts predict writes and serve answers (rounded to ``digits`` if given)."""
        raise NotImplementedError

    # ---- distillation: soft targets from a teacher (strategies/distill.py) ------------------------------------
    teacher_may_add_labels: ClassVar[bool] = False  # may a teacher know labels the student lacks?

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                     head: nn.Module) -> torch.Tensor:
        """The soft-target loss of ``student`` outputs against ``teacher`` outputs (same rows, same label order);
        ``head`` is the student's (its scale, for regression)."""
        raise NotImplementedError

    def labeled(self, targets: torch.Tensor) -> torch.Tensor:
        """Per output row: does it carry a hard label (False for --unlabeled-data rows)?"""
        raise NotImplementedError

    def missing_target(self, example: Any, n_outputs: int) -> Any:
        """The encoded target of an unlabeled ``example`` in a distillation transfer set (adds no hard loss)."""
        raise NotImplementedError

    def raw_outputs(self, head: nn.Module, outputs: torch.Tensor) -> torch.Tensor:
        """``head``'s outputs before any decision offset folded into them: what soft targets are made from."""
        return outputs
