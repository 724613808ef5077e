"""The training loop, readable top to bottom: epochs of strategy steps, validation, early stopping.

Imports transferkit.core, transferkit.backbones, transferkit.strategies and transferkit.train. Everything
method-specific happens in the strategy; this file only orders the calls.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferkit.backbones.heads import TransferModel
from transferkit.core.runtime import autocast, resolve_precision
from transferkit.strategies.base import Strategy, StrategyContext
from transferkit.train.config import TrainConfig
from transferkit.train.inference import predict_logits, to_device
from transferkit.train.optim import build_optimizer, warmup_cosine


@dataclass
class TrainResult:
    history: list[dict[str, float | None]] = field(default_factory=list)  # row 0: before training
    best_epoch: int = -1
    best_score: float = -math.inf
    stopped_early: bool = False
    seconds: float = 0.0


def validate(model: TransferModel, loader: DataLoader, precision: str) -> dict[str, float]:
    logits, labels = predict_logits(model, loader, precision)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    preds = logits.argmax(1)
    return {"val_loss": loss, "val_accuracy": float((preds == labels).mean()),
            "val_macro_f1": float(f1_score(labels, preds, average="macro"))}


def train(model: TransferModel, strategy: Strategy, ctx: StrategyContext, train_loader: DataLoader,
          val_loader: DataLoader, cfg: TrainConfig, log_dir: Path | None = None) -> TrainResult:
    device = next(model.parameters()).device
    precision = resolve_precision(cfg.precision, device)
    optimizer = build_optimizer(strategy.param_groups(model, cfg.lr, cfg.weight_decay), cfg)
    scheduler = warmup_cosine(optimizer, cfg.epochs * len(train_loader), cfg.warmup_fraction)
    writer = _writer(log_dir)
    result, step, start = TrainResult(), 0, time.perf_counter()
    # Epoch 0 is the model before any step: if training never beats it on val (e.g. a probe-initialised head
    # on very few labels), the untouched model is what we keep.
    initial = {"epoch": 0, "train_loss": None, **validate(model, val_loader, precision)}
    result.history.append(initial)
    result.best_score, result.best_epoch = initial["val_macro_f1"], 0
    best_state = copy.deepcopy(model.state_dict())

    for epoch in range(cfg.epochs):
        strategy.on_epoch_start(model, epoch)
        strategy.train_mode(model)
        if train_loader.generator is not None:  # the epoch's order depends only on (seed, epoch): resumable
            train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)
        losses = []
        bar = tqdm(strategy.iter_batches(train_loader, ctx), total=len(train_loader), leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or None)
        for batch in bar:
            batch = to_device(batch, device)
            with autocast(precision, device):
                loss = strategy.training_step(model, batch, ctx)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                               cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if writer:
                writer.add_scalar("train/loss", losses[-1], step)
            step += 1

        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **validate(model, val_loader, precision)}
        result.history.append(row)
        if writer:
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    writer.add_scalar(key.replace("_", "/", 1), value, epoch + 1)

        if row["val_macro_f1"] > result.best_score:  # early stopping on val macro-F1, best weights kept
            result.best_score, result.best_epoch = row["val_macro_f1"], epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        elif cfg.patience and epoch + 1 - result.best_epoch >= cfg.patience:
            result.stopped_early = True
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    if writer:
        writer.close()
    result.seconds = time.perf_counter() - start
    return result


def _writer(log_dir: Path | None) -> Any:
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))
