"""Pretraining benchmark: a few-label fit after `transferkit pretrain` on the data's unlabeled training inputs vs
the same fit from the original backbone.

- ``bbc-news`` (text): SimCSE (two random 40-word spans of an article as its two views) on BBC's training split
  (1,780 articles, labels ignored; the fixed 20 % test split is never read by pretrain), base ``minilm``.
- ``digits`` (images): SimCLR on scikit-learn's UCI digits training split (labels ignored, test never read),
  base ``efficientnet_lite0`` at 32 px: 8x8 grey digits are far from ImageNet photos.

Then for each seed a K-per-class fit (same seed: same subsample, same validation split) from the base model and
from the adapted folder, scored once on the test split. Writes one entry per dataset into
benchmarks/results/pretrain.json (the other datasets' entries are kept). The pretrain folder is kept under
--workdir, so an interrupted run continues it (pretrain --resume).

    .venv/bin/python benchmarks/pretrain.py        # BBC: 150 SimCSE steps (40-word spans), K=4, 3 seeds, probe
    .venv/bin/python benchmarks/pretrain.py --dataset digits --steps 300 --batch-size 64   # SimCLR on digits
    .venv/bin/python benchmarks/pretrain.py --steps 2 --seeds 1 --quick   # smoke run
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import transferkit
from transferkit.pretrain import pretrain

RESULTS = Path(__file__).parent / "results" / "pretrain.json"
DATASETS = {  # name -> (source, base model, pretrain method, fit options)
    "bbc-news": ("builtin:bbc-news", "minilm", "simcse", {}),
    "digits": ("builtin:digits", "efficientnet_lite0", "simclr", {"image_size": 32}),
}


def adapted_folder(workdir: Path, dataset: str, steps: int, batch_size: int, max_length: int,
                   span_words: int, lr: float | None = None) -> tuple[Path, float, dict]:
    source, model, method, fit_options = DATASETS[dataset]
    name = "bbc" if dataset == "bbc-news" else dataset
    out = workdir / (f"{name}-{method}-{steps}-b{batch_size}" +
                     (f"-l{max_length}-s{span_words}" if method == "simcse" else "") + (f"-lr{lr:g}" if lr else ""))
    start = time.perf_counter()
    if not (out / "pretrain.json").is_file():
        if (out / "config.json").is_file():
            pretrain(resume=out)
        elif method == "simcse":
            pretrain(source, model=model, method=method, steps=steps, batch_size=batch_size, lr=lr,
                     max_length=max_length, span_words=span_words, out=str(out), checkpoint_every=25)
        else:
            pretrain(source, model=model, method=method, steps=steps, batch_size=batch_size, lr=lr, out=str(out),
                     checkpoint_every=25, **fit_options)
    manifest = json.loads((out / "pretrain.json").read_text())
    return out, time.perf_counter() - start, manifest


def write_entry(entry: dict) -> None:
    """Put ``entry`` into RESULTS in place of an earlier entry for the same dataset."""
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    entries = old.get("datasets", [old] if "rows" in old else [])  # (the one-dataset layout before images)
    entries = [e for e in entries if e.get("dataset") != entry["dataset"]] + [entry]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"datasets": sorted(entries, key=lambda e: e["dataset"])}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="bbc-news")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None, help="pretrain's peak learning rate (default: its own)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--span-words", type=int, default=40)
    parser.add_argument("--k", type=int, default=4, help="labels per class of the fit")
    parser.add_argument("--strategy", default="linear-probe")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-pretrain"))
    parser.add_argument("--quick", action="store_true", help="1 epoch fits, results not written")
    args = parser.parse_args()
    folder, pretrain_seconds, manifest = adapted_folder(args.workdir, args.dataset, args.steps, args.batch_size,
                                                      args.max_length, args.span_words, args.lr)
    source, base, method, fit_options = DATASETS[args.dataset]
    rows = []
    for seed in range(args.seeds):
        for model in (base, str(folder)):
            name = "pretrained" if model != base else base
            out = args.workdir / f"fit-{args.dataset}-{name}-{args.strategy}-k{args.k}-s{seed}"
            result = transferkit.fit(source, model=model, strategy=args.strategy, labels_per_class=args.k,
                                     seed=seed, out=str(out), progress=False, **fit_options,
                                     **({"epochs": 1} if args.quick else {}))
            test = result.metrics["test"]
            rows.append({"model": name, "seed": seed, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
                         "seconds": round(result.seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in (base, "pretrained"):
        acc = torch.tensor([r["accuracy"] for r in rows if r["model"] == name], dtype=torch.float64)
        summary[name] = {"accuracy_mean": round(float(acc.mean()), 4),
                         "accuracy_std": round(float(acc.std()), 4) if len(acc) > 1 else 0.0}
    print(json.dumps(summary))
    if not args.quick:
        options = {"max_length": args.max_length, "span_words": args.span_words} if method == "simcse" else fit_options
        write_entry({
            "dataset": source, "strategy": args.strategy, "labels_per_class": args.k, "seeds": args.seeds,
            "pretrain": {k: manifest[k] for k in ("method", "base_model", "steps", "n_inputs", "first_loss",
                                                  "final_loss")} | {"batch_size": args.batch_size, **options,
                                                                    "lr": manifest["config"].get("lr"),
                                                                    "seconds": round(pretrain_seconds, 1)},
            "rows": rows, "summary": summary,
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads()},
        })


if __name__ == "__main__":
    main()
