"""Plots for the HTML reports, as self-contained PNG data URIs (matplotlib, headless Agg backend).

Imports nothing from transferkit. Each function takes plain lists/dicts (what metrics.json and history.json
hold) and returns ``data:image/png;base64,...`` so a report is one file with no external resources. Class names
in any script: every plot is drawn with the default sans-serif font followed by the installed fonts of
``CJK_FONTS``, and matplotlib (>= 3.6) takes each glyph the first font lacks from the next one, so a Chinese
label gets its characters instead of empty boxes (scripts/setup.sh installs Debian's fonts-wqy-microhei).
"""
from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from functools import lru_cache, wraps
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
# Fonts with Chinese, Japanese and Korean glyphs, most complete first (Linux, then macOS and Windows names); the
# Debian file of Droid Sans Fallback lacks most Hangul, so it comes after those that have it.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "PingFang SC", "Apple SD Gothic Neo", "Microsoft YaHei", "Malgun Gothic", "Arial Unicode MS",
             "Droid Sans Fallback", "SimHei")
Plot = TypeVar("Plot", bound=Callable[..., str])


@lru_cache(maxsize=1)
def cjk_fonts() -> tuple[str, ...]:
    """The installed fonts of CJK_FONTS; fonts installed after matplotlib cached its font list are added first."""

    def installed() -> tuple[str, ...]:
        names = {font.name for font in font_manager.fontManager.ttflist}
        return tuple(name for name in CJK_FONTS if name in names)

    if not installed():
        known = {font.fname for font in font_manager.fontManager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a font file FreeType cannot read: not one of ours
                    continue
    return installed()


def _any_script(plot: Plot) -> Plot:
    """Draw ``plot`` with the CJK fonts as per-glyph fallbacks (without changing the caller's rcParams)."""

    @wraps(plot)
    def draw(*args: Any, **kwargs: Any) -> str:
        with plt.rc_context({"font.family": ["sans-serif", *cjk_fonts()]}):
            return plot(*args, **kwargs)

    return draw  # type: ignore[return-value]


def to_data_uri(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _loss_panel(ax, history: Sequence[dict[str, Any]], train_label: str, val_label: str) -> None:
    """Train loss (epochs that trained) and validation loss per epoch, on one axis: every task's left panel."""
    train = [(row["epoch"], row["train_loss"]) for row in history if row.get("train_loss") is not None]
    if train:
        ax.plot(*zip(*train), marker="o", label=train_label, color=PALETTE[0])
    ax.plot([row["epoch"] for row in history], [row["val_loss"] for row in history], marker="o", label=val_label,
            color=PALETTE[1])
    ax.set_title("loss")
    ax.legend()


@_any_script
def learning_curves(history: Sequence[dict[str, Any]]) -> str:
    """Loss (train, val) and validation accuracy / macro-F1 per epoch; epoch 0 is before training."""
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    _loss_panel(left, history, "train loss", "val loss")
    left.set_xlabel("epoch")
    right.plot(epochs, [row["val_accuracy"] for row in history], marker="o", label="val accuracy", color=PALETTE[2])
    right.plot(epochs, [row["val_macro_f1"] for row in history], marker="s", label="val macro-F1", color=PALETTE[3])
    right.set_xlabel("epoch")
    right.set_ylim(0, 1.02)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_title("validation")
    right.legend()
    return to_data_uri(fig)


@_any_script
def confusion_matrix(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    """Row-normalised heat map (each true class sums to 1), counts written in the cells when they fit."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = min(1.0 + 0.45 * len(names), 12)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 20:
        for i in range(len(names)):
            for j in range(len(names)):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    return to_data_uri(fig)


@_any_script
def reliability_diagram(reliability: dict[str, list[float]], ece: float) -> str:
    """Accuracy vs confidence per bin against the diagonal (perfect calibration), bin sizes underneath."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.2, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    top.plot(reliability["confidence"], reliability["accuracy"], marker="o", color=PALETTE[0], label="model")
    top.set_ylabel("accuracy")
    top.set_title(f"reliability (ECE {ece:.3f})")
    top.legend(loc="upper left")
    bottom.bar(reliability["confidence"], reliability["count"], width=0.05, color=PALETTE[0])
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_ylabel("n")
    return to_data_uri(fig)


@_any_script
def bar_chart(values: dict[str, float], title: str, xlabel: str = "", horizontal: bool | None = None) -> str:
    horizontal = len(values) > 12 if horizontal is None else horizontal
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.25 * len(values)) if horizontal else 3))
    names, heights = list(values), list(values.values())
    if horizontal:
        ax.barh(names, heights, color=PALETTE[0])
        ax.invert_yaxis()
    else:
        ax.bar(names, heights, color=PALETTE[0])
        ax.tick_params(axis="x", rotation=45)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return to_data_uri(fig)


@_any_script
def histogram(values: Sequence[float], title: str, xlabel: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(values, bins=30, color=PALETTE[0])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    return to_data_uri(fig)


@_any_script
def label_efficiency(series: dict[str, list[tuple[int, float, float]]], reference: str | None = None) -> str:
    """Accuracy vs labels per class (log x), one line per strategy with ± std bands: (K, mean, std) points."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, points) in enumerate(series.items()):
        points = sorted(points)
        ks, means, stds = (np.array(v, dtype=float) for v in zip(*points))
        style = "--" if name == reference else "-"
        ax.plot(ks, means, style, marker="o", label=name, color=PALETTE[i % len(PALETTE)])
        ax.fill_between(ks, means - stds, means + stds, alpha=0.15, color=PALETTE[i % len(PALETTE)])
    ax.set_xscale("log")
    ks = sorted({k for points in series.values() for k, _, _ in points})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy")
    ax.set_title("label efficiency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_data_uri(fig)


@_any_script
def predicted_vs_true(y_true: Sequence[float], y_pred: Sequence[float], title: str = "predicted vs true") -> str:
    """Regression: one point per example, with the y = x line a perfect model would lie on."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(y_true, y_pred, s=8, alpha=0.5, color=PALETTE[0])
    lo, hi = float(min(min(y_true), min(y_pred))), float(max(max(y_true), max(y_pred)))
    ax.plot([lo, hi], [lo, hi], color=PALETTE[1], linewidth=1, label="y = x")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    ax.legend()
    return to_data_uri(fig)


@_any_script
def residual_plot(y_true: Sequence[float], y_pred: Sequence[float], title: str = "residuals") -> str:
    """Regression: residual (predicted - true) against the prediction; a trend or a funnel shows a bias."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    residuals = np.asarray(y_pred, float) - np.asarray(y_true, float)
    ax.scatter(y_pred, residuals, s=8, alpha=0.5, color=PALETTE[0])
    ax.axhline(0.0, color=PALETTE[1], linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("predicted - true")
    ax.set_title(title)
    return to_data_uri(fig)


@_any_script
def regression_curves(history: Sequence[dict[str, Any]]) -> str:
    """Loss (train, val) and validation R² per epoch; epoch 0 is before training."""
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    _loss_panel(left, history, "train loss (standardised)", "val MSE")
    right.plot(epochs, [row["val_r2"] for row in history], marker="o", label="val R²", color=PALETTE[2])
    right.set_title("validation")
    right.legend()
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return to_data_uri(fig)


def audio_thumbnail(wave: Sequence[float], sample_rate: int, n_mels: int = 64) -> str:
    """A clip at a glance: its waveform above its log-mel spectrogram (25 ms windows, 10 ms hop, dB re the peak),
    about 190 x 130 px, no axes: what a reviewer skims to tell silence, clipping, noise or the wrong sound."""
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    mel = librosa.feature.melspectrogram(y=wave, sr=sample_rate, n_fft=int(0.025 * sample_rate),
                                         hop_length=int(0.010 * sample_rate), n_mels=n_mels)
    db = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(2.0, 1.4), gridspec_kw={"height_ratios": [1, 2], "hspace": 0.05})
    seconds = np.arange(len(wave)) / sample_rate
    top.plot(seconds, wave, color=PALETTE[0], linewidth=0.4)
    top.set_xlim(0, max(seconds[-1], 1e-3) if len(wave) else 1)
    top.set_ylim(-1.0, 1.0)
    bottom.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0, interpolation="nearest")
    for ax in (top, bottom):
        ax.set_axis_off()
    return to_data_uri(fig)
