"""`transferkit tune` (transferkit.tune): Optuna trials on validation only, pruning through fit's per-epoch hook,
resume, two workers on one storage, and the re-fit of the best as a normal run.

Real runs of the `head` strategy on offline MiniLM with 30 short BBC texts, 1 epoch per trial (seconds each).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, bbc_texts, write_text_csv
from transferkit import api
from transferkit.core.errors import ConfigError, DataError
from transferkit.tune import _pruner, tune

FAST = dict(model="minilm", epochs=1, progress=False)


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.csv (3 topics x 10), test.csv (3 x 4, other articles) and broken_test.csv (no text column: reading it
    is a DataError)."""
    root = tmp_path_factory.mktemp("tune-texts")
    train = write_text_csv(root / "train.csv", *bbc_texts(10))
    test = write_text_csv(root / "test.csv", *bbc_texts(4, offset=10))
    broken = root / "broken_test.csv"
    broken.write_text("body,label\nsome words,business\n", encoding="utf-8")
    return {"train": train, "test": test, "broken": broken}


def test_tune_refits_the_best_as_a_normal_run(texts: dict[str, Path], tmp_path: Path):
    """tune.json (every trial, the default configuration as trial 0, the best), plots, and OUT/bundle + report from
    the re-fit, which evaluates the test split once; the trials' own folders are gone."""
    out = tmp_path / "X"
    summary = tune(str(texts["train"]), "head", trials=2, out=out, test_data=str(texts["test"]), **FAST)
    saved = json.loads((out / "tune.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["metric"] == "val_macro_f1" and saved["direction"] == "maximize"
    assert saved["storage"] == f"sqlite:///{(out / 'study.db').resolve()}"
    assert [t["number"] for t in saved["trials"]] == [0, 1] and saved["counts"]["COMPLETE"] == 2
    assert saved["trials"][0]["default_config"] and saved["default"]["params"] == {"lr": 1e-3, "weight_decay": 0.05}
    assert "epochs" not in saved["trials"][1]["params"]  # given (--epochs 1): fixed, not searched
    assert "test split was never read" in saved["selection"]
    best = max(saved["trials"], key=lambda t: t["value"])
    assert saved["best"]["number"] == best["number"] and saved["refit"]["params"] == best["params"]
    assert (out / "bundle" / "transferkit.json").is_file() and (out / "optimization_history.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 12 and saved["refit"]["metrics"]["test"]["n"] == 12
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == best["params"]["lr"]
    assert config["train"]["weight_decay"] == best["params"]["weight_decay"]
    assert "## Hyper-parameter search" in (out / "report.md").read_text()
    assert not list((out / "trials").iterdir())


def test_trials_never_read_the_test_split_and_a_rerun_continues_the_study(texts: dict[str, Path], tmp_path: Path):
    """With a test file that fails when read, the search runs (no trial touches it); the re-fit is the first to
    read it. A second command on the same OUT continues the study to --trials finished trials in total (a trial a
    killed run left RUNNING is marked failed)."""
    out = tmp_path / "run"
    first = tune(str(texts["train"]), "head", trials=2, out=out, test_data=str(texts["broken"]), refit=False, **FAST)
    assert first["counts"]["COMPLETE"] == 2 and "refit" not in first
    with pytest.raises(DataError, match="broken_test.csv"):  # the re-fit reads the test split: here it fails
        tune(str(texts["train"]), "head", trials=2, out=out, test_data=str(texts["broken"]), **FAST)
    killed = optuna.load_study(study_name="transferkit-head", storage=first["storage"]).ask()  # a kill -9 leftover
    second = tune(str(texts["train"]), "head", trials=3, out=out, refit=False, **FAST)
    assert [(t["number"], t["state"]) for t in second["trials"]] == [(0, "COMPLETE"), (1, "COMPLETE"),
                                                                     (killed.number, "FAIL"), (3, "COMPLETE")]
    assert [t["params"] for t in second["trials"][:2]] == [t["params"] for t in first["trials"]]
    assert second["trials"][3]["params"] not in [t["params"] for t in first["trials"]]  # a new point, not a replay
    with pytest.raises(ConfigError, match="started with strategy 'head'"):  # same study name, another problem
        tune(str(texts["train"]), "lora", trials=3, out=out, study="transferkit-head", refit=False, **FAST)


class PruneTrialOne(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


def test_a_pruned_trial_stops_at_its_epoch_without_a_bundle(texts: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """The hook reports each epoch; when the pruner says so the fit stops there (TrialPruned), before the bundle."""
    bundles: list[Path] = []
    save = api.save_bundle
    monkeypatch.setattr(api, "save_bundle", lambda path, *a, **k: bundles.append(path) or save(path, *a, **k))
    summary = tune(str(texts["train"]), "head", trials=2, out=tmp_path / "p", pruner=PruneTrialOne(), refit=False,
                   **{**FAST, "epochs": 3})
    complete, pruned = summary["trials"]
    assert complete["state"] == "COMPLETE" and complete["epochs_reported"] == 3
    assert pruned["state"] == "PRUNED" and pruned["epochs_reported"] == 1  # stopped after its first epoch
    assert [p.parent.name for p in bundles] == ["trial-0"]


def test_median_pruner_stops_a_lagging_trial_from_epoch_two():
    """tune's median pruner on a stub objective: after 3 finished trials, a trial below their median at epoch 2
    stops there; epoch 1 (warm-up, noisy) never prunes."""
    study = optuna.create_study(direction="maximize", pruner=_pruner("median"))
    stopped: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        curve = [0.2, 0.1, 0.1] if trial.number == 3 else [0.6, 0.7, 0.8]
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if trial.should_prune():
                stopped.append(epoch)
                raise optuna.TrialPruned
        return curve[-1]

    study.optimize(objective, n_trials=4)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 + ["PRUNED"] and stopped == [2]
    with pytest.raises(ConfigError, match="median, hyperband, none"):
        _pruner("medain")


def test_nothing_to_tune_for_the_closed_form_probe(texts: dict[str, Path], tmp_path: Path):
    with pytest.raises(ConfigError, match="linear-probe strategy has nothing to tune"):
        tune(str(texts["train"]), "linear-probe", trials=2, out=tmp_path / "lp", **FAST)


@pytest.mark.slow
def test_two_workers_share_one_study(texts: dict[str, Path], tmp_path: Path, cli_env: dict[str, str]):
    """Two `transferkit tune` processes on one journal file: together they finish the study's trials, each trial
    run by exactly one of them (numbers 0..n-1, no gap, no repeat); then a plain run re-fits the best."""
    storage = tmp_path / "shared" / "study.log"
    env = {**cli_env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["tune", "--data", str(texts["train"]), "--model", "minilm", "--strategy", "head", "--epochs", "1",
            "--trials", "4", "--storage", str(storage), "--no-refit"]
    cli = [sys.executable, "-c", "from transferkit.cli import main; main()"]
    workers = [subprocess.Popen([*cli, *args, "--out", str(tmp_path / f"w{i}")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_, stderr) in zip(workers, outputs):
        assert w.returncode == 0, stderr
    study = optuna.load_study(study_name="transferkit-head", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))))
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers))) and 4 <= len(numbers) <= 5  # one extra if both finished at once
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    by_worker = {w.pid: [t.number for t in study.trials if t.user_attrs["worker"].endswith(f":{w.pid}")]
                 for w in workers}
    assert sorted(n for ns in by_worker.values() for n in ns) == numbers  # the union is the study, no repeats
    assert sum(t.user_attrs.get("default_config", False) for t in study.trials) == 1
    final = tune(str(texts["train"]), "head", trials=4, storage=str(storage), out=tmp_path / "best", **FAST)
    assert len(final["trials"]) == len(numbers) and final["refit"]["trial"] == study.best_trial.number
    assert (tmp_path / "best" / "bundle" / "transferkit.json").is_file()
