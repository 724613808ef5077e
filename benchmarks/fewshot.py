"""Few-shot benchmark (issue 16): protonet, maml and setfit against linear-probe and finetune at 1, 5, 8 labels/class.

Imports transferkit and benchmarks/label_efficiency.py, whose protocol it reuses (``run_one``: the same seeded
K-per-class subsets for every strategy, 64 px images, max 10 epochs for images and 4 for text; ``test_split``:
Fashion-MNIST's fixed stratified 2,000-image test subset, BBC News' full test split; ``print_table``).
Validation: at K >= 2 fit holds one example per class out of the K (K=5 trains on 4, K=8 on 7), as in
label_efficiency. At K=1 fit refuses that split (a class of one example has nothing to hold out: DataError), so
here every strategy validates on its K=1 training examples themselves (no extra labels; epoch selection and
early stopping then see training accuracy only); protonet, whose episodes need 2+ examples per class, takes its
closed form (``backbone=frozen``: each prototype is the one example's embedding), and maml, whose meta-training
episodes need the same, is not run (its fine-tuning stage alone is partial).
Writes benchmarks/results/fewshot.json (environment with the commit at the start; one row per cell and strategy,
with its per-seed runs and ``measured_at``, the commit of the process that ran it; --append keeps rows already
there) and prints the table and the issue's two aims' verdicts.

    .venv/bin/python benchmarks/fewshot.py                                    # every cell, aims first
    .venv/bin/python benchmarks/fewshot.py --plan 'bbc-news:8;fashion-mnist:5' --append
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from transferkit.core.errors import ConfigError, DataError
from transferkit.data.builtins import DATASETS

sys.path.insert(0, str(Path(__file__).parent))
from label_efficiency import environment, print_table, run_one, summarize, test_split  # noqa: E402

CELLS = (("bbc-news", 8), ("fashion-mnist", 5), ("bbc-news", 1), ("fashion-mnist", 1), ("bbc-news", 5),
         ("fashion-mnist", 8))  # the two aim cells first, then K=1, then the rest
AIMS = (("bbc-news", 8), ("fashion-mnist", 5))
BASELINES = ("linear-probe", "finetune")
STRATEGIES = (*BASELINES, "protonet", "maml", "setfit")
TEXT_ONLY = ("setfit",)
ONE_SHOT_OPTIONS = {"protonet": {"backbone": "frozen"}}
ONE_SHOT_SKIP = {"maml": "not run at K=1: FOMAML's episodes need 2+ training examples per class, and without "
                         "them (meta_epochs=0) maml is partial fine-tuning"}
NOTE = ("K labels per class in total. K >= 2: fit holds 1 per class out of the K for validation (trains on K-1). "
        "K=1: validation = the K=1 training examples themselves (fit refuses to split one example); protonet "
        "with backbone=frozen (episodes need 2+ per class), maml not run. Wall times: 1 thread, niced, beside "
        "another 1-thread benchmark on 2 cores.")


def parse_cells(text: str | None) -> list[tuple[str, int]]:
    """'bbc-news:8;fashion-mnist:5,1' -> [('bbc-news', 8), ('fashion-mnist', 5), ('fashion-mnist', 1)], in
    order; None -> CELLS. Raises ValueError on an unknown dataset or a K that is not an int >= 1."""
    if not text:
        return list(CELLS)
    cells = []
    for part in text.split(";"):
        name, _, ks = part.partition(":")
        if name not in DATASETS or not ks:
            raise ValueError(f"--plan part {part!r}: expected DATASET:K[,K...] with DATASET one of {list(DATASETS)}")
        cells += [(name, int(k)) for k in ks.split(",") if int(k) >= 1]
    return cells


def cell_setup(strategy: str, k: int) -> tuple[dict | None, str | None]:
    """(strategy options, reason to skip) of ``strategy`` at K labels per class (only K=1 differs)."""
    if k != 1:
        return None, None
    return ONE_SHOT_OPTIONS.get(strategy), ONE_SHOT_SKIP.get(strategy)


def verdicts(rows: list[dict]) -> list[str]:
    """One line per aim cell measured: protonet's mean accuracy against the best of linear-probe and finetune,
    and whether it beats it (the issue's aim); the best few-shot strategy of the cell where that is not protonet."""
    lines = []
    for dataset, k in AIMS:
        cell = {r["strategy"]: r["accuracy"]["mean"] for r in rows
                if (r["dataset"], r["labels_per_class"]) == (dataset, k) and "accuracy" in r}
        if "protonet" not in cell or not all(b in cell for b in BASELINES):
            continue
        base = max(BASELINES, key=cell.__getitem__)
        met = "met" if cell["protonet"] > cell[base] else "not met"
        line = f"{dataset} {k}/class: protonet {cell['protonet']:.3f} vs best of linear-probe/finetune " \
               f"{cell[base]:.3f} ({base}): aim {met}"
        others = {s: a for s, a in cell.items() if s not in BASELINES}
        best = max(others, key=others.__getitem__)
        if best != "protonet":
            line += f"; best few-shot strategy {best} {others[best]:.3f} " + \
                ("beats" if others[best] > cell[base] else "does not beat") + " it"
        lines.append(line)
    return lines


def measure(dataset: str, k: int, strategy: str, splits, test, args, workdir: Path) -> dict:
    """The row of one cell and strategy: every seed's run, or the reason it was skipped."""
    epochs = args.text_epochs if splits.train.modality == "text" else args.epochs
    row = {"dataset": dataset, "labels_per_class": k, "strategy": strategy, "n_test": len(test),
           "seeds": args.seeds, "max_epochs": epochs}
    options, skip = cell_setup(strategy, k)
    if skip:
        return {**row, "skipped": skip}
    row.update(validation="the K training examples" if k == 1 else "1 per class held out of the K",
               strategy_options=options or {})
    runs = []
    for seed in range(args.seeds):
        try:
            runs.append(run_one(dataset, k, seed, strategy, splits, test, epochs, workdir, val_is_train=k == 1,
                                strategy_options=options))
        except (ConfigError, DataError) as error:  # a refusal is a result too: recorded, the protocol goes on
            return {**row, "skipped": f"seed {seed}: {error}"}
        finally:
            shutil.rmtree(workdir / f"{dataset}-{k}-{strategy}-{seed}", ignore_errors=True)  # checkpoints: GBs
    return summarize({**row, "runs": runs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", help="cells in order, e.g. 'bbc-news:8;fashion-mnist:5,1' (default: all)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="max epochs for image datasets")
    parser.add_argument("--text-epochs", type=int, default=4, help="max epochs for text (MiniLM at 256 tokens)")
    parser.add_argument("--append", action="store_true", help="keep rows already in --out and skip them")
    parser.add_argument("--out", default="benchmarks/results/fewshot.json")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    env = {**environment(), "protocol": NOTE}  # at the start: the code this process runs (others may commit)
    workdir = Path(tempfile.mkdtemp(prefix="tk-fewshot-"))
    rows = json.loads(Path(args.out).read_text())["rows"] if args.append and Path(args.out).exists() else []
    done = {(r["dataset"], r["labels_per_class"], r["strategy"]) for r in rows}
    loaded: dict[str, tuple] = {}
    for dataset, k in parse_cells(args.plan):
        if dataset not in loaded:
            splits = DATASETS[dataset]()
            loaded[dataset] = splits, test_split(dataset, splits)
        splits, test = loaded[dataset]
        for strategy in args.strategies.split(","):
            if (dataset, k, strategy) in done or (strategy in TEXT_ONLY and splits.train.modality != "text"):
                continue
            row = {**measure(dataset, k, strategy, splits, test, args, workdir), "measured_at": env["commit"]}
            rows.append(row)
            _write(args.out, env, rows)  # after every row, so an interrupted benchmark keeps what it measured
            summary = row.get("skipped") or f"acc {row['accuracy']['mean']:.4f} ± {row['accuracy']['std']:.4f}  " \
                f"F1 {row['macro_f1']['mean']:.4f}  {row['seconds']['mean']:7.1f} s/run"
            print(f"{dataset:14s} {k:2d}/class {strategy:13s} {summary}", flush=True)
    print_table(rows, seconds=True)
    print("\n" + "\n".join(verdicts(rows)))
    print(f"wrote {args.out}")


def _write(out: str, env: dict, rows: list[dict]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"environment": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
