"""The strategy contract, checked for every registered strategy on a tiny real image task.

3 digit classes x 10 images at 32 px through EfficientNet-Lite0 (pretrained unless the strategy says not), and,
for the overfitting check, one fixed batch of 16 images of 4 classes. For every strategy that trains with the
loop: the step-0 loss is ln(K) with a fresh head (below it with a probed head), only the intended parameters
change, one batch can be overfitted to 100% accuracy, and the finalized model predicts like the trained one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pytest
import torch

from tests.strategies.helpers import (
    LOOP_STRATEGIES,
    Task,
    changed_keys,
    eval_logits,
    finalized_copy,
    optimizer_for,
    snapshot,
    text_only,
    train_steps,
    trainable_names,
)
from transferkit.strategies import STRATEGIES, Strategy, StrategyContext, build_strategy
from transferkit.tasks.model import TransferModel

K = 3


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request) -> Strategy:
    return build_strategy(request.param)


@pytest.fixture(params=LOOP_STRATEGIES)
def loop_strategy(request) -> Strategy:
    return build_strategy(request.param)


def _head_init(strategy: Strategy) -> str:
    """'zero', 'probe', or 'fitted' for protonet and setfit, whose prepare() fits their head on the features
    (prototypes; SetFit's logistic regression)."""
    return "fitted" if strategy.name in ("protonet", "setfit") else getattr(strategy.config, "head_init", "zero")


def test_registered_strategy_is_well_formed(strategy: Strategy):
    assert STRATEGIES[strategy.name] is type(strategy)
    assert isinstance(strategy.summary, str) and strategy.summary
    assert isinstance(strategy.config, strategy.config_class)
    assert isinstance(strategy.state_dict(), dict)


def test_loop_strategies_are_the_expected_ones():
    """Guards the parametrisation below: a strategy that stops training with the loop drops out of it silently."""
    assert set(LOOP_STRATEGIES) >= {"head", "partial", "gradual", "lp-ft", "finetune", "l2sp", "scratch"}
    assert "linear-probe" not in LOOP_STRATEGIES


def test_prepare_finalize_gives_an_inference_model(strategy: Strategy, task: Task):
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    model = strategy.finalize(model)
    assert not model.training
    assert all(not m.training for m in model.modules())
    batch = task.batch(model)
    with torch.inference_mode():
        logits = model(batch)
    assert logits.shape == (len(batch["labels"]), K)
    assert torch.isfinite(logits).all()


def _ever_trainable(strategy: Strategy, model: TransferModel, epochs: int = 64) -> set[int]:
    """Parameters that train at some epoch of a long run (gradual unfreezing, warm-up epochs), and those of the
    strategy's helper modules (dann's domain discriminator), which train with the model."""
    ever = {id(p) for helper in strategy.helpers().values() for p in helper.parameters() if p.requires_grad}
    for epoch in range(epochs):
        strategy.on_epoch_start(model, epoch)
        ever |= {id(p) for p in model.parameters() if p.requires_grad}
    strategy.on_epoch_start(model, 0)
    return ever


# (gradual rejects warmup_head_epochs: its first stage is already head-only)
PARAM_GROUP_CASES = [pytest.param(name, {}, id=name) for name in LOOP_STRATEGIES] + [
    pytest.param(name, {"warmup_head_epochs": 2}, id=f"{name}-warmup") for name in LOOP_STRATEGIES
    if "warmup_head_epochs" in {f.name for f in fields(STRATEGIES[name].config_class)} and name != "gradual"]


@pytest.mark.parametrize("name, options", PARAM_GROUP_CASES)
def test_param_groups_hold_each_trainable_parameter_once(task: Task, name: str, options: dict):
    """Every parameter that trains now is in exactly one group; groups may also hold parameters that are frozen
    now but unfreeze later (gradual, warm-up), never ones that no epoch trains."""
    strategy = build_strategy(name, options)
    model = task.model(strategy)
    strategy.prepare(model, task.context(model))
    groups = strategy.param_groups(model, 1e-3, 0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    trainable_now = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable_now <= set(ids), "a trainable parameter is in no group: the optimizer would never update it"
    never = set(ids) - _ever_trainable(strategy, model)
    assert not never, f"{len(never)} grouped parameters never train at any epoch"
    assert {id(p) for p in model.head.parameters()} <= trainable_now
    for g in groups:
        assert g["lr"] > 0
        if g["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in g["params"]), "biases and norm weights must not be decayed"


# ------------------------------------------------------------------------------------------------ step-0 loss


def _step_zero_loss(strategy: Strategy, task: Task) -> tuple[float, bool]:
    """(loss of the first training step, whether prepare() left the head at its fresh all-zero init)."""
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    fresh_head = all(torch.count_nonzero(p) == 0 for p in model.head.parameters())
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    return strategy.training_step(model, task.batch(model), ctx).item(), fresh_head


def test_loss_at_step_zero_is_ln_k(loop_strategy: Strategy, task: Task):
    """A fresh head predicts uniformly, so the first loss is ln(K); a head fitted in prepare() must beat that."""
    loss, fresh_head = _step_zero_loss(loop_strategy, task)
    assert math.isfinite(loss)
    assert fresh_head == (_head_init(loop_strategy) == "zero"), "head_init says otherwise"
    if fresh_head and loop_strategy.needs_teacher:  # uniform student: alpha * KD(teacher || uniform) + (1-alpha) ln K
        assert loss == pytest.approx(_kd_against_uniform(loop_strategy, task), rel=1e-4)
    elif fresh_head and loop_strategy.name == "maml":  # the query loss after the inner loop adapted the zero head
        assert loss < math.log(K), f"maml's step-0 query loss {loss} >= ln({K}): the inner loop made it worse"
    elif fresh_head:
        assert abs(loss - math.log(K)) <= 0.1 * math.log(K), f"step-0 loss {loss} vs ln({K}) = {math.log(K)}"
    else:  # LP-FT's probed head, protonet's prototypes, setfit's logistic head: better than chance at once
        assert loss < math.log(K), f"a head fitted in prepare() gives step-0 loss {loss} >= ln({K})"


def _kd_against_uniform(strategy: Strategy, task: Task) -> float:
    """The distillation loss of a student that predicts uniformly, computed here from the teacher's logits."""
    c = strategy.config
    teacher = task.teacher()
    with torch.no_grad():
        q = (teacher(task.batch(teacher)) / c.temperature).double().softmax(-1)
    kl = (q * (q.log() - math.log(1 / K))).sum(-1).mean().item()
    return c.alpha * c.temperature ** 2 * kl + (1 - c.alpha) * math.log(K)


def test_head_init_defaults():
    assert build_strategy("finetune").config.head_init == "zero"
    assert build_strategy("lp-ft").config.head_init == "probe"


def test_lp_ft_with_a_zero_head_starts_at_ln_k(task: Task):
    loss, fresh_head = _step_zero_loss(build_strategy("lp-ft", {"head_init": "zero"}), task)
    assert fresh_head
    assert abs(loss - math.log(K)) <= 0.1 * math.log(K), f"step-0 loss {loss} vs ln({K}) = {math.log(K)}"


def test_finetune_with_a_probe_head_starts_below_ln_k(task: Task):
    loss, fresh_head = _step_zero_loss(build_strategy("finetune", {"head_init": "probe"}), task)
    assert not fresh_head
    assert loss < math.log(K)


# ------------------------------------------------------------------------------- which parameters change


def test_one_step_changes_only_trainable_parameters(loop_strategy: Strategy, task: Task):
    """Frozen parameters get no gradient and stay bit-identical, even under weight decay (AdamW must skip them
    although gradual and warm-up put frozen blocks in the optimizer)."""
    strategy = loop_strategy
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    frozen_now = {n for n, p in model.named_parameters() if not p.requires_grad}
    before = snapshot(model)
    optimizer = optimizer_for(strategy, model, lr=1e-2, weight_decay=0.05)
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    strategy.training_step(model, task.batch(model), ctx).backward()
    params = dict(model.named_parameters())
    with_grad = {n for n, p in params.items() if p.grad is not None}
    assert with_grad == set(params) - frozen_now, "exactly the trainable parameters must get a gradient"
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    changed_params = changed_keys(model, before) & set(params)
    assert not changed_params & frozen_now, f"frozen parameters changed: {sorted(changed_params & frozen_now)[:5]}"
    head = {f"head.{name}" for name, _ in model.head.named_parameters()}  # linear: weight, bias; protonet: scale
    assert head and head <= changed_params, "the head must learn"


def test_three_steps_move_every_trainable_parameter(loop_strategy: Strategy, task: Task):
    """Without weight decay, after three steps the changed parameters are exactly the trainable ones. (Behind a
    zero head the backbone's first gradient is zero; LoRA's A matrices then wait one more step for B to move.)"""
    strategy = loop_strategy
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    trainable = trainable_names(model)
    before = snapshot(model)
    train_steps(model, strategy, ctx, task.batch(model), optimizer_for(strategy, model, 1e-3, 0.0), steps=3)
    changed_params = changed_keys(model, before) & {n for n, _ in model.named_parameters()}
    assert changed_params == trainable, (f"frozen but changed: {sorted(changed_params - trainable)[:5]}; "
                                         f"trainable but unchanged: {sorted(trainable - changed_params)[:5]}")


# ------------------------------------------------------------------------ overfitting one batch of 16 images

# Head LR per strategy. AdamW moves every weight by ~LR per step whatever its gradient, so the pretrained backbone
# (at 0.3x the head LR and below) is wrecked at 1e-2 with frozen BN; 3e-3 overfits in 10-35 steps. At 32 px the
# frozen features are 99% zeros of ~0.005, so a head on them alone needs a large LR (1e-1: 10-35 steps).
# From scratch (BN in train mode) the eval-mode accuracy lags the running statistics: 15-65 steps at 1e-2
# over 4 seeds.
OVERFIT_LR = {"head": 1e-1, "scratch": 1e-2}
OVERFIT_MAX_STEPS = {"scratch": 120}
DEFAULT_LR, DEFAULT_MAX_STEPS = 3e-3, 80
STEPS_PER_EPOCH, EVAL_EVERY = 10, 5


@dataclass
class Overfit:
    strategy: Strategy
    model: TransferModel
    batch: dict
    steps: int
    accuracy: float
    history: list[tuple[int, float, float]]  # (step, train loss, finalized accuracy)


def _overfit(name: str, task: Task) -> Overfit:
    """Train on one fixed batch as the loop would (epochs of 10 steps, grad clipping 1.0, weight decay 0.05)
    until the finalized model classifies the whole batch correctly."""
    strategy = build_strategy(name)
    model = task.model(strategy)
    ctx: StrategyContext = task.context(model)
    strategy.prepare(model, ctx)
    batch = task.batch(model, 16, shuffle_seed=None)
    assert len(batch["labels"]) == 16 and len(set(batch["labels"].tolist())) == task.n_classes
    optimizer = optimizer_for(strategy, model, lr=OVERFIT_LR.get(name, DEFAULT_LR), weight_decay=0.05)
    history, step, accuracy = [], 0, 0.0
    while step < OVERFIT_MAX_STEPS.get(name, DEFAULT_MAX_STEPS):
        losses = train_steps(model, strategy, ctx, batch, optimizer, EVAL_EVERY, epoch=step // STEPS_PER_EPOCH,
                             clip=1.0)
        assert all(math.isfinite(x) for x in losses), f"non-finite loss in {losses}"
        step += EVAL_EVERY
        final = finalized_copy(strategy, model)
        with torch.inference_mode():
            accuracy = (final(batch).argmax(1) == batch["labels"]).float().mean().item()
        history.append((step, losses[-1], accuracy))
        if accuracy == 1.0:
            break
    return Overfit(strategy, model, batch, step, accuracy, history)


@pytest.fixture(scope="module", params=LOOP_STRATEGIES)
def overfit(request) -> Overfit:
    task = request.getfixturevalue("text_batch16_task" if text_only(request.param) else "batch16_task")
    return _overfit(request.param, task)


def test_overfits_one_batch_of_16(overfit: Overfit):
    assert overfit.accuracy == 1.0, f"{overfit.strategy.name} did not overfit 16 images: {overfit.history}"


def test_finalized_model_predicts_like_the_trained_one(overfit: Overfit):
    reference = eval_logits(overfit.model, overfit.batch)
    final = finalized_copy(overfit.strategy, overfit.model)
    assert not final.training
    with torch.inference_mode():
        logits = final(overfit.batch)
    # merged adapters (LoRA) change the fp32 rounding: allow 1e-4, the bound for merged vs unmerged logits
    np.testing.assert_allclose(logits.numpy(), reference.numpy(), atol=1e-4, rtol=0)


# -------------------------------------------------------------------------------------- specific strategies


def test_finetune_layerwise_learning_rates(task: Task):
    strategy = build_strategy("finetune")
    model = task.model(strategy)
    strategy.prepare(model, task.context(model))
    lr = 1e-3
    lr_of = {id(p): g["lr"] for g in strategy.param_groups(model, lr, 0.05) for p in g["params"]}
    assert all(lr_of[id(p)] == pytest.approx(lr) for p in model.head.parameters())
    blocks = model.backbone.blocks()
    block_lrs = [{lr_of[id(p)] for p in b.parameters()} for b in blocks]
    assert all(len(s) == 1 for s in block_lrs)
    block_lrs = [s.pop() for s in block_lrs]
    c = strategy.config
    assert block_lrs[-1] == pytest.approx(lr * c.backbone_lr_scale)
    assert block_lrs == sorted(block_lrs), "earlier blocks must not learn faster than later ones"
    assert block_lrs[0] == pytest.approx(lr * c.backbone_lr_scale * c.layer_decay ** (len(blocks) - 1))


def test_linear_probe_sets_head_and_freezes_backbone(task: Task):
    strategy = build_strategy("linear-probe")
    model = task.model(strategy)
    ctx = task.context(model)
    before = {k: v for k, v in snapshot(model).items() if k.startswith("backbone.")}
    strategy.prepare(model, ctx)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(not p.requires_grad for p in model.parameters())  # nothing is left for a loop to train
    head = model.head.linear
    assert head.weight.abs().sum() > 0 and head.bias.abs().sum() > 0, "the head was not written"
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "the backbone must stay pretrained"
    # the torch head reproduces the scikit-learn fit: it separates the training features
    x, y = ctx.features("train")
    with torch.inference_mode():
        logits = model.head(torch.from_numpy(x))
    assert (logits.argmax(1).numpy() == y).mean() >= 0.9
    assert strategy.fit_info["C"] in strategy.config.c_grid
    model = strategy.finalize(model)
    with torch.inference_mode():
        np.testing.assert_allclose(model(task.batch(model, 64)).numpy(),
                                   model.head(model.backbone.embed(task.batch(model, 64))).numpy(), atol=1e-5)
