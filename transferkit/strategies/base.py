"""The strategy contract: how a pretrained model's parameters adapt. The training loop knows nothing else.

Imports transferkit.core, transferkit.data and transferkit.backbones, transferkit.tasks only.

A strategy (1) prepares the model before training — freezes, injects adapters, fits a head in closed form;
(2) gives the optimizer its parameter groups; (3) computes one step's loss from a batch (which may carry
extra keys: unlabeled target-domain inputs, episodes); (4) reacts at epoch start (gradual unfreezing);
(5) sets train/eval mode per module (frozen batch-norm); (6) finalizes an inference-ready model (merge
adapters, drop a teacher); (7) saves/restores its own state for exact resume. Anything a method needs beyond
the labeled batch — cached features, a teacher, unlabeled data — arrives through StrategyContext.

Under several processes (train.engine) the step gets the raw model for its parts (``model.head``,
``model.backbone``, parameters for a penalty) and runs the forward pass through ``forward(model, batch, ctx)``,
which goes through the DDP wrapper, so gradients are averaged over ranks. Helper modules a strategy trains but
never bundles (a domain discriminator, a projection head) are declared by ``helpers()``: the loop wraps them the
same way (``ctx.helpers[name]`` for their forward pass) and checkpoints them with the model. DDP fixes the set
of parameters that train when it wraps the model, so schedules over epochs call ``set_trainable``: in one process
it sets ``requires_grad`` as before; under DDP (``pause_instead_of_freeze``) requires_grad stays on and the
parameter is *paused* instead: the loop drops its gradient before the optimizer step, which is a learning rate of
0 that also leaves the optimizer's moments and weight decay alone, exactly as a frozen parameter.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from transferkit.core.errors import ConfigError
from transferkit.tasks.model import TransferModel

BN_POLICIES = ("freeze", "train")


@dataclass(frozen=True)
class StrategyConfig:
    """Base for every strategy's config; subclasses add fields with defaults and call super().__post_init__().

    ``bn`` is the batch-norm policy every strategy shares: 'freeze' keeps the pretrained running statistics
    (safe on batches of 8-16, where per-batch statistics are noisy), 'train' updates them (useful when the
    target images differ a lot from ImageNet and batches are large). Backbones without batch norm ignore it.
    """

    bn: str = "freeze"

    def __post_init__(self) -> None:
        if self.bn not in BN_POLICIES:
            raise ConfigError(f"The 'bn' parameter must be one of {BN_POLICIES}. Got {self.bn!r} instead.")


@dataclass
class StrategyContext:
    """What the api hands a strategy besides the model.

    ``features(split)`` returns cached frozen features and integer labels for 'train' or 'val'.
    ``teacher`` (distillation), ``unlabeled`` (distillation's extra inputs) and ``target`` (domain adaptation:
    a stream of unlabeled target batches, paired with the labeled ones by strategies.domain) are None unless given.
    ``class_weight`` (one per class, or None) is what the loop's loss uses; closed-form heads apply it too.
    """

    n_classes: int
    seed: int
    class_weight: np.ndarray | None = None
    features: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None
    teacher: nn.Module | None = None
    unlabeled: Any = None  # distill: Examples without labels that join the training set
    target: Any = None  # domain adaptation: the resumable stream of unlabeled target batches (train.streams)
    extras: dict[str, Any] = field(default_factory=dict)
    forward: Callable[[dict[str, Any]], torch.Tensor] | None = None  # the model as the engine wrapped it (DDP)
    helpers: dict[str, nn.Module] = field(default_factory=dict)  # helper modules as the engine wrapped them


def forward(model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
    """The model's outputs for ``batch`` through the engine's wrapper when there is one (gradients then reach
    every rank), else through the model itself."""
    return (ctx.forward or model)(batch)


class Strategy:
    """Default behaviour = train every parameter with one learning rate; subclasses override what differs."""

    name: ClassVar[str]
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    summary: ClassVar[str] = ""
    uses_pretrained_weights: ClassVar[bool] = True
    trains_with_loop: ClassVar[bool] = True
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")  # the backbones it knows how to adapt
    needs_teacher: ClassVar[bool] = False
    needs_target: ClassVar[bool] = False  # reads unlabeled target-domain batches (fit --target-data)
    tasks: ClassVar[tuple[str, ...] | None] = None  # the task names it can train; None: every task

    def check_modality(self, model: TransferModel) -> None:
        if model.backbone.modality not in self.modalities:
            raise ConfigError(f"The {self.name} strategy adapts {' and '.join(self.modalities)} backbones only, not "
                              f"{model.backbone.name} ({model.backbone.modality}); for {model.backbone.modality} "
                              f"use lora or ia3 (or partial, gradual, finetune).")

    def __init__(self, config: StrategyConfig | None = None):
        self.config = config or self.config_class()
        self.pause_instead_of_freeze = False  # set by the loop under DDP (see the module docstring)
        self.paused: set[int] = set()  # ids of parameters whose gradient the loop drops (paused, not frozen)

    def helpers(self) -> dict[str, nn.Module]:
        """Modules this strategy trains besides the model, never bundled (a domain discriminator); their
        parameters belong in ``param_groups``. The loop wraps and checkpoints them."""
        return {}

    def set_trainable(self, module: nn.Module, flag: bool) -> None:
        """Train ``module`` from now on or not: requires_grad in one process, pausing under DDP."""
        if not self.pause_instead_of_freeze:
            set_requires_grad(module, flag)
            return
        set_requires_grad(module, True)
        ids = {id(p) for p in module.parameters()}
        self.paused = self.paused - ids if flag else self.paused | ids

    def trains(self, module: nn.Module) -> bool:
        """Whether any parameter of ``module`` trains now (requires grad and is not paused)."""
        return any(p.requires_grad and id(p) not in self.paused for p in module.parameters())

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        """Called once before training: freeze parameters, fit heads from features, inject modules."""

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return decay_groups(trainable(model), lr, weight_decay)

    def iter_batches(self, loader: Iterable[dict[str, Any]], ctx: StrategyContext) -> Iterator[dict[str, Any]]:
        """Where strategies that pair labeled with unlabeled batches, or build episodes, change the stream."""
        return iter(loader)

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        """The step's loss. ``batch``: the collated training batch on the model's device (``labels``, ``index``
        and the modality's inputs); run the forward pass as ``forward(model, batch, ctx)``."""
        return model.head.loss(forward(model, batch, ctx), batch["labels"])

    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        """Hook for schedules over epochs (gradual unfreezing)."""

    def train_mode(self, model: TransferModel) -> None:
        """Train mode, except: frozen backbone blocks run as at inference (no dropout noise, Keras' trainable=False
        semantics), and batch norm follows the ``bn`` policy."""
        model.train()
        if not self.trains(model.backbone):
            model.backbone.eval()  # also the backbone's own forward-time dropout (timm's drop_rate)
        for block in model.backbone.blocks():
            if not self.trains(block):
                block.eval()
        set_batchnorm_training(model, self.config.bn == "train")

    def finalize(self, model: TransferModel) -> TransferModel:
        return model.eval()

    def adapter_state(self, model: TransferModel) -> dict[str, torch.Tensor] | None:
        """PEFT strategies: the small set of tensors they trained (adapters + head), before ``finalize`` merges
        them; bundles keep it as adapter.safetensors. None for strategies that change the weights themselves."""
        return None

    def step_parts(self) -> dict[str, float]:
        """Named parts of the last step's loss for TensorBoard (``train/<name>``), e.g. a domain loss; none here."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned (e.g. the current unfreezing stage) on resume."""


def trainable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def decay_groups(named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups at ``lr``: weights with weight decay, biases and norm parameters (1-D) without."""
    decay = [p for _, p in named if p.ndim > 1]
    no_decay = [p for _, p in named if p.ndim <= 1]
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def set_batchnorm_training(module: nn.Module, training: bool) -> None:
    """Batch-norm layers in train mode (running statistics update) or eval mode (they stay pretrained)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(training)


class PeftStrategy(Strategy):
    """Base of the parameter-efficient strategies: what they train is saved on its own as well."""

    def adapter_state(self, model: TransferModel) -> dict[str, torch.Tensor] | None:
        """Every tensor that training moved away from the pretrained backbone: the trained parameters, and with
        ``bn='train'`` the batch-norm statistics too, so the adapter file alone rebuilds the bundle's model."""
        state = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
        if self.config.bn == "train":
            state.update(batchnorm_statistics(model))
        return state


def batchnorm_statistics(module: nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics (mean, var, batch count) of every batch-norm layer, by state_dict name."""
    return {f"{name}.{key}": buf.detach().cpu().clone() for name, m in module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for key, buf in m.named_buffers(prefix="", recurse=False) if buf is not None}
