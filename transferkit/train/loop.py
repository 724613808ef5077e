"""The training loop, readable top to bottom: epochs of strategy steps, validation, early stopping, checkpoints.

Imports transferkit.core, transferkit.tasks, transferkit.strategies and transferkit.train. Everything
method-specific happens in the strategy and everything task-specific (the validation row, the early-stopping
score) in ``model.task``; this file only orders the calls. Resume is exact: the checkpoint
holds the model, optimizer, scheduler, loop counters, history, strategy state and every RNG, and the
sampler's order depends only on (seed, epoch), so a resumed run's weights are bit-identical on CPU.

Validation runs in the precision the bundle will predict in, so history.json and metrics.json agree.
Batch composition never crashes a run: batch norm cannot compute statistics over one value, so a training batch
of a single example (the last one of an epoch, or a whole training set of one) runs the batch-norm layers that
are training on their running statistics for that step. Every epoch still sees every example once, in the
sampler's order. A non-finite training loss or gradient norm stops the run at that step with the best weights
so far (TrainResult.diverged says where and what to change); without a finished epoch there is nothing to keep,
and it raises TrainingDiverged.

Where it runs is the engine's business (train.engine): one process, or several under DDP. There the loader
gives each rank its shard, the step's loss and every stop (non-finite loss, the time budget, SIGTERM) are agreed
over ranks before anyone acts on them, rank 0 validates and hands its row to all (so early stopping is decided
once), and only rank 0 writes checkpoints and TensorBoard. A checkpoint records the global batch; resuming with
another number of processes splits it anew (per-process batch = global batch / processes).
"""
from __future__ import annotations

import contextlib
import copy
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferkit.core.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from transferkit.core.runtime import autocast, inference_precision, resolve_precision
from transferkit.strategies.base import Strategy, StrategyContext
from transferkit.tasks.base import Task
from transferkit.tasks.model import TransferModel
from transferkit.train.checkpoint import Checkpoint, latest_checkpoint, restore_rng, save_checkpoint
from transferkit.train.config import TrainConfig
from transferkit.train.engine import Engine, LocalEngine
from transferkit.train.inference import predict_logits, to_device
from transferkit.train.optim import build_optimizer, warmup_cosine
from transferkit.train.selection import LabelFreeSelection


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # row 0: before training
    best_epoch: int = -1
    best_score: float = -math.inf
    stopped_early: bool = False
    stopped_by_time: bool = False
    resumed_from: str | None = None
    seconds: float = 0.0
    diverged: dict[str, Any] | None = None  # where the loss or gradient became non-finite, and what to change
    single_example_batches: int = 0  # steps whose batch held one example (batch norm used running statistics)
    processes: int = 1  # ranks that trained (the engine's)
    global_batch: int = 0  # examples per micro-batch over all ranks: per-process batch x processes
    data_path: dict[str, Any] = field(default_factory=dict)  # image cache plan and loader workers (set by the caller)


@dataclass
class LoopState:
    """Counters that, with the RNG states, say exactly where training is. Saved as JSON in checkpoints."""

    epoch: int = 0  # the epoch in progress (0-based)
    batches_done: int = 0  # micro-batches of that epoch already consumed
    step: int = 0  # optimizer steps taken
    epoch_losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    best_loss: float = math.inf  # breaks ties in the task's score (small validation sets saturate macro-F1 at 1.0)
    best_selection: float | None = None  # the kept epoch's label-free score (train.selection), when one selects
    finished: bool = False
    stopped_early: bool = False
    stopped_by_time: bool = False
    seconds: float = 0.0  # training time spent before this process (for --max-minutes across resumes)
    saves: int = 0  # checkpoints written: names them, newest = highest
    diverged: dict[str, Any] | None = None  # set when a non-finite loss or gradient stopped the run
    single_example_batches: int = 0
    global_batch: int = 0  # per-process batch x processes (0: a checkpoint from before it was recorded)


class StopRequest:
    """Turns SIGTERM into a flag the loop checks at step boundaries (checkpoint, then exit)."""

    def __init__(self) -> None:
        self.requested, self._previous = False, None

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling, training still works
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def validate(model: TransferModel, loader: DataLoader, precision: str) -> dict[str, float]:
    """The task's validation row: val_loss plus its headline metrics (classification: accuracy, macro-F1)."""
    logits, labels = predict_logits(model, loader, precision)
    return model.task.validation(logits, labels)


def train(model: TransferModel, strategy: Strategy, ctx: StrategyContext, train_loader: DataLoader,
          val_loader: DataLoader, cfg: TrainConfig, run_dir: Path | None = None, resume: bool = False,
          batch_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
          engine: Engine | None = None, selection: LabelFreeSelection | None = None,
          precision: str | None = None) -> TrainResult:
    """Train ``model`` with ``strategy``; checkpoints go to ``run_dir/checkpoints`` (none if run_dir is None).

    ``resume`` continues from the newest complete checkpoint there (or starts fresh if there is none).
    ``batch_transform`` (mixup/cutmix) is applied to each training batch after it reaches the device.
    ``on_epoch_end(epoch, row)`` sees each validated epoch's history row (epoch 1-based) after its checkpoint;
    an exception it raises (tune's optuna.TrialPruned) ends training there and reaches the caller.
    ``engine`` (default: LocalEngine, this process alone) says where the steps run (train.engine).
    ``selection`` (domain adaptation) adds its label-free score to every validation row and keeps the epoch it
    prefers instead of the task's best (train.selection).
    ``precision`` ('fp32'/'bf16'): the training precision already chosen (api.fit's probe); None resolves
    ``cfg.precision`` by the device rule (core.runtime.resolve_precision).
    """
    engine = engine or LocalEngine()
    device = next(model.parameters()).device
    precision = precision or resolve_precision(cfg.precision, device)  # api.fit passes the probed choice
    scoring = inference_precision(cfg.precision)  # validate as the bundle will predict: history matches metrics
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    checkpoint = latest_checkpoint(ckpt_dir) if resume and ckpt_dir is not None else None
    train_loader = _per_process_loader(train_loader, checkpoint, engine)
    sampler = train_loader.sampler
    global_batch = train_loader.batch_size * engine.num_processes
    batches_per_epoch = math.ceil(len(train_loader.dataset) / global_batch)  # micro-batches over all ranks
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    if engine.distributed:  # DDP fixes what trains when it wraps: stages pause parameters instead of freezing
        strategy.pause_instead_of_freeze = True
        strategy.on_epoch_start(model, 0)
    optimizer = build_optimizer(strategy.param_groups(model, cfg.lr, cfg.weight_decay), cfg)
    scheduler = warmup_cosine(optimizer, cfg.epochs * steps_per_epoch, cfg.warmup_fraction)
    result = TrainResult(processes=engine.num_processes, global_batch=global_batch)

    state, best_state = LoopState(global_batch=global_batch), None
    ema = _weight_average(model, cfg.ema)
    evaluated = ema.module if ema is not None else model  # what validation scores and early stopping keeps
    if checkpoint is not None:
        state, best_state = _restore(checkpoint, model, optimizer, scheduler, strategy)
        state.global_batch = global_batch
        if ema is not None and checkpoint.ema is not None:
            ema.module.load_state_dict(checkpoint.ema)
        result.resumed_from = str(checkpoint.path)
        if state.finished:  # nothing left to train, but leave requires_grad as the last epoch had it
            strategy.on_epoch_start(model, max(state.epoch - 1, 0))
    else:
        # Epoch 0 is the model before any step: if training never beats it on val (e.g. a probe-initialised
        # head on very few labels), the untouched model is what we keep.
        initial = {"epoch": 0, "train_loss": None,
                   **_validate_on_main(engine, evaluated, val_loader, scoring, selection)}
        state.history.append(initial)
        state.best_score, state.best_loss = initial[model.task.selection_metric], initial["val_loss"]
        state.best_epoch = 0
        state.best_selection = initial.get(selection.key) if selection is not None else None
        best_state = copy.deepcopy(evaluated.state_dict())

    wrapped, optimizer, train_loader, helpers = engine.prepare(model, optimizer, train_loader, strategy.helpers())
    ctx = replace(ctx, forward=wrapped, helpers=helpers)  # the step's forward pass goes through the wrapper
    seconds_before, clock = state.seconds, time.perf_counter()

    def elapsed() -> float:  # training seconds over all processes of this run (the --max-minutes budget)
        return seconds_before + time.perf_counter() - clock

    def save() -> None:
        if ckpt_dir is not None:
            state.seconds, state.saves = elapsed(), state.saves + 1
            if engine.is_main:  # the other ranks hold the same state: one writer
                _save(ckpt_dir, state, model, best_state, optimizer, scheduler, strategy, cfg.keep_checkpoints, ema)

    writer = _writer(run_dir / "tensorboard" if run_dir is not None and engine.is_main else None, state.step)
    with StopRequest() as stop:
        while not state.finished and state.epoch < cfg.epochs:
            epoch = state.epoch
            strategy.on_epoch_start(model, epoch)
            wrapped.train()
            strategy.train_mode(model)
            sampler.set_epoch(epoch, start=state.batches_done * global_batch)
            bar = tqdm(strategy.iter_batches(train_loader, ctx), total=len(train_loader), leave=False,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and engine.is_main) or None)
            for batch in bar:
                batch = to_device(batch, device)
                if batch_transform is not None:
                    batch = batch_transform(batch)
                group_start = state.batches_done - state.batches_done % cfg.grad_accum
                group_size = min(cfg.grad_accum, batches_per_epoch - group_start)  # the epoch's last may be short
                steps_now = state.batches_done + 1 == min(group_start + cfg.grad_accum, batches_per_epoch)
                with engine.no_sync(wrapped, skip=not steps_now):  # all-reduce once per accumulation group
                    with autocast(precision, device), _batchnorm_safe(model, batch) as single:
                        loss = strategy.training_step(model, batch, ctx)
                    state.single_example_batches += single
                    value, (bad,) = engine.agree(loss.item(), not math.isfinite(loss.item()))  # mean over ranks
                    if bad:  # stop before a NaN/inf reaches the weights (on any rank: all stop)
                        state.diverged = _divergence("training loss", value, epoch, state.step + 1, cfg, precision)
                        break
                    engine.backward(loss / group_size)
                state.batches_done += 1
                state.epoch_losses.append(value)
                if state.batches_done % cfg.grad_accum and state.batches_done < batches_per_epoch:
                    continue  # accumulate: the optimizer steps every grad_accum micro-batches
                norm = _optimizer_step(optimizer, scheduler, cfg.grad_clip, strategy.paused)
                if not math.isfinite(norm):
                    state.diverged = _divergence("gradient norm", norm, epoch, state.step + 1, cfg, precision)
                    break
                state.step += 1
                if ema is not None:
                    ema.update(model, step=state.step)
                bar.set_postfix(loss=f"{state.epoch_losses[-1]:.3f}")
                if writer:
                    writer.add_scalar("train/loss", state.epoch_losses[-1], state.step)
                    for name, part in strategy.step_parts().items():  # e.g. a domain loss, a discriminator's accuracy
                        writer.add_scalar(f"train/{name}", part, state.step)
                over_time = cfg.max_minutes is not None and elapsed() > 60 * cfg.max_minutes
                _, (stopping, over_time) = engine.agree(0.0, stop.requested, over_time)  # any rank: all ranks
                if stopping:
                    save()
                    raise TrainingInterrupted(f"Stopped by SIGTERM at step {state.step} (epoch {epoch + 1}) after "
                                              f"writing a checkpoint; continue with: transferkit fit --resume {run_dir}")
                if over_time:
                    state.stopped_by_time = True
                    break
                if cfg.checkpoint_steps and state.step % cfg.checkpoint_steps == 0:
                    save()
            bar.close()
            scores = {} if state.diverged else _validate_on_main(engine, evaluated, val_loader, scoring, selection)
            if scores and not math.isfinite(scores["val_loss"]):
                state.diverged = _divergence("validation loss", scores["val_loss"], epoch, state.step, cfg, precision)
            if state.diverged is not None:  # keep the best weights so far; the diverged epoch is not validated
                _stop_diverged(state, epoch, model.task)
                save()
                break

            row = {"epoch": epoch + 1, "train_loss": float(np.mean(state.epoch_losses)) if state.epoch_losses else None,
                   **scores}
            if state.stopped_by_time:
                row["partial"] = True  # the time budget ended this epoch early
            state.history.append(row)
            _log_epoch(writer, row)
            if _improves(row, state, model.task, selection):  # the task's score, then val loss (or label-free)
                key = model.task.selection_metric
                state.best_score, state.best_loss, state.best_epoch = row[key], row["val_loss"], epoch + 1
                state.best_selection = row.get(selection.key) if selection is not None else None
                best_state = copy.deepcopy(evaluated.state_dict())
            elif cfg.patience and epoch + 1 - state.best_epoch >= cfg.patience:
                state.stopped_early = True
            state.epoch, state.batches_done, state.epoch_losses = epoch + 1, 0, []
            state.finished = state.stopped_early or state.stopped_by_time or state.epoch >= cfg.epochs
            save()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)

    if writer:
        writer.close()
    if state.diverged is not None and state.diverged["epoch"] == 1:
        raise TrainingDiverged(f"{state.diverged['message']} No epoch finished, so there is no trained model to keep "
                               "and no bundle was written.")
    model.load_state_dict(best_state)
    state.seconds = elapsed()
    result.history, result.best_epoch, result.best_score = state.history, state.best_epoch, state.best_score
    result.stopped_early, result.stopped_by_time, result.seconds = (state.stopped_early, state.stopped_by_time,
                                                                    state.seconds)
    result.diverged, result.single_example_batches = state.diverged, state.single_example_batches
    return result


def _validate_on_main(engine: Engine, model: TransferModel, loader: DataLoader, precision: str,
                      selection: LabelFreeSelection | None = None) -> dict[str, float]:
    """Rank 0's validation row on every rank: one pass, and every rank takes the same early-stopping decision.
    A label-free ``selection`` adds its columns to the row."""
    if not engine.is_main:
        return engine.broadcast(None)
    row = validate(model, loader, precision)
    return engine.broadcast({**row, **selection.score(model)} if selection is not None else row)


def _per_process_loader(loader: DataLoader, checkpoint: Checkpoint | None, engine: Engine) -> DataLoader:
    """``loader``, or on a resume with another number of processes the same data in batches of the recorded
    global batch / processes, so the run continues with the optimizer steps and schedule it started with."""
    recorded = int(checkpoint.state["loop"].get("global_batch", 0)) if checkpoint is not None else 0
    if not recorded or recorded == loader.batch_size * engine.num_processes:
        return loader
    if recorded % engine.num_processes:
        splits = [n for n in range(1, recorded + 1) if recorded % n == 0]
        raise ConfigError(f"{checkpoint.path}: this run trains with a global batch of {recorded}, which "
                          f"{engine.num_processes} processes cannot share evenly; resume it with one of {splits} "
                          f"processes (--processes).")
    return DataLoader(loader.dataset, batch_size=recorded // engine.num_processes, sampler=loader.sampler,
                      generator=loader.generator, collate_fn=loader.collate_fn, num_workers=loader.num_workers)


def _improves(row: dict[str, Any], state: LoopState, task: Task, selection: LabelFreeSelection | None = None) -> bool:
    """A better selection score (classification: val macro-F1), or the same with lower val loss: on 50 validation
    images macro-F1 often reaches 1.0 early and stays there, while the loss keeps saying which of those epochs is
    more confident and right. With a label-free ``selection``, its column alone decides."""
    if selection is not None:
        best = state.best_selection
        kept = next((r for r in state.history if r.get("epoch") == state.best_epoch), {})
        vetoed = bool(selection.veto_key and kept.get(selection.veto_key))
        return selection.improves(row, selection.worst if best is None else best, vetoed)
    return task.improves(row[task.selection_metric], row["val_loss"], state.best_score, state.best_loss)


def _optimizer_step(optimizer: torch.optim.Optimizer, scheduler: Any, clip: float, paused: set[int]) -> float:
    """Clip (if ``clip``) and step; returns the gradient norm, and takes no step when it is not finite.

    Paused parameters (a stage not yet reached, under DDP: Strategy.set_trainable) lose their gradient first, so
    the optimizer skips them as it skips frozen ones: learning rate 0, moments and weight decay untouched."""
    if paused:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) in paused:
                    p.grad = None
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if clip:
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    else:
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params])) if params else 0.0
    if math.isfinite(norm):
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


@contextlib.contextmanager
def _batchnorm_safe(model: TransferModel, batch: dict[str, Any]) -> Iterator[bool]:
    """For a batch of one example, run the batch-norm layers that are training on their running statistics (as
    at inference; they are not updated) for this step: statistics over one value are undefined, and torch raises.
    Yields whether it did so."""
    single = "index" in batch and len(batch["index"]) == 1
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training] \
        if single else []
    if not norms:
        yield False
        return
    for module in norms:
        module.eval()
    try:
        yield True
    finally:
        for module in norms:
            module.train()


def _divergence(what: str, value: float, epoch: int, step: int, cfg: TrainConfig, precision: str) -> dict[str, Any]:
    """Where training diverged and what to change, as JSON-safe values (JSON has no NaN: the value is a string)."""
    fixes = [f"a lower learning rate (--lr, now {cfg.lr:g})"]
    if precision == "bf16":
        fixes.append("full precision (--precision fp32)")
    if not cfg.grad_clip:
        fixes.append("gradient clipping (grad_clip=1.0)")
    where = f"in validation after step {step}" if what == "validation loss" else f"step {step}"
    return {"epoch": epoch + 1, "step": step, "what": what, "value": str(value),
            "message": f"Training diverged at epoch {epoch + 1}, {where}: the {what} became {value}. "
                       f"Try {' or '.join(fixes)}."}


def _stop_diverged(state: LoopState, epoch: int, task: Task) -> None:
    """Record the diverged epoch (no validation: its weights are not usable) and finish with the best weights so
    far; with no finished epoch there are none worth keeping, and the caller raises."""
    losses = state.epoch_losses
    state.history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else None,
                          **task.empty_validation(),
                          "diverged": state.diverged["message"]})
    state.epoch, state.batches_done, state.epoch_losses, state.finished = epoch + 1, 0, [], True


def _weight_average(model: TransferModel, decay: float) -> Any:
    """timm's ModelEmaV3 with warm-up (the average follows closely at first), or None when ``decay`` is 0."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    # no stochastic rounding: it draws random numbers, and resume must replay the same stream
    return ModelEmaV3(model, decay=decay, use_warmup=True, stochastic_rounding=False)


def _save(directory: Path, state: LoopState, model: TransferModel, best_state: dict[str, torch.Tensor],
          optimizer: torch.optim.Optimizer, scheduler: Any, strategy: Strategy, keep: int, ema: Any = None) -> None:
    payload = {"loop": asdict(state), "scheduler": scheduler.state_dict(), "strategy": strategy.state_dict()}
    helpers = {f"{name}/{key}": value for name, module in strategy.helpers().items()
               for key, value in module.state_dict().items()}
    checkpoint = Checkpoint(model.state_dict(), best_state, optimizer.state_dict(), payload,
                            ema=ema.module.state_dict() if ema is not None else None, helpers=helpers or None)
    save_checkpoint(directory, state.saves, checkpoint, keep=keep)


def _restore(ckpt: Checkpoint, model: TransferModel, optimizer: torch.optim.Optimizer, scheduler: Any,
             strategy: Strategy) -> tuple[LoopState, dict[str, torch.Tensor]]:
    model.load_state_dict(ckpt.model)
    optimizer.load_state_dict(ckpt.optimizer)
    scheduler.load_state_dict(ckpt.state["scheduler"])
    strategy.load_state_dict(ckpt.state["strategy"])
    for name, module in strategy.helpers().items():  # helper modules train with the model, never bundled
        prefix = f"{name}/"
        module.load_state_dict({k[len(prefix):]: v for k, v in (ckpt.helpers or {}).items() if k.startswith(prefix)})
    restore_rng(ckpt.state["rng_tensors"], ckpt.state["rng"])
    return LoopState(**ckpt.state["loop"]), ckpt.best_model


def _log_epoch(writer: Any, row: dict[str, Any]) -> None:
    if writer:
        for key, value in row.items():
            if key not in ("epoch", "partial") and value is not None:
                writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])


def _writer(log_dir: Path | None, purge_step: int) -> Any:
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged after its last checkpoint, so curves do not double back
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step or None)
