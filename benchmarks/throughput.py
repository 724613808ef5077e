"""Training throughput (issue 17): `transferkit.fit` against a minimal hand-written PyTorch loop on the same work.

Measured: items/s of whole epochs = (training + validation items) / seconds from one epoch's end to the next,
so data loading, the steps, the per-epoch validation pass and (fit) the checkpoint write all count. Epochs after
the first are the headline; epoch 1 is reported apart (fit fills its image cache there; for fit it is timed from
the end of the validation pass before training, which the hand loop does not have, to the first epoch's end).
- images: builtin:fashion-mnist (the first N training images, the next N/4 validate), EfficientNet-Lite0 at 64 px,
  batch 8, fp32, 3 epochs; fit: strategy finetune, augment none, patience 0, no baseline probe, seed 0.
- text: builtin:bbc-news (N texts spread over the topics, every fourth of 4N/3 validates), MiniLM, batch 8, fp32,
  texts cut to 256 tokens (the backbone's max_length; fit has no option to change it), 2 epochs, same fit settings.
The hand loop (`hand_loop`) is the reference: the same backbone from transferkit.backbones.build_backbone with a
plain nn.Linear head, images in channels_last as fit does (core.runtime / api._build_model), a Dataset that
decodes each item every epoch (images: PIL from the array, resize to 64 px, to tensor, normalise with the
backbone's mean/std; text: the backbone's tokenizer per batch, truncated to 256, padded to the batch's longest),
DataLoader(batch 8, shuffle), AdamW, cross-entropy, then accuracy on the validation split under inference_mode in
batches of 64 (what fit validates in). Differences fit keeps: layer-wise LRs with warmup + cosine, gradient
clipping, frozen batch-norm statistics (finetune's bn='freeze'), best-weights copies and a checkpoint every epoch.
Each repeat runs hand then fit (the order alternates between repeats); the ratio fit/hand is taken within a repeat.
Torch runs one thread (the machine is shared), in this process, niced.
Breakdown: one extra 2-epoch run of each side with epoch 2 under torch.profiler (CPU activity; fit's profiler is
started and stopped from on_epoch_end, so the window is epoch 1's end to epoch 2's end). Profiler events nest, so
only top-level events (no CPU parent) are summed, by name: `enumerate(DataLoader)...__next__` (data loading),
`Optimizer.step#...` and `Optimizer.zero_grad#...`, `autograd::engine::evaluate_function: ...` (backward), and two
record_function ranges the benchmark adds: `forward` (model + loss; fit's Strategy.training_step is wrapped for
the profiled run), `validation` (fit's train.loop.validate is wrapped; its loader and forward calls nest inside it)
and, fit only, `checkpoint` (train.loop's save_checkpoint: model, best model and optimizer as safetensors, hashed
and fsynced). `other` = the window's wall time minus those: Python and loop overhead, gradient clipping, copying
the best weights, and top-level ops outside the ranges (the largest are listed). Plus the top 8 aten ops by self
CPU time.
Prints a table (median and range over the repeats) and writes benchmarks/results/throughput.json.

    TRANSFERKIT_CACHE=~/.cache/transferkit-bench .venv/bin/python benchmarks/throughput.py      # 3 repeats
    .venv/bin/python benchmarks/throughput.py --repeats 1 --images 64 --texts 16 --out /tmp/throughput.json  # smoke
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from transferkit.data.examples import DataSplits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "throughput.json"
MODELS = {"images": "efficientnet_lite0", "text": "minilm"}
BATCH, VAL_BATCH, IMAGE_SIZE, MAX_TOKENS, SEED = 8, 64, 64, 256, 0
CATEGORIES = (("data loading", "enumerate(DataLoader)"), ("forward + loss", "forward"),
              ("backward", "autograd::engine::evaluate_function"), ("optimizer step", "Optimizer.step#"),
              ("zero_grad", "Optimizer.zero_grad#"), ("validation", "validation"), ("checkpoint write", "checkpoint"))


def image_data(n_train: int) -> DataSplits:
    """The first ``n_train`` Fashion-MNIST training images; the next n_train // 4 validate."""
    from transferkit.data.builtins import fashion_mnist

    pool = fashion_mnist().train
    return DataSplits(train=pool.subset(range(n_train)), val=pool.subset(range(n_train, n_train + max(1, n_train // 4))))


def text_data(n_train: int) -> DataSplits:
    """4/3 x ``n_train`` BBC texts evenly spaced over the training split; every fourth validates."""
    from transferkit.data.builtins import bbc_news

    pool = bbc_news().train
    n = n_train + max(1, n_train // 3)
    picked = list(range(0, len(pool), len(pool) // n))[:n]
    return DataSplits(train=pool.subset([i for k, i in enumerate(picked) if k % 4]),
                      val=pool.subset([i for k, i in enumerate(picked) if not k % 4]))


class HandModel(nn.Module):
    """transferkit's backbone (its pooled features) and a plain linear head."""

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(backbone.feature_dim, n_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.backbone.embed(batch))


class ImageSet(Dataset):
    """Decodes, resizes and normalises each image every time it is read."""

    def __init__(self, arrays: list[np.ndarray], targets: list[int], mean: tuple, std: tuple):
        self.arrays, self.targets, self.mean, self.std = arrays, targets, list(mean), list(std)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image
        from torchvision.transforms import functional

        image = Image.fromarray(self.arrays[i]).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
        return functional.normalize(functional.to_tensor(image), self.mean, self.std), self.targets[i]


def collate_images(items: list[tuple[torch.Tensor, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return {"pixel_values": torch.stack([x for x, _ in items])}, torch.tensor([y for _, y in items])


class TextCollate:
    """Tokenises a batch of (text, label) pairs: truncated to 256 tokens, padded to the batch's longest."""

    def __init__(self, tokenizer_dir: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def __call__(self, items: list[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        encoded = self.tokenizer([t for t, _ in items], truncation=True, max_length=MAX_TOKENS, padding=True,
                                 return_tensors="pt")
        return dict(encoded), torch.tensor([y for _, y in items])


def hand_loop(kind: str, data: DataSplits, epochs: int, profiler: Any = None) -> tuple[list[float], float]:
    """The reference: a plain PyTorch loop on the same model and data. Returns each epoch's seconds (training +
    validation) and the last validation accuracy; with ``profiler``, the last epoch runs under it."""
    from transferkit.backbones import build_backbone

    torch.manual_seed(SEED)
    backbone = build_backbone(MODELS[kind])
    names = sorted(set(data.train.labels))
    train_y, val_y = ([names.index(y) for y in split.labels] for split in (data.train, data.val))
    model = HandModel(backbone, len(names))
    if kind == "images":
        model = model.to(memory_format=torch.channels_last)  # as fit does; embed makes the input channels_last
        spec = backbone.preprocessing
        train_set, val_set = ImageSet(data.train.inputs, train_y, spec.mean, spec.std), \
            ImageSet(data.val.inputs, val_y, spec.mean, spec.std)
        collate = collate_images
    else:
        train_set, val_set = list(zip(data.train.inputs, train_y)), list(zip(data.val.inputs, val_y))
        collate = TextCollate(backbone.preprocessing.tokenizer)
    train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, collate_fn=collate,
                              generator=torch.Generator().manual_seed(SEED))
    val_loader = DataLoader(val_set, batch_size=VAL_BATCH, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seconds, accuracy = [], 0.0
    for epoch in range(epochs):
        with profiler if profiler is not None and epoch == epochs - 1 else contextlib.nullcontext():
            start = time.perf_counter()
            model.train()
            for inputs, targets in train_loader:
                with record_function("forward"):
                    loss = nn.functional.cross_entropy(model(inputs), targets)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            with record_function("validation"), torch.inference_mode():
                model.eval()
                accuracy = sum(int((model(x).argmax(1) == y).sum()) for x, y in val_loader) / len(val_set)
            seconds.append(time.perf_counter() - start)  # inside the profiler: its teardown is not timed
    return seconds, accuracy


@contextlib.contextmanager
def fit_hooks(marks: list[float], profiling: bool) -> Iterator[None]:
    """Wraps train.loop.validate: a `validation` range, and the end of the first (before-training) pass in
    ``marks``; when ``profiling``, Strategy.training_step runs in a `forward` range and the loop's
    save_checkpoint in a `checkpoint` range. All restored after."""
    from transferkit.strategies.base import Strategy
    from transferkit.train import loop

    validate, step, save = loop.validate, Strategy.training_step, loop.save_checkpoint

    def timed_validate(*args: Any, **kwargs: Any) -> dict[str, float]:
        with record_function("validation"):
            row = validate(*args, **kwargs)
        if not marks:
            marks.append(time.perf_counter())
        return row

    def ranged_step(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        with record_function("forward"):
            return step(self, *args, **kwargs)

    def ranged_save(*args: Any, **kwargs: Any) -> Any:
        with record_function("checkpoint"):
            return save(*args, **kwargs)

    loop.validate = timed_validate
    if profiling:
        Strategy.training_step, loop.save_checkpoint = ranged_step, ranged_save
    try:
        yield
    finally:
        loop.validate, Strategy.training_step, loop.save_checkpoint = validate, step, save


def fit_side(kind: str, data: DataSplits, epochs: int, out: Path, profiler: Any = None) -> tuple[list[float], float]:
    """`transferkit.fit` on the same work: each epoch's seconds between on_epoch_end calls (epoch 1 from the end
    of the before-training validation). With ``profiler``: epochs should be 2, and epoch 2 runs under it."""
    from transferkit import api

    marks: list[float] = []
    accuracy = [0.0]

    def on_epoch_end(epoch: int, row: dict[str, Any]) -> None:
        marks.append(time.perf_counter())  # before the profiler's stop: its teardown is not timed
        accuracy[0] = row.get("val_accuracy", accuracy[0])
        if profiler is not None and epoch == epochs:
            profiler.stop()
        if profiler is not None and epoch == epochs - 1:
            profiler.start()

    size = {"image_size": IMAGE_SIZE, "augment": "none"} if kind == "images" else {}
    with fit_hooks(marks, profiler is not None):
        api.fit(data, model=MODELS[kind], strategy="finetune", epochs=epochs, batch_size=BATCH, precision="fp32",
                seed=SEED, patience=0, baseline=False, progress=False, out=str(out), on_epoch_end=on_epoch_end, **size)
    return [b - a for a, b in zip(marks, marks[1:])], accuracy[0]


def top_level(prof: Any) -> list[tuple[str, float]]:
    """(name, microseconds) of each profiled event that has no CPU parent."""
    return [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.cpu_parent is None]


def breakdown(events: list[tuple[str, float]], wall_s: float) -> dict[str, Any]:
    """Shares of ``wall_s`` per category (CATEGORIES, by name prefix of top-level events) and `other` (the rest of
    the wall time); the five largest unmatched top-level names, in seconds."""
    seconds = {name: 0.0 for name, _ in CATEGORIES}
    unmatched: dict[str, float] = {}
    for name, us in events:
        category = next((c for c, prefix in CATEGORIES if name.startswith(prefix)), None)
        if category is None:
            unmatched[name] = unmatched.get(name, 0.0) + us / 1e6
        else:
            seconds[category] += us / 1e6
    seconds["other"] = wall_s - sum(seconds.values())
    largest = sorted(unmatched.items(), key=lambda kv: -kv[1])[:5]
    return {"wall_seconds": round(wall_s, 3), "share": {k: round(v / wall_s, 3) for k, v in seconds.items()},
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "other_top_level_events": {k: round(v, 3) for k, v in largest}}


def top_ops(averages: list[tuple[str, float]], k: int = 8) -> list[dict[str, Any]]:
    """The ``k`` aten ops with the most self CPU time, from (name, self microseconds) pairs, with their share."""
    ops = sorted(((n, us) for n, us in averages if n.startswith("aten::")), key=lambda x: -x[1])[:k]
    total = sum(us for _, us in averages) or 1.0
    return [{"op": n, "self_seconds": round(us / 1e6, 3), "self_share": round(us / total, 3)} for n, us in ops]


def profiled(kind: str, data: DataSplits, side: str, out: Path) -> dict[str, Any]:
    """One 2-epoch run of ``side`` with epoch 2 under the profiler: its breakdown and top ops."""
    prof = profile(activities=[ProfilerActivity.CPU])
    seconds, _ = hand_loop(kind, data, 2, prof) if side == "hand" else fit_side(kind, data, 2, out, prof)
    averages = [(a.key, a.self_cpu_time_total) for a in prof.key_averages()]
    return {**breakdown(top_level(prof), seconds[-1]), "top_ops": top_ops(averages)}


def rates(seconds: list[float], n_items: int) -> dict[str, Any]:
    """Items/s of epoch 1 and of the later epochs (their median when there are several)."""
    later = [n_items / s for s in seconds[1:]]
    return {"epoch1": round(n_items / seconds[0], 2), "later": round(statistics.median(later), 2) if later else None,
            "epoch_seconds": [round(s, 3) for s in seconds]}


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side, items/s (later epochs and epoch 1) over the repeats, and fit/hand taken within each repeat."""
    out = {side: {key: stats([r[side][key] for r in runs]) for key in ("later", "epoch1")} for side in ("hand", "fit")}
    out["ratio_fit_over_hand"] = {key: stats([r["fit"][key] / r["hand"][key] for r in runs])
                                  for key in ("later", "epoch1")}
    return out


def environment() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git("rev-parse", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "transferkit", "benchmarks/throughput.py").splitlines(),
            "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "versions": {p: version(p) for p in ("torch", "torchvision", "timm", "transformers", "transferkit")}}


def print_kind(kind: str, setup: str, summary: dict[str, Any], profiles: dict[str, Any]) -> None:
    print(f"\n{kind}: {setup} (median [min-max] over repeats)")
    for row in ("hand", "fit", "ratio_fit_over_hand"):
        later, first = summary[row]["later"], summary[row]["epoch1"]
        print(f"{row:<20} later epochs {later['median']:>8.2f} [{later['min']:.2f}-{later['max']:.2f}]   "
              f"epoch 1 {first['median']:>8.2f} [{first['min']:.2f}-{first['max']:.2f}]")
    names = [c for c, _ in CATEGORIES] + ["other"]
    print(f"{'share of epoch 2':<20} " + " ".join(f"{n:>16}" for n in names) + "   wall s")
    for side, p in profiles.items():
        print(f"{side:<20} " + " ".join(f"{p['share'][n]:>16.3f}" for n in names) + f"   {p['wall_seconds']:.1f}")
    for side, p in profiles.items():
        print(f"{side} top ops: " + ", ".join(f"{o['op']} {o['self_seconds']:.2f}s" for o in p["top_ops"]))
        print(f"{side} other, top-level: " + ", ".join(f"{k} {v:.2f}s" for k, v in p["other_top_level_events"].items()))


def run_kind(kind: str, data: DataSplits, epochs: int, repeats: int, tmp: Path) -> tuple[list, dict]:
    """The interleaved repeats (hand, fit; fit, hand; ...) and the two profiled runs of one kind."""
    n_items = len(data.train) + len(data.val)
    runs = []
    for r in range(repeats):
        row = {}
        for side in ("hand", "fit") if r % 2 == 0 else ("fit", "hand"):
            seconds, accuracy = hand_loop(kind, data, epochs) if side == "hand" else \
                fit_side(kind, data, epochs, tmp / f"{kind}-{r}")
            row[side] = {**rates(seconds, n_items), "val_accuracy": round(accuracy, 3),
                         "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
            print(kind, r, side, row[side], flush=True)
        runs.append(row)
    profiles = {side: profiled(kind, data, side, tmp / f"{kind}-profile") for side in ("hand", "fit")}
    return runs, profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=400, help="training images (validation: a quarter as many)")
    parser.add_argument("--texts", type=int, default=96, help="training texts (validation: a third as many)")
    parser.add_argument("--image-epochs", type=int, default=3)
    parser.add_argument("--text-epochs", type=int, default=2)
    parser.add_argument("--kinds", default="images,text")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.nice(5)
    torch.set_num_threads(1)
    result: dict[str, Any] = {"benchmark": "throughput", "issue": 17, "environment": environment(),
                              "repeats": args.repeats, "precision": "fp32", "batch_size": BATCH}
    for kind in args.kinds.split(","):
        data, epochs = (image_data(args.images), args.image_epochs) if kind == "images" else \
            (text_data(args.texts), args.text_epochs)
        setup = (f"{MODELS[kind]}, {len(data.train)} train + {len(data.val)} val, {epochs} epochs, batch {BATCH}, "
                 f"fp32, finetune, 1 thread, items/s" + (f", {IMAGE_SIZE} px" if kind == "images" else
                                                         f", {MAX_TOKENS} tokens"))
        with tempfile.TemporaryDirectory() as tmp:
            runs, profiles = run_kind(kind, data, epochs, args.repeats, Path(tmp))
        summary = summarise(runs)
        print_kind(kind, setup, summary, profiles)
        result[kind] = {"setup": setup, "summary": summary, "breakdown_epoch2": profiles, "runs": runs}
    result["environment"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
