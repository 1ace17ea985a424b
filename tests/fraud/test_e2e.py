"""The whole demo on the tiny world, and the CLI surface."""

from __future__ import annotations

import subprocess
import sys

import pytest

from apps.fraud.config import TINY_SIMULATION


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "apps.fraud", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("demo", "train", "evaluate", "serve", "predict", "batch", "monitor", "retrain", "bench"):
        assert cmd in out.stdout


@pytest.mark.e2e
def test_demo_on_tiny_world() -> None:
    from apps.fraud import demo

    s = demo.run(TINY_SIMULATION, n_requests=60)
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
