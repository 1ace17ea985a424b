"""The demo end to end on tiny data (e2e) and the benchmark on MovieLens 100K (bench)."""

from __future__ import annotations

import numpy as np
import pytest

from common import registry


@pytest.mark.e2e
def test_demo_runs_end_to_end_on_tiny_data():
    from apps.recommender.demo import run_demo

    out = run_demo(tiny=True, seed=3)
    ev = out["evaluation"]
    assert ev["als"]["ndcg@10"] > ev["popular"]["ndcg@10"] > ev["random"]["ndcg@10"]
    assert out["api"]["known_user"]["status"] == 200 and out["api"]["bad_k"]["status"] == 422
    assert out["api"]["unknown_item"]["status"] == 404 and out["api"]["unknown_user"]["strategy"] == "popular"
    assert out["metrics_has_latency"]
    assert out["batch"]["rows"] == 10 * out["batch"]["users"]
    assert out["monitor"]["alerts"]
    # the month after brings new users and trending items the champion never saw: a challenger of the same recipe
    # trained on newer data must win on the latest week, be promoted (as its refit on all data), and be served
    retrain = out["retrain"]
    assert retrain["promoted"], retrain
    assert retrain["challenger_score"] > retrain["champion_score"]
    assert retrain["champion_version"] == out["champion_version"]
    champion = registry.get("recommender", registry.CHAMPION).version
    assert champion != out["champion_version"] and int(champion) >= int(retrain["challenger_version"])
    assert out["served_version_after"] == champion


@pytest.mark.bench
def test_bench_ml100k_reaches_targets(shared_data, monkeypatch, tmp_path):
    from apps.recommender.bench import run_bench

    if not (shared_data / "ml-100k" / "u.data").exists():
        pytest.skip("ml-100k not in the shared data")
    monkeypatch.setenv("MLREF_DATA_DIR", str(shared_data))
    doc = run_bench("ml-100k", output=tmp_path / "recommender.json", robustness_seeds=())
    models = doc["models"]
    per_user = np.loadtxt(shared_data / "ml-100k" / "u.data", dtype=np.int64)[:, 0]
    expected_train = int(np.floor(0.75 * np.bincount(per_user)[1:] + 1e-9).sum())  # rank/count <= 0.75 per user
    assert doc["protocol_details"]["train_interactions"] == expected_train
    best = max(m["metrics"]["ndcg@10"] for m in models.values())
    assert best >= 0.475
    assert models["als"]["metrics"]["ndcg@10"] >= 0.44
    assert models["als"]["train_s"] < 10 and models["ease"]["train_s"] < 10
    assert models["als"]["metrics"]["ndcg@10"] > 1.5 * models["popular"]["metrics"]["ndcg@10"]
