"""Batch streams beside the labeled loader: the unlabeled target-domain stream that domain adaptation pairs with it.

Imports transferkit.core and transferkit.data only. ``TargetStream`` cycles over the unlabeled target examples
for as long as the labeled stream runs (its epochs are its own: a target set smaller or larger than the labeled
one simply wraps around). Each target epoch's order depends only on (seed, target epoch), as the labeled
EpochSampler's does, and the stream's position (target epoch, batches taken in it, batches taken in all) is a
few integers the strategy saves in its checkpoint state: a resumed run draws the very target batches the
interrupted one would have, so its weights are bit-identical on CPU. The next target batch is read only when the
labeled stream yields one (lazily, inside the step), so a checkpoint written after a step counts exactly the
target batches that reached the weights.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from transferkit.data.examples import Examples
from transferkit.data.loaders import EpochSampler, make_loader
from transferkit.data.preprocess import PreprocessSpec

# Target epochs are drawn from their own seed, so the target order is not the labeled order's twin when the two
# sets have the same size.
TARGET_SEED_OFFSET = 7919


class TargetStream:
    """Unlabeled target batches without end, resumable to the exact batch (``state_dict``).

    ``total`` is the number of labeled micro-batches the run plans (epochs x batches per epoch): ``progress`` =
    pairs taken / total is the training progress p in [0, 1] of schedules such as DANN's lambda.
    A last short target batch is dropped when the target set holds at least one batch, so a domain loss never
    sees a batch of one example (a covariance or a batch-norm layer over one value is undefined).
    """

    def __init__(self, examples: Examples, spec: PreprocessSpec, batch_size: int, seed: int, total: int = 0,
                 augment: str = "none", hflip: float = 0.0):
        if len(examples) == 0:
            raise ValueError("TargetStream needs at least one target example")
        size = max(1, min(batch_size, len(examples)))
        loader = make_loader(examples, spec, None, size, shuffle_seed=seed + TARGET_SEED_OFFSET, augment=augment,
                             hflip=hflip)
        self.loader = DataLoader(loader.dataset, batch_size=size, sampler=loader.sampler, generator=loader.generator,
                                 collate_fn=loader.collate_fn, num_workers=0, drop_last=len(examples) >= size)
        self.sampler: EpochSampler = loader.sampler
        self.batch_size, self.total, self.n = size, total, len(examples)
        self.epoch, self.position, self.taken = 0, 0, 0
        self._batches: Iterator[dict[str, Any]] | None = None

    @property
    def progress(self) -> float:
        """Training progress p in [0, 1]: pairs taken over the planned number (0 when none is planned)."""
        return min(1.0, self.taken / self.total) if self.total else 0.0

    def next(self) -> dict[str, Any]:
        """The next target batch (CPU tensors, no ``labels``); a finished target epoch starts the next one."""
        if self._batches is None:
            self.sampler.set_epoch(self.epoch, start=self.position * self.batch_size)
            self._batches = iter(self.loader)
        batch = next(self._batches, None)
        if batch is None:  # the target epoch is over: the next one, in its own order
            self.epoch, self.position = self.epoch + 1, 0
            self.sampler.set_epoch(self.epoch)
            self._batches = iter(self.loader)
            batch = next(self._batches)
        self.position += 1
        self.taken += 1
        return batch

    def pair(self, labeled: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Each labeled batch with a target batch under the key ``target``: ``{**batch, "target": {...}}``."""
        for batch in labeled:
            yield {**batch, "target": self.next()}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "taken": self.taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position: the next batch is the one the saved stream would have drawn next."""
        self.epoch, self.position, self.taken = int(state["epoch"]), int(state["position"]), int(state["taken"])
        self._batches = None
