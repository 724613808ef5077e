"""compare: every strategy x labels-per-class x seed on identical splits, plus a plain reference, in one report
(per task: logistic/ridge regression on pixels or TF-IDF; a CRF on word features for tokens, ranked by entity F1).

A top-level module beside api (it calls api.fit for each run); writes compare.json and compare.html.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from transferkit import api, compare_workers, domain, task_choice
from transferkit.api import DataInput
from transferkit.backbones import DEFAULT_FOR_MODALITY
from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError, TrainingDiverged
from transferkit.core.io import atomic_write_json, atomic_write_text
from transferkit.data.doctor import DataReport
from transferkit.data.examples import DataSplits
from transferkit.data.splits import held_out_split
from transferkit.evaluate.baselines import reference_metrics, reference_name
from transferkit.evaluate.comparison import METRICS, gains, series, summarize
from transferkit.evaluate.html import render_compare
from transferkit.strategies import STRATEGIES, build_strategy
from transferkit.train.engine import refuse_launch


def compare(data: DataInput, strategies: list[str], labels_per_class: list[int | None], seeds: int = 1,
            out: str | Path | None = None, budget_minutes: float | None = None, progress: bool = True,
            on_run: Callable[[str], None] | None = None, workers: int = 1, **options: Any) -> dict[str, Any]:
    """Run every strategy x labels-per-class x seed on identical splits, plus the plain reference; write
    compare.json and compare.html in ``out`` (each run keeps its own folder under out/runs/).

    The test set is the same for every run (the source's test split, ``test_data``, or a fixed stratified
    20 % held out with seed 0); the K-per-class subsample depends only on (K, seed), so every strategy sees the
    same examples, and frozen features are computed once (the feature cache). ``budget_minutes`` runs the
    cheapest combinations first and skips any whose estimated time no longer fits, saying which.
    ``on_run`` receives a line as each run starts (the CLI prints it); ``progress`` is kept for symmetry with fit.
    ``workers`` > 1 runs that many runs at once in processes (transferkit.compare_workers): ``on_run`` also gets
    the CPU split and a line as each run finishes; results are those of the sequential loop, in the same order.
    Every split is checked once, before any run, by fit's data doctor (``strict``, ``dedupe`` and ``max_pixels``
    as in fit): unreadable inputs are left out of every run and listed (``skipped``, ``n_skipped``), and a fatal
    finding stops the comparison before it trains anything.
    """
    refuse_launch("compare", "Run its cells side by side with compare --workers N instead, or train one model in "
                             "several processes with transferkit fit --processes N.")
    for name in strategies:
        build_strategy(name)  # fail on a typo before hours of runs
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"The 'seeds' parameter of compare must be an int >= 1. Got {seeds!r} instead.")
    cores = compare_workers.available_cores()
    if not isinstance(workers, int) or not 1 <= workers <= max(cores, 1):
        raise ConfigError(f"The 'workers' parameter of compare (--workers) must be an int from 1 to {cores}, the CPU "
                          f"cores here (workers x torch threads <= cores). Got {workers!r} instead.")
    base = FitConfig.from_options(**options)
    _check_target_data(base, strategies)
    out_dir = Path(out or f"runs/compare-{datetime.now():%Y%m%d-%H%M%S}")
    splits, data_report = _comparison_splits(data, base)
    base = replace(base, task=data_report.stats["task"])  # given, or detected once for every run
    for k in labels_per_class:  # a combination the task refuses fails here, before any run
        for name in strategies:
            task_choice.check_options(replace(base, strategy=name, labels_per_class=k))
    plan = sorted(((k, s, seed) for k in labels_per_class for s in strategies for seed in range(seeds)),
                  key=lambda item: (_k_key(item[0]), _cost_rank(item[1]), item[2]))
    if min(workers, len(plan)) > 1:
        runs, skipped = _run_in_workers(splits, base, out_dir, plan, workers, budget_minutes, on_run)
    else:
        runs, skipped = _run_in_turn(splits, base, out_dir, plan, budget_minutes, on_run)
    runs += _reference_runs(splits, base, labels_per_class, seeds)
    return _write_comparison(out_dir, data, base, splits, runs, skipped, strategies, seeds, data_report)


def _check_target_data(base: FitConfig, strategies: list[str]) -> None:
    """--target-data goes to the strategies that adapt to it (dann, coral, mmd, ...), the others train on the source
    alone: source-only vs adapted on identical splits. Refused when no strategy uses it, or one needs it."""
    users = [name for name in strategies if STRATEGIES[name].needs_target]
    if base.target_data is not None and not users:
        raise ConfigError(f"--target-data is used by --strategies {' or '.join(domain.target_strategies())}, none of which "
                          f"is compared here ({', '.join(strategies)}); add one or drop --target-data.")
    if base.target_data is None and users:
        raise ConfigError(f"--strategies {', '.join(users)} need --target-data UNLABELED_TARGET: the unlabeled inputs "
                          "of the domain to adapt to (their test data: --test-data).")


def _cell_config(base: FitConfig, out_dir: Path, k: int | None, strategy: str, seed: int) -> FitConfig:
    target = base.target_data if STRATEGIES[strategy].needs_target else None  # source-only runs: no target
    return replace(base, strategy=strategy, labels_per_class=k, val_data=None, test_data=None, target_data=target,
                   out=str(out_dir / "runs" / f"{strategy}-k{k or 'all'}-seed{seed}"),
                   train=replace(base.train, seed=seed, progress=False))


def _cell_name(k: int | None, strategy: str, seed: int) -> str:
    return f"{strategy} at {k or 'all'} labels/class, seed {seed}"


def _record(cfg: FitConfig, result: api.FitResult) -> dict[str, Any]:
    """A finished run as compare.json lists it (its test metrics, wall time and trainable parameters)."""
    first, second = METRICS[cfg.task]
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    return {"strategy": cfg.strategy, "labels_per_class": cfg.labels_per_class, "seed": cfg.train.seed,
            "run_dir": str(result.run_dir), first: result.metrics["test"][first],
            second: result.metrics["test"][second], "seconds": summary["wall_seconds"],
            "trainable_params": summary["trainable_params"]}


def _run_in_turn(splits: DataSplits, base: FitConfig, out_dir: Path, plan: list[tuple[int | None, str, int]],
                 budget_minutes: float | None, on_run: Callable[[str], None] | None) -> tuple[list, list[str]]:
    """The plan's runs one after another in this process: (finished run records, skip reasons), in plan order."""
    runs, skipped, seconds_per_example = [], [], {}
    start = time.perf_counter()
    for k, strategy, seed in plan:
        cfg = _cell_config(base, out_dir, k, strategy, seed)
        n_train = len(api.prepare_data(splits, cfg).train)
        estimate = n_train * seconds_per_example.get(strategy, max(seconds_per_example.values(), default=0.0))
        if budget_minutes is not None and time.perf_counter() - start + estimate > 60 * budget_minutes:
            skipped.append(compare_workers.over_budget(_cell_name(k, strategy, seed), estimate, budget_minutes))
            continue
        if on_run is not None:
            on_run(_cell_name(k, strategy, seed))
        try:
            result = api.fit(splits, config=cfg)
        except TrainingDiverged as error:  # one run diverging in its first epoch does not end the comparison
            skipped.append(f"{_cell_name(k, strategy, seed)}: {error}")
            continue
        runs.append(_record(cfg, result))
        seconds_per_example[strategy] = runs[-1]["seconds"] / max(n_train, 1)
    return runs, skipped


def _run_in_workers(splits: DataSplits, base: FitConfig, out_dir: Path, plan: list[tuple[int | None, str, int]],
                    workers: int, budget_minutes: float | None,
                    on_run: Callable[[str], None] | None) -> tuple[list, list[str]]:
    """The same runs, ``workers`` at a time in processes; records and skip reasons come back in plan order."""
    cells = []
    for index, (k, strategy, seed) in enumerate(plan):
        cfg = _cell_config(base, out_dir, k, strategy, seed)
        cells.append(compare_workers.Cell(index, _cell_name(k, strategy, seed), cfg,
                                          len(api.prepare_data(splits, cfg).train)))
    outcome = compare_workers.run_parallel(splits, cells, min(workers, len(cells)), budget_minutes,
                                           on_run or (lambda line: None))
    runs = [_record(cell.config, outcome.results[cell.index]) for cell in cells if cell.index in outcome.results]
    return runs, [outcome.skipped[cell.index] for cell in cells if cell.index in outcome.skipped]


REFERENCE_MODELS = {"regression": "ridge regression", "multilabel": "one-vs-rest logistic regression",
                    "tokens": "a linear-chain CRF (sklearn-crfsuite) on hand-made word features"}


def _cost_rank(strategy: str) -> int:
    """Registry order runs from the cheapest (linear-probe, head) to the costliest (l2sp, scratch)."""
    return list(STRATEGIES).index(strategy)


def _k_key(k: int | None) -> float:
    return float("inf") if k is None else float(k)


def _comparison_splits(data: DataInput, cfg: FitConfig) -> tuple[DataSplits, DataReport]:
    """Train/val/test fixed once for the whole comparison, checked by the data doctor before any run."""
    checked, report = api.check_data(data, cfg)  # raises on a fatal finding: nothing has trained yet
    train, test = checked.train, checked.test
    if test is None:
        train, test = held_out_split(train, 0.2, 0, report.stats["task"])
    return DataSplits(train=train, val=checked.val, test=test), report


def _reference_runs(splits: DataSplits, base: FitConfig, ks: list[int | None], seeds: int) -> list[dict[str, Any]]:
    """The plain reference (pixels/TF-IDF logistic or ridge regression; the word-feature CRF for tokens) on
    exactly the examples each (K, seed) run trained on."""
    runs = []
    for k in ks:
        for seed in range(seeds):
            prepared = api.prepare_data(splits, replace(base, labels_per_class=k, val_data=None, test_data=None,
                                                    train=replace(base.train, seed=seed)))
            begin = time.perf_counter()
            m = reference_metrics(prepared.train, prepared.test, prepared.label_map, seed)
            first, second = METRICS[prepared.task]
            runs.append({"strategy": reference_name(prepared.modality, prepared.task), "labels_per_class": k,
                         "seed": seed, first: m[first], second: m[second],
                         "seconds": time.perf_counter() - begin, "trainable_params": None})
    return runs


def _write_comparison(out_dir: Path, data: DataInput, base: FitConfig, splits: DataSplits, runs: list[dict[str, Any]],
                      skipped: list[str], strategies: list[str], seeds: int, data_report: DataReport) -> dict[str, Any]:
    task = base.task or "classification"
    reference = reference_name(splits.train.modality, task)
    rows = summarize(runs, task)
    scratch = "scratch" if "scratch" in strategies else None
    model = REFERENCE_MODELS.get(task, "logistic regression")
    summary = {
        "title": out_dir.name, "data": api.data_reference(data) or "in memory",
        "model": base.model if base.model != "auto" else DEFAULT_FOR_MODALITY[splits.train.modality],
        "seeds": seeds, "n_test": len(splits.test), "rows": rows, "gains": gains(rows, scratch, reference, task),
        "skipped": skipped, "series": series(rows) if task == "classification" else {}, "reference_name": reference,
        "task": task, "metric": METRICS[task][0], "second_metric": METRICS[task][1],
        "n_skipped": data_report.n_skipped, "skipped_inputs": data_report.skipped(),
        "config": {"strategies": ", ".join(strategies), **asdict(base.train), "image_size": base.image_size,
                   "reference": f"{reference}: {model} on the same training examples, no pretrained weights"},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "compare.json", {**summary, "runs": runs})
    atomic_write_json(out_dir / "data_report.json", data_report.to_dict())
    atomic_write_text(out_dir / "compare.html", render_compare(summary))
    return {**summary, "runs": runs, "out": str(out_dir)}
