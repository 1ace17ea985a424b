"""Registry round trip and the retraining decision (champion kept vs challenger promoted)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from apps.fraud.config import MODEL_NAME, FraudConfig
from apps.fraud.data import AMOUNT, DAY, LABEL
from apps.fraud.lifecycle import register_model, retrain
from apps.fraud.service import load_model
from apps.fraud.train import train_model
from common import registry, retraining


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
    d = retrain(tiny_prepared, cfg, work_dir=tmp_path / "c", params=cfg.xgb.params())
    assert not d.promoted and "no labelled week newer" in d.reason
    assert registry.get(MODEL_NAME, registry.CHAMPION).version == mv.version
    assert len(registry.list_versions(MODEL_NAME)) == 1


def test_monitor_flags_amount_drift(tmp_path, tiny_prepared, tiny_raw, tiny_model) -> None:
    from apps.fraud.lifecycle import monitor
    from apps.fraud.train import prepare

    mv = register_model(tiny_model, tiny_prepared, work_dir=tmp_path / "m", alias=registry.CHAMPION)
    mdir = registry.fetch_model_dir(mv)
    same = tiny_prepared[tiny_prepared[DAY] > tiny_prepared[DAY].max() - 7]
    report, perf = monitor(tiny_model, mdir, same, tmp_path / "same")
    assert AMOUNT not in report.drifted_features and len(perf) == 7
    shifted = tiny_raw.assign(**{AMOUNT: tiny_raw[AMOUNT] * 2})
    drifted = prepare(shifted)
    report2, _ = monitor(tiny_model, mdir, drifted[drifted[DAY] > drifted[DAY].max() - 7], tmp_path / "drift")
    assert report2.drift and AMOUNT in report2.drifted_features
    assert (tmp_path / "drift" / "drift.json").exists()
