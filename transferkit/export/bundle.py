"""Save and load bundles: ``model.safetensors`` + ``transferkit.json`` (+ tokenizer/config for text models, the
feature extractor's ``preprocessor_config.json`` for audio models that have one).

Imports transferkit.core, transferkit.data, transferkit.backbones and transferkit.tasks. A bundle alone is
enough to predict, offline: the architecture is rebuilt from the manifest (its ``task`` names the head, via
transferkit.tasks.TASKS; an optional ``head`` entry holds the options of another kind of head, e.g. prototypes)
and the weights come only from safetensors (no pickle).
The folder is written next to its destination and renamed into place, so a crash never leaves half a bundle.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file, save_model

from transferkit.backbones import backbone_from_architecture
from transferkit.backbones.provenance import PretrainedWeightsWarning, pretrained_mismatch
from transferkit.core.errors import BundleError, UnknownNameError
from transferkit.core.io import atomic_write_json, staged_folder
from transferkit.data.labels import LabelMap
from transferkit.data.preprocess import PreprocessSpec
from transferkit.tasks import Task, get_task
from transferkit.tasks.model import TransferModel

WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter.safetensors"
MANIFEST = "transferkit.json"
FEATURE_EXTRACTOR = "feature_extractor"  # audio: the transformers feature extractor's folder inside a bundle
FORMAT_VERSION = 1
INFERENCE_PRECISIONS = ("fp32", "bf16")


@dataclass
class Bundle:
    model: TransferModel
    manifest: dict[str, Any]
    label_map: LabelMap
    preprocessing: PreprocessSpec
    path: Path
    warnings: list[str] = field(default_factory=list)  # e.g. the pretrained file differs from the recorded one


def save_bundle(folder: Path, model: TransferModel, manifest: dict[str, Any],
                adapter: dict[str, Any] | None = None) -> Path:
    """``adapter`` (PEFT runs): the trained tensors alone, unmerged, kept as adapter.safetensors beside the model:
    a few hundred KB that re-create the model on top of the pretrained backbone (export.adapters)."""
    folder = Path(folder)
    with staged_folder(folder) as staging:
        # save_model stores a tensor shared under two names (peft's prompt wrapper aliases the word embeddings) once
        save_model(model, str(staging / WEIGHTS), metadata={"format": "transferkit", "version": str(FORMAT_VERSION)})
        if adapter:
            save_file({k: v.contiguous() for k, v in adapter.items()}, str(staging / ADAPTER_WEIGHTS),
                      metadata={"format": "transferkit-adapter", "version": str(FORMAT_VERSION)})
            manifest = {**manifest, "adapter": {"file": ADAPTER_WEIGHTS, "tensors": len(adapter),
                                                "params": sum(v.numel() for v in adapter.values())}}
        model.backbone.save_assets(staging)
        _save_feature_extractor(model.backbone.preprocessing, staging / FEATURE_EXTRACTOR)
        atomic_write_json(staging / MANIFEST, {"format_version": FORMAT_VERSION, **manifest})
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


def recorded_precision(manifest: dict[str, Any], where: Path | str = MANIFEST) -> str:
    """The precision the bundle predicts in — evaluate, predict, serve and the export check all use it; fp32 for
    bundles written before fit recorded it."""
    value = manifest.get("inference_precision", "fp32")
    if value not in INFERENCE_PRECISIONS:
        raise BundleError(f"{where}: 'inference_precision' must be one of {INFERENCE_PRECISIONS}. Got {value!r}; "
                          f"set it to \"fp32\" (what an ONNX export computes in).")
    return value


def read_weights(path: Path) -> dict[str, Any]:
    """A bundle's tensors, from safetensors only; anything else in the file is refused, never unpickled."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parse failure means "not our weights"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{path}: cannot read safetensors weights ({reason}); bundles hold only safetensors "
                          "and are never unpickled.") from None


def bundle_task(manifest: dict[str, Any], folder: Path | str) -> Task:
    """The task a bundle was fitted for: its manifest's ``task`` is the key it is loaded by."""
    try:
        return get_task(manifest["task"])
    except UnknownNameError as exc:
        raise BundleError(f"{Path(folder) / MANIFEST}: {exc} Upgrade transferkit to load this bundle.") from None


def refuse_onnx_export(folder: Path, command: str) -> None:
    """BundleError when ``folder`` is an ONNX export (only predict and serve run those), naming the PyTorch bundle
    it came from when its manifest recorded one."""
    if not (Path(folder) / MANIFEST).is_file():
        return
    manifest = read_manifest(Path(folder))
    if manifest.get("runtime") != "onnx":
        return
    source = (manifest.get("onnx") or {}).get("source_bundle")
    raise BundleError(f"'{folder}' is an ONNX export (predict and serve run it); {command} the PyTorch bundle it "
                      f"came from{f' ({source})' if source else ''} instead.")


def load_bundle(folder: Path) -> Bundle:
    folder = Path(folder)
    refuse_onnx_export(folder, "use")
    manifest = read_manifest(folder)
    try:
        backbone = backbone_from_architecture(manifest["backbone"]["architecture"], folder)
        label_map = LabelMap(tuple(manifest["labels"]))
        task = bundle_task(manifest, folder)
        head = task.head(backbone.feature_dim, len(label_map), manifest.get("head_dropout", 0.0),
                         names=label_map.names,  # tokens: the tag names it scores and answers with
                         **manifest.get("head", {}))  # a head other than the task's default (protonet's prototypes)
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{folder / MANIFEST} lacks or garbles the entry {exc}; the bundle is damaged.") from None
    model = TransferModel(backbone, head, task)
    state = read_weights(folder / WEIGHTS)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not _alias_loaded(model, name, state)]
    if missing or unexpected:
        raise BundleError(f"{folder / WEIGHTS} does not match the architecture in {MANIFEST}: "
                          f"{len(missing)} missing and {len(unexpected)} unexpected tensors.")
    spec = bundle_spec(manifest["preprocessing"], folder)
    notes = [m] if (m := pretrained_mismatch(manifest["backbone"], folder)) else []
    for note in notes:
        warnings.warn(note, PretrainedWeightsWarning, stacklevel=2)
    return Bundle(model.eval(), manifest, label_map, spec, folder, notes)


def bundle_spec(recorded: dict[str, Any], folder: Path) -> PreprocessSpec:
    """The manifest's preprocessing spec with its tokenizer / feature extractor read from the bundle's own copy."""
    spec = dict(recorded)
    if spec.get("tokenizer") is not None:
        spec["tokenizer"] = str(folder / "tokenizer")
    if spec.get("feature_extractor") is not None:
        spec["feature_extractor"] = str(folder / FEATURE_EXTRACTOR)
    return PreprocessSpec.from_dict(spec)


def _save_feature_extractor(spec: PreprocessSpec, target: Path) -> None:
    """Copy an audio spec's feature extractor into the bundle (unless the backbone's save_assets already did)."""
    if spec.feature_extractor is None or target.exists():
        return
    from transformers import AutoFeatureExtractor

    AutoFeatureExtractor.from_pretrained(spec.feature_extractor).save_pretrained(target)


def _alias_loaded(model: TransferModel, name: str, state: dict[str, Any]) -> bool:
    """True when ``name`` shares its tensor with another name that was loaded (saved once by save_model)."""
    tensors = model.state_dict()
    ptr = tensors[name].data_ptr()
    return any(other in state for other, t in tensors.items() if other != name and t.data_ptr() == ptr)
