"""Precision and memory-format choices for the machine we run on (bf16 autocast, channels_last).

Imports nothing from transferkit. Falls back to fp32 wherever bf16 is not supported; bundles infer in fp32
unless bf16 is asked for by name (``inference_precision``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 autocast is fast: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:
                continue
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map 'auto' to 'bf16' where supported, else 'fp32'."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def inference_precision(precision: str) -> str:
    """The precision a bundle predicts in (evaluate, predict, serve): fp32 unless bf16 was asked for by name.

    'auto' trains in bf16 where that is fast, but bf16 inference gives other labels than the bundle's fp32 ONNX
    export on near-tied inputs (measured here: 5 of 148 digits after one epoch of finetune), so it records fp32.
    """
    return "bf16" if precision == "bf16" else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast when ``precision == 'bf16'``; a no-op otherwise."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
