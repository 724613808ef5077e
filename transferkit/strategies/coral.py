"""Deep CORAL (Sun & Saenko 2016): fine-tuning that also aligns the second-order statistics (covariances) of
source and target activations.

Imports transferkit.core, transferkit.tasks and transferkit.strategies. The loss is strategies.losses.coral_loss,
||C_S - C_T||_F^2 / (4 d^2). As in the paper (CORAL on fc8, the classifier's output layer) it compares the head's
outputs by default (``layer='logits'``, d = the number of classes, a covariance a batch of 16-32 estimates
well); ``layer='features'`` compares the backbone's pooled features instead, where d is large (1280 for
EfficientNet-Lite0), the covariance of a batch is mostly noise and the loss is ~1e-6: raise ``weight`` there.
The zero-initialised head makes the term 0 at the first step; it grows as the head learns, which is the paper's
intent (the weight balances both losses by the end of training).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.domain import DomainAdaptation, DomainConfig
from transferkit.strategies.losses import coral_loss
from transferkit.tasks.model import TransferModel

CORAL_LAYERS = ("logits", "features")


@dataclass(frozen=True)
class CoralConfig(DomainConfig):
    layer: str = "logits"  # what is aligned: the head's outputs (the paper's fc8) or the backbone's features

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer not in CORAL_LAYERS:
            raise ConfigError(f"The 'layer' parameter of CoralConfig must be one of {CORAL_LAYERS}. "
                              f"Got {self.layer!r} instead.")


class Coral(DomainAdaptation):
    name = "coral"
    config_class = CoralConfig
    summary = STRATEGY_SUMMARIES["coral"]

    def aligned(self, model: TransferModel, features: torch.Tensor) -> torch.Tensor:
        return model.head(features) if self.config.layer == "logits" else features

    def domain_loss(self, source: torch.Tensor, target: torch.Tensor, ctx: StrategyContext) -> torch.Tensor:
        return coral_loss(source, target)
