"""The strategy contract for token classification: every strategy task_choice allows for tokens trains MiniLM's
per-word head through the task's loss on 16 generated CoNLL-style sentences (one batch, train = val). The output
has one row per word; a few steps lower the loss; the finalized model (adapters merged) predicts like the trained
one. The linear probe is a per-token logistic regression on per-word features. Distillation needs a teacher:
tests/test_distillation.py runs it for tokens."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.strategies.helpers import LOOP_STRATEGIES, eval_logits, finalized_copy, optimizer_for, train_steps
from tests.test_tokens_end_to_end import sentences
from transferkit.backbones import build_backbone
from transferkit.backbones.features import extract_features
from transferkit.config import FitConfig
from transferkit.data.conll import TagMap
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader
from transferkit.strategies import STRATEGIES, StrategyContext, build_strategy
from transferkit.task_choice import check_options
from transferkit.tasks import TokensTask
from transferkit.tasks.model import TransferModel

# domain adaptation (needs_target) aligns one feature vector per input: refused for tokens (task_choice), as are
# strategies whose ``tasks`` leave tokens out (protonet, setfit, maml: single-label classification)
TOKEN_STRATEGIES = [name for name in sorted(STRATEGIES)
                    if name not in ("linear-probe", "distill") and not STRATEGIES[name].needs_target
                    and "tokens" in (STRATEGIES[name].tasks or ("tokens",))]
LR = {"head": 1e-1, "scratch": 1e-3, "lp-ft": 1e-4}


@pytest.fixture(scope="module")
def data() -> tuple[Examples, TagMap]:
    rows = sentences(16, 3)
    examples = Examples("text", [[w for w, _ in s] for s in rows], [[t for _, t in s] for s in rows], "mem")
    return examples, TagMap.from_labels(examples.labels, "mem")


@pytest.mark.parametrize("name", TOKEN_STRATEGIES)
def test_tokens_train_through_the_task_loss(name: str, data):
    examples, tags = data
    check_options(FitConfig(task="tokens", strategy=name))  # allowed
    strategy = build_strategy(name)
    torch.manual_seed(0)
    backbone = build_backbone("minilm", pretrained=strategy.uses_pretrained_weights)
    task = TokensTask()
    model = TransferModel(backbone, task.head(backbone.feature_dim, len(tags), names=tags.names), task)
    ctx = context(model, examples, tags)
    strategy.prepare(model, ctx)
    batch = next(iter(make_loader(examples, backbone.preprocessing, tags, 16)))
    probed = name == "lp-ft"
    n_words = sum(len(s) for s in examples.inputs)
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    with torch.no_grad():
        step0 = strategy.training_step(model, batch, ctx).item()
    if probed:  # the per-token logistic head already fits the batch
        assert step0 < 0.5
    else:  # a fresh head predicts about uniformly
        assert step0 == pytest.approx(math.log(len(tags)), abs=0.3)
    optimizer = optimizer_for(strategy, model, lr=LR.get(name, 3e-3), weight_decay=0.0)
    losses = train_steps(model, strategy, ctx, batch, optimizer, steps=8, clip=1.0)
    assert all(math.isfinite(x) for x in losses)
    if probed:
        assert max(losses) < 0.5, f"{name}: training lost the probe's fit: {losses}"
    else:
        assert min(losses) < step0, f"{name}: the loss never went below its step-0 value {step0}: {losses}"
    reference = eval_logits(model, batch)
    assert reference.shape == (n_words, len(tags))
    final = finalized_copy(strategy, model)
    with torch.inference_mode():
        np.testing.assert_allclose(final(batch).numpy(), reference.numpy(), atol=1e-4, rtol=0)


def context(model: TransferModel, examples: Examples, tags: TagMap) -> StrategyContext:
    """Per-word features of the 16 sentences (train = val) and their tag ids, as api's feature source gives them."""
    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        loader = make_loader(examples, model.backbone.preprocessing, None, 16)
        return extract_features(model.backbone, loader, "fp32"), np.concatenate(tags.encode(examples.labels))

    return StrategyContext(n_classes=len(tags), seed=0, features=features)


def test_linear_probe_is_a_per_token_logistic_regression(data):
    examples, tags = data
    strategy = build_strategy("linear-probe")
    check_options(FitConfig(task="tokens", strategy="linear-probe"))
    backbone = build_backbone("minilm")
    task = TokensTask(tags.names)
    model = TransferModel(backbone, task.head(backbone.feature_dim, len(tags)), task)
    strategy.prepare(model, context(model, examples, tags))
    batch = next(iter(make_loader(examples, backbone.preprocessing, tags, 16)))
    predicted = task.decode(strategy.finalize(model)(batch)).numpy()
    assert task.metrics(batch["labels"].numpy(), predicted)["entity_f1"] > 0.9  # train = val: it fits the set


def test_distill_and_init_from_are_allowed_for_tokens():
    """Distillation needs a teacher, so this contract's loop leaves it out; tests/test_distillation.py runs it."""
    check_options(FitConfig(task="tokens", strategy="distill", teacher="t", unlabeled_data="u.conll"))
    check_options(FitConfig(task="tokens", init_from="b"))


def test_token_strategies_are_the_loop_strategies_but_distill():
    needs_target = {name for name in LOOP_STRATEGIES if STRATEGIES[name].needs_target}  # refused for tokens
    classification_only = {"protonet", "setfit", "maml"}  # one label per input: prototypes, pairs, episodes
    assert set(LOOP_STRATEGIES) - set(TOKEN_STRATEGIES) == {"distill"} | needs_target | classification_only
