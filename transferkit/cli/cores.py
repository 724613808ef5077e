"""The command line's share of the CPU: each compute command calls ``claim()`` first, before it imports torch.

Imports transferkit.core.threads at start (no torch; torch inside ``claim``). The CPU reading that the decision
uses starts when the command line is imported (``_START``) and ends in ``claim``: other processes' busy cores over
that window, minus ours (transferkit.core.threads). ``claim`` also makes idle OpenMP threads sleep instead of spin
(``OMP_WAIT_POLICY=PASSIVE``, read by libgomp when torch loads), unless the user set ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT``: a spinning thread holds a core another process could use. Tokenizers (``RAYON_NUM_THREADS``)
and numpy's/scipy's OpenBLAS (``OPENBLAS_NUM_THREADS``) get as many threads, unless set. `fit --processes N` splits
the share (cli.launch); compare's workers take at most the parent's share each
(compare_workers.threads_per_worker).
"""
from __future__ import annotations

import os
import sys

from transferkit.core.threads import CpuSample, plan, sample

_START: CpuSample = sample()
_claimed: tuple[int | None, str] | None = None


def claim() -> tuple[int | None, str]:
    """Decide once per process how many torch threads to run (transferkit.core.threads.plan) and apply it:
    (threads or None when OMP_NUM_THREADS decides, how it was decided). Raises ConfigError for a malformed
    TRANSFERKIT_THREADS."""
    global _claimed
    if _claimed is not None:
        return _claimed
    if "torch" not in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    threads, how = plan(_START)
    if threads is not None:
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        limit_blas(threads)
        import torch

        torch.set_num_threads(threads)
    _claimed = (threads, how)
    return _claimed


def limit_blas(threads: int) -> None:
    """numpy's and scipy's OpenBLAS (scikit-learn's solvers: the linear probe, LogME) get ``threads`` too, unless
    ``OPENBLAS_NUM_THREADS`` is set: each pool starts a thread per core and its threads busy-wait, so beside another
    busy process every small BLAS call waits for a descheduled peer (measured: the linear probe's L-BFGS on Lite0
    features took 44 s instead of 1.2 s next to a 1-thread benchmark on 2 cores). The variable sizes the pools
    loaded later; pools already loaded are resized through threadpoolctl."""
    if os.environ.get("OPENBLAS_NUM_THREADS", "").strip():
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    if "numpy" in sys.modules or "scipy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads, user_api="blas")
