"""The run's readable report as text (report.md) and the sentences both reports share.

Imports transferkit.train (for TrainResult) and transferkit.evaluate.comparison (metric names); takes plain dicts
so it can be regenerated from a run folder.
report.md carries the same numbers as report.html, without the plots.
"""
from __future__ import annotations

from typing import Any

from transferkit.evaluate.comparison import METRIC_NAMES
from transferkit.evaluate.domain_report import domain_markdown
from transferkit.train.loop import TrainResult


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def training_notes(result: TrainResult, score_name: str = "macro-F1", selected_by: str | None = None) -> list[str]:
    """``selected_by``: the label-free criterion that chose the epoch (domain adaptation), if one did."""
    if not result.history:
        return ["Fitted in closed form on frozen features (no training loop)."]
    trained = len(result.history) - 1
    stop = "; stopped early" if result.stopped_early else "; stopped by the --max-minutes budget" \
        if result.stopped_by_time else "; stopped because training diverged" if result.diverged else ""
    why = f"chosen by {selected_by} without target labels; its source validation {score_name}" if selected_by \
        else f"best validation {score_name}"
    notes = [f"Kept the weights of epoch {result.best_epoch} of {trained} ({why} {result.best_score:.4f}){stop}."]
    if result.diverged:
        notes.append(f"{result.diverged['message']} The weights of epoch {result.best_epoch}, the best before it, "
                     "are what the bundle holds.")
    if result.single_example_batches:
        notes.append(f"{result.single_example_batches} training step(s) had a batch of one example; batch norm used "
                     "its running statistics for them (statistics over one example are undefined).")
    if result.resumed_from:
        notes.append(f"Resumed from checkpoint {result.resumed_from}.")
    if result.best_epoch == 0 and selected_by:
        notes.append(f"{selected_by[:1].upper()}{selected_by[1:]} rated no trained epoch above the model before "
                     "the first step, so that model was kept: adaptation did not look like it would help on the target.")
    elif result.best_epoch == 0:
        notes.append("Training never beat the model as it was before the first step on validation, so that model "
                     "was kept: with this little data, adaptation did not help.")
    return notes


def imbalance_notes(imbalance: dict[str, Any], auto_ratio: float) -> list[str]:
    ratio, policy, setting = imbalance["largest_to_smallest"], imbalance["class_weight"], imbalance["class_weight_setting"]
    why = f" ('{setting}': balanced from a {auto_ratio}x ratio)" if setting == "auto" else ""
    return [f"Class balance: the largest training class has {ratio:.2f}x the examples of the smallest; "
            f"loss class weights: {policy}{why}; sampler: {imbalance['sampler']}."]


# task -> (the metric the gain is taken on, a second column, the frozen-feature probe that is the "before");
# regression has its own table (transferkit.evaluate.regression_report)
BEFORE_AFTER = {"classification": ("accuracy", "macro_f1", "linear probe"),
                "multilabel": ("micro_f1", "map", "one-vs-rest logistic probe"),
                "tokens": ("entity_f1", "token_accuracy", "per-word logistic probe")}


def before_after_table(before: dict[str, Any] | None, metrics: dict[str, Any], strategy: str,
                       task: str = "classification") -> dict[str, Any] | None:
    """Rows 'before' (the task's frozen-feature probe) and 'after' (this run) on the same split, and the gain on
    the task's first metric of ``BEFORE_AFTER``. ``absent`` says why a second-metric cell is empty (mAP needs a
    label with a positive example in the split)."""
    if before is None or before["split"] not in metrics:
        return None
    first, second, probe = BEFORE_AFTER[task]
    after, split = metrics[before["split"]], before["split"]
    gain = after[first] - before[first]
    rows = [{"name": f"before: {probe} on frozen pretrained features", first: before[first],
             second: before.get(second)}, {"name": f"after: {strategy}", first: after[first], second: after.get(second)}]
    table = {"split": split, "gain": gain, "metrics": [first, second],
             "labels": [METRIC_NAMES[first], METRIC_NAMES[second]],
             "statement": _gain_sentence(gain, strategy, split, task), "rows": rows}
    missing = [row["name"].split(":")[0] for row in rows if row[second] is None]
    if missing:
        table["absent"] = (f"No {METRIC_NAMES[second]} for {' and '.join(missing)}: it needs per-label scores and "
                           f"a label with a positive example in the {split} split.")
    return table


def before_after_notes(before: dict[str, Any] | None, metrics: dict[str, Any], strategy: str,
                       task: str = "classification") -> list[str]:
    table = before_after_table(before, metrics, strategy, task)
    return [table["statement"]] if table else []


def no_before_after_note(strategy: str, uses_pretrained_weights: bool, baseline: bool) -> list[str]:
    """Why a report has no before-vs-after table (the reason ``api`` computed no "before")."""
    if strategy == "linear-probe":
        return ["No before-vs-after: this run is the frozen-feature probe, the 'before' itself."]
    if not uses_pretrained_weights:
        return [f"No before-vs-after: {strategy} starts from random weights, so there is no pretrained 'before'."]
    if not baseline:
        return ["No before-vs-after: the frozen-feature probe was turned off (baseline=False)."]
    return []


def before_after_section(table: dict[str, Any] | None) -> list[str]:
    """report.md's before-vs-after table, the gain sentence and why a cell is empty (multi-label, tokens)."""
    if not table:
        return []
    first, second = table["metrics"]
    header = ["model", *(f"{table['split']} {label}" for label in table["labels"])]
    rows = [[r["name"], _fmt(r[first]), _fmt(r[second]) if r[second] is not None else "–"] for r in table["rows"]]
    return ["## Before vs after adaptation", "", _table(header, rows), "", table["statement"],
            *([table["absent"]] if table.get("absent") else []), ""]


def distillation_table(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Student vs teacher accuracy and throughput (measured side by side in the run), with a one-line verdict."""
    if "teacher_accuracy" not in summary:
        return None
    split = summary["teacher_split"]
    student_acc, teacher_acc = summary[split]["accuracy"], summary["teacher_accuracy"]
    speed = summary["throughput"]
    kept = student_acc / teacher_acc if teacher_acc else float("nan")
    statement = (f"The student keeps {100 * kept:.1f} % of the teacher's {split} accuracy at "
                 f"{summary['speedup_vs_teacher']:.2f}x its inference throughput.")
    return {"split": split, "kept": kept, "statement": statement, "rows": [
        {"name": "teacher", "accuracy": teacher_acc, "per_s": speed["teacher_per_s"]},
        {"name": "student (this run)", "accuracy": student_acc, "per_s": speed["student_per_s"]}]}


def _gain_sentence(gain: float, strategy: str, split: str, task: str = "classification") -> str:
    if task != "classification":
        first, _, probe = BEFORE_AFTER[task]
        amount = f"{abs(gain):.3f} of {split} {METRIC_NAMES[first]}"
        if gain < 0:
            return (f"Negative transfer gain: {strategy} is {amount} below the frozen-feature {probe}; adapting "
                    "the backbone hurt here, so prefer --strategy linear-probe or more data.")
        return f"Adapting with {strategy} gained +{amount} over the frozen-feature {probe}."
    points = 100 * gain
    if points < 0:
        return (f"Negative transfer gain: {strategy} is {-points:.1f} points below the frozen-feature linear probe "
                f"on {split} accuracy; adapting the backbone hurt here, so prefer --strategy linear-probe or more data.")
    return f"Adapting with {strategy} gained {points:+.1f} points of {split} accuracy over the frozen-feature linear probe."


def data_doctor_notes(report: dict[str, Any]) -> list[str]:
    """The data doctor's verdict in one sentence (``report`` is DataReport.to_dict())."""
    n = report["fatal"] + report["warnings"]
    if not n:
        return ["Data doctor: no findings (every input decoded; no label, text or leakage problems found)."]
    kinds = ", ".join(f"{kind} × {count}" for kind, count in report["by_kind"].items())
    left = f"; {report['n_skipped']} input(s) left out of the run" if report["n_skipped"] else ""
    return [f"Data doctor: {n} finding(s) ({kinds}){left}; all of them in data_report.json."]


def config_and_curve_sections(run: dict[str, Any]) -> list[str]:
    """The configuration table and the training curve (one row per epoch): the same in every task's report.md."""
    parts = ["## Configuration", "", _table(["setting", "value"], [[k, v] for k, v in run["config"].items()]), ""]
    if run.get("history"):
        keys = list(dict.fromkeys(k for row in run["history"] for k in row))
        parts += ["## Training curve", "", _table(keys, [[_fmt(r.get(k)) for k in keys] for r in run["history"]]), ""]
    return parts


def data_doctor_section(report: dict[str, Any], limit: int = 20) -> list[str]:
    """report.md's data-doctor table: the first ``limit`` findings (all are in data_report.json)."""
    findings = report["findings"]
    if not findings:
        return []
    rows = [[f["severity"], f["kind"], f"{f['path']}:{f['line']}" if "line" in f else f["path"], f["message"]]
            for f in findings[:limit]]
    rows = [[str(cell).replace("|", "/").replace("\n", " ") for cell in row] for row in rows]
    more = [f"… and {len(findings) - limit} more in data_report.json.", ""] if len(findings) > limit else []
    return ["## Data doctor", "", *data_doctor_notes(report), "",
            _table(["severity", "kind", "where", "finding"], rows), "", *more]


def macro_sentence(m: dict[str, Any]) -> str:
    """How the split's macro averages were taken (the same definition as the loop's validation score)."""
    if "macro_n_classes" not in m:
        return ""
    absent = m.get("absent_classes") or []
    left_out = f"; left out (support 0, never predicted): {', '.join(absent)}" if absent else ""
    return (f"Macro averages are over the {m['macro_n_classes']} classes present in this split's labels or "
            f"predictions{left_out}.")


def _example_cell(error: dict[str, Any]) -> str:
    if "text" not in error:
        return error["id"]
    return error["text"].replace("|", "/").replace("\n", " ")[:120]


def render_markdown(run: dict[str, Any]) -> str:
    """``run`` as built by api (title, metrics, notes, data, config, history, before_after, errors)."""
    parts = [f"# transferkit run: {run['title']}", ""]
    for split, m in run["metrics"].items():
        parts.append(f"- **{split}**: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n = {m['n']})")
    parts += [f"- {note}" for note in run.get("notes", [])] + [""]
    if run.get("before_after"):
        ba = run["before_after"]
        parts += ["## Before vs after adaptation", "",
                  _table(["model", f"{ba['split']} accuracy", f"{ba['split']} macro-F1"],
                         [[r["name"], _fmt(r["accuracy"]), _fmt(r["macro_f1"])] for r in ba["rows"]]), ""]
    if run.get("distillation"):
        kd = run["distillation"]
        parts += ["## Student vs teacher", "",
                  _table(["model", f"{kd['split']} accuracy", "examples / s"],
                         [[r["name"], _fmt(r["accuracy"]), _fmt(r["per_s"])] for r in kd["rows"]]), "",
                  kd["statement"], ""]
    parts += domain_markdown(run.get("domain"))
    data = run["data"]
    parts += ["## Data", "", _table(["split", "examples"], [[k, v] for k, v in data["sizes"].items()]), ""]
    if data.get("inputs_summary"):
        parts += [data["inputs_summary"], ""]
    splits = list(data["class_counts"])
    names = list(dict.fromkeys(n for counts in data["class_counts"].values() for n in counts))
    parts += ["Class counts:", "", _table(["class", *splits], [[n, *(data["class_counts"][s].get(n, 0) for s in splits)]
                                                              for n in names]), ""]
    if run.get("data_doctor"):
        parts += data_doctor_section(run["data_doctor"])
    parts += config_and_curve_sections(run)
    parts += ["## Results", ""]
    for split, m in run["metrics"].items():
        scalars = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
        parts += [f"### {split} (n = {m['n']})", "", ", ".join(f"{k} **{_fmt(v)}**" for k, v in scalars.items()), ""]
        rows = [[name, _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1-score"]), int(v["support"])]
                for name, v in m["per_class"].items()]
        rows += [[f"{avg} avg", _fmt(v["precision"]), _fmt(v["recall"]), _fmt(v["f1"]), m["n"]]
                 for avg, v in m.get("averages", {}).items()]
        parts += [_table(["class", "precision", "recall", "f1", "support"], rows), ""]
        parts += [macro_sentence(m), ""] if macro_sentence(m) else []
        names = list(m["per_class"])
        cm = [[names[i], *row] for i, row in enumerate(m["confusion_matrix"])]
        parts += ["Confusion matrix (rows = true, columns = predicted):", "",
                  _table(["true \\ pred", *names], cm), ""]
        errors = run.get("errors", {}).get(split)
        if errors:
            rows = [[_example_cell(e), e["true"], e["predicted"], f"{e['confidence']:.2f}"] for e in errors]
            parts += ["Most confidently wrong:", "", _table(["example", "true", "predicted", "confidence"], rows), ""]
    return "\n".join(parts)
