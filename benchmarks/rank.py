"""Transferability benchmark: do the estimators of `transferkit rank` predict which backbone transfers best?

For each dataset and seed, a K-per-class training subset is drawn; every registered backbone of the dataset's
modality is scored on it by ``transferkit.rank.rank`` (LogME, LEEP, NCE, H-score, k-NN, linear probe: frozen
features, no training), then adapted on the same subset with ``--target`` (default ``finetune``) and evaluated on
a fixed test set. Per dataset, over the backbones: Kendall's tau and Spearman's rho between each estimator and
the achieved test accuracy (means over seeds), whether the estimator's first choice is the best backbone (top-1),
and its regret (best accuracy minus the accuracy of the backbone it picks, in points). ``--target linear-probe``
is a cheap PROXY for the fine-tuned accuracy, labelled as such in the table and in the JSON (``target``).

Datasets (transferkit's builtins, as benchmarks/label_efficiency.py uses them): digits (30 per class at 64 px,
the 599-image test split), fashion-mnist (50 per class at 64 px, a fixed stratified 2,000-image test subset),
bbc-news (16 per topic, the 445-article test split). Rows already in --out are kept with --append.

    .venv/bin/python benchmarks/rank.py                      # everything (hours on 2 cores)
    .venv/bin/python benchmarks/rank.py --datasets digits --seeds 2 --append
    .venv/bin/python benchmarks/rank.py --quick              # digits, 3 backbones, linear-probe proxy: ~1-2 min
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
from scipy.stats import kendalltau, spearmanr

import transferkit
from transferkit.data.builtins import DATASETS
from transferkit.data.examples import DataSplits, Examples
from transferkit.data.splits import stratified_split, subsample_per_class
from transferkit.evaluate.transferability import ESTIMATORS
from transferkit.rank import candidate_names, rank

PLAN = {  # dataset -> labels per class, image size, fixed test subset size (None: the whole test split)
    "digits": {"k": 30, "image_size": 64, "test": None},
    "fashion-mnist": {"k": 50, "image_size": 64, "test": 2000},
    "bbc-news": {"k": 16, "image_size": None, "test": None},
}
QUICK = {"datasets": "digits", "models": "efficientnet_lite0,mobilenetv2,efficientnet_lite0-slim", "k": 10,
         "image_size": 32, "test": 300, "target": "linear-probe"}


def held_out_test(dataset: str, size: int | None) -> Examples:
    test = DATASETS[dataset]().test
    return test if size is None or size >= len(test) else stratified_split(test, size / len(test), 0)[1]


def run_dataset(dataset: str, seed: int, plan: dict, args: argparse.Namespace, workdir: Path, done: set) -> list[dict]:
    """Rank every candidate on the seed's K-subset, then fit each on it and score the test set: one row per model."""
    splits = DATASETS[dataset]()
    train = subsample_per_class(splits.train, plan["k"], seed)
    test = held_out_test(dataset, plan["test"])
    models = args.models.split(",") if args.models else candidate_names(train.modality, None)
    models = [m for m in models if (dataset, seed, m) not in done]
    if not models:
        return []
    start = time.perf_counter()
    summary = rank(DataSplits(train=train), models, seed=seed, image_size=plan["image_size"])
    rank_seconds = time.perf_counter() - start
    rows = []
    for scored in summary["models"]:
        start = time.perf_counter()
        result = transferkit.fit(DataSplits(train=train, test=test), model=scored["name"], strategy=args.target,
                                 seed=seed, epochs=args.text_epochs if train.modality == "text" else args.epochs,
                                 image_size=plan["image_size"], progress=False,
                                 out=str(workdir / f"{dataset}-{seed}-{scored['name'].replace(':', '_')}"))
        rows.append({"dataset": dataset, "seed": seed, "model": scored["name"], "n_train": len(train),
                     "n_test": len(test), "image_size": plan["image_size"], "target": args.target,
                     "proxy": args.target != "finetune", "scores": scored["scores"],
                     "accuracy": result.metrics["test"]["accuracy"], "macro_f1": result.metrics["test"]["macro_f1"],
                     "rank_seconds": scored["seconds"]["total"], "fit_seconds": time.perf_counter() - start})
        print(f"{dataset:13s} seed {seed} {scored['name']:26s} LogME {_fmt(scored['scores']['logme'])}  "
              f"{args.target} accuracy {rows[-1]['accuracy']:.4f}  ({rows[-1]['fit_seconds']:.0f} s)", flush=True)
    rows += [{"dataset": dataset, "seed": seed, "model": s["name"], "skipped": s["reason"]} for s in summary["skipped"]]
    print(f"{dataset}: ranked {len(summary['models'])} backbones in {rank_seconds:.0f} s", flush=True)
    return rows


def correlations(rows: list[dict]) -> list[dict]:
    """Per dataset and estimator, over the backbones (scores and accuracies averaged over seeds): Kendall's tau,
    Spearman's rho, top-1 (the estimator's best is the most accurate backbone) and regret in accuracy points.
    None where fewer than 3 backbones have a number for the estimator or the values are all equal."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        by_model: dict[str, list[dict]] = {}
        for r in rows:
            if r["dataset"] == dataset and "accuracy" in r:
                by_model.setdefault(r["model"], []).append(r)
        accuracy = {m: float(np.mean([r["accuracy"] for r in rs])) for m, rs in by_model.items()}
        for estimator in ESTIMATORS:
            values = {m: [r["scores"][estimator] for r in rs] for m, rs in by_model.items()}
            numeric = {m: float(np.mean(v)) for m, v in values.items() if all(isinstance(x, float) for x in v)}
            out.append({"dataset": dataset, "estimator": estimator, "n_models": len(numeric),
                        "target": next(iter(by_model.values()))[0]["target"] if by_model else None,
                        **_agreement(numeric, accuracy)})
    return out


def _agreement(scores: dict[str, float], accuracy: dict[str, float]) -> dict:
    names = sorted(scores)
    x, y = [scores[m] for m in names], [accuracy[m] for m in names]
    if len(names) < 3 or len(set(x)) < 2:  # too few backbones, or an estimator that cannot tell them apart
        return {"kendall_tau": None, "spearman_rho": None, "top1": None, "regret_points": None}
    tau, rho = kendalltau(x, y).statistic, spearmanr(x, y).statistic
    pick = max(names, key=scores.get)
    best = max(accuracy[m] for m in names)
    return {"kendall_tau": None if np.isnan(tau) else float(tau), "spearman_rho": None if np.isnan(rho) else float(rho),
            "top1": accuracy[pick] == best, "regret_points": round(100 * (best - accuracy[pick]), 2), "pick": pick}


def print_tables(rows: list[dict], agreement: list[dict]) -> None:
    scored = [r for r in rows if "accuracy" in r]
    for dataset in dict.fromkeys(r["dataset"] for r in scored):
        part = [r for r in scored if r["dataset"] == dataset]
        target = part[0]["target"] + (" (PROXY for fine-tuning)" if part[0]["proxy"] else "")
        print(f"\n{dataset}: test accuracy after {target}, mean over seeds; estimators on the training subset")
        print(f"{'model':26s} " + " ".join(f"{e:>8s}" for e in ESTIMATORS) + f" {'accuracy':>9s}")
        for model in dict.fromkeys(r["model"] for r in part):
            mine = [r for r in part if r["model"] == model]
            cells = [_fmt(_mean([r["scores"][e] for r in mine])) for e in ESTIMATORS]
            print(f"{model:26s} " + " ".join(f"{c:>8s}" for c in cells) + f" {_mean([r['accuracy'] for r in mine]):9.4f}")
    print(f"\n{'dataset':14s} {'estimator':9s} {'models':>6s} {'tau':>6s} {'rho':>6s} {'top-1':>6s} {'regret':>7s}")
    for a in agreement:
        print(f"{a['dataset']:14s} {a['estimator']:9s} {a['n_models']:6d} {_fmt(a['kendall_tau'], 2):>6s} "
              f"{_fmt(a['spearman_rho'], 2):>6s} {str(a['top1']) if a['top1'] is not None else '-':>6s} "
              f"{_fmt(a['regret_points'], 1):>7s}")


def _mean(values: list) -> float | str:
    return float(np.mean(values)) if all(isinstance(v, float) for v in values) else "n/a"


def _fmt(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else "-" if value is None else "n/a"


def environment(args: argparse.Namespace) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"commit": commit, "date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "transferkit": transferkit.__version__,
            "target": args.target, "epochs": args.epochs, "text_epochs": args.text_epochs}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(PLAN))
    parser.add_argument("--models", help="comma-separated backbones [default: every registered one of the modality]")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--target", default="finetune", help="how each backbone is adapted for the accuracy "
                        "(finetune; linear-probe is a cheap proxy, labelled as such)")
    parser.add_argument("--epochs", type=int, default=10, help="max epochs for image datasets")
    parser.add_argument("--text-epochs", type=int, default=4, help="max epochs for text")
    parser.add_argument("--append", action="store_true", help="keep rows already in --out and skip them")
    parser.add_argument("--quick", action="store_true", help="digits at 32 px, 10 per class, 3 backbones, "
                        "linear-probe proxy, 300 test images; writes to a temporary file unless --out is given")
    parser.add_argument("--out", help="results JSON [default: benchmarks/results/rank.json]")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.target = QUICK["datasets"], QUICK["target"]
        args.models = args.models or QUICK["models"]
        args.out = args.out or str(Path(tempfile.mkdtemp(prefix="tk-rank-quick-")) / "rank.json")
    args.out = args.out or "benchmarks/results/rank.json"
    return args


def main() -> None:
    args = arguments()
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    workdir = Path(tempfile.mkdtemp(prefix="tk-bench-rank-"))
    rows = json.loads(Path(args.out).read_text())["rows"] if args.append and Path(args.out).exists() else []
    done = {(r["dataset"], r["seed"], r["model"]) for r in rows}
    for dataset in args.datasets.split(","):
        plan = {**PLAN[dataset], **({k: QUICK[k] for k in ("k", "image_size", "test")} if args.quick else {})}
        for seed in range(args.seeds):
            rows += run_dataset(dataset, seed, plan, args, workdir, done)
            agreement = correlations(rows)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"environment": environment(args), "plan": PLAN,
                                                  "quick": args.quick, "rows": rows, "agreement": agreement}, indent=2))
    print_tables(rows, correlations(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
