"""The backbone contract every pretrained encoder honours, checked by one test over the registry.

Imports transferkit.core and transferkit.data only. A backbone maps a batch dict to one feature vector per
example (``embed``; text backbones also one per input token, ``embed_tokens``), says how big that vector is,
how its input must be prepared, and lists its blocks from input to output so strategies can freeze/unfreeze or
give per-layer learning rates without knowing the model.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.data.preprocess import PreprocessSpec


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement ``embed`` and ``blocks``."""

    name: str
    modality: str
    feature_dim: int
    preprocessing: PreprocessSpec
    weights_sha256: str | None  # hash of the pretrained tensors; None for a randomly initialised backbone

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Return a [batch, feature_dim] float tensor."""
        raise NotImplementedError

    def embed_tokens(self, batch: dict[str, Any]) -> torch.Tensor:
        """Return [batch, positions, feature_dim] per-token features (token classification; text backbones)."""
        raise NotImplementedError(f"the {self.modality} backbone '{self.name}' has no per-token features")

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.embed(batch)

    def source_head(self) -> nn.Module | None:
        """The classifier the backbone was pretrained with (e.g. ImageNet-1k's), mapping ``embed`` features
        [batch, feature_dim] to source-class logits [batch, Z]; None (the default) when there is none. Kept outside
        the module tree: never trained, saved, hashed or listed in ``blocks``. Used by LEEP/NCE (transferkit rank)."""
        return None

    def source_logits(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Source-class logits [batch, Z] of the backbone's own pretraining classifier, None without one."""
        head = self.source_head()
        if head is None:
            return None
        features = self.embed(batch)
        return head.to(features.device)(features.float())

    def blocks(self) -> list[nn.Module]:
        """Ordered groups of modules, input side first; every parameter belongs to exactly one block."""
        raise NotImplementedError

    def architecture(self) -> dict[str, Any]:
        """Enough to rebuild the same architecture offline, without pretrained weights (saved in bundles)."""
        raise NotImplementedError

    def save_assets(self, folder: Path) -> None:
        """Write files the architecture needs at load time (e.g. a tokenizer and config); default: none."""


def state_dict_sha256(module: nn.Module) -> str:
    """A format-independent hash of a module's tensors (names, shapes, dtypes and values, in order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
