"""First-order MAML (FOMAML, Finn et al. 2017) over N-way K-shot episodes, then ordinary fine-tuning.

Imports transferkit.core, transferkit.tasks and transferkit.strategies. What trains is partial's: the head and the
last ``unfreeze`` backbone blocks (default 2), at partial's layer-wise learning rates; everything below stays
pretrained, which keeps the inner loop cheap. The head starts at zero, as partial's and as MAML meta-learns its
head's start too (``head_init='probe'``: from the linear probe, as lp-ft; on 5 digits x 8 at 64 px the probe's
head then lost val accuracy under the loop's 1e-3, as lp-ft's does, and the run kept its untrained epoch 0).

- The first ``meta_epochs`` epochs meta-train: ``iter_batches`` gives one episode per loader batch from the
  training classes (protonet's ``episode_batches``: ``n_way`` classes, per class up to ``k_shot`` support and
  ``n_query`` query examples). ``training_step`` copies the trainable weights theta into fast weights, takes
  ``inner_steps`` plain SGD steps (``inner_lr``, see below) on the support loss through ``torch.func.functional_call``
  (``adapt``), and returns the query loss at the adapted weights phi written as theta + (phi - theta).detach()
  (``first_order_meta_loss``): its gradient with respect to theta is FOMAML's meta-gradient, the query
  gradient at phi, which the loop's optimizer applies (the outer update). The episode loss is the cross-entropy
  over the episode's classes only (an N-way task), with the head's class weights and label smoothing.
- The remaining epochs fine-tune the same parameters on ordinary batches of all target classes.

Plain SGD's step size depends on the feature scale, which spans 300x across our backbones (mean norm 0.5 for
EfficientNet at 32 px, 19 for Whisper, 155 for speech-embedding: MAML's usual 0.01 diverges there). So
``inner_lr=None`` (the default) takes MAML's 0.01 (its MiniImageNet alpha) capped at 0.5 / (1 + mean squared norm
of the training features): a softmax head's loss has curvature at most ||x||^2 / 2 per example, so the cap is an
eighth of the largest stable step on the head. (The feature-based value alone, 0.4 for EfficientNet at 32 px, is
too large for the blocks below a head fitted on such tiny features: the step-0 query loss went to 3.1.)

The bundle holds theta after fine-tuning: an ordinary linear head. Mixup/cutmix soft targets make no episode:
they are refused in the meta epochs. Under several processes every rank draws the same episodes (no sharding).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.func import functional_call

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.partial import Partial, PartialConfig
from transferkit.strategies.protonet import episode_batches, split_support
from transferkit.tasks.model import TransferModel

Weights = dict[str, torch.Tensor]
DEFAULT_INNER_LR = 0.01  # MAML's alpha on MiniImageNet, when no cached features tell the scale


@dataclass(frozen=True)
class MamlConfig(PartialConfig):
    head_init: str = "zero"  # as partial; 'probe': meta-learning starts from the linear probe's head
    meta_epochs: int = 3  # epochs of FOMAML episodes; the rest of the run fine-tunes
    n_way: int | None = None  # classes per episode (None: every class with 2+ training examples)
    k_shot: int = 5  # support examples per class and episode (at most half of the class's examples)
    n_query: int = 5  # query examples per class and episode
    inner_steps: int = 5  # SGD steps on the support set per episode
    inner_lr: float | None = None  # the inner loop's SGD learning rate (MAML's alpha); None: from the features

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(_is_int(self.meta_epochs) and self.meta_epochs >= 0, "meta_epochs", "an int >= 0", self.meta_epochs)
        _check(self.n_way is None or (_is_int(self.n_way) and self.n_way >= 2), "n_way", "None or an int >= 2",
               self.n_way)
        for name in ("k_shot", "n_query", "inner_steps"):
            _check(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        _check(self.inner_lr is None or 0 < self.inner_lr <= 10, "inner_lr", "None or in (0, 10]", self.inner_lr)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of MamlConfig must be {rule}. Got {value!r} instead.")


def adapt(params: Weights, loss_fn: Callable[[Weights], torch.Tensor], steps: int, lr: float) -> Weights:
    """MAML's inner loop: ``steps`` plain SGD steps w <- w - lr * grad loss_fn(w), from a detached copy of
    ``params`` (which are left alone). First order: the returned fast weights are detached. A weight the loss
    does not reach keeps its value."""
    fast = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad():
        for _ in range(steps):
            grads = torch.autograd.grad(loss_fn(fast), list(fast.values()), allow_unused=True)
            fast = {n: w if g is None else (w - lr * g).detach().requires_grad_(True)
                    for (n, w), g in zip(fast.items(), grads)}
    return {n: w.detach() for n, w in fast.items()}


def first_order_meta_loss(params: Weights, fast: Weights, loss_fn: Callable[[Weights], torch.Tensor]
                          ) -> torch.Tensor:
    """``loss_fn`` at the adapted weights phi = ``fast``, as a function of ``params`` theta: phi is written as
    theta + (phi - theta).detach(), so the gradient reaching theta is grad loss_fn(phi), FOMAML's meta-gradient
    (an SGD outer step gives theta - beta * grad L_query(phi))."""
    return loss_fn({n: p + (fast[n] - p).detach() for n, p in params.items()})


def _rows(batch: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
    """The rows of ``batch`` where ``mask`` holds (tensors and lists with one entry per example)."""
    n, keep = len(mask), mask.tolist()
    return {k: v[mask] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else
            [x for x, m in zip(v, keep) if m] if isinstance(v, list) and len(v) == n else v for k, v in batch.items()}


class Maml(Partial):
    name = "maml"
    config_class = MamlConfig
    summary = STRATEGY_SUMMARIES["maml"]
    modalities: ClassVar[tuple[str, ...]] = ("image", "text", "audio")
    tasks: ClassVar[tuple[str, ...] | None] = ("classification",)

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        if model.task.name not in self.tasks:
            raise ConfigError(f"The maml strategy meta-learns on N-way classification episodes, so it needs "
                              f"single-label classification, not {model.task.name}; use finetune or partial.")
        super().prepare(model, ctx)
        self.inner_lr = self.config.inner_lr or DEFAULT_INNER_LR
        if ctx.features is None:
            return
        x, y = ctx.features("train")
        usable = [c for c in np.unique(y) if (np.asarray(y) == c).sum() >= 2]
        if self.config.meta_epochs and len(usable) < 2:
            raise ConfigError(f"maml meta-trains on episodes, which need 2+ classes with 2+ training examples each; "
                              f"this training split has {len(usable)}. Add labeled examples (--labels-per-class) "
                              f"or fine-tune only with -o meta_epochs=0.")
        if self.config.inner_lr is None:
            self.inner_lr = min(DEFAULT_INNER_LR, 0.5 / (1.0 + float((np.asarray(x, np.float64) ** 2).sum(1).mean())))

    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        self.meta = epoch < self.config.meta_epochs

    def iter_batches(self, loader: Iterable[dict[str, Any]], ctx: StrategyContext) -> Iterator[dict[str, Any]]:
        """Meta epochs: one episode per batch the loader would give; later epochs: the loader's batches."""
        if not self.meta or getattr(getattr(loader, "dataset", None), "targets", None) is None:
            return iter(loader)
        c = self.config
        return episode_batches(loader, ctx.seed, c.n_way, c.k_shot, c.n_query)

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        if not self.meta:
            return super().training_step(model, batch, ctx)
        labels = batch["labels"]
        if labels.is_floating_point():
            raise ConfigError("maml builds its episodes from class labels; mixup and cutmix mix labels into soft "
                              "targets. Drop --mixup/--cutmix.")
        support = batch.get("support")
        support = split_support(labels) if support is None else support.to(labels.device)
        inputs = {k: v for k, v in batch.items() if k != "support"}
        params = {n: p for n, p in model.named_parameters() if p.requires_grad and id(p) not in self.paused}
        if not (~support).any():  # every class had a single example: nothing to score after adapting
            return sum(p.sum() for p in params.values()) * 0.0
        fast = adapt(params, self._episode_loss(model, inputs, labels, support), self.config.inner_steps,
                     self.inner_lr)
        return first_order_meta_loss(params, fast, self._episode_loss(model, inputs, labels, ~support))

    def _episode_loss(self, model: TransferModel, batch: dict[str, Any], labels: torch.Tensor, mask: torch.Tensor
                      ) -> Callable[[Weights], torch.Tensor]:
        """weights -> cross-entropy of the ``mask`` rows over the episode's classes (an N-way task)."""
        classes, local = labels.unique(return_inverse=True)
        rows, targets = _rows(batch, mask), local[mask]
        head = model.head
        weight = None if head.class_weight is None else head.class_weight[classes].float()

        def loss(weights: Weights) -> torch.Tensor:
            logits = functional_call(model, weights, (rows,))[:, classes]
            return torch.nn.functional.cross_entropy(logits.float(), targets, weight=weight,
                                                     label_smoothing=head.label_smoothing)
        return loss
