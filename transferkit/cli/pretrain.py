"""`transferkit pretrain` (self-supervised adaptation on unlabeled data) and `transferkit enroll` (protonet classes).

Imports typer/rich and transferkit.cli.common at start; transferkit.pretrain and transferkit.enroll only inside
the command bodies.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from transferkit.cli import cores
from transferkit.cli.app import app
from transferkit.cli.common import IMAGE_COLUMN_HELP, console

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
    cores.claim()  # torch threads from the idle cores, before torch loads
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
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit.enroll import enroll as run_enroll
    from transferkit.enroll import summary_lines

    result = run_enroll(bundle, data, out, in_place, text_column, label_column, image_column, strict)
    for line in summary_lines(result):
        console.print(escape(line), highlight=False)
