"""tune: hyper-parameter search with Optuna over a strategy's search space (strategies/search.py), then the best
configuration re-fit as a normal run (bundle + report) beside tune.json and the plots.

A top-level module beside api, like compare: each trial is an ``api.fit`` on the training and validation splits
only (the test split is never read while searching: trials get data without it, and no --test-data), scored by
the task's own selection metric on validation, reporting it after every epoch through fit's ``on_epoch_end``
so the pruner can stop a poor trial (optuna.TrialPruned ends that fit before it writes a bundle). A trial
works in OUT/trials/trial-N, removed when it ends; its numbers live in the study.

The study lives in OUT/study.db (SQLite) unless ``storage`` names a shared one: an RDB URL (postgresql://,
mysql://, sqlite:///) or a journal file path (Optuna's JournalStorage, file-locked). Any number of workers
running the same command on one storage cooperate on one study of ``trials`` finished trials in total (one more
per extra worker when several finish at once), and running the command again continues the study to that
total. Only a run with ``refit`` (the default) re-fits the best: distributed workers pass refit=False
(--no-refit), and one last plain run — which finds the trials done and runs none — re-fits.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from transferkit import api, task_choice
from transferkit.api import DataInput
from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from transferkit.core.io import atomic_write_json, atomic_write_text
from transferkit.data.examples import DataSplits
from transferkit.evaluate.metrics import headline
from transferkit.evaluate.tune_plots import plot_history, plot_importances
from transferkit.strategies import STRATEGIES, build_strategy
from transferkit.strategies.search import SEARCH_SPACES
from transferkit.tasks import get_task
from transferkit.train.config import TrainConfig
from transferkit.train.engine import refuse_launch

PRUNERS = ("median", "hyperband", "none")
FINISHED = ("COMPLETE", "PRUNED")  # the states that count toward --trials
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))
SELECTION_NOTE = ("Validation only: every trial was fit on the training split and scored on the validation split; "
                  "the test split was never read during the search. Only the re-fit of the best configuration "
                  "evaluated it, once.")


def tune(data: DataInput, strategy: str, trials: int = 20, timeout_minutes: float | None = None,
         storage: str | None = None, study: str | None = None, out: str | Path | None = None,
         pruner: Any = "median", refit: bool = True, on_trial: Callable[[str], None] | None = None,
         **options: Any) -> dict[str, Any]:
    """Search ``strategy``'s space on ``data`` for ``trials`` finished trials in total (COMPLETE or PRUNED), then
    re-fit the best into ``out`` (bundle, report) unless ``refit`` is False; returns what tune.json holds.

    ``options`` are fit's (model, epochs, lr, strategy_options, ...): an option given here is fixed and leaves the
    search space. ``pruner``: median | hyperband | none, or an optuna pruner. The first trial of a new study is
    the default configuration, so tune.json says how much the search gained on validation.
    """
    import optuna

    refuse_launch("tune", "To search on several GPUs or machines, start one tune worker per GPU or machine on one "
                          "shared study instead (the same command with --storage postgresql://..., mysql://... or a "
                          "journal file, and --no-refit; CUDA_VISIBLE_DEVICES picks each worker's GPU), then one "
                          "plain run to re-fit the best.")
    base = FitConfig.from_options(strategy=strategy, **options)
    space = _space(strategy)
    if not isinstance(trials, int) or trials < 0:
        raise ConfigError(f"The 'trials' parameter of tune must be an int >= 0. Got {trials!r} instead.")
    out_dir = Path(out or f"runs/tune-{strategy}-{datetime.now():%Y%m%d-%H%M%S}")
    out_dir.mkdir(parents=True, exist_ok=True)
    splits, report = api.check_data(_without_test(data, base), replace(base, val_data=None, test_data=None))
    base = replace(base, task=report.stats["task"])
    task_choice.check_options(base)
    task = get_task(base.task)
    fixed = _fixed_params(space, options)
    storage_obj, storage_name = _open_storage(storage, out_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study or f"transferkit-{strategy}"
    the_study = optuna.create_study(storage=storage_obj, study_name=name, load_if_exists=True,
                                    direction="maximize" if task.higher_is_better else "minimize",
                                    pruner=_pruner(pruner))
    _check_study(the_study, base, data, storage_name)
    if storage is None:  # embedded: no other worker, so a RUNNING trial is one a killed run left behind
        _fail_leftovers(the_study)
    done = _finished(the_study)
    # embedded: seeded by the trials before, so a resumed study draws new points; shared: each worker its own
    the_study.sampler = optuna.samplers.TPESampler(seed=None if storage else base.train.seed * 100_003 + len(done))
    if not the_study.trials:
        defaults = {k: v for k, v in space(_Defaults(base, fixed)).items() if k not in fixed}
        the_study.enqueue_trial(defaults, user_attrs={"default_config": True}, skip_if_exists=True)
    if trials > len(done):
        _run_trials(the_study, _Objective(base, space, fixed, splits, out_dir / "trials", task.selection_metric,
                                          on_trial), trials, len(done), timeout_minutes)
    summary = _summary(the_study, storage_name, task.selection_metric, trials)
    summary["out"] = str(out_dir)
    summary["plots"] = _plots(the_study, summary, task, out_dir)
    if refit:
        summary["refit"] = _refit(the_study, base, data, out_dir, summary)
    atomic_write_json(out_dir / "tune.json", summary)
    return summary


def _run_trials(study: Any, objective: _Objective, trials: int, done: int, timeout_minutes: float | None) -> None:
    """Trials until the study has ``trials`` finished ones (this process runs at most the ones missing when it
    started). A trial that diverges in its first epoch fails and the search goes on; SIGTERM stops the search."""
    import optuna

    try:
        study.optimize(objective, n_trials=trials - done, timeout=60 * timeout_minutes if timeout_minutes else None,
                       catch=(TrainingDiverged,), gc_after_trial=True,
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=_states(FINISHED))])
    except TrainingInterrupted as error:  # the trial is recorded as failed; its folder is gone
        raise TrainingInterrupted(f"Stopped by SIGTERM during a trial of study '{study.study_name}'; run the same "
                                  "command again to continue the study.") from error


def _fail_leftovers(study: Any) -> None:
    """Mark trials a killed run left RUNNING as FAIL, so they neither count as in progress nor block the re-fit."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


def _space(strategy: str) -> Callable[[Any], dict[str, Any]]:
    build_strategy(strategy)  # an unknown name: the registry's error with the valid names
    cls = STRATEGIES[strategy]
    space = SEARCH_SPACES[strategy]
    if not cls.trains_with_loop or not space(_Names()):
        raise ConfigError(f"The {strategy} strategy has nothing to tune: {space.__doc__.strip()} Tune a strategy "
                          f"that trains, e.g. --strategy head or --strategy finetune.")
    return space


def _fixed_params(space: Callable[[Any], dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """The space's parameters the user set (a fit option or a strategy option): they are not searched."""
    names = set(space(_Names()))
    given = {**options, **(options.get("strategy_options") or {})}
    return {k: v for k, v in given.items() if k in names}


class _Names:
    """A stand-in trial that answers every suggestion with its low value: what a space's names are."""

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return low

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return low

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return choices[0]


class _Defaults(_Names):
    """Answers with the configuration fit would use: the user's options, else the configs' defaults."""

    def __init__(self, base: FitConfig, fixed: dict[str, Any]):
        self.values = {f.name: getattr(base.train, f.name) for f in fields(TrainConfig)}
        self.values.update(vars(build_strategy(base.strategy, base.strategy_options).config), **fixed)

    def suggest_float(self, name: str, *_: Any, **__: Any) -> float:
        return self.values[name]

    suggest_int = suggest_float

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.values[name]


class _Suggest:
    """The Optuna trial with the user's fixed parameters answered without searching them."""

    def __init__(self, trial: Any, fixed: dict[str, Any]):
        self.trial, self.fixed = trial, fixed

    def suggest_float(self, name: str, low: float, high: float, **kw: Any) -> float:
        return self.fixed[name] if name in self.fixed else self.trial.suggest_float(name, low, high, **kw)

    def suggest_int(self, name: str, low: int, high: int, **kw: Any) -> int:
        return self.fixed[name] if name in self.fixed else self.trial.suggest_int(name, low, high, **kw)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.fixed[name] if name in self.fixed else self.trial.suggest_categorical(name, choices)


def configured(base: FitConfig, params: dict[str, Any], out: Path, search: bool) -> FitConfig:
    """``base`` with a trial's parameters (TrainConfig fields to the loop, the rest to the strategy). A search
    trial has no test data, no before-vs-after probe and no progress bars."""
    train = replace(base.train, **{k: v for k, v in params.items() if k in TRAIN_FIELDS},
                    **({"progress": False} if search else {}))
    strategy_options = {**base.strategy_options, **{k: v for k, v in params.items() if k not in TRAIN_FIELDS}}
    cfg = replace(base, train=train, strategy_options=strategy_options, out=str(out))
    return replace(cfg, baseline=False, val_data=None, test_data=None) if search else cfg


class _Objective:
    """One trial: fit on train/val, report each epoch's validation score, return the best epoch's."""

    def __init__(self, base: FitConfig, space: Callable[[Any], dict[str, Any]], fixed: dict[str, Any],
                 splits: DataSplits, trials_dir: Path, metric: str, on_trial: Callable[[str], None] | None):
        self.base, self.space, self.fixed, self.splits = base, space, fixed, splits
        self.trials_dir, self.metric, self.on_trial = trials_dir, metric, on_trial
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, trial: Any) -> float:
        params = self.space(_Suggest(trial, self.fixed))
        trial.set_user_attr("worker", self.worker)
        run_dir = self.trials_dir / f"trial-{trial.number}"
        if self.on_trial is not None:
            self.on_trial(f"trial {trial.number}: {', '.join(f'{k}={_short(v)}' for k, v in params.items())}")
        start = time.perf_counter()
        try:
            result = api.fit(self.splits, config=configured(self.base, params, run_dir, search=True),
                             on_epoch_end=lambda epoch, row: self._report(trial, epoch, row))
            summary = json.loads((result.run_dir / "metrics.json").read_text())
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        best = next(row for row in result.history if row["epoch"] == summary["best_epoch"])
        trial.set_user_attr("best_epoch", summary["best_epoch"])
        trial.set_user_attr("val", headline(summary["val"]))
        return float(best[self.metric])

    def _report(self, trial: Any, epoch: int, row: dict[str, Any]) -> None:
        import optuna

        trial.report(float(row[self.metric]), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.metric} {row[self.metric]:.4f}")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _without_test(data: DataInput, cfg: FitConfig) -> DataSplits:
    """Train and validation as fit reads them (``val_data`` as the validation split), never the test split."""
    columns = task_choice.text_columns(cfg)
    splits = api.as_splits(data, columns, encoding_errors="replace", strict_tags=cfg.strict)
    val = api.as_splits(cfg.val_data, columns, encoding_errors="replace", strict_tags=cfg.strict).train \
        if cfg.val_data else splits.val
    return DataSplits(splits.train, val, None)


def _open_storage(storage: str | None, out_dir: Path) -> tuple[Any, str]:
    """(Optuna storage, how tune.json names it): an RDB URL, a journal file path, or OUT/study.db."""
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    if "://" not in url:  # a journal file: append-only, locked per write; works on a shared file system
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url)), url
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}  # workers wait for the lock
    try:
        return RDBStorage(url, engine_kwargs=kwargs), url
    except ModuleNotFoundError as error:
        raise ConfigError(f"--storage {url}: the database driver '{error.name}' is not installed (PostgreSQL: "
                          f"pip install psycopg2-binary; MySQL: pip install pymysql).") from error


def _pruner(pruner: Any) -> Any:
    import optuna

    if not isinstance(pruner, str):
        return pruner  # an optuna pruner object, from Python
    if pruner == "median":  # from the 2nd epoch, below the median of earlier trials at that epoch, once 3 finished
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"The 'pruner' parameter of tune must be one of {', '.join(PRUNERS)}. Got {pruner!r} instead.")


def _check_study(study: Any, base: FitConfig, data: DataInput, storage: str) -> None:
    """A study belongs to one (data, task, model, strategy): a second command on the same name continues it only
    if they agree, else it would mix scores of different problems."""
    identity = {"data": api.data_reference(data), "task": base.task, "model": base.model, "strategy": base.strategy}
    recorded = study.user_attrs.get("transferkit")
    if recorded is None:
        study.set_user_attr("transferkit", identity)
    elif recorded != identity:
        differs = ", ".join(f"{k} {recorded.get(k)!r} (now {v!r})" for k, v in identity.items() if recorded.get(k) != v)
        raise ConfigError(f"Study '{study.study_name}' in {storage} was started with {differs}; continue it with the "
                          f"same settings, or start another with --study NAME.")


def _states(names: tuple[str, ...]) -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return tuple(TrialState[n] for n in names)


def _finished(study: Any) -> list[Any]:
    return study.get_trials(deepcopy=False, states=_states(FINISHED))


def _summary(study: Any, storage: str, metric: str, trials: int) -> dict[str, Any]:
    rows = [{"number": t.number, "state": t.state.name, "value": t.value if t.value is not None else
             (t.intermediate_values[t.last_step] if t.last_step is not None else None),
             "params": t.params, "epochs_reported": len(t.intermediate_values), **t.user_attrs}
            for t in study.get_trials(deepcopy=False)]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = study.best_trial if complete else None
    default = next((r for r in rows if r.get("default_config")), None)
    return {"study": study.study_name, "storage": storage, "direction": study.direction.name.lower(),
            "metric": metric, "selection": SELECTION_NOTE, "trials_requested": trials,
            "counts": {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
            "default": None if default is None else {k: default[k] for k in ("number", "state", "value", "params")},
            "trials": rows}


def _plots(study: Any, summary: dict[str, Any], task: Any, out_dir: Path) -> dict[str, Any]:
    """The optimisation history (always) and the parameter importances (optuna's fANOVA, from 2 complete trials
    with a varying parameter; the shares go into tune.json too)."""
    import optuna

    plots = {"history": plot_history(summary["trials"], summary["metric"], task.higher_is_better,
                                     out_dir / "optimization_history.png").name}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as error:  # too few complete trials, or nothing varied
        plots["importances_note"] = f"no parameter importances: {error}"
        return plots
    summary["importances"] = {k: round(float(v), 4) for k, v in importances.items()}
    if importances:
        plots["importances"] = plot_importances(summary["importances"], out_dir / "param_importances.png").name
    return plots


def _refit(study: Any, base: FitConfig, data: DataInput, out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The best trial's configuration fitted as a normal run in ``out_dir``: bundle, report, and the test split
    evaluated for the first and only time."""
    if summary["best"] is None:
        raise ConfigError(f"No trial of study '{study.study_name}' completed ({summary['counts']}), so there is no "
                          f"configuration to re-fit; run more trials (--trials) or see tune.json.")
    if summary["counts"]["RUNNING"]:
        summary["refit_note"] = (f"{summary['counts']['RUNNING']} trial(s) were still running in other workers; the "
                                 "re-fit uses the best finished one.")
    params = summary["best"]["params"]
    result = api.fit(data, config=configured(base, params, out_dir, search=False))
    metrics = {split: headline(m) for split, m in result.metrics.items()}
    _report_note(out_dir / "report.md", summary, params)
    return {"params": params, "trial": summary["best"]["number"], "bundle": str(result.bundle_dir),
            "report": str(out_dir / "report.md"), "metrics": metrics}


def _report_note(report: Path, summary: dict[str, Any], params: dict[str, Any]) -> None:
    """A section at the end of the re-fit's report.md: where the configuration came from, and how it was chosen."""
    if not report.is_file():
        return
    default = summary["default"]
    lines = ["", "## Hyper-parameter search", "",
             f"This run re-fits trial {summary['best']['number']} of Optuna study '{summary['study']}' "
             f"({summary['counts']['COMPLETE']} complete, {summary['counts']['PRUNED']} pruned; {summary['storage']}): "
             + ", ".join(f"{k}={_short(v)}" for k, v in params.items()) + ".",
             f"Its validation {summary['metric']} in the search: {summary['best']['value']:.4f}"
             + (f"; the default configuration's (trial {default['number']}): {default['value']:.4f}."
                if default and default["value"] is not None else "."), "", SELECTION_NOTE, ""]
    atomic_write_text(report, report.read_text(encoding="utf-8") + "\n".join(lines))
