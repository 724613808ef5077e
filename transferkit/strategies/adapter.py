"""Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2020) for text backbones.

Imports transferkit.core, transferkit.backbones and transferkit.strategies. A small down-project / GELU /
up-project MLP with a residual is inserted after each transformer layer's feed-forward block ('pfeiffer') or
after its attention output too ('houlsby'); the up-projection starts at zero, so training starts from the
pretrained model exactly. Only the adapters, the layer norms (as both papers do) and the head train: about
0.5 % of MiniLM at reduction 16. The adapters stay in the model (they are non-linear, nothing to merge) and
the backbone records them so a bundle rebuilds them when loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from transferkit.backbones.extensions import PLACEMENTS
from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import PeftStrategy, StrategyConfig, StrategyContext, set_requires_grad
from transferkit.tasks.model import TransferModel


@dataclass(frozen=True)
class AdapterConfig(StrategyConfig):
    reduction: int = 16  # hidden width = model width / reduction
    placement: str = "pfeiffer"  # 'houlsby': also after each attention block (twice the adapters)
    train_layer_norm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.reduction, int) or self.reduction < 1:
            raise ConfigError(f"The 'reduction' parameter of AdapterConfig must be an int >= 1. Got {self.reduction!r}.")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"The 'placement' parameter of AdapterConfig must be one of {tuple(PLACEMENTS)}. "
                              f"Got {self.placement!r} instead.")


class Adapter(PeftStrategy):
    name = "adapter"
    config_class = AdapterConfig
    summary = STRATEGY_SUMMARIES["adapter"]
    modalities: ClassVar[tuple[str, ...]] = ("text",)

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        self.check_modality(model)
        set_requires_grad(model, False)
        model.backbone.extend("adapters", {"reduction": self.config.reduction, "placement": self.config.placement})
        for name, module in model.backbone.named_modules():
            if name.endswith(".adapter") or (self.config.train_layer_norm and isinstance(module, nn.LayerNorm)):
                set_requires_grad(module, True)
        set_requires_grad(model.head, True)
