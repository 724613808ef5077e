"""Run the HTTP app with uvicorn: check the exposure rule, load the bundle once, serve until SIGTERM/SIGINT.

Imports transferkit.core and transferkit.serve. The bundle path comes from the operator (CLI flag), never from
a request. On SIGTERM uvicorn stops accepting connections and lets in-flight requests finish (up to the request
timeout plus a margin) before the process exits.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from transferkit.core.errors import ConfigError
from transferkit.serve.app import create_app
from transferkit.serve.config import ServeConfig
from transferkit.serve.predictor import Predictor

DRAIN_MARGIN_S = 5.0


def load_predictor(bundle: Path, runtime: str | None = None) -> Predictor:
    """``runtime`` is passed on only to a Predictor that accepts it (the ONNX runtime arrives with export)."""
    if runtime is None:
        return Predictor.from_bundle(Path(bundle))
    if "runtime" not in inspect.signature(Predictor.from_bundle).parameters:
        raise ConfigError(f"--runtime {runtime!r} is not supported by this version of transferkit; drop --runtime "
                          "to serve with PyTorch.")
    return Predictor.from_bundle(Path(bundle), runtime=runtime)


def serve(bundle: Path, config: ServeConfig, runtime: str | None = None, access_log: bool = False) -> None:
    """Blocks until the server is stopped. ``config`` has already refused an exposed bind without a token."""
    import uvicorn

    app = create_app(load_predictor(bundle, runtime), config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", access_log=access_log,
                timeout_graceful_shutdown=int(config.timeout_s + DRAIN_MARGIN_S), server_header=False)
