"""Inference throughput measured side by side: a distilled student against its teacher, on the same batches.

Imports transferkit.core, transferkit.data and transferkit.train. The batches are built once and held in
memory, so decoding and tokenizing are not timed; the two models take turns over several rounds and each
keeps its best round, which damps the noise of a shared machine.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from transferkit.core.runtime import autocast


@torch.inference_mode()
def items_per_second(model: nn.Module, batches: list[dict[str, Any]], precision: str) -> float:
    """One timed pass over ``batches`` (after the caller's warm-up), in examples per second."""
    device = next(model.parameters()).device
    n = sum(len(b["index"]) for b in batches)
    start = time.perf_counter()
    with autocast(precision, device):
        for batch in batches:
            model(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / max(time.perf_counter() - start, 1e-9)


def compare_throughput(models: dict[str, nn.Module], batches: list[dict[str, Any]], precision: str,
                       rounds: int = 3) -> dict[str, float]:
    """Examples per second for each model on the same batches: one warm-up pass each, then ``rounds`` alternating
    timed passes; the best pass counts."""
    for model in models.values():
        model.eval()
        items_per_second(model, batches[:1], precision)
    best = dict.fromkeys(models, 0.0)
    for _ in range(rounds):
        for name, model in models.items():
            best[name] = max(best[name], items_per_second(model, batches, precision))
    return {name: round(v, 2) for name, v in best.items()}
