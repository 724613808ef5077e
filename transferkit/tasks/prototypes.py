"""The prototype head of few-shot classification: one prototype per class, logits from the distance to each.

Imports transferkit.core only (and torch/numpy/scipy). Prototypical networks (Snell, Swersky and Zemel 2017,
"Prototypical Networks for Few-shot Learning"): a class's prototype is the mean of its examples' embeddings and an
input's logit for the class is its negative distance to the prototype. ``metric='euclidean'`` is the paper's
squared Euclidean distance; ``metric='cosine'`` (the default) compares L2-normalised embeddings and scales the
cosine by a temperature, learnt or fixed (Chen et al. 2019, "A Closer Look at Few-shot Classification"), which
keeps the logits' range independent of the backbone's feature norms.

Choices written down here:
- The prototypes are a buffer, not a parameter: they are recomputed from examples (the training set after each
  episodic epoch, ``transferkit enroll`` later), never moved by the optimizer. ``counts`` (how many examples
  each prototype averages) is a buffer too, so enrolling more examples of a class updates its running mean.
- For cosine, a prototype is stored as the mean of the normalised embeddings (not re-normalised: the running mean
  stays exact) and normalised in ``forward``; the scale multiplies the queries before the matrix product, so the
  ONNX graph's logits come out of a MatMul that int8 export keeps in float (export.quantize).
- A class without examples (count 0) gets a logit of -1e4, as the linear probe's absent classes: never predicted.
- The head's kind and settings are what ``spec()`` returns; the manifest keeps them under ``head`` and a bundle
  rebuilds the head from them (ClassificationTask.head(kind='prototype', ...)).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn

METRICS = ("cosine", "euclidean")
DEFAULT_SCALE = {"cosine": 10.0, "euclidean": 1.0}  # Euclidean: Snell et al.'s plain negative squared distance
# The cosine temperature's ceiling (cosine classifiers use 10-30, e.g. CosFace's s = 30): a validation set the
# prototypes classify perfectly pushes the fitted scale to its bound, and at 100 every prediction scored 1.0
# (wrong ones too) and float noise x 100 failed the ONNX parity check.
COSINE_MAX_SCALE = 30.0
ABSENT_LOGIT = -1e4


class PrototypeHead(nn.Module):
    """features [n, d] -> logits [n, k]: scale x cosine to each prototype, or -scale x squared distance."""

    task = "classification"
    kind = "prototype"

    def __init__(self, in_dim: int, n_outputs: int, metric: str = "cosine", scale: float | None = None,
                 learn_scale: bool = True, label_smoothing: float = 0.0):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric, self.learn_scale, self.label_smoothing = metric, bool(learn_scale), label_smoothing
        self.register_buffer("prototypes", torch.zeros(n_outputs, in_dim))
        self.register_buffer("counts", torch.zeros(n_outputs))
        log_scale = torch.tensor(math.log(scale if scale is not None else DEFAULT_SCALE[metric]))
        if self.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("class_weight", None, persistent=False)  # loss weights, as ClassificationHead's

    @property
    def n_classes(self) -> int:
        return self.prototypes.shape[0]

    def spec(self) -> dict[str, Any]:
        """What rebuilds this head from a manifest (the tensors come from the weights)."""
        return {"kind": self.kind, "metric": self.metric, "learn_scale": self.learn_scale}

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        self.class_weight = None if weight is None else weight.to(self.prototypes.device, torch.float32)

    def represent(self, features: torch.Tensor) -> torch.Tensor:
        """The space prototypes live in: unit vectors for cosine, the features themselves for Euclidean."""
        features = features.float()
        return F.normalize(features, dim=-1) if self.metric == "cosine" else features

    def logits_to(self, represented: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """[n, d] represented inputs against [k, d] prototypes (class means of represented examples) -> [n, k]."""
        if self.metric == "cosine":
            scale = self.log_scale.clamp(max=math.log(COSINE_MAX_SCALE)).exp()  # learnt: kept under the ceiling
            return (represented * scale) @ F.normalize(prototypes, dim=-1).T
        scale = self.log_scale.exp()
        squared = (represented ** 2).sum(-1, keepdim=True) - 2 * represented @ prototypes.T + (prototypes ** 2).sum(-1)
        return -scale * squared

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.logits_to(self.represent(features), self.prototypes)
        return logits + torch.where(self.counts > 0, 0.0, ABSENT_LOGIT)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the negative distances (soft targets: rows of probabilities)."""
        smoothing = 0.0 if labels.is_floating_point() else self.label_smoothing
        weight = self.class_weight if self.class_weight is not None and len(self.class_weight) == logits.shape[1] \
            else None
        return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=smoothing)

    @torch.no_grad()
    def set_prototypes(self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Every prototype from scratch: the class means of ``features`` [n, d] (labels [n] class indices);
        classes without an example get count 0 (never predicted)."""
        self.prototypes.zero_()
        self.counts.zero_()
        self.add_examples(features, labels)

    @torch.no_grad()
    def add_examples(self, features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Fold more examples into the prototypes: each class's running mean over all its examples so far."""
        x = self.represent(torch.as_tensor(features, device=self.prototypes.device))
        y = torch.as_tensor(labels, device=self.prototypes.device).long()
        sums = torch.zeros_like(self.prototypes).index_add_(0, y, x)
        added = torch.zeros_like(self.counts).index_add_(0, y, torch.ones_like(y, dtype=self.counts.dtype))
        total = self.counts + added
        seen = total > 0
        self.prototypes[seen] = (self.prototypes[seen] * self.counts[seen, None] + sums[seen]) / total[seen, None]
        self.counts.copy_(total)

    def grown(self, n_outputs: int) -> PrototypeHead:
        """A copy with ``n_outputs`` classes: this head's prototypes first, empty ones (count 0) after them."""
        if n_outputs < self.n_classes:
            raise ValueError(f"a head cannot shrink from {self.n_classes} to {n_outputs} classes")
        head = PrototypeHead(self.prototypes.shape[1], n_outputs, self.metric, self.log_scale.exp().item(),
                             self.learn_scale, self.label_smoothing).to(self.prototypes.device)
        with torch.no_grad():
            head.prototypes[: self.n_classes] = self.prototypes
            head.counts[: self.n_classes] = self.counts
            head.log_scale.copy_(self.log_scale)
        return head

    @torch.no_grad()
    def fit_scale(self, features: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] | None = None
                  ) -> float:
        """Set the temperature to the one that minimises the cross-entropy of ``features`` (held-out examples,
        labels [n]) against the current prototypes; a fixed-scale head keeps its scale. Returns the scale.
        ``bounds``: of the log-scale (default: cosine [0, ln COSINE_MAX_SCALE], Euclidean [-12, 4]), so a held-out
        set the prototypes classify perfectly does not drive it to infinity."""
        if not self.learn_scale or len(labels) == 0:
            return float(self.log_scale.exp())
        lo, hi = bounds or ((0.0, math.log(COSINE_MAX_SCALE)) if self.metric == "cosine" else (-12.0, 4.0))
        x = self.represent(torch.as_tensor(features, device=self.prototypes.device))
        y = torch.as_tensor(labels, device=self.prototypes.device).long()
        base = self.logits_to(x, self.prototypes) / self.log_scale.exp()  # logits at scale 1
        base = base + torch.where(self.counts > 0, 0.0, ABSENT_LOGIT)

        def nll(log_scale: float) -> float:
            return float(F.cross_entropy(base * math.exp(log_scale), y))

        best = minimize_scalar(nll, bounds=(lo, hi), method="bounded")
        self.log_scale.fill_(float(best.x))
        return math.exp(float(best.x))
