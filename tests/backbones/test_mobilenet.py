"""torchvision MobileNetV2 -> timm mobilenetv2_100: the explicit key mapping, on the real weights file."""
from __future__ import annotations

import pytest
import timm
import torch

from transferkit.backbones.mobilenet import timm_key, torchvision_to_timm
from transferkit.backbones.provenance import weights_file
from transferkit.core.errors import BackboneLoadError


@pytest.mark.parametrize("torchvision, timm_name", [
    ("features.0.0.weight", "conv_stem.weight"),
    ("features.0.1.running_var", "bn1.running_var"),
    ("features.1.conv.0.0.weight", "blocks.0.0.conv_dw.weight"),
    ("features.1.conv.1.weight", "blocks.0.0.conv_pw.weight"),
    ("features.1.conv.2.bias", "blocks.0.0.bn2.bias"),
    ("features.2.conv.0.0.weight", "blocks.1.0.conv_pw.weight"),
    ("features.3.conv.1.0.weight", "blocks.1.1.conv_dw.weight"),
    ("features.4.conv.2.weight", "blocks.2.0.conv_pwl.weight"),
    ("features.10.conv.3.num_batches_tracked", "blocks.3.3.bn3.num_batches_tracked"),
    ("features.17.conv.1.1.weight", "blocks.6.0.bn2.weight"),
    ("features.18.0.weight", "conv_head.weight"),
    ("features.18.1.running_mean", "bn2.running_mean"),
    ("classifier.1.weight", "classifier.weight"),
])
def test_timm_key(torchvision: str, timm_name: str):
    assert timm_key(torchvision) == timm_name


@pytest.mark.parametrize("key", ["features.19.conv.0.0.weight", "features.1.conv.3.weight", "features.2.conv.4.bias",
                                 "classifier.0.weight", "features.2.conv.0.0.scale", "fc.weight"])
def test_keys_outside_the_layout_are_refused(key: str):
    with pytest.raises(KeyError):
        timm_key(key)
    with pytest.raises(BackboneLoadError, match=f"mobilenet.pth: tensor '{key}' is not part of torchvision"):
        torchvision_to_timm({key: torch.zeros(1)}, "mobilenet.pth")


def test_the_real_file_fills_timm_exactly():
    """Every one of the file's 314 tensors lands on a distinct timm name of the same shape; nothing missing."""
    source = torch.load(weights_file("mobilenetv2"), map_location="cpu", weights_only=True)
    mapped = torchvision_to_timm(source, "mobilenet_v2-b0353104.pth")
    model = timm.create_model("mobilenetv2_100", pretrained=False)
    assert len(mapped) == len(source) == 314
    result = model.load_state_dict(mapped, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    target = model.state_dict()
    assert all(mapped[k].shape == target[k].shape for k in target)
