"""transferkit.data.image_cache and transferkit.data.workers: pictures decoded once, the size check and its
fallback, identical eval tensors and training runs with the cache on or off, and augmentation that does not
depend on the worker count or on where an epoch resumed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import write_digit_folder
from transferkit import api
from transferkit.data import image_cache, loaders
from transferkit.data.examples import Examples
from transferkit.data.image_cache import CAP_ENV, cached_size, plan_cache, train_side
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.preprocess import PreprocessSpec
from transferkit.data.workers import decode_workers

SPEC = PreprocessSpec(modality="image", image_size=32)
LABELS = LabelMap(["a", "b"])


def _photos(root: Path, sizes: list[tuple[int, int]]) -> Examples:
    """PNG files of the given (width, height): smooth colour waves, different in each file."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (w, h) in enumerate(sizes):
        path = root / f"{k}.png"
        y, x = np.mgrid[0:h, 0:w] / max(w, h)
        channels = [np.sin((3 + k + c) * x * np.pi + c) * np.cos((2 + c) * y * np.pi + k) for c in range(3)]
        Image.fromarray((127.5 * (1 + np.stack(channels, -1))).astype(np.uint8)).save(path)
        paths.append(str(path))
    return Examples("image", paths, ["a" if k % 2 else "b" for k in range(len(sizes))], str(root))


def _epoch(loader, epoch: int = 0, start: int = 0) -> torch.Tensor:
    loader.sampler.set_epoch(epoch, start)
    return torch.cat([b["pixel_values"] for b in loader])


def test_plan_adds_up_cached_bytes_and_falls_back_over_the_cap(tmp_path: Path):
    photos = _photos(tmp_path / "p", [(200, 100), (40, 30), (90, 120)])
    side = train_side(SPEC)
    assert side == 41  # 32 px / sqrt(0.75 x 0.85), rounded up
    # training pictures: shrunk to a shorter side of 41 (aspect kept), never enlarged; eval: the 32 px square
    assert [cached_size(s, SPEC, "light") for s in [(200, 100), (40, 30), (90, 120)]] == [(82, 41), (40, 30), (41, 54)]
    expected = 3 * (82 * 41 + 40 * 30 + 41 * 54) + 3 * 3 * 32 * 32
    plan = plan_cache([(photos, "light"), (photos, "none")], SPEC, cap_bytes=10 ** 6)
    assert plan.enabled and plan.needed_bytes == expected and plan.images == 6
    assert "cap_bytes" not in plan.to_dict() and plan.to_dict()["image_cache"] == "on"
    off = plan_cache([(photos, "light"), (photos, "none")], SPEC, cap_bytes=expected - 1)
    assert not off.enabled and off.to_dict()["cap_bytes"] == expected - 1
    assert "image cache off" in off.describe(2) and "2 DataLoader worker processes" in off.describe(2)


def test_cap_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(CAP_ENV, "0")
    assert image_cache.memory_cap() == 0
    monkeypatch.setenv(CAP_ENV, "1.5")
    assert image_cache.memory_cap() == int(1.5 * 1024 ** 2)
    monkeypatch.delenv(CAP_ENV)
    assert 0 < image_cache.memory_cap() <= image_cache.CAP_BYTES


def test_each_picture_is_decoded_once_and_eval_tensors_are_identical(tmp_path: Path, monkeypatch):
    photos = _photos(tmp_path / "p", [(70, 50), (33, 90), (32, 32), (128, 128), (20, 24)])
    uncached = make_loader(photos, SPEC, LABELS, 2)
    expected = torch.cat([b["pixel_values"] for b in uncached])
    decoded = []
    real = image_cache.load_image
    monkeypatch.setattr(image_cache, "load_image", lambda item, cap=None: decoded.append(item) or real(item, cap))
    cached = make_loader(photos, SPEC, LABELS, 2, cache=True)
    for _ in range(3):  # three passes (epochs): one decode each
        assert torch.equal(torch.cat([b["pixel_values"] for b in cached]), expected)
    assert sorted(decoded) == sorted(photos.inputs)
    assert cached.dataset.cache.nbytes == 5 * 3 * 32 * 32


@pytest.mark.parametrize("augment", ["light", "trivial"])
def test_augmentation_on_cached_pictures_matches_the_uncached_family(tmp_path: Path, augment: str):
    # no larger than train_side (41 px): cached as they are, so the same draws (per-draw seeds) give the same
    # crops, up to torch's vs Pillow's resampling; far closer than another epoch's crops of the same pictures
    photos = _photos(tmp_path / "p", [(40, 36), (30, 28), (41, 64), (25, 25)] * 3)
    off = make_loader(photos, SPEC, LABELS, 4, shuffle_seed=3, augment=augment)
    on = make_loader(photos, SPEC, LABELS, 4, shuffle_seed=3, augment=augment, cache=True)
    a, b, other = _epoch(off, 1), _epoch(on, 1), _epoch(on, 2)
    assert a.shape == b.shape == (12, 3, 32, 32)
    assert (a - b).abs().mean() < 0.05 < (a - other).abs().mean()
    # larger pictures are cached shrunk to a shorter side of 41 px, and cropped from that
    big = _photos(tmp_path / "big", [(160, 120), (120, 200)])
    cache = make_loader(big, SPEC, LABELS, 2, shuffle_seed=3, augment=augment, cache=True).dataset.cache
    assert [tuple(cache.picture(i).shape) for i in range(2)] == [(3, 41, 54), (3, 68, 41)]
    assert cache(0).shape == (3, 32, 32)
    assert torch.equal(_epoch(on, 1), b)  # and the same for the same epoch


def test_workers_follow_the_cores_left_idle(monkeypatch: pytest.MonkeyPatch):
    from transferkit.data import workers

    monkeypatch.setattr(workers, "available_cores", lambda: 16)
    assert [decode_workers(c, load=1.0) for c in (1, 2, 3, 5, 16)] == [0, 1, 2, 4, 4]
    # this process alone (load ~1) leaves 15 idle; a load of 14.2 leaves 2, 14.6 leaves 1; 16 or more leaves none
    assert [decode_workers(8, load=x) for x in (0.3, 12.0, 14.2, 14.6, 16.0, 30.0)] == [4, 4, 2, 1, 0, 0]
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    assert [decode_workers(2, load=x) for x in (0.4, 1.1, 1.4, 1.6, 2.5)] == [1, 1, 1, 0, 0]  # 2 cores, one ours


def test_augmentation_does_not_depend_on_workers_or_the_resume_point(tmp_path: Path, monkeypatch):
    examples = _photos(tmp_path / "p", [(24, 20)] * loaders.MIN_ITEMS)
    arrays = Examples("image", [np.asarray(Image.open(p)) for p in examples.inputs], examples.labels, "arrays")
    assert make_loader(arrays, SPEC, LABELS, 32, shuffle_seed=5).num_workers == 0  # in memory: nothing to decode
    epochs = {}
    for workers in (0, 2):
        monkeypatch.setattr(loaders, "decode_workers", lambda w=workers: w)
        loader = make_loader(examples, SPEC, LABELS, 32, shuffle_seed=5, augment="light")
        assert loader.num_workers == workers
        epochs[workers] = _epoch(loader, 2)
        tail = _epoch(loader, 2, start=96)  # a run resumed after 3 batches of epoch 2
        assert torch.equal(tail, epochs[workers][96:])
    assert torch.equal(epochs[0], epochs[2])
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _epoch(make_loader(examples, SPEC, LABELS, 32, shuffle_seed=5, augment="light", cache=True))
    assert torch.equal(torch.get_rng_state(), before)  # augmentation leaves the training RNG stream alone


def test_seeded_run_without_augmentation_is_identical_with_the_cache_on_or_off(tmp_path: Path, monkeypatch):
    data = write_digit_folder(tmp_path / "digits", digits=(0, 1), per_class=8)
    runs = {}
    for cap in ("0", "100"):
        monkeypatch.setenv(CAP_ENV, cap)
        out = tmp_path / f"run{cap}"
        api.fit(str(data), model="efficientnet_lite0", strategy="head", image_size=32, epochs=2, augment="none",
                seed=3, progress=False, out=str(out), batch_size=4)
        runs[cap] = out
    metrics = {cap: json.loads((out / "metrics.json").read_text()) for cap, out in runs.items()}
    assert metrics["0"]["data_path"]["image_cache"] == "off" and metrics["100"]["data_path"]["image_cache"] == "on"
    assert json.loads((runs["0"] / "history.json").read_text()) == json.loads((runs["100"] / "history.json").read_text())
    from safetensors.torch import load_file

    a, b = (load_file(str(out / "bundle" / "model.safetensors")) for out in runs.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics["0"]["val"]["accuracy"] == metrics["100"]["val"]["accuracy"]


def test_inference_batches_decode_files_in_workers_with_the_same_tensors_and_errors(tmp_path: Path, monkeypatch):
    from transferkit.data import stream

    examples = _photos(tmp_path / "p", [(24, 20), (30, 18)] * (loaders.MIN_ITEMS // 2))
    broken = tmp_path / "p" / "broken.png"
    broken.write_bytes(b"not a picture")
    examples = Examples("image", [*examples.inputs[:7], str(broken), *examples.inputs[7:]], None, examples.source)
    batches = {}
    for workers in (0, 1):
        monkeypatch.setattr(stream, "decode_workers", lambda w=workers: w)
        batches[workers] = list(stream.inference_batches(examples, SPEC, 32))
    assert stream._image_decode_workers(examples, 32) == 1  # files: the patched worker count applies
    for alone, helped in zip(batches[0], batches[1], strict=True):
        assert alone.positions == helped.positions and torch.equal(alone.inputs["pixel_values"],
                                                                   helped.inputs["pixel_values"])
        assert [(i, e.kind, e.where) for i, e in alone.errors] == [(i, e.kind, e.where) for i, e in helped.errors]
    assert [i for b in batches[1] for i, _ in b.errors] == [7]  # the broken file comes back as a row error
    arrays = Examples("image", [np.zeros((8, 8, 3), np.uint8)] * loaders.MIN_ITEMS, None, "arrays")
    assert stream._image_decode_workers(arrays, 32) == 0  # in memory: nothing to decode
