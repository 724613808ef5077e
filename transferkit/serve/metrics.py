"""Prometheus metrics for one app: requests by path and status, latency, in-flight requests, batch sizes.

Imports only transferkit.serve.limits. Each app owns its CollectorRegistry (never the global default), so two
apps in one process, as in the tests, count separately and creating an app twice does not raise "Duplicated
timeseries". The middleware sits outermost, so requests refused by the token or body guards are counted too.
"""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from transferkit.serve.limits import ASGIApp, Message, Receive, Scope, Send

KNOWN_PATHS = frozenset({"/v1/predict", "/v1/model", "/health/live", "/health/ready", "/metrics"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("transferkit_requests", "HTTP requests answered, by path and status code.",
                                ["path", "status"], registry=self.registry)
        self.latency = Histogram("transferkit_request_duration_seconds", "Time from request start to response end.",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("transferkit_requests_in_flight", "HTTP requests being handled now.",
                               registry=self.registry)
        self.inputs = Counter("transferkit_inputs_predicted", "Inputs that went through the model.",
                              registry=self.registry)
        self.batch_size = Histogram("transferkit_batch_size", "Inputs per forward pass (requests are batched together).",
                                    buckets=BATCH_BUCKETS, registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP request; unknown paths share one label so a scanner cannot blow up the cardinality."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status = "499"  # the client went away before any answer (nginx's convention)

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            status = "500"
            raise
        finally:
            self.metrics.in_flight.dec()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
            self.metrics.requests.labels(path, status).inc()
