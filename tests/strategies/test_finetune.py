"""finetune: head_init and the Keras two-stage warm-up (warmup_head_epochs epochs with the backbone frozen)."""
from __future__ import annotations

import pytest

from tests.strategies.helpers import (
    Task,
    block_modules,
    block_pattern,
    changed_keys,
    optimizer_for,
    snapshot,
    train_steps,
)
from transferkit.core.errors import ConfigError
from transferkit.strategies import build_strategy


def test_warmup_head_epochs_freezes_the_backbone_first(task: Task):
    strategy, model, _ = task.prepared("finetune", {"warmup_head_epochs": 2})
    n = len(model.backbone.blocks())
    for epoch, trains in [(0, False), (1, False), (2, True), (3, True)]:
        strategy.on_epoch_start(model, epoch)
        strategy.train_mode(model)
        assert block_pattern(model) == [trains] * n, f"epoch {epoch}"
        assert all(p.requires_grad for p in model.head.parameters())
        if not trains:
            assert all(not m.training for m in block_modules(model))


def test_warmup_optimizer_trains_the_backbone_after_warmup(task: Task):
    strategy, model, ctx = task.prepared("finetune", {"warmup_head_epochs": 1})
    optimizer = optimizer_for(strategy, model, lr=1e-3, weight_decay=0.05)
    batch = task.batch(model)
    params = {n for n, _ in model.named_parameters()}
    before = snapshot(model)
    train_steps(model, strategy, ctx, batch, optimizer, steps=2, epoch=0)
    assert changed_keys(model, before) & params == {"head.linear.weight", "head.linear.bias"}
    before = snapshot(model)
    train_steps(model, strategy, ctx, batch, optimizer, steps=1, epoch=1)
    assert (changed_keys(model, before) & params) == params, "after the warm-up every parameter trains"


def test_no_warmup_trains_everything_from_epoch_0(task: Task):
    _, model, _ = task.prepared("finetune")
    assert all(block_pattern(model))


@pytest.mark.parametrize("options", [{"warmup_head_epochs": -1}, {"warmup_head_epochs": 1.5},
                                     {"head_init": "random"}, {"layer_decay": 0}, {"layer_decay": 1.5},
                                     {"backbone_lr_scale": 0}])
def test_invalid_finetune_options_are_config_errors(options: dict):
    with pytest.raises(ConfigError):
        build_strategy("finetune", options)
