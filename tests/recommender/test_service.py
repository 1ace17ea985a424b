"""HTTP API: good and bad requests, cold start, metrics, serving the registry champion."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from apps.recommender.data import ITEM, USER
from apps.recommender.lifecycle import register_bundle
from apps.recommender.service import build_app
from apps.recommender.train import fit_bundle
from common import registry


@pytest.fixture(scope="module")
def bundle(small):
    from apps.recommender.config import RecommenderConfig

    return fit_bundle(
        small.interactions, "als", {"iterations": 5}, cfg=RecommenderConfig(seed=7, threads=1), item_meta=small.items
    )


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
    r = client.post("/v1/recommendations", json={"items": [*history, "no-such-item"], "k": 5})
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


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "field"),
    [
        ("get", "/v1/users/u00001/recommendations", {"params": {"k": 0}}, "query.k"),
        ("get", "/v1/users/u00001/recommendations", {"params": {"k": 1000}}, "query.k"),
        ("get", "/v1/users/u00001/recommendations", {"params": {"k": "ten"}}, "query.k"),
        ("get", "/v1/items/i00001/similar", {"params": {"k": -1}}, "query.k"),
        ("post", "/v1/recommendations", {"json": {"items": "abc"}}, "body.items"),
        ("post", "/v1/recommendations", {"json": {"items": [], "k": 0}}, "body.k"),
    ],
)
def test_bad_requests_are_422_naming_the_field(client, method, url, kwargs, field):
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == 422
    assert field in r.json()["message"]


def test_metrics_endpoint_has_latency_histogram(client):
    client.get("/v1/users/u00001/recommendations")
    text = client.get("/metrics").text
    assert "mlref_request_latency_seconds_bucket" in text
    assert 'route="/v1/users/{user:path}/recommendations"' in text
    assert "mlref_prediction_count" in text


def test_serves_registry_champion(bundle, small):
    mv = register_bundle(bundle, small.interactions, alias=registry.CHAMPION)
    with TestClient(build_app(refresh_interval_s=None)) as c:
        r = c.get(f"/v1/users/{bundle.users.ids[0]}/recommendations")
        assert r.status_code == 200 and r.json()["model_version"] == mv.version


SPECIAL_USER = "team/a b?c%d#e"
SPECIAL_ITEM = "cat/42"


@pytest.fixture(scope="module")
def special_bundle(small):
    """EASE on data where one user's and one item's ids contain URL-special characters."""
    from apps.recommender.config import RecommenderConfig

    df = small.interactions
    df = df.assign(
        **{
            USER: df[USER].replace({df[USER].iloc[0]: SPECIAL_USER}),
            ITEM: df[ITEM].replace({df[ITEM].iloc[0]: SPECIAL_ITEM}),
        }
    )
    return fit_bundle(df, "ease", cfg=RecommenderConfig(seed=7, threads=1))


def test_ids_with_slashes_and_url_special_characters_are_requestable(special_bundle):
    expected = special_bundle.recommend_users([SPECIAL_USER], 5)[0].items
    with TestClient(build_app(bundle=special_bundle, refresh_interval_s=None)) as c:
        encoded = c.get(f"/v1/users/{quote(SPECIAL_USER, safe='')}/recommendations", params={"k": 5})
        by_query = c.get("/v1/recommendations", params={"user": SPECIAL_USER, "k": 5})
        raw_slash = c.get("/v1/users/team/a%20b%3Fc%25d%23e/recommendations", params={"k": 5})
        similar = c.get(f"/v1/items/{SPECIAL_ITEM}/similar", params={"k": 3})
        also_similar = c.get(f"/v1/items/{quote(SPECIAL_ITEM, safe='')}/similar", params={"k": 3})
    for r in (encoded, by_query, raw_slash):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"] == SPECIAL_USER and body["known_user"]
        assert [x["item"] for x in body["items"]] == expected
    assert similar.status_code == 200 and also_similar.json() == similar.json()
    assert similar.json()["item"] == SPECIAL_ITEM


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "field"),
    [
        ("post", "/v1/recommendations", {"json": {"items": [], "exclude_seen": 0}}, "body.exclude_seen"),
        ("post", "/v1/recommendations", {"json": {"items": [], "exclude_seen": "yes"}}, "body.exclude_seen"),
        ("post", "/v1/recommendations", {"json": {"items": [True]}}, "body.items.0"),
        ("post", "/v1/recommendations", {"json": {"items": [42]}}, "body.items.0"),
        ("post", "/v1/recommendations", {"json": {"items": [""]}}, "body.items.0"),
        ("post", "/v1/recommendations", {"json": {"items": ["x" * 201]}}, "body.items.0"),
        ("post", "/v1/recommendations", {"json": {"items": [], "k": True}}, "body.k"),
        ("post", "/v1/recommendations", {"json": {"items": [], "k": "5"}}, "body.k"),
        ("post", "/v1/recommendations", {"json": {"items": [], "exclude_sen": False}}, "body.exclude_sen"),
        ("get", "/v1/users/" + "u" * 201 + "/recommendations", {}, "path.user"),
        ("get", "/v1/recommendations", {"params": {"user": ""}}, "query.user"),
        ("get", "/v1/recommendations", {}, "query.user"),
    ],
)
def test_strict_types_ids_and_booleans_are_422_and_change_nothing(client, method, url, kwargs, field):
    log = client.app.state.prediction_log
    before = len(log.read())
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]
    assert len(log.read()) == before  # a rejected request logs no prediction


def test_openapi_documents_the_404s(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "404" in paths["/v1/users/{user}/recommendations"]["get"]["responses"]
    assert "404" in paths["/v1/recommendations"]["get"]["responses"]
    assert "404" in paths["/v1/items/{item}/similar"]["get"]["responses"]
    strict = client.get("/v1/recommendations", params={"user": "ghost", "strict": "true"})
    assert strict.status_code == 404 and "unknown user 'ghost'" in strict.json()["detail"]
