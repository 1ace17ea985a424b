"""``python -m apps.recommender <command>``: implicit-feedback top-k recommendations, served and retrained.

Datasets (``--dataset``): ``synthetic`` (default, offline), ``ml-100k``, ``ml-1m`` (GroupLens, fetched into
``MLREF_DATA_DIR``), or a path to your own ``user,item[,weight][,timestamp]`` CSV/parquet file.
The standard commands (train, evaluate, serve, retrain, demo, models) come from the app's pipeline (``pipeline.py``)
through :func:`common.app.build_cli`; this file adds ``predict`` and ``bench``, and ``batch`` (``--k``, every known
user by default) and ``monitor`` (``--days``) with the app's own options.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from apps.recommender.pipeline import APP_IMPL, RecommenderApp
from common import cli
from common.app import build_cli, monitor_pipeline
from common.workspace import Workspace

app = build_cli(APP_IMPL)
K = typer.Option(10, "--k", min=1, max=100, help="number of items per user")


def _own(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the app's own ``name`` command in place of the standard one (same options and more)."""
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != name]
    return app.command(name)


@app.command()
def predict(
    user: str = typer.Argument(None, help="a user id (omit with --items)"),
    items: str | None = typer.Option(None, help="comma-separated item history for an anonymous user"),
    k: int = K,
    ref: str = cli.REF,
) -> None:
    """Recommendations for one user (or one item history) from the registered model."""
    if items is None and user is None:
        raise typer.BadParameter("give a USER or --items")
    ws = Workspace.from_env()
    with ws.activate():
        bundle, mv = APP_IMPL.load_model(ws, ref)
    if items is not None:
        rec = bundle.recommend_history([s.strip() for s in items.split(",") if s.strip()], k)
    else:
        rec = bundle.recommend_users([user], k)[0]
    pairs = zip(rec.items, rec.scores, strict=True)
    found = [{"item": i, "score": round(s, 5), **bundle.item_info(i)} for i, s in pairs]
    cli.echo_json({"version": mv.version, "strategy": rec.strategy, "unknown_items": rec.unknown_items, "items": found})


@_own("batch")
def batch(
    input_path: Path | None = typer.Option(
        None, "--input", "-i", help="file with a 'user' column (default: every known user)"
    ),
    output: Path = typer.Option(Path("recommendations.parquet"), "--output", "-o", help=".parquet or .csv"),
    k: int = K,
    ref: str = cli.REF,
    chunksize: int = typer.Option(APP_IMPL.batch_chunk[0], "--chunksize", min=1, help=APP_IMPL.batch_chunk[1]),
) -> None:
    """Top-k for every user to a file (chunked; the file appears only when complete)."""
    ws = Workspace.from_env()
    with ws.activate():
        bundle, mv = APP_IMPL.load_model(ws, ref)
        res = APP_IMPL.batch(ws, bundle, input_path, output, chunksize=chunksize, k=k)
    cli.echo_json({"version": mv.version, **res})


@_own("monitor")
def monitor(
    dataset: str = typer.Option(..., "--dataset", "-d", help=APP_IMPL.recent_help),
    days: float | None = typer.Option(
        None, "--days", min=0.0, help="only the last N days of the file (default: all of it)"
    ),
    ref: str = cli.REF,
) -> None:
    """Recent interactions vs training: new users/items, popularity drift, coverage. Exit 1 on any alert."""
    ws = Workspace.from_env()
    with ws.activate():
        result, version = monitor_pipeline(RecommenderApp(monitor_days=days), ws, Path(dataset), ref)
    cli.echo_json({"version": version, "alerts": result.alerts, "stats": result.stats, "report": str(result.report)})
    cli.exit_monitor(bool(result.alerts))


@app.command()
def bench(
    dataset: str = typer.Option(
        "ml-100k", "--dataset", "-d", help="ml-100k (the reference), ml-1m, or your interactions file"
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="default bench/results/recommender.json (ml-100k) or bench/results/recommender-<dataset>.json",
    ),
    tune_trials: int = typer.Option(
        20, "--tune", min=0, help="also tune ALS, EASE and item-kNN: N Optuna trials each on a validation split"
    ),
    threads: int = typer.Option(2, min=1),
    tune_budget: float | None = typer.Option(
        None, "--tune-budget", min=1.0, help="seconds of tuning per model at most (default 120)"
    ),
) -> None:
    """Every model and baseline under the MS Recommenders protocol; writes bench/results/recommender*.json."""
    from apps.recommender.bench import format_table, run_bench

    ws = Workspace.from_env()
    with ws.activate():
        doc = run_bench(
            dataset,
            ws=ws,
            tune_trials=tune_trials,
            output=cli.bench_output(APP_IMPL.name, dataset, "ml-100k", output),
            threads=threads,
            tune_budget_s=tune_budget,
        )
    typer.echo(format_table(doc))
    cli.echo_json(doc["summary"])


def main() -> None:  # pragma: no cover
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
