"""The demo end to end on tiny data (e2e) and the benchmark on MovieLens 100K (bench)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common import registry
from common.workspace import Workspace


@pytest.mark.e2e
def test_demo_runs_end_to_end_on_tiny_data(tmp_path: Path) -> None:
    from apps.recommender.demo import run_demo
    from apps.recommender.pipeline import APP_IMPL

    ws = Workspace.at(tmp_path / "demo")
    cfg = APP_IMPL.demo_config(3)
    cfg.tiny = True
    with ws.activate():
        out = run_demo(APP_IMPL, ws, cfg)
        champion = registry.get("recommender", registry.CHAMPION).version
    # the demo's reports go where the CLI's do: a run directory per report, a `latest` link, an index row
    report = Path(out["report"])
    assert report.parent.parent == ws.reports / "recommender" / "synthetic" / "evaluation"
    assert (report.parent.parent / "latest").resolve() == report.parent.resolve()
    index = (ws.reports / "index.md").read_text().replace("`", "")
    assert "| recommender | synthetic | evaluation |" in index and "| monitor |" in index, index
    assert set(out["leave_last_out"]) == {"als", "ease", "popular"} and "bpr" not in out["evaluation"]
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
