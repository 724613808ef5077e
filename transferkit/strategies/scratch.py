"""From-scratch baseline: the same architecture randomly initialised, trained by the same loop.

Imports transferkit.strategies.base. It answers "did transfer help?": every comparison reports the gain
of the pretrained strategies over this one, negative or not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.strategies.base import (
    Strategy,
    StrategyConfig,
    StrategyContext,
    decay_groups,
    set_requires_grad,
    trainable,
)
from transferkit.tasks.model import TransferModel


@dataclass(frozen=True)
class ScratchConfig(StrategyConfig):
    bn: str = "train"  # random batch-norm statistics must be learned
    lr_scale: float = 1.0  # every parameter trains at the loop's learning rate times this


class Scratch(Strategy):
    name = "scratch"
    config_class = ScratchConfig
    summary = STRATEGY_SUMMARIES["scratch"]
    uses_pretrained_weights = False

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        set_requires_grad(model, True)

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return decay_groups(trainable(model), lr * self.config.lr_scale, weight_decay)
