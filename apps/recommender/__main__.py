"""``python -m apps.recommender <command>``: implicit-feedback top-k recommendations, served and retrained.

Datasets (``--dataset``): ``synthetic`` (default, offline), ``ml-100k``, ``ml-1m`` (GroupLens, fetched into
``MLREF_DATA_DIR``), or a path to your own ``user,item[,weight][,timestamp]`` CSV/parquet file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from apps.recommender.config import MODELS, REGISTRY_NAME, RecommenderConfig
from common import cli

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
log = logging.getLogger("apps.recommender")

DatasetOpt = typer.Option("synthetic", "--dataset", "-d", help="synthetic | ml-100k | ml-1m | path to a CSV/parquet")
ConfigOpt = typer.Option(None, "--config", help="JSON file with RecommenderConfig fields")


def _setup(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config(config: Path | None, **overrides: Any) -> RecommenderConfig:
    cfg = RecommenderConfig.from_file(config)
    model = overrides.pop("model", None) or cfg.model
    cfg.model = model
    for key in ("weighting", "k", "seed"):
        if overrides.get(key) is not None:
            setattr(cfg, key, overrides.pop(key))
        overrides.pop(key, None)
    params = {k: v for k, v in overrides.items() if v is not None}
    if params:
        cfg.params.setdefault(model, {}).update(params)
    return cfg


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command()
def demo(tiny: bool = typer.Option(False, help="a few hundred users: seconds instead of minutes"),
         seed: int = 42) -> None:
    """The whole lifecycle on synthetic data, offline: evaluate, register, serve, batch, drift, retrain."""
    _setup()
    from apps.recommender.demo import run_demo

    _print(run_demo(tiny=tiny, seed=seed))


@app.command()
def train(
    dataset: str = DatasetOpt, config: Path | None = ConfigOpt,
    model: str = typer.Option(None, help=f"one of {', '.join(MODELS)} (default from config: als)"),
    factors: int | None = typer.Option(None, help="ALS/BPR latent factors"),
    regularization: float | None = typer.Option(None, help="ALS/BPR regularisation"),
    alpha: float | None = typer.Option(None, help="ALS confidence scale (confidence = alpha * weight)"),
    iterations: int | None = typer.Option(None, help="ALS/BPR iterations"),
    lambda_: float | None = typer.Option(None, "--lambda", help="EASE L2 regularisation"),
    weighting: str | None = typer.Option(None, help="none | bm25 | tfidf"),
    tune: int = typer.Option(0, "--tune", help="Optuna trials on a validation split (0 = no search)"),
    promote: bool | None = typer.Option(None, help="set the champion alias (default: only if none exists)"),
    seed: int | None = None,
) -> None:
    """Evaluate on a held-out split, then fit on all data and register a version (champion if none yet)."""
    _setup()
    from apps.recommender.data import load_dataset
    from apps.recommender.evaluate import evaluate_bundle, stratified_split
    from apps.recommender.lifecycle import register_bundle
    from apps.recommender.train import fit_bundle, train_dataset
    from apps.recommender.train import tune as run_tune
    from common import registry

    cfg = _config(config, model=model, factors=factors, regularization=regularization, alpha=alpha,
                  iterations=iterations, lambda_=lambda_, weighting=weighting, seed=seed)
    ds = load_dataset(dataset)
    log.info("dataset %s: %s", ds.name, ds.summary())
    tr, te = stratified_split(ds.interactions, 1 - cfg.test_ratio, cfg.seed)
    if tune:
        best, _ = run_tune(tr, cfg.model, tune, cfg=cfg)
        cfg.params[cfg.model] = best
    held_out = evaluate_bundle(fit_bundle(tr, cfg.model, cfg.model_params(), cfg=cfg), te, (cfg.k,))
    bundle = train_dataset(ds, cfg)
    has_champion = registry.find(REGISTRY_NAME, registry.CHAMPION) is not None
    alias = registry.CHAMPION if (promote or (promote is None and not has_champion)) else registry.CHALLENGER
    mv = register_bundle(bundle, ds.interactions, metrics=held_out, alias=alias, k=cfg.k)
    _print({"version": mv.version, "alias": alias, "model": cfg.model, "params": cfg.model_params(),
            "held_out": {k: round(v, 4) for k, v in held_out.items() if isinstance(v, float)}})


@app.command()
def evaluate(
    dataset: str = DatasetOpt, config: Path | None = ConfigOpt,
    protocol: str = typer.Option("ms-stratified", help="ms-stratified | leave-last-out"),
    models: str = typer.Option("als,ease,itemknn,bpr,popular,random", help="comma-separated"),
    k: int = 10,
) -> None:
    """Compare models and baselines on one protocol; writes metrics JSON + report to $MLREF_HOME/reports/."""
    _setup()
    from apps.recommender.data import load_dataset
    from apps.recommender.evaluate import compare_models, split, write_evaluation_report
    from common.config import get_settings

    cfg = _config(config, k=k)
    ds = load_dataset(dataset)
    tr, te = split(ds.interactions, protocol, ratio=1 - cfg.test_ratio, seed=cfg.seed)
    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        raise typer.BadParameter(f"unknown models {sorted(unknown)}; choose from {MODELS}")
    table, bundles, curves = compare_models(tr, te, {m: (m, None) for m in names}, cfg, ks=(k,),
                                            item_meta=ds.items)
    out = get_settings().path("reports", REGISTRY_NAME, ds.name, protocol, "report.md").parent
    shown = names[:3]
    path = write_evaluation_report(
        out, table, curves, {m: bundles[m] for m in shown}, {m: te for m in shown},
        title=f"Recommender on {ds.name} ({protocol})",
        sections={"Data": json.dumps(ds.summary()), "Protocol": protocol},
        model_info={"models": names, "config": cfg.to_dict()},
    )
    _print({"report": str(path), "metrics": table.round(4).to_dict(orient="index")})


@app.command()
def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the registry's champion over HTTP (hot-swaps when the champion alias moves)."""
    _setup()
    from apps.recommender.service import build_app
    from common.serving import serve as run

    run(build_app(), host=host, port=port)


@app.command()
def predict(
    user: str = typer.Argument(None, help="a user id (omit with --items)"),
    items: str | None = typer.Option(None, help="comma-separated item history for an anonymous user"),
    k: int = 10, ref: str = typer.Option("champion", help="registry alias or version"),
) -> None:
    """Recommendations for one user (or one item history) from the registered model."""
    _setup()
    from apps.recommender.lifecycle import load_version

    bundle, mv = load_version(ref)
    if items is not None:
        rec = bundle.recommend_history([s.strip() for s in items.split(",") if s.strip()], k)
    elif user is not None:
        rec = bundle.recommend_users([user], k)[0]
    else:
        raise typer.BadParameter("give a USER or --items")
    _print({"version": mv.version, "strategy": rec.strategy, "unknown_items": rec.unknown_items,
            "items": [{"item": i, "score": round(s, 5), **bundle.item_info(i)}
                      for i, s in zip(rec.items, rec.scores, strict=True)]})


@app.command()
def batch(
    output: Path = typer.Option(Path("recommendations.parquet"), help=".parquet or .csv"),
    users: Path | None = typer.Option(None, help="file with a 'user' column (default: every known user)"),
    k: int = 10, ref: str = "champion",
) -> None:
    """Top-k for every user to a file (chunked; the file appears only when complete)."""
    _setup()
    from apps.recommender.lifecycle import batch_recommend, load_version

    bundle, mv = load_version(ref)
    res = batch_recommend(bundle, output, k=k, users_file=users)
    _print({"version": mv.version, "rows": res.rows, "seconds": round(res.seconds, 2), "output": str(res.output)})


@app.command()
def monitor(
    recent: str = typer.Option(..., help="recent interactions file (same format as --dataset), or 'synthetic-next'"),
    ref: str = "champion",
) -> None:
    """Recent interactions vs training: new users/items, popularity drift, coverage. Exit 1 on any alert."""
    _setup()
    from apps.recommender.data import load_dataset, synthetic_next_period
    from apps.recommender.lifecycle import load_version
    from apps.recommender.lifecycle import monitor as run_monitor
    from common import monitoring, registry
    from common.config import get_settings

    bundle, mv = load_version(ref)
    ds = synthetic_next_period() if recent == "synthetic-next" else load_dataset(recent)
    profile = monitoring.ReferenceProfile.load(registry.fetch_model_dir(mv) / "reference.json")
    out = get_settings().path("reports", REGISTRY_NAME, "monitor", "x").parent
    res = run_monitor(bundle, profile, ds.interactions, out_dir=out)
    _print({"version": mv.version, "alerts": res.alerts, "stats": res.stats, "report": str(out / "drift.md")})
    raise typer.Exit(res.exit_code)


@app.command()
def retrain(
    dataset: str = DatasetOpt,
    new: str | None = typer.Option(None, help="new interactions to fold in ('synthetic-next' for the demo's)"),
    window_days: float = typer.Option(7.0, help="the latest window both models are compared on"),
    margin: float = typer.Option(0.0, help="nDCG@10 the challenger must gain to be promoted"),
    config: Path | None = ConfigOpt,
) -> None:
    """Train a challenger on old + new interactions; promote it only if it beats the champion on the window."""
    _setup()
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
    decision = run_retrain(pd.concat(frames, ignore_index=True), cfg, window_days=window_days, margin=margin,
                           item_meta=items)
    _print(decision.to_dict())


@app.command()
def bench(
    dataset: str = typer.Option("ml-100k", help="ml-100k (default) or ml-1m"),
    output: Path = typer.Option(Path("bench/results/recommender.json")),
    tune_trials: int = typer.Option(
        20, "--tune", help="also tune ALS, EASE and item-kNN: N Optuna trials each on a validation split (0 = off)"),
    threads: int = 2,
) -> None:
    """Every model and baseline under the MS Recommenders protocol; writes bench/results/recommender.json."""
    _setup()
    from apps.recommender.bench import format_table, run_bench

    doc = run_bench(dataset, tune_trials=tune_trials, output=output, threads=threads)
    typer.echo(format_table(doc))
    _print(doc["summary"])


def main() -> None:  # pragma: no cover
    cli.run(app)


if __name__ == "__main__":  # pragma: no cover
    main()
