"""Batched inference under torch.inference_mode, returning logits in input order.

Imports transferkit.core and transferkit.backbones. Shared by validation in the loop, evaluation and predict.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from transferkit.core.runtime import autocast


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors moved to ``device``, also inside nested batches (distillation pairs an unlabeled batch)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else to_device(v, device) if isinstance(v, dict) else v
            for k, v in batch.items()}


@torch.inference_mode()
def predict_logits(model: nn.Module, loader: Iterable[dict[str, Any]], precision: str,
                   progress: bool = False, desc: str = "predict") -> tuple[np.ndarray, np.ndarray | None]:
    """(logits [n, k] float32, labels [n] or None) for every batch of ``loader``, in the order of the batches'
    ``index`` (one per row) where they carry one: a loader that sorts texts by length gives them back in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits, labels, positions = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress or None):
        if isinstance(batch.get("index"), torch.Tensor):
            positions.append(batch["index"].numpy())
        batch = to_device(batch, device)
        with autocast(precision, device):
            logits.append(model(batch).float().cpu().numpy())
        if "labels" in batch:
            labels.append(batch["labels"].cpu().numpy())
    model.train(was_training)
    out = np.concatenate(logits) if logits else np.zeros((0, 0), np.float32)
    targets = np.concatenate(labels) if labels else None
    order = _input_order(positions, len(out))
    if order is not None:
        out, targets = out[order], targets[order] if targets is not None else None
    return out, targets


def _input_order(positions: list[np.ndarray], rows: int) -> np.ndarray | None:
    """The permutation that puts rows back in input order; None when they already are in it or the index is not
    one per row (a token batch's index counts sentences, its rows words)."""
    if not positions:
        return None
    index = np.concatenate(positions)
    if len(index) != rows or bool((np.diff(index) >= 0).all()):
        return None
    return np.argsort(index, kind="stable")
