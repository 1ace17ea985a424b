"""The whole lifecycle on a simulated fleet, offline: ``python -m apps.maintenance demo``.

simulate run-to-failure histories -> train the DCNN + baselines -> evaluate on truncated test units (report,
figures, alert trade-off) -> register the champion -> serve readings and RUL over HTTP in-process (good and bad
requests) -> batch-score the running units -> a fleet whose sensors drifted -> monitor -> new failures from a
changed population -> retrain -> promote or keep.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import pandas as pd

from apps.maintenance.config import APP, Config
from apps.maintenance.data import CYCLE, TIMESTAMP, UNIT, sensors_of, settings_of, simulate, simulate_fleet
from apps.maintenance.evaluate import alert_tradeoff, evaluate_last_cycle, write_evaluation
from apps.maintenance.lifecycle import batch_score, load_version, monitor, register, retrain, summary
from apps.maintenance.service import build_app
from apps.maintenance.train import fit_baselines, prepare, train
from common import registry
from common.config import get_settings, seed_everything
from common.data import write_table

log = logging.getLogger(__name__)


def demo_config(seed: int, *, epochs: int = 25, model: str = "boost") -> Config:
    """The demo's settings: the default model (boosted trees, seconds); with ``model="dcnn"`` a short schedule
    (the simulated sensors are easier than C-MAPSS, 25 epochs are plenty)."""
    return Config(model=model, epochs=epochs, n_seeds=1, max_train_s=300, window=30, window_units=10, seed=seed).check()


def run_demo(
    *,
    n_train: int = 60,
    n_test: int = 30,
    epochs: int = 25,
    seed: int = 42,
    model: str = "boost",
    config: Config | None = None,
) -> dict[str, Any]:
    """Run every stage; returns a summary (what the end-to-end test checks). ``config`` replaces the demo's."""
    from fastapi.testclient import TestClient

    seed_everything(seed)
    t0 = time.perf_counter()
    cfg = config or demo_config(seed, epochs=epochs, model=model)
    home = get_settings().home
    out: dict[str, Any] = {}

    # 1. data, training, evaluation against the baselines, report
    fleet = simulate(n_train, n_test, seed=seed)
    data = prepare(fleet.train, cfg)
    model = train(fleet.train, cfg, data=data)
    assert fleet.test is not None and fleet.test_rul is not None
    table: dict[str, dict[str, float]] = {}
    table[cfg.model], per_unit = evaluate_last_cycle(model, fleet.test, fleet.test_rul, cfg.rul_cap)
    for name, reg in fit_baselines(data, cfg, kinds=("mean", "linear", "summary")).items():
        table[name], _ = evaluate_last_cycle(reg, fleet.test, fleet.test_rul, cfg.rul_cap)
    curve = alert_tradeoff(per_unit, cfg.horizon)
    report = write_evaluation(
        home / "reports" / APP / "demo",
        table,
        dataset="simulated fleet",
        model=model,
        test=fleet.test,
        truth=fleet.test_rul,
        per_unit=per_unit,
        curve=curve,
        info={k: v for k, v in model.info.items() if k != "members"}
        | ({"epochs": cfg.epochs} if cfg.model == "dcnn" else {}),
    )
    out["evaluation"], out["report"] = table, str(report)

    # 2. the champion
    mv1 = register(
        model,
        fleet.train,
        metrics={f"test_{k}": v for k, v in table[cfg.model].items()},
        dataset="simulated",
        alias=registry.CHAMPION,
    )
    out["champion_version"] = mv1.version

    # 3. serve in-process: stream two test units' readings, good and bad requests, RUL and the fleet view
    cols = settings_of(fleet.test) + sensors_of(fleet.test)
    with TestClient(build_app(refresh_interval_s=None)) as client:
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

    # 4. batch-score the running units from a file
    src = home / "work" / APP / "running_units.parquet"
    write_table(fleet.test, src)
    champion, _ = load_version()
    out["batch"] = batch_score(champion, src, home / "work" / APP / "rul.parquet")

    # 5. later, the fleet's sensor_3 reads 5 % high in operating condition c1 (a recalibrated probe): monitor
    recent = simulate_fleet(max(n_test, 20), seed=seed + 1, unit_prefix="recent-")
    recent_cond = champion.pre.conditions(recent)
    recent.loc[recent_cond == 1, "sensor_3"] *= 1.05
    verdict = monitor(champion, registry.fetch_model_dir(mv1), recent, home / "reports" / APP / "monitor")
    out["monitor"] = {
        "alerts": verdict.alerts,
        "drift_by_condition": verdict.stats.get("drift_by_condition"),
        "exit_code": verdict.exit_code,
    }

    # 6. new failures from a changed population (faster wear, stronger sensor response): retrain, promote or keep
    new = simulate_fleet(
        max(2 * cfg.window_units, 20),
        seed=seed + 2,
        shift=0.5,
        unit_prefix="new-",
        start=int(fleet.train[TIMESTAMP].max()) + 1,
    )
    histories = pd.concat([fleet.train, new], ignore_index=True)
    decision = retrain(histories, replace(cfg), dataset="simulated+new failures")
    out["retrain"] = summary(decision)
    out["champion_after"] = registry.version_of(APP, registry.CHAMPION)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("demo finished in %.1f s", out["seconds"])
    return out
