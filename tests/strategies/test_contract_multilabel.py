"""The strategy contract for the multi-label task: every strategy that makes sense for label sets trains through
the task's BCE loss. 16 generated sentences whose labels are decided by keywords (MiniLM), train = val = one batch.
A fresh head outputs 0 for every label (step-0 loss = log 2); a few steps lower the loss; the finalized model
predicts like the trained one; the linear probe is one-vs-rest logistic regression. Distillation needs a teacher:
tests/test_distillation.py runs it for multi-label."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.strategies.helpers import LOOP_STRATEGIES, eval_logits, finalized_copy, optimizer_for, train_steps
from tests.test_multilabel_end_to_end import multilabel_texts
from transferkit.backbones import build_backbone
from transferkit.backbones.features import extract_features
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader
from transferkit.data.multilabels import MultiLabelMap
from transferkit.strategies import STRATEGIES, Strategy, StrategyContext, build_strategy
from transferkit.tasks import get_task
from transferkit.tasks.model import TransferModel

MULTILABEL_STRATEGIES = [name for name in LOOP_STRATEGIES if not STRATEGIES[name].needs_teacher
                         and "multilabel" in (STRATEGIES[name].tasks or ("multilabel",))]
LR = {"head": 1e-1, "scratch": 1e-2, "lp-ft": 1e-4}


class MultilabelData:
    def __init__(self) -> None:
        rows = multilabel_texts(16)
        texts = [t for t, _ in rows]
        self.examples = Examples("text", texts, [tuple(y) for _, y in rows], "texts", texts)
        self.targets = MultiLabelMap.from_labels(self.examples.labels, "texts")

    def model(self, strategy: Strategy) -> TransferModel:
        torch.manual_seed(0)
        backbone = build_backbone("minilm", pretrained=strategy.uses_pretrained_weights)
        task = get_task("multilabel")
        return TransferModel(backbone, task.head(backbone.feature_dim, len(self.targets)), task)

    def context(self, model: TransferModel) -> StrategyContext:
        def features(split: str) -> tuple[np.ndarray, np.ndarray]:
            loader = make_loader(self.examples, model.backbone.preprocessing, None, 16)
            return extract_features(model.backbone, loader, "fp32"), np.array(self.targets.encode(self.examples.labels))

        return StrategyContext(n_classes=len(self.targets), seed=0, features=features)

    def batch(self, model: TransferModel) -> dict:
        return next(iter(make_loader(self.examples, model.backbone.preprocessing, self.targets, 16)))


@pytest.fixture(scope="module")
def data() -> MultilabelData:
    return MultilabelData()


@pytest.mark.parametrize("name", MULTILABEL_STRATEGIES)
def test_multilabel_trains_through_the_task_loss(name: str, data: MultilabelData):
    strategy = build_strategy(name)
    model = data.model(strategy)
    ctx = data.context(model)
    strategy.prepare(model, ctx)
    batch = data.batch(model)
    assert batch["labels"].shape == (16, 3) and batch["labels"].dtype == torch.float32
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    with torch.no_grad():
        step0 = strategy.training_step(model, batch, ctx).item()
    optimizer = optimizer_for(strategy, model, lr=LR.get(name, 3e-3), weight_decay=0.0)
    losses = train_steps(model, strategy, ctx, batch, optimizer, steps=8, clip=1.0)
    assert all(math.isfinite(x) for x in losses)
    if name != "lp-ft":  # a fresh head: BCE starts near log 2 and falls
        assert step0 < math.log(2) + 0.1 and min(losses) < step0, f"{name}: {step0} -> {losses}"
    else:  # the probed head already fits the batch and must keep fitting it
        assert max(losses) < math.log(2), f"{name}: training lost the probe's fit: {losses}"
    reference = eval_logits(model, batch)
    final = finalized_copy(strategy, model)
    with torch.inference_mode():
        np.testing.assert_allclose(final(batch).numpy(), reference.numpy(), atol=1e-4, rtol=0)
    assert reference.shape == (16, 3)


def test_linear_probe_is_one_vs_rest_logistic(data: MultilabelData):
    strategy = build_strategy("linear-probe")
    model = data.model(strategy)
    strategy.prepare(model, data.context(model))
    assert "C" in strategy.fit_info and strategy.fit_info["val_micro_f1"] > 0.9  # train = val: it fits the set
    decided = model.task.decode(strategy.finalize(model)(data.batch(model))).numpy()
    assert (decided == np.array(data.targets.encode(data.examples.labels))).mean() > 0.9
