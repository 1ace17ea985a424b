"""Model fitting, selection and tuning: interactions frame -> fitted :class:`RecommenderBundle`.

- :func:`fit_bundle` / :func:`train_dataset`: one model on a frame / on a whole dataset (the production model).
- :func:`compare_models`: fit and evaluate several candidates on one split (the evaluation table, the bench).
- :func:`tune`: Optuna search on a validation split carved out of the *training* data with the same protocol as
  the evaluation (the test split is never seen while tuning), within a time budget.
- :func:`train_model`: what ``train`` runs: split, optional tuning, held-out metrics, fit on all data.

This module imports :mod:`apps.recommender.evaluate` (protocols and metrics), never the other way round.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from apps.recommender.config import RecommenderConfig
from apps.recommender.data import GENRES, ITEM, TITLE, USER, Dataset
from apps.recommender.evaluate import check_split, evaluate_bundle, metric_vs_k, split, stratified_split
from apps.recommender.features import IdMap, build_matrix, weight_matrix
from apps.recommender.model import RecommenderBundle, make_model
from common.data import DataError

log = logging.getLogger(__name__)


def fit_bundle(
    train: pd.DataFrame,
    model: str,
    params: dict[str, Any] | None = None,
    *,
    cfg: RecommenderConfig | None = None,
    item_meta: pd.DataFrame | None = None,
    info: dict[str, Any] | None = None,
) -> RecommenderBundle:
    """Fit ``model`` on ``train`` (the interactions frame) and wrap it with its id maps and seen matrix.

    Raises:
        DataError: ``train`` has no interactions or fewer than 2 items (nothing to recommend).
    """
    cfg = cfg or RecommenderConfig()
    n_items = train[ITEM].nunique() if len(train) else 0
    if n_items < 2:
        raise DataError(
            f"cannot train a recommender on {len(train)} interaction(s) with {n_items} item(s): "
            "at least 2 items with interactions are needed"
        )
    params = cfg.model_params(model) if params is None else {**cfg.model_params(model), **params}
    users, items = IdMap.fit(train[USER]), IdMap.fit(train[ITEM])
    seen = build_matrix(train, users, items, binary=True)
    x = seen if cfg.binary else build_matrix(train, users, items, binary=False)
    x = weight_matrix(x, cfg.weighting)
    rec = make_model(model, params, seed=cfg.seed, threads=cfg.threads).fit(x)
    meta = item_meta if item_meta is not None else pd.DataFrame(columns=[TITLE, GENRES])
    info = {"weighting": cfg.weighting, "binary": cfg.binary, "trained_at": time.time(), **(info or {})}
    return RecommenderBundle(rec, users, items, seen, meta, info)


def train_dataset(
    ds: Dataset, cfg: RecommenderConfig, model: str | None = None, params: dict[str, Any] | None = None
) -> RecommenderBundle:
    """Fit on all of a dataset (the production model)."""
    return fit_bundle(
        ds.interactions, model or cfg.model, params, cfg=cfg, item_meta=ds.items, info={"dataset": ds.name}
    )


# ------------------------------------------------------------------ model selection


def compare_models(
    train: pd.DataFrame,
    test: pd.DataFrame,
    models: dict[str, tuple[str, dict[str, Any] | None]],
    cfg: RecommenderConfig,
    *,
    ks: tuple[int, ...] = (10,),
    curve_ks: tuple[int, ...] | None = (1, 5, 10, 20, 50),
    item_meta: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, RecommenderBundle], dict[str, pd.DataFrame]]:
    """Fit and evaluate each ``label -> (model name, params)`` on one split.

    Returns (table: one row per label with metrics, ``train_s`` and ``predict_s``; bundles; metric-vs-k curves).
    """
    rows, bundles, curves = [], {}, {}
    for label, (name, params) in models.items():
        t0 = time.perf_counter()
        bundle = fit_bundle(train, name, params, cfg=cfg, item_meta=item_meta)
        train_s = time.perf_counter() - t0
        m = evaluate_bundle(bundle, test, ks)
        rows.append({"model": label, **m, "train_s": train_s})
        bundles[label] = bundle
        if curve_ks:
            curves[label] = metric_vs_k(bundle, test, curve_ks)
        log.info(
            "%-10s ndcg@%d %.4f  train %.2fs  predict %.2fs", label, ks[0], m[f"ndcg@{ks[0]}"], train_s, m["predict_s"]
        )
    return pd.DataFrame(rows).set_index("model"), bundles, curves


# ------------------------------------------------------------------ tuning

SEARCH_SPACES = {
    "als": lambda t: {
        "factors": t.suggest_categorical("factors", [8, 16, 32, 64]),
        "regularization": t.suggest_float("regularization", 1e-3, 10.0, log=True),
        "alpha": t.suggest_float("alpha", 0.5, 50.0, log=True),
        "iterations": t.suggest_int("iterations", 10, 30, step=5),
    },
    "bpr": lambda t: {
        "factors": t.suggest_categorical("factors", [32, 64, 100, 128]),
        "learning_rate": t.suggest_float("learning_rate", 1e-3, 0.2, log=True),
        "regularization": t.suggest_float("regularization", 1e-4, 0.1, log=True),
        "iterations": t.suggest_int("iterations", 50, 300, step=50),
    },
    "itemknn": lambda t: {
        "K": t.suggest_int("K", 10, 400, log=True),
        "similarity": t.suggest_categorical("similarity", ["cosine", "bm25"]),
    },
    "ease": lambda t: {"lambda_": t.suggest_float("lambda_", 10.0, 5000.0, log=True)},
}


def tune(
    train: pd.DataFrame,
    model: str,
    n_trials: int,
    *,
    cfg: RecommenderConfig | None = None,
    metric: str | None = None,
    budget_s: float | None = None,
    valid_ratio: float = 0.15,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Optuna search (TPE, seeded) of ``model``'s hyper-parameters on a stratified validation split of ``train``.

    ``valid_ratio`` of each user's training interactions are held out for validation: small, so that the inner
    training set (and hence the best regularisation / number of factors) stays close to the real one. The first
    trial is the configured parameters, so tuning can only confirm or improve them on validation.

    Budget: at most ``n_trials`` trials and ``budget_s`` seconds (default ``cfg.tune_budget``); a trial is not
    started when the mean trial time so far says it would end past the budget. Slow fits (EASE on a large
    catalogue) therefore get fewer trials, and the search ends within about the budget whatever the data size.
    ``metric`` defaults to ``ndcg@{cfg.k}``. Returns (best params merged over the configured ones, trials table).
    """
    import optuna

    cfg = cfg or RecommenderConfig()
    metric = metric or f"ndcg@{cfg.k}"
    cutoff = int(metric.rsplit("@", 1)[1]) if "@" in metric else cfg.k
    budget = cfg.tune_budget if budget_s is None else float(budget_s)
    if model not in SEARCH_SPACES:
        raise ValueError(f"no search space for {model!r}; tunable: {list(SEARCH_SPACES)}")
    inner_train, valid = stratified_split(train, 1 - valid_ratio, seed=cfg.seed + 1)
    check_split(
        train,
        inner_train,
        valid,
        f"the tuning validation split ({valid_ratio:.0%} of each user's training interactions)",
    )

    def objective(trial: optuna.Trial) -> float:
        params = SEARCH_SPACES[model](trial)
        bundle = fit_bundle(inner_train, model, params, cfg=cfg)
        return evaluate_bundle(bundle, valid, (cutoff,))[metric]

    start = time.perf_counter()

    def stop_before_overrun(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        done = [t.duration.total_seconds() for t in study.trials if t.duration is not None]
        elapsed = time.perf_counter() - start
        if done and elapsed + sum(done) / len(done) > budget:
            log.info(
                "tuning %s: stopping after %d trial(s), %.0fs: the next would pass the %.0fs budget",
                model,
                len(done),
                elapsed,
                budget,
            )
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.enqueue_trial(cfg.model_params(model))  # keys outside the search space are ignored
    study.optimize(
        objective, n_trials=n_trials, timeout=budget, callbacks=[stop_before_overrun], show_progress_bar=False
    )
    best = {**cfg.model_params(model), **study.best_params}
    log.info(
        "tuned %s: %d trial(s) in %.1fs, validation %s %.4f with %s",
        model,
        len(study.trials),
        time.perf_counter() - start,
        metric,
        study.best_value,
        best,
    )
    return best, study.trials_dataframe()


# ------------------------------------------------------------------ the train command


@dataclass
class TrainResult:
    """What :func:`train_model` produced: the production bundle and how it was chosen."""

    bundle: RecommenderBundle  # fitted on all the data
    params: dict[str, Any]  # the hyper-parameters used (tuned when trials were run)
    held_out: dict[str, Any]  # metrics at cfg.k of the same model fitted on the training split, on the test split
    tuning: dict[str, Any] | None = None  # trials run, seconds, best validation value


def train_model(
    ds: Dataset, cfg: RecommenderConfig, *, tune_trials: int = 0, budget_s: float | None = None
) -> TrainResult:
    """Split (MS-stratified, ``1 - cfg.test_ratio`` per user), optionally tune on the training split, measure
    on the test split, then fit on all of ``ds``.

    Raises:
        DataError: too little data to split, tune or fit (one line saying what is missing).
    """
    train, test = split(ds.interactions, "ms-stratified", ratio=1 - cfg.test_ratio, seed=cfg.seed, source=ds.name)
    params, tuning = cfg.model_params(), None
    if tune_trials:
        t0 = time.perf_counter()
        params, trials = tune(train, cfg.model, tune_trials, cfg=cfg, budget_s=budget_s)
        tuning = {
            "trials": len(trials),
            "seconds": round(time.perf_counter() - t0, 2),
            f"validation_ndcg@{cfg.k}": float(trials["value"].max()),
        }
    held_out = evaluate_bundle(fit_bundle(train, cfg.model, params, cfg=cfg), test, (cfg.k,))
    bundle = train_dataset(ds, cfg, params=params)
    return TrainResult(bundle, params, held_out, tuning)
