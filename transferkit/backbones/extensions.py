"""Modules a PEFT strategy adds to a text backbone that stay in the model: bottleneck adapters and soft prompts.

Imports transferkit.core only. LoRA and IA3 fold into the base weights at the end, so their bundles are the
plain architecture; these two cannot (an adapter is a small non-linear MLP, a prompt is extra input tokens),
so the backbone records them in its architecture and ``apply_extensions`` rebuilds them before a bundle's
weights are loaded. Soft prompts come from `peft` (prompt tuning / p-tuning). Bottleneck adapters
(Houlsby et al. 2019; Pfeiffer et al. 2020) are written here: peft has none, and the `adapters` library
replaces the transformers model classes, which would make every bundle depend on it.
"""
from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from torch import nn

from transferkit.core.errors import ConfigError

# Where adapters go, as patterns over module names of BERT-style encoders (MiniLM, BERT, RoBERTa, ...).
PLACEMENTS = {
    "pfeiffer": (r"layer\.\d+\.output\.dense$",),  # after each feed-forward block
    "houlsby": (r"layer\.\d+\.attention\.output\.dense$", r"layer\.\d+\.output\.dense$"),  # after attention too
}


class Bottleneck(nn.Module):
    """x + up(act(down(x))); ``up`` starts at zero so the adapted model starts as the pretrained one."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down, self.act, self.up = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class AdaptedLinear(nn.Module):
    """A frozen Linear followed by a trainable Bottleneck adapter (before the block's residual and LayerNorm)."""

    def __init__(self, base: nn.Linear, reduction: int):
        super().__init__()
        self.base = base
        self.adapter = Bottleneck(base.out_features, max(1, base.out_features // reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def add_bottleneck_adapters(model: nn.Module, reduction: int = 16, placement: str = "pfeiffer") -> int:
    """Wrap every Linear that ``placement`` names; returns how many were wrapped (0 is a ConfigError)."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"Adapter placement must be one of {tuple(PLACEMENTS)}. Got {placement!r} instead.")
    patterns = [re.compile(p) for p in PLACEMENTS[placement]]
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(p.search(name) for p in patterns)]
    if not targets:
        raise ConfigError(f"Found no layers matching the '{placement}' adapter placement in {type(model).__name__}; "
                          f"bottleneck adapters support BERT-style encoders (layer.N.output.dense).")
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, AdaptedLinear(linear, reduction))
    return len(targets)


def add_soft_prompt(model: nn.Module, method: str = "prompt", num_virtual_tokens: int = 16,
                    init: str = "SAMPLE_VOCAB", encoder_hidden_size: int = 128) -> nn.Module:
    """``model`` wrapped by peft with trainable virtual tokens prepended to every input (the hidden states come
    back with ``num_virtual_tokens`` extra positions first). 'p-tuning' produces them with a small MLP."""
    from peft import PromptEncoderConfig, PromptTuningConfig, get_peft_model

    if method == "prompt":
        config = PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=num_virtual_tokens,
                                    prompt_tuning_init=init)
    elif method == "p-tuning":
        config = PromptEncoderConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=num_virtual_tokens,
                                     encoder_hidden_size=encoder_hidden_size)
    else:
        raise ConfigError(f"Soft-prompt method must be 'prompt' or 'p-tuning'. Got {method!r} instead.")
    with warnings.catch_warnings():  # transformers' deprecation notice about gradient checkpointing, inside peft
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, config)


def apply_extensions(model: nn.Module, extensions: dict[str, Any]) -> nn.Module:
    """Re-add recorded extensions to a freshly built model (bundle loading); returns the (possibly wrapped) model."""
    if "adapters" in extensions:
        add_bottleneck_adapters(model, **extensions["adapters"])
    if "prompt" in extensions:
        model = add_soft_prompt(model, **{**extensions["prompt"], "init": "RANDOM"})  # weights are loaded next
    return model


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft prompt wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "prompt_encoder") else model
