"""HTTP routes of the recommender, mounted on :func:`common.serving.create_app`.

- ``GET  /v1/users/{user}/recommendations?k=10`` — top-k unseen items for a known user; an unknown user gets
  the most popular items and ``strategy: "popular"`` says so (``strict=true`` turns that into a documented 404).
- ``GET  /v1/recommendations?user=ID&k=10`` — the same, with the id in the query string (any id, see below).
- ``POST /v1/recommendations`` ``{"items": [...], "k": 10, "exclude_seen": true}`` — anonymous / new user:
  recommendations folded in from an item history (ALS solves the user's factors; item models score from the
  items directly).
- ``GET  /v1/items/{item}/similar?k=10`` — nearest items; 404 for an unknown item.

Ids: one type everywhere — strings of 1..200 characters (:data:`~apps.recommender.data.MAX_ID_LENGTH`), exactly as
in the training file (``user``/``item`` columns are read as strings, so ``42`` there is ``"42"`` here). JSON
numbers or booleans where an id, ``k`` or ``exclude_seen`` is expected are 422, never coerced (``"items": [1]``,
``"k": true``, ``"exclude_seen": 0``), and unknown body fields are 422. An id may contain ``/``: the path routes
take the rest of the path up to the route's suffix (``/v1/users/a/b/recommendations`` is user ``a/b``; ``%2F``
works too). Other URL-special characters (``?``, ``#``, ``%``, spaces) must be percent-encoded; ids such as ``..``
that clients normalise away in paths are safest in the query form (``/v1/recommendations?user=..``).

Bad ``k`` (outside 1..max_k) is a 422 naming the field. Item metadata (title, genres) is attached when known.
Every response carries the registry version that produced it; ``/metrics`` has the latency histogram and the
distribution of the recommended items' popularity percentile (``mlref_prediction``).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

from apps.recommender.config import REGISTRY_NAME, RecommenderConfig
from apps.recommender.data import MAX_ID_LENGTH
from apps.recommender.model import Recommendation, RecommenderBundle
from common import serving
from common.workspace import Workspace

MAX_K = RecommenderConfig().max_k
MAX_HISTORY = 1000
Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
UserPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="user id (may contain '/')")]
ItemPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="item id (may contain '/')")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of items")]
Strict = Annotated[bool, Query(description="404 instead of popular items for an unknown user")]


def _not_bool_or_text(value: object) -> object:
    """JSON integers only: ``true`` or ``"5"`` are errors, not 1 or 5 (``5.0`` is the integer 5, as in JSON Schema)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer, not a boolean or a string")
    return value


JsonInt = Annotated[int, BeforeValidator(_not_bool_or_text)]


def _not_found(what: str) -> dict[int | str, dict]:
    schema = {"$ref": f"#/components/schemas/{serving.ERROR_SCHEMA_NAME}"}
    return {404: {"description": what, "content": {"application/json": {"schema": schema}}}}


class RecommendedItem(BaseModel):
    item: str
    score: float
    rank: int
    title: str | None = None
    genres: str | None = None


class RecommendationResponse(BaseModel):
    user: str | None = None
    k: int
    strategy: str = Field(description="personalized | fold_in | popular (nothing known about the user)")
    known_user: bool
    unknown_items: list[str] = Field(default_factory=list, description="history items the model does not know")
    model_version: str | None
    items: list[RecommendedItem]


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Id] = Field(
        default_factory=list, max_length=MAX_HISTORY, description="item ids (strings) the user interacted with"
    )
    k: JsonInt = Field(10, ge=1, le=MAX_K)
    exclude_seen: StrictBool = Field(True, description="leave the history's items out of the answer")


class SimilarResponse(BaseModel):
    item: str
    k: int
    model_version: str | None
    items: list[RecommendedItem]


def _items(bundle: RecommenderBundle, ids: list[str], scores: list[float]) -> list[RecommendedItem]:
    return [
        RecommendedItem(item=i, score=round(s, 6), rank=r + 1, **bundle.item_info(i))
        for r, (i, s) in enumerate(zip(ids, scores, strict=True))
    ]


def _observe(
    request: Request, bundle: RecommenderBundle, rec: Recommendation, loaded: serving.Loaded, user: str | None
) -> None:
    idx = bundle.items.index_of(rec.items)
    idx = idx[idx >= 0]
    if idx.size:
        request.app.state.metrics.observe_prediction(float(np.mean(bundle.popularity_percentile[idx])))
    plog = request.app.state.prediction_log
    if plog is not None:
        plog.log({"user": user, "strategy": rec.strategy, "items": rec.items, "version": loaded.version_id})


router = APIRouter(tags=["recommendations"])
UNKNOWN_USER_404 = _not_found("strict=true and the user is unknown to the model")


def _for_user(request: Request, user: str, k: int, strict: bool, loaded: serving.Loaded) -> RecommendationResponse:
    bundle: RecommenderBundle = loaded.model
    rec = bundle.recommend_users([user], k)[0]
    if strict and not rec.known_user:
        raise HTTPException(
            404,
            detail=f"unknown user {user!r}: the model was not trained on them. "
            "POST /v1/recommendations with their item history instead.",
        )
    _observe(request, bundle, rec, loaded, user)
    return RecommendationResponse(
        user=user,
        k=k,
        strategy=rec.strategy,
        known_user=rec.known_user,
        model_version=loaded.version_id,
        items=_items(bundle, rec.items, rec.scores),
    )


@router.get("/v1/users/{user:path}/recommendations", response_model=RecommendationResponse, responses=UNKNOWN_USER_404)
def recommend_user(
    request: Request,
    user: UserPath,
    k: K = 10,
    strict: Strict = False,
    loaded: serving.Loaded = Depends(serving.get_loaded),
) -> RecommendationResponse:
    return _for_user(request, user, k, strict, loaded)


@router.get("/v1/recommendations", response_model=RecommendationResponse, responses=UNKNOWN_USER_404)
def recommend_user_by_query(
    request: Request,
    user: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, description="user id (any characters)")],
    k: K = 10,
    strict: Strict = False,
    loaded: serving.Loaded = Depends(serving.get_loaded),
) -> RecommendationResponse:
    return _for_user(request, user, k, strict, loaded)


@router.post("/v1/recommendations", response_model=RecommendationResponse)
def recommend_history(
    request: Request,
    body: HistoryRequest,
    loaded: serving.Loaded = Depends(serving.get_loaded),
) -> RecommendationResponse:
    bundle: RecommenderBundle = loaded.model
    rec = bundle.recommend_history(body.items, body.k, filter_seen=body.exclude_seen)
    _observe(request, bundle, rec, loaded, None)
    return RecommendationResponse(
        k=body.k,
        strategy=rec.strategy,
        known_user=False,
        unknown_items=rec.unknown_items,
        model_version=loaded.version_id,
        items=_items(bundle, rec.items, rec.scores),
    )


@router.get(
    "/v1/items/{item:path}/similar",
    response_model=SimilarResponse,
    responses=_not_found("the item is not in the model's catalogue"),
)
def similar_items(item: ItemPath, k: K = 10, loaded: serving.Loaded = Depends(serving.get_loaded)) -> SimilarResponse:
    bundle: RecommenderBundle = loaded.model
    try:
        ids, scores = bundle.similar_items(item, k)
    except KeyError:
        raise HTTPException(404, detail=f"unknown item {item!r}: not in the model's catalogue") from None
    return SimilarResponse(item=item, k=k, model_version=loaded.version_id, items=_items(bundle, ids, scores))


def build_app(
    *,
    bundle: RecommenderBundle | None = None,
    refresh_interval_s: float | None = 5.0,
    api_key: str | type[...] | None = ...,
    ws: Workspace | None = None,
):
    """The FastAPI app serving the registry's champion (hot-swapped), or a given ``bundle`` (tests); the prediction
    log goes under the workspace ``ws`` (default: the environment's)."""
    holder = serving.ModelHolder(REGISTRY_NAME, RecommenderBundle.load)
    if bundle is not None:
        holder.set(serving.Loaded(bundle, None))
    ws = ws or Workspace.from_env()
    plog = serving.PredictionLog(ws.path("predictions", f"{REGISTRY_NAME}.jsonl"), sample_rate=1.0)
    return serving.create_app(
        "mlref recommender",
        holder,
        [router],
        api_key=api_key,
        refresh_interval_s=refresh_interval_s,
        prediction_log=plog,
        load_on_startup=bundle is None,
    )
