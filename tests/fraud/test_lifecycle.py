"""Registry round trip and the retraining decision (champion kept vs challenger promoted)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from apps.fraud.config import MODEL_NAME, FraudConfig
from apps.fraud.data import AMOUNT, DAY, LABEL, TIMESTAMP
from apps.fraud.lifecycle import register_model, retrain, training_rows
from apps.fraud.service import load_model
from apps.fraud.train import train_model
from common import monitoring, registry, retraining, tracking
from common.data import DataError


def _cfg() -> FraudConfig:
    cfg = FraudConfig()
    return replace(cfg, xgb=replace(cfg.xgb, n_estimators=60))


def test_register_and_load_champion(tmp_path, tiny_prepared, tiny_model) -> None:
    mv = register_model(tiny_model, tiny_prepared, work_dir=tmp_path / "m", alias=registry.CHAMPION)
    model, got = registry.load(MODEL_NAME, registry.CHAMPION, load_model)
    assert got.version == mv.version and (registry.fetch_model_dir(got) / "reference.json").exists()
    x = tiny_prepared[tiny_model.features].iloc[:100]
    np.testing.assert_allclose(model.predict_proba(x), tiny_model.predict_proba(x), rtol=1e-6)


def test_retrain_promotes_only_a_winning_challenger(tmp_path, tiny_prepared) -> None:
    cfg = _cfg()
    last_labelled = int(tiny_prepared[DAY].max()) - cfg.features.delay_days
    before_eval = last_labelled - cfg.retrain.eval_days  # the day before the evaluation week

    # a useless champion (trained on shuffled labels, before the evaluation week) -> the challenger is promoted
    noise = tiny_prepared.copy()
    noise[LABEL] = np.random.default_rng(0).permutation(noise[LABEL].to_numpy())
    weak = train_model(noise, cfg, params={**cfg.xgb.params(), "n_estimators": 5}, end_day=before_eval - 7)
    register_model(weak, noise, work_dir=tmp_path / "weak", alias=registry.CHAMPION)
    won = retrain(tiny_prepared, cfg, work_dir=tmp_path / "c1", params=cfg.xgb.params())
    assert won.promoted and won.challenger_score > won.champion_score
    assert registry.get(MODEL_NAME, registry.CHAMPION).version == won.challenger_version

    # the same comparison with a margin no challenger can clear -> champion kept, loser tagged "challenger"
    strict = replace(cfg, retrain=replace(cfg.retrain, margin=1.0))
    kept = retrain(tiny_prepared, strict, work_dir=tmp_path / "c2", params=cfg.xgb.params())
    assert not kept.promoted and "margin" in kept.reason
    assert registry.get(MODEL_NAME, registry.CHAMPION).version == won.challenger_version
    assert registry.get(MODEL_NAME, registry.CHALLENGER).version == kept.challenger_version
    assert [d.promoted for d in retraining.history(MODEL_NAME)] == [True, False]


def test_retrain_refuses_when_the_champion_saw_the_evaluation_week(tmp_path, tiny_prepared) -> None:
    cfg = _cfg()
    fresh = train_model(tiny_prepared, cfg, params=cfg.xgb.params())  # trained on the latest labelled week
    mv = register_model(fresh, tiny_prepared, work_dir=tmp_path / "m", alias=registry.CHAMPION)
    d = retrain(tiny_prepared, cfg, params=cfg.xgb.params())
    assert not d.promoted and d.reason.startswith(f"no fair comparison: champion v{mv.version} saw data up to")
    assert registry.get(MODEL_NAME, registry.CHAMPION).version == mv.version
    assert len(registry.list_versions(MODEL_NAME)) == 1


def test_monitor_flags_amount_drift(tmp_path, tiny_prepared, tiny_raw, tiny_model) -> None:
    from apps.fraud.lifecycle import monitor
    from apps.fraud.train import prepare

    mv = register_model(tiny_model, tiny_prepared, work_dir=tmp_path / "m", alias=registry.CHAMPION)
    mdir = registry.fetch_model_dir(mv)
    same = tiny_prepared[tiny_prepared[DAY] > tiny_prepared[DAY].max() - 7]
    report = monitor(tiny_model, mdir, same, tmp_path / "same")
    assert AMOUNT not in report.drifted_features and len(report.performance) == 7
    # labels are in: the metric-over-time chart is drawn and linked from the markdown
    assert (tmp_path / "same" / "performance.png").read_bytes()[:4] == b"\x89PNG"
    assert "![Performance over time](performance.png)" in (tmp_path / "same" / "drift.md").read_text()
    shifted = tiny_raw.assign(**{AMOUNT: tiny_raw[AMOUNT] * 2})
    drifted = prepare(shifted)
    recent = drifted[drifted[DAY] > drifted[DAY].max() - 7]
    report2 = monitor(tiny_model, mdir, recent, tmp_path / "drift")
    assert report2.drift and AMOUNT in report2.drifted_features and report2.exit_code == 1
    md = (tmp_path / "drift" / "drift.md").read_text()
    assert all(f"- {a}" in md for a in report2.alerts) and AMOUNT in report2.alerts[0]
    assert json.loads((tmp_path / "drift" / "monitor.json").read_text())["alerts"] == report2.alerts

    # the shared sequence gives the verdict the app computed by hand before (profile -> detect_drift)
    cur = recent[tiny_model.features].assign(prediction=tiny_model.predict_proba(recent[tiny_model.features]))
    by_hand = monitoring.detect_drift(monitoring.ReferenceProfile.load(mdir / "reference.json"), cur)
    assert by_hand.drift == report2.drift and by_hand.drifted_features == report2.drifted_features
    assert by_hand.exit_code == report2.exit_code


def test_evaluation_report_is_a_model_card_with_pr_and_calibration_curves(tiny_prepared, mlref_home) -> None:
    from apps.fraud.lifecycle import report_selection, select_models
    from common.reports import new_report_dir

    cfg = _cfg()
    cfg = replace(cfg, protocol=replace(cfg.protocol, n_folds=2, anchor_day=None))
    cands = select_models(tiny_prepared, cfg, kinds=("xgboost", "logreg"), grids={"logreg": {"C": [1.0]}})
    out = new_report_dir("fraud", "tiny", "evaluation")
    md = report_selection(cands, cfg, out, dataset="tiny simulation", data=tiny_prepared).read_text()
    for section in (
        "## Intended use",
        "## Data",
        "## Metrics",
        "## Limitations",
        "### precision_recall",
        "### calibration",
    ):
        assert section in md
    assert f"| transactions | {len(tiny_prepared)} |" in md and "| amount | float64 |" in md
    assert "| logreg | baseline |" in md and "± = standard deviation over 2 prequential test folds" in md
    for name in ("precision_recall.png", "calibration.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in md
    # the curves are drawn from the pooled test-fold scores the table's metrics come from
    folds = cands["xgboost"].test_folds
    assert sum(len(y) for y in folds["y_true"]) == folds["n_test"].sum()
    index = (mlref_home / "reports" / "index.md").read_text()
    assert f"[Fraud detection: prequential evaluation]({out.relative_to(mlref_home / 'reports').as_posix()}" in index


def _before_eval_week(prepared, cfg) -> int:
    return int(prepared[DAY].max()) - cfg.features.delay_days - cfg.retrain.eval_days


def test_retrain_challenger_takes_the_champion_kind_and_params(tiny_prepared) -> None:
    cfg = _cfg()
    tuned = {**cfg.xgb.params(), "n_estimators": 7, "max_depth": 2}
    champion = train_model(tiny_prepared, cfg, params=tuned, end_day=_before_eval_week(tiny_prepared, cfg) - 7)
    mv1 = register_model(champion, tiny_prepared, alias=registry.CHAMPION)
    seen = training_rows(champion, tiny_prepared)[TIMESTAMP].max()
    assert mv1.last_training_timestamp == retraining.unix_seconds(seen)
    d = retrain(tiny_prepared, cfg)  # no params: the champion's, not the config's 60 trees
    challenger = registry.get(MODEL_NAME, d.challenger_version)
    assert (challenger.params["kind"], challenger.params["n_estimators"], challenger.params["max_depth"]) == (
        "xgboost",
        "7",
        "2",
    )
    assert d.window_start is not None and challenger.last_training_timestamp < d.window_start <= (
        retraining.unix_seconds(tiny_prepared[TIMESTAMP].max())
    )


def test_retrain_refuses_a_champion_it_cannot_prove_fair(tiny_prepared) -> None:
    # the old guard read meta.json and turned any KeyError/OSError into "no guard"; the tag is now required
    cfg = _cfg()
    fresh = train_model(tiny_prepared, cfg, params=cfg.xgb.params())  # trained on the evaluation week
    mv = register_model(fresh, tiny_prepared, alias=registry.CHAMPION)
    tracking.client().delete_model_version_tag(MODEL_NAME, mv.version, registry.LAST_TRAINING_TIMESTAMP_TAG)
    d = retrain(tiny_prepared, cfg, params=cfg.xgb.params())
    assert not d.promoted and d.reason.startswith(
        f"no fair comparison: champion v{mv.version} has no last_training_timestamp tag"
    )
    assert len(registry.list_versions(MODEL_NAME)) == 1


def test_retrain_without_labels_is_a_clear_data_error(tiny_prepared) -> None:
    cfg = _cfg()
    with pytest.raises(DataError, match="retrain needs labelled transactions"):
        retrain(tiny_prepared.drop(columns=LABEL), cfg)
    unlabelled_week = tiny_prepared.copy()
    week = unlabelled_week[DAY] > _before_eval_week(tiny_prepared, cfg)
    unlabelled_week[LABEL] = unlabelled_week[LABEL].where(~week)  # the evaluation week's labels are not in yet
    with pytest.raises(DataError, match="labelled frauds and genuine transactions in the evaluation week"):
        retrain(unlabelled_week, cfg)
    assert registry.list_versions(MODEL_NAME) == []
