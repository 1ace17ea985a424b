"""``python -m apps.fraud <command>``: real-time card fraud scoring with delayed labels.

Every command works on the embedded simulator by default, or on your own transactions with ``--dataset PATH``
(CSV or parquet with columns ``tx_id,timestamp,customer_id,terminal_id,amount[,label]``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

import typer

from apps.fraud.config import (
    APP,
    DEMO_SIMULATION,
    MODEL_NAME,
    REFERENCE_SIMULATION,
    TINY_SIMULATION,
    FraudConfig,
    SimulationConfig,
)
from common import cli
from common.reports import write_json

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
log = logging.getLogger("apps.fraud")


class Size(StrEnum):
    reference = "reference"
    demo = "demo"
    tiny = "tiny"


SIZES = {Size.reference: REFERENCE_SIMULATION, Size.demo: DEMO_SIMULATION, Size.tiny: TINY_SIMULATION}
DatasetOpt = typer.Option(None, "--dataset", help="your transactions file (CSV/parquet); default: simulated")
SizeOpt = typer.Option(Size.reference, "--sim-size", help="simulation size when no --dataset is given")


def _setup(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _sim(size: Size, seed: int | None) -> SimulationConfig:
    sim = SIZES[size]
    return replace(sim, seed=seed) if seed is not None else sim


def _prepared(dataset: Path | None, size: Size, seed: int | None, cfg: FraudConfig, *, require_label: bool = True):
    from apps.fraud.data import load
    from apps.fraud.train import prepare

    raw = load(dataset, sim=_sim(size, seed), require_label=require_label)
    return raw, prepare(raw, cfg.features)


def _dump(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command()
def demo(
    dataset: Path | None = typer.Option(None, "--dataset", help="your labelled transactions (>= 70 days)"),
    sim_size: Size = typer.Option(Size.demo, "--sim-size", help="size of the simulated world"),
    tune: int = typer.Option(0, "--tune", help="Optuna trials for XGBoost (0: config defaults)"),
    seed: int | None = typer.Option(None, help="simulation seed"),
) -> None:
    """The whole lifecycle offline: evaluate, register, serve, batch, drift, monitor, retrain, promote or keep."""
    from apps.fraud import demo as demo_mod

    _setup()
    sim = _sim(sim_size, seed)
    summary = demo_mod.run(sim, tune_trials=tune, dataset=str(dataset) if dataset else None)
    _dump(summary)


@app.command()
def train(
    dataset: Path | None = DatasetOpt,
    sim_size: Size = SizeOpt,
    model: str = typer.Option("xgboost", help="xgboost | logreg | random_forest | decision_tree"),
    tune: int = typer.Option(0, "--tune", help="Optuna trials on the prequential validation folds (xgboost)"),
    n_estimators: int | None = typer.Option(None), max_depth: int | None = typer.Option(None),
    learning_rate: float | None = typer.Option(None),
    train_days: int = typer.Option(7, help="train on the latest labelled N days"),
    promote: bool | None = typer.Option(None, help="make it champion (default: only when there is none)"),
    scheduler: str | None = typer.Option(None, help="fit the final xgboost model on a Dask cluster with "
                                         "xgboost.dask: scheduler ADDRESS (tcp://host:8786) or 'local' "
                                         "(2 local worker processes); validation/tuning stay local"),
    seed: int | None = typer.Option(None),
) -> None:
    """Train on the latest labelled days, log the run, register a version (champion if none yet)."""
    from contextlib import ExitStack

    from apps.fraud.data import DAY
    from apps.fraud.features import feature_names
    from apps.fraud.lifecycle import register_model
    from apps.fraud.train import dask_client, score_validation, train_model, train_model_dask, tune_xgboost
    from common import registry
    from common.config import get_settings

    _setup()
    if scheduler and model != "xgboost":
        raise typer.BadParameter(f"only the xgboost model trains on Dask, not {model!r}", param_hint="--scheduler")
    with ExitStack() as stack:
        client = None
        if scheduler:  # connect first: an unreachable scheduler fails before minutes of validation
            try:
                client = stack.enter_context(dask_client(scheduler))
            except ConnectionError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from None
        cfg = FraudConfig()
        _, prepared = _prepared(dataset, sim_size, seed, cfg)
        params = cfg.xgb.params() if model == "xgboost" else {}
        for k, v in {"n_estimators": n_estimators, "max_depth": max_depth, "learning_rate": learning_rate}.items():
            if v is not None:
                params[k] = v
        features = feature_names(cfg.features)
        protocol = cfg.protocol.fitted(int(prepared[DAY].max()) + 1)
        if tune and model == "xgboost":
            cand = tune_xgboost(prepared, features, protocol, n_trials=tune, base=params)
            params, metrics = {**params, **cand.params}, cand.validation
        else:
            metrics = score_validation(prepared, model, params, features, protocol)
        if client is not None:
            fitted = train_model_dask(prepared, cfg, client=client, params=params, train_days=train_days)
        else:
            fitted = train_model(prepared, cfg, kind=model, params=params, train_days=train_days)
    has_champion = registry.find(MODEL_NAME, registry.CHAMPION) is not None
    alias = registry.CHAMPION if (promote or (promote is None and not has_champion)) else None
    work = get_settings().path("work", APP, "train", "x").parent
    mv = register_model(fitted, prepared, work_dir=work,
                        metrics={f"validation_{k}": v for k, v in metrics.items()}, alias=alias)
    out = {"version": mv.version, "aliases": mv.aliases, "params": params, "threshold": fitted.threshold,
           "validation": metrics}
    if "distributed" in fitted.info:
        out["distributed"] = fitted.info["distributed"] | {"fit_seconds": fitted.info["fit_seconds"]}
    _dump(out)


@app.command()
def evaluate(
    dataset: Path | None = DatasetOpt,
    sim_size: Size = SizeOpt,
    tune: int = typer.Option(0, "--tune", help="Optuna trials for XGBoost on the validation folds"),
    models: str = typer.Option("xgboost,logreg,random_forest,decision_tree", help="comma-separated kinds"),
    n_folds: int = typer.Option(4, help="prequential folds"),
    seed: int | None = typer.Option(None),
) -> None:
    """Handbook protocol (validation selects, test reports) for each model: metrics JSON + report."""
    from apps.fraud.lifecycle import log_selection, report_selection, results_table, select_models
    from common.config import get_settings

    _setup()
    from apps.fraud.data import DAY

    cfg = FraudConfig()
    _, prepared = _prepared(dataset, sim_size, seed, cfg)
    protocol = replace(cfg.protocol, n_folds=n_folds).fitted(int(prepared[DAY].max()) + 1)
    if protocol.n_folds < n_folds:
        log.warning("only %d days of data: using %d prequential folds", int(prepared[DAY].max()) + 1,
                    protocol.n_folds)
    cfg = replace(cfg, protocol=protocol)
    cands = select_models(prepared, cfg, kinds=tuple(models.split(",")), tune_trials=tune)
    out = get_settings().path("reports", APP, "x").parent
    path = report_selection(cands, cfg, out, dataset=str(dataset or f"simulated ({sim_size.value})"))
    log_selection(cands, cfg, str(dataset or sim_size.value))
    table = results_table(cands)
    write_json(out / "evaluation.json", table)
    _dump({"report": str(path), "results": table})


def _history(dataset: Path | None, size: Size, seed: int | None):
    from apps.fraud.data import load

    return load(dataset, sim=_sim(size, seed), require_label=False)


@app.command()
def serve(
    dataset: Path | None = typer.Option(None, "--dataset", help="past transactions that warm the online state"),
    sim_size: Size = SizeOpt,
    host: str | None = typer.Option(None), port: int | None = typer.Option(None),
    log_level: str = typer.Option("info"),
    refresh_interval: float = typer.Option(5.0, help="seconds between registry polls for a new champion"),
    seed: int | None = typer.Option(None),
) -> None:
    """Serve the champion over HTTP (uvicorn, 127.0.0.1); picks up a new champion without restart."""
    from apps.fraud.service import build_app
    from common.serving import serve as run_server

    _setup(log_level == "info")
    app_ = build_app(_history(dataset, sim_size, seed), refresh_interval_s=refresh_interval or None)
    run_server(app_, host=host, port=port, log_level=log_level)


@app.command()
def predict(
    tx_id: int = typer.Option(...), timestamp: str = typer.Option(..., help="ISO date-time"),
    customer_id: int = typer.Option(...), terminal_id: int = typer.Option(...), amount: float = typer.Option(...),
    dataset: Path | None = typer.Option(None, "--dataset", help="past transactions for the features"),
    sim_size: Size = SizeOpt, seed: int | None = typer.Option(None),
) -> None:
    """Score one transaction with the champion (features from the past transactions of --dataset)."""
    from fastapi.testclient import TestClient

    from apps.fraud.service import build_app

    _setup(False)
    app_ = build_app(_history(dataset, sim_size, seed), refresh_interval_s=None, log_predictions=False)
    body = {"tx_id": tx_id, "timestamp": timestamp, "customer_id": customer_id, "terminal_id": terminal_id,
            "amount": amount}
    with TestClient(app_) as client:
        r = client.post("/v1/transactions/score", json=body)
    _dump(r.json())
    if r.status_code != 200:
        raise typer.Exit(1)


@app.command()
def batch(
    input_path: Path = typer.Argument(..., help="transactions to score (CSV/parquet, sorted by timestamp)"),
    output_path: Path = typer.Argument(..., help="scores out: tx_id, score, decision[, reasons]"),
    history: Path | None = typer.Option(None, help="earlier transactions (with labels) for the features"),
    chunksize: int = typer.Option(100_000), reasons: bool = typer.Option(False, help="add top-3 reasons"),
    scheduler: str | None = typer.Option(None, help="ignored: feature history needs one ordered pass"),
) -> None:
    """Batch-score a file with the champion, chunked, with progress; output written atomically."""
    from apps.fraud.data import load
    from apps.fraud.service import BatchScorer, load_model
    from common import batch as common_batch
    from common import registry

    _setup()
    if scheduler:
        log.warning("--scheduler ignored: the fraud features need one time-ordered pass over the file")
    model, mv = registry.load(MODEL_NAME, registry.CHAMPION, load_model)
    hist = load(history, require_label=False) if history is not None else None
    res = common_batch.score_file(input_path, output_path, BatchScorer(model, FraudConfig().features, hist,
                                                                       reasons=reasons), chunksize=chunksize)
    _dump({"model_version": mv.version, "rows": res.rows, "chunks": res.chunks, "seconds": round(res.seconds, 2),
           "output": str(res.output)})


@app.command()
def monitor(
    dataset: Path | None = DatasetOpt, sim_size: Size = SizeOpt,
    days: int = typer.Option(7, help="the most recent N days are compared with the reference"),
    seed: int | None = typer.Option(None),
) -> None:
    """Feature and score drift of recent transactions vs the champion's training window; alert precision where
    labels are in. Exit code 1 when drift crosses the thresholds."""
    from apps.fraud.data import DAY
    from apps.fraud.lifecycle import alert_precision_from_logs
    from apps.fraud.lifecycle import monitor as run_monitor
    from apps.fraud.service import load_model
    from common import registry
    from common.config import get_settings

    _setup()
    cfg = FraudConfig()
    _, prepared = _prepared(dataset, sim_size, seed, cfg, require_label=False)
    model, mv = registry.load(MODEL_NAME, registry.CHAMPION, load_model)
    recent = prepared[prepared[DAY] > prepared[DAY].max() - days]
    out = get_settings().path("reports", APP, "monitor", "x").parent
    report, perf = run_monitor(model, registry.fetch_model_dir(mv), recent, out)
    _dump({"model_version": mv.version, "drift": report.drift, "drifted_features": report.drifted_features,
           "prediction_drift": report.prediction_drift, "report": str(out),
           "daily_performance": perf.to_dict(orient="records") if len(perf) else [],
           "served_alert_precision": alert_precision_from_logs()})
    raise typer.Exit(report.exit_code)


@app.command()
def retrain(
    dataset: Path | None = DatasetOpt, sim_size: Size = SizeOpt,
    margin: float = typer.Option(0.0, help="AP the challenger must gain over the champion"),
    seed: int | None = typer.Option(None),
) -> None:
    """Weekly challenger on the latest labelled weeks; promoted only if it beats the champion on the most recent
    labelled week."""
    from apps.fraud.lifecycle import retrain as run_retrain
    from common import registry
    from common.config import get_settings

    _setup()
    cfg = FraudConfig()
    cfg = replace(cfg, retrain=replace(cfg.retrain, margin=margin))
    _, prepared = _prepared(dataset, sim_size, seed, cfg)
    champion = registry.find(MODEL_NAME, registry.CHAMPION)
    params = None
    if champion is not None and champion.params.get("kind") == "xgboost":
        params = {k: type(v)(champion.params[k]) for k, v in cfg.xgb.params().items() if k in champion.params}
    decision = run_retrain(prepared, cfg, work_dir=get_settings().path("work", APP, "retrain", "x").parent,
                           params=params)
    _dump(decision.to_dict())


@app.command()
def bench(
    tune: int = typer.Option(20, "--tune", help="Optuna trials for XGBoost"),
    out: Path = typer.Option(Path("bench/results/fraud.json")),
    dataset: Path | None = typer.Option(None, "--dataset", help="default: the reference-size simulation"),
    http_requests: int = typer.Option(2000),
) -> None:
    """Reference-size benchmark: handbook protocol for all models, latency, throughput -> bench/results/fraud.json."""
    from apps.fraud import bench as bench_mod

    _setup()
    res = bench_mod.run(tune_trials=tune, out_path=out, dataset=str(dataset) if dataset else None,
                        http_requests=http_requests)
    _dump({name: m["metrics"] for name, m in res["models"].items()} | {"latency": res["latency"],
                                                                        "throughput": res["throughput"]})


def main() -> None:
    cli.run(app)


if __name__ == "__main__":
    main()
