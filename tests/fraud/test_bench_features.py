"""The feature groups the benchmark measures (beyond the handbook's 15): one definition online and in batch,
their meaning on hand-made data, batch scoring's history-only rows, and models trained before the groups existed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from apps.fraud.config import FeatureConfig
from apps.fraud.data import LABEL, TIMESTAMP, TX_ID
from apps.fraud.features import (
    FEATURE_GROUPS,
    NO_FRAUD,
    OnlineFeatureStore,
    Transaction,
    compute_features,
    feature_names,
    history_needed,
)
from apps.fraud.model import FraudModel
from apps.fraud.train import feature_config_of

ALL = FeatureConfig(groups=FEATURE_GROUPS)


def _tx(r) -> Transaction:
    return Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, r.amount)


def test_every_group_online_equals_batch(tiny_raw: pd.DataFrame) -> None:
    df = tiny_raw[tiny_raw[TIMESTAMP] < tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=50)]
    batch = compute_features(df, ALL)
    store = OnlineFeatureStore(ALL)
    online = np.empty(batch.shape)
    for i, r in enumerate(df.itertuples(index=False)):
        online[i] = store.score_and_update(_tx(r))
        store.add_label(r.tx_id, r.label)
    np.testing.assert_allclose(online, batch.to_numpy(), rtol=1e-9, atol=1e-9)
    age = batch["terminal_days_since_first_fraud"]
    assert (age == NO_FRAUD).any() and (age > 7).any()  # both cases occur in the stream


def test_group_features_on_hand_made_transactions() -> None:
    """Card 5 pays 10 then 30 in the same second; a fraud at terminal 9 is known 7 days later."""
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
    f = compute_features(df, ALL)
    assert f["amount_to_past_avg_30d"].tolist() == [1.0, 3.0, 1.0, 1.0]  # 30 / the earlier 10; 1 without history
    assert f["customer_avg_1d_to_30d"].tolist() == [1.0, 1.0, 1.0, 1.0]
    # the fraud (tx 1) is unknown to tx 3 (6d23h later), known to tx 4: 7 days and 1 second
    assert f["terminal_days_since_first_fraud"].tolist()[:3] == [NO_FRAUD] * 3
    assert f["terminal_days_since_first_fraud"].iloc[3] == pytest.approx(7 + 1 / 86400)
    assert f["terminal_days_since_last_fraud"].iloc[3] == pytest.approx(7 + 1 / 86400)
    assert history_needed(ALL)["terminal_days_since_first_fraud"] == 37
    assert history_needed(ALL)["amount_to_past_avg_30d"] == 30


def test_history_rows_are_searched_not_featurised(tiny_raw: pd.DataFrame) -> None:
    """compute_features(df, start=k) == compute_features(df)[k:] (batch scoring's carried-over tail)."""
    whole = compute_features(tiny_raw, ALL)
    part = compute_features(tiny_raw, ALL, start=20_000)
    assert part.index.equals(whole.index[20_000:])
    np.testing.assert_array_equal(part.to_numpy(), whole.iloc[20_000:].to_numpy())
    assert len(compute_features(tiny_raw, ALL, start=len(tiny_raw))) == 0
    with pytest.raises(ValueError, match="start"):
        compute_features(tiny_raw, ALL, start=len(tiny_raw) + 1)


def test_ids_mixing_integers_and_strings_are_one_card(tiny_raw: pd.DataFrame) -> None:
    """A tail of integer ids concatenated with string ids (batch scoring) keeps one history per card."""
    df = tiny_raw.head(5000).copy()
    mixed = df.copy()
    mixed["customer_id"] = mixed["customer_id"].astype(object)
    mixed.loc[mixed.index[::2], "customer_id"] = mixed["customer_id"].iloc[::2].map(str)
    np.testing.assert_array_equal(compute_features(mixed, ALL).to_numpy(), compute_features(df, ALL).to_numpy())


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature group 'bogus'"):
        feature_names(FeatureConfig(groups=("bogus",)))


def test_models_recorded_before_groups_keep_their_features() -> None:
    """A model whose meta.json recorded a feature config without ``groups`` (extended = the two amount ratios)
    is served with exactly its 17 features, whatever the groups default becomes."""
    recorded = {
        "customer_windows": [1, 7, 30],
        "terminal_windows": [1, 7, 30],
        "delay_days": 7,
        "night_end_hour": 6,
        "extended": True,
    }
    old = FraudModel(
        kind="xgboost",
        features=feature_names(replace(FeatureConfig(), groups=("amount_ratio",))),
        estimator=None,
        info={"feature_config": recorded},
    )
    assert feature_names(feature_config_of(old)) == old.features and len(old.features) == 17
