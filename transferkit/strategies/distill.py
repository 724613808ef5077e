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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.data.examples import a_modality
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
    summary = STRATEGY_SUMMARIES["distill"]
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
    Texts: the two tokenizers must agree (same vocabulary), since both read the same input ids. Audio: the same
    sample rate, clip length and front end (feature extractor settings, or raw waves), for the same reason.
    """

    def __init__(self, model: torch.nn.Module, teacher_labels: list[str], student_labels: list[str],
                 teacher_spec: PreprocessSpec, student_spec: PreprocessSpec, source: str = "teacher"):
        super().__init__()
        self.task = getattr(model, "task", None)  # a bare module (tests) reads as a classifier
        _check_labels(self.task, teacher_labels, student_labels, source)
        if teacher_spec.modality != student_spec.modality:
            raise ConfigError(f"The teacher {source} is {a_modality(teacher_spec.modality)} model but the student reads "
                              f"{student_spec.modality}.")
        if teacher_spec.modality == "text" and not same_tokenizer(teacher_spec, student_spec):
            raise ConfigError(f"The teacher {source} tokenizes text differently from the student model; distil into "
                              f"a student that shares its vocabulary (e.g. minilm-l3 for a minilm teacher).")
        if teacher_spec.modality == "audio" and (reason := audio_input_mismatch(teacher_spec, student_spec)):
            raise ConfigError(f"The teacher {source} reads audio differently from the student model ({reason}); "
                              f"distil into a student with the same input (e.g. whisper-tiny-en-l2 for a "
                              f"whisper-tiny-en teacher, at the teacher's clip length).")
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


def audio_input_mismatch(teacher: PreprocessSpec, student: PreprocessSpec) -> str | None:
    """Why a teacher cannot read the student's audio batches (both read the same collated tensors), or None:
    another sample rate, clip length, or front end (a feature extractor with other settings, or raw waves)."""
    if teacher.sample_rate != student.sample_rate:
        return f"{teacher.sample_rate} Hz vs {student.sample_rate} Hz"
    if teacher.clip_seconds != student.clip_seconds:
        return f"{teacher.clip_seconds:g}-second clips vs {student.clip_seconds:g}-second clips"
    extractors = [_extractor_settings(spec) for spec in (teacher, student)]
    if extractors[0] != extractors[1]:
        named = [f"a {x.get('feature_extractor_type', 'feature extractor')}" if x else "raw waveforms"
                 for x in extractors]
        return f"{named[0]} vs {named[1]}" if named[0] != named[1] else "feature extractors with other settings"
    return None


def _extractor_settings(spec: PreprocessSpec) -> dict[str, Any] | None:
    if not spec.feature_extractor:
        return None
    config = json.loads((Path(spec.feature_extractor) / "preprocessor_config.json").read_text())
    config.pop("processor_class", None)
    return config


def same_tokenizer(a: PreprocessSpec, b: PreprocessSpec) -> bool:
    return load_tokenizer(a).get_vocab() == load_tokenizer(b).get_vocab()
