"""The fraud benchmark: handbook protocol on the reference-size simulation, latency and batch throughput.

Writes ``bench/results/fraud.json`` (``--dataset FILE``: ``bench/results/fraud-<file name>.json``, never the
reference result)::

    {"app", "dataset", "protocol", "models": {name: {"metrics", "train_s", "predict_s", "params"}},
     "anchors": the handbook's numbers, "latency": in-process and HTTP, "throughput": batch vs raw xgboost,
     "machine": common.config.machine_info()}

``--draws N`` (N >= 2) evaluates on N simulator draws (seeds ``0 .. N-1``, reference size) instead of one:
``models`` then holds, per model, the mean over draws of each draw's mean over its test folds, ``<metric>_std``
the standard deviation *across draws* and ``<metric>_fold_std`` the mean over draws of the std *across folds*;
``draws`` holds each draw's numbers and ``feature_groups`` the AP gain of each feature group over the handbook's
15 features (paired by draw). Latency and throughput are measured on the first draw.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import APP, MODEL_NAME, FraudConfig, SimulationConfig
from apps.fraud.data import DAY, LABEL, SCHEMA, TIMESTAMP, load
from apps.fraud.evaluate import metric_names, start_day_for_test
from apps.fraud.features import FEATURE_GROUPS, OnlineFeatureStore, Transaction, feature_names
from apps.fraud.lifecycle import report_selection, select_models
from apps.fraud.model import FraudModel
from apps.fraud.service import BatchScorer, FraudScorer, latency_percentiles
from apps.fraud.train import Candidate, grid_search, prepare, score_test, score_validation, train_model
from common import batch, registry, serving
from common.app import Fitted
from common.cli import bench_output
from common.config import machine_info
from common.data import DataError, write_table
from common.reports import new_report_dir, write_json
from common.workspace import Workspace
from mlref_testing.probe import load as load_test

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


# The handbook's chapter-5 XGBoost grid (ModelSelection notebook), fitted as the xgboost it ran (1.x) fitted by
# default: exact greedy splits (its "auto" below 4 M rows), base_score 0.5, no row or column subsampling.
HANDBOOK_XGB_GRID: dict[str, list[Any]] = {
    "max_depth": [2, 3, 5],
    "n_estimators": [25, 50, 100],
    "learning_rate": [0.05, 0.1],
    "tree_method": ["exact"],
    "base_score": [0.5],
    "subsample": [1.0],
    "colsample_bytree": [1.0],
    "min_child_weight": [1.0],
    "reg_lambda": [1.0],
    "gamma": [0.0],
}
HANDBOOK_LOGREG_GRID: dict[str, list[Any]] = {"C": [0.1, 1, 10, 100]}


def _candidate(
    prepared: pd.DataFrame, kind: str, params: dict[str, Any], features: list[str], cfg: FraudConfig, seed: int
) -> Candidate:
    """``params`` as they are, on validation and test folds."""
    c = Candidate(kind, {**params, "features": len(features)})
    c.validation = score_validation(prepared, kind, params, features, cfg.protocol, seed=seed)
    c.test, c.test_folds = score_test(prepared, kind, params, features, cfg.protocol, seed=seed)
    return c


def draw_models(
    prepared: pd.DataFrame,
    cfg: FraudConfig,
    *,
    tune_trials: int = 0,
    seed: int = 0,
    groups: tuple[str, ...] = FEATURE_GROUPS,
) -> dict[str, Candidate]:
    """The models compared on every draw: the default model (``xgboost``: the config's parameters, or tuned with
    ``tune_trials`` Optuna trials on the validation folds), the same on the handbook's 15 features, on those 15
    plus one feature group (each of ``groups``), the handbook's own XGBoost (its chapter-5 grid, selected on
    validation AP, 15 features) and its logistic regression (same grid and selection as the handbook)."""
    hb_cfg = replace(cfg.features, extended=False)
    hb = feature_names(hb_cfg)
    out = select_models(prepared, cfg, kinds=("xgboost",), tune_trials=tune_trials, seed=seed)
    params = {k: v for k, v in out["xgboost"].params.items() if k != "features"}
    out["xgboost_handbook_features"] = _candidate(prepared, "xgboost", params, hb, cfg, seed)
    for g in groups:
        names = feature_names(replace(cfg.features, extended=True, groups=(g,)))
        out[f"xgboost_handbook_features+{g}"] = _candidate(prepared, "xgboost", params, names, cfg, seed)
    out["handbook_xgboost_grid"] = grid_search(prepared, "xgboost", HANDBOOK_XGB_GRID, hb, cfg.protocol, seed=seed)
    out["handbook_logreg_grid"] = grid_search(prepared, "logreg", HANDBOOK_LOGREG_GRID, hb, cfg.protocol, seed=seed)
    return out


def summarise_draws(per_draw: list[dict[str, Candidate]], top_k: int = 100) -> dict[str, dict[str, Any]]:
    """Per model: ``metrics`` = mean over draws of the test-fold means, ``<m>_std`` = sample std across draws,
    ``<m>_fold_std`` = mean over draws of the std across test folds; ``per_draw`` = each draw's test means."""
    names = metric_names(top_k)
    out: dict[str, dict[str, Any]] = {}
    for name in per_draw[0]:
        test = pd.DataFrame([d[name].test for d in per_draw])
        valid = pd.DataFrame([d[name].validation for d in per_draw])
        n = len(test)
        metrics: dict[str, float] = {}
        for m in names:
            metrics[m] = round(float(test[m].mean()), 4)
            metrics[f"{m}_std"] = round(float(test[m].std(ddof=1)), 4) if n > 1 else 0.0
            metrics[f"{m}_fold_std"] = round(float(test[f"{m}_std"].mean()), 4)
        params = [d[name].params for d in per_draw]
        out[name] = {
            "metrics": metrics,
            "validation": {m: round(float(valid[m].mean()), 4) for m in names},
            "per_draw": [{m: round(float(test[m].iloc[i]), 4) for m in names} for i in range(n)],
            "train_s": round(float(test["train_s"].mean()), 3),
            "predict_s": round(float(test["predict_s"].mean()), 3),
            "params": params[0] if all(p == params[0] for p in params) else params,
            "kind": per_draw[0][name].kind,
        }
    return out


def group_gains(per_draw: list[dict[str, Candidate]], cfg: FraudConfig) -> dict[str, dict[str, Any]]:
    """AP (and CP@k) gain of each feature group over the handbook's 15 features, paired by draw: mean and std."""
    k = f"card_precision@{cfg.protocol.top_k}"
    out = {}
    for name in per_draw[0]:
        if not name.startswith("xgboost_handbook_features+"):
            continue
        g = name.split("+", 1)[1]
        ap = np.array(
            [
                d[name].test["average_precision"] - d["xgboost_handbook_features"].test["average_precision"]
                for d in per_draw
            ]
        )
        cp = np.array([d[name].test[k] - d["xgboost_handbook_features"].test[k] for d in per_draw])
        n_hb = len(feature_names(replace(cfg.features, extended=False)))
        out[g] = {
            "features": feature_names(replace(cfg.features, extended=True, groups=(g,)))[n_hb:],
            "ap_gain": round(float(ap.mean()), 4),
            "ap_gain_std": round(float(ap.std(ddof=1)), 4) if len(ap) > 1 else 0.0,
            "cp_gain": round(float(cp.mean()), 4),
            "per_draw_ap_gain": [round(float(x), 4) for x in ap],
        }
    return out


def evaluate_draws(
    cfg: FraudConfig,
    seeds: list[int],
    *,
    tune_trials: int = 0,
    sim: SimulationConfig | None = None,
    groups: tuple[str, ...] = FEATURE_GROUPS,
    cache_dir: Path | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """:func:`draw_models` on one simulation per seed (``sim``, default ``cfg.simulation``, with that seed;
    cached in ``cache_dir`` when given).

    Returns the across-draw part of the result JSON (``models``, ``draws``, ``feature_groups``) and the first
    draw's raw transactions (for the latency and throughput measurements)."""
    sim = sim or cfg.simulation
    per_draw, details, first_raw = [], [], None
    for s in seeds:
        t0 = time.perf_counter()
        raw = load(None, sim=replace(sim, seed=s), cache_dir=cache_dir)
        prepared = prepare(raw, replace(cfg.features, groups=tuple(dict.fromkeys((*cfg.features.groups, *groups)))))
        prep_s = time.perf_counter() - t0
        per_draw.append(draw_models(prepared, cfg, tune_trials=tune_trials, seed=0, groups=groups))
        details.append(
            {
                "seed": s,
                "transactions": len(raw),
                "fraud_rate": round(float(raw[LABEL].mean()), 5),
                "simulate_and_features_s": round(prep_s, 2),
                "evaluate_s": round(time.perf_counter() - t0 - prep_s, 1),
            }
        )
        log.info("draw seed %d: %s", s, {n: round(c.test["average_precision"], 4) for n, c in per_draw[-1].items()})
        if first_raw is None:
            first_raw = raw
    part = {
        "models": summarise_draws(per_draw, cfg.protocol.top_k),
        "draws": {
            "n": len(seeds),
            "seeds": list(seeds),
            "simulation": {k: v for k, v in asdict(sim).items() if k != "seed"},
            "per_draw": details,
            "std": "metric_std: sample std (ddof=1) across draws of each draw's mean over its test folds; "
            "metric_fold_std: mean over draws of the std across that draw's test folds",
        },
        "feature_groups": group_gains(per_draw, cfg),
    }
    assert first_raw is not None
    return part, first_raw


def in_process_latency(
    model: FraudModel,
    history: pd.DataFrame,
    stream: pd.DataFrame,
    cfg: FraudConfig,
) -> dict[str, Any]:
    """Single-transaction path timed in-process: online features + predict (+ reasons for alerts, the default),
    the same with reasons for every transaction, and the model's predict alone."""
    scorer = FraudScorer(OnlineFeatureStore.from_history(history, cfg.features), cfg.serving)
    txs = [
        Transaction(int(r.tx_id), r.timestamp, int(r.customer_id), int(r.terminal_id), float(r.amount))
        for r in stream.itertuples(index=False)
    ]
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
    return {
        "score_path": latency_percentiles(full),
        "score_path_always_explained": latency_percentiles(explained),
        "model_predict_only": latency_percentiles(predict_only),
    }


def http_latency(
    home: Path,
    history_path: Path,
    stream: pd.DataFrame,
    *,
    rate: float = 200.0,
    n_requests: int = 2000,
    n_clients: int = 8,
    refresh_interval: float = 5.0,
) -> dict[str, Any]:
    """Latency over real HTTP at a steady rate: ``python -m apps.fraud serve`` in a subprocess (uvicorn,
    127.0.0.1, free port), loaded by :func:`mlref_testing.probe.load.run_load` from another process: request ``i`` is
    due at ``t0 + i / rate`` and its latency is measured from that due time (queueing included: no coordinated
    omission). The machine's load average before and after is recorded beside the percentiles: on a shared
    machine the tail is the neighbours' work as much as the service's."""
    import http.client

    port = serving.free_port()
    env = {**os.environ, "MLREF_HOME": str(home), "MLREF_PORT": str(port), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "apps.fraud",
        "serve",
        "--dataset",
        str(history_path),
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--refresh-interval",
        str(refresh_interval),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    bodies = [
        {
            "tx_id": _json_id(r.tx_id),
            "timestamp": r.timestamp.isoformat(),
            "customer_id": _json_id(r.customer_id),
            "terminal_id": _json_id(r.terminal_id),
            "amount": float(r.amount),
        }
        for r in stream.head(n_requests + 50).itertuples(index=False)
    ]
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
            c.request(
                "POST", "/v1/transactions/score", body=json.dumps(b), headers={"Content-Type": "application/json"}
            )
            c.getresponse().read()
        c.close()
        res = load_test.run_load(
            f"http://127.0.0.1:{port}",
            "/v1/transactions/score",
            bodies[50:],
            rate=rate,
            n=len(bodies) - 50,
            clients=n_clients,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        **res.to_dict(),
        "n": res.requests,
        "non_200": res.errors,
        "registry_poll_interval_s": refresh_interval,
        "server": "uvicorn (httptools + uvloop when installed), 1 process, subprocess; "
        "client: mlref_testing.probe.load in its own process, threads + http.client keep-alive",
    }


def _json_id(value: Any) -> Any:
    """An id as the API takes it: strings as they are, numbers as integers."""
    return value if isinstance(value, str) else int(value)


def throughput(
    model: FraudModel,
    history: pd.DataFrame,
    rows: pd.DataFrame,
    prepared_rows: pd.DataFrame,
    work: Path,
    cfg: FraudConfig,
    *,
    repeats: int = 5,
) -> dict[str, Any]:
    """Batch scoring (file -> features -> model -> file, chunked) vs raw xgboost predict on the same rows,
    ``repeats`` times each, interleaved (single runs moved the ratio by 0.2-0.3 with the raw predict's speed);
    rates and ``overhead_ratio`` from the medians."""
    src = work / "batch_input.parquet"
    write_table(rows[[c for c in SCHEMA.names if c in rows.columns and c != "scenario"]], src)
    X = prepared_rows[model.features].to_numpy(dtype=np.float32)
    batch_s, raw_s = [], []
    for _ in range(repeats):  # side by side, interleaved: both see the same machine
        res = batch.score_file(
            src,
            work / "batch_output.parquet",
            BatchScorer(model, cfg.features, history=history),
            chunksize=100_000,
            progress=False,
        )
        batch_s.append(res.seconds)
        t0 = time.perf_counter()
        model.estimator.inplace_predict(X, validate_features=False)
        raw_s.append(time.perf_counter() - t0)
    ours = res.rows / float(np.median(batch_s))
    raw = len(X) / float(np.median(raw_s))
    return {
        "rows": res.rows,
        "repeats": repeats,
        "batch_s": [round(v, 3) for v in batch_s],
        "raw_xgboost_predict_s": [round(v, 3) for v in raw_s],
        "batch_tx_per_s": ours,
        "raw_xgboost_predict_tx_per_s": raw,
        "overhead_ratio": raw / ours,
        "xgboost_nthread": int(cfg.xgb.n_jobs),
    }


def serve_and_time(
    raw: pd.DataFrame,
    prepared: pd.DataFrame,
    cfg: FraudConfig,
    xgb_params: dict[str, Any],
    *,
    seed: int = 0,
    http_requests: int = 2000,
) -> tuple[FraudModel, dict[str, Any], dict[str, Any]]:
    """``(model, latency, throughput)``: the serving model (xgboost with ``xgb_params``, trained on the week before
    the first test fold's test days), registered through the pipeline in a workspace of its own, timed in
    process, over HTTP and in batch on the stream that follows its training days."""
    from apps.fraud.pipeline import APP_IMPL, Transactions

    n_days = int(prepared[DAY].max()) + 1
    start = start_day_for_test(cfg.protocol, n_days)
    end_day = start + cfg.protocol.delta_train - 1
    model = train_model(prepared, cfg, params=xgb_params, end_day=end_day, seed=seed)
    split_day = end_day + 1 + cfg.features.delay_days  # the stream starts where that fold's test days start
    split_ts = raw[TIMESTAMP].min().normalize() + pd.Timedelta(days=split_day)
    history, stream = raw[raw[TIMESTAMP] < split_ts], raw[raw[TIMESTAMP] >= split_ts]
    with tempfile.TemporaryDirectory(prefix="mlref-fraud-bench-") as tmp:
        work = Path(tmp)
        # a workspace of its own for the served model (registry, journal, logs), without touching os.environ
        ws = Workspace.at(work / "home")
        with ws.activate():
            data = Transactions(prepared, "bench")
            APP_IMPL.register(ws, Fitted(model), data, cfg, dataset="bench", alias=registry.CHAMPION)
            served = FraudModel.load(registry.fetch_model_dir(registry.get(MODEL_NAME)), nthread=1)
            latency = {"in_process": in_process_latency(served, history, stream.head(3000), cfg)}
            hist_path = work / "history.parquet"
            write_table(
                history[history[TIMESTAMP] > split_ts - pd.Timedelta(days=cfg.features.history_days + 1)], hist_path
            )
            try:
                latency["http"] = http_latency(work / "home", hist_path, stream, n_requests=http_requests)
            except Exception as exc:
                log.exception("HTTP latency benchmark failed")
                latency["http"] = {"error": f"{type(exc).__name__}: {exc}"}
            n_batch_days = 28
            rows = stream[stream[TIMESTAMP] < split_ts + pd.Timedelta(days=n_batch_days)]
            thr = throughput(model, history, rows, prepared.loc[rows.index], work, cfg)
    return model, latency, thr


def _recorded_xgb_params(models: dict[str, Any]) -> dict[str, Any]:
    """The default xgboost's parameters as a results file records them (one dict, or one per draw: the first),
    without the feature list."""
    params = models["xgboost"]["params"]
    params = params if isinstance(params, dict) else params[0]
    return {k: v for k, v in params.items() if k != "features"}


def run_serving_only(
    out_path: Path | None = None, *, http_requests: int = 2000, seed: int = 0, ws: Workspace | None = None
) -> dict[str, Any]:
    """Re-measure latency and throughput into an existing results file (``bench --serving-only``): the reference
    draw (seed of the config) is simulated again and the serving model is retrained with the xgboost parameters
    the file records, so that serving figures can be refreshed without the 36-minute model comparison."""
    cfg = FraudConfig()
    path = bench_output(APP, None, None, out_path)
    if not path.exists():
        raise DataError(f"{path} does not exist: run `python -m apps.fraud bench` first")
    doc = json.loads(path.read_text())
    raw = _transactions(ws, None, cfg)
    prepared = prepare(raw, cfg.features)
    _, latency, thr = serve_and_time(
        raw, prepared, cfg, _recorded_xgb_params(doc["models"]), seed=seed, http_requests=http_requests
    )
    doc.update(latency=latency, throughput=thr, serving_machine=machine_info())
    write_json(path, doc)
    log.info("updated latency and throughput in %s", path)
    return doc


def _cache(ws: Workspace | None) -> Path:
    from apps.fraud.pipeline import APP_IMPL

    return APP_IMPL.cache_dir(ws or Workspace.from_env())


def _transactions(ws: Workspace | None, dataset: str | None, cfg: FraudConfig) -> pd.DataFrame:
    """The pipeline's data: ``dataset`` or the simulated world of ``cfg`` (cached in the workspace)."""
    from apps.fraud.pipeline import APP_IMPL

    return APP_IMPL.transactions(ws or Workspace.from_env(), dataset, cfg)


def run(
    *,
    tune_trials: int | None = None,
    out_path: Path | None = None,
    dataset: str | None = None,
    http_requests: int = 2000,
    seed: int = 0,
    draws: int = 1,
    ws: Workspace | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write the JSON; returns it. ``tune_trials``: Optuna trials for XGBoost (default 20
    on one draw, 0 = the config's parameters across draws). ``draws`` >= 2: see the module docstring."""
    cfg = FraudConfig()
    if draws < 1:
        raise DataError(f"--draws must be >= 1, got {draws}")
    if draws > 1 and dataset is not None:
        raise DataError("--draws evaluates several simulator draws; it cannot be combined with --dataset")
    if tune_trials is None:
        tune_trials = 20 if draws == 1 else 0
    across: dict[str, Any] = {}
    t0 = time.perf_counter()
    if draws > 1:
        seeds = [cfg.simulation.seed + i for i in range(draws)]
        across, raw = evaluate_draws(cfg, seeds, tune_trials=tune_trials, cache_dir=_cache(ws))
        sim_s = across["draws"]["per_draw"][0]["simulate_and_features_s"]  # draw 0's simulation (+ features)
    else:
        raw = _transactions(ws, dataset, cfg)
        sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = prepare(raw, cfg.features)
    feat_s = time.perf_counter() - t0
    n_days = int(prepared[DAY].max()) + 1

    if draws > 1:
        candidates = {}
        models = across.pop("models")
        xgb_params = _recorded_xgb_params(models)
    else:
        candidates = select_models(prepared, cfg, tune_trials=tune_trials, extras=True, seed=seed)
        models = {
            name: {
                "metrics": {k: round(v, 4) for k, v in c.test.items() if k not in ("train_s", "predict_s")},
                "validation": {k: round(v, 4) for k, v in c.validation.items() if k not in ("train_s", "predict_s")},
                "train_s": round(c.test["train_s"], 3),
                "predict_s": round(c.test["predict_s"], 3),
                "params": c.params,
                "kind": c.kind,
            }
            for name, c in candidates.items()
        }
        xgb_params = candidates["xgboost"].params

    model, latency, thr = serve_and_time(raw, prepared, cfg, xgb_params, seed=seed, http_requests=http_requests)
    report = None
    if candidates:
        report = report_selection(
            candidates,
            cfg,
            new_report_dir(APP, dataset or "simulated-reference", "bench"),
            dataset=dataset or "reference simulation",
            champion=model,
            data=prepared,
        )

    p = cfg.protocol
    if draws > 1:
        n_tx = [d["transactions"] for d in across["draws"]["per_draw"]]
        sim = cfg.simulation
        dataset_line = (
            f"{draws} draws of the handbook simulator ({sim.n_customers:,} customers, {sim.n_terminals:,} "
            f"terminals, seeds {across['draws']['seeds'][0]}-{across['draws']['seeds'][-1]}): "
            f"{min(n_tx):,}-{max(n_tx):,} transactions each, {n_days} days"
        )
        spread = f"mean over {draws} draws ± std across draws (in brackets: ± std across folds)"
    else:
        dataset_line = (
            dataset
            or f"simulated transactions (handbook simulator, reference size): {len(raw):,} "
            f"transactions, {raw['label'].mean():.2%} fraud, {n_days} days"
        )
        spread = "mean ± std"
    result = {
        "app": APP,
        "dataset": dataset_line,
        "protocol": (
            f"handbook prequential: train {p.delta_train} d, delay {p.delta_delay} d, test {p.delta_test} d, "
            f"{p.n_folds} test folds ({spread}); parameters chosen on {p.n_folds} validation folds by AP; "
            f"CP@{p.top_k} per day, detected cards removed"
        ),
        "dataset_details": {
            "simulation": asdict(cfg.simulation),
            "transactions": len(raw),
            "fraud_rate": round(float(raw["label"].mean()), 5),
            "days": n_days,
            "simulate_s": round(sim_s, 2),
            "features_s": round(feat_s, 2),
        },
        "protocol_details": {
            **asdict(p),
            "selection": "validation folds, average precision",
            "xgboost_tuning_trials": tune_trials,
            "features": model.features,
        },
        "models": models,
        **across,
        "published": {f"handbook {k}": v for k, v in ANCHORS.items() if k in ("xgboost", "random_forest", "logreg")},
        "anchors": ANCHORS,
        "latency": latency,
        "throughput": thr,
        "machine": machine_info(),
    }
    out_path = bench_output(APP, dataset, None, out_path)  # another dataset: bench/results/fraud-<name>.json
    write_json(out_path, result)
    log.info("wrote %s (report: %s)", out_path, report)
    return result
