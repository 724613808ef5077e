"""auto: `fit --strategy auto` chooses the backbone, the strategy and (images) the input size from the data, the
transferability scores of the candidate backbones and the time budget, and records what it chose, why, and the
runner-up (metrics.json "auto", the report's first notes).

The steps, in order:
1. Backbone: --model if given; else every registered backbone of the data's modality (less the distillation
   students, which are layer subsets of a teacher meant for `--strategy distill`) is scored on the training
   split by ``transferkit.rank`` (frozen features through the feature cache; LogME) and the best one that fits
   the budget is taken - but the modality's default (which the rules below were measured on) stays unless the
   top one's LogME lead over it exceeds 2 standard errors (delete-half jackknife, robust). Token classification
   has no transferability estimator: the modality's default backbone is kept.
2. Strategy: the first rule of ``transferkit.auto_rules.RULES`` for (modality, task, labels per class); each
   rule names the benchmark cells it was learnt from. If its estimated time does not fit --budget-minutes, the
   next cheaper strategy (auto_rules.CHEAPER) is taken, down to the closed-form linear probe.
3. Image size (images, no --image-size): small images (median longer side <= 64 px, e.g. 28 px digits) are
   resized to 64 px rather than the backbone's 224-260 px (the benchmarks' setting; 12-16x fewer pixels).
Time estimates (budget only) are rough: the candidate's measured feature-extraction seconds per input x the
strategy's forward-pass equivalents per epoch (auto_rules.FORWARD_PASSES) x epochs, plus evaluation passes.

Imports transferkit.rank (and through it api) and transferkit.auto_rules; api.fit imports this module inside
the function (rank imports api).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from typing import Any

import numpy as np

from transferkit import rank as ranking
from transferkit.auto_rules import CHEAPER, FORWARD_PASSES, Rule, notes, rule_for
from transferkit.backbones import DEFAULT_FOR_MODALITY, DISTILLATION_STUDENTS
from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.images import load_image
from transferkit.evaluate.transferability import logme_difference
from transferkit.train.config import TrainConfig

LOG = logging.getLogger(__name__)  # progress of the choice (the CLI prints the outcome from metrics.json)
ESTIMATOR = "logme"
MARGIN_SE = 2.0  # a backbone replaces the default when its LogME lead is above this many standard errors
SMALL_IMAGE_PX = 64  # images whose longer side is at most this are trained at this size
_FLAGS = {"unfreeze": "--unfreeze", "bn": "--bn", "warmup_head_epochs": "--warmup-head-epochs"}
MIN_PER_CLASS_TO_SWITCH = 5  # fewer labels per class than this: the default backbone is kept without a test
_NOT_WITH_AUTO = {  # FitConfig field -> why auto refuses it
    "target_data": "--target-data: auto chooses among supervised strategies; pick one of dann, coral, mmd, "
                   "self-train (coral closed most of the gap on MNIST -> UCI digits in benchmarks/domain.py)",
    "teacher": "--teacher: distillation is its own strategy; use --strategy distill",
    "unlabeled_data": "--unlabeled-data: only distill reads it; use --strategy distill",
    "init_from": "--init-from: continuing a bundle keeps its backbone; pick the strategy (finetune continues it)",
}


def check_request(cfg: FitConfig) -> None:
    """ConfigError for options auto cannot honour: domain/distillation inputs, --init-from, strategy options."""
    for name, why in _NOT_WITH_AUTO.items():
        if getattr(cfg, name):
            raise ConfigError(f"--strategy auto does not take {why}.")
    if cfg.strategy_options:
        given = ", ".join(_FLAGS.get(k, f"-o {k}=...") for k in sorted(cfg.strategy_options))
        raise ConfigError(f"--strategy auto chooses the strategy and its options; drop {given}, or name the "
                          "strategy they belong to with --strategy.")


def labels_per_class(train: Examples, val: Examples | None) -> float | None:
    """Median labeled examples per class over train + val (how the label-efficiency benchmark counts K);
    None for a task without classes (regression, multi-label, tokens)."""
    counts: dict[str, int] = {}
    for part in (train, val):
        for label, n in (part.class_counts() if part is not None and part.labels else {}).items():
            counts[label] = counts.get(label, 0) + n
    return float(np.median(list(counts.values()))) if counts else None


def choose_image_size(train: Examples, sample: int = 50) -> tuple[int | None, str]:
    """(size or None for the backbone's own, why) from the median longer side of up to ``sample`` images."""
    sides = []
    for item in train.inputs[:sample]:
        try:
            sides.append(max(load_image(item).size))
        except Exception:  # unreadable inputs are the doctor's business
            continue
    if not sides or np.median(sides) > SMALL_IMAGE_PX:
        seen = f" (median longer side {int(np.median(sides))} px)" if sides else ""
        return None, f"the backbone's own input size, as the images are not small{seen}"
    return SMALL_IMAGE_PX, (f"{SMALL_IMAGE_PX} px: the images are small (median longer side {int(np.median(sides))} "
                            f"px); the backbones' 224-260 px inputs would cost 12-16x the compute for no detail")


def resolve(cfg: FitConfig, train: Examples, val: Examples | None, test: Examples | None, task: str,
            started: float, progress: bool = True) -> tuple[FitConfig, dict[str, Any]]:
    """``cfg`` with the chosen model, strategy, image size, epochs and training time budget, and the record
    of the choice (what, why, runner-up, ranking, estimates) for metrics.json and the report.

    ``started``: time.perf_counter() at the start of fit (--budget-minutes counts from there).
    Raises ConfigError when nothing fits the budget.
    """
    record: dict[str, Any] = {"reasons": []}
    modality = train.modality
    per_class = labels_per_class(train, val) if task == "classification" else None
    record["labels_per_class"] = per_class
    if modality == "image" and cfg.image_size is None:
        size, why = choose_image_size(train)
        cfg = replace(cfg, image_size=size)
        record["image_size"] = {"chosen": size, "why": why}
    rule = rule_for(modality, task, per_class)
    epochs = rule.epochs if rule.epochs and cfg.train.epochs == TrainConfig().epochs else cfg.train.epochs
    candidates = _backbones(cfg, train, task, record, progress)
    n_eval = len(val or []) * epochs + len(test or []) + len(train) + len(val or [])
    chosen = _fit_budget(candidates, rule, cfg, len(train), n_eval, epochs, started, record)
    model, strategy, estimate = chosen
    record.update(model=model, strategy=strategy, epochs=epochs, rule=_rule_record(rule, per_class, modality, task))
    record["runner_up"] = _runner_up(candidates, model, strategy, rule, record.pop("budget_runner_up", None))
    train_cfg = replace(cfg.train, epochs=epochs, max_minutes=_training_minutes(cfg, started, estimate))
    if "budget" in record:
        record["budget"]["training_minutes"] = train_cfg.max_minutes
    resolved = replace(cfg, model=model, strategy=strategy, budget_minutes=None, train=train_cfg)
    record["seconds"] = round(time.perf_counter() - started, 2)
    if progress:
        LOG.info("auto: %s", notes(record)[0])
    return resolved, record


def _backbones(cfg: FitConfig, train: Examples, task: str, record: dict[str, Any],
               progress: bool) -> list[dict[str, Any]]:
    """Candidates best first: [{name, score, seconds_per_input}] (score None: not ranked)."""
    default = DEFAULT_FOR_MODALITY[train.modality]
    given = cfg.model != "auto"
    if given or task == "tokens":
        name = cfg.model if given else default
        record["reasons"].append(f"backbone {name}: given with --model" if given else
                                 f"backbone {default}: the default for text; token classification has no "
                                 "transferability estimator to rank backbones by")
        if cfg.budget_minutes is None or task == "tokens":
            return [{"name": name, "score": None, "seconds_per_input": None}]
    names = [cfg.model] if given else \
        [m for m in ranking.candidate_names(train.modality, None) if m not in DISTILLATION_STUDENTS]
    features: dict[str, np.ndarray] = {}
    summary = _rank(names, cfg, train, task, features, progress)
    n = max(len(train), 1)
    scored = [{"name": m["name"], "score": m["scores"][ESTIMATOR],
               "seconds_per_input": None if m.get("cached_features") else m["seconds"]["features"] / n}
              for m in summary["models"]]
    record["ranking"] = {"by": ESTIMATOR, "models": [{k: v for k, v in m.items()} for m in scored],
                         "skipped": [{"name": s["name"], "reason": s["reason"]} for s in summary["skipped"]]}
    if not scored:
        raise ConfigError(f"--strategy auto found no {train.modality} backbone it could load: "
                          + "; ".join(s["reason"] for s in summary["skipped"]))
    if given:  # ranked only to measure its cost per input for the budget
        return scored
    if _default_holds(scored, default, features, task, cfg.train.seed, record):
        return sorted(scored, key=lambda c: c["name"] != default)
    best = scored[0]
    runner = f"; runner-up {scored[1]['name']} ({_fmt(scored[1]['score'])})" if len(scored) > 1 else ""
    record["reasons"].append(f"backbone {best['name']}: highest {ESTIMATOR} ({_fmt(best['score'])}) of "
                             f"{len(scored)} {train.modality} backbones ranked on the training data{runner}")
    return scored


def _rank(names: list[str], cfg: FitConfig, train: Examples, task: str, features: dict[str, np.ndarray],
          progress: bool) -> dict[str, Any]:
    """transferkit.rank on the training split. Under a budget, into a fresh feature cache (removed after), so
    that each backbone's seconds per input are measured, not read back."""
    scratch = tempfile.mkdtemp(prefix="tk-auto-") if cfg.budget_minutes else None
    options = {"task": task, "precision": cfg.train.precision, "clip_seconds": cfg.clip_seconds,
               "image_size": cfg.image_size if train.modality == "image" else None,
               "cache_dir": scratch or cfg.cache_dir}
    say = (lambda line: LOG.info("auto: %s", line)) if progress else None
    try:
        return ranking.rank(DataSplits(train=train), names, by=ESTIMATOR, seed=cfg.train.seed, on_model=say,
                            features_out=features, skip_failures=True,
                            **{k: v for k, v in options.items() if v is not None})
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _default_holds(scored: list[dict[str, Any]], default: str, features: dict[str, np.ndarray], task: str,
                   seed: int, record: dict[str, Any]) -> bool:
    """Whether the modality's default backbone stays the choice although another ranked first: it does unless
    the top one's LogME lead over it is more than ``MARGIN_SE`` standard errors (transferability's
    logme_difference). The rules were learnt on the default, and on a few dozen labels LogME's order of close
    backbones is noise."""
    top = scored[0]["name"]
    if top == default or default not in features or top not in features:
        return False
    y = features["_y"]
    fewest = int(np.bincount(y).min()) if task == "classification" else len(y)
    if fewest < (MIN_PER_CLASS_TO_SWITCH if task == "classification" else 4 * MIN_PER_CLASS_TO_SWITCH):
        record["reasons"].append(f"backbone {default}: the default, which the strategy rules were measured on; "
                                 f"{top} ranked first by {ESTIMATOR}, but with {fewest} training "
                                 f"{'examples in the smallest class' if task == 'classification' else 'examples'} "
                                 "no ranking of backbones is trustworthy")
        return True
    lead, se = logme_difference(features[top], features[default], task, features["_y"], seed=seed)
    record["ranking"]["lead_over_default"] = {"model": top, "default": default, "logme_lead": round(lead, 4),
                                              "standard_error": round(se, 4), "margin_se": MARGIN_SE}
    if lead > MARGIN_SE * se:
        record["reasons"].append(f"backbone {top}: its {ESTIMATOR} lead over the default {default} ({lead:.3f}) is "
                                 f"more than {MARGIN_SE:g} standard errors ({se:.3f}, half-sample jackknife)")
        return False
    record["reasons"].append(f"backbone {default}: the default, which the strategy rules were measured on; {top} "
                             f"ranked first by {ESTIMATOR} but only {lead:.3f} above it, within {MARGIN_SE:g} "
                             f"standard errors ({se:.3f}, half-sample jackknife) on this little data")
    return True


def _fit_budget(candidates: list[dict[str, Any]], rule: Rule, cfg: FitConfig, n_train: int, n_eval: int,
                epochs: int, started: float, record: dict[str, Any]) -> tuple[str, str, float | None]:
    """(model, strategy, estimated seconds): without a budget, the rule's strategy on the first candidate; with
    one, the first option of ``_options_within`` (and the second becomes the runner-up). ConfigError when none
    fits."""
    if cfg.budget_minutes is None:
        record["reasons"].append(f"strategy {rule.strategy}: {rule.evidence}")
        return candidates[0]["name"], rule.strategy, None
    left = cfg.budget_minutes * 60 - (time.perf_counter() - started)
    fitting = _options_within(candidates, rule.strategy, left, n_train, n_eval, epochs)
    record["budget"] = {"minutes": cfg.budget_minutes, "left_after_choice_minutes": round(left / 60, 2)}
    if not fitting:
        spent = "no time was left" if left <= 0 else f"{left / 60:.1f} minutes were left"
        raise ConfigError(f"--budget-minutes {cfg.budget_minutes:g}: even a linear probe would not fit ({spent} "
                          "after ranking the backbones); raise the budget.")
    model, strategy, estimate = fitting[0]
    record["budget"]["estimated_minutes"] = None if estimate is None else round(estimate / 60, 2)
    why = "" if estimate is None else f" (estimated {estimate / 60:.1f} of {left / 60:.1f} minutes left)"
    if strategy == rule.strategy:
        record["reasons"].append(f"strategy {strategy}{why}: {rule.evidence}")
    else:
        record["reasons"].append(f"strategy {strategy}{why}: {rule.strategy} ({rule.evidence}) would not fit "
                                 f"--budget-minutes {cfg.budget_minutes:g} on any backbone")
    if model != candidates[0]["name"]:
        record["reasons"].append(f"backbone {model}: {candidates[0]['name']} came first but {strategy} on it would "
                                 "not fit the budget; a cheaper backbone is tried before a cheaper strategy (fine-tuned "
                                 "accuracies of the image backbones were within 1.5 points of each other on digits, "
                                 "while fine-tuning beat the frozen head by 14 points: benchmarks/rank.py, "
                                 "label_efficiency.py)")
    record["budget_runner_up"] = fitting[1][:2] if len(fitting) > 1 else None
    return model, strategy, estimate


def _options_within(candidates: list[dict[str, Any]], strategy: str | None, left: float, n_train: int,
                    n_eval: int, epochs: int) -> list[tuple[str, str, float | None]]:
    """The (model, strategy, estimated seconds) that fit in ``left`` seconds, in order of preference: the
    strategy on each candidate in rank order, then the next cheaper strategy (auto_rules.CHEAPER) likewise."""
    fitting: list[tuple[str, str, float | None]] = []
    while strategy is not None and len(fitting) < 2:
        for c in candidates:
            estimate = _estimate_seconds(strategy, c["seconds_per_input"], n_train, n_eval, epochs)
            if estimate is None or estimate <= left:
                fitting.append((c["name"], strategy, estimate))
        strategy = CHEAPER.get(strategy)
    return fitting


def _estimate_seconds(strategy: str, per_input: float | None, n_train: int, n_eval: int,
                      epochs: int) -> float | None:
    """Rough seconds for training + evaluation; None when the per-input cost is unknown."""
    if per_input is None:
        return None
    passes = FORWARD_PASSES.get(strategy, 3.0) * epochs
    return per_input * (n_train * passes + n_eval)


def _training_minutes(cfg: FitConfig, started: float, estimate: float | None) -> float | None:
    """Training's own time budget: what --budget-minutes leaves after ranking, less the evaluation's share."""
    if cfg.budget_minutes is None:
        return cfg.train.max_minutes
    left = cfg.budget_minutes - (time.perf_counter() - started) / 60
    budget = round(max(left * 0.85, 0.1), 2)
    return budget if cfg.train.max_minutes is None else min(budget, cfg.train.max_minutes)


def _runner_up(candidates: list[dict[str, Any]], model: str, strategy: str, rule: Rule,
               within_budget: tuple[str, str] | None = None) -> dict[str, Any]:
    """The next choice: under a budget, the next option that fits it; else the rule's runner-up strategy on the
    chosen backbone, and the next-ranked backbone."""
    if within_budget is not None:
        score = next((c["score"] for c in candidates if c["name"] == within_budget[0]), None)
        return {"model": within_budget[0], "strategy": within_budget[1], "model_score": score}
    others = [c for c in candidates if c["name"] != model]
    return {"strategy": rule.runner_up if strategy == rule.strategy else rule.strategy,
            "model": others[0]["name"] if others else None,
            "model_score": others[0]["score"] if others else None}


def _rule_record(rule: Rule, per_class: float | None, modality: str, task: str) -> dict[str, Any]:
    bound = "any number of" if rule.max_per_class is None else f"at most {rule.max_per_class:g}"
    data = f"{modality} {task}" + ("" if per_class is None else f", {per_class:g} labels per class (train + val)")
    return {"data": data, "applies_to": f"{rule.modality or 'any'} {rule.task}, {bound} labels per class",
            "strategy": rule.strategy, "runner_up": rule.runner_up, "evidence": rule.evidence}


def _fmt(score: Any) -> str:
    return f"{score:.3f}" if isinstance(score, float) else str(score)
