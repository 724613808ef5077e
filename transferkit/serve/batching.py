"""Micro-batching: requests that arrive while the model is busy share its next forward pass.

Imports nothing from transferkit. The model runs in one worker thread (a CapacityLimiter of 1), never on the
event loop, so health checks and metrics stay responsive while it computes. Nothing waits for a batch to
fill: an idle model takes a lone request at once, and a busy one takes everything that queued meanwhile (up to
``max_items``), which is what keeps latency flat as concurrent clients grow.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import numpy as np

PredictFn = Callable[[list[Any]], np.ndarray]  # inputs -> one answer per input: probabilities [n, k] (or a list)


class ShuttingDown(RuntimeError):
    """The server stopped before this request reached the model."""


class MicroBatcher:
    def __init__(self, predict: PredictFn, max_items: int, on_batch: Callable[[int], None] | None = None):
        self.predict_fn, self.max_items, self.on_batch = predict, max_items, on_batch
        self._pending: deque[tuple[list[Any], asyncio.Future[np.ndarray]]] = deque()
        self._wakeup = asyncio.Event()
        self._model_thread = anyio.CapacityLimiter(1)
        self._closed = False

    async def predict(self, inputs: Sequence[Any]) -> np.ndarray:
        """Probabilities for ``inputs``, in order; cancelling the caller never cancels the model's work."""
        if self._closed:
            raise ShuttingDown("the server is shutting down")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a caller that timed out must not leave 'exception never retrieved'
        self._pending.append((list(inputs), future))
        self._wakeup.set()
        return await asyncio.shield(future)

    async def run(self) -> None:
        """The batching loop: one task per app, started by its lifespan."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    await self._run_batch(self._take())
        finally:
            self._closed = True
            for _, future in self._pending:
                if not future.done():
                    future.set_exception(ShuttingDown("the server is shutting down"))
            self._pending.clear()

    def _take(self) -> list[tuple[list[Any], asyncio.Future[np.ndarray]]]:
        batch = [self._pending.popleft()]
        total = len(batch[0][0])
        while self._pending and total + len(self._pending[0][0]) <= self.max_items:
            job = self._pending.popleft()
            batch.append(job)
            total += len(job[0])
        return batch

    async def _run_batch(self, batch: list[tuple[list[Any], asyncio.Future[np.ndarray]]]) -> None:
        inputs = [x for job_inputs, _ in batch for x in job_inputs]
        if self.on_batch is not None:
            self.on_batch(len(inputs))
        try:
            probabilities = await anyio.to_thread.run_sync(self.predict_fn, inputs, limiter=self._model_thread)
        except Exception as exc:  # a bug or a bad input slipped past validation: every caller in the batch hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for job_inputs, future in batch:
            end = start + len(job_inputs)
            if not future.done():
                future.set_result(probabilities[start:end])
            start = end


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
