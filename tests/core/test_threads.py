"""How many torch threads a process starts (transferkit.core.threads): the decision as a pure function of cores
and load, the /proc/stat reading, and the TRANSFERKIT_THREADS / OMP_NUM_THREADS overrides."""
from __future__ import annotations

import pytest

from transferkit.core import threads
from transferkit.core.errors import ConfigError
from transferkit.core.threads import CpuSample, busy_elsewhere, decide_threads


@pytest.mark.parametrize(("cores", "busy", "expected"), [
    (2, 0.0, 2),  # an idle 2-core machine: both cores
    (2, 0.3, 2),  # background noise does not halve it
    (2, 0.7, 1),  # a core mostly busy elsewhere: leave it
    (2, 1.0, 1),  # one busy torch job next to us (issue 17's case): one thread
    (2, 4.0, 1),  # oversubscribed: never fewer than one
    (16, 5.2, 11),
    (16, 0.0, 16),
    (1, 0.0, 1),
    (8, -1.0, 8),  # a negative reading (counter noise) counts as idle
])
def test_decide_threads(cores: int, busy: float, expected: int):
    assert decide_threads(cores, busy) == expected


def _sample(wall: float, busy: int, total: int, own: float, cpus: int = 2) -> CpuSample:
    return CpuSample(wall, busy, total, own, cpus)


def test_busy_elsewhere_subtracts_our_own_cpu_time():
    # 1 s on 2 CPUs = 200 jiffies, 150 busy: 1.5 cores busy, of which 0.5 core was us -> 1.0 elsewhere
    assert busy_elsewhere(_sample(10.0, 1000, 5000, 3.0), _sample(11.0, 1150, 5200, 3.5)) == pytest.approx(1.0)
    # we alone kept the machine busy: nothing elsewhere (never negative)
    assert busy_elsewhere(_sample(0.0, 0, 0, 0.0), _sample(1.0, 100, 200, 1.2)) == 0.0


def test_busy_elsewhere_is_none_without_a_reading():
    assert busy_elsewhere(CpuSample(0.0, None, None, 0.0, 2), _sample(1.0, 10, 20, 0.0)) is None
    assert busy_elsewhere(_sample(1.0, 10, 20, 0.0), _sample(1.0, 10, 20, 0.0)) is None  # no time passed


def test_sample_reads_this_machine():
    s = threads.sample()
    assert s.cpus >= 1 and s.own >= 0
    if s.busy is not None:
        assert 0 <= s.busy <= s.total


@pytest.mark.parametrize(("value", "expected"), [("", None), ("auto", None), ("3", 3), (" ALL ", "all")])
def test_override_values(value: str, expected):
    assert threads.override({threads.ENV: value}) == expected


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_override_refuses_other_values_naming_the_variable(value: str):
    with pytest.raises(ConfigError, match=f"{threads.ENV} must be an int >= 1, 'all' or 'auto'"):
        threads.override({threads.ENV: value})


def test_plan_follows_the_overrides_then_the_reading(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    start = _sample(0.0, 0, 0, 0.0, 4)
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.plan(start, 0.0)[0] == 3
    monkeypatch.setenv(threads.ENV, "all")
    assert threads.plan(start, 0.0)[0] == 4
    monkeypatch.delenv(threads.ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.plan(start, 0.0) == (None, "OMP_NUM_THREADS=1 (set by the user)")
    monkeypatch.delenv("OMP_NUM_THREADS")
    # 1 s, 4 CPUs: 400 jiffies of which 300 busy = 3 cores, 0 of them ours -> 1 thread of 4
    monkeypatch.setattr(threads, "sample", lambda: CpuSample(1.0, 300, 400, 0.0, 4))
    chosen, how = threads.plan(start, 0.0)
    assert chosen == 1 and "3.0 busy elsewhere" in how


_BLAS_CHECK = """
import json, os, sys
from transferkit.cli import cores
before = {m for m in ("numpy", "scipy") if m in sys.modules}
cores.claim()
import numpy, scipy.linalg  # scipy's own OpenBLAS loads here, after the claim
from threadpoolctl import threadpool_info
print(json.dumps({"before": sorted(before), "env": os.environ.get("OPENBLAS_NUM_THREADS"),
                  "blas": sorted({p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openblas"})}))
"""


@pytest.mark.parametrize(("user", "expected"), [(None, [1]), ("2", [2])])
def test_claim_gives_numpy_and_scipy_blas_the_same_threads_unless_the_user_set_them(user: str | None, expected):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env.update({threads.ENV: "1", **({"OPENBLAS_NUM_THREADS": user} if user else {})})
    out = subprocess.run([sys.executable, "-c", _BLAS_CHECK], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["before"] == []  # the command line's start loads neither
    assert seen["env"] == (user or "1") and seen["blas"] == expected
