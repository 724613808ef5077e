"""Full fine-tuning with layer-wise learning-rate decay and batch-norm statistics frozen by default.

Imports transferkit.core, transferkit.backbones and transferkit.strategies.base. Defaults are chosen for the
few-label regime: updating BN statistics on batches of 16 and a backbone LR equal to the head's are what make
plain fine-tuning fall below the linear probe (BENCHMARKS.md), so the backbone's top block trains at
``backbone_lr_scale`` x the head LR, each earlier block ``layer_decay`` x slower, with BN running stats frozen,
and the head starts from the linear probe's solution (LP-FT, Kumar et al. 2022): a random head's large early
gradients are what distort pretrained features. ``head_init='zero'`` gives plain fine-tuning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferkit.backbones.heads import TransferModel
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import (
    Strategy,
    StrategyConfig,
    StrategyContext,
    decay_groups,
    freeze_batchnorm_stats,
    set_requires_grad,
)
from transferkit.strategies.linear_probe import LinearProbeConfig, fit_logistic_head

BN_POLICIES = ("freeze", "train")
HEAD_INITS = ("probe", "zero")


@dataclass(frozen=True)
class FinetuneConfig(StrategyConfig):
    backbone_lr_scale: float = 0.3
    layer_decay: float = 0.8
    bn: str = "freeze"
    head_init: str = "probe"

    def __post_init__(self) -> None:
        if not 0 < self.backbone_lr_scale <= 10:
            raise ConfigError(f"The 'backbone_lr_scale' parameter of FinetuneConfig must be in (0, 10]. "
                              f"Got {self.backbone_lr_scale} instead.")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"The 'layer_decay' parameter of FinetuneConfig must be in (0, 1]. "
                              f"Got {self.layer_decay} instead.")
        if self.head_init not in HEAD_INITS:
            raise ConfigError(f"The 'head_init' parameter must be one of {HEAD_INITS}. Got {self.head_init!r} instead.")
        if self.bn not in BN_POLICIES:
            raise ConfigError(f"The 'bn' parameter must be one of {BN_POLICIES}. Got {self.bn!r} instead.")


def layerwise_groups(model: TransferModel, lr: float, weight_decay: float, backbone_scale: float,
                     decay: float) -> list[dict[str, Any]]:
    """Head at ``lr``; backbone block i of n at ``lr * backbone_scale * decay**(n-1-i)``."""
    groups = decay_groups([(n, p) for n, p in model.head.named_parameters() if p.requires_grad], lr, weight_decay)
    blocks = model.backbone.blocks()
    for i, block in enumerate(blocks):
        block_lr = lr * backbone_scale * decay ** (len(blocks) - 1 - i)
        named = [(n, p) for n, p in block.named_parameters() if p.requires_grad]
        groups += decay_groups(named, block_lr, weight_decay)
    return groups


class Finetune(Strategy):
    name = "finetune"
    config_class = FinetuneConfig
    summary = "all layers train; layer-wise LR decay, head at a higher LR, BN stats frozen (safe with few labels)"

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        if self.config.head_init == "probe" and ctx.features is not None:
            self.probe_info = fit_logistic_head(model, ctx, LinearProbeConfig(scaling="global"))
        set_requires_grad(model, True)

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        c = self.config
        return layerwise_groups(model, lr, weight_decay, c.backbone_lr_scale, c.layer_decay)

    def train_mode(self, model: TransferModel) -> None:
        model.train()
        if self.config.bn == "freeze":
            freeze_batchnorm_stats(model)
