"""The demo end to end on a tiny configuration: train, evaluate, register, serve, batch, drift, retrain."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from apps.vision.pipeline import APP_IMPL
from common import registry, retraining
from common.app import set_field
from common.workspace import Workspace


@pytest.mark.e2e
def test_demo_runs_offline_end_to_end(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "demo")
    cfg = APP_IMPL.demo_config(0)
    set_field(cfg, "tiny", True)  # what `demo --tiny` does
    with ws.activate():
        out = APP_IMPL.demo(ws, cfg)
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
        assert 0 <= out["monitor"]["accuracy_on_drifted"] <= 1  # the new camera's images came labelled
        assert out["precision"]["source"].startswith(("measured", "MLREF_VISION_AMP"))
        decisions = retraining.history("vision")
        assert len(decisions) == 1 and decisions[0].challenger_version == out["retrain"]["challenger_version"]
        champion = registry.version_of("vision", registry.CHAMPION)
        assert champion == (
            out["retrain"]["challenger_version"] if out["retrain"]["promoted"] else out["champion_version"]
        )
    # issue 18: the demo's reports go where the CLI's do: a run directory per report (the training report and the
    # evaluation are two runs, neither overwritten), a `latest` link, index rows naming dataset and kind
    kind = ws.reports / "vision" / "digits" / "evaluation"
    assert report.parent.parent == kind and (kind / "latest").resolve() == report.parent.resolve()
    assert len([d for d in kind.iterdir() if d.name != "latest"]) == 2
    monitor_report = Path(out["monitor"]["report"])
    assert monitor_report.is_file() and (monitor_report.parent / "monitor.json").is_file()
    assert monitor_report.parent.parent.name == "monitor"
    assert (monitor_report.parent.parent / "latest").resolve() == monitor_report.parent.resolve()
    index = (ws.reports / "index.md").read_text().replace("`", "")
    assert "| vision | digits | evaluation |" in index and "| vision | new-camera | monitor |" in index, index
