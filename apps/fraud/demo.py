"""The whole lifecycle on a small simulated world, offline, in a few minutes on 2 cores, through the pipeline.

simulate -> train + register the champion (``train_pipeline``) -> prequential evaluation vs baselines of that model
(``evaluate_pipeline``, report) -> serve in-process (``app.service``: score transactions, ingest delayed labels, a
bad request, /metrics) -> batch-score a file -> an amount drift hits the new weeks -> monitor (``monitor_pipeline``:
drift report, alert precision) -> weekly retrain (``app.retrain``) -> promote or keep. Runs in the workspace it is
given (``python -m apps.fraud demo``: ``$MLREF_HOME/demo/fraud``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import APP, MODEL_NAME, FraudConfig
from apps.fraud.data import AMOUNT, DAY, LABEL, SCENARIO, SCHEMA, TIMESTAMP, TX_ID
from apps.fraud.lifecycle import alert_precision_from_logs, window_metrics
from apps.fraud.train import prepare, recent_window
from common import registry
from common.app import evaluate_pipeline, monitor_pipeline, train_pipeline
from common.data import write_table
from common.workspace import Workspace

log = logging.getLogger(__name__)

DRIFT_FACTOR = 1.5  # the "new" weeks: every amount x1.5 (a currency change), labels unchanged


def run_demo(app: Any, ws: Workspace, cfg: FraudConfig) -> dict[str, Any]:
    """Run every stage of ``app`` (the FraudApp, passed in so that this module does not import the pipeline that
    calls it) in ``ws`` (activated by the caller); returns a summary (``demo`` prints it)."""
    from apps.fraud.data import Transactions

    dc = cfg.demo
    cfg = replace(cfg.check(), protocol=replace(cfg.protocol, n_folds=dc.n_folds, anchor_day=None))
    name = dc.dataset or f"simulated-{cfg.sim_size or 'custom'}"
    work = ws.work_dir(APP)
    summary: dict[str, Any] = {}

    # 1. data: the past (evaluation + champion) and the new weeks (served, batch-scored, drifted, retrained on)
    raw = app.transactions(ws, dc.dataset, cfg)
    prepared_all = prepare(raw, cfg.features)
    last_day = int(prepared_all[DAY].max())
    split_day = last_day + 1 - dc.new_days
    past = Transactions(prepared_all[prepared_all[DAY] < split_day], name)
    summary["data"] = {
        "transactions": len(raw),
        "fraud_rate": round(float(raw[LABEL].mean()), 5),
        "days": last_day + 1,
        "past_days": split_day,
        "new_days": dc.new_days,
    }
    log.info("data: %s", summary["data"])

    # 2. champion: validated, trained on the latest labelled week of the past, registered (as `train` does)
    trained = train_pipeline(app, ws, dc.dataset, cfg, tune=cfg.tune, promote=True, data=past)
    champion = trained.fitted.model

    # 3. evaluation: handbook protocol on the past, that model vs the baselines, report (as `evaluate` does)
    ev = evaluate_pipeline(app, ws, dc.dataset, cfg, data=past, fitted=trained.fitted)
    summary["evaluation"] = ev.metrics
    summary["champion"] = {"version": trained.version, "threshold": champion.threshold, "report": str(ev.report)}

    # 4. serve in-process (the champion on its recorded history): the new weeks' first transactions, their labels a
    # week later, a bad request, /metrics
    new = raw[raw[TIMESTAMP] >= raw[TIMESTAMP].min().normalize() + pd.Timedelta(days=split_day)]
    summary["serve"] = _serve(app.service(ws, refresh_interval=0), new.head(dc.n_requests), ws)

    # 5. batch-score the new weeks from a file (streamed in chunks, history carried across chunks)
    src = work / "new_transactions.parquet"
    write_table(new[[c for c in SCHEMA.names if c in new.columns and c not in (SCENARIO, LABEL)]], src)
    model, _ = app.load_model(ws)
    res = app.score_file(ws, model, src, work / "scored.parquet", chunksize=20_000, reasons=True, progress=False)
    scored = pd.read_parquet(res["output"])
    summary["batch"] = {
        **{k: res[k] for k in ("rows", "chunks", "seconds")},
        "rows_per_s": round(res["rows"] / max(res["seconds"], 1e-9)),
        "alerts_per_day": round(float((scored["decision"] == "alert").sum() / dc.new_days), 1),
    }

    # 6. drift: amounts x1.5 in the new weeks; monitor the latest week (with the history its features need)
    drifted_raw = raw.copy()
    is_new = drifted_raw[TX_ID].isin(new[TX_ID])
    drifted_raw.loc[is_new, AMOUNT] = np.round(drifted_raw.loc[is_new, AMOUNT] * DRIFT_FACTOR, 2)
    cols = [c for c in SCHEMA.names if c in drifted_raw.columns and c != SCENARIO]
    drifted_file = work / "drifted_transactions.parquet"
    write_table(drifted_raw[cols], drifted_file)
    keep = cfg.monitor_days + cfg.features.history_days + 2
    recent_file = work / "recent_transactions.parquet"
    write_table(
        drifted_raw.loc[drifted_raw[TIMESTAMP] > raw[TIMESTAMP].max() - pd.Timedelta(days=keep), cols], recent_file
    )
    watched, version = monitor_pipeline(app, ws, recent_file)
    labelled_week = recent_window(prepare(drifted_raw, cfg.features), 7, cfg.features.delay_days)
    summary["monitor"] = {
        **{k: watched.stats[k] for k in ("drift", "drifted_features", "prediction_drift")},
        "alerts": watched.alerts,
        "champion_on_latest_labelled_week": {k: round(v, 4) for k, v in window_metrics(model, labelled_week).items()},
        "report": str(watched.report),
    }
    log.info("monitor (version %s): drift=%s %s", version, watched.stats["drift"], watched.stats["drifted_features"])

    # 7. weekly retrain on the drifted weeks, champion vs challenger on the most recent labelled week
    decision = app.retrain(ws, str(drifted_file), cfg, margin=cfg.retrain.margin)
    keys = ("champion_version", "challenger_version", "metric", "champion_score", "challenger_score", "promoted")
    summary["retrain"] = {k: decision[k] for k in (*keys, "reason")}
    summary["champion_after"] = registry.get(MODEL_NAME, registry.CHAMPION).version
    summary["report"] = str(ev.report)  # the page `demo` says to open next
    return summary


def _serve(service: Any, served: pd.DataFrame, ws: Workspace) -> dict[str, Any]:
    """Score ``served`` over the service's HTTP API, then post their labels, a bad request, read /metrics."""
    from fastapi.testclient import TestClient

    alerts, statuses, example = 0, set(), None
    with TestClient(service) as client:
        for row in served.itertuples(index=False):
            body = {
                "tx_id": str(row.tx_id),
                "timestamp": row.timestamp.isoformat(),
                "customer_id": str(row.customer_id),
                "terminal_id": str(row.terminal_id),
                "amount": float(row.amount),
            }
            r = client.post("/v1/transactions/score", json=body)
            statuses.add(r.status_code)
            alerts += r.json().get("decision") == "alert"
            if example is None or r.json().get("decision") == "alert":
                example = r.json()
        labels = [{"tx_id": str(t), "label": int(lab)} for t, lab in zip(served[TX_ID], served[LABEL], strict=True)]
        lab = client.post("/v1/labels", json={"labels": labels}).json()
        bad = client.post(
            "/v1/transactions/score",
            json={"tx_id": 1, "timestamp": "yesterday-ish", "customer_id": 1, "terminal_id": 2, "amount": -5},
        )
        metrics_text = client.get("/metrics").text
    log.info("served %d transactions (%d alerts); bad request -> %s", len(served), alerts, bad.status_code)
    return {
        "requests": len(served),
        "statuses": sorted(statuses),
        "alerts": alerts,
        "example_response": example,
        "labels": lab,
        "bad_request": {"status": bad.status_code, "message": bad.json().get("message")},
        "metrics_lines": sum(ln.startswith("mlref_") for ln in metrics_text.splitlines()),
        "alert_precision_from_logs": alert_precision_from_logs(ws=ws),
    }
