"""Mixup / CutMix for image batches, through timm's Mixup (which also turns labels into soft targets).

Imports transferkit.train.config only.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transferkit.train.config import TrainConfig


def build_batch_mixer(cfg: TrainConfig, n_classes: int) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """A function batch -> mixed batch with soft ``labels``, or None when mixup and cutmix are off."""
    if not (cfg.mixup or cfg.cutmix):
        return None
    from timm.data import Mixup
    from timm.data.mixup import mixup_target

    mixer = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                  num_classes=n_classes)

    def mix(batch: dict[str, Any]) -> dict[str, Any]:
        x, y = batch["pixel_values"], batch["labels"]
        if len(x) % 2:  # timm mixes pairs; an odd last batch keeps its images, still with soft targets
            return {**batch, "labels": mixup_target(y, n_classes, 1.0, cfg.label_smoothing)}
        x, y = mixer(x, y)
        return {**batch, "pixel_values": x, "labels": y}

    return mix
