"""TrainConfig: every knob of the loop, with its default, validated where it is defined.

Imports only transferkit.core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from transferkit.core.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "fp32", "bf16")
AUGMENTS = ("none", "light", "randaugment", "trivial")
CLASS_WEIGHTS = ("auto", "none", "balanced")
SAMPLERS = ("shuffle", "balanced")
LOSSES = ("mse", "huber")  # regression's training loss on the standardised target (Huber: delta in target stds)
IMBALANCE_RATIO_FOR_WEIGHTS = 1.5  # class_weight='auto' turns balanced weights on at this largest/smallest ratio


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int | None = None  # None: the task's default (tokens: 8), else 8 below 1,000 examples, else 32
    lr: float = 1e-3  # the head's learning rate; strategies derive backbone rates from it
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    warmup_fraction: float = 0.1
    patience: int = 5  # epochs without val macro-F1 gain before stopping (0: never). 3 cut fine-tuning in its early dip
    grad_clip: float = 1.0
    label_smoothing: float = 0.0  # 0.1 cost 2-5 points on digits 30/class (benchmarks/results)
    loss: str | None = None  # regression: 'mse' | 'huber'; None: the task's own (regression: mse; others refuse it)
    huber_delta: float = 1.0  # loss='huber': errors beyond it (in training-target stds) count linearly
    augment: str = "light"  # none | light (mild random resized crop) | randaugment | trivial; texts never
    hflip: float = 0.0  # horizontal-flip probability: off by default, flips change digits, text and many objects
    mixup: float = 0.0  # mixup alpha (0: off); images only, through timm's Mixup
    cutmix: float = 0.0  # cutmix alpha (0: off)
    class_weight: str = "auto"  # auto: 'balanced' when the largest class has >= 1.5x the smallest, else none
    sampler: str = "shuffle"  # or 'balanced': draw every class equally often (with replacement)
    grad_accum: int = 1  # micro-batches per optimizer step
    ema: float = 0.0  # decay of an exponential moving average of the weights (timm ModelEmaV3), 0: off
    max_minutes: float | None = None  # time budget: stop at the next step after it, keep the best weights
    checkpoint_steps: int = 0  # also checkpoint every N optimizer steps (always at each epoch end)
    keep_checkpoints: int = 2  # newest complete checkpoints kept under RUN_DIR/checkpoints
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
        self._check_loss()
        _check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)
        if isinstance(self.augment, bool):  # True/False from older configs and scripts
            object.__setattr__(self, "augment", "light" if self.augment else "none")
        _check(self.augment in AUGMENTS, "augment", f"one of {AUGMENTS}", self.augment)
        _check(0 <= self.hflip <= 1, "hflip", "a probability in [0, 1]", self.hflip)
        _check(self.mixup >= 0 and self.cutmix >= 0, "mixup/cutmix", "alphas >= 0", (self.mixup, self.cutmix))
        _check(self.class_weight in CLASS_WEIGHTS, "class_weight", f"one of {CLASS_WEIGHTS}", self.class_weight)
        _check(self.sampler in SAMPLERS, "sampler", f"one of {SAMPLERS}", self.sampler)
        _check(0 <= self.ema < 1, "ema", "a decay in [0, 1)", self.ema)
        _check(isinstance(self.grad_accum, int) and self.grad_accum >= 1, "grad_accum", "an int >= 1", self.grad_accum)
        _check(self.max_minutes is None or self.max_minutes > 0, "max_minutes", "None or > 0", self.max_minutes)
        _check(isinstance(self.checkpoint_steps, int) and self.checkpoint_steps >= 0, "checkpoint_steps",
               "an int >= 0", self.checkpoint_steps)
        _check(isinstance(self.keep_checkpoints, int) and self.keep_checkpoints >= 1, "keep_checkpoints",
               "an int >= 1", self.keep_checkpoints)

    def _check_loss(self) -> None:
        """loss and huber_delta, each message also in the command line's names (ConfigError.cli)."""
        if self.loss is not None and self.loss not in LOSSES:
            raise ConfigError(f"The 'loss' parameter of TrainConfig must be None or one of {LOSSES}. Got "
                              f"{self.loss!r} instead.", cli=f"--loss must be mse or huber. Got {self.loss!r} instead.")
        if not (isinstance(self.huber_delta, (int, float)) and math.isfinite(self.huber_delta) and self.huber_delta > 0):
            raise ConfigError(f"The 'huber_delta' parameter of TrainConfig must be a finite float > 0. Got "
                              f"{self.huber_delta!r} instead.",
                              cli=f"--huber-delta must be a finite number > 0. Got {self.huber_delta!r} instead.")
        if self.huber_delta != 1.0 and self.loss != "huber":
            raise ConfigError(f"The 'huber_delta' parameter of TrainConfig applies only with loss='huber'. Got "
                              f"huber_delta={self.huber_delta!r} with loss={self.loss!r}; pass loss='huber' or "
                              "drop huber_delta.",
                              cli=f"--huber-delta applies only with --loss huber. Got --huber-delta "
                                  f"{self.huber_delta!r} without it; add --loss huber or drop --huber-delta.")

    def batch_size_for(self, n_train: int, task_default: int | None = None) -> int:
        """``batch_size`` if set, else the task's own default (``Task.batch_size``, tokens), else 8 below 1,000
        training examples (more steps when labels are few) and 32 from there."""
        if self.batch_size is not None:
            return self.batch_size
        if task_default is not None:
            return task_default
        return 8 if n_train < 1000 else 32


def _check(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of TrainConfig must be {rule}. Got {value!r} instead.")
