"""Which task a fit runs (``--task``, or detected from the labels), the options each task refuses, and the
target encoder the loaders use (a LabelMap for classification, NumericTargets for regression, a TagMap for tokens).

Token classification is detected from the data's layout (sentences of words with a tag list each: a CoNLL file or
JSONL with ``tokens``/``tags``), never from label values; ``--task tokens`` on other data, or another task on
such data, is a ConfigError.

Top-level module beside api (imports transferkit.config, core, data and the strategies registry; api calls it).
Refusals are ConfigErrors that name the option and say why it has no meaning for the task (or, for the image-only
options, for text and audio data: ``check_modality_options``); options that only have
a classification default (``class_weight='auto'``) simply stay off. ``--loss`` (mse | huber) is regression's alone,
and ``--loss huber`` is refused with a strategy that fits its head in closed form (linear-probe's ridge minimises
squared error). Distillation and --init-from work for every task; the bundle they build on must be of the same task
(``check_bundle_task``); --init-from's bundle decides classification vs regression when --task is not given
(``resolve_task``'s ``bundle_task``), and a Huber bundle's loss carries over without --loss (``with_bundle_loss``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError
from transferkit.data.conll import TagMap
from transferkit.data.labels import LabelMap
from transferkit.data.multilabels import DEFAULT_SEP, MultiLabelMap, is_label_set
from transferkit.data.tables import TextColumns
from transferkit.data.targets import NumericTargets, detect_task
from transferkit.strategies import STRATEGIES

# option -> is it set? (the same test for every task that refuses the option)
_IS_SET = {
    "labels_per_class": lambda c: c.labels_per_class is not None,
    "label_smoothing": lambda c: c.train.label_smoothing > 0,
    "mixup": lambda c: c.train.mixup > 0 or c.train.cutmix > 0,
    "sampler": lambda c: c.train.sampler == "balanced",
    "class_weight": lambda c: c.train.class_weight == "balanced",
    "loss": lambda c: c.train.loss is not None,
}
_LOSS = "--loss (mse | huber) chooses regression's loss, and {task} trains with {own}; drop it"

# option -> why regression refuses it
_REGRESSION_REFUSALS = {
    "labels_per_class": "--labels-per-class keeps K examples of each class, and a regression target has no classes; "
                        "drop it (pass a smaller training file to try fewer labels)",
    "label_smoothing": "--label-smoothing softens one-hot class targets; a regression target is a number; drop it",
    "mixup": "--mixup/--cutmix mix class targets; for regression they are not supported; drop them",
    "sampler": "--sampler balanced draws every class equally often; a regression target has no classes; drop it",
    "class_weight": "--class-weight balanced weights classes; a regression target has no classes; drop it",
}

# option -> why token classification refuses it
_TOKENS_REFUSALS = {
    **{k: _REGRESSION_REFUSALS[k] for k in ("mixup", "sampler", "class_weight")},
    "labels_per_class": "--labels-per-class keeps K examples of each class, and a sentence is one example holding "
                        "many tags of several entity types; drop it (pass a smaller training file to try fewer "
                        "sentences)",
    "label_smoothing": "--label-smoothing is not supported for token classification yet; drop it",
    "loss": _LOSS.format(task="token classification", own="cross-entropy per token"),
}
# option -> why multi-label refuses it
_MULTILABEL_REFUSALS = {
    "labels_per_class": "--labels-per-class keeps K examples of each class, and a multi-label row belongs to several "
                        "labels at once; drop it (pass a smaller training file to try fewer labels)",
    "label_smoothing": "--label-smoothing softens one-hot class targets; multi-label targets are per-label 0/1; "
                       "drop it",
    "mixup": "--mixup/--cutmix mix one-hot class targets; for multi-label they are not supported; drop them",
    "sampler": "--sampler balanced draws every class equally often, and a multi-label row has several; drop it",
    "class_weight": "--class-weight balanced weights single classes; multi-label is not supported; drop it",
    "loss": _LOSS.format(task="multi-label", own="per-label sigmoid/BCE"),
}
_CLASSIFICATION_REFUSALS = {"loss": _LOSS.format(task="classification", own="cross-entropy")}
_TOKEN_STRATEGIES = ("linear-probe", "head", "partial", "gradual", "prompt", "ia3", "adapter", "lora", "finetune",
                     "lp-ft", "l2sp", "scratch", "distill")


def _is_tokens(train_labels: Sequence[object]) -> bool:
    return bool(train_labels) and isinstance(train_labels[0], list)


def _multilabel(cfg: FitConfig, train_labels: Sequence[Any]) -> tuple[FitConfig, str]:
    """Multi-label is detected from label sets (a JSON list, --label-sep, --label-columns); --task multilabel on
    single labels, or another task on label sets, is a ConfigError."""
    sets = any(is_label_set(y) for y in train_labels)
    if cfg.task == "multilabel" and not sets:
        raise ConfigError("--task multilabel needs a set of labels per row: a JSON list in the label field (JSONL), "
                          "labels joined by --label-sep in a CSV cell, or --label-columns a,b,c (one 0/1 column each).")
    if sets and cfg.task not in (None, "multilabel"):
        raise ConfigError(f"--task {cfg.task} needs one label per row, but the label field holds lists of labels; "
                          "drop --task (multi-label is detected from the lists) or pass one label per row.")
    if sets and cfg.task is None:
        n = sum(1 for y in train_labels if y is not None)
        return replace(cfg, task="multilabel"), (f"task: multilabel (detected: {n:,} rows with a list of labels; "
                                                 "pass one label per row for classification)")
    return cfg, ""


def resolve_task(cfg: FitConfig, train_labels: Sequence[str | None],
                 bundle_task: str | None = None) -> tuple[FitConfig, str]:
    """``cfg`` with its task set (detected when not given) and the sentence saying it was detected ('' if not);
    ``bundle_task`` (--init-from's) decides between classification and regression instead of the label values."""
    note = ""
    tokens = _is_tokens(train_labels)
    if cfg.task == "tokens" and not tokens:
        raise ConfigError("--task tokens needs tagged tokens, but the data holds one label per input; pass a CoNLL "
                          "file or a JSONL with tokens + tags lists.")
    if tokens and cfg.task not in (None, "tokens"):
        raise ConfigError(f"--task {cfg.task} needs one label per input, but the data holds sentences of tagged "
                          "tokens; drop --task (token classification is detected from the layout).")
    if cfg.task is None and tokens:
        cfg = replace(cfg, task="tokens")
    if not tokens:
        cfg, note = _multilabel(cfg, train_labels)
    if cfg.task is None and bundle_task in ("classification", "regression"):
        cfg = replace(cfg, task=bundle_task)  # as the bundle it continues was fitted
    if cfg.task is None:
        guess = detect_task(train_labels)
        cfg, note = replace(cfg, task=guess.name), guess.reason
    check_options(cfg, detected=bool(note))
    return cfg, note


# CLI flag -> (its parameter name, is it set?): options only images have a meaning for
_IMAGE_ONLY = {
    "--image-size": ("image_size", lambda c: c.image_size is not None),
    "--max-pixels": ("max_pixels", lambda c: c.max_pixels is not None),
    "--mixup": ("mixup", lambda c: c.train.mixup > 0),
    "--cutmix": ("cutmix", lambda c: c.train.cutmix > 0),
    "--hflip": ("hflip", lambda c: c.train.hflip > 0),
}


def check_modality_options(cfg: FitConfig, modality: str) -> None:
    """ConfigError naming an image-only option (size, decode cap, mixing, flips) given for text or audio data, so
    that nothing is recorded in the manifest as applied when it was not."""
    if modality == "image":
        return
    for flag, (name, is_set) in _IMAGE_ONLY.items():
        if is_set(cfg):
            why = f"applies to images only, and the training data is {modality}; drop it"
            raise ConfigError(f"The '{name}' parameter {why}.", cli=f"{flag} {why}.")


def check_options(cfg: FitConfig, detected: bool = False) -> None:
    """ConfigError for an option the task has no meaning for (``detected``: the task was guessed, say how to
    override it)."""
    if cfg.task == "tokens":
        for option, why in _TOKENS_REFUSALS.items():
            if _IS_SET[option](cfg):
                raise ConfigError(f"{why.format(strategy=cfg.strategy)} (token classification).")
        if cfg.strategy not in (*_TOKEN_STRATEGIES, "auto"):
            raise ConfigError(f"--strategy {cfg.strategy} does not support token classification; use one of "
                              f"{', '.join(_TOKEN_STRATEGIES)}.")
        return
    if cfg.task == "multilabel":
        how = "the labels were detected as lists (multi-label)" if detected else "--task multilabel"
        for option, why in _MULTILABEL_REFUSALS.items():
            if _IS_SET[option](cfg):
                raise ConfigError(f"{why} ({how}).")
        return
    if cfg.task != "regression":
        for option, why in _CLASSIFICATION_REFUSALS.items():
            if _IS_SET[option](cfg):
                raise ConfigError(f"{why} (classification; pass --task regression if the labels are numbers to "
                                  "predict).")
        return
    how = ("the labels were detected as numeric targets; pass --task classification to treat them as classes"
           if detected else "--task regression")
    for option, why in _REGRESSION_REFUSALS.items():
        if _IS_SET[option](cfg):
            raise ConfigError(f"{why} ({how}).")
    strategy = STRATEGIES.get(cfg.strategy)
    if cfg.train.loss == "huber" and strategy is not None and not strategy.trains_with_loop:
        why = (f"trains the head by gradient steps, but the {cfg.strategy} strategy fits its ridge head in closed "
               "form, which minimises squared error; use the head strategy (frozen backbone, the head trained with "
               "Huber)")
        raise ConfigError(f"loss='huber' {why}: strategy='head', or loss='mse'.",
                          cli=f"--loss huber {why} or drop --loss huber.")


def with_task_loss(cfg: FitConfig) -> FitConfig:
    """``cfg`` with regression's loss written out ('mse' unless --loss huber), so config.json, the manifest and the
    report name it; other tasks keep None (their loss is their own)."""
    if cfg.task == "regression" and cfg.train.loss is None:
        return replace(cfg, train=replace(cfg.train, loss="mse"))
    return cfg


def with_bundle_loss(cfg: FitConfig, manifest: dict[str, Any]) -> FitConfig:
    """``--init-from`` a regression bundle fitted with Huber, without --loss: ``cfg`` with its loss and huber_delta
    (for a strategy trained by the loop; the closed-form ridge probe minimises squared error)."""
    trained = manifest.get("train_config") or {}
    strategy = STRATEGIES.get(cfg.strategy)
    if cfg.task != "regression" or cfg.train.loss is not None or trained.get("loss") != "huber" or \
            (strategy is not None and not strategy.trains_with_loop):
        return cfg
    return replace(cfg, train=replace(cfg.train, loss="huber", huber_delta=trained.get("huber_delta", 1.0)))


def check_bundle_task(manifest: dict[str, Any], cfg: FitConfig, what: str) -> None:
    """ConfigError unless a bundle a fit builds on (``what``: its teacher, or --init-from) was fitted for
    ``cfg.task`` — for regression, on the same target (label column); names both."""
    task = manifest.get("task", "classification")
    if task != cfg.task:
        raise ConfigError(f"{what} is a {task} model but this fit is {cfg.task}; use a bundle fitted for {cfg.task} "
                          "(on the same labels).")
    column = (manifest.get("fit_config") or {}).get("label_column")
    if task == "regression" and column is not None and column != cfg.label_column:
        raise ConfigError(f"{what} predicts the target '{column}' but this fit's target is '{cfg.label_column}' "
                          "(--label-column); use a bundle fitted on this target.")


def bundle_targets(manifest: dict[str, Any], label_map: LabelMap,
                   labels: Sequence[Any] = ()) -> LabelMap | MultiLabelMap | NumericTargets | TagMap:
    """What encodes labels for a saved bundle: its classes, its recorded targets (regression) or its tags (tokens:
    followed by the tags of ``labels`` it lacks, which it never predicts: their entities are scored as missed)."""
    if manifest.get("task") == "tokens":
        unseen = sorted({t for seq in labels if seq for t in seq} - set(label_map.names))
        return TagMap((*label_map.names, *unseen))
    if manifest.get("task") == "regression":
        return NumericTargets(**manifest.get("targets", {}))
    if manifest.get("task") == "multilabel":
        return MultiLabelMap(tuple(label_map.names))
    return label_map


def target_map(task: str, labels: Sequence[str | None], source: str,
               held_out: Sequence[Any] = ()) -> LabelMap | MultiLabelMap | NumericTargets | TagMap:
    """What encodes the training labels for the loaders: class indices, floats with their mean/std, or tag ids
    (tokens: the entity types only ``held_out`` labels have get tags too, so they are scored as missed)."""
    if task == "tokens":
        return TagMap.from_labels(labels, source, held_out)
    if task == "regression":
        return NumericTargets.from_labels(labels, source)
    if task == "multilabel":
        return MultiLabelMap.from_labels(labels, source)
    return LabelMap.from_labels(labels, source)


def text_columns(cfg: FitConfig) -> TextColumns:
    """The CSV/JSONL fields fit reads: a multi-label CSV cell is split on --label-sep ('|' by default)."""
    sep = cfg.label_sep if cfg.label_sep is not None else (DEFAULT_SEP if cfg.task == "multilabel" else None)
    return TextColumns(cfg.text_column, cfg.label_column, sep, tuple(cfg.label_columns), cfg.image_column)


def bundle_columns(manifest: dict[str, Any], text_column: str | None, label_column: str | None,
                   image_column: str | None = None) -> TextColumns:
    """The fields evaluate reads for a bundle: the text, label and image columns fit read (each unless named here;
    'text' and 'label' for a bundle that recorded none); a multi-label bundle reads label sets as it was fitted."""
    recorded = manifest.get("fit_config") or {}
    image = image_column or recorded.get("image_column")
    text_column = text_column or recorded.get("text_column") or "text"
    label_column = label_column or recorded.get("label_column") or "label"
    if manifest.get("task") != "multilabel":
        return TextColumns(text_column, label_column, image=image)
    read = manifest.get("label_fields", {})
    return TextColumns(text_column, label_column, read.get("label_sep") or DEFAULT_SEP,
                       tuple(read.get("label_columns", ())), image)
