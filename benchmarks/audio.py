"""Audio benchmark (issue 18): spoken-language identification (en/es/fr/it/ru) on Asterisk's studio prompts.

Data: benchmarks/audio_data.py (Debian asterisk-core-sounds-*-wav, 8 kHz, one voice per language, so voice and
language are confounded), split by prompt name (seed 0): no prompt heard in training, in any language, is in val
or test. Rows: per-language training size (10 / 30 / all clips; a seeded subset per seed, val and test fixed) x
strategy (linear-probe, finetune, lora, scratch on whisper-tiny-en through transferkit.fit, and 'reference': a
standardised logistic regression on MFCC statistics, the mean and std of 20 MFCCs over the whole clip, librosa).
Accuracy and macro-F1 on the prompt-disjoint test set; the seeds vary the training subset and the training.
Rows already in --out are kept and skipped with --append; pieces run side by side join with --merge.

    .venv/bin/python benchmarks/audio.py                                    # everything, 3 seeds
    .venv/bin/python benchmarks/audio.py --strategies reference --append    # one strategy (or --sizes 10,30)
    .venv/bin/python benchmarks/audio.py --quick                            # 1 seed, 10 per language, probe + ref
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import transferkit
from transferkit.config import FitConfig
from transferkit.evaluate.baselines import mfcc_statistics

sys.path.insert(0, str(Path(__file__).parent))
from audio_data import DEFAULT_WORK, MARKER, build  # noqa: E402  (benchmarks/ is not a package)

MODEL = "whisper-tiny-en"
SIZES = ("10", "30", "all")  # training clips per language
STRATEGIES = ("linear-probe", "finetune", "lora", "scratch", "reference")
METRICS = ("accuracy", "macro_f1")
MFCC = {"n_mfcc": 20, "n_fft": 256, "hop_length": 80, "n_mels": 40}  # mfcc_statistics at 8 kHz: 32 ms / 10 ms
_features: dict[str, np.ndarray] = {}  # clip path -> MFCC statistics (val/test are shared by every row)


def clips(root: Path, part: str) -> tuple[list[Path], list[str]]:
    """(files, languages) of root/<part>/<lang>/*.wav, sorted."""
    files = sorted((root / part).glob("*/*.wav"))
    return files, [f.parent.name for f in files]


def mfcc_stats(path: Path) -> np.ndarray:
    """Mean and std over time of 20 MFCCs of the whole clip at its own rate (8 kHz here): 40 numbers."""
    key = str(path)
    if key not in _features:
        wave, rate = sf.read(key, dtype="float32", always_2d=True)
        _features[key] = mfcc_statistics(wave.mean(axis=1), rate)  # compare's reference, at the clip's own rate
    return _features[key]


def reference(root: Path, seed: int) -> dict:
    """The plain baseline, trained on the same training clips as the models (not on val)."""
    (train, y_train), (test, y_test) = clips(root, "train"), clips(root, "test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    model.fit(np.stack([mfcc_stats(p) for p in train]), y_train)
    pred = model.predict(np.stack([mfcc_stats(p) for p in test]))
    return {"accuracy": float(accuracy_score(y_test, pred)),
            "macro_f1": float(f1_score(y_test, pred, average="macro")), "n_train": len(train)}


def fit_options(args: argparse.Namespace) -> dict:
    """Options only a newer FitConfig knows (clip_seconds) are passed when it has them."""
    known = {f.name for f in fields(FitConfig)}
    return {"clip_seconds": args.clip_seconds} if args.clip_seconds and "clip_seconds" in known else {}


def run_one(root: Path, strategy: str, seed: int, args: argparse.Namespace, out: Path) -> dict:
    start = time.perf_counter()
    if strategy == "reference":
        return {"seed": seed, **reference(root, seed), "seconds": time.perf_counter() - start}
    result = transferkit.fit(str(root), model=args.model, strategy=strategy, seed=seed, epochs=args.epochs,
                             baseline=False, progress=False, out=str(out), **fit_options(args))
    seconds = time.perf_counter() - start
    record = json.loads((result.run_dir / "metrics.json").read_text())
    n_train, n_val, n_test = (len(clips(root, part)[0]) for part in ("train", "val", "test"))
    epochs_run = max(len(result.history) - 1, 0)  # history row 0: before training
    run = {"seed": seed, **{k: float(result.metrics["test"][k]) for k in METRICS}, "seconds": seconds,
           "train_seconds": record.get("train_seconds"), "n_train": record["n_train_used"], "epochs_run": epochs_run,
           "best_epoch": record.get("best_epoch"), "trainable_params": record["trainable_params"],
           "precision": record.get("precision_used")}
    if strategy == "linear-probe":  # every clip through the encoder once (load and head included)
        run["clips_per_second"] = (n_train + n_val + n_test) / seconds
    elif epochs_run and record.get("train_seconds"):  # training clips per second of the loop (validation included)
        run["train_clips_per_second"] = n_train * epochs_run / record["train_seconds"]
    return run


def data_root(size: str, seed: int, args: argparse.Namespace, workdir: Path) -> Path:
    """The folders for ``size`` clips per language and ``seed`` ('all': one folder for every seed)."""
    root = workdir / (f"langid-{size}" if size == "all" else f"langid-{size}-seed{seed}")
    if not (root / MARKER).is_file():
        build(root, None if size == "all" else int(size), seed, args.work)
    return root


def environment() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = {}
    for name in ("torch", "transformers", "scikit-learn", "librosa", "soundfile", "soxr"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"commit": commit, "date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "threads": torch.get_num_threads(), "transferkit": transferkit.__version__, **versions,
            "model": MODEL, "mfcc": MFCC, "split": "by prompt name (benchmarks/audio_data.py, seed 0)"}


def summarise(size: str, strategy: str, runs: list[dict], n_test: int, epochs: int | None, model: str) -> dict:
    row = {"task": "language-id", "dataset": "asterisk", "model": None if strategy == "reference" else model,
           "per_language": size, "strategy": strategy, "n_test": n_test, "seeds": len(runs),
           "max_epochs": None if strategy in ("reference", "linear-probe") else epochs, "runs": runs}
    for key in (*METRICS, "seconds"):
        values = [r[key] for r in runs]
        row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return row


def print_table(rows: list[dict]) -> None:
    """One line per (size, strategy): accuracy and macro-F1, mean ± std over the seeds, seconds per run."""
    print(f"\n{'per lang':>8s} {'strategy':12s} {'seeds':>5s}  {'accuracy':>13s}  {'macro-F1':>13s}  {'s/run':>7s}")
    order = {s: i for i, s in enumerate(SIZES)}
    for r in sorted(rows, key=lambda r: (order.get(r["per_language"], 9), STRATEGIES.index(r["strategy"]))):
        scores = "  ".join(f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}" for k in METRICS)
        print(f"{r['per_language']:>8s} {r['strategy']:12s} {r['seeds']:5d}  {scores}  {r['seconds']['mean']:7.1f}")


def write(out: str, rows: list[dict], note: str | None, environments: list[dict] | None = None) -> None:
    """The results file; ``environments``: those of merged pieces (where the runs ran), kept beside this one's."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment(), "note": note, "rows": rows}
    if environments:
        record["environment"] = {**environments[0], "merged": record["environment"]["date"]}
        record["piece_environments"] = environments
    Path(out).write_text(json.dumps(record, indent=2))


def merge(files: list[str], out: str, note: str | None) -> None:
    """Rows of several result files -> one file: the runs of a (size, strategy) joined by seed."""
    records = [json.loads(Path(f).read_text()) for f in files]
    runs: dict[tuple, dict[int, dict]] = {}
    first: dict[tuple, dict] = {}
    for row in (r for record in records for r in record["rows"]):
        key = (row["per_language"], row["strategy"])
        first.setdefault(key, row)
        for run in row["runs"]:
            runs.setdefault(key, {})[run["seed"]] = run
    rows = [summarise(*key, [by_seed[s] for s in sorted(by_seed)], first[key]["n_test"], first[key]["max_epochs"],
                      first[key]["model"] or MODEL) for key, by_seed in runs.items()]
    write(out, rows, note or next((r["note"] for r in records if r.get("note")), None),
          environments=[r["environment"] for r in records])
    print_table(rows)
    print(f"wrote {out}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES), help="training clips per language: 10,30,all")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"any of {', '.join(STRATEGIES)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--only-seeds", help="these seeds instead, comma-separated (pieces side by side, see --merge)")
    parser.add_argument("--epochs", type=int, default=10, help="max epochs of the loop strategies")
    parser.add_argument("--clip-seconds", type=float, help="crop/pad length passed to fit (default: fit's own)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--work", default=str(DEFAULT_WORK), help="where the Debian packages are kept")
    parser.add_argument("--append", action="store_true", help="keep rows already in --out and skip them")
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 clips per language, linear-probe + reference")
    parser.add_argument("--out", help="default benchmarks/results/audio.json (--quick: a temporary file)")
    parser.add_argument("--note", help="a remark stored in the JSON (kept by --append unless replaced)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="only merge these result files into --out")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.only_seeds, args.sizes, args.strategies = 1, None, "10", "linear-probe,reference"
    args.out = args.out or (str(Path(tempfile.mkdtemp()) / "audio.json") if args.quick else
                            "benchmarks/results/audio.json")
    unknown = [s for s in args.strategies.split(",") if s not in STRATEGIES] + \
              [s for s in args.sizes.split(",") if s not in SIZES]
    if unknown:
        parser.error(f"unknown size or strategy {unknown[0]!r}: sizes {', '.join(SIZES)}; "
                     f"strategies {', '.join(STRATEGIES)}")
    return args


def main() -> None:
    args = arguments()
    if args.merge:
        merge(args.merge, args.out, args.note)
        return
    seeds = [int(s) for s in args.only_seeds.split(",")] if args.only_seeds else list(range(args.seeds))
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    workdir = Path(tempfile.mkdtemp(prefix="tk-audio-"))
    previous = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).exists() else {}
    rows, note = previous.get("rows", []), args.note or previous.get("note")
    done = {(r["per_language"], r["strategy"]) for r in rows}
    for size in args.sizes.split(","):
        for strategy in args.strategies.split(","):
            if (size, strategy) in done:
                continue
            runs = [run_one(data_root(size, seed, args, workdir), strategy, seed, args,
                            workdir / f"{size}-{strategy}-{seed}") for seed in seeds]
            n_test = len(clips(data_root(size, seeds[0], args, workdir), "test")[0])
            row = summarise(size, strategy, runs, n_test, args.epochs, args.model)
            rows.append(row)
            write(args.out, rows, note)  # after every row, so an interrupted benchmark keeps what it measured
            speed = next((f"  {k} {np.mean([r[k] for r in runs]):.1f}" for k in ("clips_per_second",
                          "train_clips_per_second") if k in runs[0]), "")
            print(f"{size:>4s} {strategy:12s} accuracy {row['accuracy']['mean']:.4f} ± {row['accuracy']['std']:.4f}"
                  f"  macro-F1 {row['macro_f1']['mean']:.4f}  {row['seconds']['mean']:7.1f} s/run{speed}", flush=True)
    print_table(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
