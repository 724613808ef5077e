"""The batch-norm policy every strategy shares: 'freeze' keeps the running statistics, 'train' updates them."""
from __future__ import annotations

import pytest
import torch

from tests.strategies.helpers import (
    LOOP_STRATEGIES,
    Task,
    batchnorms,
    bn_statistics,
    changed_keys,
    optimizer_for,
    snapshot,
    text_only,
    train_steps,
)
from transferkit.core.errors import ConfigError
from transferkit.strategies import STRATEGIES, build_strategy
from transferkit.strategies.base import PeftStrategy


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_default_bn_policy(name: str):
    """Pretrained statistics are kept by default; the from-scratch baseline must learn its own."""
    assert build_strategy(name).config.bn == ("train" if name == "scratch" else "freeze")


@pytest.mark.parametrize("name", [n for n in LOOP_STRATEGIES if not text_only(n)])  # MiniLM has no batch norm
@pytest.mark.parametrize("bn", ["freeze", "train"])
def test_bn_policy_after_a_step(task: Task, name: str, bn: str):
    strategy, model, ctx = task.prepared(name, {"bn": bn})
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    bns = batchnorms(model)
    assert bns, "EfficientNet-Lite0 has batch norm"
    assert all(m.training == (bn == "train") for m in bns)
    before = bn_statistics(model)
    train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-3, 0.05), steps=1)
    moved = changed_keys(model, before)
    if bn == "freeze":
        assert not moved, f"BN statistics changed with bn=freeze: {sorted(moved)[:5]}"
    else:
        assert {k for k in before if k.endswith("running_mean")} <= moved, "every BN layer's statistics update"


@pytest.mark.parametrize("name", LOOP_STRATEGIES)
def test_unknown_bn_policy_is_a_config_error(name: str):
    with pytest.raises(ConfigError, match="bn"):
        build_strategy(name, {"bn": "adabn"})


@pytest.mark.parametrize("name", sorted(n for n, cls in STRATEGIES.items() if issubclass(cls, PeftStrategy)))
@pytest.mark.parametrize("bn", ["freeze", "train"])
def test_peft_adapter_state_holds_every_tensor_training_changed(task: Task, name: str, bn: str):
    """adapter.safetensors must rebuild the model: whatever a step changed (batch-norm statistics with bn=train
    included) is in adapter_state, and nothing that stayed pretrained is."""
    strategy, model, ctx = task.prepared(name, {"bn": bn})
    before = snapshot(model)
    train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-3, 0.05), steps=1)
    moved = changed_keys(model, before)
    state = strategy.adapter_state(model)
    assert moved and moved <= set(state), f"changed but not saved: {sorted(moved - set(state))[:5]}"
    assert any(k.endswith("running_mean") for k in moved) == (bn == "train" and bool(batchnorms(model)))
    for key, value in state.items():
        assert torch.equal(value, model.state_dict()[key]), key
