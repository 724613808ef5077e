"""self-train: pseudo-labels only above the threshold, FixMatch's weak/strong image views, plain pseudo-labelling
for text, and the refusals (no --target-data, not classification, bad options)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tests.strategies.helpers import Task, optimizer_for, train_steps
from transferkit.core.errors import ConfigError
from transferkit.data.loaders import make_loader
from transferkit.strategies import build_strategy
from transferkit.strategies.self_train import (
    SelfTrain,
    SelfTrainConfig,
    align_distribution,
    pseudo_labels,
    strong_view,
    unlabeled_loss,
    weak_view,
    within_quota,
)


def probabilities_of(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)


def test_pseudo_labels_only_at_or_above_the_threshold():
    logits = probabilities_of([[0.96, 0.02, 0.02], [0.94, 0.03, 0.03], [0.025, 0.95, 0.025], [0.2, 0.3, 0.5]])
    labels, confident = pseudo_labels(logits, 0.95)
    assert confident.tolist() == [True, False, True, False]
    assert labels.tolist() == [0, 0, 1, 2]
    assert pseudo_labels(logits, 0.5)[1].tolist() == [True, True, True, True]


def test_unlabeled_loss_is_the_strong_views_cross_entropy_on_confident_rows_only():
    weak = probabilities_of([[0.97, 0.02, 0.01], [0.5, 0.3, 0.2]])  # row 0 confident (class 0), row 1 not
    strong = torch.tensor([[0.1, 2.0, -1.0], [3.0, -2.0, 0.5]], requires_grad=True)
    loss, confident = unlabeled_loss(strong, weak, 0.95)
    assert confident.tolist() == [True, False]
    expected = F.cross_entropy(strong[:1].detach(), torch.tensor([0])) / 2  # averaged over both rows
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.all(strong.grad[1] == 0) and torch.any(strong.grad[0] != 0)  # no gradient from row 1
    none, mask = unlabeled_loss(strong, weak, 0.99)
    assert none.item() == 0.0 and not mask.any()


def test_distribution_alignment_matches_remixmatch_on_fixed_tensors():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    prior, mean = torch.tensor([1 / 3, 1 / 3, 1 / 3]), torch.tensor([0.65, 0.25, 0.10])
    aligned = align_distribution(p, prior, mean)
    by_hand = [[0.7 / 0.65, 0.2 / 0.25, 0.1 / 0.10], [0.6 / 0.65, 0.3 / 0.25, 0.1 / 0.10]]
    by_hand = torch.tensor([[v / sum(row) for v in row] for row in by_hand])
    assert torch.allclose(aligned, by_hand, atol=1e-6)
    assert torch.allclose(aligned.sum(-1), torch.ones(2))
    assert torch.equal(align_distribution(p, prior, prior), p)  # a target already at the prior is left alone


def test_alignment_stops_one_class_from_taking_every_pseudo_label():
    """A model leaning to class 0 on the whole target: without alignment every confident pseudo-label is 0; with
    it, the running target mean learns the lean and takes it back out, so class 0 stops being over-confident."""
    strategy = SelfTrain(SelfTrainConfig(threshold=0.6))
    strategy.source_counts = torch.zeros(3, dtype=torch.float64)
    strategy.target_mean, strategy.aligned_batches = torch.zeros(3), 0
    leaning = torch.tensor([[3.0, 1.0, 0.0], [3.0, 0.0, 1.5], [3.0, 1.0, 1.0], [3.0, 0.5, 2.0]])
    source_labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(300):
        aligned = strategy.weak_probabilities(leaning, source_labels)
    plain = leaning.softmax(-1)
    assert pseudo_labels(plain, 0.6)[0][pseudo_labels(plain, 0.6)[1]].tolist() == [0, 0, 0, 0]
    assert aligned.max(-1).values.max() < plain.max(-1).values.min()  # no longer confidently class 0
    unbiased = strategy.target_mean / (1 - 0.99 ** strategy.aligned_batches)
    assert strategy.aligned_batches == 300 and torch.allclose(unbiased, plain.mean(0), atol=1e-4)
    first = SelfTrain(SelfTrainConfig(threshold=0.6))
    first.source_counts, first.target_mean, first.aligned_batches = torch.zeros(3, dtype=torch.float64), \
        torch.zeros(3), 0
    expected = align_distribution(plain, torch.full((3,), 1 / 3), plain.mean(0))  # the first batch counts fully
    assert torch.allclose(first.weak_probabilities(leaning, source_labels), expected, atol=1e-6)
    state = strategy.state_dict()
    again = SelfTrain(SelfTrainConfig(threshold=0.6))
    again.load_state_dict(state)
    assert torch.equal(again.source_counts, strategy.source_counts)
    assert torch.equal(again.target_mean, strategy.target_mean) and again.aligned_batches == 300


def test_class_quota_keeps_each_classs_most_confident_rows_up_to_its_share():
    p = torch.tensor([[0.99, 0.01], [0.97, 0.03], [0.98, 0.02], [0.96, 0.04], [0.02, 0.98], [0.5, 0.5]])
    confident = p.max(-1).values >= 0.95
    kept = within_quota(p, confident, torch.tensor([0.5, 0.5]), quota=1.0)  # class 0: at most ceil(0.5 * 6) = 3
    assert kept.tolist() == [True, True, True, False, True, False]  # its 3 most confident; row 3 (0.96) is out
    assert within_quota(p, confident, torch.tensor([0.5, 0.5]), quota=0.0).tolist() == confident.tolist()
    strong = torch.zeros(6, 2, requires_grad=True)
    loss, counted = unlabeled_loss(strong, p, 0.95, torch.tensor([0.5, 0.5]), 1.0)
    assert counted.tolist() == kept.tolist() and loss.item() == pytest.approx(4 * math.log(2) / 6, rel=1e-6)


def test_weak_view_shifts_and_strong_view_recolours_per_image():
    torch.manual_seed(0)
    flat = torch.full((4, 3, 16, 16), 77, dtype=torch.uint8)
    assert torch.equal(weak_view(flat), flat)  # a shift of a uniform image is the same image
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    shifted = weak_view(images)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert not torch.equal(shifted, images)
    strong = strong_view(images)
    changed = [not torch.equal(a, b) for a, b in zip(strong, images)]
    assert sum(changed) >= 6  # RandAugment is drawn per image (a few draws may be identity-like)


def test_image_step_pseudo_labels_confident_target_images_and_trains(image_task: Task):
    # FixMatch alone: alignment and the quota would (rightly) take back a head that says class 1 for everything
    strategy, model, ctx = image_task.prepared("self-train", {"threshold": 0.95, "distribution_alignment": False,
                                                              "class_quota": 0})
    batch = image_task.batch(model, 8)
    target = next(iter(make_loader(image_task.val, model.backbone.preprocessing, None, 6, shuffle_seed=0)))
    paired = {**batch, "target": target}
    with torch.no_grad():  # a head that puts ~0.99 on class 1 whatever the input: every target image counts
        model.head.linear.weight.zero_()
        model.head.linear.bias.copy_(torch.tensor([0.0, 6.0, 0.0]))
    losses = train_steps(model, strategy, ctx, paired, optimizer_for(strategy, model, lr=1e-3))
    assert torch.isfinite(torch.tensor(losses)).all()
    assert (strategy.pseudo_labelled, strategy.seen) == (6, 6)
    aligned, model3, ctx3 = image_task.prepared("self-train", {"threshold": 0.95})
    with torch.no_grad():
        model3.head.linear.weight.zero_()
        model3.head.linear.bias.copy_(torch.tensor([0.0, 6.0, 0.0]))
    train_steps(model3, aligned, ctx3, paired, optimizer_for(aligned, model3, lr=1e-3))
    assert aligned.pseudo_labelled < 6  # the same biased head, aligned: class 1 no longer takes every target image
    strict, model2, ctx2 = image_task.prepared("self-train", {"threshold": 1.0})
    with torch.no_grad():
        for p in model2.head.parameters():
            p.zero_()  # uniform 1/3: below any threshold over 1/3
    train_steps(model2, strict, ctx2, paired, optimizer_for(strict, model2, lr=1e-3))
    assert (strict.pseudo_labelled, strict.seen) == (0, 6)
    assert strict.state_dict()["seen"] == 6


def test_text_and_audio_get_the_batch_itself_as_both_views():
    strategy = build_strategy("self-train")
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    model = SimpleNamespace(backbone=SimpleNamespace(modality="text"))
    weak, strong = strategy.views(model, batch)
    assert weak is batch and strong is batch


def test_options_and_refusals():
    with pytest.raises(ConfigError, match="'threshold' parameter of SelfTrainConfig must be a probability"):
        SelfTrainConfig(threshold=0.0)
    with pytest.raises(ConfigError, match="'hflip'"):
        SelfTrainConfig(hflip=1.5)
    assert SelfTrainConfig().threshold == 0.95
    strategy = build_strategy("self-train")
    assert strategy.needs_target
    model = SimpleNamespace(task=SimpleNamespace(name="regression"))
    with pytest.raises(ConfigError, match="single-label classification, not regression"):
        strategy.prepare(model, None)


def test_fit_refuses_self_train_without_target_data(digits_folder, tmp_path):
    from transferkit import api

    with pytest.raises(ConfigError, match="self-train strategy needs --target-data"):
        api.fit(str(digits_folder), model="efficientnet_lite0", strategy="self-train", epochs=1, image_size=32,
                out=str(tmp_path / "run"), progress=False)
