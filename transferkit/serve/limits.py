"""ASGI guards that run before any route: the bearer token and the request body limit.

Imports nothing from transferkit. Both are plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so
they see the raw byte stream: the body limit counts bytes as they arrive, which is the only way to stop a
chunked body that declares no Content-Length, and the token is checked before a single body byte is read.

A refusal sent while the client is still uploading must still reach it. uvicorn closes the connection as soon as a
response with ``Connection: close`` is complete (the client asked for it, as urllib does, or we do); closing a
socket with unread bytes makes the kernel send a reset, which destroys the response before most clients read it
(they read only after sending the whole body). So ``refuse`` sends the error, keeps the response open while it
reads and discards the rest of the body (up to ``drain_bytes`` and ``timeout_s``), then ends it and closes.
Beyond that bound a reset is the client's answer: reading gigabytes to be polite is not worth it.
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
MIN_DRAIN_BYTES = 256 * 2**20  # read and discard at least this much of a refused upload, so its client sees why


async def send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None,
                     more_body: bool = False) -> None:
    """A JSON error shaped like FastAPI's own ({"detail": ...}), so clients parse one format."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str, *, drain_bytes: int,
                 timeout_s: float, headers: dict[str, str] | None = None, received: bool = False) -> None:
    """Answer ``status`` before (all of) the body was read, so that the client can read the answer.

    The response goes out at once and stays open while the rest of the body is read and discarded, up to
    ``drain_bytes`` more bytes and ``timeout_s``; then it ends with ``Connection: close``. A client that sent
    ``Expect: 100-continue`` and has had no body read yet (``received`` False) is waiting for our answer, not
    sending: nothing to drain. A Content-Length beyond the bound is not drained at all.
    """
    await send_error(send, status, detail, {**(headers or {}), "connection": "close"}, more_body=True)
    declared = _header(scope, b"content-length")
    waiting = not received and (_header(scope, b"expect") or b"").lower() == b"100-continue"
    too_long = declared is not None and declared.isdigit() and int(declared) > drain_bytes
    has_body = (declared is not None and declared != b"0") or _header(scope, b"transfer-encoding") is not None
    if has_body and not waiting and not too_long:
        drained = 0
        with anyio.move_on_after(timeout_s):
            while drained <= drain_bytes:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


class BearerAuth:
    """401 unless ``Authorization: Bearer <token>`` matches, compared in constant time (hmac.compare_digest)."""

    def __init__(self, app: ASGIApp, token: str | None, drain_bytes: int = MIN_DRAIN_BYTES, timeout_s: float = 30.0):
        self.app, self.drain_bytes, self.timeout_s = app, drain_bytes, timeout_s
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = _header(scope, b"authorization")
        if given is None or not hmac.compare_digest(given, self.expected):
            reason = "missing" if given is None else "wrong"
            return await refuse(scope, receive, send, 401, f"Unauthorized: {reason} bearer token; send "
                                "'Authorization: Bearer <token>'.", headers={"www-authenticate": "Bearer"},
                                drain_bytes=self.drain_bytes, timeout_s=self.timeout_s)
        return await self.app(scope, receive, send)


class BodyLimit:
    """Read the whole body up front, refusing it with 413 past ``max_bytes`` and with 408 past ``timeout_s``.

    The app then gets the buffered body, so no route can be handed more than ``max_bytes``. The 413 names the
    limit and reaches a client that keeps sending: the rest of the body is drained (``refuse``), up to
    ``drain_bytes`` (16x the limit, at least MIN_DRAIN_BYTES).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.drain_bytes = max(16 * max_bytes, MIN_DRAIN_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit_mb = self.max_bytes / 2**20
        too_large = f"Request body exceeds the {limit_mb:g} MB limit (--max-body-mb); send fewer or smaller inputs."
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await refuse(scope, receive, send, 413, too_large, drain_bytes=self.drain_bytes,
                                timeout_s=self.timeout_s)
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
                    return await refuse(scope, receive, send, 413, too_large, drain_bytes=self.drain_bytes,
                                        timeout_s=self.timeout_s, received=True)
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
