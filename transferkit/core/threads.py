"""How many compute threads this process starts: the cores it may use minus what other processes keep busy.

Imports transferkit.core.errors only (no torch: the CLI decides before torch loads). PyTorch's CPU kernels run on
an OpenMP pool of as many threads as cores; two such processes on the same cores make each pool's threads wait at
every barrier for a peer that is descheduled (measured, issue 17: `fit` next to two other torch jobs on 2 cores ran
at 0.08x its solo throughput). So a process takes the cores that are idle when it starts:

- the cores it may run on: the affinity mask, capped by a cgroup CPU quota (``/sys/fs/cgroup/cpu.max``);
- the cores other processes keep busy: ``/proc/stat``'s busy time over a window (the CLI's own start: from
  importing the command line to the command's body), minus this process's own CPU time in it; where
  ``/proc/stat`` is absent, the 1-minute load average;
- ``threads = floor(cores - busy elsewhere + 0.4)``, at least 1 and at most ``cores`` (``decide_threads``).

Overrides, in this order: ``TRANSFERKIT_THREADS=N`` (N >= 1), then ``OMP_NUM_THREADS`` when set (the user's
choice, left to torch). ``TRANSFERKIT_THREADS=all`` takes every core the process may use, as torch does by default.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from transferkit.core.errors import ConfigError

ENV = "TRANSFERKIT_THREADS"
ROUND_UP = 0.4  # a core 60 % free counts as free: short bursts elsewhere do not halve a 2-core machine


def decide_threads(cores: int, busy_elsewhere: float) -> int:
    """Compute threads for a process that may use ``cores`` cores while others keep ``busy_elsewhere`` cores busy
    (a mean over a short window, in cores; may exceed ``cores`` on an oversubscribed machine). Pure. At least 1,
    at most ``cores``."""
    free = cores - max(0.0, busy_elsewhere)
    return max(1, min(cores, math.floor(free + ROUND_UP)))


@dataclass(frozen=True)
class CpuSample:
    """One reading: wall time (s), busy and total CPU jiffies of the machine (None without /proc/stat), this
    process's CPU seconds, and the machine's CPU count in /proc/stat."""

    wall: float
    busy: int | None
    total: int | None
    own: float
    cpus: int


def sample() -> CpuSample:
    """Read /proc/stat's aggregate ``cpu`` line (busy = user+nice+system+irq+softirq+steal) and os.times()."""
    busy = total = None
    cpus = os.cpu_count() or 1
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        fields = [int(x) for x in lines[0].split()[1:9]]
        idle = fields[3] + fields[4]  # idle + iowait
        busy, total = sum(fields) - idle, sum(fields)
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit()) or cpus
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return CpuSample(time.monotonic(), busy, total, t.user + t.system, cpus)


def busy_elsewhere(before: CpuSample, after: CpuSample) -> float | None:
    """Cores kept busy by other processes between two samples: the machine's busy share x its CPUs, minus this
    process's CPU seconds per wall second. None when /proc/stat was unreadable or no time passed. Pure."""
    if before.busy is None or after.busy is None or after.total is None or before.total is None:
        return None
    total = after.total - before.total
    wall = after.wall - before.wall
    if total <= 0 or wall <= 0:
        return None
    machine = (after.busy - before.busy) / total * after.cpus
    return max(0.0, machine - (after.own - before.own) / wall)


def usable_cores() -> int:
    """Cores this process may run on: the affinity mask, capped by a cgroup v2 CPU quota where one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def override(env: dict[str, str] | None = None) -> int | str | None:
    """``TRANSFERKIT_THREADS``: an int >= 1, 'all', or None when unset or 'auto'. Raises ConfigError otherwise."""
    value = (env if env is not None else os.environ).get(ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value == "all":
        return "all"
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ConfigError(f"The environment variable {ENV} must be an int >= 1, 'all' or 'auto'. Got {value!r}; "
                      f"unset it to let transferkit decide from the idle cores.")


def plan(start: CpuSample, min_window: float = 0.25) -> tuple[int | None, str]:
    """(threads, how it was decided) for this process; threads None: leave torch as it is (OMP_NUM_THREADS set).
    Waits until ``min_window`` seconds have passed since ``start`` so that the reading is not noise."""
    cores = usable_cores()
    chosen = override()
    if chosen == "all":
        return cores, f"{ENV}=all: {cores} threads"
    if isinstance(chosen, int):
        return chosen, f"{ENV}={chosen}"
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} (set by the user)"
    time.sleep(max(0.0, min_window - (time.monotonic() - start.wall)))
    busy = busy_elsewhere(start, sample())
    source = "/proc/stat"
    if busy is None:
        busy, source = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), "load average"
    threads = decide_threads(cores, busy)
    return threads, f"{threads} of {cores} cores ({busy:.1f} busy elsewhere, {source})"
