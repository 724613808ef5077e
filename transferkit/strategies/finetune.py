"""Full fine-tuning with layer-wise learning rates, and the block-freezing machinery its relatives share.

Imports transferkit.core, transferkit.backbones and transferkit.strategies. The backbone's top block trains at
``backbone_lr_scale`` x the head LR and each earlier block ``layer_decay`` x slower (discriminative LRs,
ULMFiT/BEiT): early layers hold generic features worth keeping. ``partial``, ``gradual``, ``l2sp`` and
``lp-ft`` subclass Finetune and change only which blocks are frozen when, the loss, or the head's start.
``warmup_head_epochs`` K is the Keras two-stage recipe: K epochs with the backbone frozen, then everything at
once (``gradual`` instead unfreezes one block group per stage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import (
    Strategy,
    StrategyConfig,
    StrategyContext,
    decay_groups,
    set_requires_grad,
)
from transferkit.strategies.linear_probe import LinearProbeConfig, fit_probe_head
from transferkit.tasks.model import TransferModel

HEAD_INITS = ("zero", "probe")


@dataclass(frozen=True)
class FinetuneConfig(StrategyConfig):
    backbone_lr_scale: float = 0.3  # top backbone block LR relative to the head's
    layer_decay: float = 0.8  # each earlier block trains this much slower
    head_init: str = "zero"  # 'probe': start from the linear probe's head (LP-FT)
    warmup_head_epochs: int = 0  # Keras two-stage: this many epochs with the backbone frozen first

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.backbone_lr_scale <= 10:
            raise ConfigError(f"The 'backbone_lr_scale' parameter must be in (0, 10]. Got {self.backbone_lr_scale}.")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"The 'layer_decay' parameter must be in (0, 1]. Got {self.layer_decay} instead.")
        if self.head_init not in HEAD_INITS:
            raise ConfigError(f"The 'head_init' parameter must be one of {HEAD_INITS}. Got {self.head_init!r}.")
        if not isinstance(self.warmup_head_epochs, int) or self.warmup_head_epochs < 0:
            raise ConfigError(f"The 'warmup_head_epochs' parameter must be an int >= 0. "
                              f"Got {self.warmup_head_epochs!r} instead.")


def layerwise_groups(model: TransferModel, lr: float, weight_decay: float, backbone_scale: float, decay: float,
                     first_block: int = 0) -> list[dict[str, Any]]:
    """Head at ``lr``; backbone block i of n at ``lr * backbone_scale * decay**(n-1-i)`` for i >= first_block.

    Blocks that are frozen now but will unfreeze later are included: the optimizer skips parameters without a
    gradient, so unfreezing needs no new optimizer (and a resumed run rebuilds the same one).
    """
    groups = decay_groups(list(model.head.named_parameters()), lr, weight_decay)
    blocks = model.backbone.blocks()
    for i, block in enumerate(blocks[first_block:], start=first_block):
        block_lr = lr * backbone_scale * decay ** (len(blocks) - 1 - i)
        groups += decay_groups(list(block.named_parameters()), block_lr, weight_decay)
    return groups


class Finetune(Strategy):
    name = "finetune"
    config_class = FinetuneConfig
    summary = STRATEGY_SUMMARIES["finetune"]

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        if self.config.head_init == "probe":
            if ctx.features is None:
                raise ConfigError(f"{self.name} with head_init='probe' needs cached features in the context "
                                  f"(StrategyContext.features) to fit the probe head.")
            self.probe_info = fit_probe_head(model.head, ctx, LinearProbeConfig(scaling="global"))
        self.on_epoch_start(model, 0)

    def frozen_blocks(self, epoch: int, n_blocks: int) -> int:
        """How many backbone blocks, counted from the input, are frozen during ``epoch``."""
        return n_blocks if epoch < self.config.warmup_head_epochs else 0

    def first_trainable_block(self, n_blocks: int) -> int:
        """The lowest block that ever trains (those below never enter the optimizer)."""
        return 0

    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        """Set which blocks train from the epoch number alone, so a resumed run gets the same stage."""
        blocks = model.backbone.blocks()
        frozen = self.frozen_blocks(epoch, len(blocks))
        first = self.first_trainable_block(len(blocks))
        for i, block in enumerate(blocks):
            if i < first:  # never trains: frozen for good, under DDP too
                set_requires_grad(block, False)
            else:  # a stage: paused rather than frozen under DDP (Strategy.set_trainable)
                self.set_trainable(block, i >= frozen)
        set_requires_grad(model.head, True)

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        c = self.config
        first = self.first_trainable_block(len(model.backbone.blocks()))
        return layerwise_groups(model, lr, weight_decay, c.backbone_lr_scale, c.layer_decay, first)
