"""Training and tuning: interactions frame -> fitted :class:`RecommenderBundle`.

Hyper-parameter search (Optuna, TPE, seeded) uses a validation split carved out of the *training* data with the
same protocol as the evaluation; the test split is never seen while tuning.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from apps.recommender.config import RecommenderConfig
from apps.recommender.data import GENRES, ITEM, TITLE, USER, Dataset
from apps.recommender.evaluate import evaluate_bundle, stratified_split
from apps.recommender.features import IdMap, build_matrix, weight_matrix
from apps.recommender.model import RecommenderBundle, make_model

log = logging.getLogger(__name__)


def fit_bundle(train: pd.DataFrame, model: str, params: dict[str, Any] | None = None, *,
               cfg: RecommenderConfig | None = None, item_meta: pd.DataFrame | None = None,
               info: dict[str, Any] | None = None) -> RecommenderBundle:
    """Fit ``model`` on ``train`` (the interactions frame) and wrap it with its id maps and seen matrix."""
    cfg = cfg or RecommenderConfig()
    params = cfg.model_params(model) if params is None else {**cfg.model_params(model), **params}
    users, items = IdMap.fit(train[USER]), IdMap.fit(train[ITEM])
    seen = build_matrix(train, users, items, binary=True)
    x = seen if cfg.binary else build_matrix(train, users, items, binary=False)
    x = weight_matrix(x, cfg.weighting)
    rec = make_model(model, params, seed=cfg.seed, threads=cfg.threads).fit(x)
    meta = item_meta if item_meta is not None else pd.DataFrame(columns=[TITLE, GENRES])
    info = {"weighting": cfg.weighting, "binary": cfg.binary, "trained_at": time.time(), **(info or {})}
    return RecommenderBundle(rec, users, items, seen, meta, info)


def train_dataset(ds: Dataset, cfg: RecommenderConfig, model: str | None = None,
                  params: dict[str, Any] | None = None) -> RecommenderBundle:
    """Fit on all of a dataset (the production model)."""
    return fit_bundle(ds.interactions, model or cfg.model, params, cfg=cfg, item_meta=ds.items,
                      info={"dataset": ds.name})


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


def tune(train: pd.DataFrame, model: str, n_trials: int, *, cfg: RecommenderConfig | None = None,
         metric: str = "ndcg@10", timeout_s: float | None = None,
         valid_ratio: float = 0.15) -> tuple[dict[str, Any], pd.DataFrame]:
    """Optuna search of ``model``'s hyper-parameters on a stratified validation split of ``train``.

    ``valid_ratio`` of each user's training interactions are held out for validation: small, so that the inner
    training set (and hence the best regularisation / number of factors) stays close to the real one.
    Returns (best params merged over the defaults, trials table). The caller evaluates on its own test split.
    """
    import optuna

    cfg = cfg or RecommenderConfig()
    if model not in SEARCH_SPACES:
        raise ValueError(f"no search space for {model!r}; tunable: {list(SEARCH_SPACES)}")
    inner_train, valid = stratified_split(train, 1 - valid_ratio, seed=cfg.seed + 1)

    def objective(trial: optuna.Trial) -> float:
        params = SEARCH_SPACES[model](trial)
        bundle = fit_bundle(inner_train, model, params, cfg=cfg)
        return evaluate_bundle(bundle, valid, (10,))[metric]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    # start from the defaults so tuning can only confirm or improve them on validation
    study.enqueue_trial({k: v for k, v in cfg.model_params(model).items()})
    study.optimize(objective, n_trials=n_trials, timeout=timeout_s, show_progress_bar=False)
    best = {**cfg.model_params(model), **study.best_params}
    log.info("tuned %s: validation %s %.4f with %s", model, metric, study.best_value, best)
    return best, study.trials_dataframe()
