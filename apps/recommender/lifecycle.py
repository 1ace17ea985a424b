"""Registry, batch scoring, monitoring and retraining of the recommender, on top of ``common/``.

- :func:`register_bundle` saves a bundle directory (+ ``reference.json`` monitoring profile) and registers it.
- :func:`batch_recommend` writes top-k for every user (or a file of users) to parquet/CSV with
  :func:`common.batch.score_file` (chunked, atomic output).
- :func:`monitor` compares a recent window of interactions with the model's training data: new-user rate,
  new-item rate, popularity drift (PSI of the interacted items' training-popularity percentile), prediction drift
  (popularity percentile of what the model recommends) and recommendation coverage.
- :func:`retrain` folds new interactions in, trains a challenger on everything before the latest window and
  lets :func:`common.retraining.champion_vs_challenger` compare both on that window (nDCG@10 of the window's
  items from each user's earlier history).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.recommender.config import REGISTRY_NAME, RecommenderConfig
from apps.recommender.data import ITEM, USER
from apps.recommender.evaluate import evaluate_bundle, time_window_split
from apps.recommender.model import RecommenderBundle
from apps.recommender.train import fit_bundle
from common import batch, monitoring, registry, retraining
from common.config import get_settings
from common.data import fingerprint

log = logging.getLogger(__name__)

POP_FEATURE = "item_popularity_percentile"
REFERENCE_ROWS = 5000


# ------------------------------------------------------------------ registry


def _recommended_percentiles(bundle: RecommenderBundle, users: np.ndarray, k: int) -> np.ndarray:
    idx, _ = bundle.model.recommend(bundle.user_items[users], k, users=users)
    flat = idx[idx >= 0]
    return bundle.popularity_percentile[flat]


def reference_profile(bundle: RecommenderBundle, train: pd.DataFrame, *, k: int = 10,
                      seed: int = 0) -> monitoring.ReferenceProfile:
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


def register_bundle(bundle: RecommenderBundle, train: pd.DataFrame, *, metrics: dict[str, float] | None = None,
                    alias: str | None = None, k: int = 10) -> registry.ModelVersion:
    """Save ``bundle`` (+ reference profile and training coverage) and register it; returns the version."""
    staging = get_settings().path("work", REGISTRY_NAME, "staging").parent  # (path() creates the parent)
    users = np.arange(len(bundle.users))
    idx, _ = bundle.model.recommend(bundle.user_items, k, users=users)
    bundle.info["train_coverage"] = float(np.unique(idx[idx >= 0]).size / len(bundle.items))
    clean = {k_: float(v) for k_, v in (metrics or {}).items() if isinstance(v, int | float) and np.isfinite(v)}
    params = {"model": bundle.model.name, **{f"param.{k_}": v for k_, v in bundle.model.params.items()}}
    with tempfile.TemporaryDirectory(prefix="model-", dir=staging) as tmp:  # the registry keeps its own copy
        work = Path(tmp)
        bundle.save(work)
        reference_profile(bundle, train, k=k).save(work / "reference.json")
        return registry.register(REGISTRY_NAME, work, metrics=clean, params=params,
                                 data_fingerprint=fingerprint(train), alias=alias)


def load_version(ref: str = registry.CHAMPION) -> tuple[RecommenderBundle, registry.ModelVersion]:
    """The bundle of a registry alias or version number (hash-verified by the registry)."""
    return registry.load(REGISTRY_NAME, ref, RecommenderBundle.load)


# ------------------------------------------------------------------ batch


def batch_recommend(bundle: RecommenderBundle, output: str | Path, *, k: int = 10, users_file: str | Path | None = None,
                    chunksize: int = 5000, progress: bool = True) -> batch.BatchResult:
    """Top-k for every known user (or the ``user`` column of ``users_file``) -> long table
    ``user, rank, item, score, strategy`` (unknown users get popular items, strategy ``popular``)."""
    with tempfile.TemporaryDirectory() as tmp:
        if users_file is None:
            src = Path(tmp) / "users.parquet"
            pd.DataFrame({USER: bundle.users.to_list()}).to_parquet(src, index=False)
        else:
            src = Path(users_file)

        def score(chunk: pd.DataFrame) -> pd.DataFrame:
            ids = chunk[USER].astype(str).tolist()
            recs = bundle.recommend_users(ids, k)
            return pd.DataFrame({
                USER: np.repeat(ids, [len(r.items) for r in recs]),
                "rank": np.concatenate([np.arange(1, len(r.items) + 1) for r in recs]),
                ITEM: np.concatenate([np.asarray(r.items, dtype=object) for r in recs]),
                "score": np.concatenate([np.asarray(r.scores, dtype=np.float32) for r in recs]),
                "strategy": np.repeat([r.strategy for r in recs], [len(r.items) for r in recs]),
            })

        read_kwargs = {"dtype": {USER: str}} if src.suffix.lower() != ".parquet" else None
        return batch.score_file(src, output, score, chunksize=chunksize, progress=progress, read_kwargs=read_kwargs)


# ------------------------------------------------------------------ monitoring


@dataclass
class MonitorThresholds:
    """Alert levels of :func:`monitor` (rates are shares in [0, 1])."""

    new_user_rate: float = 0.25
    new_item_rate: float = 0.05
    coverage_drop: float = 0.5  # alert when window coverage < (1 - coverage_drop) * training coverage
    psi: float = 0.2


@dataclass
class MonitorResult:
    stats: dict[str, float]
    alerts: list[str]
    drift: monitoring.DriftReport
    thresholds: MonitorThresholds = field(default_factory=MonitorThresholds)

    @property
    def exit_code(self) -> int:
        return 1 if self.alerts else 0

    def to_dict(self) -> dict[str, Any]:
        return {"stats": self.stats, "alerts": self.alerts, "thresholds": asdict(self.thresholds),
                "drift": self.drift.to_dict()}


def monitor(bundle: RecommenderBundle, reference: monitoring.ReferenceProfile, recent: pd.DataFrame, *,
            thresholds: MonitorThresholds | None = None, k: int = 10, out_dir: Path | None = None) -> MonitorResult:
    """Compare ``recent`` interactions with the model's training data; alerts list what crossed a threshold."""
    t = thresholds or MonitorThresholds()
    users = pd.unique(recent[USER])
    uidx = bundle.users.index_of(users)
    iidx = bundle.items.index_of(recent[ITEM])
    known_users = uidx[uidx >= 0]
    rec_pct = (_recommended_percentiles(bundle, known_users, k) if known_users.size
               else np.zeros(0))
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
    current = pd.DataFrame({POP_FEATURE: pop,
                            "prediction": rng.choice(rec_pct, n) if rec_pct.size else np.full(n, np.nan)})
    drift = monitoring.detect_drift(reference, current, monitoring.DriftThresholds(psi=t.psi))
    stats = {
        "interactions": float(n), "users": float(len(users)),
        "new_user_rate": float((uidx < 0).mean()), "new_item_rate": float((iidx < 0).mean()),
        "new_items": float(pd.unique(recent[ITEM][iidx < 0]).size),
        "coverage": coverage, "coverage_reference": train_cov,
        "popularity_psi": float(drift.features.set_index("feature").loc[POP_FEATURE, "psi"]),
    }
    alerts = []
    if stats["new_user_rate"] > t.new_user_rate:
        alerts.append(f"new-user rate {stats['new_user_rate']:.1%} > {t.new_user_rate:.0%}")
    if stats["new_item_rate"] > t.new_item_rate:
        alerts.append(f"new-item rate {stats['new_item_rate']:.1%} > {t.new_item_rate:.0%}")
    if train_cov and coverage < (1 - t.coverage_drop) * train_cov:
        alerts.append(f"coverage {coverage:.3f} < {(1 - t.coverage_drop):.0%} of reference {train_cov:.3f}")
    if drift.drift:
        alerts.append(f"distribution drift in {drift.drifted_features}")
    result = MonitorResult(stats, alerts, drift, t)
    if out_dir is not None:
        drift.save(out_dir, title="Recommender: drift of recent interactions vs training")
        from common.reports import write_json

        write_json(Path(out_dir) / "monitor.json", result.to_dict())
    return result


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
        raise ValueError(f"no user active in the last {window_days} days has earlier history to evaluate on")
    return before, window


def score_on_window(bundle: RecommenderBundle, before: pd.DataFrame, window: pd.DataFrame,
                    metric: str = "ndcg@10") -> float:
    """``metric`` of ``bundle`` on the window; users unknown to the bundle are folded in from ``before``."""
    return float(evaluate_bundle(bundle, window, (10,), history=before)[metric])


def retrain(interactions: pd.DataFrame, cfg: RecommenderConfig, *, window_days: float = 7.0, margin: float = 0.0,
            item_meta: pd.DataFrame | None = None, metric: str = "ndcg@10") -> retraining.Decision:
    """Train a challenger on everything before the latest ``window_days`` and compare it with the champion there.

    ``interactions`` = the champion's training data plus the new interactions (the caller concatenates them).
    """
    before, window = window_eval_sets(interactions, window_days)
    challenger = fit_bundle(before, cfg.model, cfg.model_params(), cfg=cfg, item_meta=item_meta,
                            info={"dataset": "retrain", "window_days": window_days})
    score = score_on_window(challenger, before, window, metric)
    mv = register_bundle(challenger, before, metrics={f"window_{metric}": score}, k=cfg.k)

    def evaluate(version: registry.ModelVersion) -> float:
        if version.version == mv.version:
            return score
        bundle, _ = load_version(version.version)
        return score_on_window(bundle, before, window, metric)

    return retraining.champion_vs_challenger(REGISTRY_NAME, mv, evaluate, metric=metric, margin=margin)
