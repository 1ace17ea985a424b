"""One feature definition: the online path equals the batch path on the same history (no training/serving skew)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from apps.fraud.config import FeatureConfig
from apps.fraud.data import LABEL, TIMESTAMP, TX_ID
from apps.fraud.features import ChunkedFeatures, OnlineFeatureStore, Transaction, compute_features, feature_names
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


def test_chunked_features_equal_the_whole_file(tiny_raw: pd.DataFrame) -> None:
    """ChunkedFeatures (batch scoring's carried history) = compute_features on history + every chunk at once:
    integer ids in the history and the same ids as strings in the chunks, uneven chunks."""
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=40)
    history = tiny_raw[tiny_raw[TIMESTAMP] < cut].drop(columns=["scenario"])
    later = tiny_raw[tiny_raw[TIMESTAMP] >= cut].head(9000).drop(columns=["scenario"])
    later = later.assign(**{c: later[c].astype(str).astype(object) for c in ("tx_id", "customer_id", "terminal_id")})
    want = compute_features(pd.concat([history, later], ignore_index=True)).iloc[len(history) :]
    for size in (997, 4000):
        chunked = ChunkedFeatures(history=history)
        got = pd.concat([chunked(later.iloc[i : i + size]) for i in range(0, len(later), size)])
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-9)
        assert list(got.columns) == list(want.columns) and got.index.equals(later.index)


def test_chunked_features_a_chunk_overlapping_the_history(tiny_raw: pd.DataFrame) -> None:
    """A first chunk that starts before the history ends (sorted with it, not merged after it) sees the
    history's last ``history_days``, like every chunk."""
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=40)
    history = tiny_raw[tiny_raw[TIMESTAMP] < cut].drop(columns=["scenario"])
    later = tiny_raw[tiny_raw[TIMESTAMP] >= cut - pd.Timedelta(hours=6)].head(3000).drop(columns=["scenario"])
    kept = history[history[TIMESTAMP] > history[TIMESTAMP].max() - pd.Timedelta(days=FeatureConfig().history_days)]
    want = compute_features(pd.concat([kept, later], ignore_index=True)).iloc[len(kept) :]
    chunked = ChunkedFeatures(history=history)
    got = pd.concat([chunked(later.iloc[i : i + 1000]) for i in range(0, len(later), 1000)])
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-9)


def test_chunked_features_forget_ids_that_left_the_window() -> None:
    """Cards and terminals seen once, long ago, are dropped from the id codes (memory stays bounded), and the
    renumbering changes no feature."""
    rng = np.random.default_rng(0)
    days, per_day = 30, 400
    day = np.repeat(np.arange(days), per_day)
    df = pd.DataFrame(
        {
            TX_ID: np.arange(days * per_day),
            TIMESTAMP: pd.Timestamp("2024-01-01")
            + pd.to_timedelta(day * 86_400 + np.sort(rng.integers(0, 86_400, day.size)), unit="s"),
            "customer_id": [f"C{d}-{k}" for d, k in zip(day, rng.integers(0, 150, day.size), strict=True)],
            "terminal_id": [f"T{d}-{k}" for d, k in zip(day, rng.integers(0, 300, day.size), strict=True)],
            "amount": rng.uniform(1, 100, day.size).round(2),
            LABEL: (rng.random(day.size) < 0.05).astype(int),
        }
    )
    cfg = FeatureConfig(customer_windows=(1, 2), terminal_windows=(1,), delay_days=1)  # 2 days of history
    chunked = ChunkedFeatures(cfg)
    got = pd.concat([chunked(df[day == d]) for d in range(days)])
    np.testing.assert_allclose(got.to_numpy(), compute_features(df, cfg).to_numpy(), rtol=1e-9, atol=1e-9)
    assert len(chunked._ids[0].ids) < 2 * len(chunked.tail) + 1024 + per_day < days * 150
