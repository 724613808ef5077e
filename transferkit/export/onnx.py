"""ONNX export of a bundle (backbone + head -> logits) with a parity check, and ONNX bundles for onnxruntime.

Imports transferkit.core, transferkit.data, transferkit.backbones and transferkit.export. The export folder is
itself a bundle: the source manifest plus ``"runtime": "onnx"`` and the parity numbers, ``model.onnx``, and
the tokenizer for text, so predict and serve run it with the bundle's own preprocessing. An export is only
written when onnxruntime reproduces the eager fp32 model on 100 inputs (max |logit diff| <= 1e-4, same top-1);
``vs_bundle`` then records how the exported file agrees with what the bundle itself predicts (at its recorded
inference precision), with a warning when a bf16 bundle and its export give different labels.
We use torch.onnx's TorchScript exporter (dynamo=False): on torch 2.14 it exports MiniLM in ~1 s into one file,
against ~11 s and a separate weights file for the dynamo exporter, and the parity check guards either way.
Token classification: the graph outputs logits at every sub-word position [windows, positions, tags]; gathering
each word's first sub-word, merging windows and decoding tags stay in Python (transferkit.export.rows), shared by
both runtimes, and parity is checked per word on the gathered rows.
"""
from __future__ import annotations

import contextlib
import copy
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.core.errors import BundleError, ConfigError
from transferkit.core.io import atomic_write_json, staged_folder
from transferkit.data.audio import clip_samples
from transferkit.data.audio_loader import AudioCollator
from transferkit.data.examples import Examples
from transferkit.data.labels import LabelMap
from transferkit.data.preprocess import PreprocessSpec, load_tokenizer
from transferkit.export.bundle import (
    FEATURE_EXTRACTOR,
    MANIFEST,
    bundle_spec,
    load_bundle,
    read_manifest,
    recorded_precision,
)
from transferkit.export.recorded import check_inputs, recorded_split
from transferkit.export.rows import ModelBatch, model_batches, torch_rows
from transferkit.tasks import Task
from transferkit.tasks.model import TransferModel

ONNX_FILE = "model.onnx"
PARITY_ATOL = 1e-4
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
AUDIO_INPUTS = ("input_features", "input_values", "attention_mask")


class ExportError(BundleError):
    """An export could not be made faithful: onnxruntime does not reproduce the eager model."""


@dataclass
class OnnxBundle:
    """An exported bundle opened for onnxruntime; the same fields a torch Bundle offers, minus the model."""

    session: Any  # onnxruntime.InferenceSession
    input_names: list[str]
    manifest: dict[str, Any]
    label_map: LabelMap
    preprocessing: PreprocessSpec
    path: Path

    def logits(self, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        return run_session(self.session, self.input_names, inputs)


def open_session(path: Path, threads: int | None = None):  # -> onnxruntime.InferenceSession
    """A CPU session with torch's thread count, quiet logs and no spin-waiting between runs (shared machines)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parse failure means "not a usable model"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BundleError(f"{path}: onnxruntime cannot load this model ({reason}); the export is damaged — run "
                          f"`transferkit export` again from the original bundle.") from None


def run_session(session, input_names: list[str], inputs: dict[str, torch.Tensor]) -> np.ndarray:
    feeds = {name: np.ascontiguousarray(inputs[name].numpy()) for name in input_names}
    return session.run(["logits"], feeds)[0].astype(np.float32, copy=False)


def load_onnx_bundle(folder: Path, threads: int | None = None) -> OnnxBundle:
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.get("runtime") != "onnx" or not (folder / ONNX_FILE).is_file():
        raise BundleError(f"'{folder}' is not an ONNX export (no {ONNX_FILE} or no \"runtime\": \"onnx\" in "
                          f"{MANIFEST}); make one with `transferkit export --bundle {folder} --format onnx --out DIR`.")
    session = open_session(folder / ONNX_FILE, threads)
    names = list(manifest["onnx"]["inputs"])
    found = {i.name for i in session.get_inputs()}
    if not set(names) <= found:
        raise BundleError(f"{folder / ONNX_FILE} takes inputs {sorted(found)} but {MANIFEST} lists {names}; "
                          "the export is damaged — run `transferkit export` again.")
    return OnnxBundle(session, names, manifest, LabelMap(tuple(manifest["labels"])),
                      bundle_spec(manifest["preprocessing"], folder), folder)


class _Logits(nn.Module):
    """Positional tensors in, logits out: the signature torch.onnx traces."""

    def __init__(self, model: TransferModel, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors)))


SAMPLE_TEXTS = ["a", "a somewhat longer text, so the first one is padded"]


def _sample_batch(spec: PreprocessSpec, per_word: bool) -> dict[str, torch.Tensor]:
    """Two inputs; for text and audio of different lengths, so the traced graph contains the padding-mask path."""
    if spec.modality == "image":
        return {"pixel_values": torch.zeros(2, 3, spec.image_size, spec.image_size)}
    if spec.modality == "audio":  # the backbone's batch from the audio collator: a whole clip and one of a third
        samples = clip_samples(spec.clip_seconds, spec.sample_rate)
        waves = [np.sin(np.arange(n, dtype=np.float32) * 0.05) * 0.1 for n in (samples, max(1, samples // 3))]
        return AudioCollator(spec).features(waves)
    if per_word:  # the tensors the token windows carry (data.token_loader), without the word positions
        return next(model_batches(Examples("text", SAMPLE_TEXTS, None, "sample"), spec, 2, per_word=True)).inputs
    return dict(load_tokenizer(spec)(SAMPLE_TEXTS, padding=True, return_tensors="pt"))


def _input_names(spec: PreprocessSpec, per_word: bool = False) -> list[str]:
    if spec.modality == "image":
        return ["pixel_values"]
    if spec.modality == "audio":
        return [name for name in AUDIO_INPUTS if name in _sample_batch(spec, per_word)]
    accepted = set(load_tokenizer(spec).model_input_names) & set(_sample_batch(spec, per_word))
    return [name for name in TEXT_INPUTS if name in accepted]


@contextlib.contextmanager
def _eager_attention(model: TransferModel) -> Iterator[None]:
    """Transformers' eager attention exports as plain MatMul/Softmax, which onnxruntime fuses into one Attention
    op (SDPA exports with extra masking ops it does not recognise); the numbers are the same."""
    hf = getattr(model.backbone, "model", None)
    previous = getattr(getattr(hf, "config", None), "_attn_implementation", None)
    if previous in (None, "eager") or not hasattr(hf, "set_attn_implementation"):
        yield
        return
    hf.set_attn_implementation("eager")
    try:
        yield
    finally:
        hf.set_attn_implementation(previous)


def _static_padding(model: TransferModel, spec: PreprocessSpec) -> nn.Module:
    """A copy whose TF-'same' convolutions (timm's Conv2dSame) pad by constants instead of computing the padding
    from the input shape at run time: at the bundle's fixed image size the padding is a constant. The dynamic
    form exports as Shape/Ceil/Pad chains that onnxruntime's static int8 (QDQ) convolutions reject ("QLinearConv:
    invalid input shape"); the static one is the same arithmetic and folds into the convolution."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
             for name, m in model.named_modules() if isinstance(m, Conv2dSame)]
    if not hooks:
        return model
    with torch.no_grad():
        model({"pixel_values": torch.zeros(1, 3, spec.image_size, spec.image_size)})
    for hook in hooks:
        hook.remove()
    static = copy.deepcopy(model)
    for name, size in sizes.items():
        parent_name, _, attr = name.rpartition(".")
        parent = static.get_submodule(parent_name)
        conv = getattr(parent, attr)
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                          conv.groups, conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        pad = pad_same_arg(list(size), list(conv.weight.shape[-2:]), list(conv.stride), list(conv.dilation))
        setattr(parent, attr, nn.Sequential(nn.ZeroPad2d(tuple(pad)), plain))
    return static.eval()


def _torch_export(model: TransferModel, spec: PreprocessSpec, names: list[str], path: Path, opset: int) -> None:
    if spec.modality == "image":
        model = _static_padding(model, spec)
    per_word = model.task.per_word  # logits [windows, positions, tags]: one row per sub-word position
    axes = {name: {0: "batch", 1: "sequence"} if spec.modality == "text" else {0: "batch"} for name in names}
    logits_axes = {0: "batch", 1: "sequence"} if per_word else {0: "batch"}
    sample = _sample_batch(spec, per_word)
    with _eager_attention(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches; parity is checked
        torch.onnx.export(_Logits(model, names).eval(), tuple(sample[n] for n in names), str(path),
                          input_names=names, output_names=["logits"], dynamic_axes={**axes, "logits": logits_axes},
                          opset_version=opset, do_constant_folding=True, dynamo=False)


def compare_logits(reference: np.ndarray, other: np.ndarray, task: Task) -> dict[str, float]:
    """Largest output difference, and how often ``task`` decodes both to the same prediction (multi-label: the same
    label set; regression: the
    R² of ``other``'s values against ``reference``'s, 1.0 when they are the same numbers)."""
    if task.name == "regression":
        values, others = reference[:, 0].astype(np.float64), other[:, 0].astype(np.float64)
        spread = float(np.sum((values - values.mean()) ** 2)) if len(values) else 0.0
        r2 = 1.0 - float(np.sum((values - others) ** 2)) / spread if spread > 0 else 1.0
        return {"max_abs_diff": float(np.abs(values - others).max()) if len(values) else 0.0, "r2_vs_reference": r2}
    same = task.decode(reference) == task.decode(other)
    if same.ndim > 1:  # multi-label: the whole label set must agree
        same = same.all(axis=1)
    out = {"max_abs_diff": float(np.abs(reference - other).max()) if reference.size else 0.0,
           "top1_agreement": float(same.mean()) if len(reference) else 1.0}
    if task.per_word:  # tokens: the rows are words (logits at their first sub-word), the agreement is per word tag
        out["n_words"] = len(reference)
    return out


def paired_logits(model: TransferModel, session, names: list[str], examples, spec: PreprocessSpec,
                  batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Eager fp32 and onnxruntime logits on exactly the same tensors (tokens: per word), and the positions they
    belong to."""
    eager, onnx, positions = [], [], []
    for batch in model_batches(examples, spec, batch_size, model.task.per_word):
        if batch.inputs is None:
            continue
        with torch.inference_mode():
            eager.append(batch.rows(model(batch.inputs).float().numpy()))
        onnx.append(batch.rows(run_session(session, names, batch.inputs)))
        positions += batch.positions
    if not eager:
        raise ExportError(f"None of the {len(examples)} parity inputs from {examples.source} could be read.")
    return np.concatenate(eager), np.concatenate(onnx), positions


def export_onnx(bundle_dir: Path, out_dir: Path, int8: bool = False, opset: int = 17, n_check: int = 100,
                calibration: Examples | None = None) -> dict:
    """Export ``bundle_dir`` to ``out_dir`` (a new ONNX bundle); returns the manifest's ``onnx`` entry.
    ``calibration``: inputs static int8 calibrates on when the bundle's training inputs cannot be read."""
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    _check_destination(bundle_dir, out_dir)
    bundle = load_bundle(bundle_dir)
    model, spec = bundle.model.float().eval(), bundle.preprocessing
    names = _input_names(spec, model.task.per_word)
    recorded, where = recorded_split(bundle.manifest, bundle_dir)
    check, check_source = check_inputs(spec, recorded, where, n_check)
    with staged_folder(out_dir) as staging:
        _torch_export(model, spec, names, staging / ONNX_FILE, opset)
        session = open_session(staging / ONNX_FILE)
        # the exporter drops inputs the graph never reads (a soft-prompt model ignores token_type_ids)
        names = [i.name for i in session.get_inputs()]
        eager, onnx, positions = paired_logits(model, session, names, check, spec)
        parity = {"n": len(positions), "inputs": check_source, **compare_logits(eager, onnx, model.task)}
        # regression values are in the target's units: the tolerance scales with its spread
        atol = PARITY_ATOL * max(1.0, float(bundle.manifest.get("targets", {}).get("std", 1.0)))
        if parity["max_abs_diff"] > atol or parity.get("top1_agreement", 1.0) < 1.0:
            raise ExportError(f"The ONNX export of {bundle_dir} does not reproduce the eager model on {parity['n']} "
                              f"inputs ({check_source}): {model.task.agreement(parity, '.2%')} (allowed max |diff| "
                              f"{atol:.0e}). Try another --opset, or report the backbone as unsupported.")
        entry: dict[str, Any] = {"file": ONNX_FILE, "inputs": names, "opset": opset, "source_bundle":
                                 str(bundle_dir.resolve()), "exporter": "torch.onnx (TorchScript, dynamo=False)",
                                 "parity": parity, "int8": None, "versions": _versions()}
        if int8:
            from transferkit.export.quantize import quantize_bundle

            entry["int8"] = quantize_bundle(bundle, staging / ONNX_FILE, names, check, recorded, calibration)
            int8_session = open_session(staging / ONNX_FILE)  # what the written file computes now
            onnx = np.concatenate([b.rows(run_session(int8_session, names, b.inputs))
                                   for b in _batches(check, spec, model.task.per_word)])
        entry["vs_bundle"] = vs_bundle(bundle, model, eager, onnx, check, "int8" if int8 else "fp32")
        if spec.modality == "text":
            shutil.copytree(bundle_dir / "tokenizer", staging / "tokenizer")
        if spec.feature_extractor is not None:  # audio: the feature extraction stays in preprocessing
            shutil.copytree(bundle_dir / FEATURE_EXTRACTOR, staging / FEATURE_EXTRACTOR)
        atomic_write_json(staging / MANIFEST, {**bundle.manifest, "runtime": "onnx", "onnx": entry})
    return entry


def vs_bundle(bundle, model: TransferModel, eager: np.ndarray, exported: np.ndarray, check, kind: str = "fp32"
              ) -> dict[str, Any]:
    """The written model.onnx's logits against the bundle's own predictions — the torch predictor at the bundle's
    recorded inference precision (``eager`` when that is fp32) — on the check inputs."""
    precision = recorded_precision(bundle.manifest, bundle.path / MANIFEST)
    batches = [] if precision == "fp32" else _batches(check, bundle.preprocessing, model.task.per_word)
    reference = eager if precision == "fp32" else np.concatenate([torch_rows(model, b, precision) for b in batches])
    n = len(check) if model.task.per_word else len(reference)  # inputs (tokens: sentences; n_words counts rows)
    out: dict[str, Any] = {"precision": precision, "n": n, **compare_logits(reference, exported, model.task)}
    if precision != "fp32" and out.get("top1_agreement", 1.0) < 1.0:
        out["warning"] = (f"the bundle predicts in {precision} (its manifest's inference_precision) and the export in "
                          f"{kind}: they give different labels on {1 - out['top1_agreement']:.1%} of {out['n']} check "
                          f"inputs. For predictions that match, refit with --precision auto or fp32 (bundles then "
                          f"predict in fp32), or load the bundle with Predictor.from_bundle(..., precision='fp32').")
    return out


def _batches(examples, spec: PreprocessSpec, per_word: bool) -> list[ModelBatch]:
    return [b for b in model_batches(examples, spec, 32, per_word) if b.inputs is not None]


def _check_destination(bundle_dir: Path, out_dir: Path) -> None:
    """Never overwrite the source, and replace only an earlier export — not a folder of someone's files."""
    if out_dir.resolve() == bundle_dir.resolve():
        raise ConfigError(f"--out {out_dir} is the bundle itself; export into a new folder, e.g. {out_dir}-onnx.")
    if out_dir.exists() and any(out_dir.iterdir()):
        try:
            earlier = read_manifest(out_dir).get("runtime") == "onnx"
        except BundleError:
            earlier = False
        if not earlier:
            raise ConfigError(f"--out {out_dir} exists and is not an earlier ONNX export; pass a new or empty folder.")


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
