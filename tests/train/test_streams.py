"""The unlabeled target stream of domain adaptation (train/streams.py): it cycles in seeded orders, and resumes exactly.

Unit checks on 20 inverted digits in batches of 8 (two batches per target epoch, the last 4 dropped), then a dann
fit (3 digit classes x 10 -> 24 train images, 3 batches of 8 per epoch, paired with those 20 target images)
stopped at checkpoints inside an epoch (at a target epoch's end, and in the second epoch), resumed with
``fit --resume``: bit-identical weights, discriminator and history to the uninterrupted run (CPU fp32).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_inverted_digits
from tests.train.test_resume import API_OPTIONS, _copy_run_until, _loop_state, assert_same_run
from transferkit import api
from transferkit.backbones import build_backbone
from transferkit.core.errors import DataError
from transferkit.data.sources import load_source
from transferkit.train.checkpoint import complete_checkpoints
from transferkit.train.streams import TargetStream


@pytest.fixture(scope="module")
def target_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inverted_digits(tmp_path_factory.mktemp("target") / "inverted", (0, 1, 2, 3), 5)


def _stream(folder: Path, total: int = 0, seed: int = 0) -> TargetStream:
    spec = build_backbone("efficientnet_lite0", pretrained=False).preprocessing.with_image_size(32)
    return TargetStream(load_source(folder, labeled=False).train, spec, batch_size=8, seed=seed, total=total)


def test_stream_cycles_through_seeded_target_epochs(target_folder: Path):
    stream = _stream(target_folder, total=10)
    batches = [stream.next() for _ in range(6)]  # three target epochs of two batches
    assert all(b["pixel_values"].shape == (8, 3, 32, 32) and "labels" not in b for b in batches)
    epochs = [torch.cat([batches[2 * e]["index"], batches[2 * e + 1]["index"]]).tolist() for e in range(3)]
    assert all(len(set(order)) == 16 for order in epochs)  # no repeats inside a target epoch
    assert epochs[0] != epochs[1] != epochs[2]  # each target epoch in its own order
    assert stream.state_dict() == {"epoch": 2, "position": 2, "taken": 6}
    assert stream.progress == pytest.approx(0.6)
    again = _stream(target_folder)
    assert [again.next()["index"].tolist() for _ in range(6)] == [b["index"].tolist() for b in batches]  # seeded
    other = _stream(target_folder, seed=1)
    assert [other.next()["index"].tolist() for _ in range(2)] != [b["index"].tolist() for b in batches[:2]]


@pytest.mark.parametrize("taken", [1, 2, 5])
def test_stream_resumes_at_the_exact_batch(target_folder: Path, taken: int):
    """Mid target epoch (1, 5) and at its very end (2: the next batch opens a new target epoch)."""
    ref = _stream(target_folder)
    for _ in range(taken):
        ref.next()
    state = ref.state_dict()
    expected = [ref.next() for _ in range(4)]
    resumed = _stream(target_folder)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # as a checkpoint's JSON holds it
    for want in expected:
        got = resumed.next()
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["pixel_values"], want["pixel_values"])
    assert resumed.state_dict() == ref.state_dict()


def test_pair_adds_a_target_batch_to_each_labeled_batch(target_folder: Path):
    stream = _stream(target_folder)
    paired = list(stream.pair([{"labels": torch.tensor([0])}, {"labels": torch.tensor([1])}]))
    assert [p["labels"].item() for p in paired] == [0, 1]
    assert all(p["target"]["pixel_values"].shape[0] == 8 for p in paired)
    assert stream.state_dict()["taken"] == 2


# ------------------------------------------------------------------------------------- a dann run, resumed


@pytest.fixture(scope="module")
def dann_reference(digits_folder: Path, target_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref-dann") / "run"
    api.fit(str(digits_folder), strategy="dann", target_data=str(target_folder), out=str(out), **API_OPTIONS)
    return out


POINTS = {  # (epoch, batches_done) -> the target stream there (3 labeled batches per epoch, 2 target per epoch);
    # a point inside a target epoch is test_stream_resumes_at_the_exact_batch's
    "end_of_target_epoch": ((0, 2), {"epoch": 0, "position": 2, "taken": 2}),
    "second_epoch": ((1, 1), {"epoch": 1, "position": 2, "taken": 4}),
}


@pytest.mark.parametrize("point", sorted(POINTS))
def test_dann_run_resumed_mid_epoch_is_bit_identical(dann_reference: Path, tmp_path: Path, point: str):
    where, stream_state = POINTS[point]
    checkpoints = {(s["epoch"], s["batches_done"]): c for c in complete_checkpoints(dann_reference / "checkpoints")
                   for s in [_loop_state(c)]}
    start = checkpoints[where]
    assert json.loads((start / "state.json").read_text())["strategy"] == {"target_stream": stream_state}
    run = _copy_run_until(dann_reference, tmp_path / "run", start)
    api.fit(resume=str(run))
    assert json.loads((run / "metrics.json").read_text())["resumed_from"] == str(run / "checkpoints" / start.name)
    assert_same_run(dann_reference, run)
    final = sorted(complete_checkpoints(run / "checkpoints"))[-1]
    ref_final = sorted(complete_checkpoints(dann_reference / "checkpoints"))[-1]
    helpers = [p.name for p in ref_final.iterdir() if "helper" in p.name]
    assert helpers, "the discriminator is checkpointed"
    for name in helpers:
        ref_t, got_t = load_file(str(ref_final / name)), load_file(str(final / name))
        assert ref_t.keys() == got_t.keys() and all(torch.equal(ref_t[k], got_t[k]) for k in ref_t)


def test_resume_refuses_a_changed_target(dann_reference: Path, target_folder: Path, tmp_path: Path):
    """The target is part of the data a run started on: resuming after it changed would pair other batches."""
    identity = json.loads((dann_reference / "config.json").read_text())["data_identity"]["splits"]
    assert identity["target"]["n"] == 20
    first = sorted(complete_checkpoints(dann_reference / "checkpoints"))[0]
    run = _copy_run_until(dann_reference, tmp_path / "run", first)
    moved = tmp_path / "inverted"
    shutil.copytree(target_folder, moved)
    next(iter(sorted(moved.iterdir()))).unlink()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "target_data": str(moved)}))
    with pytest.raises(DataError, match=r"target: 20 -> 19 examples"):
        api.fit(resume=str(run))
