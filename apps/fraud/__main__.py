"""``python -m apps.fraud <command>``: real-time card fraud scoring with delayed labels.

Every command works on the embedded simulator by default (``--sim-size reference|demo|tiny``), or on your own
transactions with ``--dataset PATH`` (CSV or parquet with columns ``tx_id,timestamp,customer_id,terminal_id,amount
[,label]``). The standard commands (train, evaluate, retrain, demo, models) come from the app's pipeline
(``pipeline.py``) through :func:`common.app.build_cli`; this file adds predict and bench, and serve, batch and
monitor with the fraud app's own options (``common.app`` has no per-command options for those yet).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from apps.fraud.pipeline import APP_IMPL
from common import cli
from common.app import build_cli
from common.workspace import Workspace

log = logging.getLogger("apps.fraud")
app = build_cli(APP_IMPL)
OWN = ("serve", "batch", "monitor")  # replaced below: their options are the fraud app's own
app.registered_commands = [c for c in app.registered_commands if c.name not in OWN]
DATASET = typer.Option(None, "--dataset", "-d", help="your transactions file (CSV/parquet); default: simulated")


@app.command()
def serve(
    dataset: Path | None = typer.Option(
        None, "--dataset", "-d", help="past transactions that warm the online state (default: the champion's own)"
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
    ws = Workspace.from_env()
    with ws.activate():
        APP_IMPL.serve(
            ws, host, port, dataset=dataset, log_level=log_level, refresh_interval=refresh_interval, workers=workers
        )


@app.command()
def predict(
    tx_id: str = typer.Option(...),
    timestamp: str = typer.Option(..., help="ISO date-time"),
    customer_id: str = typer.Option(...),
    terminal_id: str = typer.Option(...),
    amount: float = typer.Option(...),
    dataset: Path | None = typer.Option(
        None, "--dataset", "-d", help="past transactions for the features (default: the version's recorded history)"
    ),
    ref: str = cli.REF,
) -> None:
    """Score one transaction with the --ref version (features from its own recorded history, or from the past
    transactions of --dataset)."""
    from fastapi.testclient import TestClient

    from apps.fraud.data import load
    from apps.fraud.service import build_app, history_for

    body = {"tx_id": tx_id, "timestamp": timestamp, "customer_id": customer_id, "terminal_id": terminal_id}
    ws = Workspace.from_env()
    with ws.activate():
        model, mv = APP_IMPL.load_model(ws, ref)
        history = load(dataset, require_label=False) if dataset is not None else history_for(mv)
        service = build_app(history, model=model, model_version=mv, refresh_interval_s=None, log_predictions=False)
        with TestClient(service) as client:
            r = client.post("/v1/transactions/score", json=body | {"amount": amount})
    cli.echo_json(r.json())
    if r.status_code != 200:
        raise cli.fail(r.json().get("message") or f"HTTP {r.status_code}")


@app.command()
def batch(
    input_path: Path = typer.Option(..., "--input", "-i", help="transactions to score (CSV/parquet, time-sorted)"),
    output: Path = cli.OUTPUT_FILE,
    history: Path | None = typer.Option(
        None, help="earlier transactions (with labels) for the features; default: the ones recorded with the version"
    ),
    chunksize: int = cli.CHUNKSIZE,
    reasons: bool = typer.Option(False, help="add the top reasons"),
    n_reasons: int = typer.Option(3, "--n-reasons", min=1, help="features listed per alert with --reasons"),
    ref: str = cli.REF,
    scheduler: str | None = typer.Option(None, help="ignored: feature history needs one ordered pass"),
) -> None:
    """Batch-score a file with the champion, chunked, with progress; output written atomically."""
    if scheduler:
        log.warning("--scheduler ignored: the fraud features need one time-ordered pass over the file")
    ws = Workspace.from_env()
    with ws.activate():
        model, mv = APP_IMPL.load_model(ws, ref)
        res = APP_IMPL.score_file(
            ws, model, input_path, output, chunksize=chunksize, history=history, reasons=reasons, n_reasons=n_reasons
        )
    cli.echo_json({"version": mv.version, **res})


@app.command()
def monitor(
    dataset: str | None = DATASET,
    sim_size: str | None = typer.Option(None, "--sim-size", help="simulated world: reference, demo or tiny"),
    days: int = typer.Option(7, "--days", min=1, help="the most recent N days are compared with the reference"),
    ref: str = cli.REF,
    seed: int | None = cli.SEED,
) -> None:
    """Feature and score drift of recent transactions vs the champion's training window; alert precision where
    labels are in. Exit code 1 when drift crosses the thresholds."""
    ws = Workspace.from_env()
    cfg = APP_IMPL.config(None, {"sim_size": sim_size, "seed": seed, "monitor_days": days})
    with ws.activate():
        result, version = APP_IMPL.monitor_dataset(ws, dataset, cfg, ref)
    cli.echo_json({"version": version, "alerts": result.alerts, "stats": result.stats, "report": str(result.report)})
    cli.exit_monitor(bool(result.alerts))


@app.command()
def bench(
    dataset: Path | None = typer.Option(None, "--dataset", "-d", help="default: the reference-size simulation"),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="default bench/results/fraud.json (simulation) or bench/results/fraud-<name>.json"
    ),
    tune: int | None = typer.Option(
        None, "--tune", min=0, help="Optuna trials per draw (default: 20 on one draw, 0 with --draws)"
    ),
    draws: int = typer.Option(1, "--draws", min=1, help="simulator draws (seeds 0..N-1): mean ± std across draws"),
    http_requests: int = typer.Option(2000, min=1),
    serving_only: bool = typer.Option(
        False, "--serving-only", help="re-measure latency and batch throughput into the existing results file"
    ),
) -> None:
    """Reference-size benchmark: handbook protocol for all models, latency, throughput -> bench/results/fraud*.json."""
    from apps.fraud import bench as bench_mod

    ws = Workspace.from_env()
    out = cli.bench_output(APP_IMPL.name, str(dataset) if dataset else None, None, output)
    with ws.activate():
        if serving_only:
            if dataset is not None:
                raise cli.fail("--serving-only re-measures the reference simulation's results; drop --dataset")
            doc = bench_mod.run_serving_only(out, http_requests=http_requests, ws=ws)
            cli.echo_json({"latency": doc["latency"], "throughput": doc["throughput"]})
            return
        res = bench_mod.run(
            tune_trials=tune,
            out_path=out,
            dataset=str(dataset) if dataset else None,
            http_requests=http_requests,
            draws=draws,
            ws=ws,
        )
    models = {name: m["metrics"] for name, m in res["models"].items()}
    cli.echo_json(models | {"latency": res["latency"], "throughput": res["throughput"]})


def main() -> None:  # pragma: no cover
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
