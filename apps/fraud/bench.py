"""The fraud benchmark: handbook protocol on the reference-size simulation, latency and batch throughput.

Writes ``bench/results/fraud.json``::

    {"app", "dataset", "protocol", "models": {name: {"metrics", "train_s", "predict_s", "params"}},
     "anchors": the handbook's numbers, "latency": in-process and HTTP, "throughput": batch vs raw xgboost,
     "machine": common.config.machine_info()}
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import APP, MODEL_NAME, FraudConfig
from apps.fraud.data import DAY, SCHEMA, TIMESTAMP, load
from apps.fraud.evaluate import start_day_for_test
from apps.fraud.features import OnlineFeatureStore, Transaction
from apps.fraud.lifecycle import register_model, report_selection, select_models
from apps.fraud.model import FraudModel
from apps.fraud.service import BatchScorer, FraudScorer, latency_percentiles
from apps.fraud.train import prepare, train_model
from common import batch, registry
from common.config import machine_info
from common.data import write_table
from common.reports import write_json

log = logging.getLogger(__name__)

# The handbook's prequential test results with parameters chosen on validation (chapter 5.3 / 6 summary).
ANCHORS = {
    "source": "Le Borgne et al., Reproducible Machine Learning for Credit Card Fraud Detection - Practical "
              "Handbook, chapter 5.3 (model selection), simulated data",
    "xgboost": {"roc_auc": 0.869, "average_precision": 0.687, "card_precision@100": 0.303},
    "random_forest": {"roc_auc": 0.870, "average_precision": 0.678, "card_precision@100": 0.299},
    "logreg": {"roc_auc": 0.868, "average_precision": 0.623, "card_precision@100": 0.297},
    "best_any_chapter": {"average_precision": [0.687, 0.694], "card_precision@100": 0.305},
    "targets": {"roc_auc": 0.87, "average_precision": 0.70, "card_precision@100": 0.31},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process_latency(model: FraudModel, history: pd.DataFrame, stream: pd.DataFrame, cfg: FraudConfig,
                       ) -> dict[str, Any]:
    """Single-transaction path timed in-process: online features + predict (+ reasons for alerts, the default),
    the same with reasons for every transaction, and the model's predict alone."""
    scorer = FraudScorer(OnlineFeatureStore.from_history(history, cfg.features), cfg.serving)
    txs = [Transaction(int(r.tx_id), r.timestamp, int(r.customer_id), int(r.terminal_id), float(r.amount))
           for r in stream.itertuples(index=False)]
    for tx in txs[:50]:  # warm-up (not timed)
        scorer.score(tx, model)
    full, explained, predict_only = [], [], []
    for i, tx in enumerate(txs[50:]):
        t0 = time.perf_counter()
        scorer.score(tx, model, reasons=True if i % 2 else None)  # odd: always explained; even: the default
        (explained if i % 2 else full).append(time.perf_counter() - t0)
    x = scorer.store.features(txs[-1])
    for _ in range(len(full)):
        t0 = time.perf_counter()
        model.predict_proba(x)
        predict_only.append(time.perf_counter() - t0)
    return {"score_path": latency_percentiles(full), "score_path_always_explained": latency_percentiles(explained),
            "model_predict_only": latency_percentiles(predict_only)}


def http_latency(home: Path, history_path: Path, stream: pd.DataFrame, *, rate: float = 200.0,
                 n_requests: int = 2000, n_clients: int = 8, refresh_interval: float = 5.0) -> dict[str, Any]:
    """Latency over real HTTP at a steady rate: ``python -m apps.fraud serve`` in a subprocess (uvicorn,
    127.0.0.1, free port); request ``i`` is due at ``t0 + i / rate`` and ``n_clients`` threads with keep-alive
    ``http.client`` connections (a light client, so the load generator does not eat the server's CPU) send each
    one when due. Latency is measured from the due time (queueing included: no coordinated omission)."""
    import http.client
    import threading

    port = _free_port()
    env = {**os.environ, "MLREF_HOME": str(home), "MLREF_PORT": str(port), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "apps.fraud", "serve", "--dataset", str(history_path), "--port", str(port),
           "--log-level", "warning", "--refresh-interval", str(refresh_interval)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    bodies = [json.dumps({"tx_id": int(r.tx_id), "timestamp": r.timestamp.isoformat(),
                          "customer_id": int(r.customer_id), "terminal_id": int(r.terminal_id),
                          "amount": float(r.amount)})
              for r in stream.head(n_requests + 50).itertuples(index=False)]
    headers = {"Content-Type": "application/json"}

    def post(conn: http.client.HTTPConnection, body: str) -> int:
        conn.request("POST", "/v1/transactions/score", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status

    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/readyz")
                ready = c.getresponse()
                ready.read()
                if ready.status == 200:
                    break
                c.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 180 s")
            time.sleep(0.25)
        for b in bodies[:50]:  # warm-up, not timed
            post(c, b)
        c.close()
        timed = bodies[50:]
        lat = [0.0] * len(timed)
        codes = [0] * len(timed)
        next_i = iter(range(len(timed)))
        lock = threading.Lock()
        t_start = time.perf_counter() + 0.2

        def worker() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    break
                due = t_start + i / rate
                if (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
                codes[i] = post(conn, timed[i])
                lat[i] = time.perf_counter() - due
            conn.close()

        threads = [threading.Thread(target=worker) for _ in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t_start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {**latency_percentiles(lat), "target_rate_per_s": rate, "achieved_rate_per_s": len(lat) / elapsed,
            "non_200": int(sum(c != 200 for c in codes)), "clients": n_clients,
            "registry_poll_interval_s": refresh_interval,
            "server": "uvicorn (httptools + uvloop when installed), 1 process, subprocess; "
                      "client: threads + http.client keep-alive"}


def throughput(model: FraudModel, history: pd.DataFrame, rows: pd.DataFrame, prepared_rows: pd.DataFrame,
               work: Path, cfg: FraudConfig) -> dict[str, Any]:
    """Batch scoring (file -> features -> model -> file, chunked) vs raw xgboost predict on the same rows."""
    src = work / "batch_input.parquet"
    write_table(rows[[c for c in SCHEMA.names if c in rows.columns and c != "scenario"]], src)
    res = batch.score_file(src, work / "batch_output.parquet", BatchScorer(model, cfg.features, history=history),
                           chunksize=100_000, progress=False)
    X = prepared_rows[model.features].to_numpy(dtype=np.float32)
    t0 = time.perf_counter()
    model.estimator.inplace_predict(X, validate_features=False)
    raw_s = time.perf_counter() - t0
    ours = res.rows / res.seconds
    raw = len(X) / raw_s
    return {"rows": res.rows, "batch_tx_per_s": ours, "raw_xgboost_predict_tx_per_s": raw,
            "overhead_ratio": raw / ours, "xgboost_nthread": int(cfg.xgb.n_jobs)}


def run(*, tune_trials: int = 20, out_path: Path | None = None, dataset: str | None = None,
        http_requests: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Run the benchmark and write the JSON; returns it."""
    cfg = FraudConfig()
    t0 = time.perf_counter()
    raw = load(dataset, sim=cfg.simulation)
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = prepare(raw, cfg.features)
    feat_s = time.perf_counter() - t0
    n_days = int(prepared[DAY].max()) + 1

    candidates = select_models(prepared, cfg, tune_trials=tune_trials, extras=True, seed=seed)
    models = {
        name: {"metrics": {k: round(v, 4) for k, v in c.test.items() if k not in ("train_s", "predict_s")},
               "validation": {k: round(v, 4) for k, v in c.validation.items() if k not in ("train_s", "predict_s")},
               "train_s": round(c.test["train_s"], 3), "predict_s": round(c.test["predict_s"], 3),
               "params": c.params, "kind": c.kind}
        for name, c in candidates.items()
    }

    # serving model: the tuned xgboost trained on the week before the first test fold's test days
    start = start_day_for_test(cfg.protocol, n_days)
    end_day = start + cfg.protocol.delta_train - 1
    model = train_model(prepared, cfg, params=candidates["xgboost"].params, end_day=end_day, seed=seed)
    split_day = end_day + 1 + cfg.features.delay_days  # the stream starts where that fold's test days start
    split_ts = raw[TIMESTAMP].min().normalize() + pd.Timedelta(days=split_day)
    history, stream = raw[raw[TIMESTAMP] < split_ts], raw[raw[TIMESTAMP] >= split_ts]

    from common.config import get_settings

    report = report_selection(candidates, cfg, get_settings().path("reports", APP, "bench", "x").parent,
                              dataset="reference simulation", champion=model)
    with tempfile.TemporaryDirectory(prefix="mlref-fraud-bench-") as tmp:
        work = Path(tmp)
        old_home = os.environ.get("MLREF_HOME")
        os.environ["MLREF_HOME"] = str(work / "home")
        try:
            register_model(model, prepared, work_dir=work / "model", alias=registry.CHAMPION)
            served = FraudModel.load(registry.fetch_model_dir(registry.get(MODEL_NAME)), nthread=1)
            latency = {"in_process": in_process_latency(served, history, stream.head(3000), cfg)}
            hist_path = work / "history.parquet"
            write_table(history[history[TIMESTAMP] > split_ts - pd.Timedelta(days=cfg.features.history_days + 1)],
                        hist_path)
            try:
                latency["http"] = http_latency(work / "home", hist_path, stream, n_requests=http_requests)
            except Exception as exc:  # noqa: BLE001 - record the failure, keep the rest of the benchmark
                log.exception("HTTP latency benchmark failed")
                latency["http"] = {"error": f"{type(exc).__name__}: {exc}"}
            n_batch_days = 28
            rows = stream[stream[TIMESTAMP] < split_ts + pd.Timedelta(days=n_batch_days)]
            thr = throughput(model, history, rows, prepared.loc[rows.index], work, cfg)
        finally:
            if old_home is None:
                os.environ.pop("MLREF_HOME", None)
            else:
                os.environ["MLREF_HOME"] = old_home

    p = cfg.protocol
    result = {
        "app": APP,
        "dataset": (dataset or f"simulated transactions (handbook simulator, reference size): {len(raw):,} "
                    f"transactions, {raw['label'].mean():.2%} fraud, {n_days} days"),
        "protocol": (f"handbook prequential: train {p.delta_train} d, delay {p.delta_delay} d, test {p.delta_test} d, "
                     f"{p.n_folds} test folds (mean ± std); parameters chosen on {p.n_folds} validation folds by AP; "
                     f"CP@{p.top_k} per day, detected cards removed"),
        "dataset_details": {"simulation": asdict(cfg.simulation), "transactions": len(raw),
                            "fraud_rate": round(float(raw["label"].mean()), 5), "days": n_days,
                            "simulate_s": round(sim_s, 2), "features_s": round(feat_s, 2)},
        "protocol_details": {**asdict(p), "selection": "validation folds, average precision",
                             "xgboost_tuning_trials": tune_trials, "features": model.features},
        "models": models,
        "published": {f"handbook {k}": v for k, v in ANCHORS.items() if k in ("xgboost", "random_forest", "logreg")},
        "anchors": ANCHORS,
        "latency": latency,
        "throughput": thr,
        "machine": machine_info(),
    }
    out_path = out_path or Path("bench/results/fraud.json")
    write_json(out_path, result)
    log.info("wrote %s (report: %s)", out_path, report)
    return result
