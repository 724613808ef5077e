"""``--precision auto``: bf16 only where a short measured probe finds it faster, per model, input shape and phase.

Imports transferkit.core, transferkit.data and transferkit.train.inference. On a CPU with AVX512-BF16 but no AMX,
bf16 autocast slows small-batch convnet training (~1.25x for EfficientNet-Lite0, 64 px, batch 8) while it speeds
up MiniLM training and batch-64 convnet inference (issue 17), so the rule "bf16 wherever supported" is replaced by
a measurement: a few timed steps of the actual model on a real batch, fp32 and bf16 autocast interleaved after a
warm-up, for the training phase (forward + backward) and the inference phase (forward under
``torch.inference_mode``) separately.
bf16 is kept only when its median step is at least ``MARGIN`` faster. Results are cached per machine (CPU model or
GPU name, torch version) x backbone x phase x input shape in ``$TRANSFERKIT_CACHE/precision_probe.json``
(default ``~/.cache/transferkit``), written atomically. Explicit ``fp32``/``bf16`` never probe; a device without
bf16 support gets fp32 without probing. The probe leaves the model as it found it (gradients, buffers, mode).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.core import runtime
from transferkit.core.io import atomic_write_json
from transferkit.core.runtime import autocast

MARGIN = 0.05  # bf16 must be >= 5 % faster (median step): timing noise never flips a tie to bf16
WARMUP, REPEATS = 1, 3  # per precision; the timed steps of fp32 and bf16 alternate
PHASES = ("train", "inference")


def decide(fp32_seconds: list[float], bf16_seconds: list[float], margin: float = MARGIN) -> str:
    """'bf16' when the median bf16 step time is below (1 - margin) x the median fp32 step time, else 'fp32'.

    Pure. ``*_seconds``: per-step wall times in seconds (non-empty). Raises ValueError on an empty list."""
    if not fp32_seconds or not bf16_seconds:
        raise ValueError("decide needs at least one timed step per precision.")
    return "bf16" if statistics.median(bf16_seconds) < (1.0 - margin) * statistics.median(fp32_seconds) else "fp32"


def machine_key(device: torch.device) -> str:
    """What the timings depend on besides the model: the CPU model (or GPU name) and the torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return f"{device.type}:{name}|torch {torch.__version__}"


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def cache_path() -> Path:
    """``$TRANSFERKIT_CACHE/precision_probe.json`` (default ``~/.cache/transferkit``)."""
    return Path(os.environ.get("TRANSFERKIT_CACHE", Path.home() / ".cache" / "transferkit")) / "precision_probe.json"


def entry_key(machine: str, backbone: str, phase: str, shape: list[int]) -> str:
    return f"{machine}|{backbone}|{phase}|{'x'.join(str(n) for n in shape)}"


def load_cached(key: str, path: Path | None = None) -> dict[str, Any] | None:
    """The cached probe result under ``key``, or None (no file, unreadable file, no entry)."""
    try:
        return json.loads((path or cache_path()).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def store(key: str, result: dict[str, Any], path: Path | None = None) -> None:
    """Add ``result`` under ``key`` (read-modify-write; the file is replaced atomically)."""
    path = path or cache_path()
    try:
        entries = json.loads(path.read_text())
        entries = entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, entries)


def batch_shape(batch: dict[str, Any]) -> list[int]:
    """The shape the timings depend on: the first input tensor's (images [B, C, H, W], tokens [B, T])."""
    for name in ("pixel_values", "input_values", "input_features", "input_ids"):
        value = batch.get(name)
        if isinstance(value, torch.Tensor):
            return list(value.shape)
    tensors = [v for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 1]
    return list(tensors[0].shape) if tensors else []


def measure(model: nn.Module, batch: dict[str, Any], phase: str, device: torch.device) -> dict[str, list[float]]:
    """Per-step seconds of fp32 and bf16 autocast on ``batch`` (already on ``device``): ``WARMUP`` untimed steps
    each, then ``REPEATS`` timed steps each, alternating (two when both already agree: ``_clear``). ``phase``
    'train': forward + backward of the summed output (no optimizer step); 'inference': forward in eval mode under
    torch.inference_mode."""
    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}  # batch-norm running statistics
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    try:
        model.train(phase == "train")
        for i in range(WARMUP + REPEATS):
            for precision in ("fp32", "bf16"):
                seconds = _step(model, batch, phase, precision, device)
                if i >= WARMUP:
                    times[precision].append(seconds)
            if len(times["fp32"]) == 2 and _clear(times):  # a third round would not change the choice
                break
    finally:
        model.train(was_training)
        for p in model.parameters():
            p.grad = None
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    return times


def _clear(times: dict[str, list[float]], margin: float = MARGIN) -> bool:
    """Every bf16 step beats every fp32 step by the margin, or every fp32 step beats every bf16 step."""
    return max(times["bf16"]) < (1 - margin) * min(times["fp32"]) or min(times["bf16"]) > max(times["fp32"])


def _step(model: nn.Module, batch: dict[str, Any], phase: str, precision: str, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    if phase == "train":
        with autocast(precision, device):
            out = model(batch)
        out.float().sum().backward()
    else:
        with torch.inference_mode(), autocast(precision, device):
            model(batch)
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose(setting: str, model: nn.Module, batch_fn: Any, phase: str, device: torch.device, backbone: str
           ) -> tuple[str, dict[str, Any] | None]:
    """(precision, probe record) for ``phase`` ('train' or 'inference'). ``setting`` 'fp32'/'bf16' is returned
    as is, without probing (record None); 'auto' gives 'fp32' without probing where the device lacks bf16, else
    the cached or freshly measured choice. ``batch_fn()`` returns one real batch on ``device`` (built only when
    a probe runs). The record: choice, median step seconds per precision, input shape, when it was measured
    (a cached record is returned as stored: runs that share the cache record the same probe)."""
    if setting != "auto":
        return setting, None
    if not runtime.bf16_supported(device):
        return "fp32", {"choice": "fp32", "reason": "no bf16 support on this device: not probed"}
    batch = batch_fn()
    shape = batch_shape(batch)
    key = entry_key(machine_key(device), backbone, phase, shape)
    cached = load_cached(key)
    if cached is not None and cached.get("choice") in ("fp32", "bf16"):
        return cached["choice"], cached
    times = measure(model, batch, phase, device)
    record = {"choice": decide(times["fp32"], times["bf16"]), "phase": phase, "shape": shape,
              "fp32_step_seconds": round(statistics.median(times["fp32"]), 5),
              "bf16_step_seconds": round(statistics.median(times["bf16"]), 5), "steps": len(times["fp32"]), "margin": MARGIN,
              "machine": machine_key(device), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store(key, record)
    return record["choice"], record


def probe_batch(examples: Any, spec: Any, size: int, device: torch.device) -> dict[str, Any]:
    """The first ``size`` examples as one model batch on ``device`` (no augmentation, no labels)."""
    from transferkit.data.loaders import make_loader
    from transferkit.train.inference import to_device

    part = examples.subset(list(range(min(size, len(examples)))))
    return to_device(next(iter(make_loader(part, spec, None, size))), device)


def choose_for_fit(setting: str, model: nn.Module, examples: Any, batch_size: int, device: torch.device,
                   backbone: str, trains: bool) -> tuple[str, str, dict[str, Any]]:
    """(training precision, feature-extraction precision, probes by phase) for a fit. Training is probed on
    ``batch_size`` training examples (only where ``trains``: the loop runs); inference on up to 64, the batch
    size of frozen-feature extraction. The bundle's own inference precision is decided elsewhere
    (core.runtime.inference_precision: fp32 unless bf16 is asked for by name)."""
    spec = model.backbone.preprocessing
    probes: dict[str, Any] = {}
    features, probes["inference"] = choose(setting, model, lambda: probe_batch(examples, spec, 64, device),
                                           "inference", device, backbone)
    train_precision = features  # a strategy without the loop fits on the extracted features
    if trains:
        train_precision, probes["train"] = choose(setting, model, lambda: probe_batch(examples, spec, batch_size,
                                                  device), "train", device, backbone)
    return train_precision, features, {k: v for k, v in probes.items() if v is not None}
