"""Knowledge distillation (Hinton et al. 2015): a small student learns from a fine-tuned teacher's soft labels.

Imports transferkit.core, transferkit.backbones, transferkit.tasks and transferkit.strategies. The student
fine-tunes like ``finetune`` (layer-wise LRs) but its loss mixes the teacher's soft targets with the hard labels:

    alpha * soft(student, teacher, T) + (1 - alpha) * hard(student, labels)

where the task defines the soft term (``Task.distill_loss``): for classification
T^2 * KL(softmax(teacher / T) || softmax(student / T)) (T^2 keeps the soft term's gradient scale independent of
T); per word for tokens; per-label sigmoid targets (BCE) for multi-label; the teacher's standardised prediction
(MSE) for regression. The teacher runs on the very batch the student
sees, after augmentation and mixup, so the two are compared on the same views; cached teacher logits would
pair a clean image's soft label with an augmented one. Unlabeled examples (--unlabeled-data) join the
training set with the task's missing target (``Task.missing_target``: NO_LABEL for classification) and add the
soft term alone: the teacher labels them. The teacher arrives through StrategyContext.teacher, in the student's
label order, and is never saved with the student.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from transferkit.core.errors import ConfigError
from transferkit.data.preprocess import PreprocessSpec, load_tokenizer
from transferkit.strategies.base import StrategyContext, forward
from transferkit.strategies.finetune import Finetune, FinetuneConfig
from transferkit.tasks.classification import kd_loss
from transferkit.tasks.model import TransferModel

__all__ = ["Distill", "DistillConfig", "Teacher", "kd_loss", "same_tokenizer"]


@dataclass(frozen=True)
class DistillConfig(FinetuneConfig):
    temperature: float = 4.0  # softens both distributions so the teacher's "dark knowledge" shows
    alpha: float = 0.9  # weight of the soft (teacher) term; 1 - alpha goes to the hard labels

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ConfigError(f"The 'temperature' parameter of DistillConfig must be > 0. Got {self.temperature}.")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"The 'alpha' parameter of DistillConfig must be in [0, 1]. Got {self.alpha}.")


class Distill(Finetune):
    name = "distill"
    config_class = DistillConfig
    summary = "knowledge distillation from --teacher BUNDLE into this (smaller) model; --unlabeled-data adds data"
    needs_teacher: ClassVar[bool] = True

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        if ctx.teacher is None:
            raise ConfigError("The distill strategy needs a teacher: pass --teacher BUNDLE (a fitted bundle/ "
                              "folder whose labels cover this data's labels).")
        ctx.teacher.eval()
        for p in ctx.teacher.parameters():
            p.requires_grad_(False)
        super().prepare(model, ctx)

    def teacher_logits(self, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        with torch.no_grad():
            return ctx.teacher(batch).float()

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        c = self.config
        logits = forward(model, batch, ctx)  # through the DDP wrapper under several processes
        loss = c.alpha * model.task.distill_loss(logits, self.teacher_logits(batch, ctx), c.temperature, model.head)
        labels = batch["labels"]
        labeled = model.task.labeled(labels)
        if c.alpha < 1 and labeled.any():  # unlabeled examples (--unlabeled-data) learn from the teacher alone
            loss = loss + (1 - c.alpha) * model.head.loss(logits[labeled], labels[labeled])
        return loss

class Teacher(torch.nn.Module):
    """A fitted teacher model that reads the student's batches and answers in the student's label order.

    Images: the student's normalised pixels are mapped to the teacher's normalisation (and size), exactly.
    Texts: the two tokenizers must agree (same vocabulary), since both read the same input ids.
    """

    def __init__(self, model: torch.nn.Module, teacher_labels: list[str], student_labels: list[str],
                 teacher_spec: PreprocessSpec, student_spec: PreprocessSpec, source: str = "teacher"):
        super().__init__()
        self.task = getattr(model, "task", None)  # a bare module (tests) reads as a classifier
        _check_labels(self.task, teacher_labels, student_labels, source)
        if teacher_spec.modality != student_spec.modality:
            raise ConfigError(f"The teacher {source} is a {teacher_spec.modality} model but the student reads "
                              f"{student_spec.modality}.")
        if teacher_spec.modality == "text" and not same_tokenizer(teacher_spec, student_spec):
            raise ConfigError(f"The teacher {source} tokenizes text differently from the student model; distil into "
                              f"a student that shares its vocabulary (e.g. minilm-l3 for a minilm teacher).")
        self.model = model
        self.register_buffer("columns", torch.tensor([teacher_labels.index(x) for x in student_labels]), persistent=False)
        self.teacher_spec, self.student_spec = teacher_spec, student_spec

    @property
    def head(self) -> torch.nn.Module:
        """The teacher's head (its loss and probabilities), so evaluation code treats a Teacher like a model."""
        return self.model.head

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """What soft targets are made from (multi-label: the logits before the teacher's thresholds)."""
        outputs = self.model(self._teacher_batch(batch))
        if self.task is not None:
            outputs = self.task.raw_outputs(self.model.head, outputs)
        return outputs[:, self.columns]

    def answer(self, batch: dict[str, Any]) -> torch.Tensor:
        """The teacher's outputs as its bundle answers (evaluation), in the student's label order."""
        return self.model(self._teacher_batch(batch))[:, self.columns]

    def _teacher_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "pixel_values" in batch:
            return {**batch, "pixel_values": self._teacher_pixels(batch["pixel_values"])}
        return batch

    def _teacher_pixels(self, x: torch.Tensor) -> torch.Tensor:
        s, t = self.student_spec, self.teacher_spec
        if (s.mean, s.std) != (t.mean, t.std):
            mean_s, std_s, mean_t, std_t = (torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
                                            for v in (s.mean, s.std, t.mean, t.std))
            x = (x * std_s + mean_s - mean_t) / std_t
        if x.shape[-1] != t.image_size or x.shape[-2] != t.image_size:
            x = F.interpolate(x, size=(t.image_size, t.image_size), mode="bilinear", align_corners=False)
        return x


def _check_labels(task: Any, teacher_labels: list[str], student_labels: list[str], source: str) -> None:
    """ConfigError unless the teacher knows every student label (and no other, for a task whose soft targets
    would change with extra labels: multi-label, tokens, regression)."""
    missing = [label for label in student_labels if label not in teacher_labels]
    if task is None or task.teacher_may_add_labels:
        if missing:
            raise ConfigError(f"The teacher {source} does not know the label(s) {', '.join(missing[:5])}; its labels "
                              f"are {', '.join(teacher_labels[:10])}. Distil from a teacher fitted on the same labels.")
        return
    if missing or set(teacher_labels) != set(student_labels):
        noun = "tags" if task.name == "tokens" else "labels"
        raise ConfigError(f"The teacher {source} has the {noun} {', '.join(teacher_labels[:12])}; this data's "
                          f"{noun} are {', '.join(student_labels[:12])}. A {task.name} teacher needs the same {noun}: "
                          f"distil from a teacher fitted on data with this {noun[:-1]} set.")


def same_tokenizer(a: PreprocessSpec, b: PreprocessSpec) -> bool:
    return load_tokenizer(a).get_vocab() == load_tokenizer(b).get_vocab()
