"""``python -m apps.recommender <command>``: implicit-feedback top-k recommendations, served and retrained.

Datasets (``--dataset``): ``synthetic`` (default, offline), ``ml-100k``, ``ml-1m`` (GroupLens, fetched into
``MLREF_DATA_DIR``), or a path to your own ``user,item[,weight][,timestamp]`` CSV/parquet file.
The commands and options follow the contract in ``common/cli.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from apps.recommender.config import APP, MODELS, REGISTRY_NAME, RecommenderConfig
from common import cli
from common.reports import new_report_dir

app = cli.create_app(APP, REGISTRY_NAME, __doc__)
log = logging.getLogger("apps.recommender")

DATASET = typer.Option("synthetic", "--dataset", "-d", help="synthetic | ml-100k | ml-1m | path to a CSV/parquet")


def _config(config: Path | None, **overrides: Any) -> RecommenderConfig:
    """The config file (or defaults) with the command line's non-empty values on top."""
    from common.data import DataError

    try:
        cfg = RecommenderConfig.from_file(config)
    except (OSError, ValueError) as exc:
        raise DataError(f"config {config}: {exc}") from None
    model = overrides.pop("model", None) or cfg.model
    if model not in MODELS:
        raise typer.BadParameter(f"unknown model {model!r}; choose one of {', '.join(MODELS)}", param_hint="--model")
    cfg.model = model
    for key in ("weighting", "k", "seed"):
        if overrides.get(key) is not None:
            setattr(cfg, key, overrides[key])
        overrides.pop(key, None)
    params = {k: v for k, v in overrides.items() if v is not None}
    if params:
        cfg.params.setdefault(model, {}).update(params)
    return cfg


@app.command()
def demo(
    tiny: bool = typer.Option(False, help="a few hundred users: seconds instead of minutes"),
    seed: int = typer.Option(42, "--seed"),
) -> None:
    """The whole lifecycle on synthetic data, offline, in $MLREF_HOME/demo/recommender (your registry untouched)."""
    from apps.recommender.demo import run_demo

    with cli.demo_home(APP) as home:
        summary = run_demo(tiny=tiny, seed=seed)
    cli.echo_json(summary)
    typer.echo(
        f"demo home: {home} (your own registry is untouched). Open next: {summary['report']}; "
        f"`mlflow ui --backend-store-uri sqlite:///{home.resolve()}/mlflow.db`; "
        f"your own data: python -m apps.{APP} train --dataset FILE",
        err=True,
    )


@app.command()
def train(
    dataset: str = DATASET,
    config: Path | None = cli.CONFIG,
    model: str = typer.Option(None, help=f"one of {', '.join(MODELS)} (default from config: als)"),
    factors: int | None = typer.Option(None, min=1, help="ALS/BPR latent factors"),
    regularization: float | None = typer.Option(None, min=0.0, help="ALS/BPR regularisation"),
    alpha: float | None = typer.Option(None, min=0.0, help="ALS confidence scale (confidence = alpha * weight)"),
    iterations: int | None = typer.Option(None, min=1, help="ALS/BPR iterations"),
    lambda_: float | None = typer.Option(None, "--lambda", min=0.0, help="EASE L2 regularisation"),
    weighting: str | None = typer.Option(None, help="none | bm25 | tfidf"),
    tune: int = cli.TUNE,
    promote: bool | None = cli.PROMOTE,
    seed: int | None = cli.SEED,
    tune_budget: float | None = typer.Option(
        None, "--tune-budget", min=1.0, help="seconds of tuning at most (default: config tune_budget_s, 120)"
    ),
) -> None:
    """Evaluate on a held-out split, then fit on all data and register a version (champion if none yet)."""
    from apps.recommender.data import load_dataset
    from apps.recommender.lifecycle import register_bundle
    from apps.recommender.train import train_model
    from common import tracking

    cfg = _config(
        config,
        model=model,
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        lambda_=lambda_,
        weighting=weighting,
        seed=seed,
    )
    ds = load_dataset(dataset)
    log.info("dataset %s: %s", ds.name, ds.summary())
    with tracking.start_run(
        f"{APP}-training",
        run_name=f"train-{cfg.model}",
        tags={"dataset": ds.name},
        params={"model": cfg.model, "tune_trials": tune, **cfg.model_params()},
    ):
        result = train_model(ds, cfg, tune_trials=tune, budget_s=tune_budget)
        held_out = result.held_out
        tracking.log_metrics({k: v for k, v in held_out.items() if isinstance(v, float)})
        if result.tuning:
            tracking.log_dict(result.tuning, "tuning.json")
        alias = cli.choose_alias(REGISTRY_NAME, promote)
        mv = register_bundle(result.bundle, ds.interactions, metrics=held_out, alias=alias, k=cfg.k, dataset=ds.name)
    cli.echo_json(
        {
            "version": mv.version,
            "alias": alias,
            "dataset": ds.name,
            "model": cfg.model,
            "params": result.params,
            "tuning": result.tuning,
            "held_out": {k: round(v, 4) for k, v in held_out.items() if isinstance(v, float)},
        }
    )
    typer.echo(cli.train_summary(REGISTRY_NAME, APP, mv.version), err=True)


@app.command()
def evaluate(
    dataset: str = DATASET,
    config: Path | None = cli.CONFIG,
    protocol: str = typer.Option("ms-stratified", help="ms-stratified | leave-last-out"),
    models: str = typer.Option("als,ease,itemknn,bpr,popular,random", help="comma-separated"),
    k: int = typer.Option(10, "--k", min=1, max=100, help="cut-off of the ranking metrics"),
    seed: int | None = cli.SEED,
) -> None:
    """Compare models and baselines on one protocol; writes metrics JSON + report to $MLREF_HOME/reports/."""
    from apps.recommender.data import load_dataset
    from apps.recommender.evaluate import split, write_evaluation_report
    from apps.recommender.train import compare_models
    from common import tracking

    cfg = _config(config, k=k, seed=seed)
    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = set(names) - set(MODELS)
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}", param_hint="--models"
        )
    ds = load_dataset(dataset)
    tr, te = split(ds.interactions, protocol, ratio=1 - cfg.test_ratio, seed=cfg.seed, source=ds.name)
    table, bundles, curves = compare_models(tr, te, {m: (m, None) for m in names}, cfg, ks=(k,), item_meta=ds.items)
    out = new_report_dir(APP, ds.name, "evaluation", run_id=protocol)
    path = write_evaluation_report(
        out,
        table,
        curves,
        bundles,
        {m: te for m in names},
        title=f"Recommender on {ds.name} ({protocol})",
        sections={"Protocol": protocol},
        model_info={"models": names, "config": cfg.to_dict()},
        k=k,
        data=ds.summary(),
        dataset=ds.name,
        champion=cfg.model if cfg.model in names else None,
    )
    for name, row in table.iterrows():  # one MLflow run per model, like training runs
        with tracking.start_run(
            f"{APP}-evaluation",
            run_name=str(name),
            tags={"dataset": ds.name},
            params={"model": name, "protocol": protocol, "k": k, "report": str(path)},
        ):
            tracking.log_metrics(row.to_dict())
    cli.echo_json({"report": str(path), "metrics": table.round(4).to_dict(orient="index")})


@app.command()
def serve(host: str | None = cli.HOST, port: int | None = cli.PORT) -> None:
    """Serve the registry's champion over HTTP (hot-swaps when the champion alias moves)."""
    from apps.recommender.service import build_app
    from common.serving import serve as run

    run(build_app(), host=host, port=port)


@app.command()
def predict(
    user: str = typer.Argument(None, help="a user id (omit with --items)"),
    items: str | None = typer.Option(None, help="comma-separated item history for an anonymous user"),
    k: int = typer.Option(10, "--k", min=1, max=100),
    ref: str = cli.REF,
) -> None:
    """Recommendations for one user (or one item history) from the registered model."""
    from apps.recommender.lifecycle import load_version

    if items is None and user is None:
        raise typer.BadParameter("give a USER or --items")
    bundle, mv = load_version(ref)
    if items is not None:
        rec = bundle.recommend_history([s.strip() for s in items.split(",") if s.strip()], k)
    else:
        rec = bundle.recommend_users([user], k)[0]
    cli.echo_json(
        {
            "version": mv.version,
            "strategy": rec.strategy,
            "unknown_items": rec.unknown_items,
            "items": [
                {"item": i, "score": round(s, 5), **bundle.item_info(i)}
                for i, s in zip(rec.items, rec.scores, strict=True)
            ],
        }
    )


@app.command()
def batch(
    input_path: Path | None = typer.Option(
        None, "--input", "-i", help="file with a 'user' column (default: every known user)"
    ),
    output: Path = typer.Option(Path("recommendations.parquet"), "--output", "-o", help=".parquet or .csv"),
    k: int = typer.Option(10, "--k", min=1, max=100),
    ref: str = cli.REF,
    chunksize: int = typer.Option(5000, "--chunksize", min=1, help="users per chunk"),
) -> None:
    """Top-k for every user to a file (chunked; the file appears only when complete)."""
    from apps.recommender.lifecycle import batch_recommend, load_version

    bundle, mv = load_version(ref)
    res = batch_recommend(bundle, output, k=k, users_file=input_path, chunksize=chunksize)
    cli.echo_json(
        {"version": mv.version, "rows": res.rows, "seconds": round(res.seconds, 2), "output": str(res.output)}
    )


@app.command()
def monitor(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="recent interactions file (same format as train's), or 'synthetic-next'"
    ),
    days: float | None = typer.Option(
        None, "--days", min=0.0, help="only the last N days of the file (default: all of it)"
    ),
    ref: str = cli.REF,
) -> None:
    """Recent interactions vs training: new users/items, popularity drift, coverage. Exit 1 on any alert."""
    from apps.recommender.data import TIMESTAMP, load_dataset, synthetic_next_period
    from apps.recommender.lifecycle import load_version
    from apps.recommender.lifecycle import monitor as run_monitor
    from common import registry
    from common.data import SECONDS_PER_DAY, DataError

    bundle, mv = load_version(ref)
    recent = (synthetic_next_period() if dataset == "synthetic-next" else load_dataset(dataset)).interactions
    if days is not None:
        if TIMESTAMP not in recent.columns:
            raise DataError(f"--days needs a '{TIMESTAMP}' column in {dataset}")
        recent = recent[recent[TIMESTAMP] > recent[TIMESTAMP].max() - days * SECONDS_PER_DAY]
    out = new_report_dir(APP, dataset, "monitor")
    res = run_monitor(bundle, registry.fetch_model_dir(mv), recent, out_dir=out, model_version=str(mv.version))
    cli.echo_json({"version": mv.version, "alerts": res.alerts, "stats": res.stats, "report": str(out / "drift.md")})
    cli.exit_monitor(bool(res.alerts))


@app.command()
def retrain(
    dataset: str = DATASET,
    new: str | None = typer.Option(None, help="new interactions to fold in ('synthetic-next' for the demo's)"),
    window_days: float = typer.Option(
        7.0, "--window-days", min=0.01, help="the latest window both models are compared on"
    ),
    margin: float = cli.MARGIN,
    config: Path | None = cli.CONFIG,
) -> None:
    """Train a challenger on old + new interactions; promote it only if it beats the champion on the window."""
    import pandas as pd

    from apps.recommender.data import load_dataset, synthetic_next_period
    from apps.recommender.lifecycle import retrain as run_retrain

    cfg = _config(config)
    base = load_dataset(dataset)
    frames, items = [base.interactions], base.items
    if new is not None:
        extra = synthetic_next_period() if new == "synthetic-next" else load_dataset(new)
        frames.append(extra.interactions)
        items = pd.concat([items, extra.items[~extra.items.index.isin(items.index)]])
    decision = run_retrain(
        pd.concat(frames, ignore_index=True), cfg, window_days=window_days, margin=margin, item_meta=items
    )
    cli.echo_json(decision.to_dict())


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

    doc = run_bench(
        dataset,
        tune_trials=tune_trials,
        output=cli.bench_output(APP, dataset, "ml-100k", output),
        threads=threads,
        tune_budget_s=tune_budget,
    )
    typer.echo(format_table(doc))
    cli.echo_json(doc["summary"])


def main() -> None:  # pragma: no cover
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
