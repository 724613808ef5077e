"""Load benchmark for `transferkit serve` (RELIABILITY S1): N concurrent clients for D seconds on loopback.

For a text bundle and an image bundle (tiny MiniLM / EfficientNet-Lite0 linear probes are fitted in a temp
folder unless --text-bundle / --image-bundle are given) it starts the real CLI server as a subprocess, then:
a warm-up burst (not counted), one client alone (single-client latency), then N clients in closed loop, each
sending one input per request. It prints requests, errors, req/s, p50/p90/p99 and the server's memory growth
(RSS after the warm-up burst -> end), and writes benchmarks/results/serve_load.json. Aim: 0 errors,
p99 <= 3x the single-client p50, memory growth < 10 %. The clients share the machine's CPUs with the server.

    .venv/bin/python benchmarks/serve_load.py                      # 50 clients x 60 s, text and image
    .venv/bin/python benchmarks/serve_load.py --duration 20 --only text
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

JSON = {"content-type": "application/json"}
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.conftest holds the tiny-data helpers the test suite uses

from tests.conftest import bbc_texts, digit_arrays, write_digit_folder, write_text_csv  # noqa: E402


def tiny_bundles(workdir: Path) -> dict[str, Path]:
    import transferkit

    texts, labels = bbc_texts(per_class=6)
    csv = write_text_csv(workdir / "texts.csv", texts, labels)
    digits = write_digit_folder(workdir / "digits", (0, 1, 2), 6)
    return {
        "text": Path(transferkit.fit(str(csv), model="minilm", strategy="linear-probe", out=str(workdir / "text"),
                                     progress=False).bundle_dir),
        "image": Path(transferkit.fit(str(digits), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                                      out=str(workdir / "image"), progress=False).bundle_dir),
    }


def payloads(modality: str) -> list[bytes]:
    """One input per request, rotating over real unseen examples (BBC texts of ~300 chars, 32 px digit PNGs)."""
    if modality == "text":
        texts, _ = bbc_texts(per_class=10, offset=20)
        return [json.dumps({"inputs": [t]}).encode() for t in texts]
    out = []
    for arrays in digit_arrays((0, 1, 2), 10, offset=20).values():
        for array in arrays:
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, "PNG")
            out.append(json.dumps({"inputs": [{"image_base64": base64.b64encode(buf.getvalue()).decode()}]}).encode())
    return out


class Server:
    """`transferkit serve` as a child process (the real CLI), its RSS sampled in a thread."""

    def __init__(self, bundle: Path, concurrency: int | None):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "transferkit.cli", "serve", "--bundle", str(bundle), "--port", str(self.port)]
        if concurrency:
            cmd += ["--concurrency", str(concurrency)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.peak_rss = 0
        self._sampling = threading.Event()

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                with urllib.request.urlopen(self.url + "/health/ready", timeout=2):
                    threading.Thread(target=self._sample, daemon=True).start()
                    return
            except OSError:  # refused while starting, or 503 (HTTPError) while warming up
                pass
            time.sleep(0.2)
        raise TimeoutError("server not ready")

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._sampling.is_set() and self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, self.rss_mb())
            time.sleep(0.25)

    def batch_counts(self) -> tuple[float, float]:
        """(inputs, forward passes) so far, from the server's own /metrics."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                  if line.startswith("transferkit_batch_size_")}
        return values.get("transferkit_batch_size_sum", 0.0), values.get("transferkit_batch_size_count", 0.0)

    def stop(self) -> int:
        self._sampling.set()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def load(port: int, bodies: list[bytes], clients: int, seconds: float) -> tuple[list[float], dict[str, int]]:
    """Closed loop: each client thread sends its next request as soon as the previous one is answered.

    Plain http.client connections, one per thread and kept alive: measured here, an httpx AsyncClient with 50
    connections managed only 72 req/s on an endpoint that http.client threads drove at 960 req/s, so the
    client, not the server, would have been measured.
    """
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds

    def one_client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body=bodies[i % len(bodies)], headers=JSON)
                response = conn.getresponse()
                response.read()
                kind = None if response.status == 200 else f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                kind = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if kind is None:
                latencies.append(time.perf_counter() - start)
            else:
                errors[kind] = errors.get(kind, 0) + 1
            i += clients
        conn.close()

    threads = [threading.Thread(target=one_client, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def percentiles_ms(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    p50, p90, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 90, 99])
    return {"p50_ms": round(float(p50), 2), "p90_ms": round(float(p90), 2), "p99_ms": round(float(p99), 2),
            "max_ms": round(max(latencies) * 1000, 2)}


def run_modality(modality: str, bundle: Path, args: argparse.Namespace) -> dict:
    bodies = payloads(modality)
    server = Server(bundle, args.concurrency)
    try:
        server.wait_ready()
        rss_ready = server.rss_mb()
        load(server.port, bodies, args.clients, args.warmup)
        single, single_errors = load(server.port, bodies, 1, args.single_duration)
        rss_start = server.rss_mb()
        inputs_before, passes_before = server.batch_counts()
        start = time.perf_counter()
        latencies, errors = load(server.port, bodies, args.clients, args.duration)
        elapsed = time.perf_counter() - start
        rss_end = server.rss_mb()
        inputs_after, passes_after = server.batch_counts()
        mean_batch = (inputs_after - inputs_before) / max(passes_after - passes_before, 1)
    finally:
        exit_code = server.stop()
    single_p50 = float(np.percentile(single, 50) * 1000) if single else float("nan")
    stats = percentiles_ms(latencies)
    result = {
        "bundle": str(bundle) if (args.text_bundle if modality == "text" else args.image_bundle) else "tiny, fitted here",
        "clients": args.clients, "seconds": round(elapsed, 1),
        "requests": len(latencies) + sum(errors.values()), "errors": sum(errors.values()), "error_kinds": errors,
        "req_per_s": round(len(latencies) / elapsed, 1), **stats,
        "single_client_p50_ms": round(single_p50, 2), "single_client_requests": len(single),
        "single_client_errors": sum(single_errors.values()),
        "p99_over_single_p50": round(stats["p99_ms"] / single_p50, 2),
        "mean_batch_size": round(mean_batch, 2) if mean_batch else None,
        "rss_mb_ready": round(rss_ready, 1), "rss_mb_before_load": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1), "rss_mb_peak": round(server.peak_rss, 1),
        "memory_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "server_exit_code": exit_code,
    }
    result["aims_met"] = {"zero_errors": result["errors"] == 0, "p99_le_3x_single_p50": result["p99_over_single_p50"] <= 3,
                          "memory_growth_lt_10pct": result["memory_growth_pct"] < 10}
    return result


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of concurrent load per bundle")
    parser.add_argument("--single-duration", type=float, default=10.0, help="seconds of single-client load")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of uncounted concurrent load first")
    parser.add_argument("--concurrency", type=int, default=None, help="server --concurrency (default: its own)")
    parser.add_argument("--text-bundle", type=Path)
    parser.add_argument("--image-bundle", type=Path)
    parser.add_argument("--only", choices=["text", "image"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        bundles = {"text": args.text_bundle, "image": args.image_bundle}
        if any(b is None for b in bundles.values()):
            fitted = tiny_bundles(Path(tmp))
            bundles = {k: v or fitted[k] for k, v in bundles.items()}
        runs = {}
        for modality in ("text", "image"):
            if args.only in (None, modality):
                runs[modality] = run_modality(modality, bundles[modality], args)
                r = runs[modality]
                print(f"{modality}: {r['requests']} requests, {r['errors']} errors, {r['req_per_s']} req/s, "
                      f"p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms "
                      f"(single-client p50 {r['single_client_p50_ms']} ms: p99 = {r['p99_over_single_p50']}x), "
                      f"mean batch {r['mean_batch_size']}, memory {r['rss_mb_before_load']} -> {r['rss_mb_end']} MB "
                      f"({r['memory_growth_pct']:+.1f} %)", flush=True)
    environment = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                   "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: _relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"created": datetime.now().isoformat(timespec="seconds"), "environment": environment,
                                    "settings": settings, "runs": runs}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
