"""HTTP routes of the recommender, mounted on :func:`common.serving.create_app`.

- ``GET  /v1/users/{user}/recommendations?k=10`` — top-k unseen items for a known user; an unknown user gets
  the most popular items and ``strategy: "popular"`` says so (``strict=true`` turns that into a 404).
- ``POST /v1/recommendations`` ``{"items": [...], "k": 10}`` — anonymous / new user: recommendations folded in
  from an item history (ALS solves the user's factors; item models score from the items directly).
- ``GET  /v1/items/{item}/similar?k=10`` — nearest items; 404 for an unknown item.

Bad ``k`` (outside 1..max_k) is a 422 naming the field. Item metadata (title, genres) is attached when known.
Every response carries the registry version that produced it; ``/metrics`` has the latency histogram and the
distribution of the recommended items' popularity percentile (``mlref_prediction``).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from apps.recommender.config import REGISTRY_NAME, RecommenderConfig
from apps.recommender.model import Recommendation, RecommenderBundle
from common import serving
from common.config import get_settings

MAX_K = RecommenderConfig().max_k
MAX_HISTORY = 1000


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
    items: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=MAX_HISTORY, description="item ids the user interacted with")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True


class SimilarResponse(BaseModel):
    item: str
    k: int
    model_version: str | None
    items: list[RecommendedItem]


def _items(bundle: RecommenderBundle, ids: list[str], scores: list[float]) -> list[RecommendedItem]:
    return [RecommendedItem(item=i, score=round(s, 6), rank=r + 1, **bundle.item_info(i))
            for r, (i, s) in enumerate(zip(ids, scores, strict=True))]


def _observe(request: Request, bundle: RecommenderBundle, rec: Recommendation, loaded: serving.Loaded,
             user: str | None) -> None:
    idx = bundle.items.index_of(rec.items)
    idx = idx[idx >= 0]
    if idx.size:
        request.app.state.metrics.observe_prediction(float(np.mean(bundle.popularity_percentile[idx])))
    plog = request.app.state.prediction_log
    if plog is not None:
        plog.log({"user": user, "strategy": rec.strategy, "items": rec.items, "version": loaded.version_id})


router = APIRouter(tags=["recommendations"])


@router.get("/v1/users/{user}/recommendations", response_model=RecommendationResponse)
def recommend_user(
    request: Request,
    user: Annotated[str, Path(min_length=1, max_length=200)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="number of items")] = 10,
    strict: Annotated[bool, Query(description="404 instead of popular items for an unknown user")] = False,
    loaded: serving.Loaded = Depends(serving.get_loaded),
) -> RecommendationResponse:
    bundle: RecommenderBundle = loaded.model
    rec = bundle.recommend_users([user], k)[0]
    if strict and not rec.known_user:
        raise HTTPException(404, detail=f"unknown user {user!r}: the model was not trained on them. "
                                        "POST /v1/recommendations with their item history instead.")
    _observe(request, bundle, rec, loaded, user)
    return RecommendationResponse(user=user, k=k, strategy=rec.strategy, known_user=rec.known_user,
                                  model_version=loaded.version_id, items=_items(bundle, rec.items, rec.scores))


@router.post("/v1/recommendations", response_model=RecommendationResponse)
def recommend_history(
    request: Request, body: HistoryRequest, loaded: serving.Loaded = Depends(serving.get_loaded),
) -> RecommendationResponse:
    bundle: RecommenderBundle = loaded.model
    rec = bundle.recommend_history(body.items, body.k, filter_seen=body.exclude_seen)
    _observe(request, bundle, rec, loaded, None)
    return RecommendationResponse(k=body.k, strategy=rec.strategy, known_user=False,
                                  unknown_items=rec.unknown_items, model_version=loaded.version_id,
                                  items=_items(bundle, rec.items, rec.scores))


@router.get("/v1/items/{item}/similar", response_model=SimilarResponse)
def similar_items(
    item: Annotated[str, Path(min_length=1, max_length=200)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    loaded: serving.Loaded = Depends(serving.get_loaded),
) -> SimilarResponse:
    bundle: RecommenderBundle = loaded.model
    try:
        ids, scores = bundle.similar_items(item, k)
    except KeyError:
        raise HTTPException(404, detail=f"unknown item {item!r}: not in the model's catalogue") from None
    return SimilarResponse(item=item, k=k, model_version=loaded.version_id, items=_items(bundle, ids, scores))


def build_app(*, bundle: RecommenderBundle | None = None, refresh_interval_s: float | None = 5.0,
              api_key: str | None | type[...] = ...):
    """The FastAPI app serving the registry's champion (hot-swapped), or a given ``bundle`` (tests, demo)."""
    holder = serving.ModelHolder(REGISTRY_NAME, RecommenderBundle.load)
    if bundle is not None:
        holder.set(serving.Loaded(bundle, None))
    plog = serving.PredictionLog(get_settings().path("predictions", f"{REGISTRY_NAME}.jsonl"), sample_rate=1.0)
    return serving.create_app("mlref recommender", holder, [router], api_key=api_key,
                              refresh_interval_s=refresh_interval_s, prediction_log=plog,
                              load_on_startup=bundle is None)
