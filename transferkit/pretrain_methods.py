"""The self-supervised objectives of `transferkit pretrain`: SimCLR for images, SimCSE for sentence encoders and
masked-language modelling for ``hf:`` encoders that ship an MLM head.

A top-level module used by transferkit.pretrain (imports data, backbones and strategies.losses). Each objective
owns the helper modules it trains beside the backbone (a projection head, an MLM head: checkpointed, never saved
with the backbone) and turns a batch of raw inputs into one loss. Randomness (augmentations, dropout, masking)
comes from torch's global generator, which checkpoints save and restore: that is what makes resume exact.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2 as T

from transferkit.backbones.base import Backbone
from transferkit.core.errors import ConfigError
from transferkit.data.examples import a_modality
from transferkit.data.images import load_image
from transferkit.data.preprocess import PreprocessSpec, load_tokenizer
from transferkit.strategies.losses import info_nce, nt_xent

# method -> (modality, default learning rate, default temperature)
METHODS: dict[str, tuple[str, float, float]] = {
    "simclr": ("image", 1e-4, 0.5),   # Chen et al. 2020; 0.5 is lightly's NTXentLoss default for small batches
    "simcse": ("text", 3e-5, 0.05),   # Gao et al. 2021, unsupervised: dropout is the augmentation
    "mlm": ("text", 5e-5, 0.0),       # BERT's masked-language-model objective, continued on in-domain text
}


def contrastive_transform(spec: PreprocessSpec) -> T.Compose:
    """SimCLR's view: random resized crop, flip, colour jitter, grey (no blur: our images are often tiny)."""
    size = (spec.image_size, spec.image_size)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=T.InterpolationMode(spec.interpolation),
                            antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std),
    ])


class Objective:
    """One self-supervised objective over a backbone: ``helpers`` are trained with it, ``loss`` is one step."""

    name: str
    helpers: nn.Module

    def loss(self, inputs: list[Any], device: torch.device) -> torch.Tensor:
        raise NotImplementedError


class SimCLR(Objective):
    """Two augmented views of each image; NT-Xent over a 2-layer projection head (dropped afterwards)."""

    name = "simclr"

    def __init__(self, backbone: Backbone, temperature: float, projection_dim: int, max_pixels: int | None):
        d = backbone.feature_dim
        self.backbone, self.temperature, self.max_pixels = backbone, temperature, max_pixels
        self.helpers = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, projection_dim))
        self.transform = contrastive_transform(backbone.preprocessing)

    def loss(self, inputs: list[Any], device: torch.device) -> torch.Tensor:
        images = [load_image(x, self.max_pixels) for x in inputs]
        views = torch.stack([self.transform(im) for im in images] + [self.transform(im) for im in images])
        z = self.helpers(self.backbone.embed({"pixel_values": views.to(device)}))
        return nt_xent(*z.chunk(2), self.temperature)


class SimCSE(Objective):
    """Each sentence encoded twice in training mode: the dropout masks differ, the other sentences are negatives.

    ``span_words`` > 0: each view of a longer text is an independent random span of that many words (DeCLUTR's
    spans, Giorgi et al. 2021). Two dropout views of a whole news article are nearly identical and no two articles
    are alike, so without spans the loss starts near 0 on long documents and the encoder barely moves.
    """

    name = "simcse"

    def __init__(self, backbone: Backbone, temperature: float, max_length: int, span_words: int = 0):
        self.backbone, self.temperature, self.max_length = backbone, temperature, max_length
        self.span_words = span_words
        self.tokenizer = load_tokenizer(backbone.preprocessing)
        self.helpers = nn.Module()  # nothing beside the backbone

    def view(self, text: str) -> str:
        words = text.split()
        if not self.span_words or len(words) <= self.span_words:
            return text
        start = int(torch.randint(len(words) - self.span_words + 1, ()))  # torch's generator: resumable
        return " ".join(words[start:start + self.span_words])

    def loss(self, inputs: list[Any], device: torch.device) -> torch.Tensor:
        texts = [str(x) for x in inputs]
        views = [self.tokenizer([self.view(t) for t in texts], padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(device) for _ in range(2)]
        return info_nce(self.backbone.embed(views[0]), self.backbone.embed(views[1]), self.temperature)


class MaskedLM(Objective):
    """transformers' AutoModelForMaskedLM around the backbone's own encoder (shared, not copied), with
    DataCollatorForLanguageModeling's 80/10/10 masking."""

    name = "mlm"

    def __init__(self, backbone: Backbone, mlm_probability: float, max_length: int):
        from transformers import DataCollatorForLanguageModeling

        self.backbone, self.max_length = backbone, max_length
        self.model = mlm_model(backbone)
        prefix = self.model.base_model_prefix
        self.helpers = nn.ModuleDict({k: m for k, m in self.model.named_children() if k != prefix})
        self.tokenizer = load_tokenizer(backbone.preprocessing)
        self.collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=mlm_probability,
                                                        return_tensors="pt")

    def loss(self, inputs: list[Any], device: torch.device) -> torch.Tensor:
        encoded = self.tokenizer([str(x) for x in inputs], truncation=True, max_length=self.max_length)
        rows = [{k: encoded[k][i] for k in encoded} for i in range(len(inputs))]
        batch = {k: v.to(device) for k, v in self.collator(rows).items()}
        self.model.train(self.backbone.training)
        return self.model(**batch).loss


def mlm_model(backbone: Backbone) -> nn.Module:
    """The backbone's checkpoint loaded with its MLM head, the encoder swapped for the backbone's own (weights
    tied again); ConfigError when the checkpoint has no trained MLM head (a sentence-transformers model)."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    source = backbone.preprocessing.tokenizer  # hf text backbones load model and tokenizer from one place
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were not initialised" is our own check below
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--method mlm: {backbone.name} has no masked-language-model form ({str(exc).splitlines()[0]}); "
                          "use --method simcse.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = model.base_model_prefix
    head_missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix)]
    if head_missing:
        raise ConfigError(f"--method mlm: {backbone.name} has no trained masked-language-model head (its weights lack "
                          f"{sorted(head_missing)[0]}; a sentence-transformers model is saved without one); use "
                          "--method simcse (or --method auto, which picks it).")
    setattr(model, prefix, backbone.model)
    model.tie_weights()
    return model


def has_mlm_head(backbone: Backbone) -> bool:
    try:
        mlm_model(backbone)
    except ConfigError:
        return False
    return True


def resolve_method(method: str, backbone: Backbone) -> str:
    """'auto' -> simclr for images; mlm for a text encoder with an MLM head, else simcse. A named method must fit
    the backbone's modality."""
    if backbone.modality not in ("image", "text"):
        raise ConfigError(f"pretrain adapts image and text backbones; {backbone.name} is "
                          f"{a_modality(backbone.modality)} model.")
    if method == "auto":
        if backbone.modality == "image":
            return "simclr"
        return "mlm" if backbone.name.startswith("hf:") and has_mlm_head(backbone) else "simcse"
    modality = METHODS[method][0]
    if modality != backbone.modality:
        fits = ", ".join(m for m, (mod, _, _) in METHODS.items() if mod == backbone.modality)
        raise ConfigError(f"--method {method} adapts {modality} backbones, but {backbone.name} is a "
                          f"{backbone.modality} model; use --method {fits} (or auto).")
    return method


def build_objective(method: str, backbone: Backbone, temperature: float | None, projection_dim: int,
                    mlm_probability: float, max_length: int, max_pixels: int | None,
                    span_words: int = 0) -> Objective:
    t = temperature if temperature is not None else METHODS[method][2]
    if method == "simclr":
        return SimCLR(backbone, t, projection_dim, max_pixels)
    if method == "simcse":
        return SimCSE(backbone, t, max_length, span_words)
    return MaskedLM(backbone, mlm_probability, max_length)
