"""l2sp: fine-tune everything with alpha/2 ||w - w0||^2 toward the pretrained backbone and beta/2 ||W||^2 on the
head, instead of weight decay."""
from __future__ import annotations

import pytest
import torch

from tests.strategies.helpers import Task, optimizer_for, train_steps
from transferkit.core.errors import ConfigError
from transferkit.strategies import build_strategy


def _drift(strategy, model) -> float:
    return sum(((p.detach() - strategy.anchor[n]) ** 2).sum() for n, p in model.backbone.named_parameters()).item()


def test_penalty_is_zero_right_after_prepare(task: Task):
    strategy, model, _ = task.prepared("l2sp", {"alpha": 1.0, "beta": 1.0})
    assert set(strategy.anchor) == {n for n, _ in model.backbone.named_parameters()}
    assert strategy.penalty(model).item() == 0.0  # weights == anchor, and a fresh head is all zeros


def test_penalty_grows_once_weights_move(task: Task):
    strategy, model, ctx = task.prepared("l2sp", {"alpha": 1.0, "beta": 0.0})
    anchor = {n: t.clone() for n, t in strategy.anchor.items()}
    train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-3, 0.05), steps=2)
    penalty = strategy.penalty(model).item()
    assert penalty > 0
    assert penalty == pytest.approx(0.5 * 1.0 * _drift(strategy, model), rel=1e-4)
    assert all(torch.equal(strategy.anchor[n], t) for n, t in anchor.items()), "the anchor must not move"


def test_beta_penalises_head_weights_only(task: Task):
    strategy, model, ctx = task.prepared("l2sp", {"alpha": 0.0, "beta": 0.5})
    train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-2, 0.0), steps=1)
    expected = 0.5 * 0.5 * (model.head.linear.weight.detach() ** 2).sum().item()
    assert expected > 0
    assert strategy.penalty(model).item() == pytest.approx(expected, rel=1e-5)


def test_training_step_adds_the_penalty(task: Task):
    strategy, model, ctx = task.prepared("l2sp", {"alpha": 1.0, "beta": 1.0})
    batch = task.batch(model)
    train_steps(model, strategy, ctx, batch, optimizer_for(strategy, model, 1e-2, 0.0), steps=2)
    strategy.train_mode(model)
    with torch.no_grad():
        total = strategy.training_step(model, batch, ctx).item()
        parts = model.loss(batch).item() + strategy.penalty(model).item()
    assert strategy.penalty(model).item() > 0
    assert total == pytest.approx(parts, rel=1e-5)


def test_param_groups_have_no_weight_decay(task: Task):
    strategy, model, _ = task.prepared("l2sp")
    groups = strategy.param_groups(model, 1e-3, 0.05)
    assert groups and all(g["weight_decay"] == 0 for g in groups)
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_a_large_alpha_keeps_the_backbone_closer_to_the_anchor(task: Task):
    drifts = {}
    for alpha in (0.0, 100.0):
        strategy, model, ctx = task.prepared("l2sp", {"alpha": alpha, "beta": 0.0})
        train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-3, 0.05), steps=4)
        drifts[alpha] = _drift(strategy, model)
    assert drifts[0.0] > 0
    assert drifts[100.0] < 0.5 * drifts[0.0], drifts


@pytest.mark.parametrize("options", [{"alpha": -1.0}, {"beta": -0.1}])
def test_negative_strengths_are_config_errors(options: dict):
    with pytest.raises(ConfigError):
        build_strategy("l2sp", options)
