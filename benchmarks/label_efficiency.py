"""Label-efficiency benchmark: every transfer strategy vs scratch vs a plain reference, at K labels per class.

Runs each registered strategy (transferkit) and a plain logistic regression on pixels (images) or TF-IDF (text)
on the *same* K-per-class training subsets (seeded) and the same fixed test subset; prints a table (mean ± std
over seeds, wall time per run) and writes benchmarks/results/label_efficiency.json with the environment.
Rows already in --out are kept and skipped with --append, so a long protocol can run in pieces.

    .venv/bin/python benchmarks/label_efficiency.py                          # full protocol (many hours on 2 cores)
    .venv/bin/python benchmarks/label_efficiency.py --plan digits:10,50 --append
    .venv/bin/python benchmarks/label_efficiency.py --quick                  # 1 seed, digits only: a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

import transferkit
from transferkit.config import FitConfig
from transferkit.data.builtins import DATASETS
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.splits import stratified_split, subsample_per_class
from transferkit.strategies import STRATEGIES as STRATEGY_REGISTRY

PLAN = {"fashion-mnist": (10, 100, 1000), "digits": (10, 50), "bbc-news": (8, 64)}
STRATEGIES = tuple(STRATEGY_REGISTRY)
TEST_SUBSET = {"fashion-mnist": 2000}  # fixed stratified test subset (seed 0); others use the full test split
IMAGE_SIZE = 64


def reference(train, test) -> tuple[float, float]:
    """Logistic regression on raw pixels (images) or TF-IDF (texts): the bar transfer has to clear."""
    if train.modality == "text":
        vec = TfidfVectorizer(sublinear_tf=True, min_df=1, ngram_range=(1, 2))
        x_train, x_test = vec.fit_transform(train.inputs), vec.transform(test.inputs)
    else:
        flat = lambda items: np.stack([np.asarray(x, np.float32).reshape(-1) / 255 for x in items])  # noqa: E731
        scaler = StandardScaler().fit(flat(train.inputs))
        x_train, x_test = scaler.transform(flat(train.inputs)), scaler.transform(flat(test.inputs))
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(x_train, train.labels)
    pred = clf.predict(x_test)
    return accuracy_score(test.labels, pred), f1_score(test.labels, pred, average="macro")


def run_one(dataset: str, k: int, seed: int, strategy: str, splits, test, epochs: int, workdir: Path,
            val_is_train: bool = False, strategy_options: dict | None = None) -> dict:
    """One fit on the seeded K-per-class subset; fit holds its validation split out of the K (or, with
    ``val_is_train``, validates on the K training examples themselves: K=1 leaves nothing to hold out)."""
    train = subsample_per_class(splits.train, k, seed)
    start = time.perf_counter()
    if strategy == "reference":
        fit_part, _ = stratified_split(train, FitConfig().val_fraction, seed)  # the same examples the models train on
        acc, f1 = reference(fit_part, test)
        return {"accuracy": acc, "macro_f1": f1, "seconds": time.perf_counter() - start, "n_train": len(fit_part)}
    data = DataSplits(train=train, val=train if val_is_train else None, test=test)
    size = IMAGE_SIZE if train.modality == "image" else None  # fit refuses --image-size for text
    extra = {"strategy_options": strategy_options} if strategy_options else {}
    result = transferkit.fit(data, strategy=strategy, seed=seed, epochs=epochs, image_size=size,
                             out=str(workdir / f"{dataset}-{k}-{strategy}-{seed}"), progress=False, **extra)
    m = result.metrics["test"]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "seconds": time.perf_counter() - start,
            "n_train": metrics["n_train_used"], "trainable_params": metrics["trainable_params"],
            "total_params": metrics["total_params"]}


def environment() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"commit": commit, "date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "transferkit": transferkit.__version__,
            "precision": "auto (fp32 where the CPU lacks bf16)", "image_size": IMAGE_SIZE}


def parse_plan(text: str | None, datasets: str) -> dict[str, tuple[int, ...]]:
    """'digits:10,50;bbc-news:8' -> {'digits': (10, 50), 'bbc-news': (8,)}; default: PLAN for --datasets."""
    if not text:
        return {d: PLAN[d] for d in datasets.split(",")}
    plan = {}
    for part in text.split(";"):
        name, _, ks = part.partition(":")
        plan[name] = tuple(int(k) for k in ks.split(",")) if ks else PLAN[name]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(PLAN))
    parser.add_argument("--plan", help="datasets and K values, e.g. 'digits:10,50;fashion-mnist:100'")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="max epochs for image datasets")
    parser.add_argument("--text-epochs", type=int, default=4, help="max epochs for text (MiniLM at 256 tokens is slow)")
    parser.add_argument("--strategies", default=",".join((*STRATEGIES, "reference")))
    parser.add_argument("--append", action="store_true", help="keep rows already in --out and skip them")
    parser.add_argument("--quick", action="store_true", help="digits, 1 seed, 3 epochs")
    parser.add_argument("--out", default="benchmarks/results/label_efficiency.json")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.seeds, args.epochs = "digits", 1, 3
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    workdir = Path(tempfile.mkdtemp(prefix="tk-bench-"))
    rows = json.loads(Path(args.out).read_text())["rows"] if args.append and Path(args.out).exists() else []
    done = {(r["dataset"], r["labels_per_class"], r["strategy"]) for r in rows}
    for dataset, ks in parse_plan(args.plan, args.datasets).items():
        splits = DATASETS[dataset]()
        test = test_split(dataset, splits)
        for k in ks:
            for strategy in args.strategies.split(","):
                if (dataset, k, strategy) in done:
                    continue
                epochs = args.text_epochs if splits.train.modality == "text" else args.epochs
                runs = [run_one(dataset, k, s, strategy, splits, test, epochs, workdir) for s in range(args.seeds)]
                row = summarize({"dataset": dataset, "labels_per_class": k, "strategy": strategy,
                                 "n_test": len(test), "seeds": args.seeds, "max_epochs": epochs, "runs": runs})
                rows.append(row)
                _write(args.out, rows)  # after every row, so an interrupted benchmark keeps what it measured
                print(f"{dataset:14s} {k:4d}/class {strategy:13s} acc {row['accuracy']['mean']:.4f} "
                      f"± {row['accuracy']['std']:.4f}  F1 {row['macro_f1']['mean']:.4f}  "
                      f"{row['seconds']['mean']:7.1f} s/run", flush=True)
    print_table(rows)
    print(f"wrote {args.out}")


def test_split(dataset: str, splits: DataSplits) -> Examples:
    """The dataset's test split, or its fixed stratified subset (seed 0) where TEST_SUBSET names one."""
    if dataset not in TEST_SUBSET:
        return splits.test
    return stratified_split(splits.test, TEST_SUBSET[dataset] / len(splits.test), 0)[1]


def summarize(row: dict) -> dict:
    """``row`` with the mean and std over its ``runs`` of accuracy, macro-F1 and seconds added."""
    for key in ("accuracy", "macro_f1", "seconds"):
        values = [r[key] for r in row["runs"]]
        row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return row


def print_table(rows: list[dict], seconds: bool = False) -> None:
    """Accuracy mean ± std: one line per (dataset, K), one column per strategy; the best in each line starred;
    with ``seconds`` each cell also gives the mean wall time per run (s). A row without ``accuracy`` is 'n/a'."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    cells: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["labels_per_class"]), {})[r["strategy"]] = r
    width = 21 if seconds else 14
    print(f"\n{'dataset':14s} {'K':>5s} " + " ".join(f"{s:>{width}s}" for s in strategies))
    for (dataset, k), by_strategy in cells.items():
        measured = {s: r for s, r in by_strategy.items() if "accuracy" in r}
        best = max(measured, key=lambda s: measured[s]["accuracy"]["mean"], default=None)
        line = []
        for s in strategies:
            r = by_strategy.get(s)
            text = "-" if r is None else "n/a" if s not in measured else \
                f"{r['accuracy']['mean']:.3f}±{r['accuracy']['std']:.3f}" + ("*" if s == best else " ") + \
                (f" {r['seconds']['mean']:5.0f}s" if seconds else "")
            line.append(f"{text:>{width}s}")
        print(f"{dataset:14s} {k:5d} " + " ".join(line))


def _write(out: str, rows: list[dict]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"environment": environment(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
