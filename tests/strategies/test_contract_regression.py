"""The strategy contract for the regression task: every strategy that makes sense for a number trains through the
task's loss. 16 generated images whose target is their brightness (EfficientNet-Lite0, 64 px), or 16 generated
sentences whose target counts positive minus negative words (MiniLM) for the text-only strategies. A fresh head
predicts the training mean (standardised step-0 loss = the batch's standardised variance, 1.0 when the batch is the
training set); a few steps lower the loss; the finalized model predicts like the trained one; the linear probe
is ridge. Distillation needs a teacher: tests/test_distillation.py runs it for regression."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.strategies.helpers import (
    LOOP_STRATEGIES,
    eval_logits,
    finalized_copy,
    optimizer_for,
    text_only,
    train_steps,
)
from tests.test_regression_end_to_end import regression_texts
from transferkit.backbones import build_backbone
from transferkit.backbones.features import extract_features
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader
from transferkit.data.targets import NumericTargets
from transferkit.strategies import STRATEGIES, Strategy, StrategyContext, build_strategy
from transferkit.tasks import get_task
from transferkit.tasks.model import TransferModel

REGRESSION_STRATEGIES = [name for name in LOOP_STRATEGIES if not STRATEGIES[name].needs_teacher
                         and "regression" in (STRATEGIES[name].tasks or ("regression",))]
# lp-ft: its ridge head already fits the 16 examples (step-0 loss ~0.004); at 3e-3 AdamW's first backbone steps
# move the features more than that head tolerates (loss ~20, recovering): a probed head is fine-tuned gently
LR = {"head": 1e-1, "scratch": 1e-2, "lp-ft": 1e-4}
REGRESSION_IMAGE_SIZE = 64  # at 32 px the last feature map is 1x1 and brightness barely reaches the features


class RegressionData:
    """16 examples used as train = val = one batch."""

    def __init__(self, examples: Examples, backbone: str):
        self.examples, self.backbone = examples, backbone
        self.targets = NumericTargets.from_labels(examples.labels, examples.source)

    def model(self, strategy: Strategy) -> TransferModel:
        torch.manual_seed(0)
        backbone = build_backbone(self.backbone, pretrained=strategy.uses_pretrained_weights)
        if backbone.modality == "image":
            backbone.preprocessing = backbone.preprocessing.with_image_size(REGRESSION_IMAGE_SIZE)
        task = get_task("regression")
        head = task.head(backbone.feature_dim, 1)
        head.set_target_scale(self.targets.mean, self.targets.std)
        return TransferModel(backbone, head, task)

    def context(self, model: TransferModel) -> StrategyContext:
        def features(split: str) -> tuple[np.ndarray, np.ndarray]:
            loader = make_loader(self.examples, model.backbone.preprocessing, None, 16)
            return extract_features(model.backbone, loader, "fp32"), np.array(self.targets.encode(self.examples.labels))

        return StrategyContext(n_classes=1, seed=0, features=features)

    def batch(self, model: TransferModel) -> dict:
        return next(iter(make_loader(self.examples, model.backbone.preprocessing, self.targets, 16)))


@pytest.fixture(scope="module")
def image_regression(tmp_path_factory: pytest.TempPathFactory) -> RegressionData:
    folder = tmp_path_factory.mktemp("brightness")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(16):
        level = int(rng.integers(10, 245))
        pixels = np.clip(rng.normal(level, 8, size=(REGRESSION_IMAGE_SIZE, REGRESSION_IMAGE_SIZE, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:02d}.png")
        paths.append(str(folder / f"{i:02d}.png"))
        labels.append(str(round(level / 255, 4)))
    return RegressionData(Examples("image", paths, labels, str(folder), paths), "efficientnet_lite0")


@pytest.fixture(scope="module")
def text_regression() -> RegressionData:
    rows = regression_texts(16)
    texts = [t for t, _ in rows]
    return RegressionData(Examples("text", texts, [str(y) for _, y in rows], "texts", texts), "minilm")


def _data(name: str, request: pytest.FixtureRequest) -> RegressionData:
    return request.getfixturevalue("text_regression" if text_only(name) else "image_regression")


@pytest.mark.parametrize("name", REGRESSION_STRATEGIES)
def test_regression_trains_through_the_task_loss(name: str, request: pytest.FixtureRequest):
    data = _data(name, request)
    strategy = build_strategy(name)
    model = data.model(strategy)
    ctx = data.context(model)
    strategy.prepare(model, ctx)
    batch = data.batch(model)
    fresh = all(torch.count_nonzero(p) == 0 for p in model.head.linear.parameters())
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    with torch.no_grad():
        step0 = strategy.training_step(model, batch, ctx).item()
    if fresh:  # predicts the training mean: the standardised targets' variance over the whole set is 1
        assert step0 == pytest.approx(1.0, abs=1e-4)
    else:  # a probed (ridge) head starts below the mean's loss
        assert step0 < 1.0
    optimizer = optimizer_for(strategy, model, lr=LR.get(name, 3e-3), weight_decay=0.0)
    losses = train_steps(model, strategy, ctx, batch, optimizer, steps=8, clip=1.0)
    assert all(math.isfinite(x) for x in losses)
    if fresh:
        assert min(losses) < step0, f"{name}: the loss never went below its step-0 value {step0}: {losses}"
    else:  # a probed head may already fit the batch: training must keep it better than predicting the mean
        assert max(losses) < 1.0, f"{name}: training lost the probe's fit: {losses}"
    reference = eval_logits(model, batch)
    final = finalized_copy(strategy, model)
    with torch.inference_mode():
        np.testing.assert_allclose(final(batch).numpy(), reference.numpy(), atol=1e-4, rtol=0)
    assert reference.shape == (16, 1)


def test_linear_probe_is_ridge_for_a_regression_head(image_regression: RegressionData):
    strategy = build_strategy("linear-probe")
    model = image_regression.model(strategy)
    strategy.prepare(model, image_regression.context(model))
    assert "alpha" in strategy.fit_info and strategy.fit_info["val_r2"] > 0.9  # train = val: it fits the set
    values = strategy.finalize(model)(image_regression.batch(model))[:, 0].detach().numpy()
    truth = np.array(image_regression.targets.encode(image_regression.examples.labels))
    assert np.corrcoef(values, truth)[0, 1] > 0.95


def test_regression_strategies_are_all_loop_strategies_but_distill():
    classification_only = {"self-train", "protonet", "setfit", "maml"}  # pseudo-labels, prototypes, pairs, episodes
    assert set(LOOP_STRATEGIES) - set(REGRESSION_STRATEGIES) == {"distill"} | classification_only
