"""The loop on awkward input: a training batch of one example while batch norm trains, a training set of one,
and divergence (a NaN/inf loss stops the run and keeps the best weights so far, or fails if no epoch finished).

Small runs through EfficientNet-Lite0 at 32 px; `scratch` (random weights, batch norm training) is the fastest
model with batch norm in training mode.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_digit_folder
from transferkit import api
from transferkit.backbones import build_backbone
from transferkit.core.errors import TrainingDiverged
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.strategies import StrategyContext, build_strategy
from transferkit.strategies.base import Strategy
from transferkit.tasks import ClassificationHead
from transferkit.tasks.model import TransferModel
from transferkit.train.checkpoint import complete_checkpoints
from transferkit.train.config import TrainConfig
from transferkit.train.loop import train

BASE = dict(model="efficientnet_lite0", image_size=32, progress=False, seed=1, patience=0)


def _strict_json(path: Path) -> object:
    """JSON as the standard has it: a bare NaN or Infinity is an error, not a number."""
    def refuse(token: str) -> None:
        raise ValueError(f"{path.name} holds a bare {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _loop_state(run: Path) -> dict:
    return json.loads((complete_checkpoints(run / "checkpoints")[-1] / "state.json").read_text())["loop"]


@pytest.fixture(scope="module")
def odd_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """9 training images (batches of 8 and 1) and a separate validation folder."""
    root = tmp_path_factory.mktemp("odd")
    return write_digit_folder(root / "train", (0, 1, 2), 3), write_digit_folder(root / "val", (0, 1, 2), 2, offset=3)


# ------------------------------------------------------------------------------------------ a batch of one example


@pytest.mark.parametrize("strategy, options", [
    ("scratch", {}),
    ("finetune", {"strategy_options": {"bn": "train"}}),
    ("scratch", {"mixup": 0.2, "sampler": "balanced", "grad_accum": 2}),
], ids=["scratch", "finetune-bn-train", "scratch-mixup-balanced-accum"])
def test_last_batch_of_one_with_batchnorm_training(odd_folders, tmp_path: Path, strategy: str, options: dict):
    train_dir, val_dir = odd_folders
    out = tmp_path / "run"
    result = api.fit(str(train_dir), val_data=str(val_dir), strategy=strategy, epochs=2, out=str(out), **BASE,
                     **options)
    state = _loop_state(out)
    accum = options.get("grad_accum", 1)
    assert state["step"] == 2 * math.ceil(2 / accum)  # every epoch: a batch of 8, then one of 1
    assert state["single_example_batches"] == 2  # the last batch of each epoch, nothing skipped or dropped
    assert all(np.isfinite(row["train_loss"]) for row in result.history[1:])
    assert "2 training step(s) had a batch of one example" in (out / "report.md").read_text()


def test_batches_of_more_than_one_keep_batchnorm_statistics(odd_folders, tmp_path: Path):
    """Batch size 3 on 9 images: no single-example batch, so no step leaves batch norm out of training."""
    train_dir, val_dir = odd_folders
    out = tmp_path / "run"
    api.fit(str(train_dir), val_data=str(val_dir), strategy="scratch", epochs=1, batch_size=3, out=str(out), **BASE)
    assert _loop_state(out)["single_example_batches"] == 0
    assert "batch of one example" not in (out / "report.md").read_text()


def test_a_training_set_of_one_example(digits_folder: Path):
    """The data doctor asks for two classes, so only the loop itself sees this: one image, batch norm training."""
    examples = load_source(digits_folder).train
    labels = LabelMap.from_labels(examples.labels, "train")
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", pretrained=False)
    backbone.preprocessing = spec = backbone.preprocessing.with_image_size(32)
    model = TransferModel(backbone, ClassificationHead(backbone.feature_dim, len(labels)))
    strategy, ctx = build_strategy("scratch"), StrategyContext(n_classes=len(labels), seed=0)
    strategy.prepare(model, ctx)
    result = train(model, strategy, ctx, make_loader(examples.subset([0]), spec, labels, 8, shuffle_seed=0),
                   make_loader(examples.subset([1, 11, 21]), spec, labels, 64), TrainConfig(epochs=2, progress=False))
    assert result.single_example_batches == 2 and [row["epoch"] for row in result.history] == [0, 1, 2]
    assert all(np.isfinite(row["train_loss"]) for row in result.history[1:])


# ------------------------------------------------------------------------------------------------------ divergence


def _poison_step(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """The ``at``-th training step (1-based) returns a NaN loss; every other step is the strategy's own."""
    calls = {"n": 0}
    original = Strategy.training_step

    def training_step(self, model, batch, ctx):
        calls["n"] += 1
        loss = original(self, model, batch, ctx)
        return loss * float("nan") if calls["n"] == at else loss

    monkeypatch.setattr(Strategy, "training_step", training_step)


def test_nan_loss_stops_and_keeps_the_best_epoch(digits_folder: Path, tmp_path: Path, monkeypatch):
    """24 training images in batches of 8: step 5 is the second of epoch 2."""
    _poison_step(monkeypatch, at=5)
    out = tmp_path / "run"
    result = api.fit(str(digits_folder), strategy="head", epochs=4, out=str(out), keep_checkpoints=100, **BASE)
    history, metrics = _strict_json(out / "history.json"), _strict_json(out / "metrics.json")
    assert history == result.history
    assert [row["epoch"] for row in history] == [0, 1, 2]  # stopped in epoch 2: no epochs 3 and 4
    assert history[2]["val_loss"] is None and "diverged at epoch 2, step 5" in history[2]["diverged"]
    assert np.isfinite(history[2]["train_loss"])  # the mean of the finite steps of epoch 2 (step 4)
    diverged = metrics["diverged"]
    assert (diverged["epoch"], diverged["step"], diverged["what"], diverged["value"]) == (2, 5, "training loss", "nan")
    assert "lower learning rate (--lr, now 0.001)" in diverged["message"]
    state = _loop_state(out)
    assert state["step"] == 4 and state["finished"] and state["diverged"] == diverged

    # the bundle holds the best finished epoch: the best weights of the epoch-1 checkpoint, nothing later
    best_epoch = metrics["best_epoch"]
    assert best_epoch in (0, 1) and best_epoch == max(range(2), key=lambda e: (history[e]["val_macro_f1"],
                                                                                 -history[e]["val_loss"]))
    epoch_end = [c for c in complete_checkpoints(out / "checkpoints")
                 if json.loads((c / "state.json").read_text())["loop"]["epoch"] == 1][0]
    bundle = load_file(str(out / "bundle" / "model.safetensors"))
    for folder in (epoch_end, complete_checkpoints(out / "checkpoints")[-1]):
        best = load_file(str(folder / "best_model.safetensors"))
        assert all(torch.equal(bundle[k], best[k]) for k in bundle)
    report = (out / "report.md").read_text()
    assert "stopped because training diverged" in report and "Training diverged at epoch 2, step 5" in report


def test_nan_loss_in_the_first_epoch_fails(digits_folder: Path, tmp_path: Path, monkeypatch):
    _poison_step(monkeypatch, at=2)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 2: the training loss became nan\. Try a lower "
                                               r"learning rate .* No epoch finished"):
        api.fit(str(digits_folder), strategy="head", epochs=2, out=str(out), **BASE)
    assert not (out / "bundle").exists() and not (out / "metrics.json").exists()
    with pytest.raises(TrainingDiverged):  # resuming does not pretend otherwise
        api.fit(resume=str(out))


def test_nan_validation_loss_stops_and_keeps_the_epoch_before(digits_folder: Path, tmp_path: Path, monkeypatch):
    """Finite training steps whose weights score NaN on validation (logits overflowed) end the run just the same."""
    from transferkit.train import loop

    calls = {"n": 0}
    original = loop.validate

    def validate(*args, **kwargs):
        calls["n"] += 1  # 1: epoch 0 (before training), 2: after epoch 1, 3: after epoch 2
        scores = original(*args, **kwargs)
        return {**scores, "val_loss": float("inf")} if calls["n"] == 3 else scores

    monkeypatch.setattr(loop, "validate", validate)
    out = tmp_path / "run"
    api.fit(str(digits_folder), strategy="head", epochs=4, out=str(out), **BASE)
    history, metrics = _strict_json(out / "history.json"), _strict_json(out / "metrics.json")
    assert [row["epoch"] for row in history] == [0, 1, 2] and history[2]["val_loss"] is None
    assert metrics["diverged"]["what"] == "validation loss" and metrics["diverged"]["value"] == "inf"
    assert "epoch 2, in validation after step 6" in metrics["diverged"]["message"]  # 3 steps per epoch
    assert metrics["best_epoch"] in (0, 1) and _loop_state(out)["step"] == 6


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    from transferkit import cli

    monkeypatch.setattr(sys, "argv", ["transferkit", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    return code, " ".join(capsys.readouterr().err.split())


def test_cli_warns_and_keeps_a_finite_model(odd_folders, tmp_path: Path, monkeypatch, capsys):
    """One step per epoch (9 images, batch 16): step 2 diverges, in epoch 2; epoch 1 is kept or the one before."""
    _poison_step(monkeypatch, at=2)
    train_dir, val_dir = odd_folders
    out = tmp_path / "run"
    args = ["fit", "--data", str(train_dir), "--val-data", str(val_dir), "--model", "efficientnet_lite0",
            "--image-size", "32", "--strategy", "head", "--batch-size", "16", "--epochs", "4", "--out", str(out)]
    code, err = _cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "warning: Training diverged at epoch 2, step 2: the training loss became nan" in err, err
    metrics, history = _strict_json(out / "metrics.json"), _strict_json(out / "history.json")
    assert f"The bundle holds epoch {metrics['best_epoch']}, the best before it." in err
    assert metrics["diverged"]["epoch"] == 2 and metrics["best_epoch"] in (0, 1)
    assert len(history) == 3 and history[-1]["diverged"] and history[-1]["train_loss"] is None
    bundle = load_file(str(out / "bundle" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in bundle.values())


def test_cli_divergence_without_a_finished_epoch_exits_2(odd_folders, tmp_path: Path, monkeypatch, capsys):
    """A real divergence: SGD at lr 1e38 overflows the head within the first epoch (5 steps of 2 images)."""
    train_dir, val_dir = odd_folders
    args = ["fit", "--data", str(train_dir), "--val-data", str(val_dir), "--model", "efficientnet_lite0",
            "--image-size", "32", "--strategy", "head", "--optimizer", "sgd", "--lr", "1e38", "--batch-size", "2",
            "--epochs", "2", "--out", str(tmp_path / "run")]
    code, err = _cli(args, monkeypatch, capsys)
    assert code == 2, err
    assert "Training diverged at epoch 1, " in err and "--lr, now 1e+38" in err, err
    assert "No epoch finished" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ one macro-F1 everywhere


def test_history_and_metrics_agree_on_a_split_missing_classes(tmp_path: Path):
    """4 classes, a validation split holding only digit 0: the loop's score for the kept epoch is metrics.json's."""
    train_dir = write_digit_folder(tmp_path / "train", (0, 1, 2, 3), 4)
    val_dir = write_digit_folder(tmp_path / "val", (0,), 4, offset=4)
    out = tmp_path / "run"
    api.fit(str(train_dir), val_data=str(val_dir), strategy="head", epochs=2, out=str(out), **BASE)
    history, metrics = _strict_json(out / "history.json"), _strict_json(out / "metrics.json")
    kept = history[metrics["best_epoch"]]
    assert metrics["val"]["macro_f1"] == pytest.approx(kept["val_macro_f1"])
    assert metrics["val"]["accuracy"] == pytest.approx(kept["val_accuracy"])
    predicted = {i for i, row in enumerate(metrics["val"]["confusion_matrix"][0]) if row}
    assert metrics["val"]["macro_n_classes"] == len(predicted | {0})
    sentence = (f"Macro averages are over the {metrics['val']['macro_n_classes']} classes present in this split's "
                "labels or predictions")
    assert sentence in (out / "report.md").read_text()
    assert sentence.replace("'", "&#39;") in (out / "report.html").read_text(encoding="utf-8")
