"""The plots of `transferkit tune`: the optimisation history and the parameter importances, as PNG files.

Imports nothing from transferkit (and not optuna): each function takes what tune.json holds — trials as dicts with
number, state and value; importances as {parameter: share} — and writes one PNG with matplotlib (headless Agg).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

STATE_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#7f7f7f"}


def plot_history(trials: list[dict[str, Any]], metric: str, higher_is_better: bool, path: Path) -> Path:
    """Each finished trial's validation score by trial number (pruned ones grey, at their last reported epoch's
    score) and the best so far as a step line: the picture optuna's plot_optimization_history draws."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    scored = [t for t in trials if t.get("value") is not None and t["state"] in STATE_COLORS]
    for state, color in STATE_COLORS.items():
        points = [t for t in scored if t["state"] == state]
        if points:
            ax.scatter([t["number"] for t in points], [t["value"] for t in points], color=color, s=22,
                       label=state.lower(), zorder=3)
    complete = sorted((t for t in scored if t["state"] == "COMPLETE"), key=lambda t: t["number"])
    best, xs, ys = None, [], []
    for t in complete:
        if best is None or (t["value"] > best if higher_is_better else t["value"] < best):
            best = t["value"]
        xs.append(t["number"])
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="#d62728", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} (validation)")
    ax.set_title("optimisation history")
    ax.grid(alpha=0.3)
    if scored:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_importances(importances: dict[str, float], path: Path) -> Path:
    """Horizontal bars, most important parameter on top (shares of the validation score's variance, summing to 1)."""
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * max(len(importances), 2) + 1.0), dpi=110)
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="#1f77b4")
    ax.set_xlabel("importance (share of the score's variance)")
    ax.set_xlim(0, 1)
    ax.set_title("parameter importances")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
