"""Save and load bundles: ``model.safetensors`` + ``transferkit.json`` (+ tokenizer/config for text models).

Imports transferkit.core, transferkit.data and transferkit.backbones. A bundle alone is enough to predict,
offline: the architecture is rebuilt from the manifest and the weights come only from safetensors (no pickle).
The folder is written next to its destination and renamed into place, so a crash never leaves half a bundle.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transferkit.backbones import backbone_from_architecture
from transferkit.backbones.heads import HEADS, TransferModel
from transferkit.core.errors import BundleError
from transferkit.core.io import atomic_write_json
from transferkit.data.labels import LabelMap
from transferkit.data.preprocess import PreprocessSpec

WEIGHTS = "model.safetensors"
MANIFEST = "transferkit.json"
FORMAT_VERSION = 1


@dataclass
class Bundle:
    model: TransferModel
    manifest: dict[str, Any]
    label_map: LabelMap
    preprocessing: PreprocessSpec
    path: Path


def save_bundle(folder: Path, model: TransferModel, manifest: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS), metadata={"format": "transferkit", "version": str(FORMAT_VERSION)})
        model.backbone.save_assets(staging)
        atomic_write_json(staging / MANIFEST, {"format_version": FORMAT_VERSION, **manifest})
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def read_manifest(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BundleError(f"Bundle folder '{folder}' does not exist; pass the bundle/ folder of a run.")
    if not path.exists():
        raise BundleError(f"'{folder}' is not a transferkit bundle: it has no {MANIFEST}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); the bundle is damaged.") from None


def load_bundle(folder: Path) -> Bundle:
    folder = Path(folder)
    manifest = read_manifest(folder)
    backbone = backbone_from_architecture(manifest["backbone"]["architecture"], folder)
    label_map = LabelMap(tuple(manifest["labels"]))
    head = HEADS[manifest["task"]](backbone.feature_dim, len(label_map), manifest.get("head_dropout", 0.0))
    model = TransferModel(backbone, head)
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{folder / WEIGHTS}: cannot read safetensors weights ({exc}).") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(f"{folder / WEIGHTS} does not match the architecture in {MANIFEST}: "
                          f"{len(missing)} missing and {len(unexpected)} unexpected tensors.")
    spec = dict(manifest["preprocessing"])
    if spec.get("tokenizer") is not None:
        spec["tokenizer"] = str(folder / "tokenizer")
    return Bundle(model.eval(), manifest, label_map, PreprocessSpec.from_dict(spec), folder)
