"""The whole demo on the tiny world, and the CLI surface."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "apps.fraud", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("demo", "train", "evaluate", "serve", "predict", "batch", "monitor", "retrain", "bench"):
        assert cmd in out.stdout


@pytest.mark.e2e
def test_demo_on_tiny_world() -> None:
    """The demo through the pipeline (train_pipeline, evaluate_pipeline, the service, batch, monitor_pipeline,
    retrain) in its own workspace, on the tiny world (seed 0, the conftest's)."""
    from apps.fraud.pipeline import APP_IMPL
    from common.app import demo_pipeline
    from common.workspace import Workspace

    ws = Workspace.from_env()
    s = demo_pipeline(APP_IMPL, ws, seed=0, values={"sim_size": "tiny", "demo.n_requests": 60})
    assert s["data"]["transactions"] > 30_000
    ev = s["evaluation"]
    assert set(ev) == {"xgboost", "logreg", "random_forest", "decision_tree"}
    assert ev["xgboost"]["roc_auc"] > 0.7 and ev["xgboost"]["average_precision"] > 0.3
    assert s["serve"]["statuses"] == [200] and s["serve"]["bad_request"]["status"] == 422
    assert s["serve"]["labels"]["applied"] == 60
    assert s["batch"]["rows"] > 0
    assert s["monitor"]["drift"] is True and "amount" in s["monitor"]["drifted_features"]
    # the new weeks' amounts are x1.5: a challenger trained on them beats the champion on the latest labelled
    # week, fairly (neither model saw that week), so it must be promoted
    assert s["retrain"]["challenger_version"] == "2"
    assert s["retrain"]["promoted"] is True, s["retrain"]["reason"]
    assert s["retrain"]["challenger_score"] > s["retrain"]["champion_score"]
    assert s["champion_after"] == "2"
    # everything landed in the demo's own workspace: reports with `latest` links, the user's registry untouched
    demo_reports = ws.home / "demo" / "fraud" / "reports" / "fraud"
    for kind in ("evaluation", "monitor"):
        assert any(p.name == "latest" for p in demo_reports.glob(f"*/{kind}/*")), kind
    assert s["report"].startswith(str(demo_reports))
    from common import registry

    assert registry.find("fraud") is None
