"""Label-free selection in the loop: a ``LabelFreeSelection``'s column picks the kept epoch (and the weights kept
are that epoch's), it drives early stopping, and the task's own score no longer decides."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from transferkit.backbones import build_backbone
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.strategies import StrategyContext, build_strategy
from transferkit.tasks import ClassificationHead
from transferkit.tasks.model import TransferModel
from transferkit.train.config import TrainConfig
from transferkit.train.loop import train
from transferkit.train.selection import LabelFreeSelection


class Scripted:
    """A score per call (epoch 0 = before training, then each epoch), remembering the head it scored."""

    def __init__(self, values: list[float]):
        self.values, self.heads = values, []

    def __call__(self, model: TransferModel) -> dict[str, float]:
        self.heads.append(model.head.linear.weight.detach().clone())
        return {"dev_risk": self.values[len(self.heads) - 1]}


def _run(folder: Path, selection: LabelFreeSelection | None, epochs: int, patience: int = 0):
    examples = load_source(folder).train
    labels = LabelMap.from_labels(examples.labels, "train")
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", pretrained=False)
    backbone.preprocessing = spec = backbone.preprocessing.with_image_size(32)
    model = TransferModel(backbone, ClassificationHead(backbone.feature_dim, len(labels)))
    strategy, ctx = build_strategy("scratch"), StrategyContext(n_classes=len(labels), seed=0)
    strategy.prepare(model, ctx)
    cfg = TrainConfig(epochs=epochs, progress=False, patience=patience, lr=1e-2)
    result = train(model, strategy, ctx, make_loader(examples.subset(list(range(0, 30, 3))), spec, labels, 8,
                                                     shuffle_seed=0),
                   make_loader(examples.subset([1, 11, 21]), spec, labels, 64), cfg, selection=selection)
    return result, model


def test_the_label_free_column_picks_the_epoch_and_its_weights(digits_folder: Path):
    scripted = Scripted([0.9, 0.5, 0.2, 0.7])
    result, model = _run(digits_folder, LabelFreeSelection("dev_risk", scripted), epochs=3)
    assert [row["dev_risk"] for row in result.history] == [0.9, 0.5, 0.2, 0.7]
    assert result.best_epoch == 2
    assert torch.equal(model.head.linear.weight, scripted.heads[2])  # epoch 2's weights are the ones kept
    assert not torch.equal(scripted.heads[2], scripted.heads[3])  # (training went on after it)
    assert result.best_score == result.history[2]["val_macro_f1"]  # reports still name the task's score there
    higher = Scripted([0.9, 0.5, 0.2, 0.7])
    assert _run(digits_folder, LabelFreeSelection("dev_risk", higher, lower_is_better=False), 3)[0].best_epoch == 0


def test_the_label_free_column_drives_early_stopping(digits_folder: Path):
    result, _ = _run(digits_folder, LabelFreeSelection("dev_risk", Scripted([0.5, 0.4, 0.6, 0.7, 0.1, 0.1])),
                     epochs=5, patience=2)
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 4  # epochs 0-3


def test_improves_ignores_missing_and_non_finite_scores():
    selection = LabelFreeSelection("dev_risk", lambda model: {})
    assert selection.improves({"dev_risk": 1.0}, math.inf)
    assert not selection.improves({"dev_risk": math.nan}, math.inf)
    assert not selection.improves({}, math.inf)
    assert not selection.improves({"dev_risk": 1.0}, 1.0)  # a tie keeps the earlier epoch
    assert selection.improves({"dev_risk": 5.0}, math.nan)  # an unscored kept epoch loses to any score


def test_a_vetoed_epoch_loses_to_any_eligible_one():
    selection = LabelFreeSelection("dev_risk", lambda model: {}, veto_key="target_collapsed")
    assert selection.improves({"dev_risk": 0.1, "target_collapsed": 0.0}, 1.0)
    assert not selection.improves({"dev_risk": 0.1, "target_collapsed": 1.0}, 1.0)  # lowest risk, but collapsed
    assert selection.improves({"dev_risk": 0.1}, 1.0)  # a row without the column is eligible
    assert selection.improves({"dev_risk": 5.0}, 1.0, best_vetoed=True)  # eligible beats a collapsed kept epoch
    assert selection.improves({"dev_risk": 0.5, "target_collapsed": 1.0}, 1.0, best_vetoed=True)  # all collapsed
    assert not selection.improves({"dev_risk": 2.0, "target_collapsed": 1.0}, 1.0, best_vetoed=True)


class Collapsing(Scripted):
    def __init__(self, values: list[float], collapsed: list[bool]):
        super().__init__(values)
        self.collapsed = collapsed

    def __call__(self, model: TransferModel) -> dict[str, float]:
        row = super().__call__(model)
        return {**row, "target_collapsed": float(self.collapsed[len(self.heads) - 1])}


def test_the_loop_keeps_the_best_epoch_that_did_not_collapse(digits_folder: Path):
    scripted = Collapsing([0.9, 0.5, 0.2, 0.1], [True, False, True, False])
    result, model = _run(digits_folder, LabelFreeSelection("dev_risk", scripted, veto_key="target_collapsed"), 3)
    assert result.best_epoch == 3
    scripted = Collapsing([0.9, 0.5, 0.2, 0.7], [True, False, True, True])
    result, model = _run(digits_folder, LabelFreeSelection("dev_risk", scripted, veto_key="target_collapsed"), 3)
    assert result.best_epoch == 1 and torch.equal(model.head.linear.weight, scripted.heads[1])
