"""What `fit --target-data` needs beyond the strategies: the unlabeled target examples and their batch stream.

A top-level module used by api.fit (of the top-level modules it imports only config). The losses live in
strategies/losses.py, the pairing in strategies/domain.py and the resumable stream in train/streams.py; here
--target-data is read without labels (class folders, if any, are ignored: a target's labels are never read),
checked as fit checks its splits (unreadable inputs left out and counted; every finding fatal with --strict),
matched to the training data's modality, and the rules are enforced: a strategy that needs target data refuses
to run without it, and one that does not use it refuses it.
"""
from __future__ import annotations

from typing import Any

from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError, DataError
from transferkit.data.doctor import DataReport, DoctorConfig, diagnose_inputs
from transferkit.data.examples import Examples
from transferkit.data.images import DEFAULT_MAX_PIXELS
from transferkit.data.sources import TextColumns, load_source
from transferkit.strategies import STRATEGIES
from transferkit.train.engine import distributed_launch
from transferkit.train.streams import TargetStream


def target_strategies() -> list[str]:
    """The registered strategies that read --target-data."""
    return [name for name, cls in STRATEGIES.items() if cls.needs_target]


def check_target_rules(cfg: FitConfig, strategy: Any) -> None:
    """ConfigError when --target-data and the strategy do not go together, or the run cannot adapt (token
    classification, several processes)."""
    needs = getattr(strategy, "needs_target", False)
    if cfg.target_data is None and needs:
        raise ConfigError(f"The {strategy.name} strategy needs --target-data UNLABELED_TARGET: the unlabeled inputs "
                          "of the domain to adapt to (a folder of images or clips, or a .csv/.jsonl of texts), "
                          f"e.g. transferkit fit --data SOURCE --target-data TARGET --strategy {strategy.name}.")
    if cfg.target_data is not None and not needs:
        raise ConfigError(f"--target-data is used by --strategy {' or '.join(target_strategies())}, not "
                          f"{strategy.name}; pick one of those or drop --target-data.")
    if cfg.target_data is None:
        return
    if cfg.task == "tokens":  # as given (detected token data: task_choice refuses these strategies for tokens)
        raise ConfigError(f"--strategy {strategy.name} aligns one feature vector per input; token classification "
                          "(one label per word) is not supported: drop --target-data or use --task classification.")
    if distributed_launch():
        raise ConfigError(f"--strategy {strategy.name} trains in one process (its features bypass the DDP wrapper); "
                          "drop --processes / accelerate launch.")


def target_examples(cfg: FitConfig, modality: str) -> tuple[Examples, DataReport]:
    """The target's inputs without labels: the train (and val) part of a source with split folders, never its test
    part (that stays for evaluation). Unreadable inputs are left out and reported."""
    splits = load_source(cfg.target_data, TextColumns(cfg.text_column, cfg.label_column, image=cfg.image_column),
                         labeled=False)
    parts = [p for p in (splits.train, splits.val) if p is not None]
    examples = Examples(parts[0].modality, [x for p in parts for x in p.inputs], None, parts[0].source,
                        [i for p in parts for i in p.ids])
    if examples.modality != modality:
        raise DataError(f"--target-data {cfg.target_data} holds {examples.modality} data but the training data "
                        f"(--data) is {modality}; both domains must be of one kind.")
    if examples.is_tokens:
        raise DataError(f"--target-data {cfg.target_data} holds sentences of words; pass one text per row.")
    report = diagnose_inputs({"target": examples},
                             DoctorConfig(strict=cfg.strict, max_pixels=cfg.max_pixels or DEFAULT_MAX_PIXELS))
    report.raise_if_fatal()
    left_out = set(report.left_out("target"))
    kept = examples.subset([i for i in range(len(examples)) if i not in left_out])
    if len(kept) < 2:
        raise DataError(f"--target-data {cfg.target_data} has {len(kept)} readable input(s); domain adaptation "
                        "needs at least 2 (a batch's feature statistics).")
    kept.max_pixels = report.config.max_pixels  # decoded later with the cap it was checked with
    return kept, report


def target_stream(examples: Examples, spec: Any, cfg: FitConfig, n_train: int, batch_size: int) -> TargetStream:
    """The run's stream of target batches: the labeled batch size, the training augmentation, and the planned
    number of pairs (epochs x labeled batches per epoch) for progress-driven schedules."""
    t = cfg.train
    per_epoch = -(-n_train // batch_size)
    return TargetStream(examples, spec, batch_size, t.seed, total=t.epochs * per_epoch, augment=t.augment,
                        hflip=t.hflip)


def target_summary(examples: Examples, report: DataReport) -> dict[str, Any]:
    """metrics.json entries: how many target inputs adapted the model, which were left out."""
    return {"n_target": len(examples), "target_skipped": report.skipped()}
