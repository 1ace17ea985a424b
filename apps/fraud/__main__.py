"""``python -m apps.fraud <command>``: real-time card fraud scoring with delayed labels.

Every command works on the embedded simulator by default (``--sim-size reference|demo|tiny``), or on your own
transactions with ``--dataset PATH`` (CSV or parquet with columns ``tx_id,timestamp,customer_id,terminal_id,amount
[,label]``). The standard commands (train, evaluate, serve, batch, monitor, retrain, demo, models) come from the
app's pipeline (``pipeline.py``) through :func:`common.app.build_cli`, with the fraud app's own options (serve
--workers/--refresh-interval, batch --history/--reasons, monitor --sim-size/--days); this file adds predict and bench.
"""

from __future__ import annotations

from pathlib import Path

import typer

from apps.fraud.pipeline import APP_IMPL
from common import cli
from common.app import build_cli
from common.workspace import Workspace

app = build_cli(APP_IMPL)


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
    scale: bool = typer.Option(
        False, "--scale", help="cost vs size, in memory vs Dask -> bench/results/fraud-scale.json (apps/fraud/scale.py)"
    ),
    sizes: str | None = typer.Option(None, "--sizes", help="with --scale: transactions, default 1.8e5,1.8e6,1.8e7"),
) -> None:
    """Reference-size benchmark: handbook protocol for all models, latency, throughput -> bench/results/fraud*.json;
    --scale: cost vs data size (features, training, batch scoring; in memory and on Dask)."""
    from apps.fraud import bench as bench_mod

    if scale or sizes is not None:
        from apps.fraud import scale as scale_mod
        from common.scaling import parse_sizes

        if not scale:
            raise cli.fail("--sizes goes with --scale (python -m apps.fraud bench --scale --sizes 1.8e5,1.8e6)")
        if dataset is not None or serving_only or tune is not None or draws != 1:
            raise cli.fail("--scale measures simulated worlds at --sizes: drop --dataset/--tune/--draws/--serving-only")
        try:
            parse_sizes(sizes or scale_mod.DEFAULT_SIZES, minimum=scale_mod.MIN_ROWS, what="transactions")
        except ValueError as exc:
            raise cli.fail(str(exc)) from None
        argv = [*(["--sizes", sizes] if sizes else []), *(["--output", str(output)] if output else [])]
        raise typer.Exit(scale_mod.main(argv))
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
