"""Aggregating a strategy comparison: mean ± std per (strategy, K), and transfer gains stated in words.

Imports nothing from transferkit. Pure functions over the per-run records api.compare collects, so the
summary can be rebuilt from compare.json.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

# The headline metric of a comparison and its second column, per task (keys of the runs' test metrics)
METRICS = {"classification": ("accuracy", "macro_f1"), "multilabel": ("micro_f1", "map"),
           "regression": ("r2", "mae"), "tokens": ("entity_f1", "token_accuracy")}
# How compare.html and the gain sentences name each metric
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1", "map": "mAP", "r2": "R²",
                "mae": "MAE", "entity_f1": "entity F1", "token_accuracy": "token accuracy"}


def summarize(runs: list[dict[str, Any]], task: str = "classification") -> list[dict[str, Any]]:
    """One row per (strategy, labels_per_class) over seeds: the task's metric (classification: accuracy, macro-F1;
    regression: R², MAE; multi-label: micro-F1, mAP; tokens: entity F1, token accuracy) mean and std, mean
    seconds. A second metric missing from a run (mAP with no positive label in the test set) is left out of its
    row's mean, and the row holds None when every run lacks it."""
    first, second = METRICS[task]
    cells: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        cells[(run["strategy"], run["labels_per_class"])].append(run)
    rows = []
    for (strategy, k), group in cells.items():
        acc = [r[first] for r in group]
        rows.append({"strategy": strategy, "labels_per_class": k, "n_runs": len(group),
                     f"{first}_mean": float(np.mean(acc)), f"{first}_std": float(np.std(acc)),
                     f"{second}_mean": _mean([r.get(second) for r in group]),
                     "seconds_mean": float(np.mean([r["seconds"] for r in group])),
                     "trainable_params": group[0].get("trainable_params")})
    return sorted(rows, key=lambda r: (_k_order(r["labels_per_class"]), r["strategy"]))


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _k_order(k: Any) -> float:
    return float("inf") if k is None else float(k)


def gains(rows: list[dict[str, Any]], scratch: str = "scratch", reference: str | None = None,
          task: str = "classification") -> list[dict[str, Any]]:
    """For each K and each transfer strategy: accuracy gain (points; otherwise the task's first metric: R², micro-F1,
    entity F1) over ``scratch`` and over the plain ``reference``, with a sentence that says plainly when the gain
    is negative."""
    first = METRICS[task][0]
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
                gain = (100 if first == "accuracy" else 1) * (row[f"{first}_mean"] - cells[base][f"{first}_mean"])
                negative = gain < 0
                amount = f"{abs(gain):.1f} points" if first == "accuracy" else \
                    f"{abs(gain):.3f} of {METRIC_NAMES[first]}"
                statement = (f"At {where}, {strategy} is {amount} BELOW {base}: negative transfer, the "
                             f"pretrained model did not help here." if negative else
                             f"At {where}, {strategy} gains {'+' if gain >= 0 else '-'}{amount} over {base}.")
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
