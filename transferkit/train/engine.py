"""Where the loop runs: one process (LocalEngine) or several under DDP through accelerate (AccelerateEngine).

Imports transferkit.core only. The loop asks an engine for the device, whether this process writes
(``is_main``), to ``prepare`` the model, helper modules and training loader (DDP wrapping and one shard of every
epoch per rank), to run ``backward`` (without gradient all-reduce inside an accumulation group: ``no_sync``),
and to ``agree`` on what each rank saw (the step's mean loss over ranks, and stop flags true on any rank: the
time budget, SIGTERM, a non-finite loss), so that no rank leaves a collective another still waits in.
``broadcast`` hands rank 0's validation row to every rank, so early stopping is decided once.

LocalEngine is the loop as it was before the seam: every method is the identity or plain torch, so a one-process
run (and its resume) stays bit-identical. AccelerateEngine runs under ``accelerate launch`` (or
``transferkit fit --processes N``, which starts that): gloo on CPU, NCCL on GPUs; the batch size is per
process and the global batch is per-process batch x processes (accelerate's ``split_batches=False``); the shard
of rank r is every N-th batch of the epoch's order, so one optimizer step sees the same examples as one step of
a single process with the global batch. Batch-norm running statistics are rank 0's (DDP broadcasts buffers
at each forward; no SyncBatchNorm), and the strategy's bn policy (train/eval per module) applies on every rank.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from transferkit.core.errors import ConfigError
from transferkit.core.runtime import default_device


def distributed_launch() -> bool:
    """Whether this process is one of several started by accelerate launch / torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def refuse_launch(command: str, instead: str) -> None:
    """A ConfigError for ``command`` (tune, compare) inside a multi-process launch: it runs many independent fits,
    and N ranks would each run all of them (N copies of every trial or cell, racing on one output folder), so
    the error names the way it does scale out (``instead``)."""
    if distributed_launch():
        raise ConfigError(f"transferkit {command} does not run inside a multi-process launch (accelerate launch or "
                          f"--processes; here WORLD_SIZE={os.environ['WORLD_SIZE']}): only fit trains in several "
                          f"processes. {instead}")


def make_engine() -> Engine:
    """AccelerateEngine under a multi-process launch, else LocalEngine."""
    return AccelerateEngine() if distributed_launch() else LocalEngine()


class Engine:
    """The seam's contract, implemented for one process: the identity everywhere."""

    num_processes: int = 1
    process_index: int = 0

    @property
    def device(self) -> torch.device:
        return default_device()

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                helpers: dict[str, nn.Module] | None = None
                ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader, dict[str, nn.Module]]:
        """(model for the forward pass, optimizer, this rank's loader, helper modules for their forward passes)."""
        return model, optimizer, loader, dict(helpers or {})

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def no_sync(self, model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
        """Inside an accumulation group (``skip``), backward without all-reducing gradients yet."""
        return contextlib.nullcontext()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated along dim 0 (one process: the tensor itself)."""
        return tensor

    def agree(self, value: float, *flags: bool) -> tuple[float, tuple[bool, ...]]:
        """(``value`` averaged over ranks, each flag true if it is true on any rank); one collective."""
        return value, tuple(flags)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def close(self) -> None:
        """Leave the process group (no collective may follow)."""


class LocalEngine(Engine):
    """Today's single-process loop: the device torch picks, no wrapping, no communication."""


class AccelerateEngine(Engine):
    """DDP through ``accelerate.Accelerator``; gloo on CPU. Created inside a launched process."""

    def __init__(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # find_unused_parameters: a strategy may leave parts of the graph without gradient (a pooler, a paused
        # block's neighbour); DDP would otherwise wait for them forever. rng_types=[]: each rank keeps the
        # seeded RNG streams; the data order comes from the (seed, epoch) sampler, identical on every rank.
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), rng_types=[],
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.num_processes = self.accelerator.num_processes
        self.process_index = self.accelerator.process_index
        if "OMP_NUM_THREADS" not in os.environ:  # cores // processes on this machine
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.num_processes))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                helpers: dict[str, nn.Module] | None = None
                ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader, dict[str, nn.Module]]:
        """DDP-wrapped model and helpers; the loader sharded by batches (even_batches: every rank gets as many
        batches, the last ones completed from the epoch's start). The optimizer stays torch's: DDP averages the
        gradients before it steps, and the loop accumulates and clips as in one process."""
        acc = self.accelerator
        wrapped = acc.prepare_model(model)
        shard = acc.prepare_data_loader(loader)
        return wrapped, optimizer, shard, {name: acc.prepare_model(m) for name, m in (helpers or {}).items()}

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def no_sync(self, model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
        return self.accelerator.no_sync(model) if skip else contextlib.nullcontext()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.gather(tensor)

    def agree(self, value: float, *flags: bool) -> tuple[float, tuple[bool, ...]]:
        import torch.distributed as dist

        # float64 on the reduction device (gloo: CPU); NaN/inf in any rank's value survive the sum
        t = torch.tensor([value, *[float(f) for f in flags]], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        total = t.tolist()
        return total[0] / self.num_processes, tuple(x > 0 for x in total[1:])

    def broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


@contextlib.contextmanager
def closing(engine: Engine) -> Iterator[Engine]:
    """``engine``, closed when the block ends (also on error)."""
    try:
        yield engine
    finally:
        engine.close()
