"""The report's domain-adaptation section: source-only vs adapted on the labeled target test, the share of the
source-only -> target-oracle gap closed, label-free epoch selection, and source vs target features in 2-D.

Imports transferkit.evaluate (plots, domain_selection) only; takes plain numbers and arrays, so a benchmark can
build the same section from its own runs.

"Source-only" is, by default, the frozen-feature linear probe fitted on the labeled source alone (the "before"
of before-vs-after: no target data, no adaptation), scored on the target test. It is the cheap reference every
run has; a benchmark that fitted the same model without target data passes that accuracy and name instead. The
target oracle (a model trained on target labels) is never computed here: with ``oracle_accuracy`` the section
states the share of the gap adaptation closed, without it the section says the gap needs one. Target-test labels
reach this module only: selection (domain_selection) never sees them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transferkit.evaluate import plots
from transferkit.evaluate.domain_selection import density_ratio, selection_sentence

SOURCE_ONLY_NAME = "source-only: linear probe on frozen pretrained features (source labels only)"
PROJECTIONS = ("tsne", "pca")
MAX_POINTS = 300  # per domain and panel: t-SNE stays a few seconds on two cores


def target_test_table(adapted: dict[str, Any], source_only: dict[str, Any], strategy: str,
                      oracle_accuracy: float | None = None, source_only_name: str = SOURCE_ONLY_NAME) -> dict[str, Any]:
    """Source-only vs adapted accuracy (and macro-F1) on the target test; ``adapted`` and ``source_only`` are
    metric dicts with at least ``accuracy``. The gap closed is (adapted - source-only) / (oracle - source-only)."""
    gain = adapted["accuracy"] - source_only["accuracy"]
    rows = [{"name": source_only_name, "accuracy": source_only["accuracy"], "macro_f1": source_only.get("macro_f1")},
            {"name": f"adapted: {strategy}", "accuracy": adapted["accuracy"], "macro_f1": adapted.get("macro_f1")}]
    if oracle_accuracy is not None:
        rows.append({"name": "target oracle (trained on target labels)", "accuracy": oracle_accuracy,
                     "macro_f1": None})
    verb = "raised" if gain >= 0 else "lowered"
    statement = (f"Adapting with {strategy} {verb} target-test accuracy by {100 * abs(gain):.1f} points over "
                 f"source-only ({source_only['accuracy']:.4f} -> {adapted['accuracy']:.4f}).")
    gap_closed = gap_share(source_only["accuracy"], adapted["accuracy"], oracle_accuracy)
    return {"n": adapted.get("n"), "gain": gain, "rows": rows, "statement": statement, "gap_closed": gap_closed,
            "gap_statement": _gap_sentence(source_only["accuracy"], oracle_accuracy, gap_closed)}


def gap_share(source_only: float, adapted: float, oracle: float | None) -> float | None:
    """The share of the source-only -> oracle gap that adaptation closed (1.0 = reached the oracle, negative =
    worse than source-only); None without an oracle or when source-only already reaches it (no gap)."""
    if oracle is None or oracle <= source_only:
        return None
    return (adapted - source_only) / (oracle - source_only)


def _gap_sentence(source_only: float, oracle: float | None, share: float | None) -> str:
    if oracle is None:
        return ("No target oracle was given, so the share of the source-only -> oracle gap closed is not stated "
                "(benchmarks/domain.py fits the oracle).")
    if share is None:
        return (f"Source-only ({source_only:.4f}) already reaches the target oracle ({oracle:.4f}): there is no gap "
                "to close.")
    if share < 0:
        return (f"Adaptation widened the gap between source-only ({source_only:.4f}) and the target oracle "
                f"({oracle:.4f}) instead of closing it ({100 * share:.1f} % closed).")
    return (f"Adaptation closed {100 * share:.1f} % of the gap between source-only ({source_only:.4f}) and the "
            f"target oracle ({oracle:.4f}).")


def feature_projection(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray] | None = None,
                       method: str = "tsne", seed: int = 0, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Source vs target features in 2-D, before adaptation (pretrained backbone) and after (the adapted one),
    each panel projected on its own, plus how well a logistic domain classifier tells the domains apart in each
    (out-of-fold accuracy: 0.5 = indistinguishable, the aim of feature alignment)."""
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {PROJECTIONS}, got {method!r}")
    panels = {"before adaptation": before, **({"after adaptation": after} if after is not None else {})}
    rng = np.random.default_rng(seed)
    points, separability = {}, {}
    for title, (source, target) in panels.items():
        source, target = _sample(np.asarray(source), rng, max_points), _sample(np.asarray(target), rng, max_points)
        points[title] = (_project(np.concatenate([source, target]), method, seed), len(source))
        separability[title.split()[0]] = density_ratio(source, target, seed)[1]
    return {"method": method, "plot": _projection_plot(points, method), "domain_accuracy": separability,
            "statement": _separability_sentence(separability)}


def _sample(x: np.ndarray, rng: np.random.Generator, limit: int) -> np.ndarray:
    return x if len(x) <= limit else x[np.sort(rng.choice(len(x), limit, replace=False))]


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    if method == "pca" or len(x) < 8:
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    reduced = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


@plots._any_script
def _projection_plot(points: dict[str, tuple[np.ndarray, int]], method: str) -> str:
    fig, axes = plots.plt.subplots(1, len(points), figsize=(4.2 * len(points), 3.8), squeeze=False)
    for ax, (title, (xy, n_source)) in zip(axes[0], points.items()):
        ax.scatter(*xy[:n_source].T, s=8, alpha=0.6, color=plots.PALETTE[0], label="source")
        ax.scatter(*xy[n_source:].T, s=8, alpha=0.6, color=plots.PALETTE[1], label="target")
        ax.set_title(f"{title} ({'t-SNE' if method == 'tsne' else 'PCA'})")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=8)
    return plots.to_data_uri(fig)


def _separability_sentence(accuracy: dict[str, float]) -> str:
    parts = [f"{when} {value:.2f}" for when, value in accuracy.items()]
    sentence = (f"A logistic domain classifier tells source from target features with out-of-fold accuracy "
                f"{', '.join(parts)} (0.50 = indistinguishable).")
    if "after" in accuracy:
        closer = accuracy["after"] < accuracy["before"]
        sentence += " Adaptation brought the domains' features closer." if closer else \
            " Adaptation did not bring the domains' features closer."
    return sentence


def selection_summary(history: Sequence[dict[str, Any]], chosen: int, by_source: int | None = None,
                      key: str = "dev_risk", veto_key: str | None = None) -> dict[str, Any] | None:
    """The label-free choice as the report shows it: the criterion's score per epoch (history rows carry it under
    ``key``), the epoch kept, and the sentence saying why; None when no epoch was scored."""
    scores = {int(row["epoch"]): float(row[key]) for row in history if row.get(key) is not None}
    if not scores:
        return None
    collapsed = {int(row["epoch"]) for row in history if veto_key and row.get(veto_key)}
    return {"criterion": "deep embedded validation (DEV)", "key": key, "chosen": chosen, "by_source": by_source,
            "rows": [{"epoch": e, "score": s, "kept": e == chosen, "collapsed": e in collapsed}
                     for e, s in sorted(scores.items())],
            "statement": selection_sentence(scores, chosen, by_source, sorted(collapsed))}


def domain_section(target_test: dict[str, Any] | None = None, selection: dict[str, Any] | None = None,
                   projection: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The run dict's ``domain`` entry (None when there is nothing to show)."""
    parts = {"target_test": target_test, "selection": selection, "projection": projection}
    return {k: v for k, v in parts.items() if v is not None} or None


def domain_markdown(domain: dict[str, Any] | None) -> list[str]:
    """report.md's "Across domains" section (the plot is in report.html only)."""
    if not domain:
        return []
    parts = ["## Across domains", ""]
    table = domain.get("target_test")
    if table:
        parts += [f"Target test (n = {table['n']}):", "",
                  _md_table(["model", "target-test accuracy", "target-test macro-F1"],
                            [[r["name"], _num(r["accuracy"]), _num(r["macro_f1"])] for r in table["rows"]]),
                  "", table["statement"], table["gap_statement"], ""]
    if domain.get("selection"):
        parts += [domain["selection"]["statement"], ""]
    if domain.get("projection"):
        parts += [domain["projection"]["statement"], ""]
    return parts


def _md_table(header: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
