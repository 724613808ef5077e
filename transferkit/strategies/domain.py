"""Unsupervised domain adaptation: the shared base of the strategies that also read unlabeled target batches.

Imports transferkit.core, transferkit.tasks and transferkit.strategies. A domain strategy fine-tunes like
``finetune`` (layer-wise LRs, the same bn policy) on the labeled source batches, and adds ``weight`` x a domain
loss on the features of the source batch and of an unlabeled target batch drawn with it:

    task_loss(head(f_s), labels) + weight * domain_loss(f_s, f_t)

The target batches come from ``ctx.target`` (train.streams.TargetStream, built by fit --target-data):
``iter_batches`` pairs each labeled batch with the next target batch under the key ``target`` (a nested batch of
the same modality, no ``labels``), and the stream's position is part of ``state_dict``, so ``fit --resume`` draws
the same target batches. Source and target go through the backbone in one forward pass (text batches padded to
one length; padding is masked), so batch-norm layers that train (bn='train') see both domains, as in TLlib.
A batch without ``target`` (the strategy contract tests step on plain labeled batches) trains on the task loss
alone. The last step's task and domain losses go to TensorBoard (``step_parts``). Subclasses (dann, coral, mmd;
self-training reads ``batch['target']`` too) implement ``domain_loss``.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from transferkit.core.errors import ConfigError
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.finetune import Finetune, FinetuneConfig
from transferkit.tasks.model import TransferModel

# keys of a collated batch that are not model inputs
NON_INPUTS = ("labels", "index", "target")


@dataclass(frozen=True)
class DomainConfig(FinetuneConfig):
    weight: float = 1.0  # trade-off of the domain loss against the task loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not 0 <= self.weight < 1e6:
            raise ConfigError(f"The 'weight' parameter of {type(self).__name__} must be a number >= 0. "
                              f"Got {self.weight!r} instead.")


class DomainAdaptation(Finetune):
    """Fine-tuning plus a loss that aligns source and target features (subclasses: ``domain_loss``)."""

    config_class = DomainConfig
    needs_target: ClassVar[bool] = True
    modalities: ClassVar[tuple[str, ...]] = ("image", "text", "audio")

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        self.stream = ctx.target
        super().prepare(model, ctx)

    def iter_batches(self, loader: Iterable[dict[str, Any]], ctx: StrategyContext) -> Iterator[dict[str, Any]]:
        return ctx.target.pair(loader) if ctx.target is not None else iter(loader)

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        target = batch.get("target")
        if target is None:
            return super().training_step(model, batch, ctx)
        f_s, f_t = joint_features(model, batch, target)
        loss = model.head.loss(model.head(f_s), batch["labels"])
        a_s, a_t = self.aligned(model, f_s), self.aligned(model, f_t)
        domain = self.domain_loss(a_s.float(), a_t.float(), ctx)
        self.parts = {"task_loss": float(loss.detach()), "domain_loss": float(domain.detach())}
        return loss + self.config.weight * domain

    def step_parts(self) -> dict[str, float]:
        """The last paired step's task and domain losses (TensorBoard: train/task_loss, train/domain_loss)."""
        return dict(getattr(self, "parts", {}))

    def aligned(self, model: TransferModel, features: torch.Tensor) -> torch.Tensor:
        """What the domain loss compares: the backbone's features (Deep CORAL: optionally the head's outputs)."""
        return features

    def domain_loss(self, source: torch.Tensor, target: torch.Tensor, ctx: StrategyContext) -> torch.Tensor:
        """The alignment term on [n_s, d] source and [n_t, d] target rows of ``aligned``."""
        raise NotImplementedError

    def progress(self, ctx: StrategyContext) -> float:
        """Training progress p in [0, 1] (the target stream counts the pairs taken), for schedules over p."""
        return ctx.target.progress if ctx.target is not None else 0.0

    def state_dict(self) -> dict[str, Any]:
        stream = getattr(self, "stream", None)
        return {"target_stream": stream.state_dict()} if stream is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None and "target_stream" in state:
            stream.load_state_dict(state["target_stream"])


def joint_features(model: TransferModel, source: dict[str, Any], target: dict[str, Any]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """([n_s, d], [n_t, d]) backbone features of the source inputs and the target inputs, from one forward pass."""
    n = len(source["index"]) if "index" in source else None
    joint = {}
    for key, value in source.items():
        if key in NON_INPUTS or not isinstance(value, torch.Tensor):
            continue
        joint[key] = torch.cat(pad_to_match(value, target[key]))
        n = len(value) if n is None else n
    features = model.backbone.embed(joint)
    return features[:n], features[n:]


def pad_to_match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad the trailing dimensions of ``a`` and ``b`` to the larger of the two (text: token ids and the
    attention mask to one length; padded positions are masked out)."""
    if a.shape[1:] == b.shape[1:]:
        return a, b
    size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def pad(t: torch.Tensor) -> torch.Tensor:
        widths = [w for s, have in zip(reversed(size), reversed(t.shape[1:])) for w in (0, s - have)]
        return F.pad(t, widths)

    return pad(a), pad(b)
