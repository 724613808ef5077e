"""head: the pretrained backbone stays frozen (and runs as at inference) while only the head trains."""
from __future__ import annotations

import torch

from tests.strategies.helpers import (
    Task,
    batchnorms,
    block_modules,
    bn_statistics,
    changed_keys,
    eval_logits,
    optimizer_for,
    outside_batchnorm,
    snapshot,
    train_steps,
)


def test_backbone_is_fully_frozen(task: Task):
    strategy, model, _ = task.prepared("head")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    grouped = {id(p) for g in strategy.param_groups(model, 1e-3, 0.05) for p in g["params"]}
    assert grouped == {id(p) for p in model.head.parameters()}


def test_frozen_backbone_runs_in_eval_mode(task: Task):
    strategy, model, _ = task.prepared("head")
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    assert model.head.training
    assert all(not m.training for m in block_modules(model))
    # no dropout or batch statistics: training-mode forward passes are deterministic and equal inference
    batch = task.batch(model)
    with torch.no_grad():
        first, second = model(batch), model(batch)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, eval_logits(model, batch), rtol=0, atol=1e-6)


def test_only_the_head_changes(task: Task):
    strategy, model, ctx = task.prepared("head")
    before = snapshot(model)
    train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-2, 0.05), steps=2)
    assert changed_keys(model, before) == {"head.linear.weight", "head.linear.bias"}


def test_bn_train_re_estimates_statistics_of_the_frozen_backbone(task: Task):
    """bn='train' (AdaBN): batch norm runs in train mode and its running statistics follow the data; the rest of
    the frozen backbone stays in eval mode and its parameters do not move."""
    strategy, model, ctx = task.prepared("head", {"bn": "train"})
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    bns = batchnorms(model.backbone)
    assert bns and all(m.training for m in bns)
    others = outside_batchnorm(block_modules(model))
    assert others and all(not m.training for m in others)
    stats, params = bn_statistics(model), {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-2, 0.05), steps=1)
    moved = changed_keys(model, stats)
    assert any(k.endswith("running_mean") for k in moved) and any(k.endswith("running_var") for k in moved)
    assert all(torch.equal(p, params[n]) for n, p in model.backbone.named_parameters())
