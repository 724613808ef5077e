"""Domain adaptation strategies (dann, coral, mmd) and fit --target-data: refusals, the paired step, one real fit.

Source: sklearn digits (dark ink on white) in class folders; target: other digits, inverted (white on black), in
one folder without labels. The paired step runs source and target through the backbone in one pass (text padded
to one length) and adds the domain loss of the strategy's config; the fit trains, checkpoints the discriminator
and leaves it out of the bundle, which predicts the target images.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import VENV_BIN, bbc_texts, write_inverted_digits, write_text_csv
from tests.strategies.helpers import Task
from tests.test_tokens_end_to_end import sentences, write_conll
from transferkit import api
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.strategies import STRATEGIES, StrategyContext, build_strategy
from transferkit.strategies.domain import joint_features
from transferkit.strategies.losses import coral_loss, dann_lambda, mmd_loss

DOMAIN = ("dann", "coral", "mmd")
FIT = dict(model="efficientnet_lite0", image_size=32, epochs=2, progress=False, baseline=False, seed=0)


@pytest.fixture(scope="module")
def target_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inverted_digits(tmp_path_factory.mktemp("target") / "inverted", (0, 1, 2), 6)


def _paired(task: Task, model, target_folder: Path, size: int = 8) -> dict:
    spec = model.backbone.preprocessing
    target = next(iter(make_loader(load_source(target_folder, labeled=False).train, spec, None, size, shuffle_seed=0)))
    return {**task.batch(model, size), "target": target}


# ------------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("name", DOMAIN)
def test_domain_strategy_without_target_data_names_the_flag(name: str, digits_folder: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match=f"The {name} strategy needs --target-data"):
        api.fit(str(digits_folder), strategy=name, out=str(tmp_path / "run"), **FIT)


def test_other_strategies_refuse_target_data_naming_those_that_use_it(digits_folder: Path, target_folder: Path,
                                                                     tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        api.fit(str(digits_folder), strategy="finetune", target_data=str(target_folder), out=str(tmp_path / "r"), **FIT)
    users = [name for name, cls in STRATEGIES.items() if cls.needs_target]
    assert set(DOMAIN) <= set(users)
    assert all(name in str(info.value) for name in users) and "not finetune" in str(info.value)


def test_target_of_another_modality_is_refused(digits_folder: Path, tmp_path: Path):
    texts = write_text_csv(tmp_path / "target.csv", ["a text", "another text"], None)
    with pytest.raises(DataError, match="holds text data but the training data"):
        api.fit(str(digits_folder), strategy="coral", target_data=str(texts), out=str(tmp_path / "run"), **FIT)


def test_several_processes_and_token_tasks_are_refused(digits_folder: Path, target_folder: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    conll = write_conll(tmp_path / "train.conll", sentences(20, seed=0))
    target = write_text_csv(tmp_path / "target.csv", ["some words here", "more words there"], None)
    with pytest.raises(ConfigError, match="token classification"):
        api.fit(str(conll), strategy="mmd", target_data=str(target), model="minilm", out=str(tmp_path / "t"),
                epochs=1, progress=False, baseline=False)
    monkeypatch.setenv("WORLD_SIZE", "2")  # inside a multi-process launch
    with pytest.raises(ConfigError, match="trains in one process"):
        api.fit(str(digits_folder), strategy="dann", target_data=str(target_folder), out=str(tmp_path / "r"), **FIT)


def test_cli_refusal_is_one_line_with_exit_2(digits_folder: Path, tmp_path: Path, cli_env: dict[str, str]):
    proc = subprocess.run([str(VENV_BIN / "transferkit"), "fit", "--data", str(digits_folder), "--strategy", "dann",
                           "--image-size", "32", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "--target-data" in lines[0] and "Traceback" not in proc.stderr


def test_options_are_validated():
    with pytest.raises(ConfigError, match="'weight' parameter of DannConfig"):
        build_strategy("dann", {"weight": -1})
    with pytest.raises(ConfigError, match="'layer' parameter of CoralConfig"):
        build_strategy("coral", {"layer": "fc8"})
    with pytest.raises(ConfigError, match="'multipliers' parameter of MmdConfig"):
        build_strategy("mmd", {"multipliers": []})
    assert build_strategy("mmd", {"multipliers": [1, 2]}).config.multipliers == (1, 2)


# --------------------------------------------------------------------------------------------- the paired step


def test_joint_features_equal_separate_passes_for_texts_of_different_lengths(text_task: Task):
    """Text batches are padded to one length for the joint pass; the padding is masked, so each side's features
    are what the backbone gives it alone."""
    model = text_task.model(build_strategy("mmd")).eval()
    texts, _ = bbc_texts(per_class=2, topics=("tech",), chars=60)
    short = make_loader(load_source(write_text_csv(Path(text_task.train.source).parent / "short.csv", texts, None),
                                    labeled=False).train, model.backbone.preprocessing, None, 2)
    target = next(iter(short))
    source = text_task.batch(model, 4)
    assert source["input_ids"].shape[1] != target["input_ids"].shape[1]
    with torch.no_grad():
        f_s, f_t = joint_features(model, source, target)
        alone_s = model.backbone.embed({k: v for k, v in source.items() if k not in ("labels", "index")})
        alone_t = model.backbone.embed({k: v for k, v in target.items() if k != "index"})
    assert torch.allclose(f_s, alone_s, atol=1e-5) and torch.allclose(f_t, alone_t, atol=1e-5)


@pytest.mark.parametrize("name, loss", [("coral", coral_loss), ("mmd", mmd_loss)])
def test_step_adds_the_weighted_domain_loss(image_task: Task, target_folder: Path, name: str, loss):
    options = {"weight": 2.5, **({"layer": "features"} if name == "coral" else {})}
    strategy = build_strategy(name, options)
    model = image_task.model(strategy)
    ctx = StrategyContext(n_classes=image_task.n_classes, seed=0)
    strategy.prepare(model, ctx)
    strategy.train_mode(model)
    batch = _paired(image_task, model, target_folder)
    got = strategy.training_step(model, batch, ctx).item()
    with torch.no_grad():
        f_s = model.backbone.embed({"pixel_values": batch["pixel_values"]})
        f_t = model.backbone.embed({"pixel_values": batch["target"]["pixel_values"]})
        task_loss = model.head.loss(model.head(f_s), batch["labels"]).item()
    assert got == pytest.approx(task_loss + 2.5 * loss(f_s, f_t).item(), rel=1e-4)
    assert task_loss == pytest.approx(math.log(image_task.n_classes), rel=1e-4)  # a fresh head: the rest is domain


def test_dann_step_trains_the_discriminator_and_reverses_its_gradient_into_the_backbone(image_task: Task,
                                                                                      target_folder: Path):
    class HalfWay:  # a stream at p = 0.5: the reversal coefficient is 2 / (1 + e^-5) - 1
        progress = 0.5

    strategy = build_strategy("dann", {"weight": 1.0})
    model = image_task.model(strategy)
    ctx = StrategyContext(n_classes=image_task.n_classes, seed=0, target=HalfWay())
    strategy.prepare(model, ctx)
    assert set(strategy.helpers()) == {"discriminator"}
    grouped = {id(p) for g in strategy.param_groups(model, 1e-3, 0.0) for p in g["params"]}
    assert {id(p) for p in strategy.discriminator.parameters()} <= grouped
    strategy.train_mode(model)
    assert strategy.discriminator.training
    strategy.training_step(model, _paired(image_task, model, target_folder), ctx).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in strategy.discriminator.parameters())
    # the head's weights are zero, so the backbone's only gradient is the (reversed) domain one
    top = [p for p in model.backbone.blocks()[-1].parameters() if p.grad is not None]
    assert top and any(p.grad.abs().sum() > 0 for p in top)
    parts = strategy.step_parts()  # what TensorBoard gets as train/<name>
    assert set(parts) == {"task_loss", "domain_loss", "domain_accuracy", "reversal_coeff"}
    assert parts["task_loss"] == pytest.approx(math.log(image_task.n_classes), rel=1e-4)
    assert parts["reversal_coeff"] == pytest.approx(dann_lambda(0.5)) and 0.0 <= parts["domain_accuracy"] <= 1.0


# ------------------------------------------------------------------------------------------------ end to end


def test_dann_fit_on_inverted_digits_trains_and_its_bundle_predicts(digits_folder: Path, target_folder: Path,
                                                                    tmp_path: Path):
    result = api.fit(str(digits_folder), strategy="dann", target_data=str(target_folder), out=str(tmp_path / "run"),
                     checkpoint_steps=0, **FIT)
    history = result.history
    assert len(history) == 3 and all(math.isfinite(row["train_loss"]) for row in history[1:])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n_target"] == 18 and metrics["target_skipped"] == []
    assert json.loads((result.run_dir / "config.json").read_text())["target_data"] == str(target_folder)
    bundle = load_file(str(result.bundle_dir / "model.safetensors"))
    assert not any("discriminator" in key for key in bundle)  # a helper: checkpointed, never bundled
    ckpt = sorted((result.run_dir / "checkpoints").glob("ckpt-*"))[-1]
    assert any(k.startswith("discriminator/") for k in load_file(str(ckpt / "helpers.safetensors")))
    logged = EventAccumulator(str(result.run_dir / "tensorboard")).Reload().Tags()["scalars"]
    assert {"train/domain_loss", "train/domain_accuracy", "train/reversal_coeff"} <= set(logged)
    out = tmp_path / "preds.csv"
    api.predict(str(result.bundle_dir), str(target_folder), out=str(out))
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18 and {row["label"] for row in rows} <= {"0", "1", "2"}


def test_mmd_fit_on_texts_pairs_tokenized_target_batches(text_csv: Path, tmp_path: Path):
    """Text: the target CSV has no label column; its batches are tokenized like the source's and padded to them."""
    texts, _ = bbc_texts(per_class=4, offset=20, chars=120)
    target = write_text_csv(tmp_path / "target.csv", [t.lower() for t in texts], None)
    result = api.fit(str(text_csv), strategy="mmd", target_data=str(target), model="minilm", epochs=1, seed=0,
                     progress=False, baseline=False, checkpoint_steps=0, out=str(tmp_path / "run"))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n_target"] == len(texts) and math.isfinite(result.history[1]["train_loss"])
    logged = EventAccumulator(str(result.run_dir / "tensorboard")).Reload().Scalars("train/domain_loss")
    assert logged and all(math.isfinite(e.value) for e in logged)
