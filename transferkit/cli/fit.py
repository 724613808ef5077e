"""`transferkit fit`: its flags, and the lines it prints after a run (metrics, domains, hints, left-out inputs).

Imports typer/rich and transferkit.cli.common at start; transferkit.api (torch and the rest) only inside the
command body, so that `transferkit --help` stays light.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from transferkit.cli import cores
from transferkit.cli.app import app
from transferkit.cli.common import (
    CLIP_SECONDS_HELP,
    HUBER_DELTA_HELP,
    IMAGE_COLUMN_HELP,
    LABEL_COLUMNS_HELP,
    LABEL_SEP_HELP,
    LOSS_HELP,
    STRATEGY_FLAGS,
    TASK_HELP,
    _parse_options,
    _print_image_columns,
    _print_left_out,
    console,
)

FIT_EXAMPLES = """
Examples:

    transferkit fit --data builtin:fashion-mnist --labels-per-class 100 --image-size 64 --out runs/fm

    transferkit fit --data news.csv --strategy auto --budget-minutes 20   # rank backbones, choose, say why

    transferkit fit --data photos/ --strategy partial --unfreeze 3 --augment randaugment --hflip 0.5

    transferkit fit --data photos/ --strategy finetune --warmup-head-epochs 2 --bn train

    transferkit fit --data reviews.csv --text-column body --label-column stars --strategy lp-ft

    transferkit fit --data valence.csv --task regression --model minilm --strategy linear-probe

    transferkit fit --data tags.csv --task multilabel --label-sep "|" --model minilm

    transferkit fit --data train.conll --model minilm --strategy finetune --epochs 4   # NER (--task tokens)

    transferkit fit --data photos/ --strategy l2sp -o alpha=0.1 -o beta=0.01 --class-weight balanced

    transferkit fit --data news.csv --model minilm-l3 --strategy distill --teacher runs/big/bundle

    transferkit fit --data clips/ --model whisper-tiny-en --strategy linear-probe --clip-seconds 3   # audio

    transferkit fit --data mnist/ --target-data uci_unlabeled/ --strategy dann --target-test uci_test/   # domains

    transferkit fit --resume runs/fm        # continue a killed or stopped run exactly

    transferkit fit --init-from runs/fm/bundle --data new_photos/ --epochs 3 --out runs/fm2   # re-fine-tune
"""

@app.command(epilog=FIT_EXAMPLES)
def fit(
    data: str | None = typer.Option(None, "--data", help="Image or audio folder, .csv/.jsonl of texts, or builtin:NAME."),
    model: str | None = typer.Option(None, help="Backbone: a name from `list models`, timm:NAME or hf:ID."),
    strategy: str | None = typer.Option(None, help="How to adapt: a name from `list strategies`, or auto (ranks the "
                                        "backbones, picks backbone and strategy from the data) [default: finetune]."),
    task: str | None = typer.Option(None, help=TASK_HELP),
    out: Path | None = typer.Option(None, help="Run folder (bundle, metrics, report, checkpoints, TensorBoard)."),
    resume: Path | None = typer.Option(None, help="Continue the run in this folder from its newest checkpoint."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (early stopping may end sooner)."),
    labels_per_class: int | None = typer.Option(None, help="Stratified subsample: K training labels per class."),
    seed: int | None = typer.Option(None, help="Seed for splits, subsampling, init and shuffling."),
    val_data: str | None = typer.Option(None, help="Validation data (default: a stratified split of --data)."),
    test_data: str | None = typer.Option(None, help="Test data (default: the source's own test split, if any)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL column with the text [default: text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL column with the label [default: label]."),
    label_sep: str | None = typer.Option(None, help=LABEL_SEP_HELP),
    label_columns: str | None = typer.Option(None, help=LABEL_COLUMNS_HELP),
    image_size: int | None = typer.Option(None, help="Resize images to PX (default: the backbone's size)."),
    clip_seconds: float | None = typer.Option(None, help=CLIP_SECONDS_HELP),
    batch_size: int | None = typer.Option(None, help="Training batch size [default: 8 below 1,000 examples, else 32; "
                                                     "tokens: 8 sentences]."),
    grad_accum: int | None = typer.Option(None, help="Micro-batches per optimizer step [default: 1]."),
    ema: float | None = typer.Option(None, help="Keep an exponential moving average of the weights (decay, e.g. 0.99)."),
    lr: float | None = typer.Option(None, help="Head learning rate; backbone rates derive from it [default: 1e-3]."),
    weight_decay: float | None = typer.Option(None, help="AdamW/SGD weight decay [default: 0.05]."),
    optimizer: str | None = typer.Option(None, help="adamw | sgd [default: adamw]."),
    patience: int | None = typer.Option(None, help="Early-stopping patience in epochs, 0 = off [default: 5]."),
    label_smoothing: float | None = typer.Option(None, help="Label smoothing [default: 0]."),
    loss: str | None = typer.Option(None, help=LOSS_HELP),
    huber_delta: float | None = typer.Option(None, help=HUBER_DELTA_HELP),
    augment: str | None = typer.Option(None, help="Image augmentation: none | light | randaugment | trivial [light]; "
                                       "audio: any but none = random crops, shift, gain, noise, SpecAugment masks."),
    hflip: float | None = typer.Option(None, help="Horizontal-flip probability [default: 0; 0.5 for photos]."),
    mixup: float | None = typer.Option(None, help="Mixup alpha, images (0 = off)."),
    cutmix: float | None = typer.Option(None, help="CutMix alpha, images (0 = off)."),
    class_weight: str | None = typer.Option(None, help="auto | none | balanced [auto: balanced from a 1.5x ratio]."),
    sampler: str | None = typer.Option(None, help="shuffle | balanced (each class drawn equally often)."),
    bn: str | None = typer.Option(None, help="Batch-norm statistics: freeze | train [strategy default]."),
    unfreeze: float | None = typer.Option(None, help="partial: train the last N blocks, or a fraction of them."),
    warmup_head_epochs: int | None = typer.Option(None, help="finetune/lp-ft: epochs training the head alone first."),
    strategy_option: list[str] = typer.Option([], "--option", "-o", help="Strategy option KEY=VALUE (repeatable)."),
    teacher: str | None = typer.Option(None, help="distill: the bundle/ folder of a fitted teacher model."),
    init_from: str | None = typer.Option(None, help="Continue from this bundle/ (weights + head) on new data; new "
                                         "classes extend the head; the report compares old and new model."),
    unlabeled_data: str | None = typer.Option(None, help="distill: extra inputs without labels, labeled by the teacher."),
    target_data: str | None = typer.Option(None, help="dann/coral/mmd: unlabeled inputs of the target domain (a folder "
                                           "of images or clips, or a .csv/.jsonl of texts; labels are not read)."),
    target_test: str | None = typer.Option(None, help="With --target-data: labeled target test data, scored for the "
                                           "report only (source-only vs adapted); epochs are chosen without it."),
    target_oracle: float | None = typer.Option(None, help="With --target-test: a target oracle's accuracy on it; the "
                                               "report then states the share of the source-only -> oracle gap closed."),
    max_minutes: float | None = typer.Option(None, help="Time budget: stop cleanly, keep the best weights."),
    budget_minutes: float | None = typer.Option(None, help="--strategy auto: the whole run's time budget; the choice "
                                                "skips what would not fit, and training stops within it."),
    checkpoint_steps: int | None = typer.Option(None, help="Checkpoint every N steps too (always each epoch)."),
    precision: str | None = typer.Option(None, help="auto | fp32 | bf16."),
    strict: bool = typer.Option(False, "--strict", help="Stop on any data-doctor finding, not only fatal ones."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Leave out later copies of duplicate inputs (train < val < test)."),
    max_pixels: int | None = typer.Option(None, help="Refuse images decoding to over N pixels, ~4N bytes [default: 250 M]."),
    processes: int | None = typer.Option(None, help="Train in N processes (DDP through accelerate: CPU/gloo or one "
                                         "GPU each); --batch-size is per process, the global batch N times it."),
) -> None:
    """Fit a model: pick a backbone, apply a transfer strategy, evaluate, and save a bundle."""
    cores.claim()  # torch threads from the idle cores, before torch loads (transferkit.core.threads)
    from transferkit import api
    from transferkit.core.errors import ConfigError

    given = {k: v for k, v in locals().items() if v is not None and k not in ("data", "api", "ConfigError")}
    given.pop("strategy_option")
    _launch_if_asked(given.pop("processes", None))
    for flag in ("strict", "dedupe"):  # off unless given, so that --resume sees no settings passed
        if not given[flag]:
            given.pop(flag)
    options = {k: v for k, v in given.items() if k not in STRATEGY_FLAGS}
    strategy_options = {**_parse_options(strategy_option), **{k: given[k] for k in STRATEGY_FLAGS if k in given}}
    if "unfreeze" in strategy_options and float(strategy_options["unfreeze"]).is_integer():
        strategy_options["unfreeze"] = int(strategy_options["unfreeze"])
    if resume is not None:
        extra = sorted(set(options) - {"resume"}) + sorted(strategy_options) + (["data"] if data else [])
        if extra:
            raise ConfigError(f"--resume continues a run with its recorded settings; drop {', '.join(extra)}.")
        result = api.fit(data, resume=resume)
    else:
        if data is None:
            raise ConfigError("Missing --data: an image folder, a .csv/.jsonl file or builtin:NAME "
                              "(or --resume RUN_DIR to continue a run).")
        if strategy_options:
            options["strategy_options"] = strategy_options
        if "out" in options:
            options["out"] = str(options["out"])
        result = api.fit(data, **options)
    if not result.main_process:  # another rank of a multi-process run: rank 0 reports
        return
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    if summary.get("processes"):
        console.print(f"batch: {summary['batch_size_used']} per process x {summary['processes']} processes = global "
                      f"batch {summary['global_batch']}", highlight=False)
    if summary.get("task_detected"):
        console.print(escape(summary["task_detected"]), highlight=False)
    if summary.get("data_path", {}).get("image_cache") == "off":  # images decoded in every epoch: say why
        console.print(escape(summary["data_path"]["note"]), highlight=False)
    if summary.get("auto"):  # --strategy auto: what it chose (the report says why, and the runner-up)
        from transferkit.auto_rules import notes as auto_notes

        for line in auto_notes(summary["auto"]):
            console.print(escape(line), highlight=False)
    doctor_file = result.run_dir / "data_report.json"
    doctor_report = json.loads(doctor_file.read_text()) if doctor_file.is_file() else {"findings": []}
    _print_image_columns(doctor_report.get("stats", {}).get("image_columns"))
    _print_task_hints(doctor_report["findings"])
    for split, m in result.metrics.items():
        if "r2" in m:
            console.print(f"{split}: R² [bold]{m['r2']:.4f}[/], MAE {m['mae']:.4f}, RMSE {m['rmse']:.4f}, "
                          f"Spearman {m.get('spearman', 0.0):.4f} (n={m['n']})")
        elif "micro_f1" in m:
            console.print(f"{split}: micro-F1 [bold]{m['micro_f1']:.4f}[/], macro-F1 {m['macro_f1']:.4f}, "
                          f"subset accuracy {m['subset_accuracy']:.4f}, mAP {m['map'] or 0:.4f} (n={m['n']})")
        elif "entity_f1" in m:
            console.print(f"{split}: entity F1 [bold]{m['entity_f1']:.4f}[/], precision {m['entity_precision']:.4f}, "
                          f"recall {m['entity_recall']:.4f}, token accuracy {m['token_accuracy']:.4f} "
                          f"(n={m['n']} sentences)")
        else:
            console.print(f"{split}: accuracy [bold]{m['accuracy']:.4f}[/], macro-F1 {m['macro_f1']:.4f} (n={m['n']})")
    _print_domain(summary.get("domain"))
    console.print(f"bundle: {result.bundle_dir}\nreport: {result.run_dir / 'report.md'}")
    if doctor_report["findings"]:
        console.print(f"data doctor: {len(doctor_report['findings'])} finding(s); see {escape(str(doctor_file))}")
    _print_left_out(doctor_report.get("skipped", []), str(doctor_file))
    if summary.get("diverged"):  # stopped at a NaN/inf loss; the bundle holds the best epoch before it
        console.print(f"[yellow]warning:[/] {escape(summary['diverged']['message'])} The bundle holds epoch "
                      f"{summary['best_epoch']}, the best before it.", highlight=False)


def _print_domain(domain: dict | None) -> None:
    """--target-data: the epoch label-free selection kept, and --target-test's source-only vs adapted accuracy."""
    if not domain:
        return
    sel = domain["selection"]
    other = sel.get("source_validation_epoch")
    differs = f" (source validation would keep epoch {other})" if other is not None and other != sel["kept_epoch"] else ""
    console.print(f"label-free selection (DEV, no target labels): kept epoch {sel['kept_epoch']}{differs}",
                  highlight=False)
    if "target_test" in domain:
        t = domain["target_test"]
        gap = f", {100 * t['gap_closed']:.1f} % of the gap to the oracle closed" if t.get("gap_closed") is not None else ""
        console.print(f"target test: accuracy [bold]{t['adapted']['accuracy']:.4f}[/] adapted vs "
                      f"{t['source_only']['accuracy']:.4f} source-only (n={t['adapted']['n']}){gap}")


def _launch_if_asked(processes: int | None) -> None:
    """``--processes N`` (N >= 2) outside a launch: run this same command in N processes, exit with their code.
    Inside a launch (accelerate launch, or the processes it started) N must match the processes there are."""
    import os
    import sys

    from transferkit.cli.launch import launch_fit, without_processes_flag
    from transferkit.core.errors import ConfigError

    if processes is None:
        return
    if processes < 1:
        raise ConfigError(f"--processes must be an int >= 1. Got {processes} instead.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 or processes == 1:
        if processes != world:
            raise ConfigError(f"--processes {processes} inside a launch of {world} processes; drop --processes when "
                              f"starting through accelerate launch.")
        return
    raise typer.Exit(launch_fit(processes, without_processes_flag(sys.argv[1:])))


def _print_task_hints(findings: list[dict]) -> None:
    """The doctor's hints that the labels look like another task's, or that a token file has typo tags without a
    B-/I- prefix (printed by fit, not only in its report)."""
    from transferkit.data.task_checks import HINT_KINDS

    for f in findings:
        if f["kind"] in HINT_KINDS:
            where = f"{f['path']}:{f['line']}" if "line" in f else f["path"]
            console.print(f"[yellow]hint:[/] {escape(where)}: {escape(f['message'])}.", highlight=False)
