"""FastAPI app factory shared by every app's HTTP service.

What every service gets from :func:`create_app`:

- ``GET /healthz`` (process up), ``GET /readyz`` (503 until a model is fully loaded), ``GET /v1/model``;
- ``GET /metrics`` in Prometheus format: request count and latency histogram per route, the prediction
  distribution (apps call ``app.state.metrics.observe_prediction``), model reloads, the serving version;
- 422 for bad input with a ``message`` naming each bad field (``body.amount: Input should be ...``);
- an optional API key (``MLREF_API_KEY``), checked in header ``X-API-Key`` on everything but health checks;
- hot swap: a background thread polls the registry's champion alias and, when it moves, loads the new version
  **completely** before swapping one reference. A request takes one snapshot (:func:`get_loaded`) and uses it
  throughout, so it sees the old model or the new one, never a mix. ``POST /admin/reload`` forces a check.
- sampled prediction logging to JSONL (:class:`PredictionLog`) for monitoring.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from common import registry
from common.config import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A fully loaded model and the registry version it came from (``None`` for a model set by hand)."""

    model: T
    version: registry.ModelVersion | None = None

    @property
    def version_id(self) -> str | None:
        return self.version.version if self.version else None


class ModelHolder(Generic[T]):
    """Holds the model a service answers with; swaps it atomically when the registry's alias moves.

    Args:
        name: registered model name.
        loader: builds the in-memory model from a verified model directory.
        ref: the alias (or version) to serve.
    """

    def __init__(self, name: str, loader: Callable[[Path], T], ref: str = registry.CHAMPION) -> None:
        self.name, self.loader, self.ref = name, loader, ref
        self._loaded: Loaded[T] | None = None
        self._refresh_lock = threading.Lock()
        self.on_swap: list[Callable[[Loaded[T]], None]] = []
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    def current(self) -> Loaded[T]:
        """The model to use for one whole request; HTTP 503 when none is loaded yet."""
        loaded = self._loaded  # one read of one reference: the snapshot
        if loaded is None:
            raise HTTPException(503, detail=f"no {self.name!r} model loaded yet ({self.ref}); try again shortly")
        return loaded

    def set(self, loaded: Loaded[T]) -> None:
        """Replace the served model (a single reference assignment: atomic for readers)."""
        self._loaded = loaded
        for hook in self.on_swap:
            hook(loaded)

    def refresh(self) -> bool:
        """Load the registry's ``ref`` version if it differs from the served one. Returns True on a swap.

        A failure (integrity error, loader error) is logged and re-raised; the current model keeps serving.
        """
        with self._refresh_lock:
            try:
                version = registry.version_of(self.name, self.ref)  # one cheap query per poll
                if version is None:
                    self.last_error = f"no {self.name!r} version has alias {self.ref!r}"
                    return False
                current = self._loaded
                if current is not None and current.version_id == version:
                    return False
                mv = registry.get(self.name, version)
                model = self.loader(registry.fetch_model_dir(mv))  # fully built before anyone sees it
            except Exception as exc:  # noqa: BLE001 - keep serving the old model whatever went wrong
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("could not load %s@%s: %s", self.name, self.ref, self.last_error)
                raise
            self.last_error = None
            self.set(Loaded(model, mv))
            log.info("now serving %s version %s", self.name, mv.version)
            return True


class ServiceMetrics:
    """Prometheus collectors of one service, in their own registry (several apps can live in one process)."""

    def __init__(self, app_name: str, prediction_buckets: Sequence[float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlref_requests", "HTTP requests", ["app", "method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mlref_request_latency_seconds", "HTTP request latency in seconds", ["app", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        buckets = tuple(prediction_buckets) if prediction_buckets else tuple(i / 10 for i in range(1, 11))
        self.predictions = Histogram(
            "mlref_prediction", "distribution of predicted values", ["app"], buckets=buckets, registry=self.registry
        )
        self.reloads = Counter("mlref_model_reloads", "model reload attempts", ["app", "result"],
                               registry=self.registry)
        self.version = Gauge("mlref_model_version", "registry version being served", ["app"],
                             registry=self.registry)
        self.app = app_name

    def observe_prediction(self, value: float) -> None:
        self.predictions.labels(self.app).observe(float(value))


class PredictionLog:
    """Append a sampled share of predictions to a JSONL file for monitoring (thread-safe).

    Args:
        path: the JSONL file (e.g. ``$MLREF_HOME/predictions/<app>.jsonl``).
        sample_rate: probability in [0, 1] that a record is kept.
    """

    def __init__(self, path: str | Path, sample_rate: float = 1.0, seed: int = 0) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def log(self, record: dict[str, Any]) -> bool:
        """Write ``record`` (plus a UTC ``logged_at``) with probability ``sample_rate``; True when written."""
        with self._lock:
            if self._rng.random() >= self.sample_rate:
                return False
            line = json.dumps({"logged_at": datetime.now(UTC).isoformat(), **record}, default=str)
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        return True

    def read(self) -> pd.DataFrame:
        """All logged records (empty frame when nothing was logged)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return pd.DataFrame()
        return pd.read_json(self.path, lines=True)


def get_loaded(request: Request) -> Loaded:
    """FastAPI dependency: the snapshot of the served model for this request."""
    return request.app.state.holder.current()


def _validation_message(errors: Sequence[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class _AuthAndMetrics:
    """Pure ASGI middleware: API-key check, request count and latency per route template.

    Written against raw ASGI rather than ``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware), which
    costs about a millisecond per request in extra tasks and streams on a 2-core machine.
    """

    def __init__(self, app: Any, key: str | None, metrics: ServiceMetrics) -> None:
        self.app, self.key, self.metrics = app, key, metrics
        self._key_bytes = key.encode() if key else b""

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


def create_app(
    title: str,
    holder: ModelHolder,
    routers: Sequence[APIRouter] = (),
    *,
    api_key: str | None | type[...] = ...,
    refresh_interval_s: float | None = 5.0,
    prediction_log: PredictionLog | None = None,
    prediction_buckets: Sequence[float] | None = None,
    load_on_startup: bool = True,
) -> FastAPI:
    """Build a service around ``holder`` with the shared endpoints, middleware and the app's ``routers``.

    Args:
        api_key: required ``X-API-Key`` value; default ``MLREF_API_KEY`` (unset = no key needed).
        refresh_interval_s: seconds between registry polls for a new champion; ``None`` disables polling.
        load_on_startup: load the registry's model when the app starts (skip when the caller ``set()`` one).
    """
    key = get_settings().api_key if api_key is ... else api_key
    metrics = ServiceMetrics(holder.name, prediction_buckets)
    stop = threading.Event()

    def try_refresh() -> None:
        try:
            if holder.refresh():
                metrics.reloads.labels(holder.name, "swapped").inc()
        except Exception:  # noqa: BLE001 - already logged by the holder; the old model keeps serving
            metrics.reloads.labels(holder.name, "failed").inc()

    def poll() -> None:
        while not stop.wait(refresh_interval_s):
            try_refresh()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:
        if load_on_startup and not holder.ready:
            try_refresh()
        thread = None
        if refresh_interval_s:
            thread = threading.Thread(target=poll, name=f"{holder.name}-model-refresh", daemon=True)
            thread.start()
        yield
        stop.set()
        if thread is not None:
            thread.join(timeout=5)

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log
    holder.on_swap.append(lambda loaded: metrics.version.labels(holder.name).set(
        float(loaded.version_id) if loaded.version_id and loaded.version_id.isdigit() else 0))

    app.add_middleware(_AuthAndMetrics, key=key, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        safe = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
        return JSONResponse({"detail": safe, "message": _validation_message(errors)}, status_code=422)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        loaded = holder._loaded
        if loaded is None:
            return JSONResponse({"ready": False, "model": holder.name, "error": holder.last_error},
                                status_code=503)
        return JSONResponse({"ready": True, "model": holder.name, "version": loaded.version_id})

    @app.get("/v1/model", tags=["ops"])
    def model_info(request: Request) -> dict[str, Any]:
        loaded = get_loaded(request)
        mv = loaded.version
        return {
            "name": holder.name,
            "version": loaded.version_id,
            "sha256": mv.sha256 if mv else None,
            "metrics": mv.metrics if mv else {},
            "aliases": list(mv.aliases) if mv else [],
        }

    @app.get("/metrics", tags=["ops"])
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", tags=["ops"])
    def reload() -> dict[str, Any]:
        try:
            swapped = holder.refresh()
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            metrics.reloads.labels(holder.name, "failed").inc()
            detail = f"reload failed, still serving the previous model: {holder.last_error or exc}"
            raise HTTPException(500, detail=detail) from exc
        if swapped:
            metrics.reloads.labels(holder.name, "swapped").inc()
        loaded = holder._loaded
        return {"swapped": swapped, "version": loaded.version_id if loaded else None}

    for router in routers:
        app.include_router(router)
    return app


def serve(app: FastAPI, host: str | None = None, port: int | None = None, **uvicorn_kwargs: Any) -> None:
    """Run ``app`` with uvicorn, on ``MLREF_HOST``:``MLREF_PORT`` (127.0.0.1:8000) unless given."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, **uvicorn_kwargs)
