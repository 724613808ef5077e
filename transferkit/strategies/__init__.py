"""How parameters adapt: one file per strategy, each a <Name>Config dataclass + a Strategy subclass.

Imports transferkit.core, transferkit.data and transferkit.backbones. STRATEGIES is the registry; add a
strategy by writing its file and one line here (see docs/CONTRIBUTING.md).
"""
from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

from transferkit.core.errors import ConfigError
from transferkit.core.registry import lookup
from transferkit.strategies.adapter import Adapter
from transferkit.strategies.base import Strategy, StrategyConfig, StrategyContext
from transferkit.strategies.coral import Coral
from transferkit.strategies.dann import Dann
from transferkit.strategies.distill import Distill
from transferkit.strategies.finetune import Finetune
from transferkit.strategies.gradual import Gradual
from transferkit.strategies.head import HeadOnly
from transferkit.strategies.ia3 import IA3
from transferkit.strategies.l2sp import L2SP
from transferkit.strategies.linear_probe import LinearProbe
from transferkit.strategies.lora import Lora
from transferkit.strategies.lp_ft import LPFT
from transferkit.strategies.maml import Maml
from transferkit.strategies.mmd import Mmd
from transferkit.strategies.partial import Partial
from transferkit.strategies.prompt import PromptTuning
from transferkit.strategies.protonet import ProtoNet
from transferkit.strategies.scratch import Scratch
from transferkit.strategies.self_train import SelfTrain
from transferkit.strategies.setfit import SetFit

# Ordered from least to most adapted; `list strategies` shows them in this order.
STRATEGIES: dict[str, type[Strategy]] = {
    "linear-probe": LinearProbe,
    "head": HeadOnly,
    "partial": Partial,
    "gradual": Gradual,
    "prompt": PromptTuning,
    "ia3": IA3,
    "adapter": Adapter,
    "lora": Lora,
    "lp-ft": LPFT,
    "finetune": Finetune,
    "l2sp": L2SP,
    "distill": Distill,
    "dann": Dann,
    "coral": Coral,
    "mmd": Mmd,
    "self-train": SelfTrain,
    "protonet": ProtoNet,
    "setfit": SetFit,
    "maml": Maml,
    "scratch": Scratch,
}


def build_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    """Instantiate a registered strategy; ``options`` are fields of its config dataclass. ConfigError for 'auto'
    (fit's choice among strategies, not one itself) and for an unknown name or option."""
    if name == "auto":
        raise ConfigError("auto is not a strategy by itself: `transferkit fit --strategy auto` chooses one (and the "
                          "backbone) for your data. Name concrete strategies here, e.g. the ones auto chooses between: "
                          "l2sp, finetune, lp-ft, linear-probe.")
    cls = lookup(STRATEGIES, name, "strategy")
    options = dict(options or {})
    valid = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"Strategy '{name}' has no option(s) {', '.join(unknown)}. "
                          f"Its options: {', '.join(sorted(valid)) or 'none'}.")
    hints = typing.get_type_hints(cls.config_class)
    names = {key: _as_names(key, value) for key, value in options.items() if _takes_names(hints.get(key))}
    return cls(cls.config_class(**{**options, **names}))


def _takes_names(hint: Any) -> bool:
    """A field typed ``tuple[str, ...]`` (optionally ``| None``): a list of layer names such as target_modules."""
    return hint is not None and tuple[str, ...] in (hint, *typing.get_args(hint))


def _as_names(key: str, value: Any) -> Any:
    """A list of names from what a user writes: ['a', 'b'], 'a,b', '[a,b]' or 'a' (never the letters of 'a')."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip().strip("'\"") for part in value.strip().removeprefix("[").removesuffix("]").split(",")]
        value = [part for part in value if part]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"The '{key}' option is a list of layer names, e.g. -o {key}=[query,value]. "
                          f"Got {value!r} instead.")
    return tuple(value)


__all__ = ["STRATEGIES", "Strategy", "StrategyConfig", "StrategyContext", "build_strategy"]
