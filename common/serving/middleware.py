"""Limits, API key and metrics of every request: :class:`ServiceMetrics` (Prometheus collectors of one service)
and the pure ASGI middleware that checks ``X-API-Key``, caps the body size (413) and counts requests and latency
per route template."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

log = logging.getLogger(__name__)


API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class ServiceMetrics:
    """Prometheus collectors of one service, in their own registry (several apps can live in one process)."""

    def __init__(self, app_name: str, prediction_buckets: Sequence[float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlref_requests", "HTTP requests", ["app", "method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mlref_request_latency_seconds",
            "HTTP request latency in seconds",
            ["app", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        buckets = tuple(prediction_buckets) if prediction_buckets else tuple(i / 10 for i in range(1, 11))
        self.predictions = Histogram(
            "mlref_prediction", "distribution of predicted values", ["app"], buckets=buckets, registry=self.registry
        )
        self.reloads = Counter(
            "mlref_model_reloads", "model reload attempts", ["app", "result"], registry=self.registry
        )
        self.version = Gauge("mlref_model_version", "registry version being served", ["app"], registry=self.registry)
        self.app = app_name

    def observe_prediction(self, value: float) -> None:
        self.predictions.labels(self.app).observe(float(value))


def _content_length(scope: dict) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _AuthAndMetrics:
    """Pure ASGI middleware: API-key check, body size cap, request count and latency per route template.

    Written against raw ASGI rather than ``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware), which
    costs about a millisecond per request in extra tasks and streams on a 2-core machine. A body announced
    larger than ``max_body_bytes`` (``Content-Length``) gets 413 before any of it is read; a chunked body is
    counted while the app reads it and cut off with 413 at the limit.
    """

    def __init__(self, app: Any, key: str | None, metrics: ServiceMetrics, max_body_bytes: int | None) -> None:
        self.app, self.key, self.metrics, self.max_body = app, key, metrics, max_body_bytes
        self._key_bytes = key.encode() if key else b""

    def _too_large(self, size: int | None = None) -> str:
        got = f"{size} bytes" if size is not None else "more"
        return f"request body too large: {got} > limit {self.max_body} bytes (MLREF_MAX_BODY_BYTES)"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        m = self.metrics
        if self.key and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(API_KEY_HEADER.lower().encode(), b"")
            if not secrets.compare_digest(given, self._key_bytes):
                m.requests.labels(m.app, scope["method"], "unauthorised", "401").inc()
                response = JSONResponse(
                    {"detail": f"missing or wrong API key: send header {API_KEY_HEADER}"}, status_code=401
                )
                await response(scope, receive, send)
                return
        if self.max_body is not None:
            size = _content_length(scope)
            if size is not None and size > self.max_body:
                m.requests.labels(m.app, scope["method"], "too_large", "413").inc()
                await JSONResponse({"detail": self._too_large(size)}, status_code=413)(scope, receive, send)
                return
            receive = self._capped(receive, self.max_body)
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            m.requests.labels(m.app, scope["method"], route, str(status)).inc()
            m.latency.labels(m.app, route).observe(time.perf_counter() - start)

    def _capped(self, receive: Callable, limit: int) -> Callable:
        seen = 0

        async def receive_capped() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # FastAPI re-raises an HTTPException from the body read: a JSON 413
                    raise HTTPException(413, detail=self._too_large())
            return message

        return receive_capped
