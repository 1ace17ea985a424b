"""``python -m apps.maintenance <command>``: remaining useful life of a fleet with intervals and maintenance alerts.

Every command works on the embedded fleet simulator by default, on NASA C-MAPSS with ``--dataset FD001`` (files in
``$MLREF_DATA_DIR/cmapss``, downloaded with a checksum where a network exists), or on your own long table with
``--dataset PATH`` (CSV or parquet, columns ``unit,cycle,setting_*,sensor_*[,timestamp][,failed]``; see data.py).
The commands and options follow the contract in ``common/cli.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from apps.maintenance.config import APP, REGISTRY_NAME, Config
from common import cli

app = cli.create_app(APP, REGISTRY_NAME, __doc__)
DATASET = typer.Option(
    None,
    "--dataset",
    "-d",
    help="FD001..FD004 (C-MAPSS), a train_FD00x.txt path, or your CSV/parquet long table (default: simulated)",
)


def _config(
    config: Path | None,
    *,
    seed: int | None = None,
    epochs: int | None = None,
    n_seeds: int | None = None,
    model: str | None = None,
) -> Config:
    cfg = Config.from_file(config)
    if model is not None:
        cfg.model = model
    if seed is not None:
        cfg.seed = seed
    if epochs is not None:
        cfg.epochs = epochs
    if n_seeds is not None:
        cfg.n_seeds = n_seeds
    return cfg.check()


def _name(dataset: str | None) -> str:
    return str(dataset) if dataset is not None else "simulated"


EPOCHS = typer.Option(None, "--epochs", min=1, help="training epochs of each DCNN member (default: config, 250)")
N_SEEDS = typer.Option(None, "--n-seeds", min=1, help="members (seeds) averaged (default: config, 1)")
MODEL = typer.Option(
    None, "--model", help="boost (trees on health features; the default) or dcnn (Li et al.'s CNN; minutes)"
)


@app.command()
def demo(
    seed: int = typer.Option(42, "--seed"),
    model: str = typer.Option("boost", "--model", help="boost (seconds) or dcnn (about 2 minutes)"),
    epochs: int = typer.Option(25, "--epochs", min=1, help="DCNN epochs in the demo"),
) -> None:
    """The whole lifecycle on a simulated fleet, offline, in $MLREF_HOME/demo/maintenance (your registry untouched)."""
    from apps.maintenance.demo import run_demo

    with cli.demo_home(APP) as home:
        summary = run_demo(seed=seed, epochs=epochs, model=model)
    cli.echo_json(summary)
    typer.echo(f"demo home: {home} (your own registry is untouched). Open next: {summary['report']}", err=True)


@app.command()
def train(
    dataset: str | None = DATASET,
    config: Path | None = cli.CONFIG,
    model: str | None = MODEL,
    epochs: int | None = EPOCHS,
    n_seeds: int | None = N_SEEDS,
    tune: int = cli.TUNE,
    promote: bool | None = cli.PROMOTE,
    seed: int | None = cli.SEED,
) -> None:
    """Train on the run-to-failure histories (held-out units for early stopping and intervals), evaluate on the test
    units when the dataset has them, and register a version (champion if none yet)."""
    from apps.maintenance.data import load
    from apps.maintenance.evaluate import evaluate_last_cycle
    from apps.maintenance.lifecycle import register
    from apps.maintenance.train import train as fit

    if tune:
        raise cli.fail(
            "--tune is not supported by the maintenance app: the recipes are fixed (measured on C-MAPSS FD001); "
            "change boost_*, epochs, lr or window with --config"
        )
    cfg = _config(config, seed=seed, epochs=epochs, n_seeds=n_seeds, model=model)
    fleet = load(dataset, seed=cfg.seed)
    rul_model = fit(fleet.train, cfg)
    held_out: dict[str, float] = {}
    if fleet.test is not None and fleet.test_rul is not None:
        held_out, _ = evaluate_last_cycle(rul_model, fleet.test, fleet.test_rul, cfg.rul_cap)
    mv = register(
        rul_model,
        fleet.train,
        metrics={f"test_{k}": v for k, v in held_out.items()},
        dataset=_name(dataset),
        alias=cli.choose_alias(REGISTRY_NAME, promote),
    )
    cli.echo_json(
        {
            "version": mv.version,
            "aliases": mv.aliases,
            "test": held_out,
            "info": {k: v for k, v in rul_model.info.items() if k not in ("sensors",)},
        }
    )
    typer.echo(cli.train_summary(REGISTRY_NAME, APP, mv.version), err=True)


@app.command()
def evaluate(
    dataset: str | None = DATASET,
    config: Path | None = cli.CONFIG,
    model: str | None = MODEL,
    epochs: int | None = EPOCHS,
    n_seeds: int | None = N_SEEDS,
    seed: int | None = cli.SEED,
) -> None:
    """The configured model against the baselines on the test units' last cycles: metrics JSON + report with figures."""
    from apps.maintenance.data import load
    from apps.maintenance.evaluate import alert_tradeoff, evaluate_last_cycle, write_evaluation
    from apps.maintenance.train import fit_baselines, prepare
    from apps.maintenance.train import train as fit
    from common.reports import new_report_dir

    cfg = _config(config, seed=seed, epochs=epochs, n_seeds=n_seeds, model=model)
    fleet = load(dataset, seed=cfg.seed)
    assert fleet.test is not None and fleet.test_rul is not None
    data = prepare(fleet.train, cfg)
    rul_model = fit(fleet.train, cfg, data=data)
    table, per_unit = {}, None
    table[cfg.model], per_unit = evaluate_last_cycle(rul_model, fleet.test, fleet.test_rul, cfg.rul_cap)
    for name, reg in fit_baselines(data, cfg, kinds=("mean", "linear", "summary")).items():
        table[name], _ = evaluate_last_cycle(reg, fleet.test, fleet.test_rul, cfg.rul_cap)
    curve = alert_tradeoff(per_unit, cfg.horizon)
    out = new_report_dir(APP, _name(dataset))
    path = write_evaluation(
        out,
        table,
        dataset=_name(dataset),
        model=rul_model,
        test=fleet.test,
        truth=fleet.test_rul,
        per_unit=per_unit,
        curve=curve,
        info={k: v for k, v in rul_model.info.items() if k != "members"},
    )
    cli.echo_json({"report": str(path), "metrics": table})


@app.command()
def serve(host: str | None = cli.HOST, port: int | None = cli.PORT) -> None:
    """Serve the champion over HTTP on 127.0.0.1 (fleet state persisted; hot-swaps when the champion moves). One
    server per MLREF_HOME: exit 2 when another one holds the fleet store."""
    from apps.maintenance.service import StoreLocked, build_app
    from common import serving

    service = build_app()
    try:
        service.state.fleet.acquire()  # held for the server's life; the kernel drops it when the process ends
    except StoreLocked as exc:
        raise cli.fail(str(exc)) from None
    serving.serve(service, host=host, port=port)


@app.command()
def predict(
    table: Path = typer.Argument(..., help="a long table of running units (CSV/parquet)"), ref: str = cli.REF
) -> None:
    """RUL, interval and alert per unit of a small table, printed as JSON (most urgent first)."""
    from apps.maintenance.data import read_fleet
    from apps.maintenance.lifecycle import load_version, predict_table

    model, mv = load_version(ref)
    out = predict_table(model, read_fleet(table))
    cli.echo_json({"version": mv.version, "units": out.to_dict("records")})


@app.command()
def batch(
    input_path: Path = typer.Option(..., "--input", "-i", help="long table of running units (CSV/parquet)"),
    output: Path = cli.OUTPUT_FILE,
    ref: str = cli.REF,
    chunksize: int = typer.Option(1000, "--chunksize", min=1, help="units per prediction chunk"),
) -> None:
    """``unit, cycle, rul, lower, upper, alert`` for every unit in a file, most urgent first (written atomically)."""
    from apps.maintenance.lifecycle import batch_score, load_version

    model, mv = load_version(ref)
    res = batch_score(model, input_path, output, chunk_units=chunksize)
    cli.echo_json({"version": mv.version, **res})


@app.command()
def monitor(
    dataset: Path = typer.Option(
        ..., "--dataset", "-d", help="recent readings (long table; failed=1 marks observed failures)"
    ),
    ref: str = cli.REF,
) -> None:
    """Sensor drift per operating condition against the training readings at the same ages (training units that
    had lived as long), and error/coverage on observed failures. Exit 1 on any alert."""
    from apps.maintenance.data import read_fleet
    from apps.maintenance.lifecycle import load_version
    from apps.maintenance.lifecycle import monitor as run_monitor
    from common import registry
    from common.reports import new_report_dir

    model, mv = load_version(ref)
    out = new_report_dir(APP, "monitor", "monitor")
    verdict = run_monitor(model, registry.fetch_model_dir(mv), read_fleet(dataset), out)
    cli.echo_json(
        {"version": mv.version, "alerts": verdict.alerts, "stats": verdict.stats, "report": str(out / "drift.md")}
    )
    cli.exit_monitor(bool(verdict.alerts))


@app.command()
def retrain(dataset: str | None = DATASET, config: Path | None = cli.CONFIG, margin: float = cli.MARGIN) -> None:
    """A challenger on the units that failed before the latest ``window_units`` failures; promoted only if its RMSE
    on those recent failures beats the champion's by more than --margin cycles."""
    from apps.maintenance.data import failed_units, load, read_fleet
    from apps.maintenance.lifecycle import retrain as run_retrain
    from apps.maintenance.lifecycle import summary

    cfg = _config(config)
    if dataset is None or str(dataset) == "simulated" or str(dataset).upper().startswith("FD"):
        histories = load(dataset, seed=cfg.seed).train
    else:
        histories = failed_units(read_fleet(dataset))
    cli.echo_json(summary(run_retrain(histories, cfg, dataset=_name(dataset), margin=margin)))


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
) -> None:
    """C-MAPSS benchmark: every model's RMSE, NASA score, coverage and fit seconds, against the published anchors
    -> bench/results/maintenance.json (FD001..FD004 present in the data dir)."""
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

    path = write_json(cli.bench_output(APP, dataset.upper() if dataset else None, "FD001", output), doc)
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
