"""``python -m apps.maintenance <command>``: remaining useful life of a fleet with intervals and maintenance alerts.

Every command works on the embedded fleet simulator by default, on NASA C-MAPSS with ``--dataset FD001`` (files in
``$MLREF_DATA_DIR/cmapss``, downloaded with a checksum where a network exists), or on your own long table with
``--dataset PATH`` (CSV or parquet, columns ``unit,cycle,setting_*,sensor_*[,timestamp][,failed]``; see data.py).
The standard commands (train, evaluate, serve, batch, monitor, retrain, demo, models) come from the app's pipeline
(``pipeline.py``) through :func:`common.app.build_cli`; this file adds the two whose arguments are the app's own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from apps.maintenance.pipeline import APP_IMPL
from common import cli
from common.app import build_cli
from common.workspace import Workspace

app = build_cli(APP_IMPL)


@app.command()
def predict(
    table: Path = typer.Argument(..., help="a long table of running units (CSV/parquet)"), ref: str = cli.REF
) -> None:
    """RUL, interval and alert per unit of a small table, printed as JSON (most urgent first)."""
    from apps.maintenance.data import read_fleet
    from apps.maintenance.lifecycle import predict_table

    ws = Workspace.from_env()
    with ws.activate():
        model, mv = APP_IMPL.load_model(ws, ref)
        out = predict_table(model, read_fleet(table, columns=model.cfg))
    cli.echo_json({"version": mv.version, "units": out.to_dict("records")})


@app.command()
def bench(
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="one C-MAPSS subset (default: every subset in the data dir)"
    ),
    output: Path | None = typer.Option(None, "--output", "-o"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds of each model (mean ± std, and their ensemble)"),
    dcnn_seeds: int | None = typer.Option(None, "--dcnn-seeds", min=0, help="DCNN seeds if not --seeds; 0 = none"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="DCNN epochs (default: config)"),
    max_train_s: float | None = typer.Option(None, "--max-train-s", help="time cap per DCNN seed, seconds"),
    baselines: str = typer.Option(
        "mean,linear,summary,minirocket", "--baselines", help="comma-separated: mean, linear, summary, minirocket"
    ),
    scale: bool = typer.Option(
        False, "--scale", help="the scaling bench instead: training, scoring and the API at growing fleet sizes"
    ),
    sizes: str | None = typer.Option(None, "--sizes", help="with --scale: units, e.g. 100,1000,10000 (30000 opt-in)"),
) -> None:
    """C-MAPSS benchmark: every model's RMSE, NASA score, coverage and fit seconds, against the published anchors
    -> bench/results/maintenance.json (FD001..FD004 present in the data dir).

    ``--scale``: time, peak memory and RMSE of training and fleet scoring at growing simulated fleets, and the
    fleet API's per-request cost at 10,000 units -> bench/results/maintenance-scale.json and .png (scale.py)."""
    if scale:
        from apps.maintenance import scale as scale_mod

        if dataset:
            raise cli.fail("--dataset does not go with --scale (the scaling bench simulates its fleets)")
        try:
            scale_mod.parse_units(sizes or scale_mod.DEFAULT_SIZES)
        except ValueError as exc:
            raise cli.fail(str(exc)) from None
        args = (["--sizes", sizes] if sizes else []) + (["--output", str(output)] if output else [])
        raise typer.Exit(scale_mod.main(args))
    if sizes:
        raise cli.fail("--sizes goes with --scale")
    from apps.maintenance.bench import run_bench

    t0 = time.perf_counter()
    doc = run_bench(
        dataset,
        seeds=seeds,
        dcnn_seeds=dcnn_seeds,
        epochs=epochs,
        max_train_s=max_train_s,
        baselines=tuple(b for b in baselines.split(",") if b),
    )
    from common.reports import write_json

    path = write_json(cli.bench_output(APP_IMPL.name, dataset.upper() if dataset else None, "FD001", output), doc)
    typer.echo(
        json.dumps(
            {
                "output": str(path),
                "seconds": round(time.perf_counter() - t0, 1),
                **{k: v["metrics"] for k, v in doc["models"].items()},
            },
            indent=2,
        )
    )


def main() -> None:  # pragma: no cover
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
