"""The model strategies adapt and bundles save: backbone -> features -> task head -> outputs.

Imports transferkit.backbones and transferkit.tasks. It sits in the tasks layer (not in backbones, where it
used to be) because it carries its task: ``model.task`` is what validation, evaluation, export parity, predict
and serve ask to decode and to answer.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transferkit.backbones.base import Backbone
from transferkit.tasks import Task, get_task


class TransferModel(nn.Module):
    """backbone -> features -> head -> logits. ``task`` defaults to the one the head was built for."""

    def __init__(self, backbone: Backbone, head: nn.Module, task: Task | None = None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.task = task if task is not None else get_task(head.task)
        bind = getattr(self.task, "bind", None)
        if bind is not None:  # a task that needs the head's state to score (the tag names of tokens)
            bind(head)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        if getattr(self.head, "per_token", False):  # token classification: one row per word (data.token_loader);
            # a batch without word_rows gets logits at every sub-word position (what the ONNX export computes)
            return self.head(self.backbone.embed_tokens(batch), batch.get("word_rows"))
        return self.head(self.backbone.embed(batch))

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.head.loss(self(batch), batch["labels"])
