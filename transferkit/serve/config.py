"""ServeConfig: the HTTP server's address, credentials and limits, checked before anything is loaded.

Imports only transferkit.core. The exposure rule lives here (not in the CLI) so that every way of starting
a server refuses a non-loopback bind without a token: a model endpoint open to the network by accident is the
failure this guards against (cf. TorchServe's CVE-2023-43654).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from transferkit.core.errors import ConfigError

MIN_TOKEN_LENGTH = 16
TOKEN_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def _flag(name: str) -> str:
    """The `transferkit serve` flag of a ServeConfig field (timeout_s is --timeout)."""
    return "--timeout" if name == "timeout_s" else "--" + name.replace("_", "-")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # when set, every endpoint but /health/* needs "Authorization: Bearer <token>"
    max_batch: int = 64  # inputs per request
    max_body_mb: float = 10.0  # request body, counted while it streams in (chunked bodies too)
    concurrency: int = 64  # prediction requests admitted at once (queued or running); more get 503
    timeout_s: float = 30.0  # per request: reading the body (408) and answering it (504)
    max_pixels: int = 16_000_000  # decoded pixels per request (all its images; JPEGs decode at reduced size)
    max_audio_seconds: float = 60.0  # per uploaded clip, read from its header before decoding
    retry_after_s: int = 1  # the Retry-After header on 503

    def __post_init__(self) -> None:
        for name in ("port", "max_batch", "concurrency", "max_pixels", "retry_after_s"):
            value = getattr(self, name)
            low = 0 if name == "port" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"The '{name}' parameter of ServeConfig must be an int >= {low}. Got {value!r} instead.",
                                  cli=f"{_flag(name)} must be an int >= {low}. Got {value!r} instead.")
        if self.port > 65535:
            raise ConfigError(f"The 'port' parameter of ServeConfig must be <= 65535. Got {self.port} instead.")
        for name in ("max_body_mb", "timeout_s", "max_audio_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"The '{name}' parameter of ServeConfig must be a number > 0. Got {value!r} instead.",
                                  cli=f"{_flag(name)} must be a number > 0. Got {value!r} instead.")
        if self.token is not None:
            if len(self.token) < MIN_TOKEN_LENGTH or not self.token.isascii() or not self.token.isprintable() \
                    or any(c.isspace() for c in self.token):
                raise ConfigError(f"The token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without "
                                  f"spaces (got {len(self.token)} characters); make one with {TOKEN_HINT}.")
        elif not is_loopback(self.host):
            raise ConfigError(f"Refusing to serve on '{self.host}' without a token: it is reachable from other machines. "
                              "Pass --token T (or set TRANSFERKIT_TOKEN), or keep the default --host 127.0.0.1.")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback one; an unresolvable name counts as exposed."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
