"""What a run leaves on disk besides its bundle and checkpoints: metrics.json, history.json, report.md/.html,
and the bundle manifest's record of how the model was made.

A top-level module used by api.fit (of the top-level modules it imports only auto_rules, config, distillation and
refit).
"""
from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from transferkit.auto_rules import notes as auto_notes
from transferkit.backbones import DEFAULT_FOR_MODALITY
from transferkit.backbones.adapted import pretraining_text
from transferkit.backbones.provenance import pretrained_record
from transferkit.config import FitConfig
from transferkit.core.io import atomic_write_json, atomic_write_text
from transferkit.core.runtime import default_device
from transferkit.data.doctor import DataReport
from transferkit.distillation import teacher_notes
from transferkit.evaluate.html import confident_errors, inputs_summary, render_report
from transferkit.evaluate.metrics import headline
from transferkit.evaluate.multilabel_report import render_multilabel_html, render_multilabel_markdown
from transferkit.evaluate.regression_report import (
    regression_before_after,
    render_regression_html,
    render_regression_markdown,
)
from transferkit.evaluate.report import (
    BEFORE_AFTER,
    before_after_notes,
    before_after_table,
    data_doctor_notes,
    distillation_table,
    imbalance_notes,
    no_before_after_note,
    render_markdown,
    training_notes,
)
from transferkit.evaluate.token_report import render_token_html, render_token_markdown, worst_sentences
from transferkit.refit import init_from_notes
from transferkit.tasks.model import TransferModel
from transferkit.tasks.tokens import TokensTask
from transferkit.train.config import IMBALANCE_RATIO_FOR_WEIGHTS
from transferkit.train.loop import TrainResult

PACKAGES = ("transferkit", "torch", "torchvision", "timm", "transformers", "scikit-learn", "safetensors", "numpy")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def manifest(cfg: FitConfig, model: TransferModel, data: Any, strategy, spec, summary,
              precision: str) -> dict[str, Any]:
    bb = model.backbone
    return {
        "backbone": {"name": bb.name, "architecture": bb.architecture(), "pretrained_sha256": bb.weights_sha256,
                     "feature_dim": bb.feature_dim, **(pretrained_record(bb.name) if bb.weights_sha256 else {}),
                     **({"pretraining": bb.pretraining} if getattr(bb, "pretraining", None) else {})},
        "task": model.task.name,
        **({"head": model.head.spec()} if hasattr(model.head, "spec") else {}),  # a non-linear head (protonet)
        **({"targets": data.label_map.to_dict()} if model.task.name == "regression" else {}),
        "labels": list(data.label_map.names),
        "preprocessing": spec.to_dict(),
        "inference_precision": precision,
        "strategy": {"name": strategy.name, "config": asdict(strategy.config)},
        "train_config": asdict(cfg.train),
        "fit_config": {k: v for k, v in asdict(cfg).items() if k != "train"},
        "metrics": {k: headline(v) if isinstance(v, dict) else v for k, v in summary.items()},
        "versions": versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
    }


def write_run(run_dir: Path, cfg: FitConfig, data: Any, result: TrainResult, summary: dict, strategy,
               evaluations: dict[str, Any], before: dict[str, Any] | None,
               data_report: DataReport | None = None, domain: dict[str, Any] | None = None) -> None:
    """``domain``: the report's "Across domains" section (transferkit.domain_eval) of a --target-data run."""
    atomic_write_json(run_dir / "metrics.json", summary)
    atomic_write_json(run_dir / "history.json", result.history)
    if not result.history:  # a closed-form strategy still leaves TensorBoard events with its final metrics
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
            for split in ("val", "test"):
                for key in ("accuracy", "macro_f1", "micro_f1", "r2", "mae"):
                    if key in summary.get(split, {}):
                        writer.add_scalar(f"{split}/{key}", summary[split][key], 0)
    model_name = cfg.model if cfg.model != "auto" else DEFAULT_FOR_MODALITY[data.modality]
    config_rows = {"data": cfg_data(run_dir) or "in memory", "model": model_name,
                   "strategy": f"{strategy.name} ({strategy.summary})",
                   "strategy options": json.dumps(asdict(strategy.config)), **asdict(cfg.train),
                   "labels_per_class": cfg.labels_per_class, "image_size": cfg.image_size,
                   "batch_size": batch_text(summary), "precision": summary["precision_used"],
                   "inference precision": summary["inference_precision"],
                   "device": str(default_device()),
                   **({"pretraining": pretraining_text(summary["pretraining"])} if summary.get("pretraining") else {})}
    metrics = {k: v for k, v in summary.items() if k in ("test", "val")}
    parts = {"train": data.train, "val": data.val, "test": data.test}
    if getattr(data, "task", "classification") == "regression":
        _write_regression_report(run_dir, data, result, summary, strategy, evaluations, before, data_report,
                                 {"title": run_dir.name, "model": model_name, "strategy": strategy.name,
                                  "config": config_rows, "metrics": metrics})
        return
    task = getattr(data, "task", "classification")
    ba = before_after_table(before, metrics, strategy.name, task) if task in BEFORE_AFTER else None
    ba_notes = [ba["statement"]] if ba else \
        no_before_after_note(strategy.name, strategy.uses_pretrained_weights, cfg.baseline)
    if task == "multilabel":
        detected = [summary["task_detected"]] if summary.get("task_detected") else []
        run = {"title": run_dir.name, "model": model_name, "strategy": strategy.name, "config": config_rows,
               "metrics": metrics, "history": result.history, "before_after": ba,
               "notes": auto_notes(summary.get("auto")) + detected + training_notes(result, "micro-F1") + ba_notes
               + (data_doctor_notes(data_report.to_dict()) if data_report is not None else [])
               + init_from_notes(summary.get("init_from")) + teacher_notes(summary),
               "data_doctor": data_report.to_dict() if data_report is not None else None,
               "data": {"sizes": {k: len(v) if v is not None else 0 for k, v in parts.items()},
                        "label_counts": data.train.class_counts()}}
        atomic_write_text(run_dir / "report.md", render_multilabel_markdown(run))
        atomic_write_text(run_dir / "report.html", render_multilabel_html(run))
        return
    if task == "tokens":
        notes = auto_notes(summary.get("auto")) + training_notes(result, "entity F1") + ba_notes + \
            (data_doctor_notes(data_report.to_dict()) if data_report is not None else []) + \
            init_from_notes(summary.get("init_from")) + teacher_notes(summary)
        task = TokensTask(data.label_map.names)
        worst = {name: worst_sentences(parts[name].inputs, task.tag_sequences(e.labels[:, 0], e.labels[:, 1]),
                                       task.tag_sequences(e.probabilities.argmax(1), e.labels[:, 1]))
                 for name, e in evaluations.items()}
        token_run = {"title": run_dir.name, "model": model_name, "strategy": strategy.name, "metrics": metrics,
                     "history": result.history, "notes": notes, "worst": worst, "before_after": ba}
        atomic_write_text(run_dir / "report.md", render_token_markdown(token_run))
        atomic_write_text(run_dir / "report.html", render_token_html(token_run))
        return
    run = {
        "title": run_dir.name, "model": model_name, "strategy": strategy.name,
        "created": datetime.now().isoformat(timespec="seconds"), "metrics": metrics, "history": result.history,
        "notes": auto_notes(summary.get("auto"))
        + training_notes(result, selected_by=(domain or {}).get("selection", {}).get("criterion"))
        + imbalance_notes(summary["imbalance"], IMBALANCE_RATIO_FOR_WEIGHTS)
        + before_after_notes(before, metrics, strategy.name)
        + (data_doctor_notes(data_report.to_dict()) if data_report is not None else [])
        + init_from_notes(summary.get("init_from")),
        "data_doctor": data_report.to_dict() if data_report is not None else None,
        "data": {"sizes": {k: len(v) if v is not None else 0 for k, v in parts.items()},
                 "class_counts": {k: v.class_counts() for k, v in parts.items() if v is not None and v.labels},
                 "inputs_summary": inputs_summary(data.train),
                 "lengths": [len(str(t).split()) for t in data.train.inputs] if data.modality == "text" else None},
        "config": config_rows, "environment": versions(),
        "trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
        "before_after": before_after_table(before, metrics, strategy.name),
        "distillation": distillation_table(summary),
        "domain": domain,
        "errors": {name: confident_errors(parts[name].inputs, parts[name].ids, e.labels, e.probabilities,
                                          list(data.label_map.names), data.modality)
                   for name, e in evaluations.items()},
    }
    atomic_write_text(run_dir / "report.md", render_markdown(run))
    atomic_write_text(run_dir / "report.html", render_report(run))


def _write_regression_report(run_dir: Path, data: Any, result: TrainResult, summary: dict, strategy,
                             evaluations: dict[str, Any], before: dict[str, Any] | None,
                             data_report: DataReport | None, base: dict[str, Any]) -> None:
    """report.md / report.html of a regression run (transferkit.evaluate.regression_report)."""
    ba = regression_before_after(before, base["metrics"], strategy.name)
    detected = [summary["task_detected"]] if summary.get("task_detected") else []
    run = {**base, "created": datetime.now().isoformat(timespec="seconds"), "history": result.history,
           "notes": auto_notes(summary.get("auto")) + detected + training_notes(result, "R²")
           + ([ba["statement"]] if ba else [])
           + (data_doctor_notes(data_report.to_dict()) if data_report is not None else [])
           + init_from_notes(summary.get("init_from")) + teacher_notes(summary),
           "data_doctor": data_report.to_dict() if data_report is not None else None,
           "data": {"sizes": {k: len(v) if v is not None else 0 for k, v in
                              (("train", data.train), ("val", data.val), ("test", data.test))},
                    "targets": data.label_map.to_dict()},
           "environment": versions(), "trainable_params": summary["trainable_params"],
           "total_params": summary["total_params"], "before_after": ba,
           "values": {name: {"true": e.labels.tolist(), "predicted": e.probabilities[:, 0].tolist()}
                      for name, e in evaluations.items()}}
    atomic_write_text(run_dir / "report.md", render_regression_markdown(run))
    atomic_write_text(run_dir / "report.html", render_regression_html(run))


def cfg_data(run_dir: Path) -> str | None:
    """The data reference recorded in the run's config.json (None for in-memory data)."""
    config_file = run_dir / "config.json"
    return json.loads(config_file.read_text()).get("data") if config_file.is_file() else None


def batch_text(summary: dict) -> int | str:
    """The report's batch size: the number, or after a multi-process run which batch it is (as fit prints it)."""
    if not summary.get("processes"):
        return summary["batch_size_used"]
    return (f"{summary['batch_size_used']} per process x {summary['processes']} processes = global batch "
            f"{summary['global_batch']}")
