"""The app factory: :func:`create_app` builds a service around a :class:`~common.serving.holder.ModelHolder` with
the ops routes (health, readiness, model info, Prometheus metrics, reload), the middleware, the 422 shape and an
OpenAPI document that lists every error answer."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import EllipsisType
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)
from pydantic import BaseModel, Field

from common.config import get_settings
from common.serving.holder import ModelHolder, get_loaded
from common.serving.inputs import _validation_message
from common.serving.middleware import API_KEY_HEADER, OPEN_PATHS, ServiceMetrics, _AuthAndMetrics
from common.serving.predictions import PredictionLog

log = logging.getLogger(__name__)


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
    api_key: str | EllipsisType | None = ...,
    refresh_interval_s: float | None = 5.0,
    prediction_log: PredictionLog | None = None,
    prediction_buckets: Sequence[float] | None = None,
    load_on_startup: bool = True,
    max_body_bytes: int | EllipsisType | None = ...,
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
    key = settings.api_key if isinstance(api_key, EllipsisType) else api_key
    max_body = settings.max_body_bytes if isinstance(max_body_bytes, EllipsisType) else max_body_bytes
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
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001 - FastAPI's lifespan signature
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
