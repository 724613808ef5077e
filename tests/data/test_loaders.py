"""transferkit.data.loaders and the training transforms: reproducible epoch order, class-balanced draws,
no hidden use of the global RNG, and the augmentation policies."""
from __future__ import annotations

import copy
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.core.errors import ConfigError
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import EpochSampler, balanced_weights, make_loader
from transferkit.data.preprocess import PreprocessSpec, image_to_tensor, image_transform, train_image_transform
from transferkit.data.sources import load_source
from transferkit.train.config import TrainConfig

SPEC = PreprocessSpec(modality="image", image_size=32)

# ------------------------------------------------------------------------------------------------- EpochSampler


def test_order_depends_only_on_seed_and_epoch():
    a = EpochSampler(50, seed=3)
    a.set_epoch(2)
    torch.manual_seed(123)
    first = list(a)
    b = EpochSampler(50, seed=3)
    for e in (0, 5, 1):  # a different history of epochs on another instance
        b.set_epoch(e)
        list(b)
    b.set_epoch(2)
    torch.manual_seed(999)  # and a different global RNG
    assert list(b) == first
    assert sorted(first) == list(range(50))  # a permutation
    assert first != list(range(50))

    others = []
    for seed, epoch in ((3, 3), (4, 2)):
        s = EpochSampler(50, seed=seed)
        s.set_epoch(epoch)
        others.append(list(s))
    assert all(o != first for o in others)


def test_order_does_not_touch_global_rng():
    state = torch.get_rng_state()
    s = EpochSampler(40, seed=1, weights=[1.0] * 40)
    s.set_epoch(3)
    list(s)
    s2 = EpochSampler(40, seed=1)
    list(s2)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("weighted", [False, True])
def test_set_epoch_start_yields_the_rest(weighted: bool):
    n = 37
    weights = [1.0 + (i % 3) for i in range(n)] if weighted else None
    s = EpochSampler(n, seed=7, weights=weights)
    s.set_epoch(4)
    full = list(s)
    assert len(s) == n and len(full) == n
    for k in (0, 1, 8, 36, 37):
        s.set_epoch(4, start=k)
        assert list(s) == full[k:]
        assert len(s) == n - k
    s.set_epoch(5)  # start resets with the next epoch
    assert len(list(s)) == n


def test_balanced_weights_values():
    targets = [0] * 9 + [1] * 3 + [2]
    w = balanced_weights(targets)
    assert w == pytest.approx([1 / 9] * 9 + [1 / 3] * 3 + [1.0])
    per_class = Counter()
    for t, x in zip(targets, w):
        per_class[t] += x
    assert all(v == pytest.approx(1.0) for v in per_class.values())  # every class has the same total mass


def test_balanced_sampler_draws_classes_equally():
    targets = [0] * 900 + [1] * 100  # 9:1
    s = EpochSampler(len(targets), seed=0, weights=balanced_weights(targets))
    counts = Counter()
    for epoch in range(3):
        s.set_epoch(epoch)
        order = list(s)
        assert len(order) == len(targets)
        counts.update(targets[i] for i in order)
    share = counts[1] / sum(counts.values())
    # 3000 draws with p=0.5: sd ~0.009, so 0.45..0.55 is > 5 sd (and far from the unbalanced 0.1)
    assert 0.45 < share < 0.55, counts

    plain = EpochSampler(len(targets), seed=0)
    plain_counts = Counter(targets[i] for i in plain)
    assert plain_counts == Counter(targets)  # without weights: each example exactly once


# ---------------------------------------------------------------------------------------------------- make_loader


@pytest.fixture(scope="module")
def digits(digits_folder: Path):
    examples = load_source(digits_folder).train
    return examples, LabelMap.from_labels(examples.labels, "digits")


@pytest.mark.parametrize("shuffle_seed", [None, 5])
def test_iterating_a_loader_keeps_global_rng(digits, shuffle_seed):
    examples, label_map = digits
    loader = make_loader(examples, SPEC, label_map, 8, shuffle_seed=shuffle_seed, augment="none")
    torch.manual_seed(42)
    state = torch.get_rng_state()
    batches = list(loader)
    batches += list(loader)  # a second iterator too (the default DataLoader draws a seed per iterator)
    assert torch.equal(torch.get_rng_state(), state)
    assert sum(len(b["labels"]) for b in batches) == 2 * len(examples)
    assert batches[0]["pixel_values"].shape[1:] == (3, 32, 32)


def test_loader_order_follows_sampler(digits):
    examples, label_map = digits
    loader = make_loader(examples, SPEC, label_map, 8, shuffle_seed=5)
    loader.sampler.set_epoch(1)
    expected = list(loader.sampler)
    loader.sampler.set_epoch(1, start=16)
    got = [i for b in loader for i in b["index"].tolist()]
    assert got == expected[16:]
    eval_loader = make_loader(examples, SPEC, label_map, 8)
    assert [i for b in eval_loader for i in b["index"].tolist()] == list(range(len(examples)))


def test_multilabel_image_targets_batch_as_one_row_per_image(digits):
    from transferkit.data.multilabels import MultiLabelMap

    examples, _ = digits
    sets = [("even",) if int(y) % 2 == 0 else ("odd", "small") for y in examples.labels]
    labeled = examples.subset(range(len(examples)))
    labeled.labels = sets
    label_map = MultiLabelMap.from_labels(sets, "digits")
    batch = next(iter(make_loader(labeled, SPEC, label_map, 8)))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (8, 3)
    assert batch["labels"].tolist() == label_map.encode(sets[:8])


def test_make_loader_bool_augment_means_light(digits):
    examples, label_map = digits
    loader = make_loader(examples, SPEC, label_map, 4, shuffle_seed=0, augment=True)
    x1 = loader.dataset[0]["pixel_values"]
    draws = [loader.dataset[0]["pixel_values"] for _ in range(4)]
    assert not all(torch.equal(x1, d) for d in draws)
    plain = make_loader(examples, SPEC, label_map, 4, shuffle_seed=0, augment=False)
    assert torch.equal(plain.dataset[0]["pixel_values"], plain.dataset[0]["pixel_values"])


# -------------------------------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("policy", ["light", "randaugment", "trivial"])
def test_random_policies_shape_and_randomness(digits, policy: str):
    examples, _ = digits
    transform = train_image_transform(SPEC, policy)
    torch.manual_seed(0)  # crops draw from torch, timm's ops from numpy (choice) and python (probability, magnitude)
    np.random.seed(0)
    random.seed(0)
    draws = [image_to_tensor(examples.inputs[0], transform) for _ in range(6)]
    for x in draws:
        assert x.shape == (3, 32, 32)
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()
    assert not all(torch.equal(draws[0], x) for x in draws[1:]), f"{policy} gave the same tensor every draw"


def test_none_policy_is_the_eval_transform(digits):
    examples, _ = digits
    transform = train_image_transform(SPEC, "none")
    a = image_to_tensor(examples.inputs[3], transform)
    b = image_to_tensor(examples.inputs[3], transform)
    ref = image_to_tensor(examples.inputs[3], image_transform(SPEC))
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, b) and torch.equal(a, ref)


def test_hflip_only_when_asked():
    assert "RandomHorizontalFlip" in repr(train_image_transform(SPEC, "light", hflip=1.0))
    assert "RandomHorizontalFlip" not in repr(train_image_transform(SPEC, "light"))


def _timm_ops(transform) -> list:
    """The AugmentOps of the RandAugment inside a timm training transform."""
    for t in getattr(transform, "transforms", []):
        if hasattr(t, "ops"):
            return list(t.ops)
    raise AssertionError(f"no RandAugment in {transform}")


def test_randaugment_survives_its_largest_magnitude(digits):
    """Every op of the policy, applied (p=1) at a magnitude 3 sd above the mean, which timm clips to 10."""
    from PIL import Image

    examples, _ = digits
    image = Image.open(examples.inputs[0]).convert("RGB")
    for op in _timm_ops(train_image_transform(SPEC, "randaugment")):
        op = copy.copy(op)
        op.prob, op.magnitude_std, op.magnitude = 1.0, 0.0, 9 + 3 * 0.5
        out = op(image)
        assert out.size == image.size, op


def test_trivial_magnitudes_stay_below_the_bound():
    """TrivialAugment draws uniform(0, 10): strictly below 10, so posterize always keeps >= 1 bit."""
    ops = _timm_ops(train_image_transform(SPEC, "trivial"))
    assert all(op.magnitude_std == float("inf") and op.magnitude == 10 and op.magnitude_max is None for op in ops)


@pytest.mark.parametrize("bad", ["heavy", "Light", ""])
def test_unknown_policy_raises(bad: str):
    with pytest.raises(ConfigError, match="augment"):
        train_image_transform(SPEC, bad)
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(augment=bad)
