"""The demo end to end on a tiny simulated fleet: train, evaluate, register, serve, batch, drift, retrain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.maintenance.conftest import tiny_config


@pytest.mark.e2e
def test_demo_end_to_end(tmp_path: Path) -> None:
    from apps.maintenance.demo import run_demo
    from apps.maintenance.pipeline import APP_IMPL
    from common.workspace import Workspace

    ws = Workspace.at(tmp_path / "demo")
    with ws.activate():
        out = run_demo(APP_IMPL, ws, tiny_config(seed=5, epochs=2), n_train=16, n_test=8)
    ev = out["evaluation"]
    assert ev["boost"]["rmse"] < ev["mean"]["rmse"] and 0 <= ev["boost"]["coverage"] <= 1
    report = Path(out["report"])
    assert report.exists() and {"alert_tradeoff.png", "trajectories.png", "predicted_vs_true.png"} <= {
        p.name for p in report.parent.iterdir()
    }
    # the demo's reports go where the CLI's do: a run directory per report, a `latest` link, an index row
    assert report.parent.parent == ws.reports / "maintenance" / "simulated" / "evaluation"
    assert (report.parent.parent / "latest").resolve() == report.parent.resolve()
    assert Path(out["monitor"]["report"]).parent.parent.name == "monitor"
    index = (ws.reports / "index.md").read_text()
    assert "| maintenance | simulated | evaluation |" in index.replace("`", ""), index
    serve = out["serve"]
    assert set(serve["codes"].values()) == {200} and serve["duplicate"] == 409 and serve["missing"] == 422
    assert "cycle" in serve["duplicate_message"] and "sensor_12" in serve["missing_message"]
    order = serve["fleet_order"]
    assert order.index(min(serve["true_rul"], key=serve["true_rul"].get)) <= 1  # the nearest failure is near the top
    assert out["batch"]["units"] == 8
    assert out["monitor"]["exit_code"] == 1 and "c1" in out["monitor"]["drift_by_condition"]
    r = out["retrain"]
    assert r["challenger_version"] == "2" and r["champion_score"] is not None
    assert out["champion_after"] == ("2" if r["promoted"] else "1")
