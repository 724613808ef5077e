"""Predict rate (issue 17): `transferkit predict` end to end vs the raw forward pass, and text int8 through ONNX.

(a) Images and texts, each: the rate of `transferkit.predict` — the function the CLI calls, on the data as the CLI
gets it — against the raw forward pass of the same bundle's PyTorch model. Images: the builtin:fashion-mnist test
split (10,000 by default) written once as 28 px PNG files into one folder, predicted by an EfficientNet-Lite0
linear-probe bundle at 64 px fitted on 200 training images (20 per class, seed 0). Texts: every builtin:bbc-news
text (train and test: 2,225, 2,127 distinct) cycled to the asked count (10,000 by default: each text 4-5 times) in one CSV,
predicted by a MiniLM linear-probe bundle (max length 256 tokens) fitted on 32 training texts per topic. `predict`
is timed whole: loading the bundle, listing/reading the data, decoding and resizing images or tokenizing texts, the
model, decoding labels and writing the CSV of predictions (image files are decoded by worker processes where the load
leaves a core idle: each run records the workers predict chose and the load before it). The raw pass is the
predictor's own model called on batches made beforehand by the same input pipeline
(transferkit.data.stream.inference_batches: the batches `predict` runs, in input order, padded per batch), untimed;
only the model calls are timed, under torch.inference_mode and the bundle's inference precision (both bundles: fp32),
batch 64 as predict's default.
(b) Text int8: the BBC fixed test split (benchmarks/label_efficiency.py `test_split`: all 444 texts) in one CSV
through `predict` with the same MiniLM bundle as PyTorch fp32 (`runtime="torch"`), ONNX int8 (`int8=True`) and
ONNX fp32 (`runtime="onnx"`); the two exports are made by the first, untimed call into $TRANSFERKIT_CACHE/onnx
and reused by every timed one. Texts/s, accuracy against the true topics, speedup over torch fp32 and the
accuracy lost in points.
Each repeat runs every condition once, in an order that alternates between repeats; ratios (predict/raw, speedup)
are taken within a repeat. One torch thread (onnxruntime sessions take torch's thread count), niced. Prints a table
(median and range over the repeats) and writes benchmarks/results/predict_rate.json.

    TRANSFERKIT_CACHE=$HOME/.cache/transferkit-bench .venv/bin/python benchmarks/predict_rate.py     # 3 repeats
    .venv/bin/python benchmarks/predict_rate.py --images 500 --texts 200 --repeats 1 --out /tmp/predict_rate.json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

import torch  # noqa: E402

from transferkit.data.examples import Examples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "predict_rate.json"
BATCH = 64  # predict's default batch size
RATE_SIDES = ("predict", "raw")
RUNTIMES = {"torch fp32": {"runtime": "torch"}, "onnx int8": {"int8": True}, "onnx fp32": {"runtime": "onnx"}}


def image_bundle(out: Path) -> Path:
    """EfficientNet-Lite0 linear probe at 64 px on 20 fashion-mnist training images per class (seed 0), fp32."""
    from transferkit import api
    from transferkit.data.builtins import fashion_mnist
    from transferkit.data.splits import subsample_per_class

    train = subsample_per_class(fashion_mnist().train, 20, 0)
    return Path(api.fit(train, model="efficientnet_lite0", strategy="linear-probe", image_size=64, precision="fp32",
                        seed=0, progress=False, out=str(out)).bundle_dir)


def text_bundle(out: Path, per_class: int) -> Path:
    """MiniLM linear probe on ``per_class`` bbc-news training texts per topic (seed 0), fp32."""
    from transferkit import api
    from transferkit.data.builtins import bbc_news
    from transferkit.data.splits import subsample_per_class

    train = subsample_per_class(bbc_news().train, per_class, 0)
    return Path(api.fit(train, model="minilm", strategy="linear-probe", precision="fp32", seed=0, progress=False,
                        out=str(out)).bundle_dir)


def png_folder(n: int, folder: Path) -> int:
    """The first ``n`` fashion-mnist test images as 28 px PNG files in ``folder`` (cycled past 10,000); returns
    how many distinct images they are."""
    from PIL import Image

    from transferkit.data.builtins import fashion_mnist

    test = fashion_mnist().test
    folder.mkdir(parents=True, exist_ok=True)
    distinct = set()
    for k in range(n):
        pixels = test.inputs[k % len(test)]
        distinct.add(pixels.tobytes())
        Image.fromarray(pixels).save(folder / f"{k:05d}.png")
    return len(distinct)


def text_csv(texts: list[str], path: Path, labels: list[str] | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"] if labels else ["text"])
        writer.writerows(zip(texts, labels) if labels else ([t] for t in texts))
    return path


def bbc_cycled(n: int) -> tuple[list[str], int]:
    """``n`` texts: every bbc-news text (train, then test: 2,225, of which 2,127 distinct) in turn, cycled; and how
    many of them are distinct."""
    from transferkit.data.builtins import bbc_news

    splits = bbc_news()
    pool = list(splits.train.inputs) + list(splits.test.inputs)
    texts = [pool[k % len(pool)] for k in range(n)]
    return texts, len(set(texts))


def predict_run(bundle: Path, data: Path, out: Path, **options: Any) -> tuple[dict[str, float], list]:
    """`transferkit.predict` end to end on ``data`` (writing ``out``): items/s, and the predicted labels."""
    from transferkit import api
    from transferkit.data import stream

    chosen: list[int] = []
    choose = stream._image_decode_workers

    def recorded(*args: Any) -> int:  # the decode workers predict chose (images from files; 0 otherwise)
        chosen.append(choose(*args))
        return chosen[-1]

    stream._image_decode_workers = recorded
    try:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        predictions = api.predict(bundle, str(data), out, progress=False, **options)
        seconds = time.perf_counter() - start
    finally:
        stream._image_decode_workers = choose
    if predictions.errors:
        raise RuntimeError(f"{len(predictions.errors)} inputs of {data} could not be read")
    return {"items_per_s": len(predictions.ids) / seconds, "seconds": seconds, "decode_workers": max(chosen, default=0),
            "load_average_before": round(load, 2)}, predictions.labels


def premade(bundle: Path, data: Path) -> tuple[Any, list[dict[str, torch.Tensor]], str]:
    """The predictor's model, the batches `predict` would run (made now, untimed) and its precision."""
    from transferkit.api import as_splits
    from transferkit.data.sources import TextColumns
    from transferkit.data.stream import inference_batches
    from transferkit.serve.predictor import Predictor

    predictor = Predictor.from_bundle(bundle, runtime="torch", batch_size=BATCH)
    examples: Examples = as_splits(str(data), TextColumns("text", "label"), labeled=False).train
    batches = [b.inputs for b in inference_batches(examples, predictor.preprocessing, BATCH)]
    return predictor.bundle.model.eval(), batches, predictor.precision


def raw_run(model: Any, batches: list[dict[str, torch.Tensor]], precision: str) -> dict[str, float]:
    """The model alone on the pre-made batches: items/s."""
    from transferkit.core.runtime import autocast

    n = sum(len(next(iter(b.values()))) for b in batches)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
        for batch in batches:
            model(batch)
    seconds = time.perf_counter() - start
    return {"items_per_s": n / seconds, "seconds": seconds}


def stats(values: list[float], digits: int = 3) -> dict[str, Any]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "runs": [round(v, digits) for v in values]}


def rate_summary(runs: list[dict[str, dict]]) -> dict[str, Any]:
    """Per side, items/s over the repeats; predict/raw taken within each repeat."""
    out = {side: stats([r[side]["items_per_s"] for r in runs], 1) for side in RATE_SIDES}
    out["predict_over_raw"] = stats([r["predict"]["items_per_s"] / r["raw"]["items_per_s"] for r in runs])
    return out


def int8_summary(runs: list[dict[str, dict]]) -> dict[str, Any]:
    """Per runtime: texts/s, speedup over torch fp32 within each repeat, accuracy and its loss in points."""
    base = [r["torch fp32"] for r in runs]
    out = {}
    for name in RUNTIMES:
        rows = [r[name] for r in runs]
        out[name] = {"texts_per_s": stats([x["items_per_s"] for x in rows], 1),
                     "speedup_vs_torch_fp32": stats([x["items_per_s"] / b["items_per_s"] for x, b in zip(rows, base)]),
                     "accuracy": rows[-1]["accuracy"],
                     "accuracy_loss_points": round(100 * (base[-1]["accuracy"] - rows[-1]["accuracy"]), 2)}
    return out


def environment() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    packages = ("torch", "onnx", "onnxruntime", "transformers", "timm", "pillow", "transferkit")
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git("rev-parse", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "transferkit", "benchmarks/predict_rate.py").splitlines(),
            "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "versions": {p: version(p) for p in packages}}


def measure_rates(repeats: int, sets: dict[str, tuple[Path, Path]], tmp: Path) -> dict[str, list[dict]]:
    """(a): per kind and repeat, predict and raw in alternating order."""
    runs: dict[str, list[dict]] = {kind: [] for kind in sets}
    for kind, (bundle, data) in sets.items():
        model, batches, precision = premade(bundle, data)
        for r in range(repeats):
            row: dict[str, Any] = {}
            for side in RATE_SIDES if r % 2 == 0 else RATE_SIDES[::-1]:
                row[side] = (predict_run(bundle, data, tmp / f"{kind}.csv")[0] if side == "predict"
                             else raw_run(model, batches, precision))
                print(f"{kind} repeat {r} {side}: {row[side]['items_per_s']:.1f}/s ({row[side]['seconds']:.1f} s)",
                      flush=True)
            row["precision"] = precision
            runs[kind].append(row)
        del model, batches
    return runs


def measure_int8(repeats: int, bundle: Path, test_csv: Path, truth: list[str], tmp: Path) -> tuple[list, dict]:
    """(b): the three runtimes through predict, in an order rotating between repeats; the exports made first."""
    exports = {}
    for name in ("onnx int8", "onnx fp32"):  # untimed: makes (or finds) the cached export
        predict_run(bundle, test_csv, tmp / "warm.csv", **RUNTIMES[name])
        from transferkit.export.bundle import read_manifest
        from transferkit.serve.onnx_cache import cache_root, content_hash

        folder = cache_root() / f"{content_hash(bundle)[:24]}-{name.split()[1]}"
        entry = read_manifest(folder)["onnx"]
        exports[name] = {"folder": str(folder), "int8": entry["int8"], "parity": entry["parity"]}
    names = list(RUNTIMES)
    runs = []
    for r in range(repeats):
        row = {}
        for name in names[r % 3:] + names[: r % 3]:
            result, labels = predict_run(bundle, test_csv, tmp / "int8.csv", **RUNTIMES[name])
            result["accuracy"] = round(sum(a == b for a, b in zip(labels, truth)) / len(truth), 4)
            row[name] = result
            print(f"bbc test repeat {r} {name}: {result['items_per_s']:.1f} texts/s, accuracy {result['accuracy']}",
                  flush=True)
        runs.append(row)
    return runs, exports


def print_tables(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(f"\n(a) predict vs raw forward pass, batch {BATCH}, {s['threads']} thread(s) (median [min-max] over "
          f"{s['repeats']} repeats)")
    print(f"{'kind':<8} {'n':>6} {'predict /s':>22} {'raw /s':>22} {'predict/raw':>22}")
    for kind, summary in result["rates"].items():
        cells = [f"{summary[k]['median']:.2f} [{summary[k]['min']:.2f}-{summary[k]['max']:.2f}]"
                 for k in ("predict", "raw", "predict_over_raw")]
        print(f"{kind:<8} {s[kind]['n']:>6} " + " ".join(f"{c:>22}" for c in cells))
    print(f"\n(b) BBC test split ({s['bbc_test']} texts) through predict")
    print(f"{'runtime':<11} {'texts/s':>22} {'speedup vs torch fp32':>24} {'accuracy':>9} {'loss (points)':>14}")
    for name, row in result["int8"].items():
        rate, up = row["texts_per_s"], row["speedup_vs_torch_fp32"]
        print(f"{name:<11} {rate['median']:>9.2f} [{rate['min']:.2f}-{rate['max']:.2f}] "
              f"{up['median']:>11.2f} [{up['min']:.2f}-{up['max']:.2f}] {row['accuracy']:>9.4f} "
              f"{row['accuracy_loss_points']:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=10_000, help="fashion-mnist test images (10,000 = all)")
    parser.add_argument("--texts", type=int, default=10_000, help="bbc-news texts, cycled past the 2,225 there are")
    parser.add_argument("--texts-per-class", type=int, default=32, help="training texts per topic for the bundle")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.nice(5)
    torch.set_num_threads(args.threads)
    from label_efficiency import test_split  # benchmarks/ is sys.path[0] when this file runs as a script

    from transferkit.data.builtins import bbc_news

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        bundles = {"images": image_bundle(tmp / "image-run"), "texts": text_bundle(tmp / "text-run",
                                                                                   args.texts_per_class)}
        distinct_images = png_folder(args.images, tmp / "png")
        texts, distinct_texts = bbc_cycled(args.texts)
        data = {"images": tmp / "png", "texts": text_csv(texts, tmp / "texts.csv")}
        test = test_split("bbc-news", bbc_news())
        test_csv = text_csv(list(test.inputs), tmp / "bbc-test.csv", list(test.labels))
        rate_runs = measure_rates(args.repeats, {k: (bundles[k], data[k]) for k in bundles}, tmp)
        int8_runs, exports = measure_int8(args.repeats, bundles["texts"], test_csv, list(test.labels), tmp)
    result = {"environment": environment(),
              "settings": {"repeats": args.repeats, "threads": args.threads, "batch_size": BATCH,
                           "images": {"n": args.images, "distinct": distinct_images, "source":
                                      "builtin:fashion-mnist test split as 28 px PNG files",
                                      "bundle": "efficientnet_lite0 linear-probe, 64 px, 20/class"},
                           "texts": {"n": args.texts, "distinct": distinct_texts, "source":
                                     "builtin:bbc-news train + test texts, cycled, one CSV",
                                     "bundle": f"minilm linear-probe, max 256 tokens, {args.texts_per_class}/topic"},
                           "bbc_test": len(test)},
              "rates": {kind: rate_summary(runs) for kind, runs in rate_runs.items()},
              "int8": int8_summary(int8_runs), "exports": exports,
              "runs": {"rates": rate_runs, "int8": int8_runs}}
    print_tables(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
