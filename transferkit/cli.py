"""The command line: parses arguments into configs and calls transferkit.api — nothing else.

User mistakes (TransferkitError) print one line and exit with code 2, usage mistakes click's usage error with a
"did you mean" (exit 2); bugs keep their traceback (transferkit.cli_errors).
"""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferkit.cli_errors import TransferkitGroup

app = typer.Typer(cls=TransferkitGroup, add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Adapt pretrained models to your labeled data: fit, compare, evaluate, predict.")
console = Console(stderr=True)

TASK_HELP = "classification | multilabel | regression | tokens [default: detected from the data]."
LABEL_SEP_HELP = "Multi-label CSV: the separator between labels in a label cell [default: |]."
LABEL_COLUMNS_HELP = "Multi-label: one 0/1 column per label, comma-separated names (instead of --label-column)."
LOSS_HELP = ("Regression loss: mse | huber. Huber counts errors beyond --huber-delta linearly, so a few outlying "
             "targets pull the model less [default: mse].")
HUBER_DELTA_HELP = ("--loss huber: the delta on the standardised target, in training-target stds (outliers inflate "
                    "the std: a smaller delta resists them more) [default: 1.0].")
CLIP_SECONDS_HELP = ("Audio: crop (at random in training with --augment, else centred) or zero-pad every clip to S "
                     "seconds [default: the backbone's, 5].")
IMAGE_COLUMN_HELP = ("CSV/JSONL column of image (or audio clip) file paths, relative to the file's folder [default: "
                     "the text column when its values are image or audio files].")

FIT_EXAMPLES = """
Examples:

    transferkit fit --data builtin:fashion-mnist --labels-per-class 100 --image-size 64 --out runs/fm

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

# CLI flags that are strategy options (validated by the strategy's config: a strategy without one says so).
STRATEGY_FLAGS = ("bn", "unfreeze", "warmup_head_epochs")


def _parse_options(pairs: list[str]) -> dict[str, object]:
    """-o KEY=VALUE pairs -> {key: value}, values read as JSON when they parse (numbers, true, lists)."""
    from transferkit.core.errors import ConfigError

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"Strategy option {pair!r} is not KEY=VALUE, e.g. -o alpha=0.1.")
        try:
            options[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = raw
    return options


@app.command(epilog=FIT_EXAMPLES)
def fit(
    data: str | None = typer.Option(None, "--data", help="Image or audio folder, .csv/.jsonl of texts, or builtin:NAME."),
    model: str | None = typer.Option(None, help="Backbone: a name from `list models`, timm:NAME or hf:ID."),
    strategy: str | None = typer.Option(None, help="How to adapt: a name from `list strategies` [default: finetune]."),
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
    checkpoint_steps: int | None = typer.Option(None, help="Checkpoint every N steps too (always each epoch)."),
    precision: str | None = typer.Option(None, help="auto | fp32 | bf16."),
    strict: bool = typer.Option(False, "--strict", help="Stop on any data-doctor finding, not only fatal ones."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Leave out later copies of duplicate inputs (train < val < test)."),
    max_pixels: int | None = typer.Option(None, help="Refuse images decoding to over N pixels, ~4N bytes [default: 250 M]."),
    processes: int | None = typer.Option(None, help="Train in N processes (DDP through accelerate: CPU/gloo or one "
                                         "GPU each); --batch-size is per process, the global batch N times it."),
) -> None:
    """Fit a model: pick a backbone, apply a transfer strategy, evaluate, and save a bundle."""
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

    from transferkit.cli_launch import launch_fit, without_processes_flag
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


COMPARE_EXAMPLES = """
Examples:

    transferkit compare --data builtin:digits --strategies linear-probe,finetune,scratch --labels-per-class 10,50 --seeds 3

    transferkit compare --data photos/ --test-data photos_test/ --strategies head,partial,lp-ft --budget-minutes 30
"""


def _parse_ks(text: str) -> list[int | None]:
    from transferkit.core.errors import ConfigError

    ks: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            ks.append(None)
        elif part.isdigit() and int(part) > 0:
            ks.append(int(part))
        else:
            raise ConfigError(f"--labels-per-class takes positive integers or 'all', comma-separated (e.g. 10,100); "
                              f"got {part!r}.")
    return ks


@app.command(epilog=COMPARE_EXAMPLES)
def compare(
    data: str = typer.Option(..., "--data", help="Image or audio folder, .csv/.jsonl of texts, or builtin:NAME."),
    strategies: str = typer.Option("linear-probe,finetune,scratch", help="Comma-separated strategy names."),
    labels_per_class: str = typer.Option("all", help="Comma-separated K values (or 'all'), e.g. 10,100."),
    seeds: int = typer.Option(1, help="Seeds per (strategy, K): each seed draws its own K-subsample."),
    out: Path | None = typer.Option(None, help="Folder for compare.json, compare.html and the runs."),
    budget_minutes: float | None = typer.Option(None, help="Skip the slowest combinations once over budget."),
    workers: int = typer.Option(1, help="Runs at once, each in its own process with cores // N torch threads."),
    model: str | None = typer.Option(None, help="Backbone for every run."),
    val_data: str | None = typer.Option(None, help="Validation data (default: a split of each K-subsample)."),
    test_data: str | None = typer.Option(None, help="Test data (default: the source's test split or a fixed 20 %)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL label column."),
    image_size: int | None = typer.Option(None, help="Resize images to PX."),
    clip_seconds: float | None = typer.Option(None, help=CLIP_SECONDS_HELP),
    epochs: int | None = typer.Option(None, help="Maximum epochs per run."),
    batch_size: int | None = typer.Option(None, help="Training batch size."),
    lr: float | None = typer.Option(None, help="Head learning rate."),
    patience: int | None = typer.Option(None, help="Early-stopping patience."),
    loss: str | None = typer.Option(None, help=LOSS_HELP),
    huber_delta: float | None = typer.Option(None, help=HUBER_DELTA_HELP),
    augment: str | None = typer.Option(None, help="none | light | randaugment | trivial."),
    precision: str | None = typer.Option(None, help="auto | fp32 | bf16."),
    strict: bool = typer.Option(False, "--strict", help="Stop on any data-doctor finding (checked before any run)."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Leave out later copies of duplicate inputs (train < val < test)."),
    max_pixels: int | None = typer.Option(None, help="Refuse images decoding to over N pixels, ~4N bytes [default: 250 M]."),
    task: str | None = typer.Option(None, help=TASK_HELP),
    target_data: str | None = typer.Option(None, help="Unlabeled target domain for the strategies that adapt to it "
                                           "(dann, coral, mmd); the others train on --data alone."),
) -> None:
    """Compare strategies on identical splits: mean ± std, wall time, trainable parameters, transfer gain."""
    from transferkit.compare import compare as run_comparison

    options = {k: v for k, v in locals().items() if v is not None and v is not False and k not in (
        "data", "strategies", "labels_per_class", "seeds", "out", "budget_minutes", "workers", "run_comparison")}
    summary = run_comparison(data, [s.strip() for s in strategies.split(",") if s.strip()], _parse_ks(labels_per_class),
                          seeds=seeds, out=out, budget_minutes=budget_minutes, workers=workers,
                          on_run=lambda line: console.print(rf"\[compare] {escape(line)}"), **options)
    metric = summary.get("metric", "accuracy")
    table = Table("strategy", "K", "R²" if metric == "r2" else metric, "s/run", "trainable",
                  title=f"compare: {summary['data']}")
    for r in summary["rows"]:
        table.add_row(r["strategy"], str(r["labels_per_class"] or "all"),
                      f"{r[metric + '_mean']:.4f} ± {r[metric + '_std']:.4f}", f"{r['seconds_mean']:.1f}",
                      f"{r['trainable_params']:,}" if r["trainable_params"] is not None else "-")
    Console().print(table)
    for g in summary["gains"]:
        console.print(("[red]" if g["negative"] else "") + escape(g["statement"]) + ("[/]" if g["negative"] else ""))
    for s in summary["skipped"]:
        console.print(f"skipped: {escape(s)}")
    _print_left_out(summary["skipped_inputs"], f"{summary['out']}/data_report.json")
    console.print(f"wrote {summary['out']}/compare.html and compare.json")


def _print_image_columns(columns: dict[str, str] | None) -> None:
    """The line fit, doctor and evaluate print when a table's column was read as image paths (split -> column)."""
    for column in dict.fromkeys((columns or {}).values()):
        splits = ", ".join(s for s, c in columns.items() if c == column)
        console.print(f"images: column '{escape(column)}' read as image paths ({splits}; relative to the table's "
                      "folder)", highlight=False)


def _print_left_out(skipped: list[dict[str, str]], where: str) -> None:
    """The line every command that reads a dataset prints: how many inputs it left out (n_skipped), and why."""
    if skipped:
        first = skipped[0]
        console.print(f"[yellow]n_skipped: {len(skipped)} input(s) left out[/], e.g. {escape(first['path'])}: "
                      f"{escape(first['reason'])}; all listed in {escape(where)}", highlight=False)


@app.command(epilog="Example:\n\n"
             "    transferkit evaluate --bundle runs/fm/bundle --data builtin:fashion-mnist --split test --json")
def evaluate(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder."),
    data: str = typer.Option(..., "--data", help="Labeled data to score."),
    split: str = typer.Option("test", help="train, val or test of a source with those parts; a single-split source "
                              "is scored whole (reported as split 'all')."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column [default: the bundle's, else text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL label column [default: the bundle's, else label]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2) on any unreadable input or other per-input "
                                "finding, instead of leaving it out."),
) -> None:
    """Score a saved bundle on labeled data (accuracy, macro-F1, per-class report)."""
    from transferkit import api
    from transferkit.evaluate.metrics import headline

    metrics = api.evaluate(bundle, data, split, text_column, label_column, progress=not as_json, strict=strict,
                           image_column=image_column)
    if as_json:
        print(json.dumps(metrics))
        return
    _print_image_columns({metrics["split"]: metrics["image_column"]} if "image_column" in metrics else None)
    _print_left_out(metrics["skipped"], "the output of --json")
    if "note" in metrics:
        console.print(f"[yellow]Note:[/yellow] {escape(metrics['note'])}")
    table = Table("metric", "value", title=escape(f"{metrics['data']} [{metrics['split']}]"))
    for key, value in headline(metrics).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


PREDICT_EXAMPLES = """
Examples:

    transferkit predict --bundle runs/fm/bundle --data photos/ --out preds.csv

    transferkit predict --bundle runs/news/bundle --data new.csv --out preds.jsonl --top-k 3

    transferkit predict --bundle runs/news/onnx --runtime onnx --data new.csv --out preds.csv

Rows keep the input order. An image that cannot be read gets a row with an 'error' and no label; the run goes on
(counted as n_skipped), unless --strict.
"""


@app.command(epilog=PREDICT_EXAMPLES)
def predict(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder, or an ONNX export of one."),
    data: str = typer.Option(..., "--data", help="Images or audio clips (folder) or texts (.csv/.jsonl); no labels needed."),
    out: Path = typer.Option(Path("predictions.csv"), help="Output .csv or .jsonl: one row per input."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column [default: the bundle's, else text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    top_k: int | None = typer.Option(None, help="Also write the K most probable labels with their scores."),
    runtime: str = typer.Option("auto", help="torch | onnx | auto (onnx when the bundle holds model.onnx)."),
    batch_size: int = typer.Option(64, help="Inputs per batch (memory holds one batch of decoded inputs)."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2, nothing written) if any input is unreadable."),
) -> None:
    """Predict labels with a saved bundle, streaming batches to a file, using the bundle's own preprocessing."""
    from transferkit import api

    predictions = api.predict(bundle, data, out, text_column, runtime=runtime, top_k=top_k, batch_size=batch_size,
                              strict=strict, image_column=image_column)
    console.print(f"wrote {len(predictions.ids)} predictions to {escape(str(out))}; n_skipped: "
                  f"{len(predictions.errors)}", highlight=False)
    if predictions.errors:
        first = min(predictions.errors)
        console.print(f"[yellow]{len(predictions.errors)} input(s) could not be read[/] (rows with an 'error'), e.g. "
                      f"{escape(predictions.ids[first])}: {escape(predictions.errors[first])}", highlight=False)


EXPORT_EXAMPLES = """
Examples:

    transferkit export --bundle runs/news/bundle --format onnx --out runs/news/onnx

    transferkit export --bundle runs/news/bundle --format onnx --int8 --out runs/news/onnx-int8

    transferkit predict --bundle runs/news/onnx --runtime onnx --data new.csv --out preds.csv

The export is checked on 100 inputs (the bundle's test split when its data is still readable, else synthetic):
onnxruntime must match PyTorch within 1e-4 on every logit and on every decoded prediction (the top-1 label, the
label set, a token model's tag for every word), or nothing is written. --int8 quantizes with onnxruntime (dynamic
for text, static QDQ for CNNs) and reports its agreement with fp32 and the accuracy it costs.
"""


@app.command(epilog=EXPORT_EXAMPLES)
def export(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder."),
    out: Path = typer.Option(..., help="New folder for the exported bundle (model.onnx + manifest + tokenizer)."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to int8 with onnxruntime (smaller, usually faster)."),
    opset: int = typer.Option(17, help="ONNX opset version."),
) -> None:
    """Export a bundle for onnxruntime, checked against PyTorch; the result is a bundle predict and serve run."""
    from transferkit import api
    from transferkit.export.bundle import bundle_task, read_manifest

    entry = api.export(bundle, out, format=format, int8=int8, opset=opset)
    task = bundle_task(read_manifest(out), out)  # says how its checks read: per label set, per value, per word tag
    parity = entry["parity"]
    console.print(f"wrote {escape(str(out))}: parity on {parity['n']} inputs ({escape(parity['inputs'])}): "
                  f"{task.agreement(parity, '.0%')}", highlight=False)
    ref = entry["vs_bundle"]
    console.print(f"vs the bundle's own predictions ({ref['precision']}): {task.agreement(ref)}", highlight=False)
    if ref.get("warning"):
        console.print(f"[yellow]warning:[/] {escape(ref['warning'])}", highlight=False)
    q = entry.get("int8")
    if q:
        cost = task.int8_cost(q["accuracy"]) if q.get("accuracy") else "no labeled data to measure accuracy on"
        console.print(f"int8 ({q['method']}): {q['int8_bytes'] / 1e6:.1f} MB instead of {q['fp32_bytes'] / 1e6:.1f} MB; "
                      f"{task.agreement(q['vs_fp32'])} (vs fp32); {cost}", highlight=False)
        if q.get("warning"):
            console.print(f"[yellow]warning:[/] {escape(q['warning'])}", highlight=False)


SERVE_EXAMPLES = """
Examples:

    transferkit serve --bundle runs/fm/bundle        # http://127.0.0.1:8000, this machine only

    TRANSFERKIT_TOKEN=$(openssl rand -hex 24) transferkit serve --bundle runs/fm/bundle --host 0.0.0.0

    curl -s localhost:8000/v1/predict -H 'content-type: application/json' -d '{"inputs": ["a new text"], "top_k": 2}'

    curl -s localhost:8000/v1/predict -F files=@photo.jpg -F files=@other.png      # or clips: -F files=@clip.wav

Endpoints: POST /v1/predict, GET /v1/model, /health/live, /health/ready, /metrics. With a token, all but
/health/* need 'Authorization: Bearer TOKEN'.
"""


@app.command(epilog=SERVE_EXAMPLES)
def serve(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder, loaded once at start."),
    host: str | None = typer.Option(None, help="Address to bind [default: 127.0.0.1]; any other needs a token."),
    port: int | None = typer.Option(None, help="Port [default: 8000]."),
    token: str | None = typer.Option(None, envvar="TRANSFERKIT_TOKEN", show_envvar=True,
                                     help="Bearer token clients must send (prefer the environment variable)."),
    max_batch: int | None = typer.Option(None, help="Inputs per request [default: 64]."),
    max_body_mb: float | None = typer.Option(None, help="Request body limit in MB, 413 beyond [default: 10]."),
    concurrency: int | None = typer.Option(None, help="Requests in progress at once, 503 beyond [default: 64]."),
    timeout: float | None = typer.Option(None, help="Seconds per request, 504 beyond [default: 30]."),
    max_pixels: int | None = typer.Option(None, help="Decoded pixels per request, its images summed [default: 16 M]."),
    max_audio_seconds: float | None = typer.Option(None, help="Seconds per audio clip, 413 beyond [default: 60]."),
    runtime: str | None = typer.Option(None, help="auto | torch | onnx (an exported bundle) [default: auto]."),
    access_log: bool = typer.Option(False, help="Log every request."),
) -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn) until Ctrl-C / SIGTERM, which drains requests in flight."""
    from transferkit.serve.config import ServeConfig

    given = {"host": host, "port": port, "token": token, "max_batch": max_batch, "max_body_mb": max_body_mb,
             "concurrency": concurrency, "timeout_s": timeout, "max_pixels": max_pixels,
             "max_audio_seconds": max_audio_seconds}
    config = ServeConfig(**{k: v for k, v in given.items() if v is not None})  # refuses exposure before loading
    from transferkit.serve.server import serve as run_server

    console.print(f"loading {escape(str(bundle))}; /health/ready turns 200 after a warm-up prediction"
                  + ("; clients must send the bearer token" if config.token else ""))
    run_server(bundle, config, runtime, access_log)


DOCTOR_EXAMPLES = """
Examples:

    transferkit doctor --data photos/

    transferkit doctor --data photos/train --test-data photos/test --dedupe --json > data_report.json

    transferkit doctor --data reviews.csv --text-column body --label-column stars --strict

Exit code 0 when nothing is fatal, 2 otherwise (every finding with --strict). The data is never modified:
--dedupe only marks which copies `fit --dedupe` would leave out.
"""


@app.command(epilog=DOCTOR_EXAMPLES)
def doctor(
    data: str = typer.Option(..., "--data", help="Image folder, .csv/.jsonl of texts, or builtin:NAME."),
    val_data: str | None = typer.Option(None, help="Validation data, checked with the rest (leakage across splits)."),
    test_data: str | None = typer.Option(None, help="Test data, checked with the rest (leakage across splits)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL column with the text [default: text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL column with the label [default: label]."),
    task: str | None = typer.Option(None, help=TASK_HELP),
    label_sep: str | None = typer.Option(None, help=LABEL_SEP_HELP),
    label_columns: str | None = typer.Option(None, help=LABEL_COLUMNS_HELP),
    strict: bool = typer.Option(False, "--strict", help="Treat every finding as fatal (exit 2 on any)."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Mark later copies of duplicates as left out, as fit --dedupe."),
    max_pixels: int | None = typer.Option(None, help="Refuse images decoding to over N pixels, ~4N bytes [default: 250 M]."),
    clip_seconds: float | None = typer.Option(None, help="Audio: the clip length fit would use; clips much shorter or "
                                              "longer are reported [default: 5]."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON report (data_report.json) on stdout."),
    limit: int = typer.Option(50, help="Findings shown in the table (the JSON always has all)."),
) -> None:
    """Check data before training: unreadable images, label problems, bad text, duplicates and leakage."""
    from transferkit import api

    options = {k: v for k, v in {"val_data": val_data, "test_data": test_data, "text_column": text_column,
                                 "label_column": label_column, "max_pixels": max_pixels, "task": task,
                                 "label_sep": label_sep, "label_columns": label_columns,
                                 "image_column": image_column, "clip_seconds": clip_seconds}.items()
               if v is not None}
    report = api.doctor(data, strict=strict, dedupe=dedupe, **options).to_dict()
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_doctor(report, data, limit)
    if report["fatal"]:
        from transferkit.core.errors import DataError

        strict = " (--strict makes every finding fatal)" if strict else ""
        raise DataError(f"{report['fatal']} fatal finding(s) in {data}{strict}; fit would stop before training.")


def _print_doctor(report: dict, data: str, limit: int) -> None:
    table = Table("severity", "kind", "where", "finding", title=f"data doctor: {escape(data)}", show_lines=False)
    for f in report["findings"][:limit]:
        where = f"{f['path']}:{f['line']}" if "line" in f else f["path"]
        table.add_row("[red]fatal[/]" if f["severity"] == "fatal" else "warning", f["kind"], escape(where),
                      escape(f["message"]))
    out = Console()
    if report["findings"]:
        out.print(table)
    if len(report["findings"]) > limit:
        out.print(f"... {len(report['findings']) - limit} more (--limit N, or --json for all)")
    sizes = ", ".join(f"{k} {v}" for k, v in report["sizes"].items())
    kinds = ", ".join(f"{k} {v}" for k, v in report["by_kind"].items()) or "none"
    stats = report.get("stats", {})
    out.print(escape(stats.get("task_detected") or f"task: {stats.get('task', 'classification')}"), highlight=False)
    _print_image_columns(stats.get("image_columns"))
    if stats.get("targets"):
        t = stats["targets"]
        out.print(f"targets: {t['n']} numbers, {t['distinct']} distinct, from {t['min']:g} to {t['max']:g} "
                  f"(mean {t['mean']:.4g})", highlight=False)
    out.print(f"examples: {sizes}; findings: {report['fatal']} fatal, {report['warnings']} warnings ({kinds}); "
              f"fit would leave out {report['n_skipped']} input(s) (n_skipped)", highlight=False)


@app.command("list", epilog="Examples:\n\n    transferkit list models\n\n    transferkit list strategies")
def list_(what: str = typer.Argument(..., help="models | strategies | datasets")) -> None:
    """List registered models, strategies or built-in datasets."""
    from transferkit.backbones import DESCRIPTIONS
    from transferkit.core.registry import lookup
    from transferkit.data.builtins import DATASETS
    from transferkit.strategies import STRATEGIES

    tables = {
        "models": DESCRIPTIONS,
        "strategies": {name: cls.summary for name, cls in STRATEGIES.items()},
        "datasets": {f"builtin:{name}": (fn.__doc__ or "").strip().splitlines()[0] for name, fn in DATASETS.items()},
    }
    rows = lookup(tables, what, "list")
    table = Table("name", "description", title=what)
    for name, text in rows.items():
        table.add_row(escape(name), escape(text))
    Console(width=160).print(table)


RANK_EXAMPLES = """
Examples:

    transferkit rank --data photos/ --all --image-size 64

    transferkit rank --data builtin:digits --models efficientnet_lite0,mobilenetv2 --max-per-class 30 --out runs/rank

    transferkit rank --data news.csv --text-column body --by linear

Scores each candidate's frozen features (the feature cache: a second run on the same data reads them back)
without training. Estimators: LogME (the default ranking), LEEP and NCE (need the backbone's ImageNet
classifier), H-score, and k-NN / linear-probe accuracy by stratified cross-validation; regression: LogME and R²;
multi-label: LogME per label. A candidate whose package is missing is listed as skipped with the install command.
"""


@app.command(epilog=RANK_EXAMPLES)
def rank(
    data: str = typer.Option(..., "--data", help="Labeled image or audio folder, .csv/.jsonl of texts, or builtin:NAME."),
    models: str | None = typer.Option(None, help="Comma-separated backbones to score (names from `list models`, "
                                      "timm:NAME, hf:ID)."),
    all_models: bool = typer.Option(False, "--all", help="Score every registered backbone of the data's modality "
                                    "(the default without --models)."),
    task: str | None = typer.Option(None, help=TASK_HELP),
    by: str = typer.Option("logme", help="Estimator to rank by: logme | leep | nce | hscore | knn | linear."),
    image_size: int | None = typer.Option(None, help="Resize images to PX (default: each backbone's size)."),
    clip_seconds: float | None = typer.Option(None, help=CLIP_SECONDS_HELP),
    max_per_class: int | None = typer.Option(None, help="Score at most N inputs per class (seeded subsample)."),
    folds: int = typer.Option(5, help="Cross-validation folds for k-NN and the linear probe (fewer for tiny classes)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL column with the text [default: text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL column with the label [default: label]."),
    out: Path | None = typer.Option(None, help="Folder for rank.json."),
) -> None:
    """Rank pretrained backbones for your labeled data from frozen features, before training (LogME & co)."""
    from transferkit.core.errors import ConfigError
    from transferkit.rank import rank as run_rank
    from transferkit.rank import render

    if models and all_models:
        raise ConfigError("Pass either --models a,b,c or --all, not both.")
    options = {k: v for k, v in {"task": task, "image_size": image_size, "clip_seconds": clip_seconds,
                                 "text_column": text_column, "image_column": image_column,
                                 "label_column": label_column}.items() if v is not None}
    summary = run_rank(data, models.split(",") if models else None, by=by, max_per_class=max_per_class, folds=folds,
                       out=out, on_model=lambda line: console.print(f"\\[rank] {escape(line)}", highlight=False),
                       **options)
    table, notes = render(summary)
    stdout = Console()
    if not stdout.is_terminal:  # a file or pipe: as wide as the table needs, so no model name is cut
        stdout = Console(width=max(160, Console(width=1000).measure(table).maximum))
    stdout.print(table)
    for line in notes:
        stdout.print(escape(line), highlight=False)
    if summary.get("out"):
        stdout.print(f"wrote {escape(summary['out'])}", highlight=False)


TUNE_EXAMPLES = """
Examples:

    transferkit tune --data news.csv --model minilm --strategy lora --trials 30 --out runs/tune-news

    transferkit tune --data photos/ --strategy finetune --trials 40 --timeout-minutes 120 --pruner hyperband

    transferkit tune --data news.csv --strategy lora --trials 30 --out runs/tune-news   # again: continue to 30

    # distributed: every worker, on any machine, then one plain run to re-fit the best
    transferkit tune --data news.csv --strategy lora --trials 100 --storage postgresql://user:pw@db/optuna --no-refit
    transferkit tune --data news.csv --strategy lora --trials 100 --storage postgresql://user:pw@db/optuna --out runs/best

Trials are scored on the validation split only (the test split is never read while searching); a fit option you
pass (--lr 3e-4, -o rank=8) is fixed and leaves the search space. OUT gets the re-fitted best run (bundle, report),
tune.json, optimization_history.png, param_importances.png and, without --storage, the study (study.db).
"""
TUNE_OWN = ("data", "strategy", "out", "trials", "timeout_minutes", "storage", "study", "pruner", "refit")


def tune(**given: object) -> None:
    """Search hyper-parameters with Optuna on validation, then re-fit the best configuration as a normal run."""
    from transferkit.tune import tune as run_search

    own = {k: given.pop(k) for k in TUNE_OWN}
    pairs = given.pop("strategy_option")
    options = {k: v for k, v in given.items() if v is not None and v is not False and k not in STRATEGY_FLAGS}
    strategy_options = {**_parse_options(pairs), **{k: given[k] for k in STRATEGY_FLAGS if given.get(k) is not None}}
    if "unfreeze" in strategy_options and float(strategy_options["unfreeze"]).is_integer():
        strategy_options["unfreeze"] = int(strategy_options["unfreeze"])
    if strategy_options:
        options["strategy_options"] = strategy_options
    summary = run_search(own["data"], own["strategy"], trials=own["trials"], timeout_minutes=own["timeout_minutes"],
                         storage=own["storage"], study=own["study"], out=own["out"], pruner=own["pruner"],
                         refit=own["refit"], on_trial=lambda line: console.print(f"[tune] {escape(line)}"), **options)
    counts, best, default = summary["counts"], summary["best"], summary["default"]
    console.print(f"study '{escape(summary['study'])}' ({escape(summary['storage'])}): {counts['COMPLETE']} complete, "
                  f"{counts['PRUNED']} pruned, {counts['FAIL']} failed", highlight=False)
    if best is not None:
        console.print(f"best: trial {best['number']}, validation {summary['metric']} [bold]{best['value']:.4f}[/] "
                      f"({escape(', '.join(f'{k}={v}' for k, v in best['params'].items()))})", highlight=False)
    if default is not None and default["value"] is not None:
        console.print(f"default configuration (trial {default['number']}): {default['value']:.4f}", highlight=False)
    refit = summary.get("refit")
    if refit:
        for split, m in refit["metrics"].items():
            console.print(f"re-fit {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()
                                                         if isinstance(v, float)), highlight=False)
        console.print(f"bundle: {escape(refit['bundle'])}\nreport: {escape(refit['report'])}", highlight=False)
    console.print(f"wrote {escape(str(Path(summary['out']) / 'tune.json'))} and its plots", highlight=False)


def _tune_signature() -> None:
    """tune takes its own options plus fit's (their declarations reused, so the two never drift apart)."""
    import inspect

    from transferkit.config import FitConfig
    from transferkit.train.config import TrainConfig

    fit_options = {f for f in FitConfig.__dataclass_fields__} | {f for f in TrainConfig.__dataclass_fields__} | {
        *STRATEGY_FLAGS, "strategy_option", "strict", "dedupe"}
    own = [
        inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            ..., "--data", help="Image folder, .csv/.jsonl of texts, or builtin:NAME (its test split is not read).")),
        inspect.Parameter("strategy", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            ..., help="The strategy whose search space to search (strategies/search.py).")),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, help="Folder for the re-fitted run, tune.json, plots and (without --storage) study.db.")),
        inspect.Parameter("trials", inspect.Parameter.KEYWORD_ONLY, annotation=int, default=typer.Option(
            20, help="Finished trials in the study in total; a re-run continues to this many.")),
        inspect.Parameter("timeout_minutes", inspect.Parameter.KEYWORD_ONLY, annotation=float | None,
                          default=typer.Option(None, help="Start no new trial after this long.")),
        inspect.Parameter("storage", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, help="Shared study: postgresql://, mysql:// or sqlite:/// URL, or a journal file path "
                       "[default: sqlite:///OUT/study.db].")),
        inspect.Parameter("study", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, help="Study name [default: transferkit-STRATEGY].")),
        inspect.Parameter("pruner", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "median", help="median | hyperband | none: stop trials whose validation score lags.")),
        inspect.Parameter("refit", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            True, "--refit/--no-refit", help="Re-fit the best into OUT (workers of a shared study: --no-refit).")),
    ]
    taken = {p.name for p in own} | {"resume"}
    borrowed = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(fit, eval_str=True)
                .parameters.values() if p.name in fit_options and p.name not in taken]
    tune.__signature__ = inspect.Signature([*own, *borrowed])
    tune.__annotations__ = {p.name: p.annotation for p in (*own, *borrowed)}


_tune_signature()
app.command(epilog=TUNE_EXAMPLES)(tune)

PRETRAIN_EXAMPLES = """
Examples:

    transferkit pretrain --data unlabeled_photos/ --model efficientnet_lite0 --steps 500 --out runs/pre   # SimCLR

    transferkit pretrain --data builtin:bbc-news --model minilm --steps 200 --out runs/pre-bbc   # SimCSE

    transferkit pretrain --data tweets.csv --model hf:path/to/bert --method mlm --out runs/mlm   # masked LM

    transferkit pretrain --resume runs/pre        # continue a stopped run exactly

    transferkit fit --data labeled/ --model runs/pre --strategy head   # or --model pretrained:runs/pre

Labels in the data are ignored; of a source with train/val/test splits only the training split is read.
"""


@app.command(epilog=PRETRAIN_EXAMPLES)
def pretrain(
    data: str | None = typer.Option(None, "--data", help="Unlabeled image folder, .csv/.jsonl of texts, or builtin:NAME."),
    model: str | None = typer.Option(None, help="Backbone to adapt: a name from `list models`, timm:NAME or hf:ID."),
    method: str | None = typer.Option(None, help="auto | simclr (images) | simcse | mlm (text) [default: auto: "
                                      "simclr; mlm for hf: encoders with an MLM head, else simcse]."),
    out: Path | None = typer.Option(None, help="Folder for backbone.safetensors, pretrain.json and checkpoints."),
    resume: Path | None = typer.Option(None, help="Continue the pretrain run in this folder from its newest checkpoint."),
    steps: int | None = typer.Option(None, help="Optimizer steps [default: 200]."),
    batch_size: int | None = typer.Option(None, help="Inputs per step (each seen twice by simclr/simcse) [default: 32]."),
    lr: float | None = typer.Option(None, help="Peak AdamW learning rate [default: 1e-4 simclr, 3e-5 simcse, 5e-5 mlm]."),
    temperature: float | None = typer.Option(None, help="Contrastive temperature [default: 0.5 simclr, 0.05 simcse]."),
    image_size: int | None = typer.Option(None, help="Resize images to PX (default: the backbone's size)."),
    max_length: int | None = typer.Option(None, help="Text: tokens per input [default: 128]."),
    span_words: int | None = typer.Option(None, help="simcse: each view is a random span of N words of a longer text "
                                          "(long documents: two dropout views alone are too alike) [default: 0, off]."),
    seed: int | None = typer.Option(None, help="Seed for the head, shuffling, augmentations and masks [default: 0]."),
    checkpoint_every: int | None = typer.Option(None, help="Checkpoint every N steps [default: 50]."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL column with the text [default: text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
) -> None:
    """Adapt a backbone to unlabeled in-domain data (self-supervised); `fit --model OUT` starts from it."""
    from transferkit.core.errors import ConfigError
    from transferkit.pretrain import pretrain as run_pretrain

    options = {k: v for k, v in locals().items() if v is not None and k not in ("data", "resume", "ConfigError",
                                                                                  "run_pretrain")}
    if resume is not None:
        if options:
            raise ConfigError(f"--resume continues a run with its recorded settings; drop {', '.join(sorted(options))}.")
        result = run_pretrain(data, resume=resume)
    else:
        if data is None:
            raise ConfigError("Missing --data: an image folder, a .csv/.jsonl file or builtin:NAME "
                              "(or --resume OUT to continue a run).")
        result = run_pretrain(data, **{k: str(v) if k == "out" else v for k, v in options.items()})
    m = result.manifest
    console.print(f"{m['method']} on {m['n_inputs']} inputs, {m['steps']} steps: loss {m['first_loss']:.4f} -> "
                  f"{m['final_loss']:.4f}", highlight=False)
    console.print(f"backbone: {escape(str(result.out))}  (use: transferkit fit --model {escape(str(result.out))} ...)",
                  highlight=False)


ENROLL_EXAMPLES = """
Examples:

    transferkit enroll --bundle runs/proto/bundle --data new_classes/ --out runs/proto2/bundle

    transferkit enroll --bundle runs/proto/bundle --data more_examples.csv --in-place

Adds classes (or more examples of known ones) to a protonet bundle from a few labeled examples, without
training: each class's prototype becomes the mean of all its examples' embeddings. DATA is labeled like fit's
(root/CLASS/... or a .csv/.jsonl with a label column).
"""


@app.command(epilog=ENROLL_EXAMPLES)
def enroll(
    bundle: Path = typer.Option(..., help="A protonet bundle/ folder (fit --strategy protonet)."),
    data: str = typer.Option(..., "--data", help="Labeled examples: a folder root/CLASS/... or .csv/.jsonl."),
    out: Path | None = typer.Option(None, help="Folder for the updated bundle (must not exist)."),
    in_place: bool = typer.Option(False, "--in-place", help="Rewrite --bundle itself instead of writing --out."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column [default: the bundle's, else text]."),
    image_column: str | None = typer.Option(None, help=IMAGE_COLUMN_HELP),
    label_column: str | None = typer.Option(None, help="CSV/JSONL label column [default: the bundle's, else label]."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2) on any unreadable input instead of leaving it "
                                "out."),
) -> None:
    """Add classes to a protonet bundle from a handful of labeled examples, without retraining."""
    from transferkit.enroll import enroll as run_enroll
    from transferkit.enroll import summary_lines

    result = run_enroll(bundle, data, out, in_place, text_column, label_column, image_column, strict)
    for line in summary_lines(result):
        console.print(escape(line), highlight=False)


def main() -> None:
    """The console script: TransferkitGroup decides the message and exit code (cli_errors)."""
    app()


if __name__ == "__main__":
    main()
