"""The prototype head (tasks/prototypes.py) against values computed here with numpy on fixed arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.tasks import get_task
from transferkit.tasks.prototypes import ABSENT_LOGIT, COSINE_MAX_SCALE, PrototypeHead

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 5)).astype(np.float32)
Y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 1, 2])


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_cosine_logits_are_scaled_cosines_to_the_means_of_unit_embeddings():
    head = PrototypeHead(5, 3, "cosine", scale=7.0)
    head.set_prototypes(X, Y)
    means = np.stack([_unit(X[Y == c]).mean(0) for c in range(3)])
    expected = 7.0 * _unit(X) @ _unit(means).T
    np.testing.assert_allclose(head(torch.from_numpy(X)).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(head.counts.numpy(), [4, 5, 3])


def test_euclidean_logits_are_negative_scaled_squared_distances():
    head = PrototypeHead(5, 3, "euclidean", scale=0.5)
    head.set_prototypes(X, Y)
    means = np.stack([X[Y == c].mean(0) for c in range(3)])
    expected = -0.5 * ((X[:, None, :] - means[None]) ** 2).sum(-1)
    np.testing.assert_allclose(head(torch.from_numpy(X)).detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_a_fresh_head_predicts_uniformly_and_a_class_without_examples_is_never_predicted():
    head = PrototypeHead(5, 4)
    logits = head(torch.from_numpy(X))
    assert torch.allclose(logits.softmax(-1), torch.full((12, 4), 0.25))
    head.set_prototypes(X, Y)  # class 3 has no example
    logits = head(torch.from_numpy(X))
    assert (logits[:, 3] <= ABSENT_LOGIT / 2).all()
    assert (logits.argmax(1) != 3).all()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_adding_examples_in_two_rounds_equals_fitting_them_at_once(metric: str):
    """What enroll relies on: running means over all examples of a class, whatever the order they came in."""
    once = PrototypeHead(5, 3, metric)
    once.set_prototypes(X, Y)
    twice = PrototypeHead(5, 3, metric)
    twice.set_prototypes(X[:5], Y[:5])
    twice.add_examples(X[5:], Y[5:])
    torch.testing.assert_close(twice.prototypes, once.prototypes)
    torch.testing.assert_close(twice.counts, once.counts)


def test_grown_head_keeps_the_old_logits_and_adds_an_empty_class():
    head = PrototypeHead(5, 3, scale=4.0)
    head.set_prototypes(X, Y)
    bigger = head.grown(4)
    assert bigger.n_classes == 4 and bigger.counts[3] == 0
    old, new = head(torch.from_numpy(X)), bigger(torch.from_numpy(X))
    torch.testing.assert_close(new[:, :3], old)
    bigger.add_examples(X[:2] * 3 + 1, np.array([3, 3]))
    assert bigger.counts[3] == 2 and bigger(torch.from_numpy(X[:2] * 3 + 1)).argmax(1).tolist() == [3, 3]
    with pytest.raises(ValueError):
        bigger.grown(2)


def test_fit_scale_minimises_the_held_out_cross_entropy_within_its_bounds():
    head = PrototypeHead(5, 3, scale=1.0)
    head.set_prototypes(X, Y)
    base = head(torch.from_numpy(X)).detach()  # scale 1

    def nll(scale: float) -> float:
        return float(torch.nn.functional.cross_entropy(base * scale, torch.from_numpy(Y)))

    scale = head.fit_scale(X, Y)
    assert 1.0 <= scale <= COSINE_MAX_SCALE
    assert head.log_scale.exp().item() == pytest.approx(scale)
    grid = np.exp(np.linspace(0, math.log(COSINE_MAX_SCALE), 200))
    assert nll(scale) <= min(nll(s) for s in grid) + 1e-4
    fixed = PrototypeHead(5, 3, learn_scale=False)
    assert fixed.fit_scale(X, Y) == pytest.approx(10.0) and not list(fixed.parameters())


def test_a_perfectly_separated_validation_set_stops_the_cosine_scale_at_its_ceiling():
    head = PrototypeHead(5, 3, scale=1.0)
    head.set_prototypes(X, Y)
    fitted = head.fit_scale(head.prototypes.numpy()[Y], Y)  # each input is its class's prototype: no error
    assert 15 < fitted <= COSINE_MAX_SCALE  # (the loss is flat near 0 up there, so anywhere close to the ceiling)
    with torch.no_grad():
        head.log_scale.fill_(math.log(1000.0))  # learnt past the ceiling: the logits still use the ceiling
    logits = head(torch.from_numpy(X))
    assert logits.abs().max().item() <= COSINE_MAX_SCALE + 1e-4


def test_the_classification_task_builds_a_prototype_head_from_a_manifest_entry():
    head = get_task("classification").head(5, 3, **PrototypeHead(5, 3, "euclidean", learn_scale=False).spec())
    assert isinstance(head, PrototypeHead) and head.metric == "euclidean" and not head.learn_scale
    assert set(head.state_dict()) == {"prototypes", "counts", "log_scale"}
