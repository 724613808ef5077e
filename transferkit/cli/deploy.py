"""`transferkit export` (ONNX, int8) and `transferkit serve` (HTTP): a bundle made ready to deploy, and served.

Imports typer/rich and transferkit.cli.common at start; transferkit.api, transferkit.export and
transferkit.serve (torch, onnxruntime, FastAPI) only inside the command bodies.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from transferkit.cli import cores
from transferkit.cli.app import app
from transferkit.cli.common import console

EXPORT_EXAMPLES = """
Examples:

    transferkit export --bundle runs/news/bundle --format onnx --out runs/news/onnx

    transferkit export --bundle runs/news/bundle --format onnx --int8 --out runs/news/onnx-int8

    transferkit predict --bundle runs/news/onnx --runtime onnx --data new.csv --out preds.csv

The export is checked on 100 inputs (the bundle's test split when its data is still readable, else synthetic):
onnxruntime must match PyTorch within 1e-4 on every logit and on every decoded prediction (the top-1 label, the
label set, a token model's tag for every word), or nothing is written. --int8 quantizes with onnxruntime (dynamic
for text, static QDQ for CNNs) and reports its agreement with fp32 and the accuracy it costs.
"""


@app.command(epilog=EXPORT_EXAMPLES)
def export(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder."),
    out: Path = typer.Option(..., help="New folder for the exported bundle (model.onnx + manifest + tokenizer)."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to int8 with onnxruntime (smaller, usually faster)."),
    opset: int = typer.Option(17, help="ONNX opset version."),
) -> None:
    """Export a bundle for onnxruntime, checked against PyTorch; the result is a bundle predict and serve run."""
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit import api
    from transferkit.export.bundle import bundle_task, read_manifest

    entry = api.export(bundle, out, format=format, int8=int8, opset=opset)
    task = bundle_task(read_manifest(out), out)  # says how its checks read: per label set, per value, per word tag
    parity = entry["parity"]
    console.print(f"wrote {escape(str(out))}: parity on {parity['n']} inputs ({escape(parity['inputs'])}): "
                  f"{task.agreement(parity, '.0%')}", highlight=False)
    ref = entry["vs_bundle"]
    console.print(f"vs the bundle's own predictions ({ref['precision']}): {task.agreement(ref)}", highlight=False)
    if ref.get("warning"):
        console.print(f"[yellow]warning:[/] {escape(ref['warning'])}", highlight=False)
    q = entry.get("int8")
    if q:
        cost = task.int8_cost(q["accuracy"]) if q.get("accuracy") else "no labeled data to measure accuracy on"
        console.print(f"int8 ({q['method']}): {q['int8_bytes'] / 1e6:.1f} MB instead of {q['fp32_bytes'] / 1e6:.1f} MB; "
                      f"{task.agreement(q['vs_fp32'])} (vs fp32); {cost}", highlight=False)
        if q.get("warning"):
            console.print(f"[yellow]warning:[/] {escape(q['warning'])}", highlight=False)


SERVE_EXAMPLES = """
Examples:

    transferkit serve --bundle runs/fm/bundle        # http://127.0.0.1:8000, this machine only

    TRANSFERKIT_TOKEN=$(openssl rand -hex 24) transferkit serve --bundle runs/fm/bundle --host 0.0.0.0

    curl -s localhost:8000/v1/predict -H 'content-type: application/json' -d '{"inputs": ["a new text"], "top_k": 2}'

    curl -s localhost:8000/v1/predict -F files=@photo.jpg -F files=@other.png      # or clips: -F files=@clip.wav

Endpoints: POST /v1/predict, GET /v1/model, /health/live, /health/ready, /metrics. With a token, all but
/health/* need 'Authorization: Bearer TOKEN'.
"""


@app.command(epilog=SERVE_EXAMPLES)
def serve(
    bundle: Path = typer.Option(..., help="A run's bundle/ folder, loaded once at start."),
    host: str | None = typer.Option(None, help="Address to bind [default: 127.0.0.1]; any other needs a token."),
    port: int | None = typer.Option(None, help="Port [default: 8000]."),
    token: str | None = typer.Option(None, envvar="TRANSFERKIT_TOKEN", show_envvar=True,
                                     help="Bearer token clients must send (prefer the environment variable)."),
    max_batch: int | None = typer.Option(None, help="Inputs per request [default: 64]."),
    max_body_mb: float | None = typer.Option(None, help="Request body limit in MB, 413 beyond [default: 10]."),
    concurrency: int | None = typer.Option(None, help="Requests in progress at once, 503 beyond [default: 64]."),
    timeout: float | None = typer.Option(None, help="Seconds per request, 504 beyond [default: 30]."),
    max_pixels: int | None = typer.Option(None, help="Decoded pixels per request, its images summed [default: 16 M]."),
    max_audio_seconds: float | None = typer.Option(None, help="Seconds per audio clip, 413 beyond [default: 60]."),
    runtime: str | None = typer.Option(None, help="auto | torch | onnx (an exported bundle) [default: auto]."),
    access_log: bool = typer.Option(False, help="Log every request."),
) -> None:
    """Serve a bundle over HTTP (FastAPI + uvicorn) until Ctrl-C / SIGTERM, which drains requests in flight."""
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit.serve.config import ServeConfig

    given = {"host": host, "port": port, "token": token, "max_batch": max_batch, "max_body_mb": max_body_mb,
             "concurrency": concurrency, "timeout_s": timeout, "max_pixels": max_pixels,
             "max_audio_seconds": max_audio_seconds}
    config = ServeConfig(**{k: v for k, v in given.items() if v is not None})  # refuses exposure before loading
    from transferkit.serve.server import serve as run_server

    console.print(f"loading {escape(str(bundle))}; /health/ready turns 200 after a warm-up prediction"
                  + ("; clients must send the bearer token" if config.token else ""))
    run_server(bundle, config, runtime, access_log)
