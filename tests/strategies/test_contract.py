"""The strategy contract, checked for every registered strategy on a tiny real image task.

3 digit classes x 10 images at 32 px through EfficientNet-Lite0 (pretrained unless the strategy says not).
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import build_backbone
from transferkit.backbones.features import extract_features
from transferkit.backbones.heads import ClassificationHead, TransferModel
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.data.splits import stratified_split
from transferkit.strategies import STRATEGIES, Strategy, StrategyContext, build_strategy
from transferkit.train.config import TrainConfig
from transferkit.train.optim import build_optimizer

IMAGE_SIZE = 32
K = 3


class Task:
    def __init__(self, folder: Path):
        self.train, self.val = stratified_split(load_source(folder).train, 0.2, seed=0)
        self.label_map = LabelMap.from_labels(self.train.labels, "train")

    def model(self, strategy: Strategy) -> TransferModel:
        backbone = build_backbone("efficientnet_lite0", pretrained=strategy.uses_pretrained_weights)
        backbone.preprocessing = backbone.preprocessing.with_image_size(IMAGE_SIZE)
        return TransferModel(backbone, ClassificationHead(backbone.feature_dim, len(self.label_map)))

    def context(self, model: TransferModel) -> StrategyContext:
        spec = model.backbone.preprocessing

        def features(split: str) -> tuple[np.ndarray, np.ndarray]:
            part = {"train": self.train, "val": self.val}[split]
            x = extract_features(model.backbone, make_loader(part, spec, None, 16), "fp32")
            return x, np.array(self.label_map.encode(part.labels))

        return StrategyContext(n_classes=len(self.label_map), seed=0, features=features)

    def batch(self, model: TransferModel, size: int = 12) -> dict:
        loader = make_loader(self.train, model.backbone.preprocessing, self.label_map, size, shuffle_seed=0)
        return next(iter(loader))


@pytest.fixture(scope="module")
def task(digits_folder: Path) -> Task:
    return Task(digits_folder)


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request) -> Strategy:
    return build_strategy(request.param)


def _snapshot(model: TransferModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _one_step(model: TransferModel, strategy: Strategy, ctx: StrategyContext, batch: dict) -> float:
    """One optimizer step exactly as the loop orders the calls."""
    cfg = TrainConfig(epochs=1, lr=1e-2, progress=False)
    optimizer = build_optimizer(strategy.param_groups(model, cfg.lr, cfg.weight_decay), cfg)
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    loss = strategy.training_step(model, batch, ctx)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def test_registered_strategy_is_well_formed(strategy: Strategy):
    assert STRATEGIES[strategy.name] is type(strategy)
    assert isinstance(strategy.summary, str) and strategy.summary
    assert isinstance(strategy.config, strategy.config_class)
    assert isinstance(strategy.state_dict(), dict)


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


def test_param_groups_hold_each_trainable_parameter_once(strategy: Strategy, task: Task):
    if not strategy.trains_with_loop:
        pytest.skip(f"{strategy.name} fits in closed form, without the loop's optimizer")
    model = task.model(strategy)
    strategy.prepare(model, task.context(model))
    groups = strategy.param_groups(model, 1e-3, 0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    for g in groups:
        assert g["lr"] > 0
        if g["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in g["params"]), "biases and norm weights must not be decayed"


def _step_zero_loss(strategy: Strategy, task: Task) -> tuple[float, bool]:
    """(loss of the first training step, whether prepare() left the head at its fresh uniform init)."""
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    fresh_head = all(torch.count_nonzero(p) == 0 for p in model.head.parameters())
    strategy.train_mode(model)
    return strategy.training_step(model, task.batch(model), ctx).item(), fresh_head


def test_loss_at_step_zero_is_ln_k(strategy: Strategy, task: Task):
    """A fresh head predicts uniformly, so the first loss is ln(K); a head fitted in prepare() must beat that."""
    if not strategy.trains_with_loop:
        pytest.skip(f"{strategy.name} does not train with the loop")
    loss, fresh_head = _step_zero_loss(strategy, task)
    if fresh_head:
        assert abs(loss - math.log(K)) <= 0.1 * math.log(K), f"step-0 loss {loss} vs ln({K}) = {math.log(K)}"
    else:  # e.g. finetune's LP-FT head init: better than chance from the first step
        assert loss < math.log(K), f"a head fitted in prepare() gives step-0 loss {loss} >= ln({K})"


def test_finetune_with_a_zero_head_starts_at_ln_k(task: Task):
    if "head_init" not in {f.name for f in fields(STRATEGIES["finetune"].config_class)}:
        pytest.skip("finetune has no head_init option")
    loss, fresh_head = _step_zero_loss(build_strategy("finetune", {"head_init": "zero"}), task)
    assert fresh_head
    assert abs(loss - math.log(K)) <= 0.1 * math.log(K), f"step-0 loss {loss} vs ln({K}) = {math.log(K)}"


def test_one_step_changes_only_trainable_parameters(strategy: Strategy, task: Task):
    if not strategy.trains_with_loop:
        pytest.skip(f"{strategy.name} does not train with the loop")
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    frozen_now = {name for name, p in model.named_parameters() if not p.requires_grad}
    before = _snapshot(model)
    _one_step(model, strategy, ctx, task.batch(model))
    params = dict(model.named_parameters())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    changed_params = changed & set(params)
    assert not changed_params & frozen_now, f"frozen parameters changed: {sorted(changed_params & frozen_now)[:5]}"
    assert {"head.linear.weight", "head.linear.bias"} <= changed_params, "the head must learn"
    assert any(k.startswith("backbone.") for k in changed_params - frozen_now) or all(
        not p.requires_grad for p in model.backbone.parameters()), "trainable backbone parameters did not move"


def test_finetune_keeps_batchnorm_statistics_frozen(task: Task):
    strategy = build_strategy("finetune")
    assert strategy.config.bn == "freeze"  # the default
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    stats = {k: v for k, v in _snapshot(model).items() if "running_" in k or "num_batches_tracked" in k}
    assert stats, "EfficientNet-Lite0 has batch norm"
    _one_step(model, strategy, ctx, task.batch(model))
    after = model.state_dict()
    moved = [k for k, v in stats.items() if not torch.equal(after[k], v)]
    assert not moved, f"BN statistics changed with bn=freeze: {moved[:5]}"


def test_finetune_bn_train_does_update_statistics(task: Task):
    """The contrast that shows the frozen-BN test above can fail."""
    strategy = build_strategy("finetune", {"bn": "train"})
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    before = {k: v for k, v in _snapshot(model).items() if "running_mean" in k}
    _one_step(model, strategy, ctx, task.batch(model))
    after = model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())


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
    before = {k: v for k, v in _snapshot(model).items() if k.startswith("backbone.")}
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
