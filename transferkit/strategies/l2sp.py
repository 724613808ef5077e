"""L2-SP (Li, Grandvalet & Davoine 2018): fine-tune everything, penalising distance from the pretrained weights.

Imports transferkit.strategies. Plain weight decay pulls weights toward zero, i.e. away from what was
transferred; L2-SP pulls the backbone toward its starting point instead (alpha/2 * ||w - w0||^2) and keeps
ordinary L2 (beta/2 * ||w||^2) for the new head only, so weight decay is switched off for every group here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.finetune import Finetune, FinetuneConfig
from transferkit.tasks.model import TransferModel


@dataclass(frozen=True)
class L2SPConfig(FinetuneConfig):
    alpha: float = 0.01  # pull of the backbone toward its pretrained weights
    beta: float = 0.01  # plain L2 on the new head

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"The '{name}' parameter of L2SPConfig must be >= 0. Got {getattr(self, name)}.")


class L2SP(Finetune):
    name = "l2sp"
    config_class = L2SPConfig
    summary = STRATEGY_SUMMARIES["l2sp"]

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        super().prepare(model, ctx)
        self.anchor = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return super().param_groups(model, lr, 0.0)  # the penalty replaces weight decay

    def penalty(self, model: TransferModel) -> torch.Tensor:
        drift = sum(((p.float() - self.anchor[n]) ** 2).sum()
                    for n, p in model.backbone.named_parameters() if p.requires_grad)
        head = sum((p.float() ** 2).sum() for n, p in model.head.named_parameters() if n.endswith("weight"))
        return 0.5 * self.config.alpha * drift + 0.5 * self.config.beta * head

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        return super().training_step(model, batch, ctx) + self.penalty(model)
