"""Limits on a real loopback server: token, readiness, timeout, concurrency, draining on shutdown, and 413/401
answers that reach a client still uploading (rather than a connection reset).

The model is held busy through GatedPredictor (the real Predictor behind an Event), so "slow" is exact rather
than a race against the machine's speed.
"""
from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import httpx
import pytest

from tests.serve.conftest import TOKEN, GatedPredictor, wait_until
from transferkit.core.errors import ConfigError
from transferkit.serve.config import ServeConfig, is_loopback

TEXT = {"inputs": ["Interest rates rose again."]}


def _post_in_background(url: str, results: list, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(httpx.post(url, timeout=60, **kwargs)), daemon=True)
    thread.start()
    return thread


def test_token_is_required_except_for_health(live_server, text_predictor):
    server = live_server(text_predictor, token=TOKEN)
    url = server.url
    assert httpx.post(url + "/v1/predict", json=TEXT).status_code == 401
    wrong = httpx.post(url + "/v1/predict", json=TEXT, headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert httpx.post(url + "/v1/predict", json=TEXT, headers={"Authorization": TOKEN}).status_code == 401
    assert httpx.get(url + "/v1/model").status_code == 401
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/health/live").status_code == 200 and httpx.get(url + "/health/ready").status_code == 200
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url + "/v1/predict", json=TEXT, headers=good).status_code == 200
    assert httpx.get(url + "/metrics", headers=good).status_code == 200
    # a huge unauthenticated body is refused before it is read
    assert httpx.post(url + "/v1/predict", content=b"x" * 2**20, headers={"content-type": "application/json"}
                      ).status_code == 401


def test_ready_only_after_the_warm_up_prediction(live_server, text_predictor):
    gated = GatedPredictor(text_predictor, open_=False)
    server = live_server(gated, wait_ready=False)
    assert httpx.get(server.url + "/health/live").status_code == 200
    assert gated.entered.wait(30)  # the warm-up prediction is running
    not_ready = httpx.get(server.url + "/health/ready")
    assert not_ready.status_code == 503 and not_ready.headers["retry-after"] == "1"
    assert not_ready.json()["detail"] == "warming up"
    gated.gate.set()
    wait_until(lambda: httpx.get(server.url + "/health/ready").status_code == 200, timeout=30)


def test_slow_prediction_gets_504_then_the_next_request_succeeds(live_server, text_predictor):
    gated = GatedPredictor(text_predictor)
    server = live_server(gated, timeout_s=1.5)  # room for one real prediction on a busy 2-core machine
    gated.gate.clear()
    response = httpx.post(server.url + "/v1/predict", json=TEXT)
    assert response.status_code == 504 and "--timeout" in response.json()["detail"]
    assert server.app.state.service.admitted == 1  # the abandoned work still holds its slot ...
    gated.gate.set()
    wait_until(lambda: server.app.state.service.admitted == 0)  # ... until the model is done with it
    assert httpx.post(server.url + "/v1/predict", json=TEXT).status_code == 200


def test_over_the_concurrency_limit_gets_503_with_retry_after(live_server, text_predictor):
    gated = GatedPredictor(text_predictor)
    server = live_server(gated, concurrency=2)
    gated.gate.clear()
    gated.entered.clear()
    results: list[httpx.Response] = []
    first = _post_in_background(server.url + "/v1/predict", results, json=TEXT)
    assert gated.entered.wait(30)  # the first request is in the model; the second waits in the queue
    second = _post_in_background(server.url + "/v1/predict", results, json=TEXT)
    wait_until(lambda: server.app.state.service.admitted == 2)
    refused = httpx.post(server.url + "/v1/predict", json=TEXT)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "--concurrency" in refused.json()["detail"]
    assert httpx.get(server.url + "/health/live").status_code == 200  # health is not rationed
    gated.gate.set()
    first.join(30)
    second.join(30)
    assert [r.status_code for r in results] == [200, 200]
    assert httpx.post(server.url + "/v1/predict", json=TEXT).status_code == 200


def test_shutdown_drains_requests_in_flight(live_server, text_predictor):
    gated = GatedPredictor(text_predictor)
    server = live_server(gated, graceful_s=20)
    gated.gate.clear()
    gated.entered.clear()
    results: list[httpx.Response] = []
    client = _post_in_background(server.url + "/v1/predict", results, json=TEXT)
    assert gated.entered.wait(30)
    server.server.should_exit = True  # what uvicorn's SIGTERM handler does
    wait_until(lambda: _refused(server.url))  # no new connections once shutdown began
    assert server.thread.is_alive() and not results  # ... while the request in flight is still being answered
    gated.gate.set()
    client.join(30)
    assert results[0].status_code == 200 and results[0].json()["predictions"][0]["label"]
    server.thread.join(30)
    assert not server.thread.is_alive()


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/health/live", timeout=1)
    except httpx.TransportError:
        return True
    return False


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts_need_no_token(host: str):
    assert is_loopback(host)
    assert ServeConfig(host=host).token is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "no-such-host.invalid"])
def test_exposed_hosts_refuse_to_start_without_a_token(host: str):
    with pytest.raises(ConfigError, match="without a token"):
        ServeConfig(host=host)
    assert ServeConfig(host=host, token=TOKEN).host == host


@pytest.mark.parametrize("options, words", [
    ({"token": "short"}, "at least 16"), ({"token": "a token with spaces in it"}, "without spaces"),
    ({"max_batch": 0}, "'max_batch'"), ({"concurrency": 1.5}, "'concurrency'"), ({"timeout_s": 0}, "'timeout_s'"),
    ({"port": 70000}, "'port'"), ({"max_body_mb": -1}, "'max_body_mb'"),
])
def test_serve_config_names_the_bad_value(options: dict, words: str):
    with pytest.raises(ConfigError, match=words):
        ServeConfig(**options)


# --------------------------------------------- refusals that reach a client still uploading (issue 12)

UPLOAD = 5 * 2**20  # 5x the 1 MB limit below


def _raw_post(url: str, headers: dict[str, str], chunked: bool = False) -> bytes:
    """Send the whole body first, then read the answer, as most clients do; 'Connection: close' like urllib."""
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, "Content-Type": "application/json",
                                                   "Connection": "close", **headers}.items())
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {UPLOAD}\r\n"
    piece = b"x" * 2**16
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\n{head}\r\n".encode())
        for _ in range(UPLOAD // len(piece)):
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_over_the_limit_reads_413_not_a_reset(live_server, text_predictor, chunked: bool):
    server = live_server(text_predictor, max_body_mb=1)
    answer = _raw_post(server.url, {}, chunked)  # a ConnectionResetError here is the bug
    assert answer.startswith(b"HTTP/1.1 413 ") and b"1 MB limit (--max-body-mb)" in answer, answer[:300]
    assert b"connection: close" in answer.lower()
    assert httpx.post(server.url + "/v1/predict", json=TEXT).status_code == 200


def test_urllib_upload_over_the_limit_reads_413(live_server, text_predictor):
    """The standard library's client sends 'Connection: close' and reads only after the whole body is sent."""
    server = live_server(text_predictor, max_body_mb=1)
    request = urllib.request.Request(server.url + "/v1/predict", data=b"x" * UPLOAD,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413 and "1 MB limit" in refused.value.read().decode()


def test_expect_100_continue_gets_413_without_sending_the_body(live_server, text_predictor):
    server = live_server(text_predictor, max_body_mb=1)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {UPLOAD}\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer  # at once: the server does not wait for the body


def test_unauthenticated_upload_reads_401(live_server, text_predictor):
    server = live_server(text_predictor, token=TOKEN)
    answer = _raw_post(server.url, {})
    assert answer.startswith(b"HTTP/1.1 401 ") and b"bearer token" in answer, answer[:300]
