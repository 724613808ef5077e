"""What `fit --strategy distill` needs beyond the strategy itself: the teacher, the transfer set, the speed report.

A top-level module used by api.fit (it imports no top-level module, so api can import it). The KD loss is in
strategies/distill.py; here the teacher bundle is loaded and matched to the student's labels and inputs,
--unlabeled-data is read, and after training the teacher is scored and both models are timed side by side.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

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
from transferkit.tasks.model import TransferModel
from transferkit.train.inference import predict_logits


def with_teacher_image_size(cfg: FitConfig, modality: str) -> FitConfig:
    """A distilled image student reads the teacher's image size unless --image-size says otherwise."""
    if cfg.teacher is None or modality != "image" or cfg.image_size is not None:
        return cfg
    return replace(cfg, image_size=int(read_manifest(Path(cfg.teacher))["preprocessing"]["image_size"]))


def load_teacher(cfg: FitConfig, label_names: tuple[str, ...], model: TransferModel, strategy) -> Teacher | None:
    if cfg.teacher is None:
        if getattr(strategy, "needs_teacher", False):
            raise ConfigError(f"The {strategy.name} strategy needs --teacher BUNDLE: the bundle/ folder of a fitted "
                              f"model, e.g. transferkit fit --strategy finetune --out runs/teacher first.")
        return None
    if not getattr(strategy, "needs_teacher", False):
        raise ConfigError(f"--teacher is only used by --strategy distill (not {strategy.name}).")
    loaded = load_bundle(Path(cfg.teacher))
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
    return Examples(train.modality, train.inputs + unlabeled.inputs, train.labels + [None] * len(unlabeled),
                    train.source, train.ids + unlabeled.ids, max_pixels=train.max_pixels)


def teacher_summary(teacher: Teacher, student: TransferModel, data: Any, spec, precision: str,
                    progress: bool) -> dict[str, Any]:
    """Teacher accuracy on the student's test (else val) split, and both models' throughput on the same batches."""
    name, examples = ("test", data.test) if data.test is not None else ("val", data.val)
    logits, labels = predict_logits(teacher, make_loader(examples, spec, data.label_map, 64), precision,
                                    progress=progress, desc="evaluate teacher")
    metrics = REPORTS[student.task.name](labels, student.task.decode(logits), data.label_map.names)
    speed = compare_throughput({"student": student, "teacher": teacher}, list(make_loader(examples, spec, None, 32)),
                               precision)
    return {"teacher_accuracy": metrics["accuracy"], "teacher_split": name, "teacher_macro_f1": metrics["macro_f1"],
            "throughput": {"student_per_s": speed["student"], "teacher_per_s": speed["teacher"]},
            "speedup_vs_teacher": round(speed["student"] / speed["teacher"], 3)}
