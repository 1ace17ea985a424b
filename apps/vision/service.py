"""HTTP service: ``POST /v1/images:classify`` classifies one image or a batch with the champion.

Three ways to send images (up to ``max_batch_images`` per request, each at most ``max_upload_bytes``):

- ``multipart/form-data`` with one or more file fields (any field name, e.g. ``file`` or ``files``);
- ``application/json`` ``{"images": [{"name": "cat.jpg", "data": "<base64>"}, ...]}``;
- a raw ``image/*`` body (one image).

Answers ``{"model_version", "predictions": [{"name", "labels": [{"label", "probability"}, ...]}]}`` with the top
``k`` (query, default the config's ``top_k``) temperature-calibrated probabilities. Rejected, with a message and no
change of state: a body that is not an image, truncated or empty (400), more pixels than ``max_pixels`` (a
decompression bomb, 400), an upload over ``max_upload_bytes`` or a body over ``max_request_bytes`` (413; a JSON
base64 string over its documented maxLength is a schema error, 422), another
content type (415), malformed or too deeply nested JSON or base64 (422), and no model yet (503). Every error
answer carries ``detail`` and a one-line ``message``.

Memory is bounded per process, whatever clients do: every decode holds its cost in one process-wide
:class:`~apps.vision.data.DecodeBudget` (``max_decode_pixels`` pixels being decoded at once, at most
``max_concurrent_decodes`` decodes); a request that finds it full for ``decode_wait_s`` seconds gets 503 with
``Retry-After``. JPEGs are decoded at a reduced scale (``Image.draft``) and freed heap memory is given back to the
OS after large decodes. Besides common's ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/model`` and
``/admin/reload``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import threading

import numpy as np
import torch
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from apps.vision.config import REGISTRY_NAME, Config
from apps.vision.data import DecodeBudget, DecodeBusy, ImageError, decode_image
from apps.vision.export import BACKENDS
from apps.vision.model import VisionModel
from common import serving
from common.workspace import Workspace

CFG = Config()
BACKEND_ENV = "MLREF_VISION_BACKEND"
CONTENT_TYPES = 'multipart/form-data (file fields), application/json ({"images": [{"data": base64}]}) or image/*'


class Label(BaseModel):
    label: str
    probability: float = Field(description="temperature-calibrated probability")


class Prediction(BaseModel):
    name: str | None = Field(description="the file name (multipart) or the given name (JSON)")
    labels: list[Label] = Field(description="top-k labels, most probable first")


class ClassifyResponse(BaseModel):
    model_version: str | None
    predictions: list[Prediction] = Field(description="one per image, in request order")


def _json_schema(max_images: int, max_b64: int) -> dict:
    image = {
        "type": "object",
        "required": ["data"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "maxLength": 256},
            "data": {
                "type": "string",
                "format": "byte",
                "minLength": 1,
                "maxLength": max_b64,
                "description": "the encoded image file (JPEG, PNG, ...), base64",
            },
        },
    }
    return {
        "type": "object",
        "required": ["images"],
        "additionalProperties": False,
        "properties": {"images": {"type": "array", "minItems": 1, "maxItems": max_images, "items": image}},
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, detail=message, headers=headers)


_budgets: dict[tuple[int, int], DecodeBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(cfg: Config) -> DecodeBudget:
    """The process-wide decoding budget for ``cfg``'s limits: every app of this process with the same limits
    shares one, so concurrent requests cannot decode more than ``max_decode_pixels`` pixels at once."""
    key = (cfg.max_decode_pixels, cfg.max_concurrent_decodes)
    with _budgets_lock:
        if key not in _budgets:
            _budgets[key] = DecodeBudget(*key)
        return _budgets[key]


def _parse_json(raw: bytes, cfg: Config) -> list[tuple[str | None, bytes]]:
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise _error(422, "body: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _error(422, f"body: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"images"} or not isinstance(doc["images"], list):
        raise _error(422, 'body: expected {"images": [{"name": ..., "data": <base64>}, ...]}')
    items = doc["images"]
    if not 1 <= len(items) <= cfg.max_batch_images:
        raise _error(422, f"body.images: {len(items)} images; send 1 to {cfg.max_batch_images}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("data"), str) or set(item) - {"name", "data"}:
            raise _error(422, f"body.images.{i}: expected an object with a base64 string 'data' (and 'name')")
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 256):
            raise _error(422, f"body.images.{i}.name: a string of at most 256 characters")
        if len(item["data"]) > cfg.max_upload_bytes * 4 // 3 + 4:  # the schema's maxLength: 422 like any schema error
            raise _error(
                422,
                f"body.images.{i}.data: longer than the base64 of {cfg.max_upload_bytes} bytes (the per-image limit)",
            )
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (binascii.Error, ValueError):
            raise _error(422, f"body.images.{i}.data: not valid base64") from None
        out.append((name, data))
    return out


async def _parse_multipart(request: Request, cfg: Config) -> list[tuple[str | None, bytes]]:
    try:
        form = await request.form(
            max_files=cfg.max_batch_images, max_fields=cfg.max_batch_images + 8, max_part_size=cfg.max_upload_bytes
        )
    except HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - starlette's MultiPartException & co: a malformed body
        raise _error(400, f"multipart body: {exc}") from None
    out = []
    try:
        for _, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue
            data = await value.read(cfg.max_upload_bytes + 1)
            if len(data) > cfg.max_upload_bytes:
                raise _error(413, f"image {value.filename!r}: larger than the limit of {cfg.max_upload_bytes} bytes")
            out.append((value.filename, data))
    finally:
        await form.close()
    if not out:
        raise _error(400, "multipart body: no file fields; send images as file fields (e.g. -F file=@cat.jpg)")
    if len(out) > cfg.max_batch_images:
        raise _error(413, f"{len(out)} images; at most {cfg.max_batch_images} per request")
    return out


def _decode_all(
    items: list[tuple[str | None, bytes]], size: int, cfg: Config, budget: DecodeBudget | None = None
) -> torch.Tensor:
    """One image at a time, each holding its cost in ``budget`` while it decodes (503 when it stays full)."""
    arrays = []
    for i, (name, data) in enumerate(items):
        label = f"image {i}" + (f" ({name})" if name else "")
        try:
            arrays.append(
                decode_image(data, size, max_pixels=cfg.max_pixels, budget=budget, wait_s=cfg.decode_wait_s)[0]
            )
        except ImageError as exc:
            raise _error(400, f"{label}: {exc}") from None
        except DecodeBusy as exc:
            retry = str(max(1, math.ceil(cfg.decode_wait_s / 2)))
            raise _error(
                503, f"{label}: server busy decoding other images ({exc}); retry later", {"Retry-After": retry}
            ) from None
    return torch.from_numpy(np.stack(arrays))


def build_router(cfg: Config, budget: DecodeBudget | None = None) -> APIRouter:
    router = APIRouter()
    max_b64 = cfg.max_upload_bytes * 4 // 3 + 4
    extra = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _json_schema(cfg.max_batch_images, max_b64)},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "maxItems": cfg.max_batch_images,
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                    }
                },
            },
        }
    }
    responses = {
        400: {"description": "not an image, truncated, too many pixels, or a malformed multipart body"},
        413: {"description": "an image or the request is too large"},
        415: {"description": "unsupported content type"},
        422: {"description": "malformed or too deeply nested JSON, or bad base64"},
        503: {"description": "no model loaded yet, or the decoding budget is full (see Retry-After)"},
    }

    @router.post("/v1/images:classify", response_model=ClassifyResponse, openapi_extra=extra, responses=responses)
    async def classify(
        request: Request, k: int | None = Query(None, ge=1, le=1000, description="labels per image")
    ) -> ClassifyResponse:
        loaded = serving.get_loaded(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            items = await _parse_multipart(request, cfg)
        elif ctype == "application/json":
            items = _parse_json(await request.body(), cfg)
        elif ctype.startswith("image/"):
            data = await request.body()
            if len(data) > cfg.max_upload_bytes:
                raise _error(413, f"image: larger than the limit of {cfg.max_upload_bytes} bytes")
            items = [(None, data)]
        else:
            raise _error(415, f"unsupported content type {ctype or '(none)'!r}: send {CONTENT_TYPES}")
        model: VisionModel = loaded.model
        names = [name for name, _ in items]
        images = await run_in_threadpool(_decode_all, items, model.image_size, cfg, budget)
        del items  # the encoded bytes are not needed any more
        probs = await run_in_threadpool(model.predict_proba, images)
        top = probs.topk(min(k or cfg.top_k, len(model.classes)), dim=1)
        preds = [
            Prediction(
                name=name,
                labels=[Label(label=model.classes[i], probability=float(p)) for i, p in zip(ix, pv, strict=True)],
            )
            for name, ix, pv in zip(names, top.indices.tolist(), top.values.tolist(), strict=True)
        ]
        for p in preds:
            request.app.state.metrics.observe_prediction(p.labels[0].probability)
        plog = request.app.state.prediction_log
        if plog is not None:
            plog.log(
                {
                    "images": len(preds),
                    "top1": [p.labels[0].label for p in preds],
                    "confidence": [round(p.labels[0].probability, 4) for p in preds],
                    "version": loaded.version_id,
                }
            )
        return ClassifyResponse(model_version=loaded.version_id, predictions=preds)

    return router


def build_app(
    *,
    refresh_interval_s: float | None = 5.0,
    backend: str | None = None,
    cfg: Config | None = None,
    prediction_log: bool = True,
    ws: Workspace | None = None,
):
    """The FastAPI app serving the registry's champion (hot-swapped when the alias moves); predictions are logged
    under the workspace ``ws`` (default: the environment's).

    ``backend``: ``torch`` (default, or ``MLREF_VISION_BACKEND``), ``torchscript`` or ``onnx``.
    """
    cfg = cfg or CFG
    backend = backend or os.environ.get(BACKEND_ENV, "torch")
    if backend not in BACKENDS:
        from common.data import DataError

        raise DataError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    holder = serving.ModelHolder(REGISTRY_NAME, lambda p: VisionModel.load(p, backend))
    ws = ws or Workspace.from_env()
    plog = (
        serving.PredictionLog(ws.path("predictions", f"{REGISTRY_NAME}.jsonl"), sample_rate=1.0)
        if prediction_log
        else None
    )
    max_body = max(cfg.max_upload_bytes * 4 // 3 + 4096, min(cfg.max_request_bytes, 1 << 31))
    app = serving.create_app(
        f"mlref {REGISTRY_NAME}",
        holder,
        [build_router(cfg, decode_budget(cfg))],
        refresh_interval_s=refresh_interval_s,
        prediction_log=plog,
        prediction_buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
        max_body_bytes=max_body,
    )
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # noqa: ARG001
    """Every HTTP error answer as ``{"detail": ..., "message": "<one line>"}`` (400s, 413s, 415s and 503s like the
    422s of common.serving), keeping its headers (``Retry-After``)."""
    detail = exc.detail
    message = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return JSONResponse({"detail": detail, "message": message}, status_code=exc.status_code, headers=exc.headers)
