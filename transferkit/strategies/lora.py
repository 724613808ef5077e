"""LoRA (Hu et al. 2021) through the `peft` library: low-rank updates beside frozen pretrained weights.

Imports transferkit.strategies. peft's ``inject_adapter_in_model`` wraps the target layers of the backbone in
place (attention projections of a transformer, Whisper's and wav2vec2's q/k/v/out_proj included; the pointwise
1x1 convolutions of an EfficientNet; the speech-embedding CNN's convolutions), only the
LoRA matrices and the new head train, and ``finalize`` merges the updates into the base weights and unwraps the
layers, so the bundle holds the plain architecture (no peft needed to load it) and predicts exactly as the
adapted model did. The head is part of TransferModel, not of peft's wrapper, so it is always trained and saved
(peft's `modules_to_save` pitfall cannot occur).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import PeftStrategy, StrategyConfig, StrategyContext, set_requires_grad
from transferkit.tasks.model import TransferModel

DEFAULT_TARGETS = {
    "text": ("query", "value"),  # BERT-style attention projections (MiniLM), as in the LoRA paper
    "image": ("conv_pwl", "conv_head"),  # EfficientNet projection 1x1 convs (the expansion ones would add ~4 %)
    "audio": ("q_proj", "k_proj", "v_proj", "out_proj"),  # Whisper / wav2vec2 / HuBERT / WavLM self-attention
}
# backbones whose layers the modality's defaults miss: the speech-embedding CNN has no attention, its 19
# convolutions are each named 'conv' (the final projection is left out, as a head-side layer); a timm ViT fuses
# query, key and value into one Linear, 'attn.qkv'
BACKBONE_TARGETS = {"speech-embedding": ("conv",), "vit-s14": ("attn.qkv",)}


def default_targets(model: TransferModel, defaults: dict[str, tuple[str, ...]],
                    per_backbone: dict[str, tuple[str, ...]]) -> list[str]:
    """The layers a PEFT method adapts when ``target_modules`` is not given: the backbone's own, else its
    modality's (registered students share their teacher's names: 'whisper-tiny-en-l2' is Whisper)."""
    backbone = model.backbone
    return list(per_backbone.get(backbone.name) or defaults[backbone.modality])


@dataclass(frozen=True)
class LoraConfig(StrategyConfig):
    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # module-name suffixes; None: DEFAULT_TARGETS for the modality

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"The 'rank' parameter of LoraConfig must be an int >= 1. Got {self.rank!r} instead.")
        if self.alpha <= 0:
            raise ConfigError(f"The 'alpha' parameter of LoraConfig must be > 0. Got {self.alpha!r} instead.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"The 'dropout' parameter of LoraConfig must be in [0, 1). Got {self.dropout!r}.")


class Lora(PeftStrategy):
    name = "lora"
    config_class = LoraConfig
    summary = STRATEGY_SUMMARIES["lora"]

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        from peft import LoraConfig as PeftLoraConfig

        targets = list(self.config.target_modules or default_targets(model, DEFAULT_TARGETS, BACKBONE_TARGETS))
        config = PeftLoraConfig(r=self.config.rank, lora_alpha=self.config.alpha, lora_dropout=self.config.dropout,
                                target_modules=targets)
        inject_adapters(model, config, "lora_")

    def finalize(self, model: TransferModel) -> TransferModel:
        merge_adapters(model.backbone.model)
        return model.eval()


def inject_adapters(model: TransferModel, peft_config, marker: str) -> None:
    """Wrap the backbone's target layers with peft adapters in place; only parameters whose name holds
    ``marker`` (e.g. 'lora_') and the head train afterwards."""
    from peft import inject_adapter_in_model

    set_requires_grad(model, False)
    try:
        inject_adapter_in_model(peft_config, model.backbone.model)
    except ValueError as exc:  # peft: no module matched the targets
        raise ConfigError(f"{type(peft_config).__name__} found no layers to adapt in {model.backbone.name} with "
                          f"target_modules={peft_config.target_modules}: {exc}. Pass -o target_modules=[...] with "
                          f"names of its Linear/Conv2d layers.") from None
    for name, p in model.backbone.named_parameters():
        p.requires_grad_(marker in name)
    set_requires_grad(model.head, True)


def merge_adapters(module: nn.Module) -> None:
    """Fold every peft adapter layer (LoRA, IA3) into its base layer and put the base layer back in its place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in wrapped:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
