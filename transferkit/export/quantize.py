"""int8 quantization of an exported model with onnxruntime, and what it costs in agreement and accuracy.

Imports transferkit.core, transferkit.data and transferkit.export. Text encoders: the transformer graph is
first fused by onnxruntime's optimizer (one Attention op per layer, so the attention scores themselves stay in
float), then weights are quantized dynamically (activations scaled per batch at run time). CNNs: static QDQ with
per-channel weights, activations calibrated on training inputs — measured on EfficientNet-Lite0, dynamic
quantization runs its convolutions as ConvInteger, ~10x slower than fp32, while QDQ runs at or above fp32 speed.
The int8 model replaces the fp32 one in the export; the manifest says which method was used and what it cost.
Token classification is compared per word (transferkit.export.rows gathers each word's logits from the graph's
per-sub-word output): tag agreement with fp32, and word-tag accuracy and entity F1 on labeled sentences.
Audio: a transformers speech encoder is quantized dynamically like a text encoder (matrices only); the
speech-embedding CNN statically like an image CNN, its fixed log-mel front end left in float. The feature
extraction (log-mels for Whisper) runs before the graph in both runtimes.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.examples import Examples
from transferkit.data.multilabels import MultiLabelMap
from transferkit.data.stream import inference_batches
from transferkit.data.targets import NumericTargets
from transferkit.export.bundle import Bundle
from transferkit.export.onnx import compare_logits, open_session, run_session
from transferkit.export.recorded import RecordedSplit, spread
from transferkit.export.rows import model_batches

N_CALIBRATION = 64
N_ACCURACY = 500  # labeled examples scored by both the fp32 and the int8 model
# transformers model types whose graphs onnxruntime's "bert" optimizer knows how to fuse
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "mpnet")
DROP_WARNING_POINTS = 1.0
HUGE_WEIGHT = 100.0  # a head weight this large turns int8 feature noise of ~1e-2 into logit noise of ~1
# 7-bit weights (reduce_range): CPUs without VNNI (AVX2/AVX-512 before Cascade Lake) sum u8*s8 pairs into int16
# and saturate with full-range weights — CI saw Lite0 digits agree with fp32 on 35 % of images and a tone-clip
# model lose 17 points there, while the same files were exact on a VNNI CPU. The export may run on any CPU.
WEIGHTS = "int8 per channel, 7-bit range"
FRONT_END = "/frontend/"  # ONNX node scope of speech-embedding's fixed log-mel front end (its ``frontend`` module)


def _head_nodes(path: Path) -> list[str]:
    """The node computing the logits (the linear head): kept in float — it is a sliver of the compute, and a
    linear probe's head amplifies feature noise by its often large weights."""
    import onnx

    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node if "logits" in node.output]


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantization tools print shape-inference dumps and log warnings; library code stays silent."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _quantize_text(bundle: Bundle, fp32: Path, out: Path) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    config = getattr(bundle.model.backbone, "model", None)
    config = getattr(config, "config", None)
    source, fused = fp32, False
    if config is not None and getattr(config, "model_type", None) in BERT_LIKE:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(str(fp32), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        fused = optimized.get_fused_operator_statistics().get("Attention", 0) > 0
        source = out.with_name("fused.onnx")
        optimized.save_model_to_file(str(source))
    # per-channel weights: on MiniLM/BBC, max |logit error| 0.17 instead of 0.60 per tensor, at the same speed
    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     nodes_to_exclude=_head_nodes(source), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    if source != fp32:
        source.unlink()
    return {"method": "dynamic", "weights": WEIGHTS, "activations": "uint8, scaled per batch at run time",
            "attention_fused": fused, "float": "the head"}


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over our own preprocessed batches."""

    def __init__(self, examples: Examples, spec, names: list[str]):
        self.batches = ({n: b.inputs[n].numpy() for n in names}
                        for b in inference_batches(examples, spec, 16) if b.inputs is not None)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def _quantize_cnn(bundle: Bundle, fp32: Path, out: Path, names: list[str], calibration: Examples,
                  audio: bool = False) -> dict[str, Any]:
    """``audio`` (speech-embedding): only the CNN's convolutions; its fixed log-mel front end stays in float (int8
    there moved logits 8x more on tone clips) and the mask arithmetic too (constant ranges give NaN zero points)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    keep = _head_nodes(prepared) + (_nodes_under(prepared, FRONT_END) if audio else [])
    quantize_static(str(prepared), str(out), _Calibration(calibration, bundle.preprocessing, names),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=True, nodes_to_exclude=keep,
                    op_types_to_quantize=["Conv"] if audio else None)
    prepared.unlink()
    return {"method": "static QDQ", "weights": WEIGHTS, "activations": "uint8, calibrated",
            "calibration": {"n": len(calibration), "inputs": calibration.source},
            "float": "the mel front end and the head" if audio else "the head"}


def _nodes_under(path: Path, scope: str) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node if scope in node.name]


def _quantize_speech_encoder(fp32: Path, out: Path) -> dict[str, Any]:
    """A transformers speech encoder (Whisper, wav2vec2-style): the attention and feed-forward matrices, dynamically;
    its convolutional front end stays in float (as ConvInteger it would run ~10x slower). On whisper-tiny-en
    probes of tone clips: top-1 agreement with fp32 0.98 on 100 clips, against 0.95 for calibrated static QDQ."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=_head_nodes(fp32),
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"method": "dynamic", "weights": f"{WEIGHTS} (attention and feed-forward)",
            "activations": "uint8, scaled per batch at run time", "float": "the convolutional front end and the head"}


def _regression_accuracy(bundle: Bundle, fp32, int8, names: list[str], labeled: Examples) -> dict[str, Any]:
    """R² and MAE of the fp32 and the int8 export against the true targets (regression bundles)."""
    examples = spread(labeled, N_ACCURACY)
    truth = np.array(NumericTargets().encode(examples.labels, examples.source))
    values: dict[str, list[float]] = {"fp32": [], "int8": []}
    positions: list[int] = []
    for batch in inference_batches(examples, bundle.preprocessing, 32):
        if batch.inputs is None:
            continue
        positions += batch.positions
        for name, session in (("fp32", fp32), ("int8", int8)):
            values[name] += run_session(session, names, batch.inputs)[:, 0].tolist()
    scores = {name: bundle.model.task.metrics(truth[positions], np.array(v)) for name, v in values.items()}
    return {"n": len(positions), "r2_fp32": round(scores["fp32"]["r2"], 4), "r2_int8": round(scores["int8"]["r2"], 4),
            "mae_fp32": round(scores["fp32"]["mae"], 4), "mae_int8": round(scores["int8"]["mae"], 4),
            "r2_drop": round(scores["fp32"]["r2"] - scores["int8"]["r2"], 4)}


def _token_accuracy(bundle: Bundle, fp32, int8, names: list[str], labeled: Examples) -> dict[str, Any]:
    """Word-tag accuracy and entity micro-F1 (seqeval) of the fp32 and the int8 export on labeled sentences whose
    tags the bundle knows."""
    task, tag_ids = bundle.model.task, {name: i for i, name in enumerate(bundle.label_map.names)}
    known = [i for i, tags in enumerate(labeled.labels or []) if tags is not None and set(tags) <= set(tag_ids)]
    examples = spread(labeled.subset(known), N_ACCURACY)
    targets = np.array([(tag_ids[t], position) for tags in examples.labels for position, t in enumerate(tags)],
                       np.int64).reshape(-1, 2)
    predicted: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    for batch in model_batches(examples, bundle.preprocessing, 32, per_word=True):
        if batch.inputs is None:
            continue
        for name, session in (("fp32", fp32), ("int8", int8)):
            predicted[name].append(task.decode(batch.rows(run_session(session, names, batch.inputs))))
    scores = {name: task.metrics(targets, np.concatenate(rows)) for name, rows in predicted.items()}
    fp32_acc, int8_acc = scores["fp32"]["token_accuracy"], scores["int8"]["token_accuracy"]
    return {"n": len(examples), "n_words": len(targets), "accuracy_fp32": round(fp32_acc, 4),
            "accuracy_int8": round(int8_acc, 4), "accuracy_drop_points": round(100 * (fp32_acc - int8_acc), 2),
            "entity_f1_fp32": round(scores["fp32"]["entity_f1"], 4),
            "entity_f1_int8": round(scores["int8"]["entity_f1"], 4)}


def _accuracy(bundle: Bundle, fp32, int8, names: list[str], labeled: Examples) -> dict[str, Any]:
    if bundle.model.task.name == "regression":
        return _regression_accuracy(bundle, fp32, int8, names, labeled)
    if bundle.model.task.per_word:
        return _token_accuracy(bundle, fp32, int8, names, labeled)
    names_known = set(bundle.label_map.names)
    known = [i for i, y in enumerate(labeled.labels or [])
             if (set(y) <= names_known if isinstance(y, tuple) else y in names_known)]  # tuple: a multi-label set
    examples = spread(labeled.subset(known), N_ACCURACY)
    encoder = MultiLabelMap(tuple(bundle.label_map.names)) if bundle.model.task.name == "multilabel" else bundle.label_map
    truth = np.array(encoder.encode(examples.labels, examples.source))
    hits = {"fp32": [], "int8": []}
    for batch in inference_batches(examples, bundle.preprocessing, 32):
        if batch.inputs is None:
            continue
        for name, session in (("fp32", fp32), ("int8", int8)):
            predicted = bundle.model.task.decode(run_session(session, names, batch.inputs))
            same = predicted == truth[batch.positions]
            hits[name] += list(same.all(axis=1) if same.ndim > 1 else same)  # multi-label: subset accuracy
    fp32_acc, int8_acc = float(np.mean(hits["fp32"])), float(np.mean(hits["int8"]))
    return {"n": len(hits["fp32"]), "accuracy_fp32": round(fp32_acc, 4), "accuracy_int8": round(int8_acc, 4),
            "accuracy_drop_points": round(100 * (fp32_acc - int8_acc), 2)}


def quantize_bundle(bundle: Bundle, onnx_file: Path, names: list[str], check: Examples,
                    recorded: RecordedSplit | None, calibration: Examples | None = None) -> dict[str, Any]:
    """Replace ``onnx_file`` (fp32) by its int8 version; the manifest's ``int8`` entry. Static int8 calibrates on
    the recorded training inputs, else on ``calibration`` (e.g. the inputs predict was given), else on ``check``."""
    int8_file = onnx_file.with_name("int8.onnx")
    with _quiet():
        audio = bundle.preprocessing.modality == "audio"
        if bundle.preprocessing.modality == "text":
            info = _quantize_text(bundle, onnx_file, int8_file)
        elif audio and getattr(getattr(bundle.model.backbone, "model", None), "config", None) is not None:
            info = _quantize_speech_encoder(onnx_file, int8_file)
        else:
            train = recorded.train if recorded is not None and recorded.train is not None else None
            fallback = spread(calibration, N_CALIBRATION) if calibration is not None else check
            inputs = spread(train, N_CALIBRATION) if train is not None else fallback
            info = _quantize_cnn(bundle, onnx_file, int8_file, names, inputs, audio)
    fp32_session, int8_session = open_session(onnx_file), open_session(int8_file)
    batches = [b for b in model_batches(check, bundle.preprocessing, 32, bundle.model.task.per_word)
               if b.inputs is not None]
    reference = np.concatenate([b.rows(run_session(fp32_session, names, b.inputs)) for b in batches])
    quantized = np.concatenate([b.rows(run_session(int8_session, names, b.inputs)) for b in batches])
    info["vs_fp32"] = {"n": sum(len(b.positions) for b in batches),
                       **compare_logits(reference, quantized, bundle.model.task)}
    if recorded is not None and recorded.examples.labels is not None:
        info["accuracy"] = {"split": recorded.split, **_accuracy(bundle, fp32_session, int8_session, names,
                                                                  recorded.examples)}
    else:
        info["accuracy"] = None
    info["fp32_bytes"], info["int8_bytes"] = onnx_file.stat().st_size, int8_file.stat().st_size
    int8_file.replace(onnx_file)
    warning = _warning(bundle, info)
    if warning:
        info["warning"] = warning
    return info


def _warning(bundle: Bundle, info: dict[str, Any]) -> str | None:
    if "r2_vs_reference" in info["vs_fp32"]:  # regression: R² of int8 values against fp32's, and R² lost
        r2_drop = (info.get("accuracy") or {}).get("r2_drop")
        if info["vs_fp32"]["r2_vs_reference"] >= 0.95 and (r2_drop is None or r2_drop <= 0.02):
            return None
        return (f"int8 is not faithful for this model: its values reach R² {info['vs_fp32']['r2_vs_reference']:.3f} "
                f"against the fp32 export's{f' and lose {r2_drop} of R² on labeled data' if r2_drop else ''}. "
                "Use the fp32 export where this matters.")
    drop = (info.get("accuracy") or {}).get("accuracy_drop_points")
    agreement = info["vs_fp32"]["top1_agreement"]
    if (drop is not None and drop <= DROP_WARNING_POINTS) or (drop is None and agreement >= 0.95):
        return None  # labeled data decides when there is some; agreement alone only without it
    lost = f"accuracy drops {drop} points" if drop is not None else f"top-1 agrees with fp32 on {agreement:.0%}"
    head = max((p.detach().abs().max().item() for p in bundle.model.head.parameters()), default=0.0)
    cause = (f" The head has weights up to {head:.1e}: it amplifies the small int8 errors of the features (a linear "
             f"probe on near-constant features does this); use the fp32 export." if head > HUGE_WEIGHT else
             " Use the fp32 export where this matters.")
    return f"int8 is not faithful for this model: {lost}.{cause}"
