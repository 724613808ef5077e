"""protonet (strategies/protonet.py): episodes, the prototypes refreshed after an epoch, the closed form, text."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import bbc_texts, write_text_csv
from tests.strategies.helpers import Task, optimizer_for
from transferkit.core.errors import ConfigError
from transferkit.data.loaders import make_loader
from transferkit.strategies import StrategyContext, build_strategy
from transferkit.strategies.protonet import draw_episode, split_support
from transferkit.tasks.prototypes import PrototypeHead


def test_an_episode_takes_up_to_half_of_each_class_as_support_and_skips_single_example_classes():
    targets = np.array([0] * 4 + [1] * 10 + [2] + [3] * 3)
    indices, support = draw_episode(targets, np.random.default_rng(0), None, 5, 5)
    labels = targets[indices]
    sizes = {c: (int(support[labels == c].sum()), int((~support[labels == c]).sum())) for c in np.unique(labels)}
    assert sizes == {0: (2, 2), 1: (5, 5), 3: (2, 1)}  # class 2 has one example: it cannot be support and query
    assert len(set(indices.tolist())) == len(indices)
    again, _ = draw_episode(targets, np.random.default_rng(0), None, 5, 5)
    np.testing.assert_array_equal(again, indices)
    two_way, support = draw_episode(targets, np.random.default_rng(1), 2, 1, 1)
    assert len(np.unique(targets[two_way])) == 2 and support.tolist() == [True, False, True, False]


def test_a_plain_batch_splits_each_class_in_halves():
    mask = split_support(torch.tensor([0, 0, 0, 1, 1, 2]))
    assert mask.tolist() == [True, True, False, True, False, True]


def test_config_names_the_parameter_rule_and_value():
    with pytest.raises(ConfigError, match=r"'metric' parameter of ProtoNetConfig must be one of .*'manhattan'"):
        build_strategy("protonet", {"metric": "manhattan"})
    with pytest.raises(ConfigError, match=r"'k_shot' parameter of ProtoNetConfig must be an int >= 1. Got 0"):
        build_strategy("protonet", {"k_shot": 0})
    with pytest.raises(ConfigError, match=r"'backbone' parameter .* Got 'partial'"):
        build_strategy("protonet", {"backbone": "partial"})
    assert build_strategy("protonet").trains_with_loop
    assert not build_strategy("protonet", {"backbone": "frozen"}).trains_with_loop


def _embeddings(model, examples) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model.backbone.embed(b) for b in make_loader(examples, model.backbone.preprocessing, None, 64)])


def test_an_epoch_of_episodes_trains_the_backbone_then_prototypes_come_from_every_training_example(image_task: Task):
    strategy, model, ctx = image_task.prepared("protonet")
    assert isinstance(model.head, PrototypeHead) and model.head.counts.tolist() == [8.0, 8.0, 8.0]
    loader = make_loader(image_task.train, model.backbone.preprocessing, image_task.label_map, 8, shuffle_seed=0)
    loader.sampler.set_epoch(0)
    optimizer = optimizer_for(strategy, model, lr=1e-3, weight_decay=0.0)
    strategy.train_mode(model)
    episodes = []
    for batch in strategy.iter_batches(loader, ctx):
        labels, support = batch["labels"], batch["support"]
        assert [(int(support[labels == c].sum()), int((labels == c).sum())) for c in range(3)] == [(4, 8)] * 3
        episodes.append(batch["index"].tolist())
        strategy.training_step(model, batch, ctx).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert len(episodes) == len(loader) == 3
    x = _embeddings(model, image_task.train)  # the trained backbone, no augmentation
    y = torch.tensor(image_task.label_map.encode(image_task.train.labels))
    expected = PrototypeHead(x.shape[1], 3)
    expected.set_prototypes(x, y)
    torch.testing.assert_close(model.head.prototypes, expected.prototypes, atol=1e-5, rtol=1e-4)
    assert model.head.counts.tolist() == [8.0, 8.0, 8.0]
    # a resumed epoch (one batch done) draws the episodes the uninterrupted one would
    loader.sampler.set_epoch(0, start=8)
    assert [b["index"].tolist() for b in strategy.iter_batches(loader, ctx)] == episodes[1:]


def test_episodes_need_two_classes_with_two_examples(image_task: Task):
    strategy = build_strategy("protonet")
    model = image_task.model(strategy)
    features = lambda split: (np.eye(3, model.backbone.feature_dim, dtype=np.float32), np.array([0, 1, 2]))  # noqa: E731
    with pytest.raises(ConfigError, match="2\\+ classes with 2\\+ training examples.*-o backbone=frozen"):
        strategy.prepare(model, StrategyContext(n_classes=3, seed=0, features=features))


def test_other_tasks_are_refused(image_task: Task):
    from transferkit.tasks import get_task
    from transferkit.tasks.model import TransferModel

    strategy = build_strategy("protonet")
    backbone = image_task.model(strategy).backbone
    task = get_task("multilabel")
    model = TransferModel(backbone, task.head(backbone.feature_dim, 3), task)
    with pytest.raises(ConfigError, match="needs single-label classification, not multilabel"):
        strategy.prepare(model, image_task.context(model))


def test_soft_targets_are_refused(image_task: Task):
    strategy, model, ctx = image_task.prepared("protonet")
    batch = image_task.batch(model)
    batch["labels"] = torch.nn.functional.one_hot(batch["labels"], 3).float()
    with pytest.raises(ConfigError, match="--mixup/--cutmix"):
        strategy.training_step(model, batch, ctx)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_frozen_protonet_is_the_class_means_of_the_cached_features_on_text(text_task: Task, metric: str):
    strategy, model, ctx = text_task.prepared("protonet", {"backbone": "frozen", "metric": metric})
    assert not any(p.requires_grad for p in model.parameters())
    x, y = ctx.features("train")
    for c in range(3):
        expected = model.head.represent(torch.from_numpy(x[y == c])).mean(0)
        torch.testing.assert_close(model.head.prototypes[c], expected, atol=1e-5, rtol=1e-4)
    model = strategy.finalize(model)
    x_val, y_val = ctx.features("val")
    with torch.inference_mode():
        accuracy = (model.head(torch.from_numpy(x_val)).argmax(1).numpy() == y_val).mean()
    assert accuracy >= 0.8, f"MiniLM prototypes on 3 BBC topics: val accuracy {accuracy}"


def test_episodic_protonet_fits_text_from_a_few_labels_per_class(tmp_path: Path):
    """fit --model minilm --strategy protonet on 6 texts per topic, scored on 8 other texts per topic; then a new
    topic enrolled from 5 texts."""
    import transferkit
    from transferkit import api

    topics = ("business", "sports", "tech")
    texts, labels = bbc_texts(per_class=6, topics=topics)
    train = write_text_csv(tmp_path / "train.csv", texts, labels)
    texts, labels = bbc_texts(per_class=8, topics=topics, offset=20)
    test = write_text_csv(tmp_path / "test.csv", texts, labels)
    result = transferkit.fit(str(train), model="minilm", strategy="protonet", epochs=1, out=tmp_path / "run",
                             progress=False, baseline=False)
    assert result.history[-1]["epoch"] == 1 and result.history[-1]["train_loss"] is not None
    manifest = (result.bundle_dir / "transferkit.json").read_text()
    assert '"kind": "prototype"' in manifest
    accuracy = api.evaluate(result.bundle_dir, str(test), progress=False)["accuracy"]
    assert accuracy >= 0.8, f"protonet on 6 BBC texts per topic: test accuracy {accuracy}"
    # a fourth topic enrolled from 5 texts (transferkit enroll on a CSV), scored on 8 others
    from transferkit.enroll import enroll

    texts, labels = bbc_texts(per_class=5, topics=("politics",))
    enrolled = enroll(result.bundle_dir, write_text_csv(tmp_path / "politics.csv", texts, labels), tmp_path / "b2")
    assert enrolled.added == ["politics"]
    texts, labels = bbc_texts(per_class=8, topics=("politics",), offset=20)
    recall = api.evaluate(enrolled.bundle, str(write_text_csv(tmp_path / "p_test.csv", texts, labels)),
                          progress=False)["accuracy"]
    assert recall >= 0.6, f"held-out politics texts predicted as politics after enrolling 5: {recall}"
