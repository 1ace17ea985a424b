"""Explanations of the fraud score: signed per-prediction contributions, in words, agreeing with the decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from apps.fraud.config import FeatureConfig
from apps.fraud.data import TIMESTAMP
from apps.fraud.features import FEATURE_GROUPS, compute_features, feature_label, feature_names
from apps.fraud.model import FraudModel
from apps.fraud.service import build_app
from tests.fraud.conftest import tx_body


@pytest.fixture
def split(tiny_raw: pd.DataFrame):
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=56)
    return tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut]


CONFIGS = [
    FeatureConfig(),
    FeatureConfig(extended=False),
    FeatureConfig(customer_windows=(2, 14, 60), terminal_windows=(3, 10)),
    *[FeatureConfig(groups=(g,)) for g in FEATURE_GROUPS],
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_every_engineered_feature_has_words(cfg: FeatureConfig) -> None:
    names = feature_names(cfg)
    labels = [feature_label(n) for n in names]
    assert len(set(labels)) == len(labels)  # two features never read the same
    for name, label in zip(names, labels, strict=True):
        assert label != name and "_" not in label and "{" not in label, (name, label)
    assert feature_label("customer_nb_tx_1d") == "the number of transactions on this card in the last day"
    with pytest.raises(KeyError, match="FEATURE_LABELS"):
        feature_label("not_a_feature")


def _check_explained(out: dict, model: FraudModel, log_odds: float) -> None:
    """The response's reasons go the decision's way, largest first, in words, and add up to the log-odds."""
    reasons, exp = out["reasons"], out["explanation"]
    assert exp["method"] == "treeshap"
    contribs = [r["contribution"] for r in reasons]
    if out["decision"] == "alert":
        assert all(r["direction"] == "raises" for r in reasons) and all(c > 0 for c in contribs)
        assert contribs == sorted(contribs, reverse=True)
        assert out["summary"].startswith("Flagged")
    else:
        assert all(r["direction"] == "lowers" for r in reasons) and all(c < 0 for c in contribs)
        assert contribs == sorted(contribs)  # most negative (lowered the risk most) first
        assert out["summary"].startswith("Not flagged")
    for r in reasons:  # words, never a raw column name
        assert r["label"] == feature_label(r["feature"]) and r["label"] not in model.features and "_" not in r["label"]
        assert r["label"] in out["summary"]
    # base value + every contribution = the model's log-odds for this transaction
    assert exp["base_value"] + sum(contribs) + exp["others"] == pytest.approx(exp["log_odds"], abs=1e-6)
    assert exp["log_odds"] == pytest.approx(log_odds, abs=1e-4)


def test_api_explanations_agree_with_the_decision(split, tiny_model: FraudModel) -> None:
    history, future = split
    rows = future.head(40)
    feats = compute_features(pd.concat([history, rows])).loc[rows.index]
    want_log_odds = tiny_model.log_odds(feats)
    app = build_app(history, model=tiny_model)
    with TestClient(app) as client:
        outs = []
        for r in rows.itertuples(index=False):
            resp = client.post("/v1/transactions/score?explain=true", json=tx_body(r))
            assert resp.status_code == 200
            outs.append(resp.json())
    decisions = [o["decision"] for o in outs]
    assert "alert" in decisions and "pass" in decisions
    for out, lo in zip(outs, want_log_odds, strict=True):
        _check_explained(out, tiny_model, float(lo))
    # an alert lists what raised the risk; a transaction far below the threshold lists what lowered it
    top = max(outs, key=lambda o: o["score"])
    low = min(outs, key=lambda o: o["score"])
    assert top["decision"] == "alert" and len(top["reasons"]) == 3
    assert low["score"] < tiny_model.threshold / 2 and len(low["reasons"]) == 3


def test_model_attribution_reproduces_log_odds(tiny_prepared: pd.DataFrame, tiny_model: FraudModel) -> None:
    X = tiny_prepared[tiny_model.features].iloc[-500:]
    contrib, base = tiny_model.attribution(X)
    np.testing.assert_allclose(base + contrib.sum(axis=1), tiny_model.log_odds(X), atol=1e-4)
    p = tiny_model.predict_proba(X)
    np.testing.assert_allclose(1 / (1 + np.exp(-tiny_model.log_odds(X))), p, atol=1e-5)
    hi, lo = int(np.argmax(p)), int(np.argmin(p))
    assert p[hi] >= tiny_model.threshold > p[lo]
    alert, calm = tiny_model.explain(X.to_numpy()[hi]), tiny_model.explain(X.to_numpy()[lo])
    assert alert.alert and alert.reasons and all(r["contribution"] > 0 for r in alert.reasons)
    assert not calm.alert and calm.reasons and all(r["contribution"] < 0 for r in calm.reasons)
    assert alert.base_value + sum(r["contribution"] for r in alert.reasons) + alert.others == pytest.approx(
        float(tiny_model.log_odds(X.iloc[[hi]])[0]), abs=1e-4
    )


def test_baselines_explain_exactly_or_say_they_cannot(tiny_prepared: pd.DataFrame) -> None:
    feats = feature_names()
    rows = tiny_prepared.iloc[-6000:]
    X, y = rows[feats], rows["label"].to_numpy()
    lr = FraudModel.fit("logreg", X, y)
    contrib, base = lr.attribution(X)
    # coefficient x (value - training mean), in the model's units: adds up to the decision function
    np.testing.assert_allclose(base + contrib.sum(axis=1), lr.log_odds(X), atol=1e-4)
    lr.threshold = float(np.quantile(lr.predict_proba(X), 0.99))
    p = lr.predict_proba(X)
    hi, lo = int(np.argmax(p)), int(np.argmin(p))
    assert {r["direction"] for r in lr.explain(X.to_numpy()[hi]).reasons} == {"raises"}
    assert {r["direction"] for r in lr.explain(X.to_numpy()[lo]).reasons} == {"lowers"}
    tree = FraudModel.fit("decision_tree", X, y, {"max_depth": 3})
    e = tree.explain(X.to_numpy()[0])
    assert e.method == "none" and e.reasons == [] and "no per-transaction explanation" in e.summary


@pytest.mark.parametrize("bad", ["maybe", "2", "truee", ""])
def test_bad_explain_values_get_422(split, tiny_model: FraudModel, bad: str) -> None:
    history, future = split
    app = build_app(history, model=tiny_model)
    with TestClient(app) as client:
        n = len(app.state.scorer.store)
        resp = client.post(f"/v1/transactions/score?explain={bad}", json=tx_body(next(future.itertuples(index=False))))
        assert resp.status_code == 422, resp.text
        assert resp.json()["detail"][0]["loc"] == ["query", "explain"]
        assert len(app.state.scorer.store) == n  # refused: not scored, not added to the state
        explain_false = client.post(
            "/v1/transactions/score?explain=false", json=tx_body(next(future.itertuples(index=False)))
        ).json()
        assert explain_false["reasons"] == [] and explain_false["summary"] is None
        assert explain_false["explanation"] is None


def test_batch_reasons_are_what_raised_each_alert(split, tiny_model: FraudModel) -> None:
    from apps.fraud.service import BatchScorer

    history, future = split
    rows = future.head(3000)
    out = BatchScorer(tiny_model, history=history, reasons=True)(rows)
    alerts = out["decision"] == "alert"
    assert alerts.any() and (out.loc[~alerts, "reasons"] == "").all()
    X = compute_features(pd.concat([history, rows])).loc[rows.index][tiny_model.features]
    contrib = pd.DataFrame(tiny_model.contributions(X[alerts.to_numpy()]), columns=tiny_model.features)
    for listed, c in zip(out.loc[alerts, "reasons"], contrib.itertuples(index=False), strict=True):
        c = pd.Series(c, index=tiny_model.features)
        names = listed.split(",")
        assert names and (c[names] > 0).all() and list(c[names]) == sorted(c[names], reverse=True)
