"""Self-contained HTML reports (report.html per run, compare.html per comparison), rendered with Jinja2.

Imports transferkit.data (image and audio loading for thumbnails) and transferkit.evaluate. Every plot and
thumbnail is a data URI and the CSS is inline, so a report opens offline and makes no network request. An audio
clip's thumbnail is its waveform over its log-mel spectrogram (decoded mono at 16 kHz); its input summary reads
clip durations and sample rates from the file headers (never decoding a clip as an image).
"""
from __future__ import annotations

import base64
import io
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment

from transferkit.data.audio import load_audio
from transferkit.data.images import load_image
from transferkit.evaluate import plots
from transferkit.evaluate.comparison import METRIC_NAMES
from transferkit.evaluate.metrics import headline
from transferkit.evaluate.report import macro_sentence
from transferkit.tasks import ClassificationTask, Task

N_CONFIDENT_ERRORS = 12
SNIPPET_CHARS = 280
THUMBNAIL_RATE = 16000  # audio thumbnails decode clips mono at this rate


def _template(name: str) -> Any:
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(resources.files("transferkit.evaluate").joinpath("templates", name).read_text("utf-8"))


def _css() -> str:
    return resources.files("transferkit.evaluate").joinpath("templates", "base.css").read_text("utf-8")


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def thumbnail(item: Any, size: int = 96) -> str:
    """A small PNG data URI of an image input (path or array); empty if it cannot be decoded."""
    try:
        image = load_image(item)
    except Exception:  # a report must not die on one unreadable example
        return ""
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def audio_thumbnail(item: Any) -> str:
    """A PNG data URI of a clip's waveform and log-mel spectrogram; empty if it cannot be decoded."""
    try:
        wave = load_audio(item, THUMBNAIL_RATE)
    except Exception:  # a report must not die on one unreadable example
        return ""
    return plots.audio_thumbnail(wave, THUMBNAIL_RATE)


def confident_errors(inputs: list[Any], ids: list[str], y_true: np.ndarray, probabilities: np.ndarray,
                     names: list[str], modality: str, n: int = N_CONFIDENT_ERRORS,
                     task: Task | None = None) -> list[dict[str, Any]]:
    """The n wrong predictions made with the highest confidence: what to look at first (label noise, confusions).
    ``task`` (the model's; classification when None) decodes the probabilities."""
    predicted = (task or ClassificationTask()).decode_scores(probabilities)
    confidence = probabilities.max(1)
    wrong = np.flatnonzero(predicted != y_true)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    rows = []
    for i in order:
        row = {"id": str(ids[i]), "true": names[y_true[i]], "predicted": names[predicted[i]],
               "confidence": float(confidence[i])}
        if modality == "image":
            row["thumbnail"] = thumbnail(inputs[i])
        elif modality == "audio":
            row.update(thumbnail=audio_thumbnail(inputs[i]), audio=True, text=Path(str(inputs[i])).name)
        else:
            text = str(inputs[i])
            row["text"] = text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")
        rows.append(row)
    return rows


def inputs_summary(examples: Any, sample: int = 200) -> str:
    """One sentence on the inputs: image sizes (from up to ``sample`` headers), clip durations and sample rates
    (audio headers), or text lengths in words."""
    if examples.modality == "audio":
        return _audio_summary(examples.inputs[:sample])
    if examples.modality == "text":
        words = np.array([len(str(t).split()) for t in examples.inputs])
        return (f"Text length in words: median {int(np.median(words))}, 95th percentile "
                f"{int(np.percentile(words, 95))}, longest {int(words.max())}.")
    sizes = []
    for item in examples.inputs[:sample]:
        try:
            image = load_image(item)
        except Exception:  # the doctor reports unreadable files; a summary just skips them
            continue
        sizes.append(image.size)
    if not sizes:
        return ""
    areas = sorted(sizes, key=lambda s: s[0] * s[1])
    return (f"Image sizes (first {len(sizes)} training images, width x height): smallest {areas[0][0]}x{areas[0][1]}, "
            f"median {areas[len(areas) // 2][0]}x{areas[len(areas) // 2][1]}, largest {areas[-1][0]}x{areas[-1][1]}.")


def _audio_summary(paths: list[Any]) -> str:
    import soundfile

    seconds, rates = [], set()
    for path in paths:
        try:
            info = soundfile.info(str(path))
        except Exception:  # the doctor reports unreadable clips; a summary just skips them
            continue
        seconds.append(info.frames / info.samplerate)
        rates.add(int(info.samplerate))
    if not seconds:
        return ""
    return (f"Clip durations (first {len(seconds)} training clips): shortest {min(seconds):.2f} s, median "
            f"{float(np.median(seconds)):.2f} s, longest {max(seconds):.2f} s; sample rates "
            f"{', '.join(f'{r:,}' for r in sorted(rates))} Hz.")


def render_report(run: dict[str, Any]) -> str:
    """``run``: title, model, strategy, created, metrics (per split), notes, data {sizes, class_counts,
    inputs_summary, lengths?}, history, config, environment, trainable_params, total_params, before_after?,
    domain? (evaluate.domain_report.domain_section), errors {split: rows}. Plots are drawn here from those numbers."""
    metrics = run["metrics"]
    split_plots = {}
    for split, m in metrics.items():
        names = list(m["per_class"])
        split_plots[split] = {"confusion": plots.confusion_matrix(m["confusion_matrix"], names),
                              "reliability": plots.reliability_diagram(m["reliability"], m["ece"])
                              if "reliability" in m else None}
    data = dict(run["data"])
    train_counts = data["class_counts"].get("train", {})
    data_plots = [plots.bar_chart(train_counts, "training examples per class")] if train_counts else []
    if data.get("lengths"):
        data_plots.append(plots.histogram(data["lengths"], "text length (training set)", "words"))
    data["plots"] = data_plots
    history = run.get("history") or []
    history_keys = list(dict.fromkeys(k for row in history for k in row))
    class_names = list(dict.fromkeys(n for counts in data["class_counts"].values() for n in counts))
    return _template("report.html.j2").render(
        css=_css(), fmt=fmt, title=run["title"], model=run["model"], strategy=run["strategy"],
        created=run["created"], metrics=metrics, headlines={s: headline(m) for s, m in metrics.items()},
        macro_sentences={s: macro_sentence(m) for s, m in metrics.items()},
        notes=run.get("notes", []), data=data, class_names=class_names, history=history, history_keys=history_keys,
        curves=plots.learning_curves(history) if history else None, plots=split_plots,
        errors=run.get("errors", {}), config=run["config"], environment=run["environment"],
        trainable_params=run["trainable_params"], total_params=run["total_params"],
        before_after=run.get("before_after"), distillation=run.get("distillation"), domain=run.get("domain"))


def render_compare(summary: dict[str, Any]) -> str:
    """``summary``: title, data, model, rows (per strategy and K: mean/std accuracy, seconds, trainable params),
    gains (statements), skipped, series for the label-efficiency plot, config."""
    plot = plots.label_efficiency(summary["series"], reference=summary.get("reference_name")) \
        if summary["series"] else None  # every run used all labels: no curve to draw
    return _template("compare.html.j2").render(css=_css(), fmt=fmt, plot=plot, metric_names=METRIC_NAMES, **summary)
