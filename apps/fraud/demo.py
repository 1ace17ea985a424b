"""The whole lifecycle on a small simulated world, offline, in a few minutes on 2 cores.

simulate -> prequential evaluation vs baselines (report) -> train + register the champion -> serve in-process
(score transactions, ingest delayed labels, a bad request, /metrics) -> batch-score a file -> an amount drift
hits the new weeks -> monitor (drift report, alert precision) -> weekly retrain -> promote or keep.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import APP, DEMO_SIMULATION, MODEL_NAME, FraudConfig, SimulationConfig
from apps.fraud.data import AMOUNT, DAY, LABEL, SCENARIO, SCHEMA, TIMESTAMP, TX_ID, load
from apps.fraud.lifecycle import (
    alert_precision_from_logs,
    monitor,
    register_model,
    report_selection,
    results_table,
    retrain,
    select_models,
    window_metrics,
)
from apps.fraud.service import BatchScorer, build_app, load_model
from apps.fraud.train import prepare, recent_window, train_model
from common import batch, registry
from common.config import get_settings, seed_everything
from common.data import write_table
from common.reports import new_report_dir, write_json

log = logging.getLogger(__name__)

DRIFT_FACTOR = 1.5  # the "new" weeks: every amount x1.5 (a currency change), labels unchanged


def run(
    sim: SimulationConfig = DEMO_SIMULATION,
    *,
    new_days: int = 21,
    n_folds: int = 2,
    tune_trials: int = 0,
    dataset: str | None = None,
    n_requests: int = 200,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run every stage; returns a summary dict (also written to ``$MLREF_HOME/reports/fraud/demo.json``)."""
    seed = seed_everything(seed)
    settings = get_settings()
    out_dir = settings.path("reports", APP, "x").parent
    work = settings.path("work", APP, "x").parent
    cfg = FraudConfig(simulation=sim)
    cfg = replace(cfg, protocol=replace(cfg.protocol, n_folds=n_folds, anchor_day=None))
    summary: dict[str, Any] = {}
    t_start = time.perf_counter()

    # 1. data: the past (evaluation + champion) and the new weeks (served, batch-scored, drifted, retrained on)
    raw = load(dataset, sim=sim)
    prepared_all = prepare(raw, cfg.features)
    last_day = int(prepared_all[DAY].max())
    split_day = last_day + 1 - new_days
    past = prepared_all[prepared_all[DAY] < split_day]
    summary["data"] = {
        "transactions": len(raw),
        "fraud_rate": round(float(raw[LABEL].mean()), 5),
        "days": last_day + 1,
        "past_days": split_day,
        "new_days": new_days,
    }
    log.info("data: %s", summary["data"])

    # 2. evaluation: handbook protocol on the past, xgboost vs baselines (small grids), report
    grids = {
        "logreg": {"C": [0.1, 1.0]},
        "decision_tree": {"max_depth": [5, 8]},
        "random_forest": {"n_estimators": [50], "max_depth": [10]},
    }
    candidates = select_models(past, cfg, tune_trials=tune_trials, grids=grids, seed=seed)
    summary["evaluation"] = results_table(candidates)

    # 3. champion: trained on the latest labelled week of the past, registered with its test metrics
    params = candidates["xgboost"].params
    champion = train_model(past, cfg, params=params, seed=seed)
    report = report_selection(
        candidates,
        cfg,
        new_report_dir(APP, dataset or "simulated-demo", "evaluation"),
        dataset=dataset or f"simulated {sim}",
        champion=champion,
        data=past,
    )
    mv1 = register_model(
        champion,
        past,
        work_dir=work / "v1",
        alias=registry.CHAMPION,
        metrics={f"test_{k}": v for k, v in candidates["xgboost"].test.items()},
    )
    summary["champion"] = {"version": mv1.version, "threshold": champion.threshold, "report": str(report)}

    # 4. serve in-process: the new weeks' first transactions, labels a week later, a bad request, /metrics
    from fastapi.testclient import TestClient

    new = raw[raw[TIMESTAMP] >= raw[TIMESTAMP].min().normalize() + pd.Timedelta(days=split_day)]
    history = raw.loc[raw.index.isin(past.index)]
    app = build_app(history, feature_cfg=cfg.features, refresh_interval_s=None)
    served = new.head(n_requests)
    alerts, statuses, example = 0, set(), None
    with TestClient(app) as client:
        for row in served.itertuples(index=False):
            body = {
                "tx_id": int(row.tx_id),
                "timestamp": row.timestamp.isoformat(),
                "customer_id": int(row.customer_id),
                "terminal_id": int(row.terminal_id),
                "amount": float(row.amount),
            }
            r = client.post("/v1/transactions/score", json=body)
            statuses.add(r.status_code)
            alerts += r.json().get("decision") == "alert"
            if example is None or r.json().get("decision") == "alert":
                example = r.json()
        labels = [{"tx_id": int(t), "label": int(lab)} for t, lab in zip(served[TX_ID], served[LABEL], strict=True)]
        lab = client.post("/v1/labels", json={"labels": labels}).json()
        bad = client.post(
            "/v1/transactions/score",
            json={"tx_id": 1, "timestamp": "yesterday-ish", "customer_id": 1, "terminal_id": 2, "amount": -5},
        )
        metrics_text = client.get("/metrics").text
    summary["serve"] = {
        "requests": len(served),
        "statuses": sorted(statuses),
        "alerts": alerts,
        "example_response": example,
        "labels": lab,
        "bad_request": {"status": bad.status_code, "message": bad.json().get("message")},
        "metrics_lines": sum(ln.startswith("mlref_") for ln in metrics_text.splitlines()),
        "alert_precision_from_logs": alert_precision_from_logs(),
    }
    log.info(
        "served %d transactions (%d alerts); bad request -> %s %s",
        len(served),
        alerts,
        bad.status_code,
        bad.json().get("message"),
    )

    # 5. batch-score the new weeks from a file (streamed in chunks, history carried across chunks)
    src = work / "new_transactions.parquet"
    write_table(new[[c for c in SCHEMA.names if c in new.columns and c not in (SCENARIO, LABEL)]], src)
    model = registry.load(MODEL_NAME, registry.CHAMPION, load_model)[0]
    scorer = BatchScorer(model, cfg.features, history=history, reasons=True)
    res = batch.score_file(src, work / "scored.parquet", scorer, chunksize=20_000, progress=False)
    scored = pd.read_parquet(res.output)
    summary["batch"] = {
        "rows": res.rows,
        "chunks": res.chunks,
        "seconds": round(res.seconds, 2),
        "rows_per_s": round(res.rows / max(res.seconds, 1e-9)),
        "alerts_per_day": round(float((scored["decision"] == "alert").sum() / new_days), 1),
    }

    # 6. drift: amounts x1.5 in the new weeks; monitor the last labelled-or-not week against the reference
    drifted_raw = raw.copy()
    is_new = drifted_raw[TX_ID].isin(new[TX_ID])
    drifted_raw.loc[is_new, AMOUNT] = np.round(drifted_raw.loc[is_new, AMOUNT] * DRIFT_FACTOR, 2)
    drifted = prepare(drifted_raw, cfg.features)
    recent = drifted[drifted[DAY] > last_day - 7]
    mdir = registry.fetch_model_dir(mv1)
    monitor_dir = new_report_dir(APP, dataset or "simulated-demo", "monitor")
    drift_report = monitor(model, mdir, recent, monitor_dir, model_version=str(mv1.version))
    labelled_week = recent_window(drifted, 7, cfg.features.delay_days)
    summary["monitor"] = {
        "drift": drift_report.drift,
        "drifted_features": drift_report.drifted_features,
        "prediction_drift": drift_report.prediction_drift,
        "alerts": drift_report.alerts,
        "champion_on_latest_labelled_week": {k: round(v, 4) for k, v in window_metrics(model, labelled_week).items()},
        "report": str(monitor_dir / "drift.md"),
    }
    log.info("monitor: drift=%s %s", drift_report.drift, drift_report.drifted_features)

    # 7. weekly retrain on the drifted weeks, champion vs challenger on the most recent labelled week
    decision = retrain(drifted, cfg, work_dir=work / "v2", params=params)
    summary["retrain"] = {
        k: decision.to_dict()[k]
        for k in (
            "champion_version",
            "challenger_version",
            "metric",
            "champion_score",
            "challenger_score",
            "promoted",
            "reason",
        )
    }
    summary["champion_after"] = registry.get(MODEL_NAME, registry.CHAMPION).version
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(out_dir / "demo.json", summary)
    return summary
