"""The only module that wires the layers: fit / evaluate / predict / load, used by the CLI and the estimator.

data -> backbones -> strategies -> train -> evaluate -> export -> serve, each called here in that order.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit import distillation, domain, domain_eval, run_record, task_choice
from transferkit.backbones import DEFAULT_FOR_MODALITY, build_backbone
from transferkit.backbones.features import FeatureCache, extract_features
from transferkit.backbones.text import DEFAULT_MAX_LENGTH, token_counter
from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError, DataError
from transferkit.core.io import atomic_write, atomic_write_json, atomic_write_text
from transferkit.core.runtime import inference_precision, resolve_precision
from transferkit.core.seeding import seed_everything
from transferkit.core.timing import PhaseClock
from transferkit.data.doctor import DataReport, DoctorConfig, diagnose, diagnose_inputs
from transferkit.data.examples import DataSplits, Examples, a_modality, check_modality
from transferkit.data.image_cache import plan_cache
from transferkit.data.images import DEFAULT_MAX_PIXELS
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.sources import TextColumns, load_source
from transferkit.data.splits import held_out_split, subsample_per_class
from transferkit.data.targets import NumericTargets
from transferkit.evaluate.metrics import REPORTS, headline
from transferkit.export.bundle import (
    MANIFEST,
    Bundle,
    load_bundle,
    read_manifest,
    recorded_precision,
    refuse_onnx_export,
    save_bundle,
)
from transferkit.export.recorded import data_record
from transferkit.refit import start_from
from transferkit.serve.output import predict_to_file
from transferkit.serve.predictor import Predictions, Predictor
from transferkit.serve.token_output import TokenPredictions, predict_tokens
from transferkit.strategies import StrategyContext, build_strategy
from transferkit.strategies.linear_probe import LinearProbeConfig, fit_probe_head
from transferkit.tasks import get_task
from transferkit.tasks.model import TransferModel
from transferkit.tasks.multilabel import tune_thresholds
from transferkit.train.checkpoint import unfinished_run
from transferkit.train.config import IMBALANCE_RATIO_FOR_WEIGHTS, TrainConfig
from transferkit.train.data_identity import data_identity, refuse_changed_data
from transferkit.train.engine import Engine, make_engine
from transferkit.train.inference import predict_logits
from transferkit.train.loop import TrainResult, train
from transferkit.train.mixing import build_batch_mixer
from transferkit.train.precision_probe import choose_for_fit
from transferkit.train.selection import LabelFreeSelection

DataInput = str | Path | Examples | DataSplits
EVALUATION_SPLITS = ("train", "val", "test")
@dataclass
class FitResult:
    run_dir: Path
    bundle_dir: Path
    metrics: dict[str, dict[str, Any]]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    main_process: bool = True  # False on the other ranks of a multi-process run: rank 0 wrote the run folder

    def predictor(self) -> Predictor:
        return Predictor.from_bundle(self.bundle_dir)


@dataclass
class PreparedData:
    train: Examples
    val: Examples
    test: Examples | None
    label_map: LabelMap | NumericTargets  # regression: the targets' encoder (floats, mean/std)
    modality: str
    task: str = "classification"


def as_splits(data: DataInput, columns: TextColumns, labeled: bool = True, encoding_errors: str = "strict",
              strict_tags: bool = False) -> DataSplits:
    """``strict_tags`` (fit/evaluate --strict): an I- tag that cannot continue its entity is a DataError."""
    if isinstance(data, DataSplits):
        return data
    if isinstance(data, Examples):
        return DataSplits(train=data)
    return load_source(data, columns, labeled=labeled, encoding_errors=encoding_errors, strict_tags=strict_tags)


def check_data(data: DataInput, cfg: FitConfig, raise_on_fatal: bool = True, split_val: bool = True
               ) -> tuple[DataSplits, DataReport]:
    """Load train/val/test (text read with bad UTF-8 replaced, for the doctor to report) and run the data doctor.
    ``split_val=False``: the caller splits no validation set off the training data (rank), so a one-example class
    is a warning, not a fatal finding.

    Returns the splits without what the report leaves out (unreadable images; duplicates with ``cfg.dedupe``),
    so every epoch sees exactly the usable examples. Fatal findings raise DataError before any training.
    """
    columns = task_choice.text_columns(cfg)  # multi-label: --label-sep / --label-columns
    splits = as_splits(data, columns, encoding_errors="replace", strict_tags=cfg.strict)
    val = as_splits(cfg.val_data, columns, encoding_errors="replace", strict_tags=cfg.strict).train \
        if cfg.val_data else splits.val
    test = as_splits(cfg.test_data, columns, encoding_errors="replace", strict_tags=cfg.strict).train \
        if cfg.test_data else splits.test
    full = DataSplits(splits.train, val, test)
    if full.train.labels is None:
        raise DataError(f"{full.train.source}: training data needs labels.")
    task_choice.check_modality_options(cfg, full.train.modality)  # no --image-size, --mixup... on text or audio
    hints = cfg.task is None  # a task given by name gets no "these labels look like another task's" hints
    cfg, detected = task_choice.resolve_task(cfg, full.train.labels, _init_from_task(cfg))
    report = diagnose(full, DoctorConfig(strict=cfg.strict, dedupe=cfg.dedupe, task=cfg.task, hints=hints,
                                         max_pixels=cfg.max_pixels or DEFAULT_MAX_PIXELS,
                                         max_tokens=DEFAULT_MAX_LENGTH, needs_val_split=val is None and split_val,
                                         clip_seconds=cfg.clip_seconds,
                                         count_tokens=token_counter(cfg.model, cfg.init_from)
                                         if full.train.modality == "text" else None))
    report.stats["task"] = cfg.task  # fit runs the task the doctor checked for; ``detected`` says if it guessed
    if detected:
        report.stats["task_detected"] = detected
    if raise_on_fatal:
        report.raise_if_fatal()
    return report.apply(full), report


def _init_from_task(cfg: FitConfig) -> str | None:
    """The task of the bundle --init-from continues (the default task of the fit), None without one."""
    return read_manifest(Path(cfg.init_from)).get("task", "classification") if cfg.init_from else None


def doctor(data: DataInput, **options: Any) -> DataReport:
    """The data doctor's report on ``data`` (and ``val_data``/``test_data``), the checks `fit` runs first.

    Takes fit's options (strict, dedupe, max_pixels, text_column, label_column, task, ...); never raises on
    findings. Without ``task`` it checks for the task fit would detect (``stats['task']``).
    """
    return check_data(data, FitConfig.from_options(**options), raise_on_fatal=False)[1]


def prepare_data(data: DataInput, cfg: FitConfig) -> PreparedData:
    """Resolve train/val/test, subsample K labels per class, build the label map (regression: the numeric
    targets' encoder), check label sets agree. ``cfg.task`` None: detected from the training labels."""
    columns = task_choice.text_columns(cfg)  # multi-label: --label-sep / --label-columns
    splits = as_splits(data, columns)
    train_set = splits.train
    if train_set.labels is None:
        raise DataError(f"{train_set.source}: training data needs labels.")
    val = as_splits(cfg.val_data, columns).train if cfg.val_data else splits.val
    test = as_splits(cfg.test_data, columns).train if cfg.test_data else splits.test
    if cfg.labels_per_class:  # the K labels are all the user has: validation comes out of them too
        train_set = subsample_per_class(train_set, cfg.labels_per_class, cfg.train.seed)
    if cfg.task is None:
        cfg = task_choice.resolve_task(cfg, train_set.labels, _init_from_task(cfg))[0]
    if val is None:
        train_set, val = held_out_split(train_set, cfg.val_fraction, cfg.train.seed, cfg.task)
    label_map = task_choice.target_map(cfg.task, train_set.labels, train_set.source,
                                       [y for part in (val, test) if part is not None for y in part.labels or []])
    for part in (val, test):
        if part is not None:
            if part.modality != train_set.modality:
                raise DataError(f"{part.source} holds {part.modality} data but the training data is "
                                f"{train_set.modality}.")
            label_map.encode(part.labels or [], part.source)
    return PreparedData(train_set, val, test, label_map, train_set.modality, cfg.task)


def _build_model(cfg: FitConfig, modality: str, n_classes: int, pretrained: bool,
                 names: tuple[str, ...] = ()) -> TransferModel:
    name = DEFAULT_FOR_MODALITY[modality] if cfg.model == "auto" else cfg.model
    clip = cfg.clip_seconds if modality == "audio" else None  # Whisper's encoder is built for the clip length
    backbone = build_backbone(name, pretrained=pretrained, clip_seconds=clip)
    if backbone.modality != modality:
        raise ConfigError(f"Model '{name}' is {a_modality(backbone.modality)} model but the data is {modality}; "
                          f"use e.g. --model {DEFAULT_FOR_MODALITY[modality]}.")
    if modality == "image":
        backbone.preprocessing = backbone.preprocessing.with_image_size(cfg.image_size)
    if modality == "audio":  # saved in the bundle's spec: predict crops/pads to the same length
        backbone.preprocessing = backbone.preprocessing.with_clip_seconds(cfg.clip_seconds)
    task = get_task(cfg.task or "classification")
    head = task.head(backbone.feature_dim, n_classes, label_smoothing=cfg.train.label_smoothing, names=names,
                     loss=cfg.train.loss, huber_delta=cfg.train.huber_delta)
    model = TransferModel(backbone, head, task)
    return model.to(memory_format=torch.channels_last) if modality == "image" else model


def _feature_source(model: TransferModel, data: PreparedData, cfg: FitConfig, precision: str):
    cache = FeatureCache(Path(cfg.cache_dir) if cfg.cache_dir else None)
    backbone = model.backbone

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        examples = {"train": data.train, "val": data.val, "test": data.test}[split]
        encoded = data.label_map.encode(examples.labels, examples.source)
        labels = np.array([t for seq in encoded for t in seq] if data.task == "tokens" else encoded)  # per word
        if backbone.weights_sha256 is None:  # random weights: nothing worth caching
            loader = make_loader(examples, backbone.preprocessing, None, 64)
            return extract_features(backbone, loader, precision, f"{split} features"), labels
        key = cache.key(backbone.weights_sha256, backbone.preprocessing.to_dict(), examples.fingerprint(), precision)
        loader_fn = lambda: make_loader(examples, backbone.preprocessing, None, 64)  # noqa: E731
        x = cache.get_or_compute(key, lambda: extract_features(backbone, loader_fn(), precision, f"{split} features"))
        return x, labels

    return features


@dataclass
class SplitEvaluation:
    metrics: dict[str, Any]
    probabilities: np.ndarray
    labels: np.ndarray


def _evaluate_split(model: TransferModel, examples: Examples, label_map: LabelMap, spec, precision: str,
                    progress: bool) -> SplitEvaluation:
    loader = make_loader(examples, spec, label_map, 64, by_length=True)  # texts: less padding; logits in order
    logits, labels = predict_logits(model, loader, precision, progress=progress, desc=f"evaluate {examples.source}")
    probabilities = model.task.probabilities(torch.from_numpy(logits)).numpy()
    extra = {"thresholds": model.head.thresholds()} if model.task.name == "multilabel" else {}  # per-label table
    metrics = REPORTS[model.task.name](labels, model.task.decode(logits), label_map.names, probabilities, **extra)
    return SplitEvaluation(metrics, probabilities, labels)


def _before_adaptation(model: TransferModel, ctx: StrategyContext, data: PreparedData, strategy,
                       cfg: FitConfig) -> dict[str, Any] | None:
    """The frozen-feature linear probe's metrics on the report's split: the "before" of before-vs-after.

    Computed before training, while the backbone still holds its pretrained weights (features are cached, so
    strategies that probe anyway pay nothing extra). None when it would compare a model with itself. Tokens: the
    per-word logistic probe on per-word features (rows and positions as TokensTask lays them out); multi-label:
    its per-label scores too, for mAP.
    """
    if not cfg.baseline or not strategy.uses_pretrained_weights or strategy.name == "linear-probe":
        return None
    split = "test" if data.test is not None else "val"
    names = data.label_map.names
    head = model.task.head(model.backbone.feature_dim, len(data.label_map), names=names)
    fit_probe_head(head, ctx, LinearProbeConfig())
    x, y = ctx.features(split)
    tokens = model.task.name == "tokens"
    with torch.inference_mode():
        logits = (head.linear if tokens else head)(torch.from_numpy(x).float())
        predicted = model.task.decode(logits).numpy()
    if tokens:  # targets [words, 2]: tag id, position of the word in its sentence
        sentences = (data.test if split == "test" else data.val).inputs
        y = np.stack([y, np.concatenate([np.arange(len(words)) for words in sentences])], axis=1)
    scores = model.task.probabilities(logits).numpy() if model.task.name == "multilabel" else None
    return {"split": split, **REPORTS[model.task.name](y, predicted, names, scores)}


def fit(data: DataInput | None = None, config: FitConfig | None = None, resume: str | Path | None = None,
        on_epoch_end: Any = None, **options: Any) -> FitResult:
    """Adapt a pretrained backbone to ``data``; returns metrics and the run folder holding the bundle.

    ``resume=RUN_DIR`` continues a stopped run from its newest complete checkpoint, with the data and
    configuration recorded in RUN_DIR/config.json (pass ``data`` only if it was not a path).
    ``on_epoch_end(epoch, row)``: called with each validated epoch's history row (tune reports it to Optuna; an
    exception it raises stops the run before any bundle is written).
    """
    if resume is not None:
        if config is not None or options:
            raise ConfigError(f"resume continues a run with the settings in {Path(resume) / 'config.json'}; "
                              f"drop {', '.join(sorted(options)) or 'config'}.")
        data, cfg = _resume_inputs(Path(resume), data)
    else:
        cfg = config or FitConfig.from_options(**options)
        if data is None:
            raise ConfigError("fit needs data: a folder, a .csv/.jsonl file or builtin:NAME (or resume=RUN_DIR).")
    start = time.perf_counter()
    seed_everything(cfg.train.seed)
    if cfg.strategy == "auto":  # backbone, strategy and image size chosen after the data is read (transferkit.auto)
        from transferkit import auto  # here: auto imports rank, which imports this module

        auto.check_request(cfg)
    else:
        strategy = build_strategy(cfg.strategy, cfg.strategy_options)
        domain.check_target_rules(cfg, strategy)  # --target-data with dann/coral/mmd only, and they need it
    checked, data_report = check_data(data, cfg)  # the data doctor: unreadable inputs left out, fatal findings stop
    cfg = replace(cfg, task=data_report.stats["task"])  # as given, or detected from the labels (and then said so)
    if cfg.init_from:  # a Huber bundle goes on with Huber unless --loss says otherwise
        cfg = task_choice.with_bundle_loss(cfg, read_manifest(Path(cfg.init_from)))
    cfg = task_choice.with_task_loss(cfg)  # regression: 'mse' unless --loss huber, recorded as such
    prepared = prepare_data(checked, replace(cfg, val_data=None, test_data=None))
    clock = PhaseClock(start, "data")  # where the wall time goes: metrics.json "phase_seconds"
    auto_record = None
    if cfg.strategy == "auto":
        cfg, auto_record = auto.resolve(cfg, prepared.train, prepared.val, prepared.test, prepared.task, start,
                                        cfg.train.progress)
        strategy = build_strategy(cfg.strategy, cfg.strategy_options)
        clock.lap("auto")
    cfg = distillation.with_teacher_image_size(cfg, prepared.modality)
    init = start_from(cfg.init_from, cfg.model, cfg.image_size, prepared.modality, strategy,
                      cfg.clip_seconds) if cfg.init_from else None
    if init is not None:  # fit --init-from BUNDLE: its backbone and head; its classes first, then the new ones
        prepared.label_map = init.labels(prepared.label_map, cfg)
    target, target_report = domain.target_examples(cfg, prepared.modality) if cfg.target_data else (None, None)
    identity = data_identity({"train": prepared.train, "val": prepared.val, "test": prepared.test, "target": target},
                             prepared.label_map.names)
    if resume is not None:  # only on the data it started with: else a DataError that says what changed
        recorded = json.loads((Path(resume) / "config.json").read_text()).get("data_identity")
        refuse_changed_data(Path(resume), recorded, identity, data_reference(data),
                            has_bundle=(Path(resume) / "bundle" / MANIFEST).is_file())
    model = init.model(prepared.label_map, cfg.train) if init is not None else \
        _build_model(cfg, prepared.modality, len(prepared.label_map), strategy.uses_pretrained_weights,
                     prepared.label_map.names)
    if isinstance(prepared.label_map, NumericTargets):  # the head learns standardised targets, answers in units
        model.head.set_target_scale(prepared.label_map.mean, prepared.label_map.std)
    engine = make_engine()  # several processes under accelerate launch (train.engine); else this one alone
    device = engine.device
    model.to(device)
    precision, feature_precision, probes = _precisions(cfg, model, prepared, strategy, engine)
    inference = inference_precision(cfg.train.precision)  # what the bundle predicts in: evaluate with it
    run_dir = Path(resume) if resume is not None else Path(cfg.out or f"runs/{cfg.strategy}-{datetime.now():%Y%m%d-%H%M%S}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None and engine.is_main:  # written first, so a killed run can be resumed from its folder alone
        _claim_run_dir(run_dir)
        atomic_write_json(run_dir / "config.json", {"data": data_reference(data), "data_identity": identity,
                                                    **asdict(cfg), **({"auto": auto_record} if auto_record else {})})
    elif resume is not None:  # a resumed auto run keeps the record of its choice
        auto_record = json.loads((run_dir / "config.json").read_text()).get("auto")
    if engine.is_main:
        atomic_write_json(run_dir / "data_report.json", data_report.to_dict())

    imbalance, class_weight = _resolve_class_weight(prepared, cfg.train)
    model.head.set_class_weight(None if class_weight is None else torch.from_numpy(class_weight))
    teacher = distillation.load_teacher(cfg, prepared.label_map.names, model, strategy)
    unlabeled, unlabeled_report = distillation.unlabeled_examples(cfg, prepared.modality, strategy)
    ctx = StrategyContext(n_classes=len(prepared.label_map), seed=cfg.train.seed, class_weight=class_weight,
                          features=_feature_source(model, prepared, cfg, feature_precision), teacher=teacher,
                          unlabeled=unlabeled, target=None if target is None else domain.target_stream(
                              target, model.backbone.preprocessing, cfg, len(prepared.train),
                              cfg.train.batch_size_for(len(prepared.train), model.task.batch_size)))
    clock.lap("model")
    before = _before_adaptation(model, ctx, prepared, strategy, cfg) if engine.is_main else None
    clock.lap("before_adaptation")
    domain_run = domain_eval.start(model, ctx, prepared.val, prepared.label_map, target, domain_eval.read_target_test(
        cfg), inference, cfg.train.seed) if target is not None and cfg.task == "classification" else None  # DEV
    seed_everything(cfg.train.seed)
    strategy.prepare(model, ctx)
    spec = model.backbone.preprocessing
    result = TrainResult()
    if strategy.trains_with_loop:
        result = _train(model, strategy, ctx, prepared, cfg, run_dir, resume is not None, on_epoch_end, engine,
                        domain_run.selection if domain_run is not None else None, precision)
    clock.lap("train")
    engine.close()
    if not engine.is_main:  # rank 0 evaluates and writes the bundle and report
        return FitResult(run_dir, run_dir / "bundle", {}, result.history, time.perf_counter() - start, False)
    n_trainable = _trainable_count(model, strategy)  # before finalize: merging adapters removes their parameters
    adapter = strategy.adapter_state(model)
    model = strategy.finalize(model)
    thresholds = tune_multilabel_thresholds(model, prepared, inference) if cfg.task == "multilabel" else None

    evaluations = {name: _evaluate_split(model, part, prepared.label_map, spec, inference, cfg.train.progress)
                   for name, part in (("test", prepared.test), ("val", prepared.val)) if part is not None}
    metrics = {name: e.metrics for name, e in evaluations.items()}
    clock.lap("evaluate")
    n_total = sum(p.numel() for p in model.parameters())
    summary = {**metrics, "trainable_params": n_trainable, "total_params": n_total,
               "n_train_used": len(prepared.train), "n_skipped": data_report.n_skipped, "best_epoch": result.best_epoch,
               "train_seconds": round(result.seconds, 2), "wall_seconds": round(time.perf_counter() - start, 2)}
    manifest = run_record.manifest(cfg, model, prepared, strategy, spec, summary, inference)
    manifest["data"] = data_record(data, cfg.val_data, cfg.test_data)  # export and --init-from find it again
    if thresholds is not None:  # multi-label: the per-label decision thresholds (folded into the head too)
        manifest["thresholds"] = dict(zip(prepared.label_map.names, thresholds))
        manifest["label_fields"] = {"label_sep": cfg.label_sep, "label_columns": list(cfg.label_columns)}
    if init is not None:
        manifest["init_from"] = init.record(prepared.label_map)
    bundle_dir = save_bundle(run_dir / "bundle", model, manifest, adapter)
    summary["batch_size_used"] = cfg.train.batch_size_for(len(prepared.train), model.task.batch_size)
    if result.processes > 1 or result.global_batch not in (0, summary["batch_size_used"]):  # say which batch
        summary.update(batch_size_used=result.global_batch // result.processes, processes=result.processes,
                       global_batch=result.global_batch)
    summary["precision_used"], summary["inference_precision"] = precision, inference
    summary["torch_threads"] = torch.get_num_threads()  # the CLI's share of the cores (transferkit.core.threads)
    if probes:  # --precision auto: what the measured probe chose per phase, and its step times
        summary["precision_probe"] = {**probes, "feature_precision": feature_precision}
    if result.data_path:
        summary["data_path"] = result.data_path
    summary["imbalance"] = imbalance
    summary["task"] = cfg.task
    if manifest["backbone"].get("pretraining"):  # --model OUT of `transferkit pretrain`: which pretraining
        summary["pretraining"] = manifest["backbone"]["pretraining"]
    if auto_record is not None:
        summary["auto"] = auto_record
    if data_report.stats.get("task_detected"):
        summary["task_detected"] = data_report.stats["task_detected"]
    if result.resumed_from:
        summary["resumed_from"] = result.resumed_from
    if result.diverged:  # stopped at a NaN/inf loss: the bundle holds the best epoch before it
        summary["diverged"] = result.diverged
    if before is not None:
        summary["before_adaptation"] = headline(before)
    if unlabeled_report is not None:  # --unlabeled-data: its unreadable inputs are left out and counted too
        summary.update(n_unlabeled=len(ctx.unlabeled), unlabeled_skipped=unlabeled_report.skipped(),
                       n_skipped=data_report.n_skipped + unlabeled_report.n_skipped)
    if target is not None:  # --target-data: how many target inputs adapted the model, which were left out
        summary.update(domain.target_summary(target, target_report))
    domain_report = None
    if domain_run is not None:  # the label-free selection's scores, and --target-test for the report only
        summary["domain"], domain_report = domain_eval.finish(domain_run, model, result, prepared.label_map,
                                                              strategy.name, inference, cfg.target_oracle)
    if ctx.teacher is not None:
        summary.update(distillation.teacher_summary(ctx.teacher, model, prepared, spec, inference, cfg.train.progress))
    if init is not None:  # old vs new model on new and old test data: forgetting, made visible
        new_test = ("test", prepared.test) if prepared.test is not None else ("val", prepared.val)
        summary["init_from"] = init.compare(model, prepared.label_map, new_test, inference)
    clock.lap("finish")  # bundle, comparisons (teacher, domain, forgetting)
    summary.update(phase_seconds=clock.laps, wall_seconds=round(time.perf_counter() - start, 2))  # report: after
    run_record.write_run(run_dir, cfg, prepared, result, summary, strategy, evaluations, before, data_report,
                         domain_report)
    return FitResult(run_dir, bundle_dir, metrics, result.history, time.perf_counter() - start)


def tune_multilabel_thresholds(model: TransferModel, data: PreparedData, precision: str) -> list[float]:
    """Per-label decision thresholds that maximise each label's F1 on the validation split, folded into the head
    (transferkit.tasks.multilabel); returned for the manifest."""
    logits, targets = predict_logits(model, make_loader(data.val, model.backbone.preprocessing, data.label_map, 64),
                                     precision)
    thresholds = tune_thresholds(model.task.probabilities(torch.from_numpy(logits)).numpy(), targets)
    model.head.set_thresholds(thresholds)
    return [float(t) for t in thresholds]


def _train(model: TransferModel, strategy, ctx: StrategyContext, data: PreparedData, cfg: FitConfig, run_dir: Path,
           resume: bool, on_epoch_end: Any = None, engine: Engine | None = None,
           selection: LabelFreeSelection | None = None, precision: str | None = None) -> TrainResult:
    spec, t = model.backbone.preprocessing, cfg.train
    train_set, targets = (data.train, data.label_map) if ctx.unlabeled is None else \
        distillation.transfer_set(data.train, ctx.unlabeled, data.label_map, model.task)  # unlabeled: no hard target
    # images: decoded and resized once per run when they fit in memory (data.image_cache), else in workers
    plan = plan_cache([(train_set, t.augment), (data.val, "none")], spec) if data.modality == "image" else None
    cache = plan is not None and plan.enabled
    train_loader = make_loader(train_set, spec, targets, t.batch_size_for(len(train_set), model.task.batch_size),
                               shuffle_seed=t.seed, augment=t.augment, hflip=t.hflip, balanced=t.sampler == "balanced",
                               cache=cache)
    val_loader = make_loader(data.val, spec, data.label_map, 64, cache=cache, by_length=True)
    mixer = build_batch_mixer(t, len(data.label_map)) if data.modality == "image" else None
    result = train(model, strategy, ctx, train_loader, val_loader, t, run_dir, resume=resume, batch_transform=mixer,
                   on_epoch_end=on_epoch_end, engine=engine, selection=selection, precision=precision)
    if plan is not None:
        result.data_path = {**plan.to_dict(), "workers": train_loader.num_workers,
                            "note": plan.describe(train_loader.num_workers)}
    return result


def _precisions(cfg: FitConfig, model: TransferModel, prepared: PreparedData, strategy, engine: Engine
                ) -> tuple[str, str, dict[str, Any]]:
    """(training, feature-extraction precision, probe records): measured for 'auto' (train.precision_probe);
    several processes (DDP) keep the device rule, so that every rank trains in the same precision."""
    device = engine.device
    if engine.num_processes > 1:
        precision = resolve_precision(cfg.train.precision, device)
        return precision, precision, {}
    batch = cfg.train.batch_size_for(len(prepared.train), model.task.batch_size)
    return choose_for_fit(cfg.train.precision, model, prepared.train, batch, device, model.backbone.name,
                          strategy.trains_with_loop)


def _resolve_class_weight(data: PreparedData, t: TrainConfig) -> tuple[dict[str, Any], np.ndarray | None]:
    """Resolve class_weight ('auto' -> balanced at a 1.5x largest/smallest class ratio): (report entry, weights).
    Regression has no classes: no weights ('balanced' is refused earlier, by task_choice)."""
    if data.task in ("regression", "tokens", "multilabel"):  # tokens, multilabel: 'balanced' is refused too
        return {"class_weight": "none", "class_weight_setting": t.class_weight, "sampler": t.sampler,
                "task": data.task}, None
    counts = np.bincount(data.label_map.encode(data.train.labels, data.train.source), minlength=len(data.label_map))
    present = counts[counts > 0]
    ratio = float(present.max() / present.min())
    policy = t.class_weight
    if policy == "auto":
        policy = "balanced" if ratio >= IMBALANCE_RATIO_FOR_WEIGHTS and t.sampler != "balanced" else "none"
    weight = None
    if policy == "balanced":  # n / (K * count): the scikit-learn definition; absent classes get 0
        weight = np.where(counts > 0, counts.sum() / (len(present) * np.maximum(counts, 1)), 0.0)
    report = {"largest_to_smallest": round(ratio, 3), "class_weight": policy, "class_weight_setting": t.class_weight,
              "sampler": t.sampler}
    return report, weight


def _claim_run_dir(run_dir: Path) -> None:
    """A fresh run may reuse a finished run's folder, but never silently discards an unfinished run's checkpoints."""
    checkpoints = run_dir / "checkpoints"
    if unfinished_run(checkpoints):
        raise ConfigError(f"{run_dir} holds checkpoints of a run that did not finish; continue it with "
                          f"`transferkit fit --resume {run_dir}`, or pick another --out.")
    shutil.rmtree(checkpoints, ignore_errors=True)


def data_reference(data: DataInput | None) -> str | None:
    """How config.json records the data: an absolute path or builtin:NAME; None for in-memory data."""
    if isinstance(data, (str, Path)):
        text = str(data)
        return text if text.startswith("builtin:") else str(Path(text).resolve())
    return None


def _resume_inputs(run_dir: Path, data: DataInput | None) -> tuple[DataInput, FitConfig]:
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} is not a run folder that can be resumed: {config_file} is missing. "
                          f"Point --resume at the --out folder of an earlier `transferkit fit`.")
    saved = json.loads(config_file.read_text())
    recorded = saved.pop("data", None)
    saved.pop("data_identity", None)  # checked once the data is read (refuse_changed_data)
    saved.pop("auto", None)  # what --strategy auto chose: read back by _recorded_auto for the resumed run's record
    if data is None and recorded is None:
        raise ConfigError(f"{config_file} does not record the data (it was passed in memory); pass it again: "
                          f"fit(data, resume=...).")
    saved["train"] = TrainConfig(**saved["train"])
    return (data if data is not None else recorded), FitConfig(**saved)


def _trainable_count(model: TransferModel, strategy) -> int:
    if not strategy.trains_with_loop:  # the closed-form head is what was fitted
        return sum(p.numel() for p in model.head.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load(bundle: str | Path) -> Bundle:
    return load_bundle(Path(bundle))


def _labeled_split(data: DataInput, split: str, columns: TextColumns, doctor: DoctorConfig,
                   modality: str) -> tuple[Examples, DataReport, str]:
    """The split to score, read as fit reads it, without the inputs fit would leave out (DataError if fatal), and
    its name: ``split`` for a source with train/val/test parts, "all" for a single-split source (scored whole).
    Data of another ``modality`` than the bundle's is a DataError, as in predict."""
    if split not in EVALUATION_SPLITS:
        raise ConfigError(f"The 'split' parameter of evaluate must be one of {', '.join(EVALUATION_SPLITS)}. "
                          f"Got {split!r} instead.")
    splits = as_splits(data, columns, encoding_errors="replace", strict_tags=doctor.strict)
    has_splits = splits.val is not None or splits.test is not None
    examples = splits.get(split) if has_splits else splits.train
    if not has_splits:
        split = "all"
    if examples is None:
        raise DataError(f"{splits.train.source} has no '{split}' split; choose one of train, val, test that exists.")
    check_modality(examples, modality)
    if examples.labels is None:
        raise DataError(f"{examples.source}: evaluation needs labels.")
    report = diagnose_inputs({split: examples}, doctor)
    report.raise_if_fatal()
    left_out = set(report.left_out(split))
    if len(left_out) == len(examples):
        raise DataError(f"{examples.source}: none of its {len(examples)} inputs can be read (e.g. "
                        f"{report.skipped()[0]['path']}: {report.skipped()[0]['reason']}); nothing to evaluate.")
    return examples.subset([i for i in range(len(examples)) if i not in left_out]), report, split


def _training_data_note(manifest: dict[str, Any], data: DataInput, split: str) -> str | None:
    """A warning when a single-split source scored whole is the very data the bundle was fitted on."""
    recorded = (manifest.get("data") or {}).get("source")
    if split != "all" or recorded is None or data_reference(data) != recorded:
        return None
    return (f"{recorded} is the data this bundle was trained on, scored whole: the scores include its training and "
            "validation examples, so they are not a held-out estimate. Evaluate on data the model has not seen "
            "(a test folder or file, or a source with a test/ split).")


def evaluate(bundle: str | Path, data: DataInput, split: str = "test", text_column: str | None = None,
             label_column: str | None = None, progress: bool = True, strict: bool = False,
             image_column: str | None = None) -> dict[str, Any]:
    """Metrics of a saved bundle on labeled data (a split of a multi-split source, or the whole source); the
    columns default to those the bundle was fitted on (``text``/``label`` when it recorded none).

    Inputs fit would leave out (unreadable or refused images) are left out here too, listed in ``skipped`` and
    counted in ``n_skipped``; ``strict`` makes them (and every other per-input finding) a DataError.
    """
    refuse_onnx_export(Path(bundle), "evaluate")
    loaded = load_bundle(Path(bundle))
    spec = loaded.preprocessing
    doctor = DoctorConfig(strict=strict, max_tokens=spec.max_length if spec.modality == "text" else None)
    columns = task_choice.bundle_columns(loaded.manifest, text_column, label_column, image_column)  # as fitted
    examples, report, split = _labeled_split(data, split, columns, doctor, spec.modality)
    precision = recorded_precision(loaded.manifest, loaded.path / MANIFEST)  # as predict and serve use it
    targets = task_choice.bundle_targets(loaded.manifest, loaded.label_map, examples.labels)  # regression: floats
    metrics = _evaluate_split(loaded.model, examples, targets, spec, precision, progress).metrics
    skipped = report.skipped()
    left_out = {item["path"] for item in skipped}
    note = _training_data_note(loaded.manifest, data, split)
    return {**metrics, "split": split, "data": examples.source, "n_skipped": report.n_skipped, "skipped": skipped,
            "warnings": [f.to_dict() for f in report.findings if f.where not in left_out],
            **({"note": note} if note else {}), **({"image_column": examples.image_column} if examples.image_column
                                                   else {})}


def predict(bundle: str | Path, data: DataInput, out: str | Path | None = None, text_column: str | None = None,
            progress: bool = True, runtime: str = "auto", top_k: int | None = None, batch_size: int = 64,
            strict: bool = False, image_column: str | None = None, int8: bool = False
            ) -> Predictions | TokenPredictions:
    """Predict every input of ``data`` (labels not needed) with the bundle's own preprocessing, batch by batch;
    with ``out``, stream CSV/JSONL rows (label, score, optional top-k; an ``error`` for unreadable inputs) to it.
    ``runtime``: torch, onnx (an exported bundle, or a PyTorch bundle through an ONNX export of it made once into
    ``$TRANSFERKIT_CACHE/onnx``), or auto (onnx when the folder holds model.onnx or ``int8`` is asked for).
    ``int8``: through an int8 ONNX model (a CNN's static int8 calibrates on the bundle's training inputs when readable,
    else on inputs spread over ``data``). ``strict``: any unreadable input is a DataError naming them, and ``out`` is
    not written. ``image_column``: a table's column of image paths (default: the one the bundle was fitted on, else
    a text column holding them); ``text_column`` likewise defaults to the bundle's own ('text')."""
    manifest = read_manifest(Path(bundle))
    columns = task_choice.bundle_columns(manifest, text_column, None, image_column)
    splits = as_splits(data, TextColumns(columns.text, "label", image=columns.image), labeled=False)
    examples = _concat([p for p in (splits.train, splits.val, splits.test) if p is not None])
    predictor = Predictor.from_bundle(Path(bundle), runtime=runtime, batch_size=batch_size, int8=int8,
                                      calibration=examples)
    if not predictor.task.per_word and examples.is_tokens:  # a raw .txt (or CoNLL) for a text model: the line's text,
        examples = Examples("text", list(examples.ids), None, examples.source, lines=examples.lines)  # as in a CSV
    if predictor.task.per_word:  # a tag per word: serve.token_output
        return predict_tokens(predictor, examples, Path(out) if out is not None else None, top_k, progress)
    return predict_to_file(predictor, examples, Path(out) if out is not None else None, top_k, progress, strict)


def export(bundle: str | Path, out: str | Path, format: str = "onnx", int8: bool = False, opset: int = 17) -> dict:
    """Export a bundle to ``out`` as a new bundle for another runtime (ONNX), checked for parity on 100 inputs;
    ``int8`` quantizes it with onnxruntime and measures the accuracy it costs. Returns the manifest's entry."""
    if format != "onnx":
        raise ConfigError(f"The 'format' parameter of export must be 'onnx'. Got {format!r} instead.")
    from transferkit.export.onnx import export_onnx

    return export_onnx(Path(bundle), Path(out), int8=int8, opset=opset)


def _concat(parts: list[Examples]) -> Examples:
    if len(parts) == 1:
        return parts[0]
    labels = None if any(p.labels is None for p in parts) else [y for p in parts for y in p.labels]
    return Examples(parts[0].modality, [x for p in parts for x in p.inputs], labels, parts[0].source,
                    [i for p in parts for i in p.ids])


def write_predictions(path: Path, predictions: Predictions, id_field: str) -> None:
    rows = [{id_field: i, "label": label, "score": round(float(s), 6)}
            for i, label, s in zip(predictions.ids, predictions.labels, predictions.scores)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[id_field, "label", "score"])
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
