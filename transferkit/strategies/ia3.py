"""(IA)^3 (Liu et al. 2022) through `peft`: learned vectors that rescale activations of frozen layers.

Imports transferkit.strategies. Even cheaper than LoRA (one vector per adapted layer): keys, values and the
feed-forward output of each transformer layer (BERT's output.dense, Whisper's fc2, wav2vec2's output_dense), or
EfficientNet's projection 1x1 convolutions (the speech-embedding CNN: its convolutions). Like LoRA it is
merged into the base weights at ``finalize``, so the bundle is the plain architecture.
"""
from __future__ import annotations

from dataclasses import dataclass

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.strategies.base import PeftStrategy, StrategyConfig, StrategyContext
from transferkit.strategies.lora import default_targets, inject_adapters, merge_adapters
from transferkit.tasks.model import TransferModel

DEFAULT_TARGETS = {"text": ("key", "value", "output.dense"), "image": ("conv_pwl", "conv_head"),
                   "audio": ("k_proj", "v_proj", "fc2", "output_dense")}  # Whisper: fc2; wav2vec2: output_dense
DEFAULT_FEEDFORWARD = {"text": ("output.dense",), "image": ("conv_pwl", "conv_head"),  # scale inputs, not outputs
                       "audio": ("fc2", "output_dense")}
BACKBONE_TARGETS = {"speech-embedding": ("conv",), "vit-s14": ("attn.qkv", "mlp.fc2")}  # timm ViT: fused q/k/v
BACKBONE_FEEDFORWARD = {"speech-embedding": ("conv",), "vit-s14": ("mlp.fc2",)}


@dataclass(frozen=True)
class IA3Config(StrategyConfig):
    target_modules: tuple[str, ...] | None = None  # None: DEFAULT_TARGETS for the modality
    feedforward_modules: tuple[str, ...] | None = None  # a subset of target_modules


class IA3(PeftStrategy):
    name = "ia3"
    config_class = IA3Config
    summary = STRATEGY_SUMMARIES["ia3"]

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        from peft import IA3Config as PeftIA3Config

        targets = list(self.config.target_modules or default_targets(model, DEFAULT_TARGETS, BACKBONE_TARGETS))
        feedforward = list(self.config.feedforward_modules or (
            default_targets(model, DEFAULT_FEEDFORWARD, BACKBONE_FEEDFORWARD) if not self.config.target_modules else ()))
        inject_adapters(model, PeftIA3Config(target_modules=targets, feedforward_modules=feedforward), "ia3_")

    def finalize(self, model: TransferModel) -> TransferModel:
        merge_adapters(model.backbone.model)
        return model.eval()
