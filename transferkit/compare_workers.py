"""compare --workers N: the comparison's runs in N processes at once (concurrent.futures, 'spawn' context).

A top-level module beside compare (each worker calls api.fit). Workers are spawned, not forked: a forked child
runs torch on one thread (transferkit.core.processes) and cannot use CUDA, while a spawned one starts clean and
sets its own share of the CPU: torch threads = min(the parent's torch threads, cores // N), so N x threads <=
cores (HF tokenizers' Rayon pool gets the same number). The data splits travel once to each worker; every run
gets the FitConfig the sequential loop would build, so its results are the sequential run's (bit-identical when
the thread counts match; more threads can change float sums in the last bits).

Signals: workers ignore Ctrl-C (the parent gets it and kills them) and an idle worker ignores SIGTERM. SIGTERM to
the parent starts no new run and sets an event each worker watches; the watcher sends its own process SIGTERM, so
a run in its training loop writes a checkpoint and stops as `fit` does (TrainingInterrupted), a run elsewhere
stops at once, and a worker still starting is never killed (that would break the pool and kill the others before
they checkpoint). The parent then raises TrainingInterrupted naming the runs to resume. A run that diverges is
returned as a skip reason, exactly as the sequential loop reports it; any other error stops the other workers
and is raised in the parent.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import torch

from transferkit import api
from transferkit.api import FitResult
from transferkit.config import FitConfig
from transferkit.core.errors import TrainingDiverged, TrainingInterrupted
from transferkit.data.examples import DataSplits


@dataclass(frozen=True)
class Cell:
    """One run of the plan: its position (results keep plan order), its progress name and its fit config."""

    index: int
    name: str
    config: FitConfig
    n_train: int


@dataclass
class Outcome:
    """What the parallel runs gave, by plan index: finished runs and skip reasons (over budget, diverged)."""

    results: dict[int, FitResult]
    skipped: dict[int, str]


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes: never more than the parent uses, and workers x threads
    <= cores."""
    return max(1, min(torch.get_num_threads(), available_cores() // workers))


def split_line(workers: int, threads: int) -> str:
    """The line that states how the CPU is shared."""
    return (f"{workers} worker processes x {threads} torch thread{'s' if threads != 1 else ''} each "
            f"({available_cores()} CPU cores)")


_SPLITS: DataSplits | None = None
_STOP: Any = None  # the parent's multiprocessing Event: set on SIGTERM


def _start_worker(splits: DataSplits, threads: int, stop: Any) -> None:
    """Runs once in each spawned worker, before its first run."""
    global _SPLITS, _STOP
    _SPLITS, _STOP = splits, stop
    torch.set_num_threads(threads)
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # read when a tokenizer first runs in parallel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # idle: nothing to stop
    threading.Thread(target=_stop_when_asked, args=(stop,), daemon=True).start()


def _stop_when_asked(stop: Any) -> None:
    stop.wait()
    os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread: fit's checkpoint-then-stop, or _stop_run


def _stop_run(signum: int, frame: Any) -> None:
    raise TrainingInterrupted("Stopped by SIGTERM outside the training loop (no checkpoint to resume from).")


def _run_cell(config: FitConfig) -> FitResult:
    """One run in a worker; inside train's loop, fit's own SIGTERM handling (checkpoint, then stop) applies."""
    signal.signal(signal.SIGTERM, _stop_run)
    try:
        if _STOP is not None and _STOP.is_set():
            raise TrainingInterrupted("Stopped by SIGTERM before it started.")
        return api.fit(_SPLITS, config=config)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Workers:
    """The process pool plus the parent's SIGTERM handler (main thread only, as fit's StopRequest)."""

    def __init__(self, splits: DataSplits, workers: int, threads: int):
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                        initargs=(splits, threads, self.stop))
        self.stop_requested, self._previous = False, None

    def __enter__(self) -> _Workers:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stop_requested = True
        self.stop.set()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every live worker (Python 3.14's kill_workers is the public form of this)."""
        for process in list((self.pool._processes or {}).values()):
            try:
                os.kill(process.pid, signum)
            except (ProcessLookupError, TypeError):  # already gone, or not started yet (pid None)
                pass

    def __exit__(self, kind: type[BaseException] | None, *exc: Any) -> None:
        if kind is not None:  # an error, Ctrl-C: no run is worth waiting for
            self.signal(signal.SIGKILL)
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def run_parallel(splits: DataSplits, plan: list[Cell], workers: int, budget_minutes: float | None,
                 say: Callable[[str], None]) -> Outcome:
    """Run ``plan`` in order on ``workers`` processes, at most ``workers`` at a time; a run starts when a worker
    is free and only if the elapsed time plus its estimate (its training examples x the seconds per example its
    strategy took so far, measured under the same sharing) still fits ``budget_minutes``."""
    threads = threads_per_worker(workers)
    say(split_line(workers, threads))
    outcome, interrupted = Outcome({}, {}), []
    seconds_per_example: dict[str, float] = {}
    todo, running = list(plan), {}
    start = time.perf_counter()
    with _Workers(splits, workers, threads) as pool:
        while todo or running:
            while todo and len(running) < workers and not pool.stop_requested:
                cell = todo.pop(0)
                strategy = cell.config.strategy
                estimate = cell.n_train * seconds_per_example.get(strategy, max(seconds_per_example.values(),
                                                                                 default=0.0))
                if budget_minutes is not None and time.perf_counter() - start + estimate > 60 * budget_minutes:
                    outcome.skipped[cell.index] = over_budget(cell.name, estimate, budget_minutes)
                    continue
                running[pool.pool.submit(_run_cell, cell.config)] = cell  # a worker is free: it starts now
                say(cell.name)
            finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = running.pop(future)
                result = _collect(future, cell, outcome, pool.stop_requested, interrupted)
                if result is not None:
                    seconds = _wall_seconds(result)
                    seconds_per_example[cell.config.strategy] = seconds / max(cell.n_train, 1)
                    say(f"finished {cell.name} in {seconds:.1f} s")
            if pool.stop_requested and not running:
                break
    if pool.stop_requested:
        raise TrainingInterrupted(f"Stopped by SIGTERM after {len(outcome.results)} of {len(plan)} runs; no "
                                  f"comparison was written. " + "; ".join(interrupted))
    return outcome


def _collect(future: Future, cell: Cell, outcome: Outcome, stopping: bool, interrupted: list[str]) -> FitResult | None:
    """A finished future into ``outcome``; a divergence is a skip reason as in the sequential loop."""
    try:
        result = future.result()
    except TrainingDiverged as error:
        outcome.skipped[cell.index] = f"{cell.name}: {error}"
        return None
    except (TrainingInterrupted, BrokenProcessPool) as error:
        if not stopping:
            raise
        why = error if isinstance(error, TrainingInterrupted) else "its worker ended before the run finished."
        interrupted.append(f"{cell.name}: {why}")
        return None
    outcome.results[cell.index] = result
    return result


def over_budget(name: str, estimate: float, budget_minutes: float) -> str:
    return f"{name}: about {estimate:.0f} s estimated, over the {budget_minutes} min budget"


def _wall_seconds(result: FitResult) -> float:
    return float(json.loads((result.run_dir / "metrics.json").read_text())["wall_seconds"])
