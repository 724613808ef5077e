"""What `fit --target-data` measures besides training: label-free epoch selection (DEV) and the report's
"Across domains" section (source-only vs adapted on --target-test, gap closed, features before and after).

A top-level module used by api.fit (of the top-level modules it imports only config). Before training, while the
backbone is still pretrained, ``start`` takes the "before" features (source validation and a fixed sample of the
target) and scores the source-only model on the target test: the frozen-feature linear probe fitted on the
source labels alone (the same probe as the before-vs-after table; a benchmark that fits a source-only model of
its own states that one). Each epoch the loop calls ``DomainRun.selection`` (train.selection), which reads source
validation labels and unlabeled target inputs only: the DEV estimate of the target loss picks the epoch. The
--target-test labels go into the source-only probe's score and, after training, the adapted model's score, both
for the report alone: the selection's closure holds no reference to them. Classification only (DEV weighs
per-example cross-entropy); other tasks select on source validation as usual.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from transferkit.backbones.features import extract_features
from transferkit.config import FitConfig
from transferkit.core.errors import DataError
from transferkit.data.doctor import DoctorConfig, diagnose_inputs
from transferkit.data.examples import Examples
from transferkit.data.images import DEFAULT_MAX_PIXELS
from transferkit.data.loaders import make_loader
from transferkit.data.sources import TextColumns, load_source
from transferkit.evaluate.domain_report import (
    domain_section,
    feature_projection,
    selection_summary,
    target_test_table,
)
from transferkit.evaluate.domain_selection import COLLAPSE_BALANCE, deep_embedded_validation, prediction_balance
from transferkit.evaluate.metrics import REPORTS, headline
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.linear_probe import LinearProbeConfig, fit_probe_head
from transferkit.tasks.model import TransferModel
from transferkit.train.loop import TrainResult
from transferkit.train.selection import LabelFreeSelection

TARGET_SAMPLE = 1000  # target inputs DEV and the projection look at (a fixed seeded sample; all when fewer)
DEV_KEY = "dev_risk"
COLLAPSE_KEY = "target_collapsed"  # history column: the target predictions collapsed (the epoch is not eligible)


@dataclass
class DomainRun:
    selection: LabelFreeSelection
    source: Examples  # source validation: DEV's labeled examples
    target: Examples  # the target sample
    before: tuple[np.ndarray, np.ndarray]  # pretrained features of ``source`` and ``target``
    source_only: dict[str, Any] | None  # the probe's metrics on the target test (None without --target-test)
    target_test: Examples | None


def read_target_test(cfg: FitConfig) -> Examples | None:
    """--target-test's labeled examples: its test part when it has split folders, else all of it; unreadable
    inputs left out (DataError when none is left)."""
    if cfg.target_test is None:
        return None
    try:
        splits = load_source(cfg.target_test, TextColumns(cfg.text_column, cfg.label_column, image=cfg.image_column))
    except DataError as error:  # say which flag the file came from
        raise DataError(f"--target-test (labeled target test data): {error}") from error
    has_splits = splits.val is not None or splits.test is not None
    examples = (splits.test if splits.test is not None else splits.val) if has_splits else splits.train
    if examples.labels is None:
        raise DataError(f"--target-test {cfg.target_test}: the target test needs labels (class folders or a label "
                        "column); unlabeled target inputs go to --target-data.")
    report = diagnose_inputs({"target_test": examples},
                             DoctorConfig(strict=cfg.strict, max_pixels=cfg.max_pixels or DEFAULT_MAX_PIXELS))
    report.raise_if_fatal()
    left_out = set(report.left_out("target_test"))
    kept = examples.subset([i for i in range(len(examples)) if i not in left_out])
    if not len(kept):
        raise DataError(f"--target-test {cfg.target_test}: none of its inputs can be read; nothing to score.")
    return kept


def start(model: TransferModel, ctx: StrategyContext, val: Examples, label_map: Any, target: Examples,
          target_test: Examples | None, precision: str, seed: int) -> DomainRun:
    """Before training: the pretrained features, the source-only probe on the target test, and the selection."""
    rng = np.random.default_rng(seed)
    sample = target if len(target) <= TARGET_SAMPLE else \
        target.subset(np.sort(rng.choice(len(target), TARGET_SAMPLE, replace=False)))
    spec = model.backbone.preprocessing
    before = (_features(model, val, precision), _features(model, sample, precision))
    source_only = _probe_on(model, ctx, target_test, label_map, precision) if target_test is not None else None
    labels = np.asarray(label_map.encode(val.labels, val.source))

    def score(current: TransferModel) -> dict[str, float]:
        loader = make_loader(val, spec, None, 64)
        xs = extract_features(current.backbone, loader, precision, "DEV: source validation features")
        losses = _losses(current, xs, labels)
        xt = _features(current, sample, precision)
        dev = deep_embedded_validation(xs, losses, xt, seed)
        balance = prediction_balance(_predictions(current, xt), labels, len(label_map))
        return {DEV_KEY: dev.risk, "dev_domain_accuracy": dev.domain_accuracy, "target_prediction_balance": balance,
                COLLAPSE_KEY: float(balance < COLLAPSE_BALANCE)}

    selection = LabelFreeSelection(DEV_KEY, score, lower_is_better=True, name="deep embedded validation (DEV)",
                                   veto_key=COLLAPSE_KEY)
    return DomainRun(selection, val, sample, before, source_only, target_test)


def finish(run: DomainRun, model: TransferModel, result: TrainResult, label_map: Any, strategy: str,
           precision: str, oracle_accuracy: float | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """After training (``model`` holds the kept epoch): (metrics.json's ``domain`` entry, the report's section)."""
    by_source = source_selected_epoch(result.history, model)
    selection = selection_summary(result.history, result.best_epoch, by_source, DEV_KEY, COLLAPSE_KEY)
    after = (_features(model, run.source, precision), _features(model, run.target, precision))
    projection = feature_projection(run.before, after)
    table, adapted = None, None
    if run.target_test is not None:
        adapted = _metrics(model, model.head, _features(model, run.target_test, precision), run.target_test,
                           label_map)
        table = target_test_table(adapted, run.source_only, strategy, oracle_accuracy)
    entry = {"selection": {"criterion": "dev", "kept_epoch": result.best_epoch, "source_validation_epoch": by_source,
                           "scores": {str(r["epoch"]): r["score"] for r in (selection or {}).get("rows", [])}},
             "domain_accuracy": projection["domain_accuracy"], "n_target_scored": len(run.target)}
    if table is not None:
        entry["target_test"] = {"adapted": headline(adapted), "source_only": headline(run.source_only),
                                "gain": table["gain"], "gap_closed": table["gap_closed"]}
    return entry, domain_section(table, selection, projection)


def source_selected_epoch(history: list[dict[str, Any]], model: TransferModel) -> int | None:
    """The epoch the task's own rule (best source-validation score, then loss) would have kept."""
    best: tuple[float, float] | None = None
    chosen = None
    key = model.task.selection_metric
    for row in history:
        if row.get(key) is None or row.get("val_loss") is None:
            continue
        if best is None or model.task.improves(row[key], row["val_loss"], *best):
            best, chosen = (row[key], row["val_loss"]), int(row["epoch"])
    return chosen


def _features(model: TransferModel, examples: Examples, precision: str) -> np.ndarray:
    loader = make_loader(examples, model.backbone.preprocessing, None, 64)
    return extract_features(model.backbone, loader, precision, f"features of {examples.source}")


@torch.inference_mode()
def _losses(model: TransferModel, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy of the head on ``features`` (DEV's validation losses)."""
    device = next(model.head.parameters()).device
    was_training = model.head.training
    model.head.eval()
    logits = model.head(torch.from_numpy(features).to(device)).float()
    model.head.train(was_training)
    return F.cross_entropy(logits, torch.from_numpy(labels).to(device), reduction="none").cpu().numpy()


@torch.inference_mode()
def _predictions(model: TransferModel, features: np.ndarray) -> np.ndarray:
    """The head's top class for each row of ``features`` [n, d] (class indices, shape [n])."""
    device = next(model.head.parameters()).device
    was_training = model.head.training
    model.head.eval()
    predicted = model.head(torch.from_numpy(features).to(device)).argmax(-1).cpu().numpy()
    model.head.train(was_training)
    return predicted


def _probe_on(model: TransferModel, ctx: StrategyContext, examples: Examples, label_map: Any,
              precision: str) -> dict[str, Any]:
    """The source-only reference: the frozen-feature linear probe (source labels only) on ``examples``."""
    head = model.task.head(model.backbone.feature_dim, len(label_map), names=label_map.names)
    fit_probe_head(head, ctx, LinearProbeConfig())
    return _metrics(model, head.to(next(model.parameters()).device), _features(model, examples, precision),
                    examples, label_map)


@torch.inference_mode()
def _metrics(model: TransferModel, head: torch.nn.Module, features: np.ndarray, examples: Examples,
             label_map: Any) -> dict[str, Any]:
    was_training = head.training
    head.eval()
    logits = head(torch.from_numpy(features).to(next(head.parameters()).device)).float().cpu()
    head.train(was_training)
    y = np.asarray(label_map.encode(examples.labels, examples.source))
    probabilities = model.task.probabilities(logits).numpy()
    return REPORTS[model.task.name](y, model.task.decode(logits).numpy(), label_map.names, probabilities)
