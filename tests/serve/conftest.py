"""Serving fixtures: one tiny real text bundle and one tiny real image bundle per session, and a live server.

Bundles are MiniLM / EfficientNet-Lite0 linear probes on a few BBC texts and sklearn digits (seconds to fit).
Servers are real uvicorn servers on a free loopback port, run in a thread of the test process so that a test
can hold the model busy through ``GatedPredictor`` (a wrapper around the real Predictor, not a fake model).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

import transferkit
from tests.conftest import bbc_texts, write_digit_folder, write_text_csv
from transferkit.data.examples import Examples
from transferkit.serve.app import create_app
from transferkit.serve.config import ServeConfig
from transferkit.serve.predictor import Predictions, Predictor

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve-text")
    texts, labels = bbc_texts(per_class=6)
    data = write_text_csv(root / "train.csv", texts, labels)
    return Path(transferkit.fit(str(data), model="minilm", strategy="linear-probe", out=str(root / "run"),
                                progress=False).bundle_dir)


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve-image")
    data = write_digit_folder(root / "train", (0, 1, 2), 6)
    return Path(transferkit.fit(str(data), model="efficientnet_lite0", strategy="linear-probe", image_size=32,
                                out=str(root / "run"), progress=False).bundle_dir)


@pytest.fixture(scope="session")
def text_predictor(text_bundle: Path) -> Predictor:
    return Predictor.from_bundle(text_bundle)


@pytest.fixture(scope="session")
def image_predictor(image_bundle: Path) -> Predictor:
    return Predictor.from_bundle(image_bundle)


class GatedPredictor:
    """The real Predictor, except that predict() waits while ``gate`` is closed: a deterministic slow model."""

    def __init__(self, inner: Predictor, open_: bool = True):
        self.inner = inner
        self.gate, self.entered = threading.Event(), threading.Event()
        if open_:
            self.gate.set()

    bundle = property(lambda self: self.inner.bundle)
    modality = property(lambda self: self.inner.modality)
    batch_size = property(lambda self: self.inner.batch_size)

    def predict(self, examples: Examples) -> Predictions:
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        return self.inner.predict(examples)


class LiveServer:
    """uvicorn on 127.0.0.1:<free port> in a daemon thread; ``stop()`` is what SIGTERM does (should_exit)."""

    def __init__(self, predictor, config: ServeConfig, graceful_s: int = 10):
        self.app = create_app(predictor, config)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=graceful_s))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, wait_ready: bool = True) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)
        if wait_ready:
            wait_until(lambda: httpx.get(self.url + "/health/ready").status_code == 200)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "server did not stop"


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def live_server() -> Iterator:
    """Factory: start servers inside a test; all are stopped at its end."""
    started: list[LiveServer] = []

    def start(predictor, wait_ready: bool = True, graceful_s: int = 10, **config) -> LiveServer:
        server = LiveServer(predictor, ServeConfig(**config), graceful_s).start(wait_ready)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.thread.is_alive():
            server.stop()
