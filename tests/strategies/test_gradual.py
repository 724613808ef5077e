"""gradual: stage = epoch // epochs_per_stage; stage s trains the head and the top s * blocks_per_stage blocks.

The stage is a function of the epoch alone, so a resumed run (fresh model, on_epoch_start(model, e)) is in the
stage the interrupted run was in: the resume-refreeze bug of Lightning's BackboneFinetuning cannot happen.
"""
from __future__ import annotations

import pytest
import torch

from tests.strategies.helpers import (
    Task,
    block_pattern,
    changed_keys,
    optimizer_for,
    snapshot,
    train_steps,
)
from transferkit.core.errors import ConfigError
from transferkit.strategies import build_strategy


def _expected(epoch: int, n: int, epochs_per_stage: int = 1, blocks_per_stage: int = 1) -> list[bool]:
    k = min(n, (epoch // epochs_per_stage) * blocks_per_stage)
    return [False] * (n - k) + [True] * k


def test_prepare_leaves_only_the_head_trainable(task: Task):
    strategy, model, _ = task.prepared("gradual")
    assert block_pattern(model) == [False] * len(model.backbone.blocks())
    assert all(p.requires_grad for p in model.head.parameters())
    assert strategy.state_dict() == {"stage": 0}


@pytest.mark.parametrize("options", [{}, {"epochs_per_stage": 2, "blocks_per_stage": 3}, {"blocks_per_stage": 4}],
                         ids=["default", "2-epochs-3-blocks", "4-blocks"])
def test_unfreezing_schedule(task: Task, options: dict):
    strategy, model, _ = task.prepared("gradual", options)
    n = len(model.backbone.blocks())
    for epoch in range(2 * n + 2):
        strategy.on_epoch_start(model, epoch)
        expected = _expected(epoch, n, options.get("epochs_per_stage", 1), options.get("blocks_per_stage", 1))
        assert block_pattern(model) == expected, f"epoch {epoch}"
        assert all(p.requires_grad for p in model.head.parameters())
        assert strategy.state_dict() == {"stage": epoch // options.get("epochs_per_stage", 1)}
    assert all(block_pattern(model)), "eventually every block trains"


def _modes(model) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_resume_at_epoch_3_matches_stepping_through_epochs(task: Task):
    """The interrupted run went through epochs 0..3; the resumed one builds a fresh model and starts at 3."""
    stepped, model_a, _ = task.prepared("gradual")
    for epoch in range(4):
        stepped.on_epoch_start(model_a, epoch)
        stepped.train_mode(model_a)
    resumed, model_b, _ = task.prepared("gradual")
    resumed.load_state_dict(stepped.state_dict())
    resumed.on_epoch_start(model_b, 3)
    resumed.train_mode(model_b)
    grads_a = {n: p.requires_grad for n, p in model_a.named_parameters()}
    grads_b = {n: p.requires_grad for n, p in model_b.named_parameters()}
    assert grads_b == grads_a
    assert sum(block_pattern(model_b)) == 3, "three stages in: the top three blocks train, not just the head"
    assert _modes(model_b) == _modes(model_a)
    assert resumed.state_dict() == stepped.state_dict() == {"stage": 3}


def test_state_dict_round_trip():
    strategy = build_strategy("gradual", {"epochs_per_stage": 2})
    assert strategy.state_dict() == {"stage": 0}
    strategy.load_state_dict({"stage": 5})
    assert strategy.state_dict() == {"stage": 5}
    other = build_strategy("gradual", {"epochs_per_stage": 2})
    other.load_state_dict(strategy.state_dict())
    assert other.state_dict() == {"stage": 5}
    other.load_state_dict({})  # a checkpoint without the key: back to the first stage
    assert other.state_dict() == {"stage": 0}


def test_state_dict_tracks_the_epoch(task: Task):
    strategy, model, _ = task.prepared("gradual", {"epochs_per_stage": 2})
    strategy.on_epoch_start(model, 5)
    saved = strategy.state_dict()
    assert saved == {"stage": 2}
    restored = build_strategy("gradual", {"epochs_per_stage": 2})
    restored.load_state_dict(saved)
    assert restored.state_dict() == saved


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_one_optimizer_trains_blocks_as_they_unfreeze(task: Task, optimizer_name: str):
    """param_groups includes frozen blocks, so the optimizer built before epoch 0 trains them once unfrozen;
    while frozen they stay bit-identical, weight decay and momentum included."""
    strategy, model, ctx = task.prepared("gradual")
    batch = task.batch(model)
    optimizer = optimizer_for(strategy, model, lr=1e-3, weight_decay=0.05, optimizer=optimizer_name)
    blocks = model.backbone.blocks()
    names = {id(p): n for n, p in model.named_parameters()}
    block_names = [{names[id(p)] for p in b.parameters()} for b in blocks]
    before = snapshot(model)
    train_steps(model, strategy, ctx, batch, optimizer, steps=2, epoch=0)
    changed = changed_keys(model, before) & set(names.values())
    assert changed == {n for n, _ in model.head.named_parameters(prefix="head")}, "epoch 0: head only"
    before = snapshot(model)
    train_steps(model, strategy, ctx, batch, optimizer, steps=2, epoch=1)
    changed = changed_keys(model, before) & set(names.values())
    assert block_names[-1] <= changed, "epoch 1: the top block trains"
    assert not changed & set().union(*block_names[:-1]), "epoch 1: the blocks below stay frozen"


@pytest.mark.parametrize("options", [{"epochs_per_stage": 0}, {"blocks_per_stage": 0}, {"blocks_per_stage": 1.5},
                                     {"epochs_per_stage": -1}])
def test_invalid_stage_options_are_config_errors(options: dict):
    with pytest.raises(ConfigError):
        build_strategy("gradual", options)


def test_gradual_honours_or_rejects_warmup_head_epochs(task: Task):
    try:
        strategy, model, _ = task.prepared("gradual", {"warmup_head_epochs": 3})
    except ConfigError:
        return  # rejecting the option is fine too
    for epoch in range(3):
        strategy.on_epoch_start(model, epoch)
        assert not any(block_pattern(model)), f"epoch {epoch} is a head-only warm-up epoch"


def test_bn_stays_frozen_in_unfrozen_blocks(task: Task):
    strategy, model, _ = task.prepared("gradual")
    strategy.on_epoch_start(model, 2)
    strategy.train_mode(model)
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
