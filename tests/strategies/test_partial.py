"""partial: the last N backbone blocks (or a rounded-up fraction of them) and the head train; the rest is frozen."""
from __future__ import annotations

import math

import pytest

from tests.strategies.helpers import Task, block_modules, block_pattern, outside_batchnorm, params_of
from transferkit.core.errors import ConfigError
from transferkit.strategies import build_strategy


def _pattern_after_prepare(task: Task, options: dict) -> list[bool]:
    strategy, model, _ = task.prepared("partial", options)
    assert all(p.requires_grad for p in model.head.parameters()), "the head must train"
    return block_pattern(model)


def test_unfreeze_2_trains_only_the_last_two_blocks_and_the_head(task: Task):
    strategy, model, _ = task.prepared("partial", {"unfreeze": 2})
    blocks = model.backbone.blocks()
    n = len(blocks)
    assert n > 3
    assert block_pattern(model) == [False] * (n - 2) + [True] * 2
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == params_of([*blocks[-2:], model.head])
    # the optimizer gets exactly those: blocks below never train, so they never enter it
    grouped = [id(p) for g in strategy.param_groups(model, 1e-3, 0.05) for p in g["params"]]
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable


def test_default_unfreeze_is_two_blocks(task: Task):
    assert build_strategy("partial").config.unfreeze == 2
    assert sum(_pattern_after_prepare(task, {})) == 2


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.34, 0.99])
def test_fractional_unfreeze_rounds_up(task: Task, fraction: float):
    pattern = _pattern_after_prepare(task, {"unfreeze": fraction})
    n = len(pattern)
    k = math.ceil(fraction * n)
    assert pattern == [False] * (n - k) + [True] * k, f"unfreeze={fraction} of {n} blocks"


@pytest.mark.parametrize("count, expected", [(1, 1), (1.0, 1), (3, 3), (100, None)])
def test_whole_number_unfreeze_counts_blocks(task: Task, count: float, expected: int | None):
    pattern = _pattern_after_prepare(task, {"unfreeze": count})
    k = len(pattern) if expected is None else expected  # more than there are: every block
    assert pattern == [False] * (len(pattern) - k) + [True] * k


@pytest.mark.parametrize("bad", [1.5, 0, 0.0, -1, -0.5, 2.5, 1.0001, float("nan"), float("inf")])
def test_invalid_unfreeze_is_a_config_error(bad: float):
    with pytest.raises(ConfigError, match="unfreeze"):
        build_strategy("partial", {"unfreeze": bad})


def test_frozen_blocks_run_in_eval_mode(task: Task):
    strategy, model, _ = task.prepared("partial", {"unfreeze": 2})
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    blocks = model.backbone.blocks()
    assert all(not m.training for m in block_modules(model, blocks[:-2]))
    top = outside_batchnorm(block_modules(model, blocks[-2:]))
    assert top and all(m.training for m in top), "trainable blocks are in train mode (BN aside)"
    assert model.head.training


def test_partial_with_head_warmup(task: Task):
    strategy, model, _ = task.prepared("partial", {"unfreeze": 2, "warmup_head_epochs": 1})
    n = len(model.backbone.blocks())
    assert block_pattern(model) == [False] * n
    strategy.on_epoch_start(model, 1)
    assert block_pattern(model) == [False] * (n - 2) + [True] * 2
