"""TrainConfig: every knob of the loop, with its default, validated where it is defined.

Imports only transferkit.core.
"""
from __future__ import annotations

from dataclasses import dataclass

from transferkit.core.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int | None = None  # None: 8 below 1,000 training examples (more steps when labels are few), else 32
    lr: float = 1e-3  # the head's learning rate; strategies derive backbone rates from it
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    warmup_fraction: float = 0.1
    patience: int = 5  # epochs without val macro-F1 gain before stopping (0: never). 3 cut fine-tuning in its early dip
    grad_clip: float = 1.0
    label_smoothing: float = 0.0  # 0.1 cost 2-5 points on digits 30/class (benchmarks/results)
    augment: bool = True  # mild random resized crops for images; texts are never augmented
    precision: str = "auto"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        _check(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "an int >= 1", self.epochs)
        _check(self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 1),
               "batch_size", "None or an int >= 1", self.batch_size)
        _check(self.lr > 0, "lr", "a float > 0", self.lr)
        _check(self.weight_decay >= 0, "weight_decay", "a float >= 0", self.weight_decay)
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        _check(0 <= self.warmup_fraction < 1, "warmup_fraction", "in [0, 1)", self.warmup_fraction)
        _check(isinstance(self.patience, int) and self.patience >= 0, "patience", "an int >= 0", self.patience)
        _check(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)", self.label_smoothing)
        _check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)

    def batch_size_for(self, n_train: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 8 if n_train < 1000 else 32


def _check(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of TrainConfig must be {rule}. Got {value!r} instead.")
