"""transferkit.train.checkpoint: exact round trips, crash-safe completeness, pruning, and no pickle anywhere."""
from __future__ import annotations

import copy
import json
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from transferkit.core.errors import TransferkitError
from transferkit.core.io import sha256_file
from transferkit.train.checkpoint import (
    MARKER,
    Checkpoint,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)

FILES = {"model.safetensors", "best_model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json",
         MARKER}


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _groups(model: nn.Module) -> list[dict]:
    """Two groups with different hyper-parameters, as strategies build them."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "lr": 1e-2, "weight_decay": 0.05}, {"params": no_decay, "lr": 3e-3, "weight_decay": 0.0}]


OPTIMIZERS: dict[str, Callable[[list[dict]], torch.optim.Optimizer]] = {
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=1e-2, betas=(0.8, 0.95)),
    "sgd": lambda groups: torch.optim.SGD(groups, lr=1e-2, momentum=0.9, nesterov=True),
}


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
    model.train()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _checkpoint(step: int = 2) -> Checkpoint:
    model = _model(0)
    optimizer = torch.optim.AdamW(_groups(model))
    for s in range(step):
        _step(model, optimizer, s)
    best = {k: v.clone() + 1 if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}
    state = {"loop": {"epoch": 1, "step": step, "history": [{"epoch": 0, "val_loss": 0.5}]},
             "scheduler": {"last_epoch": step}, "strategy": {"stage": 1}}
    return Checkpoint(model.state_dict(), best, optimizer.state_dict(), state)


# ------------------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_round_trip_continues_exactly(tmp_path: Path, opt_name: str):
    make_opt = OPTIMIZERS[opt_name]
    a = _model(0)
    twin = copy.deepcopy(a)
    opt_a, opt_twin = make_opt(_groups(a)), make_opt(_groups(twin))
    for s in range(2):
        _step(a, opt_a, s)
        _step(twin, opt_twin, s)
    best = {k: v.clone() for k, v in a.state_dict().items()}
    state = {"loop": {"epoch": 0, "batches_done": 2, "history": [{"epoch": 0, "val_macro_f1": 0.25}]},
             "scheduler": {"last_epoch": 2, "base_lrs": [1e-2, 3e-3]}, "strategy": {"stage": 0}}
    folder = save_checkpoint(tmp_path / "checkpoints", 7, Checkpoint(a.state_dict(), best, opt_a.state_dict(), state))
    assert folder.name == "ckpt-000007"

    loaded = load_checkpoint(folder)
    assert loaded.path == folder
    assert loaded.model.keys() == a.state_dict().keys()
    for k, v in a.state_dict().items():
        assert torch.equal(loaded.model[k], v), k
        assert loaded.model[k].dtype == v.dtype, k  # incl. BatchNorm's int64 num_batches_tracked
        assert torch.equal(loaded.best_model[k], best[k]), k
    for key in ("loop", "scheduler", "strategy"):
        assert loaded.state[key] == state[key]

    c = _model(123)  # different initial weights, fresh optimizer: everything must come from the checkpoint
    c.load_state_dict(loaded.model)
    opt_c = make_opt(_groups(c))
    opt_c.load_state_dict(loaded.optimizer)
    for g_c, g_twin in zip(opt_c.param_groups, opt_twin.param_groups):
        assert {k: v for k, v in g_c.items() if k != "params"} == {k: v for k, v in g_twin.items() if k != "params"}
    _step(c, opt_c, 99)
    _step(twin, opt_twin, 99)
    for (name, p_c), p_twin in zip(c.named_parameters(), twin.parameters()):
        assert torch.equal(p_c, p_twin), name
    for k, v in twin.state_dict().items():  # running statistics too
        assert torch.equal(c.state_dict()[k], v), k


def _draws() -> tuple:
    return (torch.rand(5).tolist(), torch.randint(0, 1000, (3,)).tolist(), np.random.rand(3).tolist(),
            float(np.random.standard_normal()), random.random(), random.gauss(0, 1), random.randrange(10**6))


def test_rng_states_round_trip(tmp_path: Path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached second Gaussian in both python's and numpy's state
    np.random.standard_normal()
    folder = save_checkpoint(tmp_path, 1, _checkpoint())
    expected = _draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draws() != expected
    loaded = load_checkpoint(folder)
    restore_rng(loaded.state["rng_tensors"], loaded.state["rng"])
    assert _draws() == expected


# ---------------------------------------------------------------------------------------------------- completeness


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_incomplete_folders_are_never_loaded(tmp_path: Path):
    d = tmp_path / "checkpoints"
    c1 = save_checkpoint(d, 1, _checkpoint(1), keep=100)
    c2 = save_checkpoint(d, 2, _checkpoint(2), keep=100)
    # planted after the last save (a save prunes such folders):
    staged = d / ".staging-ckpt-000009-4242"  # a staging folder, even one with a valid-looking marker
    shutil.copytree(c2, staged)
    unmarked = d / "ckpt-000003"  # renamed, killed before the marker
    shutil.copytree(c2, unmarked)
    (unmarked / MARKER).unlink()
    truncated = d / "ckpt-000004"  # marker written, then a file damaged
    shutil.copytree(c2, truncated)
    _truncate(truncated / "model.safetensors")
    garbled = d / "ckpt-000005"  # a half-written marker
    shutil.copytree(c2, garbled)
    (garbled / MARKER).write_text('{"index": 5, "fi')
    missing = d / "ckpt-000006"  # a file the marker lists is gone
    shutil.copytree(c2, missing)
    (missing / "optimizer.safetensors").unlink()
    (d / "ckpt-000007").write_text("not a folder")
    shutil.copytree(c2, d / "ckpt-latest")  # not an index

    assert complete_checkpoints(d) == [c1, c2]
    latest = latest_checkpoint(d)
    assert latest is not None and latest.path == c2
    assert latest.state["loop"]["step"] == 2
    for folder in (unmarked, truncated, garbled, missing):
        with pytest.raises(TransferkitError, match=re.escape(str(folder))):
            load_checkpoint(folder)


def test_no_checkpoints(tmp_path: Path):
    assert complete_checkpoints(tmp_path / "absent") == []
    assert latest_checkpoint(tmp_path / "absent") is None
    (tmp_path / "empty" / "ckpt-000001").mkdir(parents=True)
    assert latest_checkpoint(tmp_path / "empty") is None


def test_marker_lists_every_file_with_its_hash(tmp_path: Path):
    folder = save_checkpoint(tmp_path, 3, _checkpoint())
    marker = json.loads((folder / MARKER).read_text())
    assert marker["index"] == 3
    assert set(marker["files"]) == FILES - {MARKER}
    for name, digest in marker["files"].items():
        assert sha256_file(folder / name) == digest


# --------------------------------------------------------------------------------------------------------- pruning


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_prune_keeps_newest_complete(tmp_path: Path, keep: int):
    d = tmp_path / "checkpoints"
    ck = _checkpoint(1)
    for i in range(1, 6):
        save_checkpoint(d, i, ck, keep=keep)
    assert _names(d) == [f"ckpt-{i:06d}" for i in range(6 - keep, 6)]


def test_prune_removes_stale_staging_and_unmarked(tmp_path: Path):
    d = tmp_path / "checkpoints"
    ck = _checkpoint(1)
    for i in range(1, 4):
        save_checkpoint(d, i, ck, keep=2)
    stale = d / ".staging-ckpt-000004-99999"  # a dead process's staging folder
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    unmarked = d / "ckpt-000009"
    unmarked.mkdir()
    (unmarked / "state.json").write_text("{}")
    (d / "notes").mkdir()  # not ours: left alone
    save_checkpoint(d, 4, ck, keep=2)
    assert _names(d) == ["ckpt-000003", "ckpt-000004", "notes"]
    assert [p.name for p in complete_checkpoints(d)] == ["ckpt-000003", "ckpt-000004"]


def test_save_replaces_a_leftover_unmarked_folder(tmp_path: Path):
    """A run killed after the rename but before the marker leaves ckpt-N; the resumed run's save N overwrites it."""
    d = tmp_path / "checkpoints"
    save_checkpoint(d, 1, _checkpoint(1), keep=5)
    leftover = d / "ckpt-000002"
    leftover.mkdir()
    (leftover / "junk.bin").write_bytes(b"x" * 10)
    folder = save_checkpoint(d, 2, _checkpoint(2), keep=5)
    assert _names(folder) == sorted(FILES)
    assert load_checkpoint(folder).state["loop"]["step"] == 2


# -------------------------------------------------------------------------------------------------------- no pickle


def test_files_are_safetensors_or_json(tmp_path: Path):
    folder = save_checkpoint(tmp_path, 1, _checkpoint())
    assert set(_names(folder)) == FILES
    for f in folder.iterdir():
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    assert isinstance(fh.get_tensor(key), torch.Tensor)
        else:
            json.loads(f.read_text(encoding="utf-8"))
        assert not f.read_bytes().startswith((b"\x80", b"PK\x03\x04")), f"{f.name} looks like a pickle / torch.save zip"


class _Exploit:
    """Unpickling this calls open(path, 'w'): a file appears if anything unpickles it."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("name", ["model.safetensors", "best_model.safetensors", "optimizer.safetensors",
                                  "rng.safetensors", "state.json"])
def test_planted_pickle_is_rejected_not_run(tmp_path: Path, name: str):
    probe = tmp_path / "probe-ran"
    pickle.loads(pickle.dumps(_Exploit(probe)))  # the payload works when unpickled...
    assert probe.exists()

    marker = tmp_path / "exploit-ran"
    payload = pickle.dumps(_Exploit(marker))
    folder = save_checkpoint(tmp_path / "checkpoints", 1, _checkpoint())
    (folder / name).write_bytes(payload)
    with pytest.raises(TransferkitError, match="not a complete checkpoint"):  # the hashes no longer match
        load_checkpoint(folder)
    assert latest_checkpoint(tmp_path / "checkpoints") is None

    # Even with a forged marker whose hashes match, loading fails as a parse error and never unpickles.
    files = {f.name: sha256_file(f) for f in folder.iterdir() if f.name != MARKER}
    (folder / MARKER).write_text(json.dumps({"index": 1, "files": files}))
    with pytest.raises(Exception):  # noqa: B017 - any parse error is fine, as long as nothing runs
        load_checkpoint(folder)
    assert not marker.exists()
