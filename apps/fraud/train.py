"""Training: prepared data, per-fold fitting, Optuna tuning on the validation folds, model selection and the
champion model that the registry stores.

Model selection follows the handbook: every candidate (a grid for the baselines, Optuna trials for XGBoost) is
scored by prequential *validation*; the candidate with the best mean validation average precision is then
scored on the prequential *test* folds, and only those test numbers are reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import FeatureConfig, FraudConfig, ProtocolConfig
from apps.fraud.data import DAY, LABEL, SCENARIO, SCHEMA, TIMESTAMP, add_day, labelled
from apps.fraud.evaluate import (
    alert_threshold,
    prequential_folds,
    run_folds,
    start_day_for_test,
    start_day_for_valid,
    summarise,
)
from apps.fraud.features import compute_features, feature_names, to_seconds
from apps.fraud.model import FraudModel
from common.data import SECONDS_PER_DAY, DataError, write_table
from common.monitoring import ReferenceProfile

log = logging.getLogger(__name__)

SELECTION_METRIC = "average_precision"
HISTORY_FILE = "history.parquet"  # in the model directory: the online state's warm-up transactions
# An alert threshold outside (LOW, HIGH) means the alert budget does not fit the data (see _finish).
ABSURD_THRESHOLD = (0.01, 0.99)

# Baseline grids: the handbook's (chapter 5.3), trimmed where a 2-core run would take too long.
BASELINE_GRIDS: dict[str, dict[str, list[Any]]] = {
    "logreg": {"C": [0.1, 1, 10, 100]},
    "decision_tree": {"max_depth": [2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 50]},
    "random_forest": {"n_estimators": [100], "max_depth": [10, 20]},
}
# The demo's (and the contract test's) baseline grids: seconds instead of minutes.
SMALL_GRIDS: dict[str, dict[str, list[Any]]] = {
    "logreg": {"C": [0.1, 1.0]},
    "decision_tree": {"max_depth": [5, 8]},
    "random_forest": {"n_estimators": [50], "max_depth": [10]},
}


def prepare(df: pd.DataFrame, cfg: FeatureConfig | None = None) -> pd.DataFrame:
    """``df`` plus :data:`DAY` and the feature columns (computed once over the whole history, past-only).

    Every row feeds the features, labelled or not; model fitting and evaluation use the labelled rows only
    (:func:`recent_window`, :func:`apps.fraud.evaluate.train_test_split`)."""
    cfg = cfg or FeatureConfig()
    out = add_day(df) if DAY not in df.columns else df
    feats = compute_features(out, cfg)
    return pd.concat([out.drop(columns=[c for c in feats.columns if c in out.columns]), feats], axis=1)


def fit_predict_factory(kind: str, params: dict[str, Any], features: list[str], *, seed: int = 0):
    """A ``(train, test) -> (scores, fit_s, predict_s)`` function for :func:`apps.fraud.evaluate.run_folds`."""

    def fit_predict(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float, float]:
        t0 = time.perf_counter()
        model = FraudModel.fit(kind, train[features], train[LABEL].to_numpy(), params, seed=seed)
        t1 = time.perf_counter()
        scores = model.predict_proba(test[features])
        return scores, t1 - t0, time.perf_counter() - t1

    return fit_predict


@dataclass
class Candidate:
    """One model configuration with its validation (and, once selected, test) results."""

    kind: str
    params: dict[str, Any]
    validation: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    test_folds: pd.DataFrame | None = None


def score_validation(
    prepared: pd.DataFrame, kind: str, params: dict[str, Any], features: list[str], p: ProtocolConfig, *, seed: int = 0
) -> dict[str, float]:
    """Mean/std of the metrics over the prequential validation folds."""
    n_days = int(prepared[DAY].max()) + 1
    folds = prequential_folds(prepared, start_day_for_valid(p, n_days), p)
    return summarise(
        run_folds(prepared, folds, fit_predict_factory(kind, params, features, seed=seed), p.top_k), p.top_k
    )


def score_test(
    prepared: pd.DataFrame, kind: str, params: dict[str, Any], features: list[str], p: ProtocolConfig, *, seed: int = 0
) -> tuple[dict[str, float], pd.DataFrame]:
    """Summary and per-fold metrics over the prequential test folds."""
    n_days = int(prepared[DAY].max()) + 1
    folds = prequential_folds(prepared, start_day_for_test(p, n_days), p)
    per_fold = run_folds(prepared, folds, fit_predict_factory(kind, params, features, seed=seed), p.top_k)
    return summarise(per_fold, p.top_k), per_fold


def grid_search(
    prepared: pd.DataFrame,
    kind: str,
    grid: dict[str, list[Any]],
    features: list[str],
    p: ProtocolConfig,
    *,
    seed: int = 0,
) -> Candidate:
    """Best grid point by mean validation :data:`SELECTION_METRIC`; then its test folds."""
    best: Candidate | None = None
    for values in product(*grid.values()):
        params = dict(zip(grid.keys(), values, strict=True))
        v = score_validation(prepared, kind, params, features, p, seed=seed)
        log.info("%s %s validation AP %.4f", kind, params, v[SELECTION_METRIC])
        if best is None or v[SELECTION_METRIC] > best.validation[SELECTION_METRIC]:
            best = Candidate(kind, params, v)
    assert best is not None
    best.test, best.test_folds = score_test(prepared, kind, best.params, features, p, seed=seed)
    return best


TUNED_XGB_PARAMS = (
    "n_estimators",
    "max_depth",
    "learning_rate",
    "subsample",
    "colsample_bytree",
    "min_child_weight",
    "reg_lambda",
    "gamma",
)


def tune_xgboost(
    prepared: pd.DataFrame,
    features: list[str],
    p: ProtocolConfig,
    *,
    n_trials: int = 30,
    seed: int = 0,
    base: dict[str, Any] | None = None,
) -> Candidate:
    """Optuna (TPE, seeded) search of XGBoost parameters on the validation folds; then its test folds.

    The first trial is ``base`` (the config defaults), so tuning can only match or improve on them on validation.
    The parameters of ``base`` that are not searched (``max_bin``, ``base_score``, ``tree_method``, ...) are kept
    in every trial.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[int, dict[str, float]] = {}
    fixed = {k: v for k, v in (base or {}).items() if k not in TUNED_XGB_PARAMS}

    def objective(trial: optuna.Trial) -> float:
        params = fixed | {
            "n_estimators": trial.suggest_int("n_estimators", 50, 600, step=50),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 20, log=True),
            "gamma": trial.suggest_float("gamma", 0.0, 2.0),
        }
        v = score_validation(prepared, "xgboost", params, features, p, seed=seed)
        results[trial.number] = v
        log.info(
            "xgboost trial %d validation AP %.4f CP %.4f",
            trial.number,
            v[SELECTION_METRIC],
            v[f"card_precision@{p.top_k}"],
        )
        return v[SELECTION_METRIC]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    if base:
        study.enqueue_trial({k: v for k, v in base.items() if k in TUNED_XGB_PARAMS})
    study.optimize(objective, n_trials=n_trials)
    best = Candidate("xgboost", fixed | dict(study.best_params), results[study.best_trial.number])
    best.test, best.test_folds = score_test(prepared, "xgboost", best.params, features, p, seed=seed)
    return best


def recent_window(prepared: pd.DataFrame, train_days: int, delay_days: int, end_day: int | None = None) -> pd.DataFrame:
    """The labelled rows of the ``train_days`` days ending at ``end_day`` (inclusive); by default the latest days
    whose labels are known, which end ``delay_days`` before the data's last day."""
    end = int(prepared[DAY].max()) - delay_days if end_day is None else end_day
    return labelled(prepared[(prepared[DAY] > end - train_days) & (prepared[DAY] <= end)])


def train_model(
    prepared: pd.DataFrame,
    cfg: FraudConfig,
    *,
    kind: str = "xgboost",
    params: dict[str, Any] | None = None,
    train_days: int | None = None,
    end_day: int | None = None,
    seed: int = 0,
) -> FraudModel:
    """Fit the production model on the most recent labelled ``train_days`` (default: the protocol's 7; or the
    days ending at ``end_day``) and set its alert threshold to meet ``cfg.serving.alerts_per_day`` on them
    (the alert budget: ``replace(cfg, serving=replace(cfg.serving, alerts_per_day=N))``)."""
    features = feature_names(cfg.features)
    params = cfg.xgb.params() if params is None and kind == "xgboost" else dict(params or {})
    train_days = train_days or cfg.protocol.delta_train
    window = recent_window(prepared, train_days, cfg.features.delay_days, end_day)
    _check_window(window, train_days)
    t0 = time.perf_counter()
    model = FraudModel.fit(kind, window[features], window[LABEL].to_numpy(), params, seed=seed)
    return _finish(model, window, cfg, time.perf_counter() - t0)


def _check_window(window: pd.DataFrame, train_days: int) -> None:
    if window.empty or window[LABEL].nunique() < 2:
        what = "no labelled rows" if window.empty else f"only label {window[LABEL].iloc[0]:g}"
        raise DataError(
            f"the latest {train_days} labelled days have {what}: a model needs frauds and genuine "
            f"transactions to learn from (use more days: --train-days, or a file with both labels)"
        )


def check_alert_budget(alerts_per_day: int, day: np.ndarray, threshold: float) -> list[str]:
    """Warnings when an alert budget does not fit the data: more alerts than a day's transactions, or a threshold
    outside :data:`ABSURD_THRESHOLD` (nearly everything, or nearly nothing, raises an alert). Each is logged."""
    if alerts_per_day < 1:
        raise ValueError(f"alerts_per_day must be >= 1, got {alerts_per_day}")
    out = []
    per_day = float(np.median(np.unique(day, return_counts=True)[1])) if len(day) else 0.0
    if alerts_per_day > per_day:
        out.append(
            f"alert budget {alerts_per_day}/day exceeds the median {per_day:.0f} transactions a day: "
            f"every transaction would raise an alert"
        )
    low, high = ABSURD_THRESHOLD
    if not low < threshold < high:
        out.append(
            f"alert budget {alerts_per_day}/day sets the decision threshold to {threshold:.4g}, outside "
            f"({low}, {high}): {'nearly every' if threshold <= low else 'almost no'} transaction is "
            f"an alert; choose another budget"
        )
    for w in out:
        log.warning(w)
    return out


def _finish(model: FraudModel, window: pd.DataFrame, cfg: FraudConfig, fit_s: float) -> FraudModel:
    """Alert threshold (``cfg.serving.alerts_per_day`` on the training window, with a warning when the budget
    is absurd for the data) and training summary."""
    scores = model.predict_proba(window[model.features])
    return finish_scored(model, window[DAY].to_numpy(), window[LABEL].to_numpy(), scores, cfg, fit_s)


def finish_scored(
    model: FraudModel, day: np.ndarray, label: np.ndarray, scores: np.ndarray, cfg: FraudConfig, fit_s: float
) -> FraudModel:
    """:func:`_finish` from the training window's days, labels and scores (the out-of-core path brings back only
    these three columns)."""
    budget = cfg.serving.alerts_per_day
    model.threshold = alert_threshold(day, scores, budget)
    warnings = check_alert_budget(budget, day, model.threshold)
    model.info = {
        "train_days": [int(day.min()), int(day.max())],
        "train_rows": len(day),
        "train_frauds": int(label.sum()),
        "fit_seconds": round(fit_s, 3),
        "alerts_per_day": budget,
        "feature_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg.features).items()},
    }
    if warnings:
        model.info["warnings"] = warnings
    return model


def feature_config_of(model: FraudModel) -> FeatureConfig:
    """The feature configuration ``model`` was trained with (recorded in ``info``; defaults for older models)."""
    recorded = model.info.get("feature_config") or {}
    known = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in recorded.items()
        if k in FeatureConfig.__dataclass_fields__
    }
    if recorded and "groups" not in known:  # recorded before feature groups: `extended` meant the amount ratios
        known["groups"] = ("amount_ratio",)
    return FeatureConfig(**known)


@contextmanager
def dask_client(
    scheduler: str | None = None, *, client: Any = None, n_workers: int = 2, timeout: float = 10.0
) -> Iterator[Any]:
    """A ``distributed.Client``: ``client`` itself if given; else one connected to ``scheduler``
    (``tcp://host:8786``), or to a fresh local cluster of ``n_workers`` single-threaded worker processes for
    ``scheduler`` ``None`` or ``"local"``. An unreachable scheduler raises :class:`ConnectionError` naming it."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    with ExitStack() as stack:
        if scheduler in (None, "", "local"):
            cluster = stack.enter_context(
                LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0")
            )
            address = cluster.scheduler_address
        else:
            address = scheduler
        try:
            c = stack.enter_context(Client(address, timeout=timeout))
        except (OSError, TimeoutError, ValueError) as e:
            raise ConnectionError(
                f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s "
                f"({type(e).__name__}: {e}); start one (`dask scheduler` + `dask worker "
                f"ADDRESS`) or use --scheduler local"
            ) from e
        yield c


def train_model_dask(
    prepared: pd.DataFrame,
    cfg: FraudConfig,
    *,
    client: Any = None,
    scheduler: str | None = None,
    params: dict[str, Any] | None = None,
    train_days: int | None = None,
    end_day: int | None = None,
    seed: int = 0,
    npartitions: int | None = None,
    connect_timeout: float = 10.0,
) -> FraudModel:
    """:func:`train_model` for the XGBoost model with the training rows split into Dask partitions and fitted by
    ``xgboost.dask`` on the cluster (``client``, or ``scheduler``: see :func:`dask_client`). ``npartitions``
    defaults to 2 per worker.

    Same window, features, parameters (translated to the native ones by the same ``XGBClassifier`` that
    :func:`train_model` uses) and threshold; returns an ordinary ``FraudModel`` (a plain ``xgboost.Booster``), so it
    saves, registers and serves unchanged. The trees differ slightly from the single-machine fit: the histogram
    bins come from a distributed quantile sketch and row subsampling draws per worker.
    """
    import dask.dataframe as dd

    features = feature_names(cfg.features)
    params = cfg.xgb.params() if params is None else dict(params)
    train_days = train_days or cfg.protocol.delta_train
    window = recent_window(prepared, train_days, cfg.features.delay_days, end_day)
    _check_window(window, train_days)
    X = window[features].astype(np.float32).reset_index(drop=True)
    y = window[LABEL].astype(np.float32).reset_index(drop=True)
    with dask_client(scheduler, client=client, timeout=connect_timeout) as c:
        n_workers = len(c.scheduler_info().get("workers", {}))
        if n_workers == 0:
            raise ConnectionError(f"the Dask scheduler at {c.scheduler.address} has no workers")
        nparts = max(1, min(npartitions or 2 * n_workers, len(X)))
        t0 = time.perf_counter()
        dX = c.persist(dd.from_pandas(X, npartitions=nparts, sort=False))
        dy = c.persist(dd.from_pandas(y, npartitions=nparts, sort=False))
        booster, info = fit_dask_booster(c, dX, dy, features, params, seed=seed)
        fit_s = time.perf_counter() - t0
    model = FraudModel(kind="xgboost", features=features, estimator=booster, params=dict(params))
    model = _finish(model, window, cfg, fit_s)
    model.info["distributed"] = info
    return model


def fit_dask_booster(
    client: Any, X: Any, y: Any, features: list[str], params: dict[str, Any], *, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """``xgboost.dask`` fit of dask collections ``X`` (float32 features) and ``y`` on ``client``'s cluster with
    ``params`` (translated to native ones by the ``XGBClassifier`` :func:`train_model` uses); returns the booster
    and what ran it (``model.info["distributed"]``)."""
    import xgboost.dask as dxgb

    from apps.fraud.model import build_estimator

    est = build_estimator("xgboost", params, seed=seed)
    native = {k: v for k, v in est.get_xgb_params().items() if v is not None}
    dtrain = dxgb.DaskDMatrix(client, X, y, feature_names=features)
    out = dxgb.train(client, native, dtrain, num_boost_round=est.get_num_boosting_rounds(), verbose_eval=False)
    booster = out["booster"]
    booster.feature_names = features
    info = {
        "backend": "xgboost.dask",
        "scheduler": client.scheduler.address,
        "workers": len(client.scheduler_info().get("workers", {})),
        "partitions": X.npartitions,
    }
    return booster, info


def save_with_reference(
    model: FraudModel, model_dir: Path, reference_rows: pd.DataFrame, history: pd.DataFrame | None = None
) -> Path:
    """Save ``model``, the monitoring reference profile of its training features and scores, and (``history``:
    the transactions it was trained from) the online feature history that serving starts from."""
    model.save(model_dir)
    ref = reference_rows[model.features].copy()
    ref["prediction"] = model.predict_proba(ref)
    ReferenceProfile.from_frame(ref, categorical=["is_weekend", "is_night"]).save(model_dir / "reference.json")
    if history is not None:
        save_history(history, model_dir, feature_config_of(model))
    return model_dir


def save_history(transactions: pd.DataFrame, model_dir: Path, cfg: FeatureConfig | None = None) -> Path:
    """Write the last ``cfg.history_days`` of ``transactions`` (schema columns, labels included) to
    ``model_dir/history.parquet``: what ``serve``/``predict``/``batch`` warm the online state with, so a model
    is always served on the history of its own data (:func:`apps.fraud.service.history_for`)."""
    cfg = cfg or FeatureConfig()
    cols = [c for c in SCHEMA.names if c in transactions.columns and c != SCENARIO]
    t = to_seconds(transactions[TIMESTAMP])
    recent = transactions.loc[t > t.max() - cfg.history_days * SECONDS_PER_DAY, cols] if len(t) else transactions[cols]
    return write_table(recent.reset_index(drop=True), Path(model_dir) / HISTORY_FILE)


@dataclass
class Production:
    """What :func:`fit_production` returns: the model, the parameters it was fitted with and its validation
    metrics (mean over the protocol's validation folds)."""

    model: FraudModel
    params: dict[str, Any]
    validation: dict[str, float]


def fit_production(prepared: pd.DataFrame, cfg: FraudConfig, *, tune: int = 0) -> Production:
    """``train``: score ``cfg.model`` on the validation folds (XGBoost: after ``tune`` Optuna trials there, when
    asked), then fit it on the latest labelled ``cfg.train_days`` days - on the Dask cluster of ``cfg.scheduler``
    when given (connected first: an unreachable scheduler fails before minutes of validation)."""
    params = cfg.xgb.params() if cfg.model == "xgboost" else dict(cfg.params)
    features = feature_names(cfg.features)
    protocol = cfg.protocol.fitted(int(prepared[DAY].max()) + 1)
    with ExitStack() as stack:
        client = stack.enter_context(dask_client(cfg.scheduler)) if cfg.scheduler else None
        if tune and cfg.model == "xgboost":
            cand = tune_xgboost(prepared, features, protocol, n_trials=tune, base=params)
            params, metrics = {**params, **cand.params}, cand.validation
        else:
            metrics = score_validation(prepared, cfg.model, params, features, protocol)
        if client is not None:
            model = train_model_dask(prepared, cfg, client=client, params=params, train_days=cfg.train_days)
        else:
            model = train_model(prepared, cfg, kind=cfg.model, params=params, train_days=cfg.train_days)
    return Production(model, params, metrics)
