"""``--precision auto``'s measured probe (transferkit.train.precision_probe): the decision on fixed timings, the
per-machine cache, explicit choices that never probe, and a probe that leaves the model as it found it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from transferkit.core import runtime as core_runtime
from transferkit.train import precision_probe as probe

CPU = torch.device("cpu")


@pytest.mark.parametrize(("fp32", "bf16", "expected"), [
    ([0.20, 0.21, 0.19], [0.38, 0.40, 0.37], "fp32"),  # bf16 slower (small-batch convnet training here)
    ([0.33, 0.35, 0.31], [0.14, 0.15, 0.13], "bf16"),  # bf16 2x faster (batch-64 inference)
    ([0.10, 0.10, 0.10], [0.10, 0.10, 0.10], "fp32"),  # a tie keeps fp32
    ([0.100, 0.100, 0.100], [0.097, 0.096, 0.098], "fp32"),  # 3 % faster: inside the 5 % margin
    ([0.100, 0.100, 0.100], [0.094, 0.093, 0.090], "bf16"),  # 6-7 % faster: outside it
    ([0.10, 0.10, 5.00], [0.20, 0.20, 0.01], "fp32"),  # medians, not means: one outlier step decides nothing
])
def test_decide_on_fixed_timings(fp32: list[float], bf16: list[float], expected: str):
    assert probe.decide(fp32, bf16) == expected


def test_decide_refuses_no_timings():
    with pytest.raises(ValueError, match="at least one"):
        probe.decide([], [0.1])


def test_cache_round_trip_keeps_other_entries_and_survives_a_broken_file(tmp_path: Path):
    path = tmp_path / "sub" / "precision_probe.json"
    a = probe.entry_key("cpu:X|torch 2", "efficientnet_lite0", "train", [8, 3, 64, 64])
    b = probe.entry_key("cpu:X|torch 2", "efficientnet_lite0", "inference", [64, 3, 64, 64])
    assert probe.load_cached(a, path) is None  # no file yet
    probe.store(a, {"choice": "fp32", "fp32_step_seconds": 0.2}, path)
    probe.store(b, {"choice": "bf16", "fp32_step_seconds": 0.3}, path)
    assert probe.load_cached(a, path) == {"choice": "fp32", "fp32_step_seconds": 0.2}
    assert probe.load_cached(b, path)["choice"] == "bf16"
    assert set(json.loads(path.read_text())) == {a, b}
    path.write_text("{not json")
    assert probe.load_cached(a, path) is None
    probe.store(a, {"choice": "bf16"}, path)  # a broken file is replaced, not a crash
    assert probe.load_cached(a, path) == {"choice": "bf16"}


def test_cache_key_separates_machine_backbone_phase_and_shape():
    keys = {probe.entry_key(m, bb, ph, sh) for m in ("cpu:A", "cpu:B") for bb in ("lite0", "minilm")
            for ph in probe.PHASES for sh in ([8, 3, 64, 64], [8, 3, 32, 32])}
    assert len(keys) == 16
    assert probe.machine_key(CPU).endswith(f"torch {torch.__version__}")


def _never(*args):
    raise AssertionError("the probe must not run")


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_explicit_precisions_bypass_the_probe(setting: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(probe, "measure", _never)
    monkeypatch.setattr(probe, "load_cached", _never)
    assert probe.choose(setting, nn.Linear(2, 2), _never, "train", CPU, "lite0") == (setting, None)


def test_auto_without_bf16_support_is_fp32_unprobed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(core_runtime, "bf16_supported", lambda device: False)
    monkeypatch.setattr(probe, "measure", _never)
    choice, record = probe.choose("auto", nn.Linear(2, 2), _never, "train", CPU, "lite0")
    assert choice == "fp32" and "not probed" in record["reason"]


def _tiny() -> nn.Module:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, batch: dict) -> torch.Tensor:
            return self.bn(self.conv(batch["pixel_values"])).mean(dim=(2, 3))

    return Tiny()


def test_auto_measures_once_then_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(core_runtime, "bf16_supported", lambda device: True)
    calls = []

    def fake_measure(model, batch, phase, device):
        calls.append(phase)
        return {"fp32": [0.2, 0.2, 0.2], "bf16": [0.1, 0.1, 0.1]}

    monkeypatch.setattr(probe, "measure", fake_measure)
    batch = {"pixel_values": torch.randn(4, 3, 16, 16)}
    first = probe.choose("auto", _tiny(), lambda: batch, "inference", CPU, "tiny")
    second = probe.choose("auto", _tiny(), lambda: batch, "inference", CPU, "tiny")
    assert first[0] == second[0] == "bf16" and calls == ["inference"] and first[1] == second[1]
    assert first[1]["shape"] == [4, 3, 16, 16] and first[1]["fp32_step_seconds"] == pytest.approx(0.2)
    assert (tmp_path / "precision_probe.json").is_file()
    third = probe.choose("auto", _tiny(), lambda: batch, "train", CPU, "tiny")  # another phase: measured
    assert third[0] == "bf16" and calls == ["inference", "train"]


def test_measure_leaves_the_model_as_it_found_it():
    torch.manual_seed(0)
    model = _tiny().eval()
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    times = probe.measure(model, {"pixel_values": torch.randn(4, 3, 16, 16)}, "train", CPU)
    assert 2 <= len(times["fp32"]) == len(times["bf16"]) <= probe.REPEATS and min(times["fp32"] + times["bf16"]) > 0
    assert not model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():  # batch-norm running statistics and counters restored
        assert torch.equal(v, params[k]), k
