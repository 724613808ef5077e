"""Search spaces (transferkit.strategies.search): one per strategy, each holding the strategy's defaults, and every
point of it a valid configuration."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import optuna
import pytest

from transferkit.strategies import STRATEGIES, build_strategy
from transferkit.strategies.search import SEARCH_SPACES
from transferkit.train.config import TrainConfig

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


class Ranges:
    """A trial that records each suggestion's range and answers its low end."""

    def __init__(self) -> None:
        self.ranges: dict[str, tuple[str, Any]] = {}

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.ranges[name] = ("range", (low, high))
        return low

    suggest_int = suggest_float

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.ranges[name] = ("choices", choices)
        return choices[0]


def test_every_strategy_has_a_space():
    assert set(SEARCH_SPACES) == set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_space_holds_the_defaults_and_names_real_fields(name: str):
    """tune's first trial is the default configuration: each default must lie in its range (or choices), and each
    parameter must be a TrainConfig field or an option of the strategy's config."""
    trial = Ranges()
    params = SEARCH_SPACES[name](trial)
    assert set(params) == set(trial.ranges)
    defaults = {**{f.name: f.default for f in fields(TrainConfig)}, **vars(STRATEGIES[name].config_class())}
    for param, (kind, spec) in trial.ranges.items():
        assert param in defaults, f"{name}: {param} is neither a TrainConfig field nor a {name} option"
        value = defaults[param]
        assert (spec[0] <= value <= spec[1]) if kind == "range" else value in spec, f"{name}.{param}={value}: {spec}"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_sampled_points_are_valid_configs(name: str):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = SEARCH_SPACES[name](study.ask())
        TrainConfig(**{k: v for k, v in params.items() if k in TRAIN_FIELDS})
        build_strategy(name, {k: v for k, v in params.items() if k not in TRAIN_FIELDS})


def test_l2sp_does_not_search_weight_decay():
    """L2-SP's penalty replaces weight decay (its param groups set it to 0): searching it would be searching noise."""
    assert "weight_decay" not in SEARCH_SPACES["l2sp"](Ranges())
    assert {"rank", "alpha"} <= set(SEARCH_SPACES["lora"](Ranges()))
