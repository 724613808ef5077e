"""A backbone adapted by `transferkit pretrain`: the folder it writes, and loading it as any other backbone.

Imports transferkit.core and transferkit.backbones.base/vision. The folder holds ``backbone.safetensors`` (the whole
backbone's state dict, no projection or MLM head) and ``pretrain.json`` (the base model it was built from, the
method, the data fingerprint, steps and losses). Loading rebuilds the base architecture without its pretrained
weights, loads the adapted ones strictly, and keeps the manifest on ``backbone.pretraining`` so a fit records
which pretraining it started from.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferkit.backbones.base import Backbone, state_dict_sha256
from transferkit.backbones.vision import load_weights_file
from transferkit.core.errors import BackboneLoadError, ConfigError

PREFIX = "pretrained:"
MANIFEST = "pretrain.json"
WEIGHTS = "backbone.safetensors"
# what a fit records about the pretraining it started from (the rest of pretrain.json stays in the folder)
RECORDED = ("base_model", "method", "steps", "final_loss", "data", "data_fingerprint", "n_inputs")


def is_adapted_folder(name: str) -> bool:
    """``pretrained:DIR``, or a folder that holds a pretrain.json (``--model DIR``)."""
    return name.startswith(PREFIX) or (Path(name) / MANIFEST).is_file()


def folder_of(name: str) -> Path:
    return Path(name.removeprefix(PREFIX))


def read_pretrain_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"has no {MANIFEST}"
        raise BackboneLoadError(f"--model {PREFIX}{folder}: {folder} {what}. Pass the --out folder of a finished "
                                f"`transferkit pretrain` run (it holds {MANIFEST} and {WEIGHTS}).")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["base_model"]  # noqa: B018 - the one field loading needs
    except (ValueError, KeyError, TypeError) as exc:
        raise BackboneLoadError(f"{path}: not a transferkit pretrain manifest ({exc!r}); run `transferkit "
                                "pretrain` again to rewrite it.") from None
    return manifest


def load_adapted(name: str, build: Callable[..., Backbone], pretrained: bool = True,
                 clip_seconds: float | None = None) -> Backbone:
    """The base backbone of ``name``'s pretrain.json with the adapted weights; ``build`` is build_backbone."""
    folder = folder_of(name).resolve()
    manifest = read_pretrain_manifest(folder)
    if not pretrained:
        raise ConfigError(f"--model {name} holds pretrained (adapted) weights, but this strategy trains from random "
                          f"weights; pass --model {manifest['base_model']} (or another strategy) instead.")
    backbone = build(manifest["base_model"], pretrained=False, clip_seconds=clip_seconds)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise BackboneLoadError(f"{folder}: {WEIGHTS} is missing; the pretrain run did not finish (continue it with "
                                f"`transferkit pretrain --resume {folder}`).")
    try:
        backbone.load_state_dict(load_weights_file(weights), strict=True)
    except RuntimeError as exc:
        raise BackboneLoadError(f"{weights} does not fit {manifest['base_model']}: "
                                f"{str(exc).splitlines()[0][:300]}") from None
    if manifest.get("image_size") and backbone.modality == "image":  # the size it was adapted at, unless fit says
        backbone.preprocessing = backbone.preprocessing.with_image_size(int(manifest["image_size"]))
    backbone.name = f"{PREFIX}{folder}"
    backbone.weights_sha256 = state_dict_sha256(backbone.model)
    backbone.pretraining = {"folder": str(folder), **{k: manifest[k] for k in RECORDED if k in manifest}}
    return backbone.eval()


def pretraining_text(record: dict[str, Any]) -> str:
    """One line for reports: which pretraining a fit started from."""
    loss = record.get("final_loss")
    return (f"{record.get('method')} on {record.get('n_inputs', '?')} unlabeled inputs "
            f"({record.get('data', 'in memory')}), {record.get('steps')} steps from {record.get('base_model')}"
            + (f", final loss {loss:.4f}" if isinstance(loss, (int, float)) else "") + f" — {record.get('folder')}")
