"""FitConfig: what `fit` needs beyond the data — model, strategy, splits and the loop's TrainConfig.

Imports transferkit.core, transferkit.train.config. Defaults live here and nowhere else (the CLI passes only
what the user set).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from transferkit.core.errors import ConfigError
from transferkit.train.config import TrainConfig

# transferkit.tasks.TASKS (config may not import tasks)
TASK_NAMES = ("classification", "multilabel", "regression", "tokens")


@dataclass(frozen=True)
class FitConfig:
    model: str = "auto"  # efficientnet_lite0 for images, minilm for text
    strategy: str = "finetune"
    task: str | None = None  # a TASK_NAMES name; None: detected from the labels (task_choice)
    out: str | None = None  # run folder; default runs/<strategy>-<time>
    labels_per_class: int | None = None
    val_data: str | None = None
    test_data: str | None = None
    text_column: str = "text"
    image_column: str | None = None  # a CSV/JSONL column of image paths; None: the text column, if it holds them
    label_column: str = "label"
    label_sep: str | None = None  # multi-label CSV: the separator in a label cell; None: '|' when task is multilabel
    label_columns: tuple[str, ...] = ()  # multi-label: one 0/1 column per label name (instead of label_column)
    image_size: int | None = None  # default: the backbone's own input size
    clip_seconds: float | None = None  # audio: clips cropped/padded to this length; None: the backbone's (5.0 s)
    val_fraction: float = 0.15
    strategy_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    teacher: str | None = None  # distill: the bundle/ folder of a fitted teacher
    init_from: str | None = None  # continue from this bundle/ (backbone + head); new classes extend the head
    unlabeled_data: str | None = None  # extra inputs without labels (distill: the teacher labels them)
    target_data: str | None = None  # domain adaptation: unlabeled inputs of the target domain (dann, coral, mmd)
    target_test: str | None = None  # labeled target-domain test data: scored for the report only, never for selection
    target_oracle: float | None = None  # a target oracle's accuracy on target_test: the report states the gap closed
    baseline: bool = True  # also fit a frozen-feature linear probe: the "before" of the report's before-vs-after
    strict: bool = False  # the data doctor's findings are all fatal (transferkit.data.doctor)
    dedupe: bool = False  # leave out later copies of duplicate / near-duplicate inputs (train < val < test)
    max_pixels: int | None = None  # refuse images decoding to more pixels (memory); None: data.images' default
    budget_minutes: float | None = None  # strategy 'auto': the whole run's time budget (choice + training)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if isinstance(self.label_columns, str):  # 'a,b,c' as the CLI passes it
            object.__setattr__(self, "label_columns", tuple(c.strip() for c in self.label_columns.split(",") if c.strip()))
        if self.task is not None and self.task not in TASK_NAMES:
            raise ConfigError(f"The 'task' parameter must be one of {', '.join(TASK_NAMES)} (or unset: detected from "
                              f"the labels). Got {self.task!r} instead.")
        k = self.labels_per_class
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ConfigError(f"The 'labels_per_class' parameter must be an int >= 1. Got {k!r} instead.")
        if self.max_pixels is not None and (not isinstance(self.max_pixels, int) or self.max_pixels < 1):
            raise ConfigError(f"The 'max_pixels' parameter must be an int >= 1. Got {self.max_pixels!r} instead.")
        c = self.clip_seconds
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < float("inf")):
            raise ConfigError(f"The 'clip_seconds' parameter must be a number of seconds > 0. Got {c!r} instead.",
                              cli=f"--clip-seconds must be a number of seconds > 0. Got {c!r} instead.")
        if self.target_test is not None and self.target_data is None:
            raise ConfigError("The 'target_test' parameter scores a domain-adapted model on labeled target data; it "
                              "needs 'target_data' (the unlabeled target inputs) too.",
                              cli="--target-test needs --target-data (the unlabeled target inputs) and a strategy "
                                  "that adapts to it (dann, coral, mmd, self-train).")
        o = self.target_oracle
        if o is not None and (isinstance(o, bool) or not isinstance(o, (int, float)) or not 0 <= o <= 1
                              or self.target_test is None):
            raise ConfigError(f"The 'target_oracle' parameter must be an accuracy in [0, 1] on 'target_test' (which "
                              f"must be given). Got {o!r} instead.")
        b = self.budget_minutes
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < float("inf")):
            raise ConfigError(f"The 'budget_minutes' parameter must be a number of minutes > 0. Got {b!r} instead.",
                              cli=f"--budget-minutes must be a number of minutes > 0. Got {b!r} instead.")
        if b is not None and self.strategy != "auto":
            raise ConfigError("The 'budget_minutes' parameter steers strategy='auto'; for another strategy use "
                              "max_minutes (training's time budget).",
                              cli="--budget-minutes steers --strategy auto; with another strategy use --max-minutes.")
        if not 0 < self.val_fraction < 0.9:
            raise ConfigError(f"The 'val_fraction' parameter must be in (0, 0.9). Got {self.val_fraction} instead.")

    @classmethod
    def from_options(cls, **options: Any) -> FitConfig:
        """Build from flat keyword options: FitConfig fields and TrainConfig fields (epochs, seed, lr, ...)."""
        own = {f.name for f in fields(cls)} - {"train"}
        loop = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(options) - own - loop)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(own | loop), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown option '{unknown[0]}'.{hint} Valid options: {', '.join(sorted(own | loop))}.")
        base = options.pop("train", None) or TrainConfig()
        train = replace(base, **{k: v for k, v in options.items() if k in loop})
        return cls(**{k: v for k, v in options.items() if k in own}, train=train)
