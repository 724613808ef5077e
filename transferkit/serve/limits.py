"""ASGI guards that run before any route: the bearer token and the request body limit.

Imports nothing from transferkit. Both are plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so
they see the raw byte stream: the body limit counts bytes as they arrive, which is the only way to stop a
chunked body that declares no Content-Length, and the token is checked before a single body byte is read.
"""
from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health/live", "/health/ready"})  # probes from orchestrators carry no credentials


async def send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON error shaped like FastAPI's own ({"detail": ...}), so clients parse one format."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class BearerAuth:
    """401 unless ``Authorization: Bearer <token>`` matches, compared in constant time (hmac.compare_digest)."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = _header(scope, b"authorization")
        if given is None or not hmac.compare_digest(given, self.expected):
            reason = "missing" if given is None else "wrong"
            return await send_error(send, 401, f"Unauthorized: {reason} bearer token; send 'Authorization: Bearer <token>'.",
                                    {"www-authenticate": "Bearer"})
        return await self.app(scope, receive, send)


class BodyLimit:
    """Read the whole body up front, refusing it with 413 past ``max_bytes`` and with 408 past ``timeout_s``.

    The app then gets the buffered body, so no route can be handed more than ``max_bytes``. A client that keeps
    sending after the 413 has its remaining bytes discarded by uvicorn, then reads the answer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit_mb = self.max_bytes / 2**20
        too_large = f"Request body exceeds the {limit_mb:g} MB limit (--max-body-mb); send fewer or smaller inputs."
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, 413, too_large)
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.timeout_s) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # nobody left to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    return await send_error(send, 413, too_large)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            return await send_error(send, 408, f"The request body did not arrive within {self.timeout_s:g} s (--timeout).")
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards only http.disconnect can come

        await self.app(scope, replay, send)
