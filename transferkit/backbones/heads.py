"""Task heads and the model that joins a backbone to one; each head owns its loss and its decoding.

Imports transferkit.core, transferkit.data and transferkit.backbones. New tasks (multi-label, regression,
token classification) add a head class here and an entry in HEADS; strategies call ``model.loss``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.backbones.base import Backbone


class ClassificationHead(nn.Module):
    """Dropout + linear layer -> one logit per class; softmax cross-entropy."""

    task = "classification"

    def __init__(self, in_dim: int, n_outputs: int, dropout: float = 0.0, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, n_outputs)
        nn.init.zeros_(self.linear.weight)  # a fresh head predicts uniformly: loss starts at ln(K)
        nn.init.zeros_(self.linear.bias)
        # Per-class loss weights for imbalanced data; not persistent: a bundle predicts the same without them.
        self.register_buffer("class_weight", None, persistent=False)

    def set_class_weight(self, weight: torch.Tensor | None) -> None:
        self.class_weight = None if weight is None else weight.to(self.linear.weight.device, torch.float32)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on class indices, or on soft targets (rows of probabilities, from mixup/cutmix, which
        already carry any label smoothing)."""
        smoothing = 0.0 if labels.is_floating_point() else self.label_smoothing
        return F.cross_entropy(logits.float(), labels, weight=self.class_weight, label_smoothing=smoothing)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(-1)


HEADS: dict[str, type[nn.Module]] = {"classification": ClassificationHead}


class TransferModel(nn.Module):
    """backbone -> features -> head -> logits. The unit that strategies adapt and bundles save."""

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.head(self.backbone.embed(batch))

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.head.loss(self(batch), batch["labels"])
