"""``python -m apps.fraud <command>``: real-time card fraud scoring with delayed labels.

Every command works on the embedded simulator by default, or on your own transactions with ``--dataset PATH``
(CSV or parquet with columns ``tx_id,timestamp,customer_id,terminal_id,amount[,label]``).
The commands and options follow the contract in ``common/cli.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
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
from common.reports import new_report_dir, write_json

app = cli.create_app(APP, MODEL_NAME, __doc__)
log = logging.getLogger("apps.fraud")


class Size(StrEnum):
    reference = "reference"
    demo = "demo"
    tiny = "tiny"


SIZES = {Size.reference: REFERENCE_SIMULATION, Size.demo: DEMO_SIMULATION, Size.tiny: TINY_SIMULATION}
DATASET = typer.Option(None, "--dataset", "-d", help="your transactions file (CSV/parquet); default: simulated")
SIM_SIZE = typer.Option(Size.reference, "--sim-size", help="simulation size when no --dataset is given")
N_FOLDS = typer.Option(None, "--n-folds", min=1, help="prequential folds (default from config: 4)")
ALERTS_PER_DAY = typer.Option(
    None, "--alerts-per-day", min=1, help="daily alert budget; sets the decision threshold (default from config: 100)"
)


def _config(path: Path | None, *, n_folds: int | None = None, alerts_per_day: int | None = None) -> FraudConfig:
    """Defaults, updated from a JSON file of sections (``{"xgb": {"max_depth": 6}, "protocol": {...}}``), then
    from the flags."""
    from common.data import DataError

    cfg = FraudConfig()
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"config {path}: {exc}") from None
        sections = {f.name for f in fields(cfg)}
        if not isinstance(data, dict) or set(data) - sections:
            raise DataError(f"config {path}: expected an object with sections {sorted(sections)}")
        updates = {}
        for name, values in data.items():
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            try:
                updates[name] = replace(getattr(cfg, name), **values)
            except TypeError as exc:
                raise DataError(f"config {path}, section {name!r}: {exc}") from None
        cfg = replace(cfg, **updates)
    if n_folds is not None:
        cfg = replace(cfg, protocol=replace(cfg.protocol, n_folds=n_folds))
    if alerts_per_day is not None:
        cfg = replace(cfg, serving=replace(cfg.serving, alerts_per_day=alerts_per_day))
    return cfg


def _sim(size: Size, seed: int | None) -> SimulationConfig:
    sim = SIZES[size]
    return replace(sim, seed=seed) if seed is not None else sim


def _prepared(dataset: Path | None, size: Size, seed: int | None, cfg: FraudConfig, *, require_label: bool = True):
    from apps.fraud.data import load
    from apps.fraud.train import prepare

    raw = load(dataset, sim=_sim(size, seed), require_label=require_label)
    return raw, prepare(raw, cfg.features)


def _dataset_name(dataset: Path | None, size: Size) -> str:
    return str(dataset) if dataset is not None else f"simulated-{size.value}"


@app.command()
def demo(
    dataset: Path | None = typer.Option(None, "--dataset", "-d", help="your labelled transactions (>= 70 days)"),
    sim_size: Size = typer.Option(Size.demo, "--sim-size", help="size of the simulated world"),
    tune: int = cli.TUNE,
    seed: int | None = cli.SEED,
) -> None:
    """The whole lifecycle offline, in $MLREF_HOME/demo/fraud (your registry untouched): evaluate, register, serve,
    batch, drift, monitor, retrain, promote or keep."""
    from apps.fraud import demo as demo_mod

    with cli.demo_home(APP) as home:
        summary = demo_mod.run(_sim(sim_size, seed), tune_trials=tune, dataset=str(dataset) if dataset else None)
    cli.echo_json(summary)
    typer.echo(
        f"demo home: {home} (your own registry is untouched). Open next: "
        f"{summary['champion']['report']}; `mlflow ui --backend-store-uri sqlite:///{home.resolve()}/mlflow.db`;"
        f" your own data: python -m apps.{APP} train --dataset FILE",
        err=True,
    )


@app.command()
def train(
    dataset: Path | None = DATASET,
    sim_size: Size = SIM_SIZE,
    config: Path | None = cli.CONFIG,
    model: str = typer.Option("xgboost", help="xgboost | logreg | random_forest | decision_tree"),
    tune: int = cli.TUNE,
    n_estimators: int | None = typer.Option(None, min=1),
    max_depth: int | None = typer.Option(None, min=1),
    learning_rate: float | None = typer.Option(None, min=0.0),
    train_days: int = typer.Option(7, min=1, help="train on the latest labelled N days"),
    n_folds: int | None = N_FOLDS,
    alerts_per_day: int | None = ALERTS_PER_DAY,
    promote: bool | None = cli.PROMOTE,
    scheduler: str | None = typer.Option(
        None,
        help="fit the final xgboost model on a Dask cluster with "
        "xgboost.dask: scheduler ADDRESS (tcp://host:8786) or 'local' "
        "(2 local worker processes); validation/tuning stay local",
    ),
    seed: int | None = cli.SEED,
) -> None:
    """Train on the latest labelled days, log the run, register a version (champion if none yet)."""
    from contextlib import ExitStack

    from apps.fraud.data import DAY
    from apps.fraud.features import feature_names
    from apps.fraud.lifecycle import register_model
    from apps.fraud.train import dask_client, score_validation, train_model, train_model_dask, tune_xgboost
    from common import tracking

    if scheduler and model != "xgboost":
        raise typer.BadParameter(f"only the xgboost model trains on Dask, not {model!r}", param_hint="--scheduler")
    cfg = _config(config, n_folds=n_folds, alerts_per_day=alerts_per_day)
    name = _dataset_name(dataset, sim_size)
    with ExitStack() as stack:
        stack.enter_context(
            tracking.start_run(
                f"{APP}-training",
                run_name=f"train-{model}",
                params={"model": model, "tune_trials": tune, "train_days": train_days},
                tags={"dataset": name},
            )
        )
        client = None
        if scheduler:  # connect first: an unreachable scheduler fails before minutes of validation
            try:
                client = stack.enter_context(dask_client(scheduler))
            except ConnectionError as e:
                raise cli.fail(str(e)) from None
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
        tracking.log_metrics({f"validation_{k}": v for k, v in metrics.items()})
        alias = cli.choose_alias(MODEL_NAME, promote)
        mv = register_model(
            fitted, prepared, metrics={f"validation_{k}": v for k, v in metrics.items()}, alias=alias, dataset=name
        )
    out = {
        "version": mv.version,
        "alias": alias,
        "dataset": name,
        "params": params,
        "threshold": fitted.threshold,
        "validation": metrics,
    }
    if "distributed" in fitted.info:
        out["distributed"] = fitted.info["distributed"] | {"fit_seconds": fitted.info["fit_seconds"]}
    cli.echo_json(out)
    typer.echo(cli.train_summary(MODEL_NAME, APP, mv.version), err=True)


@app.command()
def evaluate(
    dataset: Path | None = DATASET,
    sim_size: Size = SIM_SIZE,
    config: Path | None = cli.CONFIG,
    tune: int = cli.TUNE,
    models: str = typer.Option("xgboost,logreg,random_forest,decision_tree", help="comma-separated kinds"),
    n_folds: int | None = N_FOLDS,
    seed: int | None = cli.SEED,
) -> None:
    """Handbook protocol (validation selects, test reports) for each model: metrics JSON + report."""
    from apps.fraud.data import DAY
    from apps.fraud.lifecycle import log_selection, report_selection, results_table, select_models

    cfg = _config(config, n_folds=n_folds)
    _, prepared = _prepared(dataset, sim_size, seed, cfg)
    protocol = cfg.protocol.fitted(int(prepared[DAY].max()) + 1)
    if protocol.n_folds < cfg.protocol.n_folds:
        log.warning("only %d days of data: using %d prequential folds", int(prepared[DAY].max()) + 1, protocol.n_folds)
    cfg = replace(cfg, protocol=protocol)
    cands = select_models(
        prepared, cfg, kinds=tuple(m.strip() for m in models.split(",") if m.strip()), tune_trials=tune
    )
    name = _dataset_name(dataset, sim_size)
    out = new_report_dir(APP, name, "evaluation")
    path = report_selection(cands, cfg, out, dataset=name, data=prepared)
    log_selection(cands, name)
    table = results_table(cands)
    write_json(out / "evaluation.json", table)
    cli.echo_json({"report": str(path), "results": table})


def _history(dataset: Path):
    """A user's past transactions (labels optional) for the online features."""
    from apps.fraud.data import load

    return load(dataset, require_label=False)


@app.command()
def serve(
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="past transactions that warm the online state (default: the champion's recorded training history)",
    ),
    host: str | None = cli.HOST,
    port: int | None = cli.PORT,
    log_level: str = typer.Option("info"),
    refresh_interval: float = typer.Option(5.0, min=0.0, help="seconds between registry polls for a new champion"),
    workers: int = typer.Option(
        1, "--workers", min=1, help="uvicorn worker processes; more than 1 needs the shared state (MLREF_REDIS_URL)"
    ),
) -> None:
    """Serve the champion over HTTP (uvicorn, 127.0.0.1); picks up a new champion without restart. The online
    state starts from the champion's own recorded history, or from --dataset."""
    from apps.fraud.service import build_app, history_for, serve_workers
    from common.serving import serve as run_server

    if workers > 1:
        serve_workers(
            workers, dataset=dataset, host=host, port=port, log_level=log_level, refresh_interval_s=refresh_interval
        )
        return
    history = _history(dataset) if dataset is not None else history_for()
    app_ = build_app(history, refresh_interval_s=refresh_interval or None)
    run_server(app_, host=host, port=port, log_level=log_level)


@app.command()
def predict(
    tx_id: str = typer.Option(...),
    timestamp: str = typer.Option(..., help="ISO date-time"),
    customer_id: str = typer.Option(...),
    terminal_id: str = typer.Option(...),
    amount: float = typer.Option(...),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="past transactions for the features (default: the version's recorded training history)",
    ),
    ref: str = cli.REF,
) -> None:
    """Score one transaction with the --ref version (features from its own recorded history, or from the past
    transactions of --dataset)."""
    from fastapi.testclient import TestClient

    from apps.fraud.service import build_app, history_for, load_model
    from common import registry

    model, mv = registry.load(MODEL_NAME, ref, load_model)  # a missing or tampered model: one line, exit 2
    history = _history(dataset) if dataset is not None else history_for(mv)
    app_ = build_app(history, model=model, model_version=mv, refresh_interval_s=None, log_predictions=False)
    body = {
        "tx_id": tx_id,
        "timestamp": timestamp,
        "customer_id": customer_id,
        "terminal_id": terminal_id,
        "amount": amount,
    }
    with TestClient(app_) as client:
        r = client.post("/v1/transactions/score", json=body)
    cli.echo_json(r.json())
    if r.status_code != 200:
        raise cli.fail(r.json().get("message") or f"HTTP {r.status_code}")


@app.command()
def batch(
    input_path: Path = typer.Option(
        ..., "--input", "-i", help="transactions to score (CSV/parquet, sorted by timestamp)"
    ),
    output: Path = cli.OUTPUT_FILE,
    history: Path | None = typer.Option(
        None,
        help="earlier transactions (with labels) for the features; default: the ones recorded with the model version",
    ),
    chunksize: int = cli.CHUNKSIZE,
    reasons: bool = typer.Option(False, help="add the top reasons"),
    n_reasons: int = typer.Option(3, "--n-reasons", min=1, help="features listed per alert with --reasons"),
    ref: str = cli.REF,
    scheduler: str | None = typer.Option(None, help="ignored: feature history needs one ordered pass"),
) -> None:
    """Batch-score a file with the champion, chunked, with progress; output written atomically."""
    from apps.fraud.data import load
    from apps.fraud.service import BatchScorer, history_for, load_model
    from common import batch as common_batch
    from common import registry

    if scheduler:
        log.warning("--scheduler ignored: the fraud features need one time-ordered pass over the file")
    model, mv = registry.load(MODEL_NAME, ref, load_model)
    hist = load(history, require_label=False) if history is not None else history_for(mv)
    scorer = BatchScorer(model, FraudConfig().features, hist, reasons=reasons, n_reasons=n_reasons)
    res = common_batch.score_file(input_path, output, scorer, chunksize=chunksize)
    cli.echo_json(
        {
            "model_version": mv.version,
            "rows": res.rows,
            "chunks": res.chunks,
            "seconds": round(res.seconds, 2),
            "output": str(res.output),
        }
    )


@app.command()
def monitor(
    dataset: Path | None = DATASET,
    sim_size: Size = SIM_SIZE,
    days: int = typer.Option(7, "--days", min=1, help="the most recent N days are compared with the reference"),
    ref: str = cli.REF,
    seed: int | None = cli.SEED,
) -> None:
    """Feature and score drift of recent transactions vs the champion's training window; alert precision where
    labels are in. Exit code 1 when drift crosses the thresholds."""
    from apps.fraud.data import DAY
    from apps.fraud.lifecycle import alert_precision_from_logs
    from apps.fraud.lifecycle import monitor as run_monitor
    from apps.fraud.service import load_model
    from common import registry

    cfg = FraudConfig()
    _, prepared = _prepared(dataset, sim_size, seed, cfg, require_label=False)
    model, mv = registry.load(MODEL_NAME, ref, load_model)
    recent = prepared[prepared[DAY] > prepared[DAY].max() - days]
    out = new_report_dir(APP, _dataset_name(dataset, sim_size), "monitor")
    verdict = run_monitor(model, registry.fetch_model_dir(mv), recent, out, model_version=str(mv.version))
    perf = verdict.performance
    cli.echo_json(
        {
            "model_version": mv.version,
            "drift": verdict.drift,
            "drifted_features": verdict.drifted_features,
            "prediction_drift": verdict.prediction_drift,
            "alerts": verdict.alerts,
            "report": str(out / "drift.md"),
            "daily_performance": perf.to_dict(orient="records") if len(perf) else [],
            "served_alert_precision": alert_precision_from_logs(version=str(mv.version)),
        }
    )
    cli.exit_monitor(verdict.exit_code == cli.EXIT_ALERT)


@app.command()
def retrain(
    dataset: Path | None = DATASET,
    sim_size: Size = SIM_SIZE,
    config: Path | None = cli.CONFIG,
    margin: float = cli.MARGIN,
    seed: int | None = cli.SEED,
) -> None:
    """Weekly challenger on the latest labelled weeks; promoted only if it beats the champion on the most recent
    labelled week."""
    from apps.fraud.lifecycle import retrain as run_retrain

    cfg = _config(config)
    cfg = replace(cfg, retrain=replace(cfg.retrain, margin=margin))
    _, prepared = _prepared(dataset, sim_size, seed, cfg)
    decision = run_retrain(prepared, cfg)  # the challenger takes the champion's kind and parameters
    cli.echo_json(decision.to_dict())


@app.command()
def bench(
    dataset: Path | None = typer.Option(None, "--dataset", "-d", help="default: the reference-size simulation"),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="default bench/results/fraud.json (simulation) or bench/results/fraud-<dataset>.json",
    ),
    tune: int | None = typer.Option(
        None,
        "--tune",
        min=0,
        help="Optuna trials for XGBoost per draw (default: 20 on one draw, 0 = the config's parameters with --draws)",
    ),
    draws: int = typer.Option(
        1, "--draws", min=1, help="simulator draws (seeds 0..N-1, reference size): mean ± std across draws"
    ),
    http_requests: int = typer.Option(2000, min=1),
    serving_only: bool = typer.Option(
        False,
        "--serving-only",
        help="re-measure latency and batch throughput into the existing results file (a few minutes; the model "
        "comparison is kept)",
    ),
) -> None:
    """Reference-size benchmark: handbook protocol for all models, latency, throughput -> bench/results/fraud*.json."""
    from apps.fraud import bench as bench_mod

    out = cli.bench_output(APP, str(dataset) if dataset else None, None, output)
    if serving_only:
        if dataset is not None:
            raise cli.fail("--serving-only re-measures the reference simulation's results; drop --dataset")
        doc = bench_mod.run_serving_only(out, http_requests=http_requests)
        cli.echo_json({"latency": doc["latency"], "throughput": doc["throughput"]})
        return
    res = bench_mod.run(
        tune_trials=tune,
        out_path=out,
        dataset=str(dataset) if dataset else None,
        http_requests=http_requests,
        draws=draws,
    )
    cli.echo_json(
        {name: m["metrics"] for name, m in res["models"].items()}
        | {"latency": res["latency"], "throughput": res["throughput"]}
    )


def main() -> None:  # pragma: no cover
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
