"""The handbook protocol: split days, removal of known compromised cards, fold placement; model save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.fraud.config import ProtocolConfig
from apps.fraud.evaluate import (
    alert_threshold,
    prequential_folds,
    start_day_for_test,
    start_day_for_valid,
    train_test_split,
)
from apps.fraud.model import FraudModel


def test_split_days_and_known_compromised_cards() -> None:
    # card 1: fraud in training -> never in test; card 2: fraud on day 8 (delay period) -> removed from test day
    # 16 on (the handbook adds the frauds of day "start+7+j-1" before test day "start+14+j");
    # card 3: fraud only in test -> stays.
    rows = []
    for day in range(21):
        for card in (1, 2, 3):
            rows.append(
                {
                    "day": day,
                    "customer_id": card,
                    "label": int((card == 1 and day == 3) or (card == 2 and day == 8) or (card == 3 and day == 16)),
                }
            )
    df = pd.DataFrame(rows)
    fold = train_test_split(df, 0, ProtocolConfig())
    train, test = df.iloc[fold.train], df.iloc[fold.test]
    assert sorted(train["day"].unique()) == list(range(7))
    assert sorted(test["day"].unique()) == list(range(14, 21))
    assert 1 not in set(test["customer_id"])
    assert set(test.loc[test["day"] == 15, "customer_id"]) == {2, 3}  # day 8 not yet known on day 15
    assert set(test.loc[test["day"] == 16, "customer_id"]) == {3}  # known from day 16 on
    assert 16 in set(test.loc[test["customer_id"] == 3, "day"])


def test_fold_placement_matches_handbook() -> None:
    p = ProtocolConfig()
    # reference data: 183 days from 2018-04-01; anchor 2018-07-25 = day 115
    assert p.resolve_anchor(183) == 115
    assert start_day_for_valid(p, 183) == 101  # 2018-07-11
    assert start_day_for_test(p, 183) == 136  # 2018-08-15
    df = pd.DataFrame({"day": np.arange(183).repeat(2), "customer_id": 0, "label": 0})
    folds = prequential_folds(df, 136, p)
    assert [f.start_day for f in folds] == [136, 129, 122, 115]
    with pytest.raises(ValueError, match="too few"):
        p.resolve_anchor(40)
    assert ProtocolConfig(n_folds=2, anchor_day=None).resolve_anchor(70) == 42


def test_alert_threshold_meets_budget() -> None:
    rng = np.random.default_rng(0)
    day = np.repeat(np.arange(5), 1000)
    s = rng.random(5000)
    thr = alert_threshold(day, s, 50)
    per_day = [(s[day == d] >= thr).sum() for d in range(5)]
    assert 40 <= np.median(per_day) <= 60


@pytest.mark.parametrize("kind", ["xgboost", "logreg", "decision_tree"])
def test_model_save_load_roundtrip(tmp_path, tiny_prepared, kind: str) -> None:
    from apps.fraud.features import feature_names

    feats = feature_names()
    rows = tiny_prepared.iloc[:5000]
    params = {"n_estimators": 20} if kind == "xgboost" else {}
    m = FraudModel.fit(kind, rows[feats], rows["label"].to_numpy(), params)
    m.threshold = 0.3
    m.save(tmp_path / "m")
    back = FraudModel.load(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(rows[feats]), m.predict_proba(rows[feats]), rtol=1e-6)
    assert back.threshold == 0.3 and back.features == feats
    method = back.explain(rows[feats].to_numpy()[0]).method
    assert method == {"xgboost": "treeshap", "logreg": "linear"}.get(kind, "none")
    if kind == "xgboost":  # TreeSHAP contributions + bias sum to the margin
        import xgboost as xgb

        contrib = back.estimator.predict(
            xgb.DMatrix(rows[feats].to_numpy()[:3], feature_names=feats), pred_contribs=True
        )
        margin = back.estimator.predict(
            xgb.DMatrix(rows[feats].to_numpy()[:3], feature_names=feats), output_margin=True
        )
        np.testing.assert_allclose(contrib.sum(axis=1), margin, rtol=1e-4, atol=1e-4)
