"""FastAPI app factory shared by every app's HTTP service.

What every service gets from :func:`create_app`:

- ``GET /healthz`` (process up), ``GET /readyz`` (503 until a model is fully loaded), ``GET /v1/model``;
- ``GET /metrics`` in Prometheus text format: request count and latency histogram per route, the prediction
  distribution (apps call ``app.state.metrics.observe_prediction``), model reloads, the serving version;
- 422 for bad input with a ``message`` naming each bad field (``body.amount: Input should be ...``);
- a request body cap (``MLREF_MAX_BODY_BYTES``, default 1 MiB): a larger body gets 413 before it is read;
- an optional API key (``MLREF_API_KEY``), checked in header ``X-API-Key`` on everything but health checks;
- hot swap: a background thread polls the registry's champion alias and, when it moves, loads the new version
  **completely** before swapping one reference. A request takes one snapshot (:func:`get_loaded`) and uses it
  throughout, so it sees the old model or the new one, never a mix. ``POST /admin/reload`` forces a check.
  A version that fails to load is retried with exponential backoff (not re-downloaded on every poll);
- an OpenAPI document that lists every status and content type the service answers with (error bodies
  ``{"detail": ..., "message"?: ...}``; ``/metrics`` as ``text/plain``);
- sampled prediction logging to JSONL (:class:`PredictionLog`) for monitoring.

:func:`serve` runs an app with uvicorn (and warns loudly when it is exposed beyond loopback without an API key);
:class:`BackgroundServer` runs one in a thread on a free loopback port (:func:`free_port`) for demos and tests.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import pandas as pd
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, BeforeValidator, Field, Strict

from common import registry
from common.config import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


# ----------------------------------------------------------------------------- error texts for clients
_ABS_PATH = re.compile(r"(?<![\w$.~-])/[^\s'\"/]+(?:/[^\s'\"]*)+")


def public_error(message: str) -> str:
    """``message`` without absolute paths, safe to show to unauthenticated clients.

    ``MLREF_HOME`` becomes ``$MLREF_HOME`` and any other absolute path ``<path>``; the full text goes to the log.
    """
    home = get_settings().home.expanduser()
    for h in sorted({str(home.resolve()), str(home.absolute())}, key=len, reverse=True):
        if h.startswith("/") and len(h) > 1:
            message = message.replace(h, "$MLREF_HOME")
    return _ABS_PATH.sub("<path>", message)


def json_int(value: Any) -> Any:
    """Before-validator of :data:`JsonInt`: ``55.0`` becomes ``55``; ``true``/``false`` are refused."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true/false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_int), Strict()]
"""An integer in a JSON body, as JSON Schema defines one: ``55`` or ``55.0``; never ``true``, ``"55"`` or ``55.5``
(422). Constraints compose: ``k: JsonInt = Field(10, ge=1, le=100)``. For query strings use plain ``int``."""


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

    A version that fails to load (integrity error, loader error) is not fetched again before a backoff delay
    that doubles after each failure (``backoff_s``, then up to ``max_backoff_s`` seconds); the alias moving to
    another version, or ``refresh(force=True)`` (``POST /admin/reload``), retries at once. Each new failure is
    logged once at ERROR; the same failure again at DEBUG.

    Args:
        name: registered model name.
        loader: builds the in-memory model from a verified model directory.
        ref: the alias (or version) to serve.
        clock: monotonic seconds (tests pass a fake one).
    """

    backoff_s: float = 5.0
    max_backoff_s: float = 300.0

    def __init__(
        self,
        name: str,
        loader: Callable[[Path], T],
        ref: str = registry.CHAMPION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.loader, self.ref = name, loader, ref
        self._loaded: Loaded[T] | None = None
        self._refresh_lock = threading.Lock()
        self.on_swap: list[Callable[[Loaded[T]], None]] = []
        self.last_error: str | None = None  # client-safe (no absolute paths)
        self._clock = clock
        self._failed: tuple[str | None, str] | None = None  # (version, error) of the last failure
        self._failures = 0
        self._retry_at = 0.0

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    @property
    def loaded(self) -> Loaded[T] | None:
        """The served model, or None (one read of one reference)."""
        return self._loaded

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

    def refresh(self, *, force: bool = False) -> bool:
        """Load the registry's ``ref`` version if it differs from the served one. Returns True on a swap.

        A failure is logged and re-raised; the current model keeps serving. Without ``force``, a version that
        failed to load is skipped until its backoff delay has passed.
        """
        with self._refresh_lock:
            version: str | None = None
            try:
                version = registry.version_of(self.name, self.ref)  # one cheap query per poll
                if version is None:
                    self.last_error = f"no {self.name!r} version has alias {self.ref!r}"
                    return False
                current = self._loaded
                if current is not None and current.version_id == version:
                    return False
                if (
                    not force
                    and self._failed is not None
                    and self._failed[0] == version
                    and self._clock() < self._retry_at
                ):
                    return False  # backing off: do not download and hash the same broken version again
                mv = registry.get(self.name, version)
                model = self.loader(registry.fetch_model_dir(mv))  # fully built before anyone sees it
            except Exception as exc:
                self._record_failure(version, exc)
                raise
            self.last_error, self._failed, self._failures, self._retry_at = None, None, 0, 0.0
            self.set(Loaded(model, mv))
            log.info("now serving %s version %s", self.name, mv.version)
            return True

    def _record_failure(self, version: str | None, exc: Exception) -> None:
        full = f"{type(exc).__name__}: {exc}"
        key = (version, full)
        new = key != self._failed
        self._failures = 1 if new and (self._failed is None or self._failed[0] != version) else self._failures + 1
        delay = min(self.backoff_s * 2 ** (self._failures - 1), self.max_backoff_s)
        self._failed, self._retry_at = key, self._clock() + delay
        self.last_error = public_error(f"could not load version {version}: {full}" if version else full)
        if new:
            log.error(
                "could not load %s@%s (version %s): %s; next try in %.0f s", self.name, self.ref, version, full, delay
            )
        else:
            log.debug(
                "%s version %s still fails to load (%d tries); next try in %.0f s",
                self.name,
                version,
                self._failures,
                delay,
            )


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
            receive = self._capped(receive)
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

    def _capped(self, receive: Callable) -> Callable:
        seen = 0

        async def receive_capped() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # FastAPI re-raises an HTTPException from the body read: a JSON 413
                    raise HTTPException(413, detail=self._too_large())
            return message

        return receive_capped


# ----------------------------------------------------------------------------- response models of the ops routes
class Health(BaseModel):
    status: str = Field(description="always 'ok' while the process answers")


class Readiness(BaseModel):
    ready: bool
    model: str = Field(description="registered model name")
    version: str | None = Field(None, description="registry version served (null for a model set by hand)")
    error: str | None = Field(None, description="why no model is loaded (no absolute paths)")


class ModelInfo(BaseModel):
    name: str
    version: str | None
    sha256: str | None
    metrics: dict[str, Any]
    aliases: list[str]


class ReloadResult(BaseModel):
    swapped: bool = Field(description="a new version was loaded and is now served")
    version: str | None = Field(description="the version served after the reload")


ERROR_SCHEMA_NAME = "ErrorResponse"
ERROR_SCHEMA = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "description": "Every error answer: ``detail`` (a sentence, or for 422 the list of bad fields) and, for 422, "
    "``message``, one line naming each bad field.",
    "properties": {
        "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "object"}]},
        "message": {"type": "string"},
    },
    "required": ["detail"],
}
ERROR_STATUSES = {
    "400": "Malformed request (e.g. a body that cannot be decoded)",
    "401": f"Missing or wrong API key (header {API_KEY_HEADER}; only when MLREF_API_KEY is set)",
    "413": "Request body larger than MLREF_MAX_BODY_BYTES",
    "422": "Invalid input; ``message`` names each bad field and what was expected",
    "503": "No model loaded yet",
}


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers every route can give (400/401/413/422/503, JSON) to an OpenAPI document in place.

    Statuses a route already documents are kept (e.g. ``/readyz``'s 503 body), except FastAPI's generic 422,
    which is replaced by the shape this service returns (it adds ``message``). Health checks get no 401.
    """
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
    for path, item in openapi.get("paths", {}).items():
        for method, op in item.items():
            if method not in {"get", "put", "post", "delete", "patch", "head", "options"}:
                continue
            responses = op.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                if status == "401" and path in OPEN_PATHS:
                    continue
                documented = responses.get(status)
                generic_422 = status == "422" and "HTTPValidationError" in json.dumps(documented or {})
                if documented is None or generic_422:
                    responses[status] = {"description": description, "content": {"application/json": {"schema": ref}}}
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shapes, once nothing refers to them
        saved = schemas.pop(unused, None)
        if saved is not None and f"#/components/schemas/{unused}" in json.dumps(openapi):
            schemas[unused] = saved
    return openapi


def _install_openapi(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    title: str,
    holder: ModelHolder,
    routers: Sequence[APIRouter] = (),
    *,
    api_key: str | type[...] | None = ...,
    refresh_interval_s: float | None = 5.0,
    prediction_log: PredictionLog | None = None,
    prediction_buckets: Sequence[float] | None = None,
    load_on_startup: bool = True,
    max_body_bytes: int | type[...] | None = ...,
) -> FastAPI:
    """Build a service around ``holder`` with the shared endpoints, middleware and the app's ``routers``.

    Args:
        api_key: required ``X-API-Key`` value; default ``MLREF_API_KEY`` (unset = no key needed).
        refresh_interval_s: seconds between registry polls for a new champion; ``None`` disables polling.
        load_on_startup: load the registry's model when the app starts (skip when the caller ``set()`` one).
        max_body_bytes: largest request body in bytes (413 above it); default ``MLREF_MAX_BODY_BYTES``
            (1 MiB); ``None`` = no limit.
    """
    settings = get_settings()
    key = settings.api_key if api_key is ... else api_key
    max_body = settings.max_body_bytes if max_body_bytes is ... else max_body_bytes
    metrics = ServiceMetrics(holder.name, prediction_buckets)

    def try_refresh() -> None:
        try:
            if holder.refresh():
                metrics.reloads.labels(holder.name, "swapped").inc()
        except Exception:  # noqa: BLE001 - already logged by the holder; the old model keeps serving
            metrics.reloads.labels(holder.name, "failed").inc()

    def poll(stop: threading.Event) -> None:
        while not stop.wait(refresh_interval_s):
            try_refresh()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:  # noqa: ARG001 - FastAPI's lifespan signature
        if load_on_startup and not holder.ready:
            try_refresh()
        stop = threading.Event()  # one per start: a restarted app polls again
        thread = None
        if refresh_interval_s:
            thread = threading.Thread(target=poll, args=(stop,), name=f"{holder.name}-model-refresh", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=5)

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log
    app.state.api_key_required = bool(key)
    app.state.max_body_bytes = max_body
    holder.on_swap.append(
        lambda loaded: metrics.version.labels(holder.name).set(
            float(loaded.version_id) if loaded.version_id and loaded.version_id.isdigit() else 0
        )
    )

    app.add_middleware(_AuthAndMetrics, key=key, metrics=metrics, max_body_bytes=max_body)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:  # noqa: ARG001
        errors = exc.errors()
        safe = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
        return JSONResponse({"detail": safe, "message": _validation_message(errors)}, status_code=422)

    _add_ops_routes(app, holder, metrics)
    for router in routers:
        app.include_router(router)
    _install_openapi(app)
    return app


def _add_ops_routes(app: FastAPI, holder: ModelHolder, metrics: ServiceMetrics) -> None:
    @app.get("/healthz", tags=["ops"], response_model=Health)
    def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["ops"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "No model loaded (yet); ``error`` says why"}},
    )
    def readyz() -> JSONResponse:
        loaded = holder.loaded
        if loaded is None:
            return JSONResponse({"ready": False, "model": holder.name, "error": holder.last_error}, status_code=503)
        return JSONResponse({"ready": True, "model": holder.name, "version": loaded.version_id})

    @app.get("/v1/model", tags=["ops"], response_model=ModelInfo)
    def model_info(request: Request) -> ModelInfo:
        loaded = get_loaded(request)
        mv = loaded.version
        return ModelInfo(
            name=holder.name,
            version=loaded.version_id,
            sha256=mv.sha256 if mv else None,
            metrics=mv.metrics if mv else {},
            aliases=list(mv.aliases) if mv else [],
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/reload",
        tags=["ops"],
        response_model=ReloadResult,
        responses={
            500: {
                "description": "The new version failed to load; the previous model is still served",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
            }
        },
    )
    def reload() -> ReloadResult:
        """Check the registry now (ignores the backoff of a version that failed to load)."""
        try:
            swapped = holder.refresh(force=True)
        except Exception as exc:
            metrics.reloads.labels(holder.name, "failed").inc()
            served = holder.loaded
            if served is None:
                raise HTTPException(503, detail=f"reload failed and no model is loaded: {holder.last_error}") from exc
            raise HTTPException(
                500, detail=f"reload failed, still serving version {served.version_id}: {holder.last_error}"
            ) from exc
        if swapped:
            metrics.reloads.labels(holder.name, "swapped").inc()
        loaded = holder.loaded
        if loaded is None:
            raise HTTPException(503, detail=f"no model is loaded: {holder.last_error or 'nothing to load'}")
        return ReloadResult(swapped=swapped, version=loaded.version_id)


# ----------------------------------------------------------------------------- running a server
def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything reachable from other machines."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, api_key_required: bool) -> bool:
    """Log a WARNING when a service binds a non-loopback ``host`` without an API key; True when it warned."""
    if api_key_required or is_loopback(host):
        return False
    log.warning(
        "SERVING ON %s WITHOUT AN API KEY: anyone who can reach this address can call every endpoint, "
        "including POST /admin/reload. Set MLREF_API_KEY, or bind 127.0.0.1.",
        host,
    )
    return True


_gc_frozen = False


def freeze_gc_once() -> bool:
    """Move the objects alive now (libraries, a warm state) out of the GC's working set, once per process.

    Shorter collection pauses (tail latency) for a long-running server; a no-op after the first call.
    """
    global _gc_frozen
    if _gc_frozen:
        return False
    gc.collect()
    gc.freeze()
    _gc_frozen = True
    return True


def serve(app: FastAPI, host: str | None = None, port: int | None = None, **uvicorn_kwargs: Any) -> None:
    """Run ``app`` with uvicorn, on ``MLREF_HOST``:``MLREF_PORT`` (127.0.0.1:8000) unless given."""
    import uvicorn

    settings = get_settings()
    host = host or settings.host
    warn_if_exposed(host, getattr(app.state, "api_key_required", False))
    freeze_gc_once()
    uvicorn.run(app, host=host, port=port or settings.port, **uvicorn_kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn in a thread on 127.0.0.1:``port`` (a free one by default): real sockets, real HTTP.

    ``with BackgroundServer(app) as srv: httpx.get(srv.url + "/healthz")``. Runs the app's lifespan (model load,
    registry polling) and stops it on exit.
    """

    def __init__(self, app: Any, port: int | None = None, *, start_timeout_s: float = 30.0) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.server.should_exit = True
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
