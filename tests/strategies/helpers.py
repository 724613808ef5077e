"""Shared pieces of the strategy tests: a tiny real image task (or text, or audio), model builders and the loop's
call order.

Digits at 32 px through EfficientNet-Lite0 (pretrained unless the strategy says not). At 32 px the backbone's
last feature map is 1x1, so a forward+backward of 16 images takes ~0.1-0.3 s on one CPU thread.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.backbones import build_backbone
from transferkit.backbones.features import extract_features
from transferkit.data.examples import Examples
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.data.splits import stratified_split
from transferkit.strategies import STRATEGIES, Strategy, StrategyContext, build_strategy
from transferkit.tasks import ClassificationHead
from transferkit.tasks.model import TransferModel
from transferkit.train.config import TrainConfig
from transferkit.train.optim import build_optimizer

IMAGE_SIZE = 32
LOOP_STRATEGIES = sorted(name for name, cls in STRATEGIES.items() if cls.trains_with_loop)


def text_only(name: str) -> bool:
    return STRATEGIES[name].modalities == ("text",)


class Task:
    """A labeled image folder (or text CSV, with ``backbone='minilm'``) split into train/val (``split`` > 0) or
    used whole for both (``split`` = 0). Its context carries a teacher (a linear probe on the same data) for
    distillation; the other strategies ignore it."""

    def __init__(self, folder: Path, split: float = 0.2, backbone: str = "efficientnet_lite0",
                 clip_seconds: float | None = None):
        self.backbone, self.clip_seconds = backbone, clip_seconds  # clip_seconds: audio clips' length
        self._teacher: TransferModel | None = None
        examples = load_source(folder).train
        if split:
            self.train, self.val = stratified_split(examples, split, seed=0)
        else:
            self.train = self.val = examples
        self.label_map = LabelMap.from_labels(self.train.labels, "train")

    @property
    def n_classes(self) -> int:
        return len(self.label_map)

    def model(self, strategy: Strategy, seed: int = 0) -> TransferModel:
        torch.manual_seed(seed)  # the from-scratch backbone is drawn from the global RNG
        backbone = build_backbone(self.backbone, pretrained=strategy.uses_pretrained_weights,
                                  clip_seconds=self.clip_seconds)
        if backbone.modality == "image":
            backbone.preprocessing = backbone.preprocessing.with_image_size(IMAGE_SIZE)
        if backbone.modality == "audio" and self.clip_seconds:
            backbone.preprocessing = backbone.preprocessing.with_clip_seconds(self.clip_seconds)
        return TransferModel(backbone, ClassificationHead(backbone.feature_dim, self.n_classes))

    def teacher(self) -> TransferModel:
        """A pretrained backbone with a linear-probe head fitted on this task (built once, frozen)."""
        if self._teacher is None:
            probe = build_strategy("linear-probe")
            teacher = self.model(probe)
            probe.prepare(teacher, self._features_context(teacher))
            self._teacher = probe.finalize(teacher)
        return self._teacher

    def context(self, model: TransferModel) -> StrategyContext:
        ctx = self._features_context(model)
        ctx.teacher = self.teacher()
        return ctx

    def _features_context(self, model: TransferModel) -> StrategyContext:
        spec = model.backbone.preprocessing

        def features(split: str) -> tuple[np.ndarray, np.ndarray]:
            part: Examples = {"train": self.train, "val": self.val}[split]
            x = extract_features(model.backbone, make_loader(part, spec, None, 16), "fp32")
            return x, np.array(self.label_map.encode(part.labels))

        return StrategyContext(n_classes=self.n_classes, seed=0, features=features)

    def batch(self, model: TransferModel, size: int = 12, shuffle_seed: int | None = 0) -> dict[str, Any]:
        """The first batch of the training split; augmentation off (make_loader's default)."""
        loader = make_loader(self.train, model.backbone.preprocessing, self.label_map, size, shuffle_seed=shuffle_seed)
        return next(iter(loader))

    def prepared(self, name: str, options: dict[str, Any] | None = None, seed: int = 0
                 ) -> tuple[Strategy, TransferModel, StrategyContext]:
        strategy = build_strategy(name, options)
        model = self.model(strategy, seed)
        ctx = self.context(model)
        strategy.prepare(model, ctx)
        return strategy, model, ctx


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def bn_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def changed_keys(model: nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    after = model.state_dict()
    return {k for k, v in before.items() if not torch.equal(after[k], v)}


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def block_pattern(model: TransferModel) -> list[bool]:
    """Per backbone block: does every parameter train (True), none (False)? Mixed blocks fail the test."""
    pattern = []
    for block in model.backbone.blocks():
        flags = {p.requires_grad for p in block.parameters()}
        assert len(flags) == 1, "a block is partly frozen"
        pattern.append(flags.pop())
    return pattern


def optimizer_for(strategy: Strategy, model: TransferModel, lr: float = 1e-2, weight_decay: float = 0.05,
                  optimizer: str = "adamw") -> torch.optim.Optimizer:
    cfg = TrainConfig(epochs=1, lr=lr, weight_decay=weight_decay, optimizer=optimizer, progress=False)
    return build_optimizer(strategy.param_groups(model, cfg.lr, cfg.weight_decay), cfg)


def train_steps(model: TransferModel, strategy: Strategy, ctx: StrategyContext, batch: dict[str, Any],
                optimizer: torch.optim.Optimizer, steps: int = 1, epoch: int = 0, clip: float = 0.0) -> list[float]:
    """``steps`` optimizer steps within ``epoch``, with the calls in the loop's order; returns the losses."""
    strategy.on_epoch_start(model, epoch)
    strategy.train_mode(model)
    losses = []
    for _ in range(steps):
        loss = strategy.training_step(model, batch, ctx)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def eval_logits(model: TransferModel, batch: dict[str, Any]) -> torch.Tensor:
    model.eval()
    with torch.inference_mode():
        return model(batch)


def finalized_copy(strategy: Strategy, model: TransferModel) -> TransferModel:
    """finalize() may rewrite the model (merge adapters, drop a teacher): give it a copy, keep training the original."""
    return strategy.finalize(copy.deepcopy(model))


def params_of(modules: Iterable[nn.Module]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def block_modules(model: TransferModel, blocks: Iterable[nn.Module] | None = None) -> list[nn.Module]:
    """The model's own modules inside ``blocks`` (default: every backbone block). ``Backbone.blocks()`` may wrap
    modules in a fresh container (TimmBackbone: the stem and the top), which is not part of the model."""
    registered = {id(m) for m in model.modules()}
    blocks = model.backbone.blocks() if blocks is None else blocks
    return [m for b in blocks for m in b.modules() if id(m) in registered]


def outside_batchnorm(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """``modules`` less batch-norm layers and their children (timm's BatchNormAct2d holds its activation)."""
    inside = {id(m) for bn in modules if isinstance(bn, nn.modules.batchnorm._BatchNorm) for m in bn.modules()}
    return [m for m in modules if id(m) not in inside]
