"""Behavioural tests of the trained model on the tiny world: invariances and directions a user relies on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.fraud.data import CUSTOMER, TERMINAL, TIMESTAMP, TX_ID
from apps.fraud.features import OnlineFeatureStore, Transaction, compute_features, to_seconds
from common.data import SECONDS_PER_DAY as DAY_S


@pytest.fixture
def split(tiny_raw: pd.DataFrame):
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=56)
    return tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut].head(400)


def test_renaming_ids_consistently_changes_no_score(split, tiny_model) -> None:
    """Ids are names, not numbers: C171/T9-style strings give the same features and scores as 171/9, in the batch
    path and in the online path."""
    history, future = split
    both = pd.concat([history, future])
    renamed = both.assign(
        **{
            CUSTOMER: "C" + both[CUSTOMER].astype(str),
            TERMINAL: "T" + both[TERMINAL].astype(str),
            TX_ID: "X" + both[TX_ID].astype(str),
        }
    )
    feats, feats_renamed = compute_features(both), compute_features(renamed)
    pd.testing.assert_frame_equal(feats, feats_renamed)
    want = tiny_model.predict_proba(feats.loc[future.index])
    store = OnlineFeatureStore.from_history(renamed.loc[history.index])
    online = [
        store.score_and_update(Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, r.amount))
        for r in renamed.loc[future.index].itertuples(index=False)
    ]
    np.testing.assert_allclose(tiny_model.predict_proba(np.array(online)), want, rtol=1e-6)


def test_an_unusually_large_amount_for_the_card_does_not_lower_the_score(split, tiny_model) -> None:
    """The same transaction with 10x the card's 30-day average amount scores at least as high, nearly always, and
    clearly higher on average (the compromised-card scenario multiplies amounts by 5)."""
    history, future = split
    store = OnlineFeatureStore.from_history(history)
    avg = tiny_model.features.index("customer_avg_amount_30d")
    base, big = [], []
    for r in future.head(200).itertuples(index=False):
        tx = Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, r.amount)
        x = store.features(tx)
        usual = max(x[avg], 1.0)
        big_tx = Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, 10 * usual)
        base.append(tiny_model.predict_proba(x)[0])
        big.append(tiny_model.predict_proba(store.features(big_tx))[0])
    base, big = np.array(base), np.array(big)
    assert (big >= base - 1e-6).mean() >= 0.95
    assert np.median(big - base) > 0.05


def test_a_terminal_with_recent_frauds_scores_higher(split, tiny_model) -> None:
    """The same transaction on a terminal whose transactions 8-30 days ago are now known frauds scores higher
    than on the same terminal with those labelled genuine (terminal risk is read after the 7-day delay)."""
    history, future = split
    genuine = history.assign(label=0)
    frauds_at = set(future[TERMINAL].head(100))
    t_end = to_seconds(future[TIMESTAMP].iloc[0])
    window = (to_seconds(history[TIMESTAMP]) > t_end - 30 * DAY_S) & (
        to_seconds(history[TIMESTAMP]) <= t_end - 8 * DAY_S
    )
    compromised = genuine.assign(label=(history[TERMINAL].isin(frauds_at) & window).astype(int))
    clean, risky = OnlineFeatureStore.from_history(genuine), OnlineFeatureStore.from_history(compromised)
    lower, higher = [], []
    for r in future.head(100).itertuples(index=False):
        tx = Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, r.amount)
        xc, xr = clean.features(tx), risky.features(tx)
        if xr[tiny_model.features.index("terminal_nb_tx_30d")] == 0:
            continue  # no transactions on this terminal in the window: nothing to label
        lower.append(tiny_model.predict_proba(xc)[0])
        higher.append(tiny_model.predict_proba(xr)[0])
    assert len(higher) >= 30
    lower, higher = np.array(lower), np.array(higher)
    assert (higher >= lower - 1e-6).all()
    assert np.median(higher - lower) > 0.05
