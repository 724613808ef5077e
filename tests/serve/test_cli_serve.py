"""`transferkit serve`: the exposure refusal (S3), and a real process that starts, predicts and stops on SIGTERM.

The process test is slow only because every `transferkit` process imports torch and transformers first.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import VENV_BIN
from tests.serve.conftest import TOKEN, wait_until

EXE = str(VENV_BIN / "transferkit")


def test_exposed_host_without_token_refuses_before_loading_anything(monkeypatch, capsys, tmp_path: Path):
    """In-process through cli.main (the console script's entry point), so it costs no second torch import."""
    from transferkit import cli

    monkeypatch.delenv("TRANSFERKIT_TOKEN", raising=False)
    monkeypatch.setattr(sys, "argv", ["transferkit", "serve", "--bundle", str(tmp_path / "no-such-bundle"),
                                      "--host", "0.0.0.0"])
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and time.monotonic() - start < 2
    stderr = capsys.readouterr().err.replace("\n", "")
    assert "Refusing to serve on '0.0.0.0' without a token" in stderr and "Traceback" not in stderr
    assert "no-such-bundle" not in stderr  # refused before the bundle was even looked at


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_serve_command_answers_and_exits_cleanly_on_sigterm(cli_env: dict[str, str], text_bundle: Path):
    port = _free_port()
    env = {**cli_env, "TRANSFERKIT_TOKEN": TOKEN}
    proc = subprocess.Popen([EXE, "serve", "--bundle", str(text_bundle), "--port", str(port), "--max-batch", "4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return httpx.get(url + "/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=120)
        auth = {"Authorization": f"Bearer {TOKEN}"}  # the token came from TRANSFERKIT_TOKEN
        assert httpx.post(url + "/v1/predict", json={"inputs": ["a"]}).status_code == 401
        response = httpx.post(url + "/v1/predict", json={"inputs": ["Shares rose.", "The team won."]}, headers=auth)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        too_many = httpx.post(url + "/v1/predict", json={"inputs": ["a"] * 5}, headers=auth)
        assert too_many.status_code == 413  # --max-batch reached the app
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        # uvicorn drains, shuts the app down, then re-raises SIGTERM so supervisors see how it ended
        assert proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), stderr
        assert "Application shutdown complete" in stderr
        assert time.monotonic() - start < 30
        assert "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_max_audio_seconds_reaches_the_config_and_is_checked_before_loading(monkeypatch, capsys, tmp_path: Path):
    from transferkit import cli

    monkeypatch.setattr(sys, "argv", ["transferkit", "serve", "--bundle", str(tmp_path / "no-such-bundle"),
                                      "--max-audio-seconds", "0"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    stderr = capsys.readouterr().err.replace("\n", "")
    assert exit_info.value.code == 2 and "--max-audio-seconds must be a number > 0. Got 0.0 instead." in stderr
    assert "no-such-bundle" not in stderr
