"""The online feature stores (apps/fraud/store.py): the in-process journaled store and Redis pass the same
behaviour tests - features equal to batch features (also from two workers on one Redis), duplicate tx_id 409,
label application, windows expiring, nothing lost on restart - against a real ``redis-server`` (no mock)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from apps.fraud.config import FeatureConfig
from apps.fraud.data import LABEL, TIMESTAMP
from apps.fraud.features import Transaction, compute_features, feature_names, to_seconds
from apps.fraud.service import FraudScorer, build_app
from apps.fraud.store import (
    DuplicateTransaction,
    FeatureStore,
    Journal,
    LocalFeatureStore,
    RedisFeatureStore,
    StoreUnavailable,
)
from common.data import SECONDS_PER_DAY
from tests.fraud.conftest import tx_body

STORES = ["local", "redis"]


def _tx(r) -> Transaction:
    return Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, r.amount)


def make_store(kind: str, request: pytest.FixtureRequest, history: pd.DataFrame | None = None) -> FeatureStore:
    """A started store of ``kind`` holding ``history``: ``local`` journaled in this test's home, ``redis`` on
    the session's redis-server (emptied for the test)."""
    if kind == "local":
        store = LocalFeatureStore.from_history(history) if history is not None else LocalFeatureStore()
        store.journal = Journal(Path(request.getfixturevalue("mlref_home")) / "state" / "journal.sqlite")
    else:
        store = RedisFeatureStore(request.getfixturevalue("redis_url"))
    store.start(history)
    request.addfinalizer(store.close)
    return store


def score_features(store: FeatureStore, tx: Transaction) -> np.ndarray:
    """The features ``tx`` is scored on, adding it to the state (the scorer's path without a model)."""
    return store.transact(tx, to_seconds(tx.timestamp), lambda view: view.features)


@pytest.fixture
def stream(tiny_raw: pd.DataFrame) -> pd.DataFrame:
    """The first 24 days: past the 7-day label delay, so known frauds feed the terminal features."""
    return tiny_raw[tiny_raw[TIMESTAMP] < tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=24)]


@pytest.mark.parametrize("kind", STORES)
def test_stream_equals_batch(kind: str, stream: pd.DataFrame, request) -> None:
    """Every transaction scored through the store, its label applied right after (the terminal features only
    read labels older than the 7-day delay, so that is equivalent): the batch features, exactly."""
    store = make_store(kind, request)
    batch = compute_features(stream).to_numpy()
    online = np.empty_like(batch)
    for i, r in enumerate(stream.itertuples(index=False)):
        online[i] = score_features(store, _tx(r))
        assert store.add_labels([(r.tx_id, r.label)]) == 1
    np.testing.assert_allclose(online, batch, rtol=1e-9, atol=1e-9)
    assert batch[:, feature_names().index("terminal_risk_30d")].max() > 0  # frauds were counted


@pytest.mark.parametrize("kind", STORES)
def test_warm_from_history_then_stream_equals_batch(kind: str, tiny_raw: pd.DataFrame, request) -> None:
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=45)
    history, future = tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut].head(1500)
    store = make_store(kind, request, history)
    assert len(store) == len(LocalFeatureStore.from_history(history)) < len(history)  # 37 days kept, both
    batch = compute_features(pd.concat([history, future])).loc[future.index].to_numpy()
    online = np.array([score_features(store, _tx(r)) for r in future.itertuples(index=False)])
    np.testing.assert_allclose(online, batch, rtol=1e-9, atol=1e-9)


def test_two_workers_on_one_redis_equal_batch(stream: pd.DataFrame, redis_url: str) -> None:
    """Two store instances (two workers) on one Redis, taking turns: each sees what the other committed."""
    a, b = RedisFeatureStore(redis_url), RedisFeatureStore(redis_url)
    a.start(None)
    b.start(None)  # already warmed by a: not again
    rows = stream.head(4000)
    batch = compute_features(rows).to_numpy()
    online = np.array([score_features(a if i % 2 else b, _tx(r)) for i, r in enumerate(rows.itertuples(index=False))])
    np.testing.assert_allclose(online, batch, rtol=1e-9, atol=1e-9)
    assert len(a) == len(b) == len(rows)


def test_two_workers_racing_on_one_card_lose_no_update(redis_url: str) -> None:
    """Two workers x 2 threads commit transactions of one card and one terminal at once: none is lost, and each
    saw every one committed before it (all in the same second, so their 30-day counts are distinct: 1..N)."""
    stores = [RedisFeatureStore(redis_url), RedisFeatureStore(redis_url)]
    stores[0].start(None)
    t0 = pd.Timestamp("2024-05-01 12:00:00")
    n_each, counts, lock = 40, [], threading.Lock()
    col = feature_names().index("customer_nb_tx_30d")

    def worker(k: int) -> None:
        store = stores[k % 2]
        for i in range(n_each):
            tx = Transaction(f"w{k}-{i}", t0, "card", "term", 10.0)
            x = score_features(store, tx)
            with lock:
                counts.append(int(x[col]))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(stores[0]) == 4 * n_each
    assert sorted(counts) == list(range(1, 4 * n_each + 1))
    late = Transaction("probe", t0 + pd.Timedelta(minutes=5), "card", "term", 10.0)
    assert stores[1].features(late)[col] == 4 * n_each + 1


@pytest.mark.parametrize("kind", STORES)
def test_duplicate_label_and_http_behaviour(kind: str, tiny_model, request) -> None:
    """Through the HTTP API on either store: 409 for a repeated tx_id (nothing counted twice), labels applied
    or unknown, a fraud label raising the terminal's risk once older than the 7-day delay."""
    store = make_store(kind, request)
    app = build_app(model=tiny_model, store=store, log_predictions=False)
    t0 = pd.Timestamp("2024-03-01 12:00:00")
    risk, count = tiny_model.features.index("terminal_risk_30d"), tiny_model.features.index("customer_nb_tx_1d")
    first = {"tx_id": "A1", "timestamp": t0.isoformat(), "customer_id": 1, "terminal_id": 42, "amount": 20.0}
    with TestClient(app) as client:
        assert client.post("/v1/transactions/score", json=first).status_code == 200
        again = client.post("/v1/transactions/score", json={**first, "amount": 99.0})
        assert again.status_code == 409 and "'A1' was already scored" in again.json()["detail"]
        assert len(store) == 1
        r = client.post("/v1/labels", json={"labels": [{"tx_id": "A1", "label": 1}, {"tx_id": "nope", "label": 0}]})
        assert r.status_code == 200 and r.json() == {"received": 2, "applied": 1, "unknown": 1}
        same_day = Transaction("B", t0 + pd.Timedelta(hours=1), 1, 42, 5.0)
        later = Transaction("C", t0 + pd.Timedelta(days=8), 2, 42, 5.0)
        assert store.features(same_day)[count] == 2 and store.features(same_day)[risk] == 0.0
        assert store.features(later)[risk] == 1.0
        client.post("/v1/labels", json={"labels": [{"tx_id": "A1", "label": 0}]})  # corrected: genuine
        assert store.features(later)[risk] == 0.0
        with pytest.raises(DuplicateTransaction):  # the store itself refuses it, whatever the caller checked
            score_features(store, Transaction("A1", t0 + pd.Timedelta(hours=2), 1, 42, 1.0))


@pytest.mark.parametrize("kind", STORES)
def test_windows_expire_the_same(kind: str, request) -> None:
    """A card's entries leave after 30 days, a terminal's (and its transactions' ids and labels) after
    7 + 30 days - in transaction time, the same in both stores."""
    store = make_store(kind, request)
    t0 = pd.Timestamp("2024-01-01")
    cfg = FeatureConfig()
    score_features(store, Transaction("old", t0, "c", "t", 100.0))
    store.add_labels([("old", 1)])
    score_features(store, Transaction("d29", t0 + pd.Timedelta(days=29), "c", "t", 1.0))
    assert store.seen("old") and len(store) == 2
    col = feature_names(cfg).index("customer_nb_tx_30d")
    probe = store.features(Transaction("p", t0 + pd.Timedelta(days=30, seconds=1), "c", "x", 1.0))
    assert probe[col] == 2  # "old" is outside (t - 30 d, t]: not counted, whatever the store holds
    score_features(store, Transaction("d37", t0 + pd.Timedelta(days=37), "other", "t", 1.0))
    assert not store.seen("old") and len(store) == 2  # 37 days after: forgotten with its label
    assert store.add_labels([("old", 1)]) == 0
    # it can be scored again (it is no longer recognised as a duplicate), like in the in-process store
    score_features(store, Transaction("old", t0 + pd.Timedelta(days=37, seconds=1), "z", "z", 1.0))
    if kind == "redis":  # keys expire after the windows too (wall-clock TTL), so idle entities leave Redis
        client, p = store.client, store.prefix
        assert 29 * SECONDS_PER_DAY < client.ttl(f"{p}c:c") <= 30 * SECONDS_PER_DAY
        assert 36 * SECONDS_PER_DAY < client.ttl(f"{p}t:t") <= 37 * SECONDS_PER_DAY
        assert 36 * SECONDS_PER_DAY < client.ttl(f"{p}x:d29") <= 37 * SECONDS_PER_DAY


@pytest.mark.parametrize("kind", STORES)
def test_restart_replays_the_state(kind: str, tiny_raw: pd.DataFrame, tiny_model, request) -> None:
    """A store reopened after its process stopped (here: abandoned without close) continues exactly where it
    was: the next scores equal those of a store that never stopped."""
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=45)
    history, future = tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut].head(900)
    first, rest = future.head(600), future.iloc[600:]
    never = FraudScorer(LocalFeatureStore.from_history(history))
    want = [never.score(_tx(r), tiny_model)[0] for r in first.itertuples(index=False)]
    store = make_store(kind, request, history)
    scorer = FraudScorer(store)
    got = [scorer.score(_tx(r), tiny_model)[0] for r in first.itertuples(index=False)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    store.add_labels([(r.tx_id, r.label) for r in first.head(50).itertuples(index=False)])
    never.add_labels([(r.tx_id, r.label) for r in first.head(50).itertuples(index=False)])
    if kind == "local":
        store.journal.close()  # what the OS does for a killed process (the journal file stays)
        again: FeatureStore = LocalFeatureStore.from_history(history)
        again.journal = Journal(store.journal.path)
    else:
        again = RedisFeatureStore(store.url)
    again.start(history)  # replays the journal / finds the state in Redis (does not warm again)
    request.addfinalizer(again.close)
    assert len(again) == len(never.store) and again.last_t == never.store.last_t
    after = FraudScorer(again)
    got += [after.score(_tx(r), tiny_model)[0] for r in rest.itertuples(index=False)]
    want = [never.score(_tx(r), tiny_model)[0] for r in rest.itertuples(index=False)]
    np.testing.assert_allclose(got[600:], want, rtol=1e-6, atol=1e-7)
    if kind == "local":
        assert got[600:] == want  # the same entries in the same order: bit-identical


def test_local_journal_is_one_process(mlref_home: Path) -> None:
    a, b = Journal(mlref_home / "j.sqlite"), Journal(mlref_home / "j.sqlite")
    a.open()
    from common.errors import UserError

    with pytest.raises(UserError, match="another fraud service is using"):
        b.open()
    a.close()
    b.open()  # released with the first one
    b.close()


def test_redis_unreachable_or_emptied_is_503_and_recovers(tiny_raw: pd.DataFrame, tiny_model, redis_factory) -> None:
    """Redis killed mid-load -> 503 naming the cause (never a score on an empty history); back with its data
    (append-only file) -> scoring resumes where it was. Restarted *without* its data -> 503 that says so."""
    server = redis_factory(persist=True)
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=45)
    history, future = tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut].head(40)
    store = RedisFeatureStore(server.url)
    app = build_app(history, model=tiny_model, store=store, log_predictions=False)
    rows = [tx_body(r) for r in future.itertuples(index=False)]
    with TestClient(app) as client:
        for body in rows[:20]:
            assert client.post("/v1/transactions/score", json=body).status_code == 200
        n = len(store)
        server.stop(kill=True)
        down = client.post("/v1/transactions/score", json=rows[20])
        assert down.status_code == 503, down.text
        assert "cannot reach Redis at redis://127.0.0.1:" in down.json()["detail"]
        assert client.post("/v1/labels", json={"labels": [{"tx_id": 1, "label": 1}]}).status_code == 503
        assert client.get("/healthz").status_code == 200
        server.start()  # same port, same append-only file
        for body in rows[20:30]:
            assert client.post("/v1/transactions/score", json=body).status_code == 200
        assert len(store) == n + 10
        server.persist = False  # restarted empty: the state is gone
        server.restart()
        empty = client.post("/v1/transactions/score", json=rows[30])
        assert empty.status_code == 503 and "holds no state" in empty.json()["detail"]


def test_redis_url_bad_or_unreachable_is_a_user_error(tiny_model, monkeypatch, free_port: int) -> None:
    from common.errors import UserError

    monkeypatch.setenv("MLREF_REDIS_URL", f"redis://127.0.0.1:{free_port}/0")
    with pytest.raises(UserError, match="cannot reach Redis"):
        build_app(refresh_interval_s=None)
    with pytest.raises(StoreUnavailable):
        RedisFeatureStore(f"redis://127.0.0.1:{free_port}/0").ping()
    monkeypatch.setenv("MLREF_REDIS_URL", "http://nope")
    with pytest.raises(UserError, match="MLREF_REDIS_URL"):
        build_app(refresh_interval_s=None)


def test_history_label_column_with_missing_labels_warms_redis(tiny_raw: pd.DataFrame, redis_url: str) -> None:
    """A user's file with unknown (empty) labels warms Redis like the in-process store."""
    hist = tiny_raw.head(3000).copy()
    hist[LABEL] = hist[LABEL].astype("Int64")
    hist.loc[hist.index[-500:], LABEL] = pd.NA
    store = RedisFeatureStore(redis_url)
    store.start(hist)
    local = LocalFeatureStore.from_history(hist)
    assert len(store) == len(local) and store.last_t == local.last_t
    probe = tiny_raw.iloc[3000]
    np.testing.assert_allclose(store.features(_tx(probe)), local.features(_tx(probe)), rtol=1e-12)
