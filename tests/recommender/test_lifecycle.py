"""Batch, monitoring and the retraining promotion decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.recommender.data import ITEM, TIMESTAMP, USER, synthetic_next_period
from apps.recommender.lifecycle import (
    batch_recommend,
    load_version,
    monitor,
    reference_profile,
    register_bundle,
    retrain,
)
from apps.recommender.train import fit_bundle
from common import registry
from tests.recommender.conftest import SMALL


def test_batch_writes_top_k_for_every_user(small, cfg, tmp_path):
    bundle = fit_bundle(small.interactions, "ease", cfg=cfg)
    users = tmp_path / "users.csv"
    pd.DataFrame({USER: list(bundle.users.ids[:5]) + ["stranger"]}).to_csv(users, index=False)
    res = batch_recommend(bundle, tmp_path / "recs.parquet", k=3, users_file=users, progress=False)
    out = pd.read_parquet(res.output)
    assert res.rows == 18 and list(out.columns) == [USER, "rank", ITEM, "score", "strategy"]
    assert out.loc[out[USER] == "stranger", "strategy"].eq("popular").all()
    full = batch_recommend(bundle, tmp_path / "all.parquet", k=2, progress=False)
    assert full.rows == 2 * len(bundle.users)


def test_monitor_flags_new_users_items_and_is_quiet_on_training_like_data(small, cfg):
    bundle = fit_bundle(small.interactions, "als", cfg=cfg)
    ref = reference_profile(bundle, small.interactions)
    same = monitor(bundle, ref, small.interactions.sample(3000, random_state=0))
    assert same.alerts == [], same.alerts
    new = synthetic_next_period(**SMALL, seed=7).interactions
    drifted = monitor(bundle, ref, new)
    assert drifted.exit_code == 1
    assert any("new-user rate" in a for a in drifted.alerts)
    assert any("new-item rate" in a for a in drifted.alerts)
    assert drifted.stats["new_item_rate"] > 0.05


def _as_champion(bundle, train):
    return register_bundle(bundle, train, alias=registry.CHAMPION)


def test_retrain_promotes_a_better_challenger(small, cfg):
    # a deliberately weak champion (most popular) -> the ALS challenger must win on the latest window
    new = synthetic_next_period(**SMALL, seed=7)
    mv1 = _as_champion(fit_bundle(small.interactions, "popular", cfg=cfg), small.interactions)
    combined = pd.concat([small.interactions, new.interactions], ignore_index=True)
    decision = retrain(combined, cfg, window_days=7)
    assert decision.champion_version == mv1.version and decision.promoted
    assert decision.challenger_score > decision.champion_score
    assert registry.get("recommender", registry.CHAMPION).version == decision.challenger_version


def test_retrain_keeps_champion_when_margin_not_met(small, cfg):
    _as_champion(fit_bundle(small.interactions, "als", cfg=cfg), small.interactions)
    decision = retrain(small.interactions, cfg, window_days=14, margin=1.0)  # impossible margin
    assert not decision.promoted
    assert registry.get("recommender", registry.CHALLENGER).version == decision.challenger_version
    bundle, mv = load_version(registry.CHAMPION)
    assert mv.version == decision.champion_version


def test_window_needs_earlier_history(small, cfg):
    late = small.interactions.assign(**{TIMESTAMP: np.int64(10**9)})
    with pytest.raises(ValueError, match="earlier history"):
        retrain(late, cfg, window_days=1)
