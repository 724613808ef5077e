"""DAN-style multi-kernel MMD (Long et al. 2015): fine-tuning that also shrinks the maximum mean discrepancy
between source and target features under a family of Gaussian kernels.

Imports transferkit.core, transferkit.tasks and transferkit.strategies. The loss is strategies.losses.mmd_loss
(unbiased MMD^2, the mean of Gaussian kernels at ``multipliers`` x the batch's mean squared pairwise distance);
DAN applies it to the layers after the backbone, here to the pooled features the head reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.domain import DomainAdaptation, DomainConfig
from transferkit.strategies.losses import DAN_MULTIPLIERS, mmd_loss


@dataclass(frozen=True)
class MmdConfig(DomainConfig):
    multipliers: tuple[float, ...] = DAN_MULTIPLIERS  # kernel bandwidths, relative to the mean squared distance

    def __post_init__(self) -> None:
        super().__post_init__()
        values = self.multipliers
        if isinstance(values, list):  # -o multipliers=[0.5,1,2] arrives as a JSON list
            object.__setattr__(self, "multipliers", values := tuple(values))
        if not isinstance(values, tuple) or not values or not all(
                isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in values):
            raise ConfigError(f"The 'multipliers' parameter of MmdConfig must be a non-empty list of numbers > 0. "
                              f"Got {values!r} instead.")


class Mmd(DomainAdaptation):
    name = "mmd"
    config_class = MmdConfig
    summary = STRATEGY_SUMMARIES["mmd"]

    def domain_loss(self, source: torch.Tensor, target: torch.Tensor, ctx: StrategyContext) -> torch.Tensor:
        return mmd_loss(source, target, self.config.multipliers)
