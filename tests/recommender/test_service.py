"""HTTP API: good and bad requests, cold start, metrics, serving the registry champion."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from apps.recommender.lifecycle import register_bundle
from apps.recommender.service import build_app
from apps.recommender.train import fit_bundle
from common import registry


@pytest.fixture(scope="module")
def bundle(small):
    from apps.recommender.config import RecommenderConfig

    return fit_bundle(small.interactions, "als", {"iterations": 5}, cfg=RecommenderConfig(seed=7, threads=1),
                      item_meta=small.items)


@pytest.fixture
def client(bundle):
    with TestClient(build_app(bundle=bundle, refresh_interval_s=None)) as c:
        yield c


def test_known_user_gets_unseen_items_with_metadata(client, bundle):
    user = bundle.users.ids[5]
    r = client.get(f"/v1/users/{user}/recommendations", params={"k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "personalized" and body["known_user"] and body["k"] == 7
    items = [x["item"] for x in body["items"]]
    assert len(items) == 7 and [x["rank"] for x in body["items"]] == list(range(1, 8))
    seen = {str(bundle.items.ids[i]) for i in bundle.user_items[5].indices}
    assert not set(items) & seen
    assert body["items"][0]["title"].startswith("Item ")


def test_unknown_user_gets_popular_and_says_so(client):
    r = client.get("/v1/users/ghost/recommendations")
    assert r.status_code == 200
    assert r.json()["strategy"] == "popular" and not r.json()["known_user"] and len(r.json()["items"]) == 10
    strict = client.get("/v1/users/ghost/recommendations", params={"strict": True})
    assert strict.status_code == 404 and "ghost" in strict.json()["detail"]


def test_anonymous_history_fold_in(client, bundle):
    history = [str(x) for x in bundle.items.ids[:3]]
    r = client.post("/v1/recommendations", json={"items": history + ["no-such-item"], "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "fold_in" and body["unknown_items"] == ["no-such-item"]
    assert not {x["item"] for x in body["items"]} & set(history)
    empty = client.post("/v1/recommendations", json={"items": []})
    assert empty.json()["strategy"] == "popular"


def test_similar_items_and_unknown_item(client, bundle):
    item = str(bundle.items.ids[0])
    r = client.get(f"/v1/items/{item}/similar", params={"k": 4})
    assert r.status_code == 200 and len(r.json()["items"]) == 4
    assert item not in {x["item"] for x in r.json()["items"]}
    missing = client.get("/v1/items/nope/similar")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


@pytest.mark.parametrize(("method", "url", "kwargs", "field"), [
    ("get", "/v1/users/u00001/recommendations", {"params": {"k": 0}}, "query.k"),
    ("get", "/v1/users/u00001/recommendations", {"params": {"k": 1000}}, "query.k"),
    ("get", "/v1/users/u00001/recommendations", {"params": {"k": "ten"}}, "query.k"),
    ("get", "/v1/items/i00001/similar", {"params": {"k": -1}}, "query.k"),
    ("post", "/v1/recommendations", {"json": {"items": "abc"}}, "body.items"),
    ("post", "/v1/recommendations", {"json": {"items": [], "k": 0}}, "body.k"),
])
def test_bad_requests_are_422_naming_the_field(client, method, url, kwargs, field):
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == 422
    assert field in r.json()["message"]


def test_metrics_endpoint_has_latency_histogram(client):
    client.get("/v1/users/u00001/recommendations")
    text = client.get("/metrics").text
    assert "mlref_request_latency_seconds_bucket" in text
    assert 'route="/v1/users/{user}/recommendations"' in text
    assert "mlref_prediction_count" in text


def test_serves_registry_champion(bundle, small):
    mv = register_bundle(bundle, small.interactions, alias=registry.CHAMPION)
    with TestClient(build_app(refresh_interval_s=None)) as c:
        r = c.get(f"/v1/users/{bundle.users.ids[0]}/recommendations")
        assert r.status_code == 200 and r.json()["model_version"] == mv.version
