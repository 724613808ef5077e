"""DANN (Ganin et al. 2016): a domain discriminator learns to tell source from target features, and the
backbone learns, through a gradient reversal layer, to make them indistinguishable.

Imports transferkit.core, transferkit.tasks and transferkit.strategies. The discriminator
(strategies.losses.DomainDiscriminator) is a helper module: trained with the model at the head's learning rate,
checkpointed with it, never bundled. The reversal coefficient follows the paper's schedule
2 / (1 + exp(-gamma p)) - 1 over training progress p (the target stream's pairs taken over those planned), so the
features feel the discriminator only once it has learned something.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import StrategyContext, decay_groups
from transferkit.strategies.domain import DomainAdaptation, DomainConfig
from transferkit.strategies.losses import DomainDiscriminator, dann_lambda, domain_adversarial_loss
from transferkit.tasks.model import TransferModel


@dataclass(frozen=True)
class DannConfig(DomainConfig):
    hidden: int = 256  # units in each of the discriminator's two hidden layers
    gamma: float = 10.0  # steepness of the reversal coefficient's schedule (the paper's 10)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
            raise ConfigError(f"The 'hidden' parameter of DannConfig must be an int >= 1. Got {self.hidden!r} instead.")
        if not isinstance(self.gamma, (int, float)) or self.gamma <= 0:
            raise ConfigError(f"The 'gamma' parameter of DannConfig must be > 0. Got {self.gamma!r} instead.")


class Dann(DomainAdaptation):
    name = "dann"
    config_class = DannConfig
    summary = STRATEGY_SUMMARIES["dann"]

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        device = next(model.parameters()).device
        self.discriminator = DomainDiscriminator(model.backbone.feature_dim, self.config.hidden).to(device)
        self.domain_accuracy = float("nan")
        super().prepare(model, ctx)

    def helpers(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator} if hasattr(self, "discriminator") else {}

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return super().param_groups(model, lr, weight_decay) + \
            decay_groups(list(self.discriminator.named_parameters()), lr, weight_decay)

    def train_mode(self, model: TransferModel) -> None:
        super().train_mode(model)
        self.discriminator.train()

    def domain_loss(self, source: torch.Tensor, target: torch.Tensor, ctx: StrategyContext) -> torch.Tensor:
        discriminator = ctx.helpers.get("discriminator", self.discriminator)
        coeff = dann_lambda(self.progress(ctx), self.config.gamma)
        loss, self.domain_accuracy = domain_adversarial_loss(discriminator, source, target, coeff)
        self.coeff = coeff
        return loss

    def step_parts(self) -> dict[str, float]:
        """Also the discriminator's accuracy (0.5: the domains look alike to it) and the reversal coefficient."""
        parts = super().step_parts()
        if parts:
            parts.update(domain_accuracy=self.domain_accuracy, reversal_coeff=self.coeff)
        return parts
