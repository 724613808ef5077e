"""How parameters adapt: one file per strategy, each a <Name>Config dataclass + a Strategy subclass.

Imports transferkit.core, transferkit.data and transferkit.backbones. STRATEGIES is the registry; add a
strategy by writing its file and one line here (see docs/CONTRIBUTING.md).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from transferkit.core.errors import ConfigError
from transferkit.core.registry import lookup
from transferkit.strategies.base import Strategy, StrategyConfig, StrategyContext
from transferkit.strategies.finetune import Finetune
from transferkit.strategies.linear_probe import LinearProbe
from transferkit.strategies.scratch import Scratch

STRATEGIES: dict[str, type[Strategy]] = {
    "linear-probe": LinearProbe,
    "finetune": Finetune,
    "scratch": Scratch,
}


def build_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    """Instantiate a registered strategy; ``options`` are fields of its config dataclass."""
    cls = lookup(STRATEGIES, name, "strategy")
    options = dict(options or {})
    valid = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"Strategy '{name}' has no option(s) {', '.join(unknown)}. "
                          f"Its options: {', '.join(sorted(valid)) or 'none'}.")
    return cls(cls.config_class(**options))


__all__ = ["STRATEGIES", "Strategy", "StrategyConfig", "StrategyContext", "build_strategy"]
