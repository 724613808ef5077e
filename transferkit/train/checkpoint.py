"""Training checkpoints that survive kill -9: staged, fsynced, renamed, and marked complete last.

Imports transferkit.core only. A checkpoint is a folder ``RUN_DIR/checkpoints/ckpt-000012/`` (the 12th save) holding tensors
as safetensors (model, best model, optimizer tensors, torch RNG; the weight average and a strategy's helper
modules when there are any) and everything else as JSON (loop counters, history, scheduler, strategy state,
numpy/python RNG, optimizer hyper-parameters). Nothing is pickled, so
loading a checkpoint cannot run code. The ``COMPLETE`` marker is written last and lists each file's SHA-256;
a folder without it, or whose files do not match it, is never loaded.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from transferkit.core.errors import CheckpointError
from transferkit.core.io import atomic_write_json, sha256_file

MARKER = "COMPLETE"
PREFIX = "ckpt-"


@dataclass
class Checkpoint:
    """What the loop needs to continue exactly where it stopped."""

    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any]  # loop counters, history, scheduler, strategy, RNG states (JSON-able)
    path: Path | None = None
    ema: dict[str, torch.Tensor] | None = None  # the weight average, when the loop keeps one
    helpers: dict[str, torch.Tensor] | None = None  # a strategy's helper modules ("name/key"), never bundled


# ---- optimizer state <-> (tensors, JSON) -------------------------------------------------------------------

def _split_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, per_param in opt_state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": opt_state["param_groups"], "plain_state": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        pid, key = name.split("/", 1)
        state.setdefault(int(pid), {})[key] = tensor
    for pid, values in meta["plain_state"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ---- RNG state --------------------------------------------------------------------------------------------

def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    plain = {"numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "python": [version, list(internal), gauss]}
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))


# ---- writing and reading ----------------------------------------------------------------------------------

def _tensors(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared or strided storage: give it contiguous CPU copies."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: Path, index: int, ckpt: Checkpoint, keep: int = 2) -> Path:
    """Write ``ckpt`` as ``directory/ckpt-<index>``: stage, fsync, rename, then the COMPLETE marker; prune old ones."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{index:06d}"
    staging = directory / f".staging-{PREFIX}{index:06d}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    rng_tensors, rng_plain = capture_rng()
    opt_tensors, opt_meta = _split_optimizer(ckpt.optimizer)
    save_file(_tensors(ckpt.model), str(staging / "model.safetensors"))
    save_file(_tensors(ckpt.best_model), str(staging / "best_model.safetensors"))
    save_file(opt_tensors, str(staging / "optimizer.safetensors"))
    save_file(rng_tensors, str(staging / "rng.safetensors"))
    if ckpt.ema is not None:
        save_file(_tensors(ckpt.ema), str(staging / "ema.safetensors"))
    if ckpt.helpers is not None:
        save_file(_tensors(ckpt.helpers), str(staging / "helpers.safetensors"))
    (staging / "state.json").write_text(json.dumps({**ckpt.state, "optimizer": opt_meta, "rng": rng_plain}))
    for f in staging.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(staging)
    if final.exists():  # a leftover from a run that died after the rename but before the marker
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(directory)
    atomic_write_json(final / MARKER, {"index": index, "files": {f.name: sha256_file(f) for f in final.iterdir()
                                                                  if f.name != MARKER}})
    _fsync_dir(final)
    _prune(directory, keep, current=final)
    return final


def _is_complete(folder: Path, verify: bool = True) -> bool:
    """The marker exists and parses; with ``verify``, every file it lists has the recorded SHA-256."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
        if not verify:
            return isinstance(files, dict) and all((folder / name).is_file() for name in files)
        return all(sha256_file(folder / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _index_of(folder: Path) -> int:
    return int(folder.name[len(PREFIX):])


def complete_checkpoints(directory: Path, verify: bool = True) -> list[Path]:
    """Complete checkpoint folders, oldest first; staged or half-written ones are skipped.

    ``verify=False`` trusts the marker without hashing the files (pruning, listing); loading always verifies.
    """
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted((p for p in found if _is_complete(p, verify)), key=_index_of)


def _prune(directory: Path, keep: int, current: Path) -> None:
    complete = complete_checkpoints(directory, verify=False)
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for p in directory.iterdir():  # staging folders of dead processes and unmarked checkpoints
        if p != current and p.is_dir() and p not in complete and (p.name.startswith(".staging-") or
                                                                    p.name.startswith(PREFIX)):
            shutil.rmtree(p, ignore_errors=True)


class IncompleteCheckpoint(CheckpointError):
    """No valid marker, or files that no longer match it: what a crash leaves; resuming falls back past it."""


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """safetensors only: a file with anything else in it (a pickle, garbage) is refused, never unpickled."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure of these bytes means "not a checkpoint file"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a safetensors file ({reason}). transferkit checkpoints hold only "
                              f"safetensors and JSON and are never unpickled; delete this checkpoint folder.") from None


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read a complete checkpoint folder; tensors via safetensors, the rest via JSON (never pickle)."""
    if not _is_complete(folder):
        raise IncompleteCheckpoint(f"{folder} is not a complete checkpoint (no valid {MARKER} marker); it was being "
                                   f"written when the run stopped. Resume from an older one or start again.")
    tensors = {name: _read_tensors(folder / f"{name}.safetensors") for name in ("model", "best_model", "optimizer", "rng")
               + tuple(name for name in ("ema", "helpers") if (folder / f"{name}.safetensors").is_file())}
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        optimizer = _join_optimizer(tensors["optimizer"], state.pop("optimizer"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{folder / 'state.json'}: not the JSON state of a transferkit checkpoint ({exc!r}); "
                              "delete this checkpoint folder.") from None
    state["rng_tensors"] = tensors["rng"]
    return Checkpoint(model=tensors["model"], best_model=tensors["best_model"], optimizer=optimizer, state=state,
                      path=folder, ema=tensors.get("ema"), helpers=tensors.get("helpers"))


def unfinished_run(directory: Path) -> bool:
    """Whether ``directory`` holds checkpoints of a run that stopped before its end (so could be resumed)."""
    complete = complete_checkpoints(directory, verify=False)
    if not complete:
        return False
    try:
        return not json.loads((complete[-1] / "state.json").read_text()).get("loop", {}).get("finished", False)
    except (OSError, ValueError, AttributeError):  # unreadable: keep it (and say so on --resume), never overwrite
        return True


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint whose files match their marker's hashes (older ones are the fallback).

    A checkpoint whose files match its marker but do not parse was not written by transferkit (the marker was
    forged along with them): that raises CheckpointError naming the file instead of quietly training afresh.
    """
    for folder in reversed(complete_checkpoints(directory, verify=False)):
        try:
            return load_checkpoint(folder)
        except IncompleteCheckpoint:  # damaged after its marker was written: fall back to the one before
            continue
    return None
