"""The command line: parses arguments into configs and calls transferkit.api — nothing else.

User mistakes (TransferkitError) print one line and exit with code 2; bugs keep their traceback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferkit.core.errors import TransferkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Adapt pretrained models to your labeled data: fit, compare, evaluate, predict.")
console = Console(stderr=True)

FIT_EXAMPLES = """
Examples:

    transferkit fit --data builtin:fashion-mnist --labels-per-class 100 --image-size 64 --out runs/fm

    transferkit fit --data photos/ --strategy partial --unfreeze 3 --augment randaugment --hflip 0.5

    transferkit fit --data photos/ --strategy finetune --warmup-head-epochs 2 --bn train

    transferkit fit --data reviews.csv --text-column body --label-column stars --strategy lp-ft

    transferkit fit --data photos/ --strategy l2sp -o alpha=0.1 -o beta=0.01 --class-weight balanced

    transferkit fit --resume runs/fm        # continue a killed or stopped run exactly
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
    data: str | None = typer.Option(None, "--data", help="Image folder, .csv/.jsonl of texts, or builtin:NAME."),
    model: str | None = typer.Option(None, help="Backbone: a name from `list models`, timm:NAME or hf:ID."),
    strategy: str | None = typer.Option(None, help="How to adapt: a name from `list strategies` [default: finetune]."),
    out: Path | None = typer.Option(None, help="Run folder (bundle, metrics, report, checkpoints, TensorBoard)."),
    resume: Path | None = typer.Option(None, help="Continue the run in this folder from its newest checkpoint."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (early stopping may end sooner)."),
    labels_per_class: int | None = typer.Option(None, help="Stratified subsample: K training labels per class."),
    seed: int | None = typer.Option(None, help="Seed for splits, subsampling, init and shuffling."),
    val_data: str | None = typer.Option(None, help="Validation data (default: a stratified split of --data)."),
    test_data: str | None = typer.Option(None, help="Test data (default: the source's own test split, if any)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL column with the text [default: text]."),
    label_column: str | None = typer.Option(None, help="CSV/JSONL column with the label [default: label]."),
    image_size: int | None = typer.Option(None, help="Resize images to PX (default: the backbone's size)."),
    batch_size: int | None = typer.Option(None, help="Training batch size [default: 8 below 1,000 examples, else 32]."),
    grad_accum: int | None = typer.Option(None, help="Micro-batches per optimizer step [default: 1]."),
    ema: float | None = typer.Option(None, help="Keep an exponential moving average of the weights (decay, e.g. 0.99)."),
    lr: float | None = typer.Option(None, help="Head learning rate; backbone rates derive from it [default: 1e-3]."),
    weight_decay: float | None = typer.Option(None, help="AdamW/SGD weight decay [default: 0.05]."),
    optimizer: str | None = typer.Option(None, help="adamw | sgd [default: adamw]."),
    patience: int | None = typer.Option(None, help="Early-stopping patience in epochs, 0 = off [default: 5]."),
    label_smoothing: float | None = typer.Option(None, help="Label smoothing [default: 0]."),
    augment: str | None = typer.Option(None, help="Image augmentation: none | light | randaugment | trivial [light]."),
    hflip: float | None = typer.Option(None, help="Horizontal-flip probability [default: 0; 0.5 for photos]."),
    mixup: float | None = typer.Option(None, help="Mixup alpha, images (0 = off)."),
    cutmix: float | None = typer.Option(None, help="CutMix alpha, images (0 = off)."),
    class_weight: str | None = typer.Option(None, help="auto | none | balanced [auto: balanced from a 1.5x ratio]."),
    sampler: str | None = typer.Option(None, help="shuffle | balanced (each class drawn equally often)."),
    bn: str | None = typer.Option(None, help="Batch-norm statistics: freeze | train [strategy default]."),
    unfreeze: float | None = typer.Option(None, help="partial: train the last N blocks, or a fraction of them."),
    warmup_head_epochs: int | None = typer.Option(None, help="finetune/lp-ft: epochs training the head alone first."),
    strategy_option: list[str] = typer.Option([], "--option", "-o", help="Strategy option KEY=VALUE (repeatable)."),
    max_minutes: float | None = typer.Option(None, help="Time budget: stop cleanly, keep the best weights."),
    checkpoint_steps: int | None = typer.Option(None, help="Checkpoint every N steps too (always each epoch)."),
    precision: str | None = typer.Option(None, help="auto | fp32 | bf16."),
) -> None:
    """Fit a model: pick a backbone, apply a transfer strategy, evaluate, and save a bundle."""
    from transferkit import api
    from transferkit.core.errors import ConfigError

    given = {k: v for k, v in locals().items() if v is not None and k not in ("data", "api", "ConfigError")}
    given.pop("strategy_option")
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
    for split, m in result.metrics.items():
        console.print(f"{split}: accuracy [bold]{m['accuracy']:.4f}[/], macro-F1 {m['macro_f1']:.4f} (n={m['n']})")
    console.print(f"bundle: {result.bundle_dir}\nreport: {result.run_dir / 'report.md'}")


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
    data: str = typer.Option(..., "--data", help="Image folder, .csv/.jsonl of texts, or builtin:NAME."),
    strategies: str = typer.Option("linear-probe,finetune,scratch", help="Comma-separated strategy names."),
    labels_per_class: str = typer.Option("all", help="Comma-separated K values (or 'all'), e.g. 10,100."),
    seeds: int = typer.Option(1, help="Seeds per (strategy, K): each seed draws its own K-subsample."),
    out: Path | None = typer.Option(None, help="Folder for compare.json, compare.html and the runs."),
    budget_minutes: float | None = typer.Option(None, help="Skip the slowest combinations once over budget."),
    model: str | None = typer.Option(None, help="Backbone for every run."),
    val_data: str | None = typer.Option(None, help="Validation data (default: a split of each K-subsample)."),
    test_data: str | None = typer.Option(None, help="Test data (default: the source's test split or a fixed 20 %)."),
    text_column: str | None = typer.Option(None, help="CSV/JSONL text column."),
    label_column: str | None = typer.Option(None, help="CSV/JSONL label column."),
    image_size: int | None = typer.Option(None, help="Resize images to PX."),
    epochs: int | None = typer.Option(None, help="Maximum epochs per run."),
    batch_size: int | None = typer.Option(None, help="Training batch size."),
    lr: float | None = typer.Option(None, help="Head learning rate."),
    patience: int | None = typer.Option(None, help="Early-stopping patience."),
    augment: str | None = typer.Option(None, help="none | light | randaugment | trivial."),
    precision: str | None = typer.Option(None, help="auto | fp32 | bf16."),
) -> None:
    """Compare strategies on identical splits: mean ± std, wall time, trainable parameters, transfer gain."""
    from transferkit import api

    options = {k: v for k, v in locals().items() if v is not None and k not in (
        "data", "strategies", "labels_per_class", "seeds", "out", "budget_minutes", "api")}
    summary = api.compare(data, [s.strip() for s in strategies.split(",") if s.strip()], _parse_ks(labels_per_class),
                          seeds=seeds, out=out, budget_minutes=budget_minutes,
                          on_run=lambda line: console.print(f"[compare] {escape(line)}"), **options)
    table = Table("strategy", "K", "accuracy", "s/run", "trainable", title=f"compare: {summary['data']}")
    for r in summary["rows"]:
        table.add_row(r["strategy"], str(r["labels_per_class"] or "all"),
                      f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}", f"{r['seconds_mean']:.1f}",
                      f"{r['trainable_params']:,}" if r["trainable_params"] is not None else "-")
    Console().print(table)
    for g in summary["gains"]:
        console.print(("[red]" if g["negative"] else "") + escape(g["statement"]) + ("[/]" if g["negative"] else ""))
    for s in summary["skipped"]:
        console.print(f"skipped: {escape(s)}")
    console.print(f"wrote {summary['out']}/compare.html and compare.json")


@app.command(epilog="Example:\n\n"
             "    transferkit evaluate --bundle runs/fm/bundle --data builtin:fashion-mnist --split test --json")
def evaluate(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder."),
    data: str = typer.Option(..., "--data", help="Labeled data to score."),
    split: str = typer.Option("test", help="Which split of a multi-split source; a single-split source is used whole."),
    text_column: str = typer.Option("text"),
    label_column: str = typer.Option("label"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Score a saved bundle on labeled data (accuracy, macro-F1, per-class report)."""
    from transferkit import api
    from transferkit.evaluate.metrics import headline

    metrics = api.evaluate(bundle, data, split, text_column, label_column, progress=not as_json)
    if as_json:
        print(json.dumps(metrics))
        return
    table = Table("metric", "value", title=f"{metrics['data']} [{split}]")
    for key, value in headline(metrics).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


@app.command(epilog="Examples:\n\n    transferkit predict --bundle runs/fm/bundle --data photos/ --out preds.csv\n\n"
             "    transferkit predict --bundle runs/news/bundle --data new.csv --out preds.jsonl")
def predict(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder."),
    data: str = typer.Option(..., "--data", help="Images (folder) or texts (.csv/.jsonl); labels not needed."),
    out: Path = typer.Option(Path("predictions.csv"), help="Output .csv or .jsonl: one row per input."),
    text_column: str = typer.Option("text"),
) -> None:
    """Predict labels with a saved bundle, using the bundle's own preprocessing."""
    from transferkit import api

    predictions = api.predict(bundle, data, out, text_column)
    console.print(f"wrote {len(predictions.ids)} predictions to {out}")


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


def main() -> None:
    try:
        app(standalone_mode=False)
    except TransferkitError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except (typer.Exit, SystemExit) as exc:
        sys.exit(getattr(exc, "exit_code", getattr(exc, "code", 0)))
    except Exception as exc:  # click usage errors carry their own exit code 2
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
