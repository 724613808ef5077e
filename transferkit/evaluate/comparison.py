"""Aggregating a strategy comparison: mean ± std per (strategy, K), and transfer gains stated in words.

Imports nothing from transferkit. Pure functions over the per-run records api.compare collects, so the
summary can be rebuilt from compare.json.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (strategy, labels_per_class) over seeds: accuracy/macro-F1 mean and std, mean seconds."""
    cells: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        cells[(run["strategy"], run["labels_per_class"])].append(run)
    rows = []
    for (strategy, k), group in cells.items():
        acc = [r["accuracy"] for r in group]
        rows.append({"strategy": strategy, "labels_per_class": k, "n_runs": len(group),
                     "accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
                     "macro_f1_mean": float(np.mean([r["macro_f1"] for r in group])),
                     "seconds_mean": float(np.mean([r["seconds"] for r in group])),
                     "trainable_params": group[0].get("trainable_params")})
    return sorted(rows, key=lambda r: (_k_order(r["labels_per_class"]), r["strategy"]))


def _k_order(k: Any) -> float:
    return float("inf") if k is None else float(k)


def gains(rows: list[dict[str, Any]], scratch: str = "scratch", reference: str | None = None) -> list[dict[str, Any]]:
    """For each K and each transfer strategy: accuracy gain over ``scratch`` and over the plain ``reference``,
    with a sentence that says plainly when the gain is negative."""
    by_k: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_k[row["labels_per_class"]][row["strategy"]] = row
    out = []
    for k, cells in sorted(by_k.items(), key=lambda item: _k_order(item[0])):
        where = "all labels" if k is None else f"{k} labels/class"
        for strategy, row in cells.items():
            if strategy in (scratch, reference):
                continue
            for base in (scratch, reference):
                if base is None or base not in cells:
                    continue
                gain = 100 * (row["accuracy_mean"] - cells[base]["accuracy_mean"])
                negative = gain < 0
                statement = (f"At {where}, {strategy} is {-gain:.1f} points BELOW {base}: negative transfer, the "
                             f"pretrained model did not help here." if negative else
                             f"At {where}, {strategy} gains {gain:+.1f} points over {base}.")
                out.append({"labels_per_class": k, "strategy": strategy, "baseline": base, "gain_points": gain,
                            "negative": negative, "statement": statement})
    return out


def series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float]]]:
    """Points for the label-efficiency plot: strategy -> [(K, mean, std)] (K=None rows are left out)."""
    out: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for row in rows:
        if row["labels_per_class"] is not None:
            out[row["strategy"]].append((row["labels_per_class"], row["accuracy_mean"], row["accuracy_std"]))
    return dict(out)
