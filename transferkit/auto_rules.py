"""The rules `fit --strategy auto` chooses a strategy by, each with the benchmark cells it was learnt from.

Pure data and the report lines of a choice, no imports from the package (run_record renders them without
importing transferkit.auto, which imports api): transferkit.auto reads it. A rule applies to a (modality, task) and to
a range of labels per class (classification: the median number of labeled examples per class, validation ones
included, as benchmarks/label_efficiency.py counts K); the first rule that applies wins. Every number quoted is a
mean over 3 seeds in benchmarks/results/ (label_efficiency.json, audio.json, tasks.json) on this project's
default backbones (EfficientNet-Lite0 at 64 px, MiniLM, Whisper tiny.en), measured on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANY = None  # a rule field that matches every modality


@dataclass(frozen=True)
class Rule:
    """``strategy`` for ``task`` on ``modality`` (None: any) with at most ``max_per_class`` labels per class
    (None: no bound); ``runner_up`` is what came next in the evidence; ``epochs``: the maximum epochs the evidence
    was measured with (used when the user leaves --epochs at its default), None: the default."""

    modality: str | None
    task: str
    max_per_class: float | None
    strategy: str
    runner_up: str
    evidence: str
    epochs: int | None = None


RULES: tuple[Rule, ...] = (
    Rule("image", "classification", 30, "l2sp", "finetune",
         "L2-SP was the best strategy at 10 labels/class on digits (0.880 vs finetune 0.866) and on Fashion-MNIST "
         "(0.755 vs 0.743) (label-efficiency benchmark)"),
    Rule("image", "classification", None, "finetune", "lp-ft",
         "finetune was best at 100 labels/class on Fashion-MNIST (0.876 vs L2-SP 0.862) and 0.2 points behind "
         "LP-FT at 50/class on digits (0.973 vs 0.975) (label-efficiency benchmark)"),
    Rule("text", "classification", None, "lp-ft", "gradual",
         "LP-FT was the best strategy at 8 labels/class on BBC News (0.935; gradual 0.928, linear-probe 0.907, "
         "finetune 0.905) (label-efficiency benchmark, 4 epochs)", epochs=4),
    Rule("audio", "classification", 100, "linear-probe", "finetune",
         "the linear probe beat fine-tuning at 10 clips/class (0.725 vs 0.600) and 30 (0.862 vs 0.845) "
         "(audio benchmark, Whisper tiny.en)"),
    Rule("audio", "classification", None, "finetune", "lora",
         "finetune was best with all ~330 clips/class (0.987; LoRA 0.969, linear-probe 0.946) (audio benchmark)"),
    Rule(ANY, "regression", None, "finetune", "linear-probe",
         "finetune reached R^2 0.795 vs the linear probe's 0.608 on VADER sentence valence (tasks benchmark)", epochs=4),
    Rule(ANY, "multilabel", None, "finetune", "linear-probe",
         "finetune beat the linear probe in micro-F1 on NRC emotions (0.616 vs 0.579) and Fashion-MNIST tiles "
         "(0.769 vs 0.630) (tasks benchmark)"),
    Rule(ANY, "tokens", None, "finetune", "lora",
         "finetune reached entity F1 0.543 on WNUT-16 vs LoRA 0.486 and the linear probe 0.322 (tasks benchmark)",
         epochs=4),
)

# Strategies auto falls back to when the chosen one would not fit the time budget, cheapest last.
CHEAPER = {"finetune": "head", "l2sp": "head", "lp-ft": "head", "gradual": "head", "lora": "head",
           "head": "linear-probe"}
# Passes over the training data per epoch, in forward-pass units: a backward pass costs about two forward passes.
# A frozen backbone (head) is one forward pass per epoch; linear-probe extracts features once, for every split.
FORWARD_PASSES = {"linear-probe": 0.0, "head": 1.0, "partial": 2.0, "gradual": 2.0, "lora": 2.5, "lp-ft": 3.0,
                  "finetune": 3.0, "l2sp": 3.2}


def rule_for(modality: str, task: str, per_class: float | None) -> Rule:
    """The first rule for (modality, task) whose label bound admits ``per_class`` (None: not a class task)."""
    for rule in RULES:
        if rule.task != task or rule.modality not in (ANY, modality):
            continue
        if rule.max_per_class is None or per_class is None or per_class <= rule.max_per_class:
            return rule
    raise LookupError(f"no auto rule for {task} on {modality}")  # the RULES above cover every task and modality


def notes(record: dict[str, Any] | None) -> list[str]:
    """The report's lines on what auto chose and why (empty for a run without --strategy auto)."""
    if not record:
        return []
    runner = record["runner_up"]
    lines = [f"Strategy auto chose {record['model']} with {record['strategy']} ({record['rule']['data']}; "
             f"chosen in {record['seconds']:.0f} s)."]
    lines += [f"auto: {reason}." for reason in record["reasons"]]
    if "image_size" in record:
        lines.append(f"auto: image size {record['image_size']['why']}.")
    alt = [f"strategy {runner['strategy']}"] + ([f"backbone {runner['model']}"] if runner["model"] else [])
    lines.append(f"auto's runner-up: {' / '.join(alt)}.")
    return lines
