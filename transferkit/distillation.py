"""What `fit --strategy distill` needs beyond the strategy itself: the teacher, the transfer set, the speed report.

A top-level module used by api.fit (of the top-level modules it imports config and task_choice, so api can import
it). The loss is in strategies/distill.py and each task's soft targets in transferkit/tasks; here the teacher
bundle is loaded and matched to the student's task, labels and inputs, --unlabeled-data is read and encoded with
the task's missing target, and after training the teacher is scored and both models are timed side by side.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from transferkit import task_choice
from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.doctor import DataReport, DoctorConfig, diagnose_inputs
from transferkit.data.examples import Examples
from transferkit.data.images import DEFAULT_MAX_PIXELS
from transferkit.data.loaders import make_loader
from transferkit.data.sources import TextColumns, load_source
from transferkit.evaluate.metrics import REPORTS
from transferkit.evaluate.speed import compare_throughput
from transferkit.export.bundle import load_bundle, read_manifest
from transferkit.strategies.distill import Teacher
from transferkit.tasks import Task
from transferkit.tasks.model import TransferModel
from transferkit.train.inference import predict_logits


def with_teacher_image_size(cfg: FitConfig, modality: str) -> FitConfig:
    """A distilled image student reads the teacher's image size unless --image-size says otherwise; an audio
    student the teacher's clip length unless --clip-seconds does (then the teacher refuses to read its batches)."""
    if cfg.teacher is None:
        return cfg
    if modality == "image" and cfg.image_size is None:
        return replace(cfg, image_size=int(read_manifest(Path(cfg.teacher))["preprocessing"]["image_size"]))
    if modality == "audio" and cfg.clip_seconds is None:
        clip = read_manifest(Path(cfg.teacher))["preprocessing"].get("clip_seconds")
        return replace(cfg, clip_seconds=float(clip)) if clip else cfg
    return cfg


def load_teacher(cfg: FitConfig, label_names: tuple[str, ...], model: TransferModel, strategy) -> Teacher | None:
    if cfg.teacher is None:
        if getattr(strategy, "needs_teacher", False):
            raise ConfigError(f"The {strategy.name} strategy needs --teacher BUNDLE: the bundle/ folder of a fitted "
                              f"model, e.g. transferkit fit --strategy finetune --out runs/teacher first.")
        return None
    if not getattr(strategy, "needs_teacher", False):
        raise ConfigError(f"--teacher is only used by --strategy distill (not {strategy.name}).")
    loaded = load_bundle(Path(cfg.teacher))
    task_choice.check_bundle_task(loaded.manifest, cfg, f"The teacher {cfg.teacher}")
    teacher = Teacher(loaded.model, list(loaded.label_map.names), list(label_names), loaded.preprocessing,
                      model.backbone.preprocessing, str(cfg.teacher))
    return teacher.to(next(model.parameters()).device)


def unlabeled_examples(cfg: FitConfig, modality: str, strategy) -> tuple[Examples | None, DataReport | None]:
    """--unlabeled-data: inputs the teacher labels; they join the training set with no hard label.

    Checked as fit checks its splits (``diagnose_inputs``): unreadable inputs are left out and reported, and every
    finding is fatal with --strict.
    """
    if cfg.unlabeled_data is None:
        return None, None
    if not getattr(strategy, "needs_teacher", False):
        raise ConfigError(f"--unlabeled-data is used by --strategy distill (the teacher labels it), not {strategy.name}.")
    if cfg.train.mixup or cfg.train.cutmix:
        raise ConfigError("--unlabeled-data cannot be combined with --mixup/--cutmix (they mix hard labels); drop one.")
    splits = load_source(cfg.unlabeled_data, TextColumns(cfg.text_column, cfg.label_column, image=cfg.image_column),
                         labeled=False)
    parts = [p for p in (splits.train, splits.val, splits.test) if p is not None]
    examples = Examples(parts[0].modality, [x for p in parts for x in p.inputs], None, parts[0].source,
                        [i for p in parts for i in p.ids])
    if examples.modality != modality:
        raise DataError(f"--unlabeled-data {cfg.unlabeled_data} holds {examples.modality} data but the training "
                        f"data is {modality}.")
    report = diagnose_inputs({"unlabeled": examples}, DoctorConfig(strict=cfg.strict,
                                                                   max_pixels=cfg.max_pixels or DEFAULT_MAX_PIXELS))
    report.raise_if_fatal()
    left_out = set(report.left_out("unlabeled"))
    kept = examples.subset([i for i in range(len(examples)) if i not in left_out])
    kept.max_pixels = report.config.max_pixels  # decoded later with the cap it was checked with
    return kept, report


def with_unlabeled(train: Examples, unlabeled: Examples) -> Examples:
    """The distillation transfer set: labeled examples, then unlabeled ones (label None: soft targets only)."""
    if train.is_tokens != unlabeled.is_tokens:
        held = "sentences of words" if unlabeled.is_tokens else "one text per row"
        raise DataError(f"--unlabeled-data {unlabeled.source} holds {held} but the training data "
                        f"{'is tagged sentences' if train.is_tokens else 'has one text per row'}; for token "
                        "classification pass a CoNLL file without tags or JSONL with a tokens list per row.")
    return Examples(train.modality, train.inputs + unlabeled.inputs, train.labels + [None] * len(unlabeled),
                    train.source, train.ids + unlabeled.ids, max_pixels=train.max_pixels)


@dataclass(frozen=True)
class TransferTargets:
    """Encodes a transfer set's labels for the loader: labeled examples as ``label_map`` does, unlabeled ones (None)
    as the task's missing target (NO_LABEL, NaN, IGNORE per word), which adds no hard-label loss."""

    label_map: Any
    task: Task
    inputs: list[Any]

    @property
    def names(self) -> tuple[str, ...]:
        return self.label_map.names

    def __len__(self) -> int:
        return len(self.label_map)

    def encode(self, labels: Sequence[Any], source: str = "data") -> list[Any]:
        known = iter(self.label_map.encode([y for y in labels if y is not None], source))
        return [next(known) if y is not None else self.task.missing_target(x, len(self.label_map))
                for x, y in zip(self.inputs, labels)]


def transfer_set(train: Examples, unlabeled: Examples, label_map: Any, task: Task) -> tuple[Examples, TransferTargets]:
    """The transfer set (``with_unlabeled``) and what encodes its labels."""
    examples = with_unlabeled(train, unlabeled)
    return examples, TransferTargets(label_map, task, examples.inputs)


def teacher_summary(teacher: Teacher, student: TransferModel, data: Any, spec, precision: str,
                    progress: bool) -> dict[str, Any]:
    """The teacher's scores on the student's test (else val) split — classification: ``teacher_accuracy`` and
    ``teacher_macro_f1``; other tasks: ``teacher_<metric>`` for the task's headline metrics — and both models'
    throughput on the same batches. The teacher answers as its bundle does (multi-label: its own thresholds)."""
    name, examples = ("test", data.test) if data.test is not None else ("val", data.val)
    logits, labels = predict_logits(_Answers(teacher), make_loader(examples, spec, data.label_map, 64), precision,
                                    progress=progress, desc="evaluate teacher")
    metrics = REPORTS[student.task.name](labels, student.task.decode(logits), data.label_map.names)
    speed = compare_throughput({"student": student, "teacher": teacher}, list(make_loader(examples, spec, None, 32)),
                               precision)
    return {**{f"teacher_{k}": metrics[k] for k in student.task.metric_names if k in metrics}, "teacher_split": name,
            "throughput": {"student_per_s": speed["student"], "teacher_per_s": speed["teacher"]},
            "speedup_vs_teacher": round(speed["student"] / speed["teacher"], 3)}


class _Answers(torch.nn.Module):
    """A teacher read as its bundle answers (``Teacher.answer``), for predict_logits."""

    def __init__(self, teacher: Teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.teacher.answer(batch)


def teacher_notes(summary: dict[str, Any]) -> list[str]:
    """Report line for a distilled student of a task without the classification table (evaluate/report.py's
    distillation_table): its headline metric next to the teacher's on the same split, and the speed-up."""
    if "teacher_split" not in summary or "teacher_accuracy" in summary:
        return []
    split = summary["teacher_split"]
    shared = [k.removeprefix("teacher_") for k in summary if k.startswith("teacher_") and k != "teacher_split"
              and k.removeprefix("teacher_") in summary.get(split, {})]
    if not shared:
        return []
    metric = shared[0]
    return [f"Distilled from a teacher: {metric} on {split} {summary[split][metric]:.4f} (student) vs "
            f"{summary['teacher_' + metric]:.4f} (teacher), at {summary['speedup_vs_teacher']:.2f}x the teacher's "
            "inference throughput."]
