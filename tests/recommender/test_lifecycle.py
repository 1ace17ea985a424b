"""Batch, monitoring and the retraining promotion decision."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from apps.recommender.config import RecommenderConfig
from apps.recommender.data import ITEM, TIMESTAMP, USER, synthetic_next_period
from apps.recommender.evaluate import time_window_split
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
    pd.DataFrame({USER: [*list(bundle.users.ids[:5]), "stranger"]}).to_csv(users, index=False)
    res = batch_recommend(bundle, tmp_path / "recs.parquet", k=3, users_file=users, progress=False)
    out = pd.read_parquet(res.output)
    assert res.rows == 18 and list(out.columns) == [USER, "rank", ITEM, "score", "strategy"]
    assert out.loc[out[USER] == "stranger", "strategy"].eq("popular").all()
    full = batch_recommend(bundle, tmp_path / "all.parquet", k=2, progress=False)
    assert full.rows == 2 * len(bundle.users)


def test_monitor_flags_new_users_items_and_is_quiet_on_training_like_data(small, cfg, tmp_path):
    bundle = fit_bundle(small.interactions, "als", cfg=cfg)
    ref = reference_profile(bundle, small.interactions)
    same = monitor(bundle, ref, small.interactions.sample(3000, random_state=0))
    assert same.alerts == [], same.alerts
    new = synthetic_next_period(**SMALL, seed=7).interactions
    drifted = monitor(bundle, ref, new, out_dir=tmp_path / "mon")
    assert drifted.exit_code == 1
    assert any("new-user rate" in a for a in drifted.alerts)
    assert any("new-item rate" in a for a in drifted.alerts)
    assert drifted.stats["new_item_rate"] > 0.05
    # every alert, the app's own included, is in the markdown and the JSON verdict (not only the JSON)
    md = (tmp_path / "mon" / "drift.md").read_text()
    assert f"## Alerts ({len(drifted.alerts)})" in md and all(f"- {a}" in md for a in drifted.alerts)
    assert "| new_user_rate |" in md and "| popularity_psi |" in md
    saved = json.loads((tmp_path / "mon" / "monitor.json").read_text())
    assert saved["alerts"] == drifted.alerts and saved["exit_code"] == 1


def _as_champion(bundle, train):
    return register_bundle(bundle, train, alias=registry.CHAMPION)


def test_retrain_promotes_a_better_challenger(small, cfg):
    # the champion knows only the old period; the same recipe fitted on the new weeks knows their users and items
    new = synthetic_next_period(**SMALL, seed=7)
    mv1 = _as_champion(fit_bundle(small.interactions, "als", {"factors": 8}, cfg=cfg), small.interactions)
    combined = pd.concat([small.interactions, new.interactions], ignore_index=True)
    decision = retrain(combined, cfg, window_days=7)
    assert decision.champion_version == mv1.version and decision.promoted, decision.reason
    assert decision.challenger_score > decision.champion_score
    challenger = registry.get("recommender", decision.challenger_version)
    assert challenger.params["model"] == "als" and challenger.params["param.factors"] == "8"  # the champion's
    assert challenger.last_training_timestamp < decision.window_start  # compared without seeing the window
    # what is promoted is the same recipe refitted on everything, window included
    champion = registry.get("recommender", registry.CHAMPION)
    assert champion.version == decision.promoted_version != decision.challenger_version
    assert champion.last_training_timestamp == combined[TIMESTAMP].max()
    assert champion.params["param.factors"] == "8" and "promoted its refit" in decision.reason
    assert registry.get("recommender", champion.version).training_run_id != champion.run_id  # a logged training run


def test_retrain_without_new_data_is_no_fair_comparison(small, cfg):
    # the bug: a champion fitted on all data has the window in its seen-filter (nDCG@10 0.000 there), so any
    # challenger used to be promoted. Now nothing is trained and the refusal says why.
    mv1 = _as_champion(fit_bundle(small.interactions, "als", cfg=cfg), small.interactions)
    decision = retrain(small.interactions, cfg, window_days=7)
    assert not decision.promoted
    assert decision.reason.startswith(f"no fair comparison: champion v{mv1.version} saw data up to")
    assert decision.reason.endswith("bring newer labelled data")
    assert registry.get("recommender", registry.CHAMPION).version == mv1.version
    assert [v.version for v in registry.list_versions("recommender")] == [mv1.version]


def test_retrain_challenger_takes_the_champion_recipe(small, cfg):
    before, _ = time_window_split(small.interactions, 14)
    tuned = RecommenderConfig(seed=7, threads=1, weighting="bm25")
    mv1 = _as_champion(fit_bundle(before, "ease", {"lambda_": 123.0}, cfg=tuned), before)
    decision = retrain(small.interactions, cfg, window_days=14)  # cfg says ALS with defaults: not used
    assert decision.champion_version == mv1.version and decision.challenger_version
    bundle, mv = load_version(decision.challenger_version)
    champion_bundle, _ = load_version(mv1.version)
    assert (bundle.model.name, bundle.model.params["lambda_"], bundle.info["weighting"]) == ("ease", 123.0, "bm25")
    assert bundle.model.params == champion_bundle.model.params  # every hyper-parameter, not just the tuned one
    assert mv.params["model"] == "ease"


def test_retrain_keeps_champion_when_margin_not_met(small, cfg):
    before, _ = time_window_split(small.interactions, 14)
    _as_champion(fit_bundle(before, "als", cfg=cfg), before)
    decision = retrain(small.interactions, cfg, window_days=14, margin=1.0)  # impossible margin
    assert not decision.promoted and "does not exceed margin" in decision.reason
    assert registry.get("recommender", registry.CHALLENGER).version == decision.challenger_version
    _bundle, mv = load_version(registry.CHAMPION)
    assert mv.version == decision.champion_version


def test_window_needs_earlier_history(small, cfg):
    late = small.interactions.assign(**{TIMESTAMP: np.int64(10**9)})
    with pytest.raises(ValueError, match="earlier history"):
        retrain(late, cfg, window_days=1)
