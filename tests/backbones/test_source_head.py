"""Backbone.source_head / source_logits: the ImageNet classifier EfficientNet-Lite0 keeps for LEEP and NCE, outside
the module tree (never trained, saved or hashed), and None where a backbone has no source classifier."""
from __future__ import annotations

import torch

from transferkit.backbones import build_backbone
from transferkit.backbones.base import state_dict_sha256
from transferkit.backbones.vision import efficientnet_lite0_imagenet


def test_lite0_source_logits_are_the_imagenet_models_logits():
    backbone = build_backbone("efficientnet_lite0").eval()
    full = efficientnet_lite0_imagenet()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        logits = backbone.source_logits({"pixel_values": x})
        expected = full(x)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # kept outside the module tree: the state dict, parameters and weights hash are the headless model's
    assert not any(k.startswith("classifier") and v.numel() for k, v in backbone.state_dict().items())
    assert sum(p.numel() for p in backbone.parameters()) == sum(p.numel() for p in backbone.model.parameters())
    assert backbone.weights_sha256 == state_dict_sha256(backbone.model)


def test_backbones_without_a_source_classifier_say_none():
    slim = build_backbone("efficientnet_lite0-slim")  # its shortened network's features are not what ImageNet's reads
    assert slim.source_head() is None
    assert slim.source_logits({"pixel_values": torch.zeros(1, 3, 32, 32)}) is None
    assert build_backbone("efficientnet_lite0", pretrained=False).source_head() is None
