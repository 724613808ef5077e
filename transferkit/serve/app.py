"""The HTTP API over one loaded Predictor: predict, model card, health probes and Prometheus metrics.

Imports transferkit.core, transferkit.data and transferkit.serve. The app is built around a Predictor the
caller already loaded: no route takes a path, a model name or a URL, so no request can make the server read a
file or load a model. Every refusal is a 4xx (or 503/504) whose detail names the input and the fix; a 500
means a bug. The token and body guards run before routing (see limits.py). A token-classification model takes
texts or pre-split word lists and answers per input its words, tags and entities — the JSON object `predict`
writes per line (transferkit.serve.token_output). An audio model takes clips as multipart files or base64 in JSON;
each is decoded (after its header shows it within --max-audio-seconds) and cropped as predict crops it, off the
event loop, and answered like predict's row for it.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from transferkit.core.errors import DataError
from transferkit.data.audio import AudioDecodeError, AudioTooLongError, clip_samples, crop_or_pad, load_audio
from transferkit.data.examples import Examples
from transferkit.data.images import ImageDecodeError, decode_image
from transferkit.export.bundle import bundle_task
from transferkit.serve.batching import MicroBatcher, ShuttingDown
from transferkit.serve.config import ServeConfig
from transferkit.serve.limits import BearerAuth, BodyLimit
from transferkit.serve.metrics import MetricsMiddleware, ServeMetrics
from transferkit.serve.predictor import Predictor

log = logging.getLogger("transferkit.serve")
MAX_REPORTED_ERRORS = 5


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_base64: StrictStr


class AudioInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    audio_base64: StrictStr


class AudioRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[AudioInput] = Field(min_length=1)
    top_k: StrictInt | None = Field(default=None, ge=1)


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[StrictStr] = Field(min_length=1)
    top_k: StrictInt | None = Field(default=None, ge=1)


class TokensRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[StrictStr | list[StrictStr]] = Field(min_length=1)  # a text, or its words
    top_k: StrictInt | None = Field(default=None, ge=1)  # refused with the reason (a tag per word)


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[ImageInput] = Field(min_length=1)
    top_k: StrictInt | None = Field(default=None, ge=1)


class Service:
    """What the routes share: the predictor, its batcher, the admission count and the readiness flag."""

    def __init__(self, predictor: Predictor, config: ServeConfig, metrics: ServeMetrics):
        self.predictor, self.config, self.metrics = predictor, config, metrics
        self.labels = tuple(predictor.bundle.label_map.names)
        self.task = bundle_task(predictor.bundle.manifest, predictor.bundle.path)  # shapes each answer
        self.modality = predictor.modality
        self.batcher = MicroBatcher(self._probabilities, max(predictor.batch_size, 1), self._on_batch)
        self.decoders = anyio.CapacityLimiter(2)
        self.admitted = 0  # requests between admission and the end of their work (a 504 does not end it)
        self.ready = False
        self.warmup_error: str | None = None
        self.kind = "a text model" if self.modality == "text" else "an image model"
        self.hint = ('send {"inputs": ["a text", ...]}' if self.modality == "text" else
                     'send {"inputs": [{"image_base64": "..."}, ...]} or multipart/form-data files')
        if self.modality == "audio":
            self.kind = "an audio model"
            self.hint = ('send clips (WAV, FLAC, OGG, MP3) as multipart/form-data files or {"inputs": '
                         '[{"audio_base64": "..."}, ...]}')
        if self.task.per_word:
            self.kind = "a token-classification model (a tag per word)"
            self.hint = 'send {"inputs": ["a text", ...]} or pre-split words {"inputs": [["Anna", "lives"], ...]}'

    # ------------------------------------------------------------------------------------------- the model
    def _probabilities(self, inputs: list[Any]) -> np.ndarray | list[dict[str, Any]]:
        """Scores per input; a token model answers its rows (words, tags, entities) per input instead."""
        predictions = self.predictor.predict(Examples(self.modality, inputs, None, "request"))
        return predictions.rows if self.task.per_word else predictions.probabilities

    def _on_batch(self, n: int) -> None:
        self.metrics.batch_size.observe(n)
        self.metrics.inputs.inc(n)

    async def warm_up(self) -> None:
        """One prediction before /health/ready says yes: the first forward pass pays for lazy initialisation."""
        spec = self.predictor.bundle.preprocessing
        dummy = "warm-up" if self.modality == "text" else Image.new("RGB", (spec.image_size,) * 2, "white") \
            if self.modality == "image" else 0.1 * np.sin(np.arange(spec.sample_rate, dtype=np.float32) * 0.05)
        try:
            await self.batcher.predict([dummy])
        except Exception as exc:
            self.warmup_error = f"{type(exc).__name__}: {exc}"
            log.exception("warm-up prediction failed; /health/ready stays 503")
            return
        self.ready = True

    # ----------------------------------------------------------------------------------------- a request
    async def handle(self, request: Request) -> dict[str, Any]:
        """Admit (or 503), then answer within the timeout (or 504); the work itself is never cancelled."""
        if self.admitted >= self.config.concurrency:
            raise HTTPException(503, f"Server busy: {self.config.concurrency} requests already in progress "
                                     "(--concurrency); retry shortly.",
                                headers={"Retry-After": str(self.config.retry_after_s)})
        self.admitted += 1
        work = asyncio.ensure_future(self._answer(request))
        work.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(work), self.config.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"Prediction did not finish within {self.config.timeout_s:g} s (--timeout); "
                                     "send fewer inputs or retry later.") from None

    def _release(self, work: asyncio.Future[Any]) -> None:
        self.admitted -= 1
        if not work.cancelled():
            work.exception()  # retrieved here, so an abandoned (timed-out) request does not log a warning

    async def _answer(self, request: Request) -> dict[str, Any]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json":
            raw, top_k = self._parse_json(await request.body())
        elif media == "multipart/form-data" and self.modality in ("image", "audio"):
            raw, top_k = await self._parse_multipart(request)
        else:
            got = media or "no Content-Type"
            raise HTTPException(415, f"Unsupported Content-Type '{got}': this is {self.kind}; {self.hint}.")
        if len(raw) > self.config.max_batch:
            raise HTTPException(413, f"{len(raw)} inputs exceed the limit of {self.config.max_batch} per request "
                                     "(--max-batch); split them over several requests.")
        decode = self._decode_audio if self.modality == "audio" else self._decode_images
        try:
            inputs = raw if self.modality == "text" else \
                await anyio.to_thread.run_sync(decode, raw, limiter=self.decoders)
            probabilities = await self.batcher.predict(inputs)
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None
        except ShuttingDown:
            raise HTTPException(503, "Server is shutting down; retry on another instance.",
                                headers={"Retry-After": str(self.config.retry_after_s)}) from None
        return {"predictions": self._format(probabilities, top_k)}

    def _parse_json(self, body: bytes) -> tuple[list[Any], int | None]:
        schema = TokensRequest if self.task.per_word else TextRequest if self.modality == "text" else \
            AudioRequest if self.modality == "audio" else ImageRequest
        try:
            parsed = schema.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if any(e["type"] == "json_invalid" for e in errors):
                raise HTTPException(400, f"Body is not valid JSON ({errors[0]['msg']}); {self.hint}.") from None
            raise HTTPException(422, f"{_describe(errors)}. This is {self.kind}: {self.hint}.") from None
        if self.task.per_word and parsed.top_k is not None:
            raise HTTPException(422, "top_k ranks classes per input; this token-classification model answers a tag "
                                     "per word with its score. Drop top_k.")
        field = "audio_base64" if self.modality == "audio" else "image_base64"
        raw = parsed.inputs if self.modality == "text" else \
            [(f"inputs[{i}].{field}", getattr(item, field)) for i, item in enumerate(parsed.inputs)]
        return raw, parsed.top_k

    async def _parse_multipart(self, request: Request) -> tuple[list[Any], int | None]:
        try:  # the parser stops at max_batch + 1 files: past --max-batch, whatever the count, the answer is our 413
            form = await request.form(max_files=self.config.max_batch + 1, max_fields=self.config.max_batch + 1,
                                      max_part_size=self.config.max_body_bytes)
        except StarletteHTTPException as exc:  # what request.form raises for a MultiPartException
            if exc.status_code == 400 and str(exc.detail).startswith("Too many files"):
                raise HTTPException(413, f"Over {self.config.max_batch + 1} inputs exceed the limit of "
                                         f"{self.config.max_batch} per request (--max-batch); split them over "
                                         "several requests.") from None
            if exc.status_code == 400 and str(exc.detail).startswith("Too many fields"):
                raise HTTPException(422, "Too many form fields: send clips or images as file fields (e.g. 'files') "
                                         "and optionally 'top_k'.") from None
            raise
        try:
            raw, top_k = [], None
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    where = f"{value.filename} (file {len(raw)})" if value.filename else f"file {len(raw)} of '{name}'"
                    raw.append((where, await value.read()))
                elif name == "top_k":
                    if not value.strip().isdigit() or int(value) < 1:
                        raise HTTPException(422, f"Form field 'top_k' must be an integer >= 1; got {value!r}.")
                    top_k = int(value)
                else:
                    what = "clips" if self.modality == "audio" else "images"
                    raise HTTPException(422, f"Unexpected form field '{name}': send {what} as file fields "
                                             "(e.g. 'files') and optionally 'top_k'.")
        finally:
            await form.close()
        if not raw:
            raise HTTPException(422, f"The multipart body holds no files: {self.hint}.")
        return raw, top_k

    def _decode_images(self, raw: list[tuple[str, bytes | str]]) -> list[Image.Image]:
        """Base64 and pixels are decoded off the event loop; decode_image refuses bombs from the header alone.

        ``max_pixels`` also caps the request's images together: 64 small PNGs of 16 MP each would otherwise
        hold 3 GB of decoded pixels while they wait for the model.
        """
        images, total = [], 0
        for where, data in raw:
            if isinstance(data, str):
                data = _b64decode(where, data)
            image = decode_image(data, self.config.max_pixels, where=where)
            total += image.width * image.height
            if total > self.config.max_pixels:
                raise HTTPException(413, f"The images up to {where} add up to {total:,} pixels, over the "
                                         f"{self.config.max_pixels:,}-pixel limit per request (--max-pixels); "
                                         "send fewer or smaller images per request.")
            images.append(image)
        return images

    def _decode_audio(self, raw: list[tuple[str, bytes | str]]) -> list[np.ndarray]:
        """Each clip decoded to mono at the model's rate and cropped to its clip length as `predict` does (so at
        most one clip length per input is held); a clip whose header says it is over --max-audio-seconds is refused
        before decoding (a few KB of FLAC silence can hold hours)."""
        spec, clips = self.predictor.bundle.preprocessing, []
        samples = clip_samples(spec.clip_seconds, spec.sample_rate)
        for where, data in raw:
            if isinstance(data, str):
                data = _b64decode(where, data, AudioDecodeError)
            try:
                wave = load_audio(data, spec.sample_rate, where, self.config.max_audio_seconds)
            except AudioTooLongError as exc:
                raise HTTPException(413, f"{exc} (--max-audio-seconds).") from None
            clips.append(crop_or_pad(wave, samples)[:min(len(wave), samples)])
        return clips

    def _format(self, probabilities: np.ndarray | list[dict[str, Any]], top_k: int | None) -> list[dict[str, Any]]:
        if self.task.per_word:  # already the rows predict writes
            return list(probabilities)
        return self.task.response(probabilities, self.labels, top_k)

    def model_card(self) -> dict[str, Any]:
        """Chosen manifest fields only: the manifest also records the paths the model was trained from."""
        manifest = self.predictor.bundle.manifest
        spec = self.predictor.bundle.preprocessing
        return {
            "modality": self.modality,
            "task": manifest.get("task"),
            "labels": list(self.labels),
            "backbone": (manifest.get("backbone") or {}).get("name"),
            "strategy": (manifest.get("strategy") or {}).get("name"),
            "input": {"image_size": spec.image_size} if self.modality == "image" else
            {"sample_rate": spec.sample_rate, "clip_seconds": spec.clip_seconds} if self.modality == "audio" else
            {"max_length": spec.max_length},
            "metrics": manifest.get("metrics", {}),
            "created": manifest.get("created"),
            "transferkit_version": (manifest.get("versions") or {}).get("transferkit"),
            "limits": {"max_batch": self.config.max_batch, "max_body_mb": self.config.max_body_mb,
                       "timeout_s": self.config.timeout_s, "max_pixels": self.config.max_pixels,
                       "max_audio_seconds": self.config.max_audio_seconds},
        }


def _b64decode(where: str, text: str, error: type[DataError] = ImageDecodeError) -> bytes:
    if text.startswith("data:") and "," in text:  # a data URL, as browsers produce
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(where, f"not valid base64 ({exc})") from None


def _describe(errors: list[dict[str, Any]]) -> str:
    """Pydantic errors as 'inputs[2]: Input should be a valid string; ...' (the first few)."""
    parts = []
    for e in errors[:MAX_REPORTED_ERRORS]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "body"
        parts.append(f"{where}: {e['msg']}")
    more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
    return "; ".join(parts) + more


def create_app(predictor: Predictor, config: ServeConfig | None = None) -> FastAPI:
    """A FastAPI app serving ``predictor``; run it with uvicorn (``transferkit serve`` does)."""
    config = config or ServeConfig()
    metrics = ServeMetrics()
    service = Service(predictor, config, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batching = asyncio.create_task(service.batcher.run())
        warming = asyncio.create_task(service.warm_up())  # in the background: /health/ready answers 503 meanwhile
        try:
            yield
        finally:
            warming.cancel()
            batching.cancel()
            await asyncio.gather(warming, batching, return_exceptions=True)

    app = FastAPI(title="transferkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict[str, Any]:
        return await service.handle(request)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return service.model_card()

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready")
    async def ready() -> Response:
        if service.ready:
            return Response('{"status":"ready"}', media_type="application/json")
        status = f"warm-up failed: {service.warmup_error}" if service.warmup_error else "warming up"
        raise HTTPException(503, status, headers={"Retry-After": str(config.retry_after_s)})

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # Added last = runs first: metrics see every request, the token is checked before any body byte is read.
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, timeout_s=config.timeout_s)
    app.add_middleware(BearerAuth, token=config.token, drain_bytes=config.max_body_bytes, timeout_s=config.timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
