"""SetFit (Tunstall et al. 2022): contrastive tuning of the sentence encoder on pairs, then a logistic head.

Imports transferkit.core, transferkit.data, transferkit.tasks and transferkit.strategies. The ``setfit`` package
(PyPI) is not used: its SetFitModel wants a sentence-transformers body and its Trainer a ``datasets`` Dataset (it
brings sentence-transformers[train], datasets and evaluate), while our text backbones are transferkit Backbone
objects over transformers. The recipe is small, so it is implemented here on the Backbone contract:

- pairs, as SetFit's sampler with ``num_iterations`` set (its v0 recipe): per epoch every training example gets
  ``num_iterations`` positive partners (same class, another example) and as many negative ones (another class),
  drawn at random. The loop keeps its schedule: an epoch has as many steps as the loader has batches, a step's
  anchors are the loader's batch, and the step embeds each distinct example of its pairs once (SetFit embeds both
  sentences of each pair: the same loss, more forward passes). Meant for few-shot data: a step embeds up to
  batch x (1 + 2 num_iterations) texts; with hundreds of examples per class lower num_iterations or use finetune.
- loss: SetFit's default CosineSimilarityLoss, the mean squared error between cos(u, v) of the two mean-pooled
  sentence embeddings and the pair's label (1 same class, 0 not). The body trains at ``backbone_lr_scale`` x the
  head LR, uniformly (0.02 x fit's 1e-3 = SetFit's body_learning_rate 2e-5); a BERT pooler, which the mean-pooled
  embedding never reads, stays frozen.
- head: SetFit's scikit-learn LogisticRegression (C = ``head_c``, 1.0 as its default) on the embeddings, fitted
  in closed form and written into the ordinary linear head, so bundles, predict, serve and ONNX are unchanged.
  prepare() fits it on the frozen features (SetFit before tuning); after each epoch's last step (before the loop
  validates) it is refitted on the tuned embeddings of every training example, so validation, the kept best
  epoch and the bundle are SetFit's model. In between it follows the body by cross-entropy on the *detached*
  embeddings (a run stopped mid-epoch still predicts sensibly; the head never shapes the body).

Text only: other modalities are refused, naming protonet. Single-label classification only.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.data.loaders import make_loader
from transferkit.strategies.base import Strategy, StrategyConfig, StrategyContext, set_requires_grad
from transferkit.strategies.finetune import layerwise_groups
from transferkit.strategies.linear_probe import _write_head
from transferkit.tasks.model import TransferModel


@dataclass(frozen=True)
class SetFitConfig(StrategyConfig):
    num_iterations: int = 20  # positive (and as many negative) partners per example and epoch, as SetFit's
    backbone_lr_scale: float = 0.02  # the body's LR relative to the head's (fit's 1e-3 -> SetFit's 2e-5)
    layer_decay: float = 1.0  # SetFit tunes the body at one learning rate
    head_c: float = 1.0  # inverse regularisation of the logistic-regression head (scikit-learn's C)
    max_iter: int = 1000  # of the logistic regression's solver

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(_is_int(self.num_iterations) and self.num_iterations >= 1, "num_iterations", "an int >= 1",
               self.num_iterations)
        _check(0 < self.backbone_lr_scale <= 10, "backbone_lr_scale", "in (0, 10]", self.backbone_lr_scale)
        _check(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)
        _check(self.head_c > 0, "head_c", "a float > 0", self.head_c)
        _check(_is_int(self.max_iter) and self.max_iter >= 1, "max_iter", "an int >= 1", self.max_iter)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"The '{name}' parameter of SetFitConfig must be {rule}. Got {value!r} instead.")


def draw_pairs(anchors: np.ndarray, targets: np.ndarray, rng: np.random.Generator, num_iterations: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(pairs [P, 2] of example indices, labels [P]: 1.0 same class, 0.0 not): per anchor ``num_iterations``
    partners of its class (never itself; none when it is alone in its class) and as many of other classes."""
    pairs, labels = [], []
    for a in anchors:
        same = np.flatnonzero((targets == targets[a]) & (np.arange(len(targets)) != a))
        other = np.flatnonzero(targets != targets[a])
        for members, label in ((same, 1.0), (other, 0.0)):
            if len(members):
                pairs += [(int(a), int(b)) for b in rng.choice(members, size=num_iterations)]
                labels += [label] * num_iterations
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(labels, dtype=np.float32)


def all_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair (i < j) of a plain batch's rows, and its label (1.0 same class, 0.0 not)."""
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    return torch.stack([i, j], 1), (labels[i] == labels[j]).float()


def cosine_similarity_loss(embeddings: torch.Tensor, pairs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SetFit's CosineSimilarityLoss: mean over pairs of (cos(u, v) - label)^2. embeddings [N, D], pairs [P, 2]."""
    cos = torch.nn.functional.cosine_similarity(embeddings[pairs[:, 0]].float(), embeddings[pairs[:, 1]].float())
    return torch.nn.functional.mse_loss(cos, targets.float())


def fit_logistic(head: torch.nn.Module, x: np.ndarray, y: np.ndarray, n_classes: int, c: float, max_iter: int,
                 class_weight: np.ndarray | None = None) -> None:
    """SetFit's head: scikit-learn LogisticRegression on the raw embeddings x [N, D], written into ``head.linear``
    (classes absent from ``y`` are never predicted)."""
    weights = None if class_weight is None else {i: float(w) for i, w in enumerate(class_weight) if w > 0}
    clf = LogisticRegression(C=c, max_iter=max_iter, class_weight=weights).fit(x, y)
    identity = SimpleNamespace(mean_=np.zeros(x.shape[1]), scale_=np.ones(x.shape[1]))
    _write_head(head, identity, clf, n_classes)


class SetFit(Strategy):
    name = "setfit"
    config_class = SetFitConfig
    summary = STRATEGY_SUMMARIES["setfit"]
    modalities: ClassVar[tuple[str, ...]] = ("text",)
    tasks: ClassVar[tuple[str, ...] | None] = ("classification",)

    def check_modality(self, model: TransferModel) -> None:
        if model.backbone.modality not in self.modalities:
            modality = model.backbone.modality
            raise ConfigError(f"The setfit strategy adapts text backbones only, not {model.backbone.name} "
                              f"({modality}); for {modality} use lora or ia3, or with a few labels per class "
                              f"protonet (or maml).")

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        self.check_modality(model)
        if model.task.name not in self.tasks or not hasattr(model.head, "linear"):
            raise ConfigError(f"The setfit strategy fits a single-label classifier on the tuned embeddings, so it "
                              f"needs classification, not {model.task.name}; use finetune or linear-probe.")
        self._model, self._n_classes = model, ctx.n_classes  # iter_batches refits the head after each epoch
        if ctx.features is not None:
            x, y = ctx.features("train")
            fit_logistic(model.head, x, np.asarray(y), ctx.n_classes, self.config.head_c, self.config.max_iter,
                         ctx.class_weight)
        self.on_epoch_start(model, 0)

    def on_epoch_start(self, model: TransferModel, epoch: int) -> None:
        set_requires_grad(model, True)
        for name, module in model.backbone.named_modules():
            if name.rsplit(".", 1)[-1] == "pooler":  # not read by the mean-pooled sentence embedding
                set_requires_grad(module, False)

    def param_groups(self, model: TransferModel, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        groups = layerwise_groups(model, lr, weight_decay, self.config.backbone_lr_scale, self.config.layer_decay)
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
        return [g for g in groups if g["params"]]

    def iter_batches(self, loader: Iterable[dict[str, Any]], ctx: StrategyContext) -> Iterator[dict[str, Any]]:
        """Per loader batch: its examples as anchors, their partners and the ``pairs``; then (epoch finished)
        the logistic head refitted on the tuned embeddings of every training example."""
        dataset = getattr(loader, "dataset", None)
        targets = getattr(dataset, "targets", None)
        if targets is None:  # not a labeled map-style loader: its own batches, all pairs within each
            yield from loader
            return
        targets = np.asarray(targets)
        sampler = getattr(loader, "sampler", None)
        epoch = int(getattr(sampler, "epoch", 0))
        first = int(getattr(sampler, "start", 0)) // max(1, loader.batch_size or 1)  # a resumed epoch's next batch
        for i, batch in enumerate(loader, start=first):
            anchors = batch["index"].numpy()
            rng = np.random.default_rng([ctx.seed, epoch, i])
            pairs, labels = draw_pairs(anchors, targets, rng, self.config.num_iterations)
            rows, local = np.unique(np.concatenate([anchors, pairs.ravel()]), return_inverse=True)
            out = loader.collate_fn([dataset[int(j)] for j in rows])
            out["pairs"] = torch.from_numpy(local[len(anchors):].reshape(-1, 2))
            out["pair_labels"] = torch.from_numpy(labels)
            yield out
        self.refit(self._model, dataset, targets, ctx)

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        labels = batch["labels"]
        if labels.is_floating_point():
            raise ConfigError("setfit builds its pairs from class labels; mixup mixes labels into soft targets. "
                              "Drop --mixup/--cutmix.")
        pairs, pair_labels = batch.get("pairs"), batch.get("pair_labels")
        if pairs is None:  # a plain batch: every pair within it
            pairs, pair_labels = all_pairs(labels)
        inputs = {k: v for k, v in batch.items() if k not in ("pairs", "pair_labels")}
        x = model.backbone.embed(inputs)
        loss = cosine_similarity_loss(x, pairs.to(x.device), pair_labels.to(x.device)) if len(pairs) else x.sum() * 0
        return loss + model.head.loss(model.head(x.detach()), labels)

    def refit(self, model: TransferModel, dataset: Any, targets: np.ndarray, ctx: StrategyContext) -> None:
        """The logistic head on the embeddings of every training example through the current body (eval mode)."""
        device = model.head.linear.weight.device
        loader = make_loader(dataset.examples, model.backbone.preprocessing, None, 64)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x = torch.cat([model.backbone.embed({k: v.to(device) if isinstance(v, torch.Tensor) else v
                                                 for k, v in b.items()}).float() for b in loader])
        fit_logistic(model.head, x.cpu().numpy(), targets, self._n_classes, self.config.head_c,
                     self.config.max_iter, ctx.class_weight)
        if was_training:
            self.train_mode(model)
