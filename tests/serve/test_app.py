"""The HTTP API on a real loopback server: answers equal the Predictor's, in order; hostile input gets a 4xx.

S2 of RELIABILITY.md: every hostile request below is answered with a 4xx naming the problem, never a 500,
and the next valid request still succeeds.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import bbc_texts, digit_arrays
from tests.serve.conftest import LiveServer
from transferkit.data.examples import Examples
from transferkit.serve.config import ServeConfig

LIMITS = {"max_body_mb": 1, "max_batch": 16, "timeout_s": 20.0}


@pytest.fixture(scope="module")
def text_server(text_predictor) -> Iterator[LiveServer]:
    server = LiveServer(text_predictor, ServeConfig(**LIMITS)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def image_server(image_predictor) -> Iterator[LiveServer]:
    server = LiveServer(image_predictor, ServeConfig(**LIMITS)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def digit_pngs() -> list[bytes]:
    """6 digits (0, 1, 2, two each, unseen in training) as PNG bytes."""
    out = []
    for arrays in digit_arrays((0, 1, 2), 2, offset=20).values():
        for array in arrays:
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, "PNG")
            out.append(buf.getvalue())
    return out


def b64(data: bytes) -> dict[str, str]:
    return {"image_base64": base64.b64encode(data).decode()}


def expected(predictor, modality: str, inputs: list) -> tuple[list[str], np.ndarray]:
    predictions = predictor.predict(Examples(modality, inputs, None, "test"))
    return predictions.labels, predictions.scores


def check_predictions(response: httpx.Response, labels: list[str], scores: np.ndarray) -> None:
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    assert [p["label"] for p in got] == labels
    np.testing.assert_allclose([p["score"] for p in got], scores, atol=1e-5)


def assert_still_serving(server: LiveServer, modality: str) -> None:
    body = {"inputs": ["Shares fell on Monday."]} if modality == "text" else {"inputs": [b64(_png((8, 8)))]}
    response = httpx.post(server.url + "/v1/predict", json=body)
    assert response.status_code == 200, response.text


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 255).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ happy paths


def test_text_predictions_equal_the_predictors_in_order(text_server, text_predictor):
    texts, _ = bbc_texts(per_class=3, offset=10)  # unseen, grouped by topic: a reordering would show
    labels, scores = expected(text_predictor, "text", texts)
    check_predictions(httpx.post(text_server.url + "/v1/predict", json={"inputs": texts}), labels, scores)
    reversed_ = httpx.post(text_server.url + "/v1/predict", json={"inputs": texts[::-1]})
    check_predictions(reversed_, labels[::-1], scores[::-1])


def test_image_json_and_multipart_equal_the_predictors(image_server, image_predictor, digit_pngs):
    labels, scores = expected(image_predictor, "image", [Image.open(io.BytesIO(b)) for b in digit_pngs])
    as_json = httpx.post(image_server.url + "/v1/predict", json={"inputs": [b64(b) for b in digit_pngs]})
    check_predictions(as_json, labels, scores)
    files = [("files", (f"{i}.png", b, "image/png")) for i, b in enumerate(digit_pngs)]
    check_predictions(httpx.post(image_server.url + "/v1/predict", files=files), labels, scores)


def test_top_k_lists_labels_by_score(text_server, text_predictor):
    response = httpx.post(text_server.url + "/v1/predict", json={"inputs": ["The match ended 2-1."], "top_k": 2})
    item = response.json()["predictions"][0]
    probs = text_predictor.predict(Examples("text", ["The match ended 2-1."], None, "t")).probabilities[0]
    names = text_predictor.bundle.label_map.names
    assert [t["label"] for t in item["top_k"]] == [names[i] for i in np.argsort(-probs)[:2]]
    assert item["top_k"][0] == {"label": item["label"], "score": item["score"]}
    assert item["top_k"][0]["score"] >= item["top_k"][1]["score"]


def test_concurrent_requests_each_get_their_own_answer(text_server, text_predictor):
    """Requests that share a forward pass (micro-batching) are split back correctly."""
    texts, _ = bbc_texts(per_class=4, offset=14)
    labels, scores = expected(text_predictor, "text", texts)
    with httpx.Client(base_url=text_server.url) as client, ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda t: client.post("/v1/predict", json={"inputs": [t]}), texts))
    for response, label, score in zip(responses, labels, scores):
        check_predictions(response, [label], np.array([score]))


def test_model_card_has_labels_and_metrics_but_no_paths(text_server, text_bundle: Path):
    response = httpx.get(text_server.url + "/v1/model")
    card = response.json()
    assert card["labels"] == ["business", "sports", "tech"]
    assert card["backbone"] == "minilm" and card["modality"] == "text" and card["strategy"] == "linear-probe"
    assert 0.0 <= card["metrics"]["val"]["accuracy"] <= 1.0
    assert str(text_bundle.parent.parent) not in response.text and "/tmp" not in response.text


def test_health_and_no_docs_routes(text_server):
    assert httpx.get(text_server.url + "/health/live").json() == {"status": "live"}
    assert httpx.get(text_server.url + "/health/ready").status_code == 200
    for path in ("/docs", "/openapi.json", "/redoc", "/v1/models/load"):
        assert httpx.get(text_server.url + path).status_code == 404


def test_a_text_naming_a_file_is_classified_as_text_not_read(text_server, text_predictor, text_bundle: Path):
    path = str(text_bundle / "transferkit.json")
    labels, scores = expected(text_predictor, "text", [path])
    check_predictions(httpx.post(text_server.url + "/v1/predict", json={"inputs": [path]}), labels, scores)
    response = httpx.post(text_server.url + "/v1/predict", json={"inputs": ["x"], "bundle": str(text_bundle)})
    assert response.status_code == 422 and "bundle" in response.text  # unknown fields are refused, not used


# -------------------------------------------------------------------------------------------- hostile input


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"[" * size


HOSTILE = {
    "bad json": (dict(content=b'{"inputs": [', headers={"content-type": "application/json"}), 400, "not valid JSON"),
    "json list": (dict(json=["a"]), 422, "object"),
    "number input": (dict(json={"inputs": [1, "a"]}), 422, "inputs[0]"),
    "no inputs": (dict(json={"inputs": []}), 422, "inputs"),
    "string top_k": (dict(json={"inputs": ["a"], "top_k": "3"}), 422, "top_k"),
    "too many inputs": (dict(json={"inputs": ["a"] * 17}), 413, "--max-batch"),
    "form data": (dict(data={"inputs": "a"}), 415, "application/x-www-form-urlencoded"),
    "oversize": (dict(json={"inputs": ["a" * 2_000_000]}), 413, "--max-body-mb"),
    "chunked huge": (dict(content=_chunks(8 * 2**20), headers={"content-type": "application/json"}), 413, "1 MB"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_text_requests(text_server, case: str):
    kwargs, status, words = HOSTILE[case]
    response = httpx.post(text_server.url + "/v1/predict", **kwargs, timeout=30)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert_still_serving(text_server, "text")


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A valid 6,000 x 6,000 PNG of 36 KB that decodes to 36 MP (144 MB in Pillow), over the 16 MP cap."""
    buf = io.BytesIO()
    Image.new("1", (6000, 6000), 0).save(buf, "PNG")
    return buf.getvalue()


IMAGE_CASES = {
    "undecodable base64": ({"inputs": [{"image_base64": "%%% not base64 %%%"}]}, 422, "not valid base64"),
    "not an image": ({"inputs": [b64(b"GIF89a but not really")]}, 422, "inputs[0].image_base64"),
    "empty image": ({"inputs": [{"image_base64": ""}]}, 422, "inputs[0].image_base64"),
    "string for image model": ({"inputs": ["a cat"]}, 422, "an image model"),
    "extra field": ({"inputs": [{"image_base64": "", "path": "/etc/passwd"}]}, 422, "inputs[0].path"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_hostile_image_requests(image_server, case: str):
    body, status, words = IMAGE_CASES[case]
    response = httpx.post(image_server.url + "/v1/predict", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert_still_serving(image_server, "image")


def test_bomb_image_is_refused_fast_as_json_and_multipart(image_server, bomb_png: bytes, digit_pngs):
    for kwargs in (dict(json={"inputs": [b64(digit_pngs[0]), b64(bomb_png)]}),
                   dict(files=[("files", ("ok.png", digit_pngs[0])), ("files", ("bomb.png", bomb_png))])):
        start = time.perf_counter()
        response = httpx.post(image_server.url + "/v1/predict", **kwargs)
        assert time.perf_counter() - start < 1.0
        assert response.status_code == 422, response.text
        assert "16,000,000-pixel cap" in response.json()["detail"] and "6000x6000" in response.json()["detail"]
    assert_still_serving(image_server, "image")


def test_a_photo_over_the_cap_is_decoded_at_reduced_size(image_server):
    """A 42 MP JPEG decodes at half size (10.5 MP), inside the 16 MP budget: real photos are served."""
    buf = io.BytesIO()
    Image.new("L", (7000, 6000), 120).save(buf, "JPEG", quality=80)
    response = httpx.post(image_server.url + "/v1/predict", json={"inputs": [b64(buf.getvalue())]})
    assert response.status_code == 200, response.text


def test_images_of_one_request_share_the_pixel_budget(live_server, image_predictor, digit_pngs):
    server = live_server(image_predictor, max_pixels=1500)  # the digits are 32 x 32 = 1,024 pixels
    assert httpx.post(server.url + "/v1/predict", json={"inputs": [b64(digit_pngs[0])]}).status_code == 200
    response = httpx.post(server.url + "/v1/predict", json={"inputs": [b64(b) for b in digit_pngs[:2]]})
    assert response.status_code == 413 and "--max-pixels" in response.json()["detail"]
    assert "inputs[1]" in response.json()["detail"]


def test_bad_multipart_requests(image_server, text_server):
    url = image_server.url + "/v1/predict"
    bad = httpx.post(url, files=[("files", ("junk.png", b"junk"))])
    assert bad.status_code == 422 and "junk.png" in bad.json()["detail"]
    no_files = httpx.post(url, data={"top_k": "2"}, files=[])
    assert no_files.status_code in (415, 422)
    broken = httpx.post(url, content=b"--xx\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=xx"})
    assert 400 <= broken.status_code < 500, broken.text
    too_many = httpx.post(url, files=[("files", (f"{i}.png", _png((4, 4)))) for i in range(17)])
    assert too_many.status_code == 413
    to_text = httpx.post(text_server.url + "/v1/predict", files=[("files", ("a.txt", b"hello"))])
    assert to_text.status_code == 415 and "a text model" in to_text.json()["detail"]
    assert_still_serving(image_server, "image")


def test_slow_client_gets_408(live_server, text_predictor):
    server = live_server(text_predictor, timeout_s=2.0)  # also leaves room for the real prediction after it
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"inp")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert_still_serving(server, "text")


# ----------------------------------------------------------------------------------------------------- metrics


def _samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_by_status(live_server, text_predictor):
    server = live_server(text_predictor, max_body_mb=1)
    for body in ({"inputs": ["a"]}, {"inputs": ["b", "c"]}, {"inputs": [3]}):
        httpx.post(server.url + "/v1/predict", json=body)
    httpx.post(server.url + "/v1/predict", content=b"x" * (2 * 2**20), headers={"content-type": "application/json"})
    samples = _samples(server.url)

    def requests(status: str) -> float:
        return samples.get(("transferkit_requests_total", (("path", "/v1/predict"), ("status", status))), 0.0)

    assert (requests("200"), requests("422"), requests("413")) == (2, 1, 1)
    assert samples[("transferkit_request_duration_seconds_count", (("path", "/v1/predict"),))] == 4
    assert samples[("transferkit_requests_in_flight", ())] == 1  # this scrape itself
    assert samples[("transferkit_inputs_predicted_total", ())] == 1 + 3  # warm-up + 3 texts
    assert json.loads(httpx.get(server.url + "/health/ready").text) == {"status": "ready"}
