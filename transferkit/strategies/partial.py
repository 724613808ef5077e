"""Partial fine-tuning: the last N backbone blocks and the head train; everything below stays pretrained.

Imports transferkit.strategies. The middle road between head-only and full fine-tuning: with few labels the
early, generic layers are left alone (fewer parameters to overfit), the task-specific top adapts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.finetune import Finetune, FinetuneConfig


@dataclass(frozen=True)
class PartialConfig(FinetuneConfig):
    unfreeze: float = 2  # an int N: the last N blocks; a fraction in (0, 1): that share of the blocks, rounded up

    def __post_init__(self) -> None:
        super().__post_init__()
        is_count = float(self.unfreeze).is_integer() and self.unfreeze >= 1
        if not (is_count or 0 < self.unfreeze < 1):
            raise ConfigError(f"The 'unfreeze' parameter must be a whole number of blocks >= 1 or a fraction in "
                              f"(0, 1). Got {self.unfreeze!r} instead.")

    def trainable_blocks(self, n_blocks: int) -> int:
        if self.unfreeze < 1:
            return max(1, math.ceil(self.unfreeze * n_blocks))
        return min(int(self.unfreeze), n_blocks)


class Partial(Finetune):
    name = "partial"
    config_class = PartialConfig
    summary = STRATEGY_SUMMARIES["partial"]

    def frozen_blocks(self, epoch: int, n_blocks: int) -> int:
        below = n_blocks - self.config.trainable_blocks(n_blocks)
        return max(below, super().frozen_blocks(epoch, n_blocks))

    def first_trainable_block(self, n_blocks: int) -> int:
        return n_blocks - self.config.trainable_blocks(n_blocks)
