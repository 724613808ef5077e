"""`compare --workers N` (transferkit.compare_workers): the runs in N spawned processes give the sequential
results (compare.json and every run's metrics.json equal apart from timings), state the CPU split, report a
diverging run as the sequential loop does, and stop every worker on SIGTERM."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from tests.test_compare import run_main
from transferkit import compare_workers
from transferkit.compare import compare
from transferkit.core.errors import ConfigError, TrainingDiverged, TrainingInterrupted

OPTIONS = {"model": "efficientnet_lite0", "epochs": 1, "image_size": 32}
needs_two_cores = pytest.mark.skipif(compare_workers.available_cores() < 2, reason="--workers 2 needs 2 CPU cores")


def without_timings(value: Any) -> Any:
    """``value`` without its timings ('seconds', 'wall_seconds', 'seconds_mean', ...), recursively: the only fields
    allowed to differ."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def assert_same_results(one: Path, two: Path) -> None:
    saved_one, saved_two = (json.loads((p / "compare.json").read_text()) for p in (one, two))
    for run in saved_one["runs"] + saved_two["runs"]:
        run.pop("run_dir", None)
    assert without_timings(saved_two) == without_timings(saved_one)
    folders = sorted(p.name for p in (one / "runs").iterdir())
    assert folders == sorted(p.name for p in (two / "runs").iterdir())
    for name in folders:
        paths = [p / "runs" / name / "metrics.json" for p in (one, two)]
        assert paths[0].exists() == paths[1].exists(), name  # a diverged run writes none
        if paths[0].exists():
            metrics_one, metrics_two = (json.loads(p.read_text()) for p in paths)
            assert without_timings(metrics_two) == without_timings(metrics_one), name


@needs_two_cores
def test_two_workers_give_the_sequential_results(digits_folder: Path, tmp_path: Path, monkeypatch, capsys):
    compare(str(digits_folder), ["linear-probe", "head"], [None], seeds=2, out=tmp_path / "one" / "cmp",
            progress=False, **OPTIONS)
    code, stdout, stderr = run_main(["compare", "--data", str(digits_folder), "--strategies", "linear-probe,head",
                                     "--labels-per-class", "all", "--seeds", "2", "--workers", "2", "--model",
                                     "efficientnet_lite0", "--epochs", "1", "--image-size", "32", "--out",
                                     str(tmp_path / "two" / "cmp")], monkeypatch, capsys)
    assert code == 0, stderr
    assert_same_results(tmp_path / "one" / "cmp", tmp_path / "two" / "cmp")
    threads = compare_workers.threads_per_worker(2)
    assert f"[compare] {compare_workers.split_line(2, threads)}" in stderr  # progress goes to stderr
    assert f"2 worker processes x {threads} torch thread" in stderr
    for strategy in ("linear-probe", "head"):
        for seed in (0, 1):
            name = f"{strategy} at all labels/class, seed {seed}"
            assert stderr.index(f"[compare] {name}") < stderr.index(f"[compare] finished {name} in ")
    assert multiprocessing.active_children() == []


@needs_two_cores
def test_a_diverging_run_is_reported_as_the_sequential_loop_reports_it(digits_folder: Path, tmp_path: Path):
    """lr 1e30: the head's loss becomes nan in its first epoch (skipped with fit's reason, in the sequential
    loop's words: see test_compare.py); the closed-form linear probe is unaffected and kept."""
    summary = compare(str(digits_folder), ["linear-probe", "head"], [None], seeds=1, workers=2,
                      out=tmp_path / "cmp", progress=False, lr=1e30, **OPTIONS)
    assert len(summary["skipped"]) == 1
    assert summary["skipped"][0].startswith("head at all labels/class, seed 0: Training diverged at epoch 1, step ")
    assert "Try a lower learning rate (--lr, now 1e+30)" in summary["skipped"][0]
    assert [(r["strategy"], r["accuracy"] > 0.5) for r in summary["runs"]] == [("linear-probe", True),
                                                                                ("pixels-logreg", True)]
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["skipped"] == summary["skipped"]
    assert "Training diverged at epoch 1" in (tmp_path / "cmp" / "compare.html").read_text(encoding="utf-8")


@needs_two_cores
def test_sigterm_starts_no_new_run_and_stops_the_workers(digits_folder: Path, tmp_path: Path):
    """SIGTERM as the first run starts (its worker still importing): no other run starts, no worker is left."""
    lines: list[str] = []

    def on_run(line: str) -> None:
        lines.append(line)
        if line.endswith("seed 0"):
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"Stopped by SIGTERM after 0 of 4 runs; no comparison was written"):
        compare(str(digits_folder), ["linear-probe", "head"], [None], seeds=2, workers=2, out=tmp_path / "cmp",
                on_run=on_run, progress=False, **OPTIONS)
    assert signal.getsignal(signal.SIGTERM) == previous
    assert multiprocessing.active_children() == []
    assert not (tmp_path / "cmp" / "compare.json").exists()
    assert lines[1:] == ["linear-probe at all labels/class, seed 0"], lines


def test_sigterm_in_a_worker_stops_its_run_and_an_idle_worker_ignores_it(monkeypatch):
    """In the worker: SIGTERM during a run outside train's loop raises TrainingInterrupted at once (inside the loop
    fit's own handler checkpoints first); between runs it is ignored."""
    def fit(data, config):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(compare_workers.api, "fit", fit)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with pytest.raises(TrainingInterrupted, match="outside the training loop"):
            compare_workers._run_cell(None)  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------------ no processes


@pytest.mark.parametrize(("cores", "parent_threads", "workers", "expected"),
                         [(16, 16, 3, 5), (16, 16, 16, 1), (16, 2, 4, 2), (2, 1, 2, 1), (8, 8, 1, 8)])
def test_threads_per_worker_keep_workers_times_threads_within_the_cores(monkeypatch, cores, parent_threads, workers,
                                                                          expected):
    monkeypatch.setattr(compare_workers, "available_cores", lambda: cores)
    monkeypatch.setattr(compare_workers.torch, "get_num_threads", lambda: parent_threads)
    threads = compare_workers.threads_per_worker(workers)
    assert threads == expected
    assert workers * threads <= cores
    assert compare_workers.split_line(workers, threads).startswith(f"{workers} worker processes x {threads} torch")


def test_more_workers_than_cores_is_refused_before_any_run(digits_folder: Path, tmp_path: Path):
    cores = compare_workers.available_cores()
    with pytest.raises(ConfigError, match=rf"'workers' parameter of compare \(--workers\).*1 to {cores}.*"
                                          rf"Got {cores + 1} instead"):
        compare(str(digits_folder), ["linear-probe"], [None], workers=cores + 1, out=tmp_path / "cmp", **OPTIONS)
    assert not (tmp_path / "cmp").exists()


def _cell(index: int = 0) -> compare_workers.Cell:
    return compare_workers.Cell(index, "head at 5 labels/class, seed 0", config=None, n_train=12)  # type: ignore[arg-type]


def _failed(error: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(error)
    return future


def test_a_run_s_error_reaches_the_parent_unless_it_is_a_divergence_or_a_requested_stop():
    outcome, interrupted = compare_workers.Outcome({}, {}), []
    diverged = TrainingDiverged("Training diverged at epoch 1, step 2: the training loss became nan.")
    assert compare_workers._collect(_failed(diverged), _cell(3), outcome, False, interrupted) is None
    assert outcome.skipped == {3: f"head at 5 labels/class, seed 0: {diverged}"}
    with pytest.raises(RuntimeError, match="boom"):
        compare_workers._collect(_failed(RuntimeError("boom")), _cell(), outcome, True, interrupted)
    with pytest.raises(TrainingInterrupted):  # a worker stopped without a SIGTERM to the parent is an error
        compare_workers._collect(_failed(TrainingInterrupted("Stopped")), _cell(), outcome, False, interrupted)
    compare_workers._collect(_failed(BrokenProcessPool("gone")), _cell(), outcome, True, interrupted)
    assert interrupted == ["head at 5 labels/class, seed 0: its worker ended before the run finished."]
    assert outcome.results == {}
