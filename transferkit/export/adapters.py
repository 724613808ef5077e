"""Re-create a PEFT bundle's model from the pretrained backbone and its adapter.safetensors alone.

Imports transferkit.core, transferkit.backbones, transferkit.strategies and transferkit.export.bundle. What a
team ships per task can be the adapter file (LoRA on MiniLM: ~300 KB) instead of a whole model: this builds
the named pretrained backbone, checks it is the very one the adapter was trained on (SHA-256 of its tensors),
applies the recorded strategy's preparation (inject LoRA/IA3 layers, adapters or a soft prompt), loads the
adapter tensors (with ``bn='train'`` also the batch-norm statistics the run changed), and finalizes — for
LoRA/IA3 that merges them into plain weights, as the bundle's own model.safetensors already is.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from transferkit.backbones import build_backbone
from transferkit.core.errors import BundleError
from transferkit.data.preprocess import PreprocessSpec
from transferkit.export.bundle import ADAPTER_WEIGHTS, bundle_task, read_manifest
from transferkit.strategies import StrategyContext, build_strategy
from transferkit.strategies.base import batchnorm_statistics
from transferkit.tasks.model import TransferModel


def model_from_adapter(bundle_dir: Path) -> TransferModel:
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    if "adapter" not in manifest:
        raise BundleError(f"{bundle_dir} was not trained with a PEFT strategy (lora, ia3, adapter, prompt): it has "
                          f"no {ADAPTER_WEIGHTS}; load the bundle itself.")
    info = manifest["backbone"]
    # an audio backbone's architecture depends on the clip length it was built for (Whisper's positions)
    backbone = build_backbone(info["name"], pretrained=True, clip_seconds=manifest["preprocessing"].get("clip_seconds"))
    if backbone.weights_sha256 != info.get("pretrained_sha256"):
        raise BundleError(f"The pretrained weights of '{info['name']}' here differ from the ones {bundle_dir} was "
                          f"trained on (SHA-256 mismatch); its adapter only fits those.")
    backbone.preprocessing = PreprocessSpec.from_dict({**manifest["preprocessing"],
                                                       "tokenizer": backbone.preprocessing.tokenizer,
                                                       "feature_extractor": backbone.preprocessing.feature_extractor})
    task = bundle_task(manifest, bundle_dir)
    model = TransferModel(backbone, task.head(backbone.feature_dim, len(manifest["labels"])), task)
    strategy = build_strategy(manifest["strategy"]["name"], manifest["strategy"]["config"])
    strategy.prepare(model, StrategyContext(n_classes=len(manifest["labels"]), seed=0))
    tensors = load_file(str(bundle_dir / ADAPTER_WEIGHTS))
    unknown = sorted(set(tensors) - set(model.state_dict()))
    if unknown:
        raise BundleError(f"{bundle_dir / ADAPTER_WEIGHTS} holds tensors the rebuilt model lacks: {unknown[:3]}.")
    _check_statistics(bundle_dir, model, tensors, strategy.config.bn)
    with torch.no_grad():
        model.load_state_dict(tensors, strict=False)
    return strategy.finalize(model).eval()


def _check_statistics(bundle_dir: Path, model: TransferModel, tensors: dict[str, torch.Tensor], bn: str) -> None:
    """With ``bn='train'`` the run changed the batch-norm statistics; an adapter file without them (written before
    they were saved) would rebuild a different model, so it is refused rather than silently off."""
    needed = set(batchnorm_statistics(model)) if bn == "train" else set()
    missing = sorted(needed - set(tensors))
    if missing:
        raise BundleError(f"{bundle_dir / ADAPTER_WEIGHTS} lacks the batch-norm statistics its run trained (bn=train), "
                          f"e.g. {missing[0]}: it cannot rebuild the model. Load the bundle itself (model.safetensors), "
                          f"or fit again to get an adapter file that carries them.")
