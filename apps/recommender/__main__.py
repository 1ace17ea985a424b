"""``python -m apps.recommender <command>``: implicit-feedback top-k recommendations, served and retrained.

Datasets (``--dataset``): ``synthetic`` (default, offline), ``ml-100k``, ``ml-1m`` (GroupLens, fetched into
``MLREF_DATA_DIR``), or a path to your own ``user,item[,weight][,timestamp]`` CSV/parquet file.
The standard commands (train, evaluate, serve, batch, monitor, retrain, demo, models) come from the app's pipeline
(``pipeline.py``) through :func:`common.app.build_cli`, with the app's own options (``batch --k``, every known user by
default; ``monitor --days``); this file adds ``predict`` and ``bench``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from apps.recommender.pipeline import APP_IMPL
from common import cli
from common.app import build_cli
from common.workspace import Workspace

app = build_cli(APP_IMPL)
K = typer.Option(10, "--k", min=1, max=100, help="number of items per user")


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
    scale: bool = typer.Option(
        False, "--scale", help="the scaling bench instead: every engine at growing sizes (apps/recommender/scale.py)"
    ),
    sizes: str | None = typer.Option(None, "--sizes", help="with --scale: interactions, e.g. 1e6,1e7,5e7"),
) -> None:
    """Every model and baseline under the MS Recommenders protocol; writes bench/results/recommender*.json.

    ``--scale``: time, peak memory and nDCG@10 of every engine (implicit ALS, Spark ALS, EASE, BPR, item-kNN) at
    growing sizes of synthetic data -> bench/results/recommender-scale.json and .png."""
    if scale:
        from apps.recommender import scale as scale_mod

        args = ["--threads", str(threads)] + (["--sizes", sizes] if sizes else [])
        args += ["--output", str(output)] if output else []
        raise typer.Exit(scale_mod.main(args))
    if sizes:
        raise cli.fail("--sizes goes with --scale")
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
