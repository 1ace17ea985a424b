"""One feature definition: the online path equals the batch path on the same history (no training/serving skew)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from apps.fraud.config import FeatureConfig
from apps.fraud.data import LABEL, TIMESTAMP, TX_ID
from apps.fraud.features import OnlineFeatureStore, Transaction, compute_features, feature_names
from apps.fraud.service import BatchScorer


def _tx(r) -> Transaction:
    return Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, r.amount)


def test_online_equals_batch_over_a_stream(tiny_raw: pd.DataFrame) -> None:
    """Stream every transaction through the online store (labels arriving right after scoring: the terminal
    features only read labels older than the 7-day delay, so that is equivalent), compare with batch."""
    df = tiny_raw[tiny_raw[TIMESTAMP] < tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=50)]
    batch = compute_features(df).to_numpy()
    store = OnlineFeatureStore()
    online = np.empty_like(batch)
    for i, r in enumerate(df.itertuples(index=False)):
        online[i] = store.score_and_update(_tx(r))
        store.add_label(r.tx_id, r.label)
    np.testing.assert_allclose(online, batch, rtol=1e-9, atol=1e-9)
    assert np.abs(batch).sum() > 0 and batch[:, feature_names().index("terminal_risk_30d")].max() > 0


def test_online_from_history_then_stream_equals_batch(tiny_raw: pd.DataFrame) -> None:
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=45)
    history, future = tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut].head(3000)
    both = pd.concat([history, future])
    batch = compute_features(both).loc[future.index].to_numpy()
    store = OnlineFeatureStore.from_history(history)
    assert len(store) < len(history)  # only the last 37 days are kept
    online = np.array([store.score_and_update(_tx(r)) for r in future.itertuples(index=False)])
    # future labels are unknown online and not needed: they are younger than the 7-day delay
    np.testing.assert_allclose(online, batch, rtol=1e-9, atol=1e-9)


def test_same_second_ties_and_label_delay() -> None:
    """Hand-made: two transactions of one card in the same second; a fraud at a terminal counts 7 days later."""
    t0 = pd.Timestamp("2024-01-01 10:00:00")
    df = pd.DataFrame(
        {
            TX_ID: [1, 2, 3, 4],
            TIMESTAMP: [t0, t0, t0 + pd.Timedelta(days=6, hours=23), t0 + pd.Timedelta(days=7, seconds=1)],
            "customer_id": [5, 5, 6, 7],
            "terminal_id": [9, 8, 9, 9],
            "amount": [10.0, 30.0, 1.0, 1.0],
            LABEL: [1, 0, 0, 0],
        }
    )
    f = compute_features(df, FeatureConfig())
    assert f["customer_nb_tx_1d"].tolist() == [1, 2, 1, 1]
    assert f["customer_avg_amount_1d"].tolist() == [10.0, 20.0, 1.0, 1.0]
    assert f["amount_to_customer_avg_7d"].iloc[1] == 1.5
    # tx 3 is 6d23h after the fraud: not yet known; tx 4 is 7 days + 1 s after: known (1 fraud of 1)
    assert f["terminal_nb_tx_7d"].tolist() == [0, 0, 0, 1]
    assert f["terminal_risk_7d"].tolist() == [0, 0, 0, 1.0]
    store = OnlineFeatureStore()
    rows = []
    for r in df.itertuples(index=False):
        rows.append(store.score_and_update(_tx(r)))
        store.add_label(r.tx_id, r.label)
    np.testing.assert_allclose(np.array(rows), f.to_numpy())
    assert df["timestamp"].dt.weekday.iloc[0] == 0 and f["is_weekend"].iloc[0] == 0 and f["is_night"].iloc[0] == 0


def test_batch_scorer_chunks_equal_whole_file(tiny_raw: pd.DataFrame, tiny_model) -> None:
    """The streaming batch scorer (history carried across chunks) = features over the whole file at once."""
    df = tiny_raw.head(8000)
    scorer = BatchScorer(tiny_model)
    chunks = [scorer(df.iloc[i : i + 1500].drop(columns=["scenario"])) for i in range(0, len(df), 1500)]
    got = pd.concat(chunks)["score"].to_numpy()
    want = tiny_model.predict_proba(compute_features(df))
    np.testing.assert_allclose(got, want, rtol=1e-6)
