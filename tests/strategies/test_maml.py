"""maml (strategies/maml.py): FOMAML's inner SGD steps and outer update on a tiny linear model, the two phases, a
fit on digits whose bundle predicts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from tests.strategies.helpers import Task
from transferkit.core.errors import ConfigError
from transferkit.data.loaders import make_loader
from transferkit.strategies import build_strategy
from transferkit.strategies.maml import adapt, first_order_meta_loss

X_SUPPORT = np.array([[1.0, 0.5, -1.0], [0.0, 2.0, 1.0], [-1.0, 0.0, 0.5], [0.5, -1.5, 2.0]])
Y_SUPPORT = np.array([0, 1, 1, 0])
X_QUERY = np.array([[2.0, -1.0, 0.0], [0.5, 0.5, 0.5]])
Y_QUERY = np.array([1, 0])


def _linear() -> nn.Linear:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.2, 0.1], [-0.4, 0.5, 0.2]]))
        layer.bias.copy_(torch.tensor([0.1, -0.1]))
    return layer


def _loss_fn(layer: nn.Module, x: np.ndarray, y: np.ndarray):
    inputs, targets = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return lambda weights: nn.functional.cross_entropy(functional_call(layer, weights, (inputs,)), targets)


def _grad_by_hand(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d mean cross-entropy / d (W, b) of a softmax over x W^T + b: (p - onehot)^T x / n and the mean of p - onehot."""
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(w.shape[0])[y]) / len(y)
    return d.T @ x, d.sum(0)


def _sgd_by_hand(w, b, x, y, lr: float, steps: int):
    for _ in range(steps):
        gw, gb = _grad_by_hand(w, b, x, y)
        w, b = w - lr * gw, b - lr * gb
    return w, b


def _theta(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


@pytest.mark.parametrize("steps", [1, 3])
def test_the_inner_loop_is_plain_sgd_on_a_copy(steps: int):
    layer = _linear()
    params = dict(layer.named_parameters())
    w0, b0 = _theta(layer)
    fast = adapt(params, _loss_fn(layer, X_SUPPORT, Y_SUPPORT), steps, 0.5)
    w, b = _sgd_by_hand(w0, b0, X_SUPPORT, Y_SUPPORT, 0.5, steps)
    np.testing.assert_allclose(fast["weight"].numpy(), w, atol=1e-6)
    np.testing.assert_allclose(fast["bias"].numpy(), b, atol=1e-6)
    assert not fast["weight"].requires_grad
    np.testing.assert_array_equal(layer.weight.detach().numpy(), w0.astype(np.float32))  # theta is left alone


def test_the_outer_update_is_theta_minus_beta_times_the_query_gradient_at_the_adapted_weights():
    """FOMAML: theta' = theta - beta * grad L_query(phi), phi = theta after the inner SGD steps on the support."""
    layer = _linear()
    params = dict(layer.named_parameters())
    w0, b0 = _theta(layer)
    alpha, beta, steps = 0.5, 0.1, 2
    fast = adapt(params, _loss_fn(layer, X_SUPPORT, Y_SUPPORT), steps, alpha)
    loss = first_order_meta_loss(params, fast, _loss_fn(layer, X_QUERY, Y_QUERY))
    optimizer = torch.optim.SGD(layer.parameters(), lr=beta)
    loss.backward()
    optimizer.step()
    w_phi, b_phi = _sgd_by_hand(w0, b0, X_SUPPORT, Y_SUPPORT, alpha, steps)
    gw, gb = _grad_by_hand(w_phi, b_phi, X_QUERY, Y_QUERY)
    np.testing.assert_allclose(layer.weight.detach().numpy(), w0 - beta * gw, atol=1e-6)
    np.testing.assert_allclose(layer.bias.detach().numpy(), b0 - beta * gb, atol=1e-6)
    z = X_QUERY @ w_phi.T + b_phi  # the returned value is the query loss at phi
    expected = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(2), Y_QUERY])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_config_names_the_parameter_rule_and_value():
    with pytest.raises(ConfigError, match=r"'inner_steps' parameter of MamlConfig must be an int >= 1. Got 0"):
        build_strategy("maml", {"inner_steps": 0})
    with pytest.raises(ConfigError, match=r"'inner_lr' parameter of MamlConfig must be None or in \(0, 10\]"):
        build_strategy("maml", {"inner_lr": 0.0})


def test_episodes_need_two_classes_with_two_examples_and_other_tasks_are_refused(image_task: Task):
    from transferkit.strategies import StrategyContext
    from transferkit.tasks import get_task
    from transferkit.tasks.model import TransferModel

    strategy = build_strategy("maml")
    model = image_task.model(strategy)
    features = lambda split: (np.eye(3, model.backbone.feature_dim, dtype=np.float32), np.array([0, 1, 2]))  # noqa: E731
    with pytest.raises(ConfigError, match=r"2\+ classes with 2\+ training examples.*-o meta_epochs=0"):
        strategy.prepare(model, StrategyContext(n_classes=3, seed=0, features=features))
    task = get_task("multilabel")
    model = TransferModel(model.backbone, task.head(model.backbone.feature_dim, 3), task)
    with pytest.raises(ConfigError, match="needs single-label classification, not multilabel"):
        strategy.prepare(model, image_task.context(model))


def test_meta_epochs_draw_episodes_then_fine_tuning_sees_the_loader_batches(image_task: Task):
    strategy, model, ctx = image_task.prepared("maml", {"meta_epochs": 1, "unfreeze": 1})
    assert all(p.requires_grad for p in (*model.backbone.blocks()[-1].parameters(), *model.head.parameters()))
    assert not any(p.requires_grad for p in model.backbone.blocks()[-2].parameters())
    loader = make_loader(image_task.train, model.backbone.preprocessing, image_task.label_map, 8, shuffle_seed=0)
    for epoch, episodic in ((0, True), (1, False)):
        loader.sampler.set_epoch(epoch)
        strategy.on_epoch_start(model, epoch)
        batches = list(strategy.iter_batches(loader, ctx))
        assert len(batches) == len(loader)
        assert all(("support" in b) == episodic for b in batches)
        loss = strategy.training_step(model, batches[0], ctx)
        assert torch.isfinite(loss) and loss.requires_grad


def test_a_short_maml_fit_on_digits_gives_a_bundle_that_predicts(digits_folder: Path, tmp_path: Path):
    import transferkit
    from transferkit import api

    result = transferkit.fit(str(digits_folder), model="efficientnet_lite0", image_size=32, strategy="maml",
                             epochs=2, batch_size=8, out=tmp_path / "run", progress=False, baseline=False,
                             strategy_options={"meta_epochs": 1, "inner_steps": 2})
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert json.loads((result.bundle_dir / "transferkit.json").read_text())["strategy"]["name"] == "maml"
    predictions = api.predict(result.bundle_dir, str(digits_folder), progress=False)
    assert len(predictions.labels) == 30 and set(predictions.labels) <= {"0", "1", "2"}
