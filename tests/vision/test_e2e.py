"""The demo end to end on a tiny configuration: train, evaluate, register, serve, batch, drift, retrain."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from apps.vision.demo import run_demo
from common import cli, registry, retraining


@pytest.mark.e2e
def test_demo_runs_offline_end_to_end() -> None:
    with cli.demo_home("vision") as home:
        out = run_demo(seed=0, tiny=True)
        assert out["evaluation"]["accuracy"] > 0.2  # 10 classes: chance 0.1
        assert out["evaluation"]["ece"] < out["evaluation"]["ece_uncalibrated"]
        report = Path(out["report"])
        assert report.is_file()
        for fig in ("confusion_matrix.png", "reliability.png", "confident_mistakes.png"):
            assert (report.parent / fig).is_file(), fig
        assert out["serve"]["good"] == 200 and out["serve"]["json"] == 200
        assert out["serve"]["bad"] == 400 and "not an image" in out["serve"]["bad_message"]
        preds = pd.read_csv(out["batch"]["output"])
        assert out["batch"]["skipped"] == 1 and len(preds) == out["batch"]["scored"] + 1
        assert preds.loc[preds["error"].notna(), "path"].str.endswith("broken.png").all()
        # the altered images are darker by construction: an image statistic, whatever the model learnt (whether a
        # 4-epoch model's confidence drops depends on the CPU's numerics; test_monitor.py checks that alert)
        assert out["monitor"]["alerts"] and "brightness" in out["monitor"]["drifted_features"]
        assert out["precision"]["source"].startswith(("measured", "MLREF_VISION_AMP"))
        decisions = retraining.history("vision")
        assert len(decisions) == 1 and decisions[0].challenger_version == out["retrain"]["challenger_version"]
        champion = registry.version_of("vision", registry.CHAMPION)
        assert champion == (
            out["retrain"]["challenger_version"] if out["retrain"]["promoted"] else out["champion_version"]
        )
        assert (home / "reports" / "vision" / "monitor" / "monitor.json").is_file()
