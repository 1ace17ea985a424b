"""The HTTP API: scoring with reasons, 422 for bad transactions, label ingestion, metrics, hot-swap safety."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from apps.fraud.data import TIMESTAMP
from apps.fraud.service import build_app
from tests.fraud.conftest import tx_body


@pytest.fixture
def split(tiny_raw: pd.DataFrame):
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=56)
    return tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut]


def test_score_good_request(split, tiny_model) -> None:
    history, future = split
    app = build_app(history, model=tiny_model)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        rows = list(future.head(30).itertuples(index=False))
        responses = [client.post("/v1/transactions/score", json=tx_body(r)) for r in rows]
        assert all(r.status_code == 200 for r in responses)
        out = responses[0].json()
        assert set(out) >= {"tx_id", "score", "decision", "threshold", "reasons", "model_version"}
        assert 0.0 <= out["score"] <= 1.0 and out["decision"] in {"alert", "pass"}
        assert (out["decision"] == "alert") == (out["score"] >= out["threshold"])
        for r in responses:  # reasons (exact TreeSHAP) come with alerts by default
            assert len(r.json()["reasons"]) == (3 if r.json()["decision"] == "alert" else 0)
        assert any(r.json()["decision"] == "alert" for r in responses)
        nxt = tx_body(future.iloc[30])
        explained = client.post("/v1/transactions/score?explain=true", json=nxt).json()
        assert 1 <= len(explained["reasons"]) <= 3 and explained["reasons"][0]["feature"] in tiny_model.features
        contribs = [abs(x["contribution"]) for x in explained["reasons"]]  # the largest effects first
        assert contribs == sorted(contribs, reverse=True) and explained["summary"]
        # the API's score equals the batch model's score on batch features (same definition)
        from apps.fraud.features import compute_features

        feats = compute_features(pd.concat([history, future.head(30)])).loc[future.head(30).index]
        want = tiny_model.predict_proba(feats)
        got = [r.json()["score"] for r in responses]
        assert got == pytest.approx(list(want), rel=1e-5)
        # state was updated: the same card's count grows
        assert len(app.state.scorer.store) > 0
        text = client.get("/metrics").text
        assert (
            'mlref_requests_total{app="fraud",method="POST",route="/v1/transactions/score",status="200"} 31.0' in text
        )
        assert "mlref_prediction_count" in text


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"amount": -1.0}, "body.amount"),
        ({"timestamp": "31/02/2018 25:00"}, "body.timestamp"),
        ({"customer_id": True}, "body.customer_id"),
        ({"customer_id": "has space"}, "body.customer_id"),
        ({"terminal_id": "T" * 65}, "body.terminal_id"),
        ({"amount": False}, "body.amount"),
        ({"amount": "12.5"}, "body.amount"),
        ({"amount": 3.5e307}, "body.amount"),
        ({"amount": None}, "body.amount"),
    ],
)
def test_bad_transactions_get_422_naming_the_field(split, tiny_model, patch: dict, field: str) -> None:
    history, future = split
    body = {**tx_body(next(future.itertuples(index=False))), **patch}
    with TestClient(build_app(history, model=tiny_model)) as client:
        r = client.post("/v1/transactions/score", json=body)
    assert r.status_code == 422
    assert field in r.json()["message"]


def test_missing_field_gets_422(split, tiny_model) -> None:
    history, future = split
    body = tx_body(next(future.itertuples(index=False)))
    del body["terminal_id"]
    with TestClient(build_app(history, model=tiny_model)) as client:
        r = client.post("/v1/transactions/score", json=body)
    assert r.status_code == 422 and "body.terminal_id" in r.json()["message"]


def test_label_ingestion_feeds_terminal_risk(tiny_model) -> None:
    """A fraud label posted for a transaction raises its terminal's risk for transactions 7+ days later."""
    t0 = pd.Timestamp("2024-03-01 12:00:00")
    app = build_app(None, model=tiny_model)
    risk = tiny_model.features.index("terminal_risk_30d")
    with TestClient(app) as client:
        first = {"tx_id": 1, "timestamp": t0.isoformat(), "customer_id": 1, "terminal_id": 42, "amount": 20.0}
        assert client.post("/v1/transactions/score", json=first).status_code == 200
        r = client.post("/v1/labels", json={"labels": [{"tx_id": 1, "label": 1}, {"tx_id": 999, "label": 0}]})
        assert r.status_code == 200 and r.json() == {"received": 2, "applied": 1, "unknown": 1}
        from apps.fraud.features import Transaction

        later = Transaction(2, t0 + pd.Timedelta(days=8), 2, 42, 20.0)
        assert app.state.scorer.store.features(later)[risk] == 1.0
        bad = client.post("/v1/labels", json={"labels": [{"tx_id": 1, "label": 3}]})
        assert bad.status_code == 422 and "label" in bad.json()["message"]
        assert client.post("/v1/labels", json={"labels": []}).status_code == 422


def test_no_model_is_503(split) -> None:
    history, future = split
    app = build_app(history, refresh_interval_s=None)  # empty registry: nothing to load
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        assert (
            client.post("/v1/transactions/score", json=tx_body(next(future.itertuples(index=False)))).status_code == 503
        )
