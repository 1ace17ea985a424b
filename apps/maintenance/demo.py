"""The whole lifecycle on a simulated fleet, offline: ``python -m apps.maintenance demo``.

simulate run-to-failure histories -> train the DCNN + baselines -> evaluate on truncated test units (report,
figures, alert trade-off) -> register the champion -> serve readings and RUL over HTTP in-process (good and bad
requests) -> batch-score the running units -> a fleet whose sensors drifted -> monitor -> new failures from a
changed population -> retrain -> promote or keep.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from apps.maintenance.config import Config
from apps.maintenance.data import CYCLE, TIMESTAMP, UNIT, sensors_of, settings_of, simulate, simulate_fleet
from common import registry
from common.app import App, evaluate_pipeline, monitor_pipeline, train_pipeline
from common.data import write_table
from common.workspace import Workspace

log = logging.getLogger(__name__)


def run_demo(
    app: App[Config, Any, Any], ws: Workspace, cfg: Config, *, n_train: int = 60, n_test: int = 30
) -> dict[str, Any]:
    """Run every stage of ``app`` (the :class:`~apps.maintenance.pipeline.MaintenanceApp`, passed in so that this
    module does not import the pipeline that calls it) in the workspace ``ws`` (a demo's own) through the same
    pipeline functions as the CLI; returns a summary (what the end-to-end test checks)."""
    from fastapi.testclient import TestClient

    t0 = time.perf_counter()
    seed = cfg.seed
    work = ws.work_dir(app.name)
    out: dict[str, Any] = {}

    # 1. data, training (a tracking run), registration as champion; evaluation of that model against the baselines
    fleet = simulate(n_train, n_test, seed=seed)
    trained = train_pipeline(app, ws, "simulated", cfg, data=fleet, promote=True, report=False)
    evaluation = evaluate_pipeline(app, ws, "simulated", cfg, data=fleet, fitted=trained.fitted)
    out["evaluation"], out["report"] = evaluation.metrics, str(evaluation.report)
    out["champion_version"] = trained.version

    # 2. serve in-process: stream three test units' readings, good and bad requests, RUL and the fleet view
    assert fleet.test is not None and fleet.test_rul is not None
    cols = settings_of(fleet.test) + sensors_of(fleet.test)
    with TestClient(app.service(ws)) as client:
        codes: dict[str, int] = {}
        units = list(dict.fromkeys(fleet.test[UNIT]))[:3]
        for unit in units:
            rows = fleet.test[fleet.test[UNIT] == unit]
            recs = [{CYCLE: int(r[CYCLE]), **{c: float(r[c]) for c in cols}} for _, r in rows.iterrows()]
            half = len(recs) // 2
            codes[f"{unit} first half"] = client.post(
                f"/v1/units/{unit}/readings", json={"readings": recs[:half]}
            ).status_code
            codes[f"{unit} second half"] = client.post(
                f"/v1/units/{unit}/readings", json={"readings": recs[half:]}
            ).status_code
        last = recs[-1]
        dup = client.post(f"/v1/units/{units[-1]}/readings", json={"readings": [last]})
        missing = client.post(
            f"/v1/units/{units[-1]}/readings",
            json={"readings": [{k: v for k, v in last.items() if k != cols[-1]} | {CYCLE: last[CYCLE] + 1}]},
        )
        rul = client.get(f"/v1/units/{units[0]}/rul").json()
        fleet_view = client.get("/v1/fleet").json()
    out["serve"] = {
        "codes": codes,
        "duplicate": dup.status_code,
        "duplicate_message": dup.json()["message"],
        "missing": missing.status_code,
        "missing_message": missing.json()["message"],
        "rul": rul,
        "fleet_order": [u["unit"] for u in fleet_view["units"]],
        "true_rul": {u: float(fleet.test_rul[u]) for u in units},
    }

    # 3. batch-score the running units from a file
    src = write_table(fleet.test, work / "running_units.parquet")
    champion, _ = app.load_model(ws)
    out["batch"] = app.batch(ws, champion, src, work / "rul.parquet", chunksize=app.batch_chunk[0])

    # 4. later, the fleet's sensor_3 reads 5 % high in operating condition c1 (a recalibrated probe): monitor
    recent = simulate_fleet(max(n_test, 20), seed=seed + 1, unit_prefix="recent-")
    recent_cond = champion.pre.conditions(recent)
    recent.loc[recent_cond == 1, "sensor_3"] *= 1.05
    verdict, _ = monitor_pipeline(app, ws, write_table(recent, work / "recent_readings.parquet"))
    out["monitor"] = {
        "alerts": verdict.alerts,
        "drift_by_condition": verdict.stats.get("drift_by_condition"),
        "exit_code": 1 if verdict.alerts else 0,
        "report": str(verdict.report),
    }

    # 5. new failures from a changed population (faster wear, stronger sensor response): retrain, promote or keep
    new = simulate_fleet(
        max(2 * cfg.window_units, 20),
        seed=seed + 2,
        shift=0.5,
        unit_prefix="new-",
        start=int(fleet.train[TIMESTAMP].max()) + 1,
    )
    histories = write_table(pd.concat([fleet.train, new], ignore_index=True), work / "histories_with_new.parquet")
    out["retrain"] = app.retrain(ws, str(histories), cfg, margin=0.0)
    out["champion_after"] = registry.version_of(app.registry_name, registry.CHAMPION)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("demo finished in %.1f s", out["seconds"])
    return out
