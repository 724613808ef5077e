"""DataLoader worker processes for image decoding, and per-draw seeds that keep augmentation independent of them.

Imports only transferkit.core and transferkit.data. Where the pictures are not cached
(transferkit.data.image_cache), decoding is what a training epoch waits for: up to 4 worker processes decode,
leaving a core to the model; each runs torch on one thread. Which worker decodes which batch depends on the
worker count and, in a resumed epoch, on where it resumed, so augmentation must not draw from a worker's RNG
stream: every training draw carries a seed of its own, a function of (loader seed, epoch, position in the epoch)
only, and its transform runs under that seed (torchvision draws from torch, timm from random and numpy), the
caller's RNG states restored afterwards. A run's augmentation is thus the same with 0, 1 or 4 workers, with the
cache on or off (up to the differences image_cache states), and when resumed; and it no longer moves the
training process's own RNG stream (dropout, mixup), which it did before per-draw seeds.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

MAX_WORKERS = 4
MIN_ITEMS = 256  # fewer images decode in less time than starting a worker takes


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def decode_workers(cores: int | None = None, load: float | None = None) -> int:
    """Worker processes for an uncached loader of image files: min(cores - 1, 4), no more than the cores left idle
    by the machine's load (``load``: the 1-minute load average, rounded: a core busy less than half the time counts
    as idle; default ``os.getloadavg``, which counts this process too), and 0 (decode in this process) when that
    leaves none: a worker would only take turns with the model (measured: 1 worker on 2 cores under a load of ~6
    decoded 0.9x as fast, benchmarks/data_path.py).
    ``cores`` defaults to this process's share: the available cores over the processes of a multi-process run on
    this machine (``LOCAL_WORLD_SIZE``)."""
    if cores is None:
        cores = available_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 1.0
    idle = available_cores() - max(1, round(load))  # cores that nothing runs on, beside this process
    return max(0, min(cores - 1, idle, MAX_WORKERS))


def one_thread(worker_id: int) -> None:
    """``worker_init_fn``: a worker decodes on one core; torch kernels in it (tensor transforms) get one thread."""
    torch.set_num_threads(1)


def draw_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of the draw at ``position`` (0-based, in the whole epoch's order) of ``epoch``: 63 bits of a hash."""
    digest = hashlib.blake2b(f"{seed},{epoch},{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def seeded(seed: int | None, numpy: bool = False) -> Iterator[None]:
    """Run the block with torch's CPU and random's global RNGs (and numpy's with ``numpy``: saving its state costs
    ~0.1 ms) seeded by ``seed`` (None: as they are), and give them back their previous states after it."""
    if seed is None:
        yield
        return
    states = torch.get_rng_state(), random.getstate(), np.random.get_state() if numpy else None
    torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds every accelerator: 0.1 ms
    random.seed(seed)
    if numpy:
        np.random.seed(seed % 2 ** 32)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        if numpy:
            np.random.set_state(states[2])
