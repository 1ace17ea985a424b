"""A user's own transactions file (issue #7): string ids, delayed (missing) labels, short files, the alert budget,
and the online history recorded with the model version."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from apps.fraud.config import MODEL_NAME, FraudConfig, ProtocolConfig
from apps.fraud.data import CUSTOMER, DAY, LABEL, SCENARIO, TERMINAL, TIMESTAMP, TX_ID, load
from apps.fraud.evaluate import prequential_folds, start_day_for_valid
from apps.fraud.features import compute_features, feature_names
from apps.fraud.lifecycle import alert_precision_from_logs, monitor, register_model, select_models
from apps.fraud.service import BatchScorer, build_app, history_for, load_model
from apps.fraud.train import HISTORY_FILE, prepare, recent_window, score_validation, train_model
from common import batch, registry
from common.data import DataError

COLUMNS = [TX_ID, TIMESTAMP, CUSTOMER, TERMINAL, "amount", LABEL]


def _cfg() -> FraudConfig:
    cfg = FraudConfig()
    return replace(cfg, xgb=replace(cfg.xgb, n_estimators=40))


@pytest.fixture
def own_csv(tiny_raw: pd.DataFrame, tmp_path: Path) -> Path:
    """The tiny world as a user's file: ids like C171/T9/X12, and no label yet on the last 7 days (delayed)."""
    df = tiny_raw.drop(columns=[SCENARIO]).copy()
    df[CUSTOMER] = "C" + df[CUSTOMER].astype(str)
    df[TERMINAL] = "T" + df[TERMINAL].astype(str)
    df[TX_ID] = "X" + df[TX_ID].astype(str)
    df[LABEL] = df[LABEL].astype(float)
    df.loc[df[TIMESTAMP] > df[TIMESTAMP].max() - pd.Timedelta(days=7), LABEL] = np.nan
    path = tmp_path / "my_transactions.csv"
    df[COLUMNS].to_csv(path, index=False)
    return path


def test_unlabelled_rows_feed_the_history_and_stay_out_of_training(own_csv: Path, tiny_raw: pd.DataFrame) -> None:
    raw = load(own_csv, require_label=True)  # missing labels are not an error
    unlabelled = raw[LABEL].isna()
    assert 1000 < unlabelled.sum() < len(raw) and raw[CUSTOMER].str.startswith("C").all()
    prepared = prepare(raw)
    # the unlabelled rows count in the customer features exactly as if labelled: same features as the simulator's
    full = compute_features(tiny_raw)
    cust_cols = [c for c in feature_names() if c.startswith("customer_")]
    np.testing.assert_allclose(prepared[cust_cols].to_numpy(), full[cust_cols].to_numpy())
    # ... and never in a fold's or the final model's rows
    cfg = _cfg()
    p = replace(cfg.protocol, n_folds=2, anchor_day=None)
    for fold in prequential_folds(prepared, start_day_for_valid(p, int(prepared[DAY].max()) + 1) + 7, p):
        assert prepared[LABEL].iloc[fold.train].notna().all() and prepared[LABEL].iloc[fold.test].notna().all()
        assert len(fold.test) > 0
    v = score_validation(prepared, "xgboost", cfg.xgb.params(), feature_names(), p)
    assert np.isfinite(v["average_precision"])
    model = train_model(prepared, cfg)
    assert model.info["train_rows"] == int(
        prepared.loc[prepared[DAY].between(*model.info["train_days"]), LABEL].notna().sum()
    )


def test_string_ids_end_to_end_with_the_recorded_history(own_csv: Path, tmp_path: Path) -> None:
    """load -> train -> register (history recorded) -> serve without a dataset -> batch -> monitor on C171-style
    ids; the served score is the one the user's own history gives."""
    cfg = _cfg()
    raw = load(own_csv)
    prepared = prepare(raw)
    model = train_model(prepared, cfg)
    mv = register_model(model, prepared, work_dir=tmp_path / "m", alias=registry.CHAMPION)
    history = history_for()
    assert (registry.fetch_model_dir(mv) / HISTORY_FILE).exists()
    assert history[CUSTOMER].str.startswith("C").all() and history[TIMESTAMP].max() == raw[TIMESTAMP].max()
    assert history[TIMESTAMP].min() > raw[TIMESTAMP].max() - pd.Timedelta(days=cfg.features.history_days)

    # serve from the registry with the recorded history: a new transaction of the busiest card
    last = raw[TIMESTAMP].max()
    card = raw.loc[raw[TIMESTAMP] > last - pd.Timedelta(days=30), CUSTOMER].value_counts().idxmax()
    terminal = raw.loc[raw[CUSTOMER] == card, TERMINAL].iloc[-1]
    new = {
        TX_ID: "NEW-1",
        TIMESTAMP: last + pd.Timedelta(minutes=5),
        CUSTOMER: card,
        TERMINAL: terminal,
        "amount": 180.0,
    }
    want = model.predict_proba(compute_features(pd.concat([raw, pd.DataFrame([new])], ignore_index=True)).iloc[[-1]])[0]
    with TestClient(build_app(history, refresh_interval_s=None)) as client:
        body = {**new, TIMESTAMP: new[TIMESTAMP].isoformat()}
        r = client.post("/v1/transactions/score", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == mv.version and r.json()["score"] == pytest.approx(want, rel=1e-5)
        assert client.post("/v1/labels", json={"labels": [{"tx_id": "NEW-1", "label": 1}]}).json()["applied"] == 1
    assert alert_precision_from_logs(version=mv.version)[mv.version]["labelled_predictions"] == 1
    assert alert_precision_from_logs(version="99") == {}

    # batch: a file of new transactions after the training data, preceded by the recorded history
    tail = raw[raw[TIMESTAMP] > last - pd.Timedelta(days=3)]
    shifted = tail.assign(**{TIMESTAMP: tail[TIMESTAMP] + pd.Timedelta(days=3), TX_ID: "N" + tail[TX_ID]})
    src = tmp_path / "new.csv"
    shifted.drop(columns=[LABEL]).to_csv(src, index=False)
    loaded, _ = registry.load(MODEL_NAME, registry.CHAMPION, load_model)
    res = batch.score_file(
        src,
        tmp_path / "scored.csv",
        BatchScorer(loaded, cfg.features, history, reasons=True, n_reasons=2),
        chunksize=700,
        progress=False,
    )
    scored = pd.read_csv(res.output)
    whole = compute_features(pd.concat([raw, shifted.drop(columns=[LABEL])], ignore_index=True))
    np.testing.assert_allclose(scored["score"], model.predict_proba(whole.iloc[len(raw) :]), rtol=1e-5)
    assert scored[TX_ID].str.startswith("N").all()
    reasons = scored.loc[scored["decision"] == "alert", "reasons"]
    assert len(reasons) and reasons.str.split(",").map(len).eq(2).all()  # n_reasons honoured

    # monitor on the user's data (unlabelled days included)
    verdict = monitor(
        model, registry.fetch_model_dir(mv), prepared[prepared[DAY] > prepared[DAY].max() - 7], tmp_path / "monitor"
    )
    assert not verdict.warnings or "history" not in " ".join(verdict.warnings)
    assert "amount" not in verdict.drifted_features


def test_a_version_without_recorded_history_is_refused_with_a_clear_message(
    tiny_prepared, tiny_model, tmp_path
) -> None:
    from apps.fraud.train import save_with_reference

    model_dir = save_with_reference(tiny_model, tmp_path / "old", tiny_prepared.head(2000))  # no history
    mv = registry.register(MODEL_NAME, model_dir, alias=registry.CHAMPION)
    with pytest.raises(DataError, match=rf"version {mv.version} has no recorded transaction history.*--dataset"):
        history_for()


def test_too_few_days_is_one_clear_line_suggesting_n_folds(tiny_raw: pd.DataFrame, tmp_path: Path) -> None:
    short = tiny_raw[tiny_raw[TIMESTAMP] < tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=20)]
    prepared = prepare(short)
    p = FraudConfig().protocol.fitted(20)
    with pytest.raises(DataError, match=r"^the data spans 20 days, too few .*\(1 fold needs 35\).*--n-folds 1") as err:
        score_validation(prepared, "xgboost", {}, feature_names(), p)
    assert "\n" not in str(err.value)
    assert ProtocolConfig(n_folds=1).days_needed() == 35


def test_header_only_and_all_unlabelled_files_are_data_errors(tmp_path: Path, tiny_raw: pd.DataFrame) -> None:
    header = tmp_path / "header.csv"
    header.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(DataError, match="no transactions"):
        load(header)
    blank = tmp_path / "blank.csv"
    tiny_raw.head(50)[COLUMNS].assign(label=np.nan).to_csv(blank, index=False)
    with pytest.raises(DataError, match="'label' is empty in every row"):
        load(blank, require_label=True)
    assert len(load(blank, require_label=False)) == 50


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        (CUSTOMER, True, "true/false"),
        (TERMINAL, "T 9", "not an id"),
        (TX_ID, "X" * 65, "longer than 64"),
        ("amount", 1e39, "maximum"),
        (LABEL, "true", "valid int"),
    ],
)
def test_bad_ids_amounts_and_labels_in_a_file_are_named(tmp_path, tiny_raw, column, value, why) -> None:
    df = tiny_raw.head(30)[COLUMNS].copy()
    if isinstance(value, bool):
        df[column] = value
    else:
        df[column] = df[column].astype(object)
        df.loc[5, column] = value
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"'{column}'.*{why}|{column}.*{why}"):
        load(path)


def test_an_absurd_alert_budget_is_a_logged_warning(tiny_prepared, caplog) -> None:
    cfg = _cfg()
    many = replace(cfg, serving=replace(cfg.serving, alerts_per_day=5_000))
    with caplog.at_level(logging.WARNING, logger="apps.fraud.train"):
        model = train_model(tiny_prepared, many)
    assert "alert budget 5000/day exceeds the median" in caplog.text
    scores = model.predict_proba(recent_window(tiny_prepared, 7, 7)[model.features])
    assert model.threshold <= np.quantile(scores, 0.01)  # (nearly) every transaction is an alert
    assert model.info["warnings"] and "every transaction" in model.info["warnings"][0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="apps.fraud.train"):
        sane = train_model(tiny_prepared, cfg)
    assert "alert budget" not in caplog.text and "warnings" not in sane.info


def test_card_precision_at_any_k(tiny_prepared) -> None:
    """top_k other than 100 used to raise KeyError (the metric name was hard-coded)."""
    cfg = _cfg()
    cfg = replace(cfg, protocol=replace(cfg.protocol, n_folds=1, anchor_day=None, top_k=20))
    res = select_models(tiny_prepared, cfg, kinds=("logreg",), grids={"logreg": {"C": [1.0]}})
    assert 0.0 <= res["logreg"].test["card_precision@20"] <= 1.0
    assert "card_precision@100" not in res["logreg"].test


def test_monitor_warns_instead_of_drift_when_the_history_is_short(
    tiny_raw, tiny_model, tiny_prepared, tmp_path
) -> None:
    """A 12-day file truncates the 30-day and terminal windows: those features (and the score) are left out of
    the drift check with a warning, instead of being reported as drift."""
    mv = register_model(tiny_model, tiny_prepared, work_dir=tmp_path / "m", alias=registry.CHAMPION)
    short = prepare(tiny_raw[tiny_raw[TIMESTAMP] < tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=12)])
    recent = short[short[DAY] > short[DAY].max() - 7]
    verdict = monitor(tiny_model, registry.fetch_model_dir(mv), recent, tmp_path / "short")
    assert not verdict.drift, verdict.drifted_features
    assert any("day(s) of history" in w and "customer_nb_tx_30d" in w for w in verdict.warnings)
    checked = set(verdict.report.features["feature"])
    assert "amount" in checked and "customer_nb_tx_30d" not in checked and "prediction" not in checked
    assert "customer_nb_tx_1d" in checked  # a 1-day window is complete after 5 days
