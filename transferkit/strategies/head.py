"""Head only: the pretrained backbone stays frozen but in the graph, and only the new head trains.

Imports transferkit.strategies. Unlike linear-probe (features cached once, closed-form head), every step runs
the backbone on a freshly augmented image, so augmentation regularises the head; it costs a forward pass per
step instead of one per example.
"""
from __future__ import annotations

from dataclasses import dataclass

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.strategies.base import Strategy, StrategyConfig, StrategyContext, set_requires_grad
from transferkit.tasks.model import TransferModel


@dataclass(frozen=True)
class HeadConfig(StrategyConfig):
    """Only ``bn``: 'train' re-estimates the frozen backbone's batch-norm statistics on your data (AdaBN)."""


class HeadOnly(Strategy):
    name = "head"
    config_class = HeadConfig
    summary = STRATEGY_SUMMARIES["head"]

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        set_requires_grad(model.backbone, False)
        set_requires_grad(model.head, True)
