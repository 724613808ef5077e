"""Fork safety: a process forked after transferkit ran a model can run models too (multiprocessing 'fork' pools).

Imports nothing from transferkit. PyTorch's CPU kernels run on an OpenMP thread pool (GNU libgomp in the wheels);
a forked child inherits the pool's bookkeeping but not its threads, so its first parallel kernel (measured: the
embedding lookup of MiniLM after ``TransferClassifier.predict`` in the parent, with 2 threads) waits for them
forever. As PyTorch's own DataLoader workers do, a forked child runs torch on one intra-op thread; HF tokenizers
guard their own Rayon pool after a fork (they turn parallelism off in the child).
"""
from __future__ import annotations

import os
import sys

_installed = False


def _one_thread_in_child() -> None:
    torch = sys.modules.get("torch")  # a child of a process that never imported torch has no pool to fix
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(1)


def install_fork_guard() -> None:
    """Register, once per process, the after-fork hook that gives forked children one torch thread."""
    global _installed
    if _installed or not hasattr(os, "register_at_fork"):  # no fork on Windows
        return
    os.register_at_fork(after_in_child=_one_thread_in_child)
    _installed = True
