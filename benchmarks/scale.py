"""Scale benchmark: the same fit in 1 process and in 2 (`fit --processes 2`, DDP over gloo on CPU), side by side.

Both runs of a case train with the same global batch (1 process: --batch-size B; 2 processes: B/2 each), the same
seed, fp32, no augmentation (its random crops come from the process's RNG stream, which a rank consumes for its
shard only, so with it the two runs would see differently cropped images), and 1 torch thread per process
(OMP_NUM_THREADS=1), so on a 2-core machine the 2-process run gets twice the cores: that is the scaling being
measured, not a thread-count change. Per run: wall time of the command,
training items/s per epoch (epoch durations from the TensorBoard events rank 0 writes at each epoch's end; an
epoch includes rank 0's validation pass, which the other rank waits for), the final val/test metric; per case: the
throughput ratio, max |difference| of the per-epoch train/val losses and of the bundles' weights
(model.safetensors). Prints a table and writes benchmarks/results/scale.json (rows + environment).

    nice -n 10 .venv/bin/python benchmarks/scale.py                  # digits finetune + bbc-news head, 2 epochs each
    nice -n 10 .venv/bin/python benchmarks/scale.py --cases bbc-head --epochs 3
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
from datetime import datetime
from pathlib import Path

import torch
from safetensors.torch import load_file

import transferkit

EXE = str(Path(sys.executable).with_name("transferkit"))
# case -> (data, fit options, global batch). K=38 labels per class keeps 32 per class for training (6 go to
# validation), so the global batch divides each epoch: no short last step, whose examples a single process averages
# over fewer of them than 2 ranks do (DDP averages the ranks' means), and no batch completed from the epoch's start.
CASES = {
    "digits-finetune": ("builtin:digits", ["--model", "efficientnet_lite0", "--image-size", "32", "--strategy",
                                           "finetune", "--labels-per-class", "38", "--augment", "none"], 32),
    "bbc-head": ("builtin:bbc-news", ["--model", "minilm", "--strategy", "head", "--labels-per-class", "38"], 32),
}
COMMON = ["--seed", "0", "--patience", "0", "--precision", "fp32"]


def fit(case: str, processes: int, epochs: int, workdir: Path) -> dict:
    """One `transferkit fit` of ``case`` in ``processes`` processes; its timings, metric, history and weights."""
    data, options, global_batch = CASES[case]
    out = workdir / f"{case}-{processes}p"
    command = [EXE, "fit", "--data", data, *options, *COMMON, "--epochs", str(epochs),
               "--batch-size", str(global_batch // processes), "--out", str(out)]
    if processes > 1:
        command += ["--processes", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    seconds = epoch_seconds(out / "tensorboard", metrics["train_seconds"])
    n = metrics["n_train_used"]
    return {"processes": processes, "batch_per_process": global_batch // processes, "global_batch": global_batch,
            "n_train": n, "whole_steps": n % global_batch == 0, "epochs": len(seconds), "wall_seconds": round(wall, 1),
            "train_seconds": metrics["train_seconds"], "epoch_seconds": [round(s, 2) for s in seconds],
            "items_per_second": [round(n / s, 1) for s in seconds],
            "val_macro_f1": metrics["val"]["macro_f1"], "test_macro_f1": metrics["test"]["macro_f1"],
            "history": history, "bundle": str(out / "bundle" / "model.safetensors")}


def epoch_seconds(tensorboard: Path, train_seconds: float) -> list[float]:
    """Each epoch's duration: the gaps between rank 0's epoch-end events; the first is what remains of the loop's
    training time (train_seconds runs from the loop's start to the last epoch's end)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard)).Reload().Scalars("val/loss")
    ends = [e.wall_time for e in sorted(events, key=lambda e: e.step)]
    later = [b - a for a, b in zip(ends, ends[1:])]
    return [train_seconds - sum(later), *later]


def compare(one: dict, two: dict) -> dict:
    """Throughput ratio (2 processes / 1, mean over epochs after the first) and how far the two runs are apart."""
    losses = [abs(a[k] - b[k]) for a, b in zip(one["history"], two["history"])
              for k in ("train_loss", "val_loss") if a[k] is not None]
    wa, wb = load_file(one["bundle"]), load_file(two["bundle"])
    assert wa.keys() == wb.keys()
    weights = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    scale = max(float(w.float().abs().max()) for w in wa.values())
    steady = [ips[1:] or ips for ips in (one["items_per_second"], two["items_per_second"])]
    mean = [sum(x) / len(x) for x in steady]
    return {"throughput_ratio": round(mean[1] / mean[0], 2), "wall_ratio": round(one["wall_seconds"] /
                                                                                  two["wall_seconds"], 2),
            "max_loss_diff": max(losses), "max_weight_diff": weights, "max_abs_weight": scale}


def environment() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"commit": commit, "date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "threads_per_process": 1, "backend": "gloo (CPU)", "precision": "fp32",
            "torch": torch.__version__, "transferkit": transferkit.__version__, "python": platform.python_version(),
            "load_average_at_start": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="run folders (default: a temporary folder, removed)")
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    args = parser.parse_args()
    env = environment()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tk-scale-") as tmp:
        workdir = Path(args.workdir or tmp)
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            one, two = (fit(case, p, args.epochs, workdir) for p in (1, 2))
            rows.append({"case": case, "data": CASES[case][0], "options": CASES[case][1], "one": one, "two": two,
                         **compare(one, two)})
            print(f"[scale] {case}: done", flush=True)
    print(f"\n{'case':16} {'procs':>5} {'batch':>9} {'items/s per epoch':>20} {'wall s':>7} {'val F1':>7} "
          f"{'test F1':>7}")
    for r in rows:
        for run in (r["one"], r["two"]):
            batch = f"{run['batch_per_process']}x{run['processes']}={run['global_batch']}"
            ips = " ".join(f"{x:.1f}" for x in run["items_per_second"])
            print(f"{r['case']:16} {run['processes']:5} {batch:>9} {ips:>20} {run['wall_seconds']:7.1f} "
                  f"{run['val_macro_f1']:7.4f} {run['test_macro_f1']:7.4f}")
        print(f"{'':16} 2p/1p throughput {r['throughput_ratio']:.2f}x, wall {r['wall_ratio']:.2f}x; max |loss diff| "
              f"{r['max_loss_diff']:.2e}, max |weight diff| {r['max_weight_diff']:.2e} (largest |weight| "
              f"{r['max_abs_weight']:.2f})")
    for r in rows:  # the bundles lived in the temporary folder
        for run in (r["one"], r["two"]):
            run.pop("bundle")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    env["load_average_at_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).write_text(json.dumps({"environment": env, "epochs": args.epochs, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
