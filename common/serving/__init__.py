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

Modules: :mod:`~common.serving.app` (:func:`create_app`, ops routes, OpenAPI), :mod:`~common.serving.middleware`
(API key, body limit, metrics), :mod:`~common.serving.holder` (hot swap), :mod:`~common.serving.predictions`
(prediction log), :mod:`~common.serving.inputs` (client-safe errors, :data:`JsonInt`) and
:mod:`~common.serving.server` (running it). Everything public is importable from ``common.serving``.
"""

from fastapi import FastAPI  # noqa: F401 - a name callers used from here

from common.config import get_settings  # noqa: F401 - a name callers used from here
from common.serving.app import (
    ERROR_SCHEMA,
    ERROR_SCHEMA_NAME,
    ERROR_STATUSES,
    Health,
    ModelInfo,
    Readiness,
    ReloadResult,
    create_app,
    document_errors,
)
from common.serving.holder import Loaded, ModelHolder, get_loaded
from common.serving.inputs import JsonInt, json_int, public_error
from common.serving.middleware import API_KEY_HEADER, LATENCY_BUCKETS, OPEN_PATHS, ServiceMetrics
from common.serving.predictions import PredictionLog
from common.serving.server import (
    LOOPBACK_NAMES,
    BackgroundServer,
    free_port,
    freeze_gc_once,
    is_loopback,
    serve,
    warn_if_exposed,
)

__all__ = [
    "API_KEY_HEADER",
    "ERROR_SCHEMA",
    "ERROR_SCHEMA_NAME",
    "ERROR_STATUSES",
    "LATENCY_BUCKETS",
    "LOOPBACK_NAMES",
    "OPEN_PATHS",
    "BackgroundServer",
    "Health",
    "JsonInt",
    "Loaded",
    "ModelHolder",
    "ModelInfo",
    "PredictionLog",
    "Readiness",
    "ReloadResult",
    "ServiceMetrics",
    "create_app",
    "document_errors",
    "free_port",
    "freeze_gc_once",
    "get_loaded",
    "is_loopback",
    "json_int",
    "public_error",
    "serve",
    "warn_if_exposed",
]
