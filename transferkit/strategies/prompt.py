"""Prompt tuning (Lester et al. 2021) and p-tuning (Liu et al. 2021) through `peft`, for text backbones.

Imports transferkit.core, transferkit.backbones and transferkit.strategies. A few trainable "virtual token"
embeddings are prepended to every input while every pretrained weight stays frozen; with the new head that is
well under 0.1 % of MiniLM's parameters. Sentence features stay the mean over the real tokens. Soft prompts
need a much higher learning rate than weights (``prompt_lr_scale`` x the head's). The prompt is part of the
backbone's architecture, so a bundle rebuilds it when loaded (it cannot be folded into the weights).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import (
    PeftStrategy,
    StrategyConfig,
    StrategyContext,
    decay_groups,
    set_requires_grad,
)
from transferkit.tasks.model import TransferModel

METHODS = ("prompt", "p-tuning")
INITS = ("SAMPLE_VOCAB", "RANDOM")


@dataclass(frozen=True)
class PromptConfig(StrategyConfig):
    method: str = "prompt"  # 'p-tuning': the virtual tokens come from a small trainable MLP
    num_virtual_tokens: int = 16
    init: str = "SAMPLE_VOCAB"  # prompt tuning: start from embeddings of random vocabulary tokens
    encoder_hidden_size: int = 128  # p-tuning's MLP width
    prompt_lr_scale: float = 10.0  # the prompt's LR relative to the head's

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ConfigError(f"The 'method' parameter of PromptConfig must be one of {METHODS}. Got {self.method!r}.")
        if self.init not in INITS:
            raise ConfigError(f"The 'init' parameter of PromptConfig must be one of {INITS}. Got {self.init!r}.")
        if not isinstance(self.num_virtual_tokens, int) or not 1 <= self.num_virtual_tokens <= 128:
            raise ConfigError(f"The 'num_virtual_tokens' parameter must be an int in [1, 128]. "
                              f"Got {self.num_virtual_tokens!r} instead.")
        if self.prompt_lr_scale <= 0:
            raise ConfigError(f"The 'prompt_lr_scale' parameter must be > 0. Got {self.prompt_lr_scale!r} instead.")


class PromptTuning(PeftStrategy):
    name = "prompt"
    config_class = PromptConfig
    summary = STRATEGY_SUMMARIES["prompt"]
    modalities: ClassVar[tuple[str, ...]] = ("text",)

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        self.check_modality(model)
        c = self.config
        set_requires_grad(model, False)
        options: dict[str, Any] = {"method": c.method, "num_virtual_tokens": c.num_virtual_tokens}
        options.update({"init": c.init} if c.method == "prompt" else {"encoder_hidden_size": c.encoder_hidden_size})
        model.backbone.extend("prompt", options)
        for p in model.backbone.model.prompt_encoder.parameters():
            p.requires_grad_(True)
        set_requires_grad(model.head, True)

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        prompt = [p for p in model.backbone.model.prompt_encoder.parameters() if p.requires_grad]
        return [*decay_groups(list(model.head.named_parameters()), lr, weight_decay),
                {"params": prompt, "lr": lr * self.config.prompt_lr_scale, "weight_decay": 0.0}]
