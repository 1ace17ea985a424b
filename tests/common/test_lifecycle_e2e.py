"""The whole lifecycle with a tiny scikit-learn model over real HTTP (examples/lifecycle.py)."""

from __future__ import annotations

import pytest

from common import registry, retraining
from examples import lifecycle as lifecycle_example


@pytest.mark.e2e
def test_lifecycle_train_serve_batch_drift_retrain_promote(free_port: int, mlref_home) -> None:
    out = lifecycle_example.run(port=free_port, n=3000, seed=0)

    # trained model is useful (a broken model sits at AUC 0.5)
    assert out["v1"]["roc_auc"] > 0.75
    # served over real HTTP: good request answered by the champion, bad one names its fields
    status, body = out["serve"]["good"]
    assert status == 200 and 0.0 < body["probability"] < 1.0 and body["model_version"] == "1"
    status, body = out["serve"]["bad"]
    assert status == 422 and "body.x1" in body["message"] and "body.segment" in body["message"]
    # batch scored every row into the output file
    assert out["batch"]["rows"] == 3000
    # the shifted population is flagged, on the shifted features and the predictions, not on the stable ones
    assert out["drift"]["drift"] is True
    assert {"x1", "segment", "prediction"} <= set(out["drift"]["drifted"])
    assert "x3" not in out["drift"]["drifted"]
    assert (mlref_home / "reports" / "lifecycle-example" / "drift.md").exists()
    # retraining on the new population wins on the recent window and is promoted; the decision is recorded
    decision = out["decision"]
    assert decision["promoted"] is True, decision
    assert decision["challenger_score"] > decision["champion_score"]
    assert registry.get(lifecycle_example.NAME).version == "2"
    assert retraining.history(lifecycle_example.NAME)[-1].challenger_version == "2"
    # the running service hot-swapped to the new champion without a restart
    assert out["served_version_after"] == "2"
    assert 'route="/v1/predict",status="422"' in out["metrics_text"]
