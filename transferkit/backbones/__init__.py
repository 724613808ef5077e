"""Pretrained encoders behind one contract (embed, feature_dim, preprocessing, blocks), heads, feature cache.

Imports transferkit.core and transferkit.data. BACKBONES is the registry of named, offline-ready models;
``timm:<name>`` and ``hf:<id or folder>`` reach any timm / transformers model; ``pretrained:<folder>`` (or the
folder alone) a backbone that `transferkit pretrain` adapted (backbones/adapted.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferkit.backbones.adapted import is_adapted_folder, load_adapted
from transferkit.backbones.audio import from_architecture as audio_from_architecture
from transferkit.backbones.audio import hf_audio_backbone, is_audio_model, whisper_tiny_en, whisper_tiny_en_l2
from transferkit.backbones.base import Backbone
from transferkit.backbones.mpnet import all_mpnet_base_v2
from transferkit.backbones.speech_embedding import from_architecture as speech_embedding_from_architecture
from transferkit.backbones.speech_embedding import speech_embedding
from transferkit.backbones.text import from_architecture as text_from_architecture
from transferkit.backbones.text import hf_text_backbone, minilm, minilm_l3
from transferkit.backbones.text_converted import multilingual_e5_small, paraphrase_minilm_l3
from transferkit.backbones.vision import (
    TimmBackbone,
    create_timm,
    efficientnet_lite0,
    efficientnet_lite0_slim,
    efficientnet_lite1,
    efficientnet_lite2,
    keep_stage_depths,
    mobilenetv2,
    timm_backbone,
)
from transferkit.backbones.vit_s14 import from_architecture as vit_s14_from_architecture
from transferkit.backbones.vit_s14 import vit_s14
from transferkit.core.catalog import MODEL_DESCRIPTIONS as DESCRIPTIONS  # noqa: F401  (re-exported: rank, tests)
from transferkit.core.registry import lookup

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": efficientnet_lite0,
    "minilm": minilm,
    "efficientnet_lite0-slim": efficientnet_lite0_slim,
    "minilm-l3": minilm_l3,
    "whisper-tiny-en": whisper_tiny_en,
    "speech-embedding": speech_embedding,
    "whisper-tiny-en-l2": whisper_tiny_en_l2,
    "efficientnet_lite1": efficientnet_lite1,
    "efficientnet_lite2": efficientnet_lite2,
    "mobilenetv2": mobilenetv2,
    "paraphrase-minilm-l3": paraphrase_minilm_l3,
    "multilingual-e5-small": multilingual_e5_small,
    "vit-s14": vit_s14,
    "all-mpnet-base-v2": all_mpnet_base_v2,
}


# registered backbones whose weights are an optional download: name -> the command that installs them
OPTIONAL_BACKBONES = {"all-mpnet-base-v2": "bash scripts/install_mpnet.sh"}
DEFAULT_FOR_MODALITY = {"image": "efficientnet_lite0", "text": "minilm", "audio": "whisper-tiny-en"}
# registered starting points of `--strategy distill` (a teacher's layer subset, never trained alone): student -> teacher
DISTILLATION_STUDENTS = {"efficientnet_lite0-slim": "efficientnet_lite0", "minilm-l3": "minilm",
                         "whisper-tiny-en-l2": "whisper-tiny-en"}
# registered backbones whose architecture depends on the clip length
_CLIP_SECONDS = {"whisper-tiny-en", "whisper-tiny-en-l2"}


def build_backbone(name: str, pretrained: bool = True, clip_seconds: float | None = None) -> Backbone:
    """Resolve a registry name, ``timm:<name>`` or ``hf:<id>`` to a backbone. ``clip_seconds``: the clip length an
    audio backbone is built for (Whisper's encoder positions; its own default when None; ignored by the others)."""
    if is_adapted_folder(name):  # pretrained:DIR or a `transferkit pretrain` folder
        return load_adapted(name, build_backbone, pretrained, clip_seconds)
    if name.startswith("timm:"):
        return timm_backbone(name.removeprefix("timm:"), pretrained)
    audio = {} if clip_seconds is None else {"clip_seconds": clip_seconds}
    if name.startswith("hf:"):
        model_id = name.removeprefix("hf:")
        if is_audio_model(model_id):
            return hf_audio_backbone(model_id, pretrained, **audio)
        return hf_text_backbone(model_id, pretrained)
    factory = lookup(BACKBONES, name, "model")
    return factory(pretrained=pretrained, **(audio if name in _CLIP_SECONDS else {}))


def backbone_from_architecture(arch: dict[str, Any], assets: Path) -> Backbone:
    """Rebuild a backbone's architecture offline (random weights; the bundle's weights are loaded next)."""
    if arch["type"] == "hf-audio":
        return audio_from_architecture(arch, assets)
    if arch["type"] == "timm":
        model = create_timm(arch["arch"], pretrained=False)
        if "stage_depths" in arch:
            keep_stage_depths(model, arch["stage_depths"])
        return TimmBackbone(arch.get("name", arch["arch"]), model, False)
    if arch["type"] == "vit-s14":
        return vit_s14_from_architecture(arch)
    if arch["type"] == "speech-embedding":
        return speech_embedding_from_architecture(arch)
    return text_from_architecture(arch, assets)
