"""Registry, batch scoring, monitoring and retraining of the recommender, on top of ``common/``.

- :func:`register_bundle` saves a bundle directory (+ ``reference.json`` monitoring profile) and registers it.
- :func:`batch_recommend` writes top-k for every user (or a file of users) to parquet/CSV with
  :func:`common.batch.score_file` (chunked, atomic output).
- :func:`monitor` compares a recent window of interactions with the model's training data: new-user rate,
  new-item rate, popularity drift (PSI of the interacted items' training-popularity percentile), prediction drift
  (popularity percentile of what the model recommends) and recommendation coverage.
- :func:`retrain` folds new interactions in, trains a challenger of the champion's own model type and
  hyper-parameters on everything before the latest window and lets
  :func:`common.retraining.champion_vs_challenger` compare both on that window (nDCG@10 of the window's items from
  each user's earlier history); a winner is refitted on all data, window included, and that refit is promoted.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.recommender.config import REGISTRY_NAME, RecommenderConfig
from apps.recommender.data import ITEM, TIMESTAMP, USER, load_users
from apps.recommender.evaluate import evaluate_bundle, time_window_split
from apps.recommender.model import RecommenderBundle
from apps.recommender.train import fit_bundle
from common import batch, monitoring, registry, retraining, tracking
from common.data import DataError, fingerprint

log = logging.getLogger(__name__)

POP_FEATURE = "item_popularity_percentile"
REFERENCE_ROWS = 5000


# ------------------------------------------------------------------ registry


def _recommended_percentiles(bundle: RecommenderBundle, users: np.ndarray, k: int) -> np.ndarray:
    idx, _ = bundle.model.recommend(bundle.user_items[users], k, users=users)
    flat = idx[idx >= 0]
    return bundle.popularity_percentile[flat]


def reference_profile(
    bundle: RecommenderBundle, train: pd.DataFrame, *, k: int = 10, seed: int = 0
) -> monitoring.ReferenceProfile:
    """Profile of the training interactions' item popularity and of the model's recommendations.

    The two columns are sampled independently (same length); only their marginal distributions are used.
    """
    rng = np.random.default_rng(seed)
    n = min(REFERENCE_ROWS, len(train))
    sample = train.iloc[rng.choice(len(train), n, replace=False)]
    item_idx = bundle.items.index_of(sample[ITEM])
    pop = np.where(item_idx >= 0, bundle.popularity_percentile[np.maximum(item_idx, 0)], 0.0)
    users = rng.choice(len(bundle.users), min(len(bundle.users), 2000), replace=False)
    rec = _recommended_percentiles(bundle, users, k)
    frame = pd.DataFrame({POP_FEATURE: pop, "prediction": rng.choice(rec, n, replace=True)})
    return monitoring.ReferenceProfile.from_frame(frame, seed=seed)


def register_bundle(
    bundle: RecommenderBundle,
    train: pd.DataFrame,
    *,
    metrics: dict[str, float] | None = None,
    alias: str | None = None,
    k: int = 10,
    dataset: str | None = None,
    data_fingerprint: str | None = None,
    last_timestamp: float | None = None,
) -> registry.ModelVersion:
    """Save ``bundle`` (+ reference profile and training coverage) and register it; returns the version.

    ``dataset`` (a name or path) is shown by ``models list``. ``data_fingerprint`` and ``last_timestamp`` replace
    what is computed from ``train`` when that is only a sample (the Spark-native path computes both in Spark).

    ``train`` is the bundle's training data: its newest timestamp is recorded as the version's
    ``last_training_timestamp`` (the retraining fairness guard) and its fingerprint as the data's. Registered
    inside an active MLflow run, the version links to that run as the one that trained it.
    """
    users = np.arange(len(bundle.users))
    idx, _ = bundle.model.recommend(bundle.user_items, k, users=users)
    bundle.info["train_coverage"] = float(np.unique(idx[idx >= 0]).size / len(bundle.items))
    clean = {k_: float(v) for k_, v in (metrics or {}).items() if isinstance(v, int | float) and np.isfinite(v)}
    params = {"model": bundle.model.name, **{f"param.{k_}": v for k_, v in bundle.model.params.items()}}

    def build(work: Path) -> None:
        bundle.save(work)
        reference_profile(bundle, train, k=k).save(work / "reference.json")

    seen = retraining.last_training_timestamp(train[TIMESTAMP]) if TIMESTAMP in train else None
    seen = last_timestamp if last_timestamp is not None else seen
    return registry.register_dir(
        REGISTRY_NAME,
        build,
        metrics=clean,
        params=params,
        data_fingerprint=data_fingerprint or fingerprint(train),
        alias=alias,
        last_training_timestamp=seen,
        tags={"dataset": dataset} if dataset else None,
    )


def load_version(ref: str = registry.CHAMPION) -> tuple[RecommenderBundle, registry.ModelVersion]:
    """The bundle of a registry alias or version number (hash-verified by the registry)."""
    return registry.load(REGISTRY_NAME, ref, RecommenderBundle.load)


# ------------------------------------------------------------------ batch


def batch_recommend(
    bundle: RecommenderBundle,
    output: str | Path,
    *,
    k: int = 10,
    users_file: str | Path | None = None,
    chunksize: int = 5000,
    progress: bool = True,
) -> batch.BatchResult:
    """Top-k for every known user (or the ``user`` column of ``users_file``) -> long table
    ``user, rank, item, score, strategy`` (unknown users get popular items, strategy ``popular``)."""
    # a users file is validated up front (DataError: missing, empty, no 'user' column, blank ids), then scored
    # in chunks like the full user list
    user_ids = bundle.users.to_list() if users_file is None else load_users(users_file)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "users.parquet"
        pd.DataFrame({USER: user_ids}).to_parquet(src, index=False)

        def score(chunk: pd.DataFrame) -> pd.DataFrame:
            ids = chunk[USER].astype(str).tolist()
            recs = bundle.recommend_users(ids, k)
            return pd.DataFrame(
                {
                    USER: np.repeat(ids, [len(r.items) for r in recs]),
                    "rank": np.concatenate([np.arange(1, len(r.items) + 1) for r in recs]),
                    ITEM: np.concatenate([np.asarray(r.items, dtype=object) for r in recs]),
                    "score": np.concatenate([np.asarray(r.scores, dtype=np.float32) for r in recs]),
                    "strategy": np.repeat([r.strategy for r in recs], [len(r.items) for r in recs]),
                }
            )

        return batch.score_file(src, output, score, chunksize=chunksize, progress=progress)


# ------------------------------------------------------------------ monitoring


@dataclass
class MonitorThresholds:
    """Alert levels of :func:`monitor` (rates are shares in [0, 1])."""

    new_user_rate: float = 0.25
    new_item_rate: float = 0.05
    coverage_drop: float = 0.5  # alert when window coverage < (1 - coverage_drop) * training coverage
    psi: float = 0.2


def monitor(
    bundle: RecommenderBundle,
    reference: monitoring.ReferenceProfile | Path,
    recent: pd.DataFrame,
    *,
    thresholds: MonitorThresholds | None = None,
    k: int = 10,
    out_dir: Path | None = None,
    model_version: str | None = None,
) -> monitoring.MonitorVerdict:
    """Compare ``recent`` interactions with the model's training data (``reference``: its profile or its model
    directory) through :func:`common.monitoring.run_check`; the alerts list every threshold crossed (new users,
    new items, coverage, distribution drift) and all of them appear in ``drift.md`` and ``monitor.json``."""
    t = thresholds or MonitorThresholds()
    users = pd.unique(recent[USER])
    uidx = bundle.users.index_of(users)
    iidx = bundle.items.index_of(recent[ITEM])
    known_users = uidx[uidx >= 0]
    rec_pct = _recommended_percentiles(bundle, known_users, k) if known_users.size else np.zeros(0)
    if known_users.size:
        idx, _ = bundle.model.recommend(bundle.user_items[known_users], k, users=known_users)
        coverage = float(np.unique(idx[idx >= 0]).size / len(bundle.items))
        # coverage is not comparable across different numbers of users: rescale the training figure
        train_cov = _coverage_at(bundle, known_users.size, k)
    else:
        coverage, train_cov = 0.0, float(bundle.info.get("train_coverage", 0.0))
    pop = np.where(iidx >= 0, bundle.popularity_percentile[np.maximum(iidx, 0)], 0.0)
    n = len(pop)
    rng = np.random.default_rng(0)
    current = pd.DataFrame(
        {POP_FEATURE: pop, "prediction": rng.choice(rec_pct, n) if rec_pct.size else np.full(n, np.nan)}
    )
    stats = {
        "interactions": float(n),
        "users": float(len(users)),
        "new_user_rate": float((uidx < 0).mean()),
        "new_item_rate": float((iidx < 0).mean()),
        "new_items": float(pd.unique(recent[ITEM][iidx < 0]).size),
        "coverage": coverage,
        "coverage_reference": train_cov,
    }
    alerts = []
    if stats["new_user_rate"] > t.new_user_rate:
        alerts.append(f"new-user rate {stats['new_user_rate']:.1%} > {t.new_user_rate:.0%}")
    if stats["new_item_rate"] > t.new_item_rate:
        alerts.append(f"new-item rate {stats['new_item_rate']:.1%} > {t.new_item_rate:.0%}")
    if train_cov and coverage < (1 - t.coverage_drop) * train_cov:
        alerts.append(f"coverage {coverage:.3f} < {(1 - t.coverage_drop):.0%} of reference {train_cov:.3f}")
    verdict = monitoring.run_check(
        reference,
        current,
        None,
        thresholds=monitoring.DriftThresholds(psi=t.psi),
        extra_alerts=alerts,
        stats=stats,
        model_version=model_version,
        title="Recommender: drift of recent interactions vs training",
    )
    verdict.stats["popularity_psi"] = float(verdict.report.features.set_index("feature").loc[POP_FEATURE, "psi"])
    if out_dir is not None:
        verdict.save(out_dir)
    return verdict


def _coverage_at(bundle: RecommenderBundle, n_users: int, k: int, seed: int = 0) -> float:
    """Coverage of the model's lists for ``n_users`` random training users (a like-for-like reference)."""
    rng = np.random.default_rng(seed)
    users = rng.choice(len(bundle.users), min(n_users, len(bundle.users)), replace=False)
    idx, _ = bundle.model.recommend(bundle.user_items[users], k, users=users)
    return float(np.unique(idx[idx >= 0]).size / len(bundle.items))


# ------------------------------------------------------------------ retraining


def window_eval_sets(interactions: pd.DataFrame, window_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history before the window, window interactions of users who have such history)."""
    before, window = time_window_split(interactions, window_days)
    window = window[window[USER].isin(set(before[USER]))]
    if window.empty:
        raise DataError(
            f"no user active in the last {window_days} days has earlier history to evaluate on: "
            "give more history or a shorter --window-days"
        )
    return before, window


def score_on_window(
    bundle: RecommenderBundle, before: pd.DataFrame, window: pd.DataFrame, metric: str = "ndcg@10"
) -> float:
    """``metric`` of ``bundle`` on the window; users unknown to the bundle are folded in from ``before``."""
    return float(evaluate_bundle(bundle, window, (10,), history=before)[metric])


def champion_recipe(bundle: RecommenderBundle, cfg: RecommenderConfig) -> tuple[str, dict[str, Any], RecommenderConfig]:
    """(model type, hyper-parameters, config) that reproduce ``bundle``'s training on other data.

    Read from the bundle's own saved ``meta.json`` (exact types; the registry's params are their string copies):
    the model name and parameters, and the interaction weighting/binarisation it was fitted with.
    """
    fit_cfg = replace(
        cfg, weighting=bundle.info.get("weighting", cfg.weighting), binary=bool(bundle.info.get("binary", cfg.binary))
    )
    return bundle.model.name, dict(bundle.model.params), fit_cfg


def retrain(
    interactions: pd.DataFrame,
    cfg: RecommenderConfig,
    *,
    window_days: float = 7.0,
    margin: float = 0.0,
    item_meta: pd.DataFrame | None = None,
    metric: str = "ndcg@10",
) -> retraining.Decision:
    """Champion vs a challenger of the same recipe trained on newer data, compared fairly on the latest window.

    ``interactions`` = the champion's training data plus the new interactions (the caller concatenates them).

    1. The window is the last ``window_days`` of ``interactions``. If the champion was trained on any of it
       (tag ``last_training_timestamp`` >= the window's first timestamp), nothing is trained: the refusal is
       recorded ("no fair comparison ... bring newer labelled data"). Without this guard a champion fitted on all
       data has the window's items in its seen-filter, scores nDCG 0 there, and any challenger would win.
    2. The challenger is the champion's model type with its hyper-parameters, weighting and binarisation
       (:func:`champion_recipe`; the config's model when there is no champion), fitted on everything before the
       window and registered; both are scored on the window (users new to a model are folded in from their history
       before the window).
    3. If the challenger wins by more than ``margin``, the same recipe is refitted on all of ``interactions``
       (window included) and that refit is registered and promoted (compare-and-set: only if the champion is
       unchanged). Training runs are logged in experiment ``recommender-training``.
    """
    before, window = window_eval_sets(interactions, window_days)
    window_start = retraining.unix_seconds(
        interactions.loc[interactions[TIMESTAMP] > before[TIMESTAMP].max(), TIMESTAMP].min()
    )
    refused = retraining.guard(REGISTRY_NAME, window_start, metric=metric, margin=margin)
    if refused is not None:
        return refused
    champion_mv = registry.find(REGISTRY_NAME, registry.CHAMPION)
    champion = load_version(champion_mv.version)[0] if champion_mv is not None else None
    if champion is not None:
        model_name, params, fit_cfg = champion_recipe(champion, cfg)
    else:
        model_name, params, fit_cfg = cfg.model, cfg.model_params(), cfg
    run_params = {
        "model": model_name,
        **{f"param.{k}": v for k, v in params.items()},
        "window_days": window_days,
        "champion_version": champion_mv.version if champion_mv else None,
    }

    with tracking.start_run(f"{REGISTRY_NAME}-training", run_name="retrain-challenger", params=run_params):
        challenger = fit_bundle(
            before,
            model_name,
            params,
            cfg=fit_cfg,
            item_meta=item_meta,
            info={"dataset": "retrain", "window_days": window_days, "role": "challenger"},
        )
        score = score_on_window(challenger, before, window, metric)
        tracking.log_metrics({f"window_{metric}": score})
        mv = register_bundle(challenger, before, metrics={f"window_{metric}": score}, k=cfg.k)

    def evaluate(version: registry.ModelVersion) -> float:
        if version.version == mv.version:
            return score
        if champion is not None and version.version == champion_mv.version:
            return score_on_window(champion, before, window, metric)
        return score_on_window(load_version(version.version)[0], before, window, metric)

    def refit(winner: registry.ModelVersion) -> registry.ModelVersion:
        with tracking.start_run(
            f"{REGISTRY_NAME}-training", run_name="retrain-refit", params={**run_params, "refit_of": winner.version}
        ):
            full = fit_bundle(
                interactions,
                model_name,
                params,
                cfg=fit_cfg,
                item_meta=item_meta,
                info={"dataset": "retrain", "window_days": window_days, "role": "refit", "refit_of": winner.version},
            )
            return register_bundle(full, interactions, metrics={f"window_{metric}_before_refit": score}, k=cfg.k)

    return retraining.champion_vs_challenger(
        REGISTRY_NAME, mv, evaluate, metric=metric, margin=margin, window_start=window_start, refit=refit
    )
