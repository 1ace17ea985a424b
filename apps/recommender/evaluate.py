"""Evaluation protocols, metrics of a fitted bundle, and the evaluation report (model card).

Fitting and choosing models (``fit_bundle``, ``tune``, ``compare_models``) live in :mod:`apps.recommender.train`,
which imports this module; this module never imports ``train`` (no cycle).

Protocols:

- ``ms-stratified`` — the Microsoft Recommenders benchmark protocol: per-user random 75/25 split
  (``python_stratified_split``, reproduced exactly: numpy legacy seed 42, uniform key per row in file order, per
  user the first 75 % by key go to train), top-10 with training items removed, all held-out items relevant,
  their precision/recall/MAP/nDCG definitions (:mod:`common.metrics.ranking`).
- ``leave-last-out`` — each user's most recent interaction is the test item, everything before is training:
  what production sees (predict the next interaction). Reports hit rate and nDCG/MRR at k.

Beyond accuracy: catalogue coverage, Gini of recommendation counts, and popularity bias (mean training
popularity percentile of recommended items, and the share of recommendations drawn from the 10 % most popular
items vs their share of training interactions).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.recommender.data import ITEM, TIMESTAMP, USER
from apps.recommender.features import IdMap, build_matrix
from apps.recommender.model import RecommenderBundle
from common.data import SECONDS_PER_DAY, DataError
from common.metrics.ranking import catalogue_coverage, gini_index, metrics_from_hits
from common.reports import bootstrap_intervals

log = logging.getLogger(__name__)

PROTOCOLS = ("ms-stratified", "leave-last-out")


# ------------------------------------------------------------------ splits


def stratified_split(df: pd.DataFrame, ratio: float = 0.75, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user random split, identical to MS Recommenders' ``python_stratified_split(data, ratio, seed=seed)``.

    Each row gets ``np.random.seed(seed); np.random.rand(n)`` in the frame's order; within a user, rows with
    rank / count <= ratio (by that key) are training. Returns (train, test) in the input's row order.
    """
    key = np.random.RandomState(seed).rand(len(df))
    tmp = pd.DataFrame({"u": df[USER].to_numpy(), "key": key, "pos": np.arange(len(df))})
    tmp = tmp.sort_values(["u", "key"], kind="quicksort")
    counts = tmp.groupby("u", sort=False)["u"].transform("count").to_numpy()
    rank = tmp.groupby("u", sort=False).cumcount().to_numpy() + 1
    train_pos = np.sort(tmp["pos"].to_numpy()[rank / counts <= ratio])
    mask = np.zeros(len(df), bool)
    mask[train_pos] = True
    return df[mask].reset_index(drop=True), df[~mask].reset_index(drop=True)


def leave_last_out(df: pd.DataFrame, n: int = 1, min_train: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's last ``n`` interactions by timestamp (ties: file order) are the test set.

    Users with fewer than ``n + min_train`` interactions stay entirely in training.
    """
    order = df.assign(_pos=np.arange(len(df))).sort_values([USER, TIMESTAMP, "_pos"], kind="stable")
    from_end = order.groupby(USER, sort=False).cumcount(ascending=False).to_numpy()
    size = order.groupby(USER, sort=False)[USER].transform("size").to_numpy()
    test_mask = (from_end < n) & (size >= n + min_train)
    test_pos = order["_pos"].to_numpy()[test_mask]
    mask = np.zeros(len(df), bool)
    mask[test_pos] = True
    return df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)


def time_window_split(df: pd.DataFrame, window_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(everything before the last ``window_days``, the last ``window_days``) by timestamp."""
    cut = int(df[TIMESTAMP].max() - window_days * SECONDS_PER_DAY)
    return df[df[TIMESTAMP] <= cut].reset_index(drop=True), df[df[TIMESTAMP] > cut].reset_index(drop=True)


def split(
    df: pd.DataFrame, protocol: str, *, ratio: float = 0.75, seed: int = 42, source: str = "data"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) for a protocol name in :data:`PROTOCOLS`; :class:`DataError` when either side is empty."""
    if protocol == "ms-stratified":
        train, test = stratified_split(df, ratio, seed)
    elif protocol == "leave-last-out":
        train, test = leave_last_out(df)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    check_split(df, train, test, f"the {protocol} split", source=source)
    return train, test


def check_split(df: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, what: str, *, source: str = "data") -> None:
    """Raise a one-line :class:`DataError` when a split leaves nothing to train or to evaluate on."""
    if len(train) and len(test) and test[USER].isin(set(train[USER])).any():
        return
    raise DataError(
        f"{source}: too little data for {what}: {len(df)} interaction(s) of {df[USER].nunique()} user(s) and "
        f"{df[ITEM].nunique()} item(s) left {len(train)} for training and {len(test)} for evaluation (with "
        f"their users in training). Needed: users with at least 2 interactions (4 or more for a 75/25 split)."
    )


# ------------------------------------------------------------------ metrics of a bundle


def recommend_for_eval(bundle: RecommenderBundle, users: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Top-k item indices (n, k) for known user indices, seen items removed; and the seconds it took."""
    t0 = time.perf_counter()
    idx, _ = bundle.model.recommend(bundle.user_items[users], k, users=users, filter_seen=True)
    return idx, time.perf_counter() - t0


def evaluate_bundle(
    bundle: RecommenderBundle,
    test: pd.DataFrame,
    ks: tuple[int, ...] = (10,),
    *,
    history: pd.DataFrame | None = None,
    intervals: int = 0,
) -> dict[str, Any]:
    """Metrics of ``bundle`` on ``test`` for each k in ``ks`` (keys ``ndcg@10`` ...), plus coverage and bias.

    Test users unknown to the bundle are skipped (counted in ``skipped_users``) unless ``history`` (their
    earlier interactions) is given, in which case they are folded in (cold start) and evaluated too. Every
    held-out item is relevant, also items the model cannot know (as in MS Recommenders). ``intervals`` > 0 adds
    95 % bootstrap intervals over test users (that many resamples) at ``ks[0]``: keys ``ndcg@10_lo``/``_hi`` ...
    """
    kmax = max(ks)
    rel = test.groupby(USER, sort=False)[ITEM].agg(lambda s: set(map(str, s)))
    uidx = bundle.users.index_of(rel.index.to_numpy())
    known = uidx >= 0
    rec_rows: list[np.ndarray] = []
    rel_sets: list[set[str]] = list(rel[known])
    t0 = time.perf_counter()
    if known.any():
        rec_rows.append(recommend_for_eval(bundle, uidx[known], kmax)[0])
    cold = rel.index[~known]
    skipped = len(cold)
    if history is not None and skipped:
        # cold start: fold the unknown users in from their earlier interactions
        cold_map = IdMap.fit(cold.to_numpy())
        hist = build_matrix(history[history[USER].isin(cold)], cold_map, bundle.items, binary=True, log_unknown=False)
        rec_rows.append(bundle.model.recommend(hist, kmax, users=np.full(len(cold_map), -1))[0])
        rel_sets.extend(rel.loc[list(cold_map.ids)])
        skipped = 0
    predict_s = time.perf_counter() - t0
    if not rec_rows:
        raise DataError(
            f"none of the {skipped} test user(s) is known to the model (no training interactions); "
            "pass history= to fold them in"
        )
    recs = np.vstack(rec_rows)
    item_ids = bundle.items.ids
    hits = np.zeros(recs.shape, bool)
    n_rel = np.array([len(s) for s in rel_sets])
    for u, (row, s) in enumerate(zip(recs, rel_sets, strict=True)):
        hits[u] = [(i >= 0 and item_ids[i] in s) for i in row]
    out: dict[str, Any] = {}
    for k in ks:
        m = metrics_from_hits(hits[:, :k], n_rel)
        for name in ("precision", "recall", "map", "ndcg", "hit_rate", "mrr"):
            out[f"{name}@{k}"] = m[name]
    if intervals:
        k0 = ks[0]
        bounds = bootstrap_intervals(
            len(n_rel), lambda idx: metrics_from_hits(hits[idx, :k0], n_rel[idx]), n_boot=intervals
        )
        for name in ("precision", "recall", "map", "ndcg"):
            out[f"{name}@{k0}_lo"], out[f"{name}@{k0}_hi"] = bounds[name]
    out["users"] = len(rel_sets)
    out["skipped_users"] = int(skipped)
    out["predict_s"] = predict_s
    out.update(beyond_accuracy(bundle, recs[:, : ks[0]]))
    return out


def beyond_accuracy(bundle: RecommenderBundle, recs: np.ndarray) -> dict[str, float]:
    """Coverage, Gini and popularity bias of recommendation lists (item indices, -1 = empty slot)."""
    n_items = len(bundle.items)
    flat = recs[recs >= 0]
    counts = np.bincount(flat, minlength=n_items)
    pop = bundle.popularity.astype(float)
    pct = pd.Series(pop).rank(pct=True).to_numpy()  # training popularity percentile per item
    top10 = pct > 0.9
    train_top_share = float(pop[top10].sum() / max(pop.sum(), 1))
    return {
        "coverage": catalogue_coverage(recs, n_items),
        "gini": gini_index(counts),
        "mean_popularity_percentile": float(pct[flat].mean()) if flat.size else 0.0,
        "top10pct_share": float(top10[flat].mean()) if flat.size else 0.0,
        "top10pct_share_in_training": train_top_share,
    }


def metric_vs_k(bundle: RecommenderBundle, test: pd.DataFrame, ks=(1, 5, 10, 20, 50)) -> pd.DataFrame:
    """One row per k with precision/recall/MAP/nDCG (for the report figure)."""
    m = evaluate_bundle(bundle, test, tuple(ks))
    return pd.DataFrame([{"k": k, **{n: m[f"{n}@{k}"] for n in ("precision", "recall", "map", "ndcg")}} for k in ks])


# ------------------------------------------------------------------ report


def write_evaluation_report(
    out_dir: Path,
    table: pd.DataFrame,
    curves: dict[str, pd.DataFrame],
    bundles: dict[str, RecommenderBundle],
    tests: dict[str, pd.DataFrame],
    *,
    title: str,
    sections: dict[str, str] | None = None,
    model_info: dict[str, Any] | None = None,
    k: int = 10,
    data: dict[str, Any] | None = None,
    dataset: str = "",
    champion: str | None = None,
    intervals: int = 200,
) -> Path:
    """Model card via :func:`common.reports.write_report`: intended use, the data (``data``: facts such as
    :meth:`Dataset.summary`), the metrics table against the baselines with 95 % bootstrap intervals over test
    users for the models in ``bundles`` (``intervals`` resamples; 0: none), metric-vs-k and popularity-bias
    plots (first three of ``bundles``), limitations."""
    from matplotlib.figure import Figure

    from common.reports import write_report

    table = table.copy()
    for name, b in bundles.items() if intervals else ():
        if name in table.index:
            m = evaluate_bundle(b, tests[name], (k,), intervals=intervals)
            for col in [c for c in m if c.endswith(("_lo", "_hi")) and c[:-3] in table.columns]:
                table.loc[name, col] = m[col]

    figs = {}
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for name, df in curves.items():
        axes[0].plot(df["k"], df["ndcg"], marker="o", label=name)
        axes[1].plot(df["k"], df["recall"], marker="o", label=name)
    axes[0].set(xlabel="k", ylabel="nDCG@k", xscale="log", title="nDCG vs k")
    axes[1].set(xlabel="k", ylabel="recall@k", xscale="log", title="recall vs k")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    figs["metric_vs_k"] = fig

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, b in list(bundles.items())[:3]:
        test = tests[name]
        users = b.users.index_of(test[USER].unique())
        users = users[users >= 0]
        recs, _ = recommend_for_eval(b, users, k)
        pop = b.popularity.astype(float)
        pct = pd.Series(pop).rank(pct=True).to_numpy()
        flat = recs[recs >= 0]
        ax.hist(pct[flat], bins=20, range=(0, 1), histtype="step", density=True, label=name)
    ax.set(
        xlabel="training popularity percentile of recommended items",
        ylabel="density",
        title=f"Popularity bias of top-{k} lists (uniform = no bias)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["popularity_bias"] = fig
    baselines = [n for n in table.index if n in ("popular", "random")]
    return write_report(
        out_dir,
        title=title,
        metrics=table,
        figures=figs,
        sections=sections,
        model_info=model_info,
        higher_is_better={
            c: True
            for c in table.columns
            if c.split("@")[0] in RANKING_METRICS and "@" in c and not c.endswith(("_lo", "_hi"))
        },
        intended_use=(
            f"Ranks the top {k} items a user has not interacted with yet, from implicit feedback (views, clicks, "
            "purchases): for a page, an e-mail or a batch file of recommendations. Users unknown to the model "
            "get the most popular items. Not for decisions with consequences for a person (credit, jobs, "
            "prices)."
        ),
        limitations=(
            f"Measured offline on {dataset or 'the dataset above'} with a held-out split: the numbers say how well "
            "held-out interactions are recovered, not how users would react to the lists (that needs an online "
            "test). A random per-user split lets the model see a user's later interactions, so it is optimistic "
            "against predicting the next one (see leave-last-out where reported). Items without training "
            "interactions cannot be recommended (cold-start items); the popularity-bias figure shows how strongly "
            "lists favour already popular items. Intervals cover the sampling of test users only, not the "
            "randomness of training or of the split."
        ),
        data=({"dataset": dataset} if dataset else {}) | dict(data or {}),
        baselines=baselines,
        champion=champion,
        interval_note="[lo, hi] = 95 % bootstrap interval over test users",
    )


RANKING_METRICS = ("precision", "recall", "map", "ndcg", "hit_rate", "mrr")
