"""Export benchmark: PyTorch fp32 vs PyTorch bf16 autocast vs ONNX Runtime fp32 vs ONNX Runtime int8.

For a text bundle (MiniLM on BBC News) and an image bundle (EfficientNet-Lite0 on digits), each a linear probe
trained here unless given, the script exports ONNX fp32 and int8 (transferkit.export.onnx) and runs all four
runtimes on the same preprocessed batches of the test split. Batches are taken round-robin — batch 1 through every
runtime, then batch 2 ... — so load changes on a shared machine hit all runtimes alike; time counts the model
call only (tokenization / decoding is shared and done once). Prints a table and writes
benchmarks/results/export_speed.json with the environment.

    .venv/bin/python benchmarks/export_speed.py                        # both bundles, ~8 min on 2 busy cores
    .venv/bin/python benchmarks/export_speed.py --text-bundle runs/news/bundle --skip-image

Both probes use scaling='global' (results predate the probe's floor on per-feature spreads, which now keeps the
default usable too): per-feature scaling divided by each feature's spread, so nearly
constant features get huge head weights that amplify any perturbation of them. MiniLM has output dimensions that
are constant up to 1e-32 (LayerNorm weights of ~1e-33: head weights of ~1e30, int8 collapses to one class); on
digits at 64 px, Lite0's probe reaches weights of ~1e3 and static int8 agreed with fp32 on 6 % of the images.
"""
from __future__ import annotations

import argparse
import csv
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

import transferkit
from transferkit.data.builtins import DATASETS
from transferkit.data.examples import Examples
from transferkit.data.splits import subsample_per_class
from transferkit.data.stream import inference_batches
from transferkit.export.bundle import load_bundle
from transferkit.export.onnx import export_onnx
from transferkit.export.recorded import spread
from transferkit.serve.predictor import Predictor

RUNTIMES = ("torch fp32", "torch bf16", "onnx fp32", "onnx int8")


def environment(threads: int) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import onnxruntime

    return {"commit": commit, "date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu, "threads": threads,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "transferkit": transferkit.__version__,
            "load_average_at_start": os.getloadavg()[0]}


def text_bundle(workdir: Path, k: int, n_test: int) -> tuple[Path, Examples]:
    splits = DATASETS["bbc-news"]()
    train, test = subsample_per_class(splits.train, k, 0), spread(splits.test, n_test)
    for name, part in (("train", train), ("test", test)):
        with open(workdir / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(zip(part.inputs, part.labels))
    result = transferkit.fit(str(workdir / "train.csv"), test_data=str(workdir / "test.csv"), model="minilm",
                             strategy="linear-probe", strategy_options={"scaling": "global"},
                             out=str(workdir / "text-run"), progress=False)
    return Path(result.bundle_dir), test


def image_bundle(workdir: Path, k: int, image_size: int) -> Path:
    result = transferkit.fit("builtin:digits", model="efficientnet_lite0", strategy="linear-probe", labels_per_class=k,
                             strategy_options={"scaling": "global"}, image_size=image_size,
                             out=str(workdir / "image-run"), progress=False)
    return Path(result.bundle_dir)


def measure(bundle: Path, examples: Examples, workdir: Path, name: str, batch_size: int, n_check: int) -> dict:
    """Export fp32 and int8, then time the four runtimes round-robin on identical batches."""
    exports = {}
    for kind, int8 in (("fp32", False), ("int8", True)):
        start = time.perf_counter()
        entry = export_onnx(bundle, workdir / f"{name}-onnx-{kind}", int8=int8, n_check=n_check)
        exports[kind] = {"seconds": round(time.perf_counter() - start, 1), "parity": entry["parity"],
                         "int8": entry["int8"]}
    predictors = {"torch fp32": Predictor(load_bundle(bundle), batch_size, precision="fp32"),
                  "torch bf16": Predictor(load_bundle(bundle), batch_size, precision="bf16"),
                  "onnx fp32": Predictor.from_bundle(workdir / f"{name}-onnx-fp32", runtime="onnx"),
                  "onnx int8": Predictor.from_bundle(workdir / f"{name}-onnx-int8", runtime="onnx")}
    spec = predictors["torch fp32"].preprocessing
    batches = [b for b in inference_batches(examples, spec, batch_size) if b.inputs is not None]
    for predictor in predictors.values():  # warm-up: first calls pay for allocation and kernel selection
        predictor.probabilities(batches[0].inputs)
    seconds = dict.fromkeys(predictors, 0.0)
    outputs: dict[str, list[np.ndarray]] = {r: [] for r in predictors}
    for batch in batches:
        for runtime, predictor in predictors.items():
            start = time.perf_counter()
            outputs[runtime].append(predictor.probabilities(batch.inputs))
            seconds[runtime] += time.perf_counter() - start
    names = predictors["torch fp32"].label_names
    positions = [p for b in batches for p in b.positions]
    truth = np.array([names.index(examples.labels[p]) for p in positions])
    reference = np.concatenate(outputs["torch fp32"]).argmax(1)
    rows = []
    for runtime in predictors:
        predicted = np.concatenate(outputs[runtime]).argmax(1)
        rows.append({"runtime": runtime, "items_per_s": round(len(truth) / seconds[runtime], 2),
                     "accuracy": round(float((predicted == truth).mean()), 4),
                     "agreement_with_torch_fp32": round(float((predicted == reference).mean()), 4)})
    base = rows[0]["items_per_s"]
    for row in rows:
        row["speedup_vs_torch_fp32"] = round(row["items_per_s"] / base, 2)
    return {"bundle": str(bundle), "n": len(truth), "batch_size": batch_size, "exports": exports, "rows": rows}


def print_table(results: dict) -> None:
    print(f"\n{'bundle':8s} {'runtime':12s} {'items/s':>9s} {'x fp32':>7s} {'accuracy':>9s} {'agree':>7s}")
    for name, result in results.items():
        for r in result["rows"]:
            print(f"{name:8s} {r['runtime']:12s} {r['items_per_s']:9.1f} {r['speedup_vs_torch_fp32']:7.2f} "
                  f"{r['accuracy']:9.4f} {r['agreement_with_torch_fp32']:7.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-bundle", help="a MiniLM bundle (its test split is BBC's; default: train one)")
    parser.add_argument("--image-bundle", help="an image bundle fitted on builtin:digits (default: train one)")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-image", action="store_true")
    parser.add_argument("--text-k", type=int, default=32, help="training texts per topic for the probe")
    parser.add_argument("--n-text", type=int, default=150, help="BBC test texts to time and score (spread over topics)")
    parser.add_argument("--image-k", type=int, default=50)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-check", type=int, default=32, help="inputs for each export's parity check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/export_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's thread count (transferkit.export.onnx)
    os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="tk-bench-cache-"))
    workdir = Path(tempfile.mkdtemp(prefix="tk-export-bench-"))
    results, env = {}, environment(args.threads)
    if not args.skip_text:
        bundle, test = (Path(args.text_bundle), spread(DATASETS["bbc-news"]().test, args.n_text)) if args.text_bundle \
            else text_bundle(workdir, args.text_k, args.n_text)
        results["text"] = measure(bundle, test, workdir, "text", 16, args.n_check)
        print_table({"text": results["text"]})
    if not args.skip_image:
        bundle = Path(args.image_bundle) if args.image_bundle else image_bundle(workdir, args.image_k, args.image_size)
        results["image"] = measure(bundle, DATASETS["digits"]().test, workdir, "image", 64, args.n_check)
    print_table(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
