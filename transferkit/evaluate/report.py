"""The run's readable report (report.md): data, configuration, training curve, metrics per split.

Imports transferkit.evaluate.metrics only; takes plain dicts so it can be regenerated from a run folder.
"""
from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def render_markdown(run: dict[str, Any]) -> str:
    """``run`` holds: title, data (split sizes, class counts), config, history, metrics (per split), notes."""
    parts = [f"# transferkit run: {run['title']}", ""]
    for split, m in run["metrics"].items():
        parts.append(f"- **{split}**: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n = {m['n']})")
    parts += [f"- {note}" for note in run.get("notes", [])] + [""]
    parts += ["## Data", "", _table(["split", "examples"], [[k, v] for k, v in run["data"]["sizes"].items()]), ""]
    counts = run["data"]["class_counts"]
    parts += ["Training class counts:", "", _table(["class", "count"], [[k, v] for k, v in counts.items()]), ""]
    parts += ["## Configuration", "", _table(["setting", "value"], [[k, v] for k, v in run["config"].items()]), ""]
    if run.get("history"):
        keys = list(run["history"][0])
        parts += ["## Training curve", "", _table(keys, [[_fmt(r[k]) for k in keys] for r in run["history"]]), ""]
    parts += ["## Results", ""]
    for split, m in run["metrics"].items():
        parts += [f"### {split} (n = {m['n']})", "",
                  f"accuracy **{m['accuracy']:.4f}**, macro-F1 **{m['macro_f1']:.4f}**", ""]
        rows = [[name, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1-score"]), int(v["support"])]
                for name, v in m["per_class"].items()]
        parts += [_table(["class", "precision", "recall", "f1", "support"], rows), ""]
        names = list(m["per_class"])
        cm = [[names[i], *row] for i, row in enumerate(m["confusion_matrix"])]
        parts += ["Confusion matrix (rows = true, columns = predicted):", "",
                  _table(["true \\ pred", *names], cm), ""]
    return "\n".join(parts)
