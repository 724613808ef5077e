"""Training-loop features end to end: gradient accumulation, the time budget, class imbalance, mixup/cutmix.

Small runs of the `head` strategy (frozen EfficientNet-Lite0 in the graph, only the head trains) at 32 px.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_digit_folder
from transferkit import api
from transferkit.data.examples import Examples
from transferkit.data.labels import LabelMap
from transferkit.train.checkpoint import complete_checkpoints
from transferkit.train.config import TrainConfig
from transferkit.train.mixing import build_batch_mixer

BASE = dict(model="efficientnet_lite0", image_size=32, strategy="head", progress=False, seed=1, patience=0)
HEAD_KEYS = ("head.linear.weight", "head.linear.bias")


def _current_weights(run: Path) -> dict[str, torch.Tensor]:
    """The weights at the end of training (the bundle holds the best epoch's, which may be epoch 0)."""
    return load_file(str(complete_checkpoints(run / "checkpoints")[-1] / "model.safetensors"))


def _loop_state(run: Path) -> dict:
    return json.loads((complete_checkpoints(run / "checkpoints")[-1] / "state.json").read_text())["loop"]


# ----------------------------------------------------------------------------------------- gradient accumulation

# head: bn frozen, dropout 0; fp32 because bf16 autocast (auto on CPUs with bf16) rounds batches of 4 and 8 apart
ACCUM = dict(BASE, epochs=1, augment="none", class_weight="none", lr=1e-2, precision="fp32")


def _accum_run(data: Path, tmp_path: Path, name: str, batch_size: int, grad_accum: int, **extra) -> tuple[dict, dict]:
    out = tmp_path / name
    api.fit(str(data), out=str(out), batch_size=batch_size, grad_accum=grad_accum, **ACCUM, **extra)
    return _current_weights(out), _loop_state(out)


def test_grad_accum_matches_the_larger_batch(digits_folder: Path, tmp_path: Path):
    """24 training images: batch 8 = 3 steps; 2 x batch 4 = 6 micro-batches, also 3 steps with the same examples
    (the sampler's order depends only on seed and epoch) and the same 3-step LR schedule."""
    big, big_state = _accum_run(digits_folder, tmp_path, "b8", 8, 1)
    acc, acc_state = _accum_run(digits_folder, tmp_path, "b4x2", 4, 2)
    small, small_state = _accum_run(digits_folder, tmp_path, "b4", 4, 1)
    assert big_state["step"] == acc_state["step"] == 3 and small_state["step"] == 6
    assert not torch.equal(big["head.linear.weight"], torch.zeros_like(big["head.linear.weight"]))  # it trained
    for k in big:
        torch.testing.assert_close(acc[k], big[k], atol=1e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    # the comparison can fail: without accumulation, batch 4 takes twice the steps and ends elsewhere
    assert max((small[k] - big[k]).abs().max().item() for k in HEAD_KEYS) > 1e-3


def test_grad_accum_partial_last_group(tmp_path: Path):
    """20 images: batch 8 = (8, 8, 4); 2 x batch 4 = (4+4, 4+4, 4). The last group holds one micro-batch of 4, which
    should count as a batch of 4, as batch 8's last batch does."""
    train = write_digit_folder(tmp_path / "train", (0, 1), 10)
    val = write_digit_folder(tmp_path / "val", (0, 1), 3, offset=10)
    big, big_state = _accum_run(train, tmp_path, "b8", 8, 1, val_data=str(val))
    acc, acc_state = _accum_run(train, tmp_path, "b4x2", 4, 2, val_data=str(val))
    assert big_state["step"] == acc_state["step"] == 3
    for k in HEAD_KEYS:
        torch.testing.assert_close(acc[k], big[k], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------ time budget


def test_max_minutes_stops_after_the_first_step(digits_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = api.fit(str(digits_folder), out=str(out), epochs=3, max_minutes=1e-5, **BASE)  # 0.6 ms
    assert [row["epoch"] for row in result.history] == [0, 1]
    assert result.history[-1]["partial"] is True
    assert "partial" not in result.history[0]
    state = _loop_state(out)
    assert state["step"] == 1 and state["batches_done"] == 0 and state["epoch"] == 1
    assert state["stopped_by_time"] and state["finished"] and not state["stopped_early"]
    assert json.loads((out / "history.json").read_text()) == result.history
    metrics = json.loads((out / "metrics.json").read_text())
    assert "val" in metrics and metrics["best_epoch"] in (0, 1)
    assert (out / "bundle" / "model.safetensors").is_file()
    report = (out / "report.md").read_text()
    assert "stopped by the --max-minutes budget" in report


# ----------------------------------------------------------------------------------------------------- imbalance


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digit 0 has 3x the images of digits 1 and 2 (18 / 6 / 6)."""
    root = write_digit_folder(tmp_path_factory.mktemp("imbalanced") / "data", (0, 1, 2), 6)
    write_digit_folder(root, (0,), 12, offset=6)
    return root


def test_auto_class_weight_on_imbalanced_data(imbalanced_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    api.fit(str(imbalanced_folder), out=str(out), epochs=1, **BASE)
    imbalance = json.loads((out / "metrics.json").read_text())["imbalance"]
    assert imbalance["class_weight"] == "balanced"
    assert imbalance["class_weight_setting"] == "auto" and imbalance["sampler"] == "shuffle"
    assert 2.5 <= imbalance["largest_to_smallest"] <= 3.5
    report = " ".join((out / "report.md").read_text().split())
    assert "loss class weights: balanced ('auto': balanced from a 1.5x ratio)" in report


def test_auto_class_weight_on_balanced_data(digits_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    api.fit(str(digits_folder), out=str(out), epochs=1, **BASE)
    imbalance = json.loads((out / "metrics.json").read_text())["imbalance"]
    assert imbalance["class_weight"] == "none" and imbalance["largest_to_smallest"] == pytest.approx(1.0)
    assert "loss class weights: none" in " ".join((out / "report.md").read_text().split())


def _prepared(counts: dict[str, int]) -> SimpleNamespace:
    labels = [name for name, n in counts.items() for _ in range(n)]
    train = Examples("image", [f"/x/{i}.png" for i in range(len(labels))], labels, "train")
    return SimpleNamespace(train=train, label_map=LabelMap.from_labels(labels, "train"), task="classification")


@pytest.mark.parametrize("counts,setting,sampler,expected", [
    ({"a": 30, "b": 10}, "none", "shuffle", "none"),  # explicit none wins over 3x imbalance
    ({"a": 30, "b": 10}, "auto", "shuffle", "balanced"),
    ({"a": 30, "b": 10}, "auto", "balanced", "none"),  # the sampler already balances
    ({"a": 15, "b": 10}, "auto", "shuffle", "balanced"),  # exactly 1.5x
    ({"a": 14, "b": 10}, "auto", "shuffle", "none"),
    ({"a": 10, "b": 10}, "balanced", "shuffle", "balanced"),
])
def test_class_weight_resolution(counts, setting, sampler, expected):
    info, weight = api._resolve_class_weight(_prepared(counts), TrainConfig(class_weight=setting, sampler=sampler))
    assert info["class_weight"] == expected and info["class_weight_setting"] == setting
    if expected == "none":
        assert weight is None
    else:  # n / (K * count), scikit-learn's 'balanced'
        n, k = sum(counts.values()), len(counts)
        np.testing.assert_allclose(weight, [n / (k * c) for c in counts.values()])


def test_linear_probe_honours_the_class_weight_it_reports(imbalanced_folder: Path, tmp_path: Path):
    runs = {}
    for setting in ("balanced", "none"):
        out = tmp_path / setting
        api.fit(str(imbalanced_folder), out=str(out), strategy="linear-probe", model="efficientnet_lite0",
                image_size=32, class_weight=setting, progress=False, seed=1)
        runs[setting] = out
    assert json.loads((runs["balanced"] / "metrics.json").read_text())["imbalance"]["class_weight"] == "balanced"
    weighted, plain = (load_file(str(runs[s] / "bundle" / "model.safetensors")) for s in ("balanced", "none"))
    assert not all(torch.equal(weighted[k], plain[k]) for k in HEAD_KEYS), "class_weight had no effect"


# ---------------------------------------------------------------------------------------------------- mixup/cutmix


def _batch(n: int, labels: list[int]) -> dict:
    g = torch.Generator().manual_seed(n)
    return {"pixel_values": torch.randn(n, 3, 8, 8, generator=g), "labels": torch.tensor(labels), "index": torch.arange(n)}


def test_mixer_off_by_default():
    assert build_batch_mixer(TrainConfig(), 3) is None


def test_mixup_soft_labels_and_mixed_pixels():
    mix = build_batch_mixer(TrainConfig(mixup=0.2), 3)
    labels = [0, 1, 2, 1]  # each example's flipped partner (batch reversed) has another class
    batch = _batch(4, labels)
    x = batch["pixel_values"].clone()
    np.random.seed(0)
    out = mix(dict(batch, pixel_values=batch["pixel_values"].clone()))
    y = out["labels"]
    assert y.shape == (4, 3) and y.is_floating_point()
    torch.testing.assert_close(y.sum(1), torch.ones(4))
    lam = y[0, labels[0]].item()  # the weight of the example itself
    assert 0 < lam < 1 and lam != 0.5
    for i in range(4):
        assert y[i, labels[i]].item() == pytest.approx(lam, abs=1e-6)
        assert y[i, labels[3 - i]].item() == pytest.approx(1 - lam, abs=1e-6)
    torch.testing.assert_close(out["pixel_values"], lam * x + (1 - lam) * x.flip(0), atol=1e-5, rtol=1e-5)
    assert not torch.equal(out["pixel_values"], x)
    assert torch.equal(out["index"], batch["index"])


def test_odd_batch_keeps_pixels_with_soft_targets():
    mix = build_batch_mixer(TrainConfig(mixup=0.2, label_smoothing=0.1), 3)
    batch = _batch(3, [2, 0, 1])
    out = mix(dict(batch))
    assert torch.equal(out["pixel_values"], batch["pixel_values"])
    torch.testing.assert_close(out["labels"].sum(1), torch.ones(3))
    assert out["labels"].argmax(1).tolist() == [2, 0, 1]
    assert out["labels"].max().item() == pytest.approx(1 - 0.1 + 0.1 / 3)


def test_cutmix_soft_labels_sum_to_one():
    mix = build_batch_mixer(TrainConfig(cutmix=1.0), 4)
    np.random.seed(1)
    out = mix(_batch(6, [0, 1, 2, 3, 0, 1]))
    torch.testing.assert_close(out["labels"].sum(1), torch.ones(6))


def test_fit_with_mixup_end_to_end(digits_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    # batch 5 over 24 images: four mixed batches of 5 (odd: kept) and a last one of 4 (mixed)
    result = api.fit(str(digits_folder), out=str(out), epochs=1, mixup=0.2, batch_size=5, **BASE)
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["train_loss"])
    assert _loop_state(out)["step"] == 5
    assert (out / "bundle" / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["train"]["mixup"] == 0.2


# ------------------------------------------------------------------------------------------------ weight average


def test_ema_keeps_a_weight_average_that_is_what_gets_saved(digits_folder: Path, tmp_path: Path):
    """With ema the checkpoint holds the average, validation scores it and the bundle is the best average, so
    the bundle differs from the raw weights; without ema there is no average at all."""
    options = dict(model="efficientnet_lite0", strategy="head", image_size=32, epochs=2, patience=0, progress=False,
                   augment="none", class_weight="none")
    api.fit(str(digits_folder), out=str(tmp_path / "ema"), ema=0.5, **options)
    api.fit(str(digits_folder), out=str(tmp_path / "plain"), **options)
    ema_ckpt = complete_checkpoints(tmp_path / "ema" / "checkpoints")[-1]
    plain_ckpt = complete_checkpoints(tmp_path / "plain" / "checkpoints")[-1]
    assert (ema_ckpt / "ema.safetensors").is_file() and not (plain_ckpt / "ema.safetensors").exists()
    average, raw = load_file(str(ema_ckpt / "ema.safetensors")), load_file(str(ema_ckpt / "model.safetensors"))
    assert not torch.equal(average["head.linear.weight"], raw["head.linear.weight"])
    # the raw trajectory is the same with or without the average (it only watches)
    plain_raw = load_file(str(plain_ckpt / "model.safetensors"))
    torch.testing.assert_close(raw["head.linear.weight"], plain_raw["head.linear.weight"])
    best = json.loads((tmp_path / "ema" / "metrics.json").read_text())["best_epoch"]
    bundle = load_file(str(tmp_path / "ema" / "bundle" / "model.safetensors"))
    if best == 2:  # the last epoch's average is what was kept
        assert torch.equal(bundle["head.linear.weight"], average["head.linear.weight"])


# ------------------------------------------------------------------------------------------------- on_epoch_end hook


class _Stop(Exception):
    pass


def test_on_epoch_end_sees_each_row_and_can_stop_the_run(digits_folder: Path, tmp_path: Path):
    """The hook gets every validated epoch's history row (tune reports them to Optuna); an exception it raises ends
    the run at that epoch, before any bundle is written."""
    seen: list[tuple[int, dict]] = []
    result = api.fit(str(digits_folder), out=str(tmp_path / "all"), epochs=2, on_epoch_end=lambda e, r: seen.append(
        (e, r)), **BASE)
    assert [e for e, _ in seen] == [1, 2] and [r for _, r in seen] == result.history[1:]

    def stop_after_first(epoch: int, row: dict) -> None:
        seen.append((epoch, row))
        raise _Stop

    seen.clear()
    with pytest.raises(_Stop):
        api.fit(str(digits_folder), out=str(tmp_path / "stopped"), epochs=3, on_epoch_end=stop_after_first, **BASE)
    assert [e for e, _ in seen] == [1]
    assert _loop_state(tmp_path / "stopped")["epoch"] == 1  # epoch 1 checkpointed, epochs 2-3 never ran
    assert not (tmp_path / "stopped" / "bundle").exists()
