"""The whole lifecycle on the embedded synthetic data, offline: ``python -m apps.recommender demo``.

1. generate interactions; train the champion (held-out metrics, then fitted on all data) and register it
2. evaluate ALS against the baselines (MS-stratified, plus leave-last-out); the report
3. serve it in-process and call every route, good and bad requests
4. batch: top-k for every user to parquet
5. a month later: new users, new trending items -> monitor raises alerts
6. retrain on old + new interactions; challenger vs champion on the latest week; promote or keep
7. the service swaps to the new champion without a restart
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import pandas as pd

from apps.recommender.config import RecommenderConfig
from apps.recommender.data import ITEM, TINY, synthetic, synthetic_next_period
from common import registry
from common.app import App, evaluate_pipeline, monitor_pipeline, train_pipeline
from common.data import write_table
from common.workspace import Workspace

log = logging.getLogger(__name__)

RETRAIN_KEYS = ("champion_version", "challenger_version", "champion_score", "challenger_score", "promoted", "reason")


def run_demo(app: App[RecommenderConfig, Any, Any], ws: Workspace, cfg: RecommenderConfig) -> dict[str, Any]:
    """Run every stage of ``app`` (the RecommenderApp, passed in so that this module does not import the pipeline
    that calls it) in the workspace ``ws`` (a demo's own) through the same pipeline functions as the CLI;
    ``cfg.tiny``: a few hundred users and no BPR. Returns a summary (what the end-to-end test checks)."""
    from fastapi.testclient import TestClient

    t_start = time.perf_counter()
    sizes = TINY if cfg.tiny else {}
    if cfg.tiny:
        cfg = dataclasses.replace(cfg, models=",".join(m for m in cfg.model_names() if m != "bpr"))
    seed = cfg.seed
    work = ws.work_dir(app.name)
    out: dict[str, Any] = {}

    # 1-2. data; the champion (a tracking run, registered); its recipe and the baselines evaluated ---------------
    ds = synthetic(**sizes, seed=seed)
    trained = train_pipeline(app, ws, ds.name, cfg, data=ds, promote=True)
    evaluation = evaluate_pipeline(app, ws, ds.name, cfg, data=ds, fitted=trained.fitted)
    keep = ("ndcg@10", "precision@10", "map@10", "coverage")
    out["evaluation"] = {m: {k: row[k] for k in keep} for m, row in evaluation.metrics.items()}
    llo = evaluation.extra.get("leave_last_out", {})
    out["leave_last_out"] = {m: {k: row[k] for k in ("hit_rate@10", "ndcg@10")} for m, row in llo.items()}
    out["report"] = str(evaluation.report)
    out["champion_version"] = trained.version
    champion = trained.fitted.model

    # 3. serve in-process -------------------------------------------------------------------------------------
    with TestClient(app.service(ws)) as client:
        user = champion.users.ids[0]
        item = champion.items.ids[0]
        history = list(champion.items.ids[[1, 2, 3]])
        calls = {
            "known_user": client.get(f"/v1/users/{user}/recommendations", params={"k": 5}),
            "unknown_user": client.get("/v1/users/nobody/recommendations", params={"k": 5}),
            "history": client.post("/v1/recommendations", json={"items": [*history, "not-an-item"], "k": 5}),
            "empty_history": client.post("/v1/recommendations", json={"items": [], "k": 5}),
            "similar": client.get(f"/v1/items/{item}/similar", params={"k": 5}),
            "bad_k": client.get(f"/v1/users/{user}/recommendations", params={"k": 0}),
            "unknown_item": client.get("/v1/items/nope/similar"),
        }
        out["api"] = {
            name: {
                "status": r.status_code,
                "strategy": r.json().get("strategy") if r.is_success else None,
                "message": (r.json().get("message") or r.json().get("detail")) if not r.is_success else None,
            }
            for name, r in calls.items()
        }
        out["api_example"] = calls["known_user"].json()["items"][:3]
        out["metrics_has_latency"] = "mlref_request_latency_seconds_bucket" in client.get("/metrics").text

        # 4. batch --------------------------------------------------------------------------------------------
        res = app.batch(
            ws, champion, None, work / "recommendations.parquet", chunksize=app.batch_chunk[0], k=cfg.k, progress=False
        )
        out["batch"] = {"rows": res["rows"], "users": len(champion.users), "output": res["output"]}

        # 5. a month later: monitor -------------------------------------------------------------------------------
        new = synthetic_next_period(**sizes, seed=seed)
        mon, _ = monitor_pipeline(app, ws, write_table(new.interactions, work / "synthetic-next.parquet"))
        out["monitor"] = {"alerts": mon.alerts, **{k: round(v, 4) for k, v in mon.stats.items()}}

        # 6. retrain on old + new (a file, its item metadata beside it), compare on the latest week ---------------
        combined = write_table(
            pd.concat([ds.interactions, new.interactions], ignore_index=True), work / "with-next-month.parquet"
        )
        items = pd.concat([ds.items, new.items[~new.items.index.isin(ds.items.index)]])
        write_table(items.rename_axis(ITEM).reset_index(), work / "with-next-month.items.csv")
        decision = app.retrain(ws, str(combined), dataclasses.replace(cfg, window_days=7.0), margin=0.0)
        out["retrain"] = {k: decision[k] for k in RETRAIN_KEYS}

        # 7. hot swap ------------------------------------------------------------------------------------------
        out["reload"] = client.post("/admin/reload").json()
        served = client.get("/v1/model").json()["version"]
        out["served_version_after"] = served
        if decision["promoted"]:
            champion_now = registry.version_of(app.registry_name, registry.CHAMPION)
            assert served == champion_now, f"service serves {served}, champion is {champion_now}"
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    log.info("demo finished in %.1f s", out["seconds"])
    return out
