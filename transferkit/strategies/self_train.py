"""Self-training on the target domain: confidence-thresholded pseudo-labels, FixMatch-style (Sohn et al. 2020).

Imports transferkit.core, transferkit.tasks and transferkit.strategies. Each labeled source batch comes with an
unlabeled target batch (strategies.domain pairs them from ``fit --target-data``). For images the model labels a
*weak* view of each target image (a random translation of up to 1/8 of its side, plus a horizontal flip only with
``hflip`` > 0: flips change digits and text, so they are off as fit's --hflip is), and a target image whose top
class probability reaches ``threshold`` (0.95, FixMatch's) becomes a training example with that pseudo-label, seen
through a *strong* view (torchvision's RandAugment, 2 ops, on an independent weak view):

    task_loss(source) + weight * mean over the target batch of 1[max q >= threshold] * CE(strong, argmax q)

where q is the weak view's class probabilities after *distribution alignment* (ReMixMatch, Berthelot et al. 2020,
on by default): q = normalise(p_weak * p_source(y) / p~(y)), p_source the class shares of the labeled source batches
seen so far and p~ a running mean (decay 0.99, about the last 100 batches; bias-corrected as Adam's moments, so
the first batches count fully) of the model's target predictions.
Without it a model that starts to favour one class pseudo-labels ever more target examples with that class and
collapses onto it (measured: MNIST -> UCI digits, every target test digit predicted as one class); alignment
keeps the pseudo-labels' class shares near the source's. Alignment only rescales: a model that is *confidently*
biased (p ≈ 1 for one class on most target inputs) keeps its bias, so each class may also fill at most
``class_quota`` times its source share of a batch's pseudo-labels, its most confident rows first (a per-batch form
of class-balanced self-training, Zou et al. 2018, CBST).

Text and audio have no strong view here, so they get plain pseudo-labelling: the same target batch is labelled and
trained on (the threshold still decides which examples count). Pseudo-labels are taken without gradient, from the
model as it trains (train mode, as in FixMatch). Classification only: a pseudo-label is the top class.
The views are drawn from torch's global RNG, which checkpoints save, so ``fit --resume`` redraws the same views.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.base import StrategyContext
from transferkit.strategies.domain import DomainAdaptation, DomainConfig, joint_features
from transferkit.tasks.model import TransferModel

TRANSLATE = 0.125  # FixMatch's weak view: shifts of up to 12.5 % of the side (reflect padding, then a crop)
RANDAUGMENT_OPS, RANDAUGMENT_MAGNITUDE = 2, 9
TARGET_MEAN_DECAY = 0.99  # the running mean of target predictions for distribution alignment: ~the last 100 batches


@dataclass(frozen=True)
class SelfTrainConfig(DomainConfig):
    threshold: float = 0.95  # a target example is pseudo-labelled when its top class probability reaches this
    hflip: float = 0.0  # probability of a horizontal flip in the image views (FixMatch: 0.5; off for digits/text)
    distribution_alignment: bool = True  # ReMixMatch's alignment of the pseudo-labels' class shares to the source's
    class_quota: float = 2.0  # a class fills at most this x its source share of a batch's rows (0: no cap)

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ConfigError(f"The 'threshold' parameter of SelfTrainConfig must be a probability in (0, 1]. "
                              f"Got {t!r} instead.")
        if isinstance(self.class_quota, bool) or not isinstance(self.class_quota, (int, float)) or self.class_quota < 0:
            raise ConfigError(f"The 'class_quota' parameter of SelfTrainConfig must be a number >= 0 (0: no cap). "
                              f"Got {self.class_quota!r} instead.")
        if isinstance(self.hflip, bool) or not isinstance(self.hflip, (int, float)) or not 0 <= self.hflip <= 1:
            raise ConfigError(f"The 'hflip' parameter of SelfTrainConfig must be a probability in [0, 1]. "
                              f"Got {self.hflip!r} instead.")


def pseudo_labels(probabilities: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(top class, whether its probability reaches ``threshold``) per row of ``probabilities`` [n, classes]."""
    confidence, labels = probabilities.detach().float().max(-1)
    return labels, confidence >= threshold


def align_distribution(probabilities: torch.Tensor, source_prior: torch.Tensor, target_mean: torch.Tensor
                       ) -> torch.Tensor:
    """ReMixMatch's distribution alignment: each row of ``probabilities`` [n, k] times ``source_prior`` [k] over
    ``target_mean`` [k] (the model's running mean prediction on the target), renormalised to sum to 1."""
    scaled = probabilities.float() * source_prior / target_mean.clamp_min(1e-6)
    return scaled / scaled.sum(-1, keepdim=True).clamp_min(1e-12)


def within_quota(probabilities: torch.Tensor, confident: torch.Tensor, prior: torch.Tensor, quota: float
                 ) -> torch.Tensor:
    """``confident`` [n] (bool) with each class c kept to its ceil(quota * prior[c] * n) most confident rows, where
    the class of a row is its top class in ``probabilities`` [n, k]; quota 0 keeps ``confident`` as it is."""
    if quota <= 0:
        return confident
    confidence, labels = probabilities.detach().float().max(-1)
    kept = torch.zeros_like(confident)
    for c in labels[confident].unique().tolist():
        rows = torch.nonzero(confident & (labels == c)).flatten()
        cap = math.ceil(quota * float(prior[c]) * len(labels))
        kept[rows[confidence[rows].argsort(descending=True)[:cap]]] = True
    return kept


def unlabeled_loss(strong_logits: torch.Tensor, weak_probabilities: torch.Tensor, threshold: float,
                   prior: torch.Tensor | None = None, quota: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(FixMatch's unlabeled loss, which rows counted): the cross-entropy of each strong-view row against its weak
    view's top class where that class's probability reaches ``threshold`` (and the class is within its quota of
    the batch, see ``within_quota``, when a source ``prior`` is given), averaged over all rows (rows that do not
    count add 0, so a batch with few confident rows weighs little, as in FixMatch)."""
    labels, confident = pseudo_labels(weak_probabilities, threshold)
    if prior is not None:
        confident = within_quota(weak_probabilities, confident, prior, quota)
    per_row = F.cross_entropy(strong_logits.float(), labels, reduction="none")
    return (per_row * confident).mean(), confident


class SelfTrain(DomainAdaptation):
    name = "self-train"
    config_class = SelfTrainConfig
    summary = STRATEGY_SUMMARIES["self-train"]
    tasks = ("classification",)  # pseudo-labels are the top class of a softmax

    def prepare(self, model: TransferModel, ctx: StrategyContext) -> None:
        if model.task.name not in self.tasks:
            raise ConfigError(f"The self-train strategy pseudo-labels the top class, so it needs single-label "
                              f"classification, not {model.task.name}; use dann, coral or mmd.")
        self.pseudo_labelled, self.seen = 0, 0  # target examples over the threshold / drawn (for the report)
        self.source_counts = torch.zeros(ctx.n_classes, dtype=torch.float64)  # labeled source examples per class
        self.target_mean = torch.zeros(ctx.n_classes)  # running mean target prediction (bias-corrected when read)
        self.aligned_batches = 0
        super().prepare(model, ctx)

    def training_step(self, model: TransferModel, batch: dict[str, Any], ctx: StrategyContext) -> torch.Tensor:
        target = batch.get("target")
        if target is None:  # a plain labeled batch (contract tests): fine-tuning alone
            return super().training_step(model, batch, ctx)
        weak, strong = self.views(model, target)
        with torch.no_grad():
            weak_probabilities = self.weak_probabilities(model.head(model.backbone.embed(weak)), batch["labels"])
        f_s, f_t = joint_features(model, batch, strong)
        loss = model.head.loss(model.head(f_s), batch["labels"])
        unlabeled, confident = unlabeled_loss(model.head(f_t), weak_probabilities, self.config.threshold,
                                              self.source_prior().to(weak_probabilities.device),
                                              self.config.class_quota)
        self.pseudo_labelled += int(confident.sum())
        self.seen += len(confident)
        return loss + self.config.weight * unlabeled

    def weak_probabilities(self, weak_logits: torch.Tensor, source_labels: torch.Tensor) -> torch.Tensor:
        """The weak view's class probabilities [n, k], aligned to the source's class shares when configured; the
        running statistics take this batch in first (ReMixMatch)."""
        probabilities = weak_logits.detach().float().softmax(-1)
        self.source_counts += torch.bincount(source_labels.detach().cpu().long(),
                                             minlength=len(self.source_counts)).double()
        if not self.config.distribution_alignment:
            return probabilities
        self.target_mean = TARGET_MEAN_DECAY * self.target_mean + \
            (1 - TARGET_MEAN_DECAY) * probabilities.mean(0).cpu()
        self.aligned_batches += 1
        unbiased = self.target_mean / (1 - TARGET_MEAN_DECAY ** self.aligned_batches)  # as Adam corrects its moments
        prior = self.source_prior().to(probabilities.device)
        return align_distribution(probabilities, prior, unbiased.to(probabilities.device))

    def source_prior(self) -> torch.Tensor:
        """The class shares [k] of the labeled source batches seen so far (uniform before any)."""
        total = float(self.source_counts.sum())
        return (self.source_counts / total).float() if total else torch.full(self.source_counts.shape, 1 / len(
            self.source_counts))

    def views(self, model: TransferModel, target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(weak, strong) views of the target batch: for images two independent weak views, the second under
        RandAugment; for text and audio the batch itself twice (no strong view)."""
        if model.backbone.modality != "image":
            return target, target
        spec = model.backbone.preprocessing
        pixels = target["pixel_values"]
        mean = torch.tensor(spec.mean, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        images = ((pixels * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
        weak = weak_view(images, self.config.hflip)
        strong = strong_view(weak_view(images, self.config.hflip))
        as_input = lambda x: ((x.to(pixels.dtype) / 255) - mean) / std  # noqa: E731
        return {**target, "pixel_values": as_input(weak)}, {**target, "pixel_values": as_input(strong)}

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "pseudo_labelled": getattr(self, "pseudo_labelled", 0),
                 "seen": getattr(self, "seen", 0)}
        if hasattr(self, "source_counts"):
            state["alignment"] = {"source_counts": self.source_counts.tolist(), "target_mean": self.target_mean.tolist(),
                                  "batches": self.aligned_batches}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pseudo_labelled, self.seen = int(state.get("pseudo_labelled", 0)), int(state.get("seen", 0))
        if "alignment" in state:
            self.source_counts = torch.tensor(state["alignment"]["source_counts"], dtype=torch.float64)
            self.target_mean = torch.tensor(state["alignment"]["target_mean"], dtype=torch.float32)
            self.aligned_batches = int(state["alignment"].get("batches", 0))


def weak_view(images: torch.Tensor, hflip: float = 0.0) -> torch.Tensor:
    """Each uint8 image [n, c, h, w] shifted by up to 1/8 of its side (reflect padding), flipped with ``hflip``."""
    n, _, h, w = images.shape
    pad_h, pad_w = max(1, round(TRANSLATE * h)), max(1, round(TRANSLATE * w))
    padded = F.pad(images.float(), (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    dy = torch.randint(0, 2 * pad_h + 1, (n,)).tolist()
    dx = torch.randint(0, 2 * pad_w + 1, (n,)).tolist()
    out = torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(dy, dx))])
    if hflip > 0:
        flip = (torch.rand(n) < hflip).to(out.device)
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    return out.round().to(torch.uint8)


def strong_view(images: torch.Tensor) -> torch.Tensor:
    """RandAugment (torchvision, 2 ops at magnitude 9) drawn per image of a uint8 batch [n, c, h, w]."""
    from torchvision.transforms import v2

    augment = v2.RandAugment(num_ops=RANDAUGMENT_OPS, magnitude=RANDAUGMENT_MAGNITUDE)
    return torch.stack([augment(image) for image in images])  # one draw per image, not one for the batch
