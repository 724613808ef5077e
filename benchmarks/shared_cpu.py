"""Shared CPUs (issue 17): `transferkit fit` alone vs next to one busy torch process, old thread policy vs new.

The job: `transferkit.fit` in a fresh process that first takes its share of the cores exactly as every CLI
command does (`transferkit.cli.cores.claim()`, before torch loads), on sklearn digits saved as PNG (6 per class
for training, 1 per class each for validation and test), EfficientNet-Lite0 at 64 px, strategy finetune, batch 8,
1 epoch, fp32 (so that the precision probe plays no part), no before-adaptation baseline, seed 0: 8 training steps
plus validation. Throughput: training images / `train_seconds` from metrics.json (steps and validation).
The neighbour: a plain PyTorch process at torch's defaults (as many threads as cores, libgomp's default spinning)
multiplying 384x384 matrices in a loop; it reports its own rate (matmuls/s) when stopped. `--neighbour polite`
gives it one thread that sleeps when idle (OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE): a neighbour that shares
as transferkit now does.
Policies (environment of the fit process; OMP_NUM_THREADS and MKL_NUM_THREADS removed):
- `old`: what every torch process did before: all the cores (TRANSFERKIT_THREADS=all) and libgomp's default
  spin-wait (GOMP_SPINCOUNT=300000);
- `new`: the default now (transferkit.core.threads): threads = the idle cores when fit starts, OMP_WAIT_POLICY=PASSIVE.
Each repeat runs the four cells in an order that alternates between repeats; the ratio busy/alone is taken per
repeat and policy. The machine may already be busy with other work: os.getloadavg() is recorded before and after
each cell, and the ratios side by side are what count. `busy_over_best_alone` divides by the better policy's
solo rate of the same repeat (on a machine that is already busy, the old policy alone is itself slowed down).
Prints a table (median and range over the repeats) and writes benchmarks/results/shared_cpu.json.

    .venv/bin/python benchmarks/shared_cpu.py              # 3 repeats (~5-10 minutes on 2 busy cores)
    .venv/bin/python benchmarks/shared_cpu.py --repeats 1  # a quick look
    .venv/bin/python benchmarks/shared_cpu.py --neighbour polite --out benchmarks/results/shared_cpu_polite.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "shared_cpu.json"
FIT = """
from transferkit.cli import cores
cores.claim()
import transferkit
transferkit.fit({data!r}, model="efficientnet_lite0", strategy="finetune", image_size=64, epochs=1, batch_size=8,
                precision="fp32", seed=0, baseline=False, progress=False, out={out!r})
"""
POLICIES = {"old": {"TRANSFERKIT_THREADS": "all", "GOMP_SPINCOUNT": "300000"}, "new": {}}
NEIGHBOUR = """
import signal, sys, time, torch
a = torch.randn(384, 384); n = 0; start = time.perf_counter()
def stop(*_):
    print(n / (time.perf_counter() - start), flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    a = torch.tanh(a @ a); n += 1
"""
TIMEOUT_S = 240


def write_digits(root: Path) -> Path:
    """root/{train,val,test}/<digit>/*.png: 6, 1 and 1 distinct sklearn digits per class, upscaled to 32 px."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for d in range(10):
        idx = np.flatnonzero(bunch.target == d)[:8]
        for i, j in enumerate(idx):
            split = "train" if i < 6 else "val" if i < 7 else "test"
            folder = root / split / str(d)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (255 - bunch.images[j] * 255 / 16).astype("uint8")
            Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(folder / f"{j}.png")
    return root


NEIGHBOURS = {"default": {}, "polite": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}}


def clean_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TRANSFERKIT_THREADS",
        "RAYON_NUM_THREADS")}
    return {**env, **POLICIES.get(policy, {}), "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1"}


def run_fit(data: Path, out: Path, policy: str) -> dict:
    """One fit in a fresh process: images/s, threads used, wall seconds and load before/after."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    args = [sys.executable, "-c", FIT.format(data=str(data), out=str(out))]
    try:
        proc = subprocess.run(args, env=clean_env(policy), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S} s", "load_before": load_before, "load_after": os.getloadavg()}
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr[-600:], "load_before": load_before, "load_after": os.getloadavg()}
    metrics = json.loads((out / "metrics.json").read_text())
    return {"images_per_s": round(metrics["n_train_used"] / metrics["train_seconds"], 2),
            "train_seconds": metrics["train_seconds"], "torch_threads": metrics.get("torch_threads"),
            "wall_seconds": round(wall, 1), "load_before": load_before, "load_after": os.getloadavg()}


def cell(data: Path, out: Path, policy: str, busy: bool, kind: str = "default") -> dict:
    neighbour = None
    if busy:
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env={**clean_env("neighbour"),
                                                                             **NEIGHBOURS[kind]},
                                     stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)  # its torch import and first products: fit starts next to a process already busy
    try:
        row = run_fit(data, out, policy)
    finally:
        if neighbour is not None:
            neighbour.send_signal(signal.SIGTERM)
            rate = neighbour.communicate(timeout=30)[0].strip()
    if neighbour is not None:
        row["neighbour_matmuls_per_s"] = round(float(rate), 1) if rate else None
    return row


def summarise(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)} if values else {}


def table(rows: list[dict], repeats: int) -> dict:
    """Per policy: images/s alone and busy, busy/alone within a repeat, and busy over the better of the two
    policies alone in that repeat (the process's best solo throughput on this machine at that time)."""
    rate = {(x["repeat"], x["policy"], x["busy"]): x.get("images_per_s") for x in rows}
    out = {}
    for policy in POLICIES:
        pairs = [(rate.get((r, policy, False)), rate.get((r, policy, True))) for r in range(repeats)]
        best = [max(filter(None, (rate.get((r, p, False)) for p in POLICIES)), default=None) for r in range(repeats)]
        out[policy] = {"alone_images_per_s": summarise([a for a, _ in pairs if a]),
                       "busy_images_per_s": summarise([b for _, b in pairs if b]),
                       "busy_over_alone": summarise([b / a for a, b in pairs if a and b]),
                       "busy_over_best_alone": summarise([b / m for (_, b), m in zip(pairs, best) if b and m])}
    return out


def report(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    keys = ("alone_images_per_s", "busy_images_per_s", "busy_over_alone", "busy_over_best_alone")
    print(f"\n{'policy':<6} " + " ".join(k.rjust(24) for k in keys))
    for policy, t in result["summary"].items():
        print(f"{policy:<6} " + " ".join(f"{t[k].get('median')} ({t[k].get('min')}-{t[k].get('max')})".rjust(24)
                                         for k in keys))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resummarise", action="store_true", help="recompute the summary of --out's runs")
    parser.add_argument("--neighbour", choices=sorted(NEIGHBOURS), default="default",
                        help="polite: the neighbour runs one thread that sleeps when idle, as transferkit now does")
    args = parser.parse_args()
    if args.resummarise:
        result = json.loads(args.out.read_text())
        result["summary"] = table(result["runs"], 1 + max(x["repeat"] for x in result["runs"]))
        return report(result, args.out)
    environment = {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count(),
                   "affinity": len(os.sched_getaffinity(0)), "load_average_at_start": os.getloadavg(),
                   "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cells = [(p, b) for p in POLICIES for b in (False, True)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits")
        for r in range(args.repeats):
            for policy, busy in (cells if r % 2 == 0 else cells[::-1]):
                row = {"repeat": r, "policy": policy, "busy": busy,
                       **cell(data, Path(tmp) / f"run-{r}-{policy}-{busy}", policy, busy, args.neighbour)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    environment["load_average_at_end"] = os.getloadavg()
    environment["neighbour"] = args.neighbour
    report({"benchmark": "shared_cpu", "issue": 17, "environment": environment, "summary": table(rows, args.repeats),
            "runs": rows, "note": "the machine ran other benchmarks at the same time (see the load averages): "
                                  "'alone' means without our neighbour, not on an idle machine"}, args.out)

if __name__ == "__main__":
    main()
