"""Hostile and clumsy input to the fraud service (issue #8): every refused request leaves the online state as it was.

The state is compared through what a user relies on: the features (and so the score) the next transaction of the
busiest card gets.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from apps.fraud.config import MAX_LABELS_PER_REQUEST
from apps.fraud.data import CUSTOMER, TERMINAL, TIMESTAMP
from apps.fraud.features import Transaction, compute_features
from apps.fraud.lifecycle import alert_precision_from_logs
from apps.fraud.service import build_app
from common.config import get_settings
from tests.fraud.conftest import tx_body


@pytest.fixture
def split(tiny_raw: pd.DataFrame):
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=56)
    return tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut]


def _busiest(history: pd.DataFrame) -> tuple[int, int]:
    """The card with the most transactions in the last 30 days, and its most used terminal."""
    recent = history[history[TIMESTAMP] > history[TIMESTAMP].max() - pd.Timedelta(days=30)]
    card = int(recent[CUSTOMER].value_counts().idxmax())
    terminal = int(recent.loc[recent[CUSTOMER] == card, TERMINAL].value_counts().idxmax())
    return card, terminal


def _probe(app, card: int, terminal: int) -> np.ndarray:
    """Features the card's next transaction (one second after the newest seen) would get; changes nothing."""
    store = app.state.scorer.store
    t = pd.Timestamp(store.last_t + 1, unit="s")
    return store.features(Transaction("probe", t, card, terminal, 25.0))


def test_out_of_window_timestamps_are_refused_and_change_nothing(split, tiny_model) -> None:
    """Issue #8 defect 1: a 2001-01-01 or 9999-12-31 transaction wiped the busiest card's 30-day history."""
    history, _ = split
    card, terminal = _busiest(history)
    app = build_app(history, model=tiny_model)
    names = tiny_model.features
    with TestClient(app) as client:
        before = _probe(app, card, terminal)
        n_before, last_before = len(app.state.scorer.store), app.state.scorer.store.last_t
        assert before[names.index("customer_nb_tx_30d")] > 20
        for i, when in enumerate(["2001-01-01T00:00:00", "9999-12-31T23:59:59", "2100-01-01T00:00:00Z"]):
            body = {
                "tx_id": f"bad-{i}",
                "timestamp": when,
                "customer_id": card,
                "terminal_id": terminal,
                "amount": 10.0,
            }
            r = client.post("/v1/transactions/score", json=body)
            assert r.status_code == 422, r.text
            assert r.json()["message"].startswith("body.timestamp:")
            assert ("future" in r.json()["message"]) == (i > 0)
        np.testing.assert_array_equal(_probe(app, card, terminal), before)
        assert len(app.state.scorer.store) == n_before and app.state.scorer.store.last_t == last_before


def test_late_transaction_inside_the_window_is_scored_on_its_own_past(split, tiny_model) -> None:
    """A transaction arriving 20 transactions late gets the score it would have had on time, the state is not
    rewound, and the transactions after it are scored as if the stream had been in order."""
    history, future = split
    stream = future.head(120)
    late = 40
    order = [*range(late), *range(late + 1, late + 21), late, *range(late + 21, len(stream))]
    want = tiny_model.predict_proba(compute_features(pd.concat([history, stream])).loc[stream.index])
    app = build_app(history, model=tiny_model)
    got = {}
    with TestClient(app) as client:
        for pos in order:
            r = client.post("/v1/transactions/score", json=tx_body(stream.iloc[pos]))
            assert r.status_code == 200, r.text
            got[pos] = r.json()["score"]
            if pos == late:
                assert app.state.scorer.store.last_t > int(stream.iloc[late].timestamp.timestamp())
    check = [late, *range(late + 21, len(stream)), *range(late)]
    np.testing.assert_allclose([got[p] for p in check], want[check], rtol=1e-5)


@pytest.mark.parametrize("amount", [1e39, 3.5e307, math.inf, -math.inf, math.nan, -1.0, False, True, "12.5", 1e9 + 1])
def test_bad_amounts_are_refused_before_any_state_change(split, tiny_model, amount) -> None:
    """Issue #8 defect 2: 1e39 answered 500 but was written into the card's state (then 30 days of alerts)."""
    history, future = split
    card, terminal = _busiest(history)
    app = build_app(history, model=tiny_model)
    with TestClient(app) as client:
        before = _probe(app, card, terminal)
        n_before = len(app.state.scorer.store)
        body = {**tx_body(future.iloc[0]), "customer_id": card, "terminal_id": terminal, "amount": amount}
        # json.dumps writes inf/nan as Infinity/NaN, which the server's JSON parser reads as floats
        r = client.post(
            "/v1/transactions/score", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert r.json()["message"].startswith("body.amount:")
        np.testing.assert_array_equal(_probe(app, card, terminal), before)
        assert len(app.state.scorer.store) == n_before
        # the same card's normal transaction is still scored normally afterwards
        ok = client.post("/v1/transactions/score", json={**body, "amount": 30.0})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"tx_id": True}, "tx_id"),
        ({"customer_id": False}, "customer_id"),
        ({"terminal_id": 1.5}, "terminal_id"),
        ({"customer_id": -3}, "customer_id"),
        ({"tx_id": 10**70}, "tx_id"),
        ({"customer_id": "C 171"}, "customer_id"),
        ({"customer_id": ""}, "customer_id"),
    ],
)
def test_ids_are_bounded_strings_without_boolean_coercion(split, tiny_model, patch, field) -> None:
    history, future = split
    with TestClient(build_app(history, model=tiny_model)) as client:
        r = client.post("/v1/transactions/score", json={**tx_body(future.iloc[0]), **patch})
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith(f"body.{field}:")


def test_string_and_huge_ids_round_trip_to_monitoring(split, tiny_model) -> None:
    """Issue #8 defect 3: a tx_id of 10**30 was logged and then crashed every ``monitor``. Ids are strings: an
    integer id is its decimal string, in responses, logs and the alert-precision join."""
    history, future = split
    rows = list(future.head(3).itertuples(index=False))
    huge = 10**30
    with TestClient(build_app(history, model=tiny_model)) as client:
        r1 = client.post("/v1/transactions/score", json={**tx_body(rows[0]), "tx_id": huge})
        r2 = client.post(
            "/v1/transactions/score",
            json={**tx_body(rows[1]), "tx_id": "TX-0001", "customer_id": "C171", "terminal_id": "T9"},
        )
        assert r1.status_code == 200 and r1.json()["tx_id"] == str(huge)
        assert r2.status_code == 200 and r2.json()["tx_id"] == "TX-0001"
        labels = [{"tx_id": huge, "label": 1}, {"tx_id": "TX-0001", "label": 0}]
        lab = client.post("/v1/labels", json={"labels": labels})
        assert lab.json() == {"received": 2, "applied": 2, "unknown": 0}
        for bad in (
            {"tx_id": "TX-0001", "label": True},
            {"tx_id": "TX-0001", "label": "1"},
            {"tx_id": True, "label": 1},
        ):
            r = client.post("/v1/labels", json={"labels": [bad]})
            assert r.status_code == 422 and "body.labels.0" in r.json()["message"]
    stats = alert_precision_from_logs()
    assert list(stats) == ["unregistered"] and stats["unregistered"]["labelled_predictions"] == 2


def test_same_tx_id_twice_is_scored_and_counted_once(split, tiny_model) -> None:
    """Issue #8 defect 9 (idempotency): the second call gets 409 and neither the state nor the log counts it."""
    history, future = split
    body = tx_body(future.iloc[0])
    app = build_app(history, model=tiny_model)
    with TestClient(app) as client:
        assert client.post("/v1/transactions/score", json=body).status_code == 200
        n, probe = len(app.state.scorer.store), _probe(app, body["customer_id"], body["terminal_id"])
        again = client.post("/v1/transactions/score", json={**body, "amount": 999.0})
        assert again.status_code == 409 and "already scored" in again.json()["detail"]
        as_str = client.post("/v1/transactions/score", json={**body, "tx_id": str(body["tx_id"])})
        assert as_str.status_code == 409  # 171 and "171" are one id
        in_history = client.post("/v1/transactions/score", json={**body, "tx_id": int(history.tx_id.iloc[-1])})
        assert in_history.status_code == 409
        assert len(app.state.scorer.store) == n
        np.testing.assert_array_equal(_probe(app, body["customer_id"], body["terminal_id"]), probe)
        text = client.get("/metrics").text
    log_path = get_settings().path("predictions", "fraud.jsonl")
    assert len(log_path.read_text().splitlines()) == 1
    assert 'route="/v1/transactions/score",status="409"} 3.0' in text


def test_too_many_labels_are_refused_without_applying_any(split, tiny_model) -> None:
    """Issue #8 defect 4: 100k labels in one call blocked the server; over the cap is one 422, nothing applied."""
    history, _ = split
    app = build_app(history, model=tiny_model)
    store = app.state.scorer.store
    known = list(history.tx_id.iloc[-(MAX_LABELS_PER_REQUEST + 1) :])
    with TestClient(app) as client:
        before = dict(store._labels)
        too_many = [{"tx_id": int(t), "label": 1} for t in known]
        r = client.post("/v1/labels", json={"labels": too_many})
        assert r.status_code == 422, r.text
        assert r.json()["message"].startswith("body.labels:") and str(MAX_LABELS_PER_REQUEST) in r.json()["message"]
        assert store._labels == before
        assert not get_settings().path("labels", "fraud.jsonl").exists()
        ok = client.post("/v1/labels", json={"labels": too_many[:500]})
        assert ok.status_code == 200 and ok.json()["applied"] == 500
    assert len(get_settings().path("labels", "fraud.jsonl").read_text().splitlines()) == 500


def test_openapi_documents_the_input_limits(split, tiny_model) -> None:
    history, _ = split
    with TestClient(build_app(history, model=tiny_model)) as client:
        spec = client.get("/openapi.json").json()
    score = spec["paths"]["/v1/transactions/score"]["post"]
    assert "409" in score["responses"]
    tx = spec["components"]["schemas"]["TransactionIn"]["properties"]
    assert tx["amount"]["maximum"] == 1e9 and tx["amount"]["type"] == "number"
    assert spec["components"]["schemas"]["LabelsIn"]["properties"]["labels"]["maxItems"] == MAX_LABELS_PER_REQUEST


def test_integer_ids_above_the_documented_maximum_are_refused() -> None:
    from apps.fraud.data import MAX_INT_ID, check_id

    assert check_id(MAX_INT_ID) == str(MAX_INT_ID)
    with pytest.raises(ValueError, match=r"integer ids must be in \[0, 10\*\*63\]"):
        check_id(MAX_INT_ID + 1)  # 64 digits would fit the string pattern, but the schema's maximum says no
