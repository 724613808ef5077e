"""Which task a fit runs (``--task``, or detected from the labels), the options each task refuses, and the
target encoder the loaders use (a LabelMap for classification, NumericTargets for regression).

Top-level module beside api (imports transferkit.config, core and data; api calls it). Refusals are ConfigErrors
that name the option and say why it has no meaning for the task; options that only have a classification default
(``class_weight='auto'``) simply stay off.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError
from transferkit.data.labels import LabelMap
from transferkit.data.targets import NumericTargets, detect_task

# option -> (is it set?, why regression refuses it)
_REGRESSION_REFUSALS = {
    "labels_per_class": (lambda c: c.labels_per_class is not None,
                         "--labels-per-class keeps K examples of each class, and a regression target has no classes; "
                         "drop it (pass a smaller training file to try fewer labels)"),
    "label_smoothing": (lambda c: c.train.label_smoothing > 0,
                        "--label-smoothing softens one-hot class targets; a regression target is a number; drop it"),
    "mixup": (lambda c: c.train.mixup > 0 or c.train.cutmix > 0,
              "--mixup/--cutmix mix class targets; for regression they are not supported; drop them"),
    "sampler": (lambda c: c.train.sampler == "balanced",
                "--sampler balanced draws every class equally often; a regression target has no classes; drop it"),
    "class_weight": (lambda c: c.train.class_weight == "balanced",
                     "--class-weight balanced weights classes; a regression target has no classes; drop it"),
    "distill": (lambda c: c.strategy == "distill" or c.teacher is not None or c.unlabeled_data is not None,
                "--strategy distill trains on a teacher's soft class probabilities (KD); regression has none. Use "
                "--strategy finetune (or lora) on the labeled data"),
    "init_from": (lambda c: c.init_from is not None,
                  "--init-from extends a classifier's classes (old classes first, new ones added); for regression "
                  "it is not supported yet. Fit from the backbone instead"),
}


def resolve_task(cfg: FitConfig, train_labels: Sequence[str | None]) -> tuple[FitConfig, str]:
    """``cfg`` with its task set (detected when not given) and the sentence saying it was detected ('' if not)."""
    note = ""
    if cfg.task is None:
        guess = detect_task(train_labels)
        cfg, note = replace(cfg, task=guess.name), guess.reason
    check_options(cfg, detected=bool(note))
    return cfg, note


def check_options(cfg: FitConfig, detected: bool = False) -> None:
    """ConfigError for an option the task has no meaning for (``detected``: the task was guessed, say how to
    override it)."""
    if cfg.task != "regression":
        return
    how = ("the labels were detected as numeric targets; pass --task classification to treat them as classes"
           if detected else "--task regression")
    for check, why in _REGRESSION_REFUSALS.values():
        if check(cfg):
            raise ConfigError(f"{why} ({how}).")


def bundle_targets(manifest: dict[str, Any], label_map: LabelMap) -> LabelMap | NumericTargets:
    """What encodes labels for a saved bundle: its classes, or its recorded targets (regression)."""
    if manifest.get("task") == "regression":
        return NumericTargets(**manifest.get("targets", {}))
    return label_map


def target_map(task: str, labels: Sequence[str | None], source: str) -> LabelMap | NumericTargets:
    """What encodes the training labels for the loaders: class indices, or floats with their mean/std."""
    if task == "regression":
        return NumericTargets.from_labels(labels, source)
    return LabelMap.from_labels(labels, source)
