"""setfit (strategies/setfit.py): pairs, the cosine loss, contrastive tuning on MiniLM, the refitted head, a fit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import bbc_texts, write_text_csv
from tests.strategies.helpers import Task, optimizer_for
from transferkit.core.errors import ConfigError
from transferkit.data.loaders import make_loader
from transferkit.strategies import build_strategy
from transferkit.strategies.setfit import all_pairs, cosine_similarity_loss, draw_pairs, fit_logistic
from transferkit.tasks import ClassificationHead


def test_each_anchor_gets_r_positive_and_r_negative_partners_never_itself():
    targets = np.array([0, 0, 0, 1, 1, 2])
    pairs, labels = draw_pairs(np.array([0, 3, 5]), targets, np.random.default_rng(0), 4)
    assert pairs.shape == (20, 2) and labels.shape == (20,)  # anchor 5 is alone in class 2: negatives only
    for a, expected in ((0, (4, 4)), (3, (4, 4)), (5, (0, 4))):
        mine = pairs[:, 0] == a
        assert (int(labels[mine].sum()), int((labels[mine] == 0).sum())) == expected
    assert not (pairs[:, 0] == pairs[:, 1]).any()
    np.testing.assert_array_equal(labels, (targets[pairs[:, 0]] == targets[pairs[:, 1]]).astype(np.float32))
    again, _ = draw_pairs(np.array([0, 3, 5]), targets, np.random.default_rng(0), 4)
    np.testing.assert_array_equal(again, pairs)


def test_cosine_similarity_loss_is_the_mean_squared_error_of_the_cosines():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    pairs, labels = all_pairs(torch.tensor([0, 0, 1]))
    assert pairs.tolist() == [[0, 1], [0, 2], [1, 2]] and labels.tolist() == [1.0, 0.0, 0.0]
    cos = [2 ** -0.5, 0.0, -(2 ** -0.5)]
    expected = ((cos[0] - 1) ** 2 + cos[1] ** 2 + cos[2] ** 2) / 3
    assert cosine_similarity_loss(x, pairs, labels).item() == pytest.approx(expected, rel=1e-6)


def test_config_names_the_parameter_rule_and_value():
    with pytest.raises(ConfigError, match=r"'num_iterations' parameter of SetFitConfig must be an int >= 1. Got 0"):
        build_strategy("setfit", {"num_iterations": 0})
    with pytest.raises(ConfigError, match=r"'head_c' parameter of SetFitConfig must be a float > 0"):
        build_strategy("setfit", {"head_c": -1.0})


def test_images_are_refused_naming_protonet(image_task: Task):
    strategy = build_strategy("setfit")
    model = image_task.model(strategy)
    with pytest.raises(ConfigError, match=r"setfit strategy adapts text backbones only, not efficientnet_lite0 "
                                          r"\(image\).*protonet"):
        strategy.prepare(model, image_task.context(model))


def _embeddings(model, examples) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model.backbone.embed(b) for b in make_loader(examples, model.backbone.preprocessing, None, 64)])


def _same_and_other_cosine(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cosine similarity of same-class pairs and of different-class pairs (i < j)."""
    pairs, same = all_pairs(y)
    cos = torch.nn.functional.cosine_similarity(x[pairs[:, 0]], x[pairs[:, 1]])
    return cos[same == 1].mean().item(), cos[same == 0].mean().item()


def test_an_epoch_of_pairs_pulls_classes_together_then_the_head_is_the_logistic_fit(text_task: Task):
    strategy, model, ctx = text_task.prepared("setfit", {"num_iterations": 4})
    y = torch.tensor(text_task.label_map.encode(text_task.train.labels))
    same_before, other_before = _same_and_other_cosine(_embeddings(model, text_task.train), y)
    loader = make_loader(text_task.train, model.backbone.preprocessing, text_task.label_map, 8, shuffle_seed=0)
    loader.sampler.set_epoch(0)
    optimizer = optimizer_for(strategy, model, lr=1e-2, weight_decay=0.0)  # body at 2e-4: one epoch shows it
    strategy.train_mode(model)
    for batch in strategy.iter_batches(loader, ctx):
        rows, pairs = batch["labels"], batch["pairs"]
        assert set(batch["index"].tolist()) >= {int(i) for i in batch["index"][pairs.flatten()]}
        np.testing.assert_array_equal(batch["pair_labels"].numpy(), (rows[pairs[:, 0]] == rows[pairs[:, 1]]).numpy())
        strategy.training_step(model, batch, ctx).backward()
        optimizer.step()
        optimizer.zero_grad()
    x = _embeddings(model, text_task.train)
    same_after, other_after = _same_and_other_cosine(x, y)
    assert same_after > same_before, (same_before, same_after)
    assert same_after - other_after > same_before - other_before + 0.05, (same_before, other_before, same_after,
                                                                          other_after)
    expected = ClassificationHead(x.shape[1], 3)
    fit_logistic(expected, x.numpy(), y.numpy(), 3, 1.0, 1000)
    torch.testing.assert_close(model.head.linear.weight, expected.linear.weight, atol=1e-4, rtol=1e-3)


def test_setfit_classifies_held_out_texts_from_a_few_labels_per_class(tmp_path: Path):
    """fit --model minilm --strategy setfit on 6 texts per topic, scored on 8 other texts per topic."""
    import transferkit
    from transferkit import api

    topics = ("business", "sports", "tech")
    texts, labels = bbc_texts(per_class=6, topics=topics)
    train = write_text_csv(tmp_path / "train.csv", texts, labels)
    texts, labels = bbc_texts(per_class=8, topics=topics, offset=20)
    test = write_text_csv(tmp_path / "test.csv", texts, labels)
    result = transferkit.fit(str(train), model="minilm", strategy="setfit", epochs=1, out=tmp_path / "run",
                             progress=False, baseline=False, strategy_options={"num_iterations": 5})
    assert result.history[-1]["epoch"] == 1
    accuracy = api.evaluate(result.bundle_dir, str(test), progress=False)["accuracy"]
    assert accuracy >= 0.7, f"setfit on 6 BBC texts per topic: test accuracy {accuracy} (chance: 1/3)"
