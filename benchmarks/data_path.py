"""Data path (issue 17): the image cache and decode workers vs decoding every epoch; texts sorted by length vs not.

Images: `fit` on 1,000 builtin:fashion-mnist training images (the first 1,000; 200 more as validation, no test
split) at 64 px, EfficientNet-Lite0, strategy head, batch 32, augment light, 2 epochs, seed 0, in this process on
ONE torch thread, niced; `decode every epoch` (TRANSFERKIT_IMAGE_CACHE_MB=0: the path before the cache) vs `cache`
(the default: decoded and resized once, in epoch 1). Measured: images/s of epoch 2 (training steps + validation,
between the two `on_epoch_end` calls: the epoch that reads from the cache) and the loop's train_seconds. The same
fits on the images saved as 256 px PNG files (photo-like decoding), where `workers` (cache off, min(cores - 1, 4)
DataLoader workers whatever the machine's load; `fit` itself starts only as many as there are idle cores) is a
third path.
The data path alone (the training loader iterated without a model, epochs 1 and 2), on the same 1,000 images as
in-memory arrays (what builtin:fashion-mnist gives: no decoding, so no worker processes) and saved as 256 px PNG
files: `decode every epoch` (no workers), `workers` (as above) and `cache`.
All paths interleaved within each repeat, so the machine's load hits all alike; ratios are taken per repeat
against decode-every-epoch of the same repeat.
Texts: `Predictor.predict` (batches sorted by token count within windows) vs the same predictor over input-order
batches, on builtin:bbc-news texts (default 200: MiniLM reads ~3 texts/s of 256 tokens on one busy thread), whole
articles (nearly all truncated to max_length 256, so sorting has little to gain) and the same cut to 40-1,500
characters; batch 64, a MiniLM linear-probe bundle fitted on 100 texts spread over the classes; texts/s, and the
largest difference between the two paths' probabilities.
Prints a table (median and range over the repeats) and writes benchmarks/results/data_path.json.

    .venv/bin/python benchmarks/data_path.py               # 3 repeats
    .venv/bin/python benchmarks/data_path.py --repeats 1 --images 300 --texts 64   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from transferkit.data.examples import Examples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "data_path.json"
IMAGE_PATHS = ("decode every epoch", "workers", "cache")
FIT_PATHS = (("arrays", "decode every epoch"), ("arrays", "cache"),  # in memory: no workers (nothing to decode)
             ("png files", "decode every epoch"), ("png files", "workers"), ("png files", "cache"))
LOADER_KINDS = ("arrays", "png files")


def FORCED_WORKERS() -> int:  # noqa: N802  (stands in for loaders.decode_workers)
    """`workers`: the count from the cores alone (min(cores - 1, 4)), whatever the machine's load, which would
    otherwise turn them off on a busy machine (transferkit.data.workers.decode_workers)."""
    from transferkit.data.workers import decode_workers

    return decode_workers(load=0.0)
TEXT_KINDS = ("whole articles", "varied lengths")
TEXT_ORDERS = ("input order", "sorted by length")


def image_run(path: str, images: Examples, n_images: int, out: Path) -> dict[str, float]:
    """One 2-epoch fit on the chosen data path (the first ``n_images`` train, the next 200 validate): epoch 2's
    images/s and the loop's seconds."""
    from transferkit import api
    from transferkit.data import loaders
    from transferkit.data.examples import DataSplits
    from transferkit.data.workers import decode_workers

    data = DataSplits(train=images.subset(range(n_images)), val=images.subset(range(n_images, n_images + 200)))
    os.environ["TRANSFERKIT_IMAGE_CACHE_MB"] = "0" if path != "cache" else ""
    loaders.decode_workers = (lambda: 0) if path == "decode every epoch" else FORCED_WORKERS
    ends: list[float] = []
    try:
        result = api.fit(data, model="efficientnet_lite0", strategy="head", image_size=64, epochs=2, batch_size=32,
                         augment="light", seed=0, patience=0, progress=False, out=str(out),
                         on_epoch_end=lambda epoch, row: ends.append(time.perf_counter()))
    finally:
        loaders.decode_workers = decode_workers
        os.environ.pop("TRANSFERKIT_IMAGE_CACHE_MB", None)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    return {"epoch2_images_per_s": (n_images + 200) / (ends[1] - ends[0]),  # trained on + validated
            "train_seconds": metrics["train_seconds"], "image_cache": metrics["data_path"]["image_cache"],
            "workers": metrics["data_path"]["workers"], "val_accuracy": metrics["val"]["accuracy"]}


def png_files(n_images: int, folder: Path) -> Examples:
    """The first ``n_images`` fashion-mnist training images as 256 px PNG files (photo-like decoding work)."""
    from PIL import Image

    from transferkit.data.builtins import fashion_mnist

    train = fashion_mnist().train.subset(range(n_images))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, array in enumerate(train.inputs):
        path = folder / f"{k}.png"
        Image.fromarray(array).resize((256, 256), Image.Resampling.BICUBIC).save(path)
        paths.append(str(path))
    return Examples("image", paths, train.labels, str(folder))


def loader_run(path: str, train: Examples) -> dict[str, float]:
    """The data path alone: images/s of the training loader (augment light, batch 32) in epochs 1 and 2, no model."""
    from transferkit.data import loaders
    from transferkit.data.labels import LabelMap
    from transferkit.data.preprocess import PreprocessSpec
    from transferkit.data.workers import decode_workers

    spec = PreprocessSpec("image", image_size=64)
    loaders.decode_workers = (lambda: 0) if path == "decode every epoch" else FORCED_WORKERS
    try:
        loader = loaders.make_loader(train, spec, LabelMap(sorted(set(train.labels))), 32, shuffle_seed=0,
                                     augment="light", cache=path == "cache")
        rates = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            start = time.perf_counter()
            n = sum(len(batch["index"]) for batch in loader)
            rates.append(n / (time.perf_counter() - start))
    finally:
        loaders.decode_workers = decode_workers
    return {"epoch1_images_per_s": rates[0], "epoch2_images_per_s": rates[1], "workers": loader.num_workers}


def text_bundle(out: Path) -> Path:
    from transferkit import api
    from transferkit.data.builtins import bbc_news

    train = bbc_news().train
    every_class = range(0, len(train), len(train) // 100)  # the files are listed class by class
    return api.fit(train.subset(every_class), model="minilm", strategy="linear-probe", seed=0,
                   progress=False, out=str(out)).bundle_dir


def bbc_texts(n_texts: int, varied: bool) -> Examples:
    """``n_texts`` bbc-news texts spread over the classes; ``varied``: each cut to its first 40-1,500 characters
    (a fixed pseudo-random length), so their token counts differ as short user texts do."""
    from transferkit.data.builtins import bbc_news

    pool = bbc_news().train
    examples = pool.subset(range(1, len(pool), max(1, len(pool) // n_texts))[:n_texts])
    if varied:
        rng = np.random.default_rng(0)
        examples.inputs = [t[: int(rng.integers(40, 1500))] for t in examples.inputs]
    return examples


def text_run(bundle: Path, examples: Examples, sorted_batches: bool) -> tuple[dict[str, float], np.ndarray]:
    """Predict ``examples``: texts/s and the probabilities (input order)."""
    from transferkit.data.stream import inference_batches
    from transferkit.serve.predictor import Predictor

    predictor = Predictor.from_bundle(bundle, batch_size=64)
    start = time.perf_counter()
    if sorted_batches:
        probs = predictor.predict(examples).probabilities
    else:
        probs = np.concatenate([predictor.probabilities(b.inputs)
                                for b in inference_batches(examples, predictor.preprocessing, 64)])
    seconds = time.perf_counter() - start
    return {"texts_per_s": len(examples) / seconds, "texts": len(examples)}, probs


def ratios(rows: list[dict], base: list[dict]) -> dict[str, float]:
    """Epoch-2 images/s over ``base``'s in the same repeat, summarised over the repeats."""
    return stats([a["epoch2_images_per_s"] / b["epoch2_images_per_s"] for a, b in zip(rows, base)])


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=200)
    args = parser.parse_args()
    os.nice(10)
    torch.set_num_threads(1)
    runs: dict[str, list[dict]] = {f"{kind}, {p}": [] for kind, p in FIT_PATHS}
    loader_runs: dict[str, dict[str, list[dict]]] = {kind: {p: [] for p in IMAGE_PATHS} for kind in LOADER_KINDS}
    text_runs: dict[str, list[dict]] = {f"{kind}, {order}": [] for kind in TEXT_KINDS for order in TEXT_ORDERS}
    max_diff = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        bundle = text_bundle(Path(tmp) / "text")
        text_sets = {kind: bbc_texts(args.texts, kind == "varied lengths") for kind in TEXT_KINDS}
        from transferkit.data.builtins import fashion_mnist

        image_sets = {LOADER_KINDS[0]: fashion_mnist().train.subset(range(args.images + 200)),
                      LOADER_KINDS[1]: png_files(args.images + 200, Path(tmp) / "png")}
        for r in range(args.repeats):
            for kind, path in ((k, p) for k in LOADER_KINDS for p in IMAGE_PATHS):
                loader_runs[kind][path].append(loader_run(path, image_sets[kind].subset(range(args.images))))
                print(kind, path, loader_runs[kind][path][-1], flush=True)
            for kind, path in FIT_PATHS:
                out = Path(tmp) / f"img-{r}-{kind}-{path}".replace(" ", "-")
                runs[f"{kind}, {path}"].append(image_run(path, image_sets[kind], args.images, out))
                print(kind, path, runs[f"{kind}, {path}"][-1], flush=True)
            for kind, examples in text_sets.items():
                probs = []
                for order in TEXT_ORDERS:
                    row, p = text_run(bundle, examples, order == TEXT_ORDERS[1])
                    text_runs[f"{kind}, {order}"].append(row)
                    probs.append(p)
                    print(kind, order, row, flush=True)
                max_diff = max(max_diff, float(np.abs(probs[0] - probs[1]).max()))
    images = {p: {"epoch2_images_per_s": stats([x["epoch2_images_per_s"] for x in v]),
                  "train_seconds": stats([x["train_seconds"] for x in v]),
                  "image_cache": v[0]["image_cache"], "workers": v[0]["workers"],
                  "val_accuracy": stats([x["val_accuracy"] for x in v]),
                  "ratio": ratios(v, runs[p.split(", ")[0] + ", decode every epoch"])} for p, v in runs.items()}
    loader_only = {kind: {p: {"epoch1_images_per_s": stats([x["epoch1_images_per_s"] for x in v]),
                              "epoch2_images_per_s": stats([x["epoch2_images_per_s"] for x in v]),
                              "workers": v[0]["workers"], "ratio": ratios(v, rows["decode every epoch"])}
                          for p, v in rows.items()} for kind, rows in loader_runs.items()}
    texts = {p: {"texts_per_s": stats([x["texts_per_s"] for x in v]), "texts": v[0]["texts"]}
             for p, v in text_runs.items()}
    for kind in TEXT_KINDS:
        plain, by_length = (texts[f"{kind}, {order}"] for order in TEXT_ORDERS)
        plain["ratio"] = 1.0
        by_length["ratio"] = round(by_length["texts_per_s"]["median"] / plain["texts_per_s"]["median"], 2)
    print(f"\nimages: fashion-mnist {args.images} train + 200 val, 64 px, Lite0 head, batch 32, 1 thread "
          f"({args.repeats} repeats; median [min-max])")
    print(f"{'fit':<34} {'epoch 2 img/s':>22} {'ratio':>17} {'loop s':>7} workers")
    for p in runs:
        e, s, r = images[p]["epoch2_images_per_s"], images[p]["train_seconds"], images[p]["ratio"]
        print(f"{p:<34} {e['median']:>8.1f} [{e['min']:.1f}-{e['max']:.1f}] {r['median']:>5.2f} "
              f"[{r['min']:.2f}-{r['max']:.2f}] {s['median']:>7.1f} {images[p]['workers']}")
    print(f"\n{'loader only (no model)':<34} {'epoch 2 img/s':>22} {'ratio':>17} {'epoch 1':>8} workers")
    for kind, rows in loader_only.items():
        for p, v in rows.items():
            e, r, first = v["epoch2_images_per_s"], v["ratio"], v["epoch1_images_per_s"]
            print(f"{kind + ', ' + p:<34} {e['median']:>8.1f} [{e['min']:.1f}-{e['max']:.1f}] {r['median']:>5.2f} "
                  f"[{r['min']:.2f}-{r['max']:.2f}] {first['median']:>8.1f} {v['workers']}")
    print(f"\ntexts: predict {args.texts} bbc-news texts, MiniLM (max 256 tokens), batch 64, 1 thread")
    for p, v in texts.items():
        t = v["texts_per_s"]
        print(f"{p:<34} {t['median']:>8.1f} texts/s [{t['min']:.1f}-{t['max']:.1f}] {v['ratio']:>6.2f}")
    print(f"largest probability difference sorted vs input order: {max_diff:.2e}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or
        platform.machine(), "cores": os.cpu_count(), "torch_threads": 1, "repeats": args.repeats,
        "images": {"setup": f"fashion-mnist first {args.images} train + 200 val (arrays, and 256 px PNG files), "
                            "64 px, efficientnet_lite0, head, "
                            "batch 32, augment light, 2 epochs; epoch 2 timed", "paths": images,
                   "loader_only": loader_only},
        "texts": {"setup": f"{args.texts} bbc-news texts (whole, and cut to 40-1,500 characters), predict with a "
                           "minilm linear-probe bundle, batch 64", "paths": texts,
                  "max_probability_difference": max_diff}}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
