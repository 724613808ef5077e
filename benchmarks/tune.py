"""Tune benchmark: `transferkit tune`'s best configuration vs the default configuration, on two datasets.

Both sides are chosen on validation only and see the same K-per-class training subset and validation split (same
seed); the test split is evaluated once per side: by the default fit, and by tune's re-fit of its best trial. Prints
a table and writes benchmarks/results/tune.json (rows + environment). The tune runs keep their folders (tune.json,
plots, study.db) under --workdir, so an interrupted benchmark continues its studies when run again.

    .venv/bin/python benchmarks/tune.py                                  # digits + bbc-news, 20 trials (hours on 2 cores)
    .venv/bin/python benchmarks/tune.py --datasets digits --strategy finetune --trials 30
    .venv/bin/python benchmarks/tune.py --quick                          # 3 trials of 1 epoch on digits: a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import transferkit
from transferkit import api
from transferkit.tune import tune

# dataset -> (model, K labels per class, extra fit options)
DATASETS = {"digits": ("efficientnet_lite0", 20, {"image_size": 32}),
            "bbc-news": ("minilm", 16, {})}


def run(dataset: str, strategy: str, trials: int, seed: int, workdir: Path, quick: bool) -> dict:
    model, k, extra = DATASETS[dataset]
    options = {"model": model, "labels_per_class": k, "seed": seed, "progress": False, **extra,
               **({"epochs": 1} if quick else {})}
    data = f"builtin:{dataset}"
    start = time.perf_counter()
    default = api.fit(data, strategy=strategy, out=str(workdir / f"{dataset}-{strategy}-default"), **options)
    default_seconds = time.perf_counter() - start
    start = time.perf_counter()
    summary = tune(data, strategy, trials=trials, out=workdir / f"{dataset}-{strategy}-tune",
                   on_trial=lambda line: print(f"  [{dataset}] {line}", flush=True), **options)
    metric = summary["metric"].removeprefix("val_")
    refit = summary["refit"]["metrics"]
    return {"dataset": dataset, "strategy": strategy, "model": model, "labels_per_class": k, "seed": seed,
            "trials": summary["counts"], "metric": metric,
            "default": {"val": default.metrics["val"][metric], "test": default.metrics["test"][metric],
                        "seconds": round(default_seconds, 1)},
            "tuned": {"val_in_search": summary["best"]["value"], "val": refit["val"][metric],
                      "test": refit["test"][metric], "params": summary["best"]["params"],
                      "seconds": round(time.perf_counter() - start, 1)},
            "default_trial_val": (summary["default"] or {}).get("value"),
            "test_gain_points": round(100 * (refit["test"][metric] - default.metrics["test"][metric]), 2)}


def environment() -> dict:
    return {"transferkit": transferkit.__version__ if hasattr(transferkit, "__version__") else "dev",
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,bbc-news")
    parser.add_argument("--strategy", default="head")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="runs/bench-tune")
    parser.add_argument("--out", default="benchmarks/results/tune.json")
    parser.add_argument("--quick", action="store_true", help="3 trials of 1 epoch on digits: a smoke run")
    args = parser.parse_args()
    datasets = ["digits"] if args.quick else [d.strip() for d in args.datasets.split(",") if d.strip()]
    trials = 3 if args.quick else args.trials
    rows = [run(d, args.strategy, trials, args.seed, Path(args.workdir), args.quick) for d in datasets]
    print(f"\n{'dataset':10} {'strategy':9} {'metric':9} {'default val':>11} {'tuned val':>9} "
          f"{'default test':>12} {'tuned test':>10} {'gain (pts)':>10}")
    for r in rows:
        print(f"{r['dataset']:10} {r['strategy']:9} {r['metric']:9} {r['default']['val']:11.4f} "
              f"{r['tuned']['val']:9.4f} {r['default']['test']:12.4f} {r['tuned']['test']:10.4f} "
              f"{r['test_gain_points']:10.2f}")
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"environment": environment(), "rows": rows}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
