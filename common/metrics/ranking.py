"""Top-k ranking metrics for recommenders, with the Microsoft Recommenders definitions.

Inputs are per-user: ``recommended[u]`` an ordered sequence of item ids (best first) and ``relevant[u]`` the set of
held-out items of that user. Everything is computed from a boolean *hit matrix* ``hits[u, r]`` (is the item at
rank ``r + 1`` of user ``u`` relevant?) and the number of relevant items ``n_rel[u]``, so a caller that already
has top-k index arrays can use :func:`metrics_from_hits` directly and skip Python loops.

Definitions (``R_u`` relevant set, ``k`` cut-off, ``hit_u(r)`` = 1 if the item at rank r is in ``R_u``), each
averaged over the users that have at least one relevant item. These follow
``recommenders.evaluation.python_evaluation`` (Microsoft Recommenders) so numbers are comparable with their
benchmark table on MovieLens:

- precision@k = |top-k ∩ R_u| / k   (divides by k even when fewer than k items were recommended)
- recall@k    = |top-k ∩ R_u| / |R_u|
- nDCG@k      = DCG / IDCG with binary gain, DCG = Σ_{r<=k} hit_u(r) / log2(1 + r),
  IDCG = Σ_{r=1}^{min(|R_u|, k)} 1 / log2(1 + r)   (the log base cancels; MS uses ln, the ratio is identical)
- MAP ("map" in MS, the metric of their benchmark table) = (1 / |R_u|) Σ_{r<=k} hit_u(r) · precision@r.
  Normalised by *all* relevant items, so it is small when users hold out many items (ML-100K: ~0.15).
- MAP@k (``normalize="min_k"``; Spark MLlib / newer MS ``map_at_k``) divides by min(|R_u|, k) instead.
- hit rate@k = 1 if any hit in the top k; MRR@k = 1 / rank of the first hit (0 without one).
- catalogue coverage = |⋃_u top-k_u| / n_items.

Where libraries differ: many libraries (e.g. RecBole, ``implicit.evaluation``) compute MAP@k with the min(|R_u|, k)
denominator and some compute precision over the number of recommended items rather than k; those give larger
numbers than the MS benchmark definitions used by default here.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from typing import Literal

import numpy as np
import pandas as pd


def hit_matrix(
    recommended: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``hits`` (n_users, k) bool and ``n_rel`` (n_users,) int from ranked lists and relevant sets.

    Lists shorter than ``k`` leave the remaining ranks as misses. Duplicate items within one list count once.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(recommended) != len(relevant):
        raise ValueError(f"{len(recommended)} recommendation lists but {len(relevant)} relevant sets")
    hits = np.zeros((len(recommended), k), dtype=bool)
    n_rel = np.zeros(len(recommended), dtype=np.int64)
    for u, (recs, rel) in enumerate(zip(recommended, relevant, strict=True)):
        rel_set = set(rel)
        n_rel[u] = len(rel_set)
        seen: set[Hashable] = set()
        for r, item in enumerate(list(recs)[:k]):
            if item in rel_set and item not in seen:
                hits[u, r] = True
            seen.add(item)
    return hits, n_rel


def _check(hits: np.ndarray, n_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hits = np.asarray(hits, dtype=bool)
    n_rel = np.asarray(n_rel, dtype=np.int64)
    if hits.ndim != 2 or n_rel.shape != (hits.shape[0],):
        raise ValueError(f"hits must be (n_users, k) and n_rel (n_users,); got {hits.shape} and {n_rel.shape}")
    if (hits.sum(axis=1) > n_rel).any():
        raise ValueError("a user has more hits than relevant items")
    keep = n_rel > 0  # users without held-out items are not evaluable (MS drops them too)
    return hits[keep], n_rel[keep]


def metrics_from_hits(
    hits: np.ndarray, n_rel: np.ndarray, *, map_normalize: Literal["relevant", "min_k"] = "relevant"
) -> dict[str, float]:
    """All ranking metrics at ``k = hits.shape[1]`` from a hit matrix; see the module docstring for formulas.

    Returns keys ``precision``, ``recall``, ``map``, ``ndcg``, ``hit_rate``, ``mrr``, ``n_users``.
    """
    hits, n_rel = _check(hits, n_rel)
    n, k = hits.shape
    if n == 0:
        raise ValueError("no user has a relevant item; nothing to evaluate")
    h = hits.astype(np.float64)
    n_hits = h.sum(axis=1)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(1.0 + ranks)
    dcg = (h * discount).sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    prec_at_r = np.cumsum(h, axis=1) / ranks
    denom = n_rel if map_normalize == "relevant" else np.minimum(n_rel, k)
    ap = (prec_at_r * h).sum(axis=1) / denom
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    rr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return {
        "precision": float((n_hits / k).mean()),
        "recall": float((n_hits / n_rel).mean()),
        "map": float(ap.mean()),
        "ndcg": float((dcg / idcg).mean()),
        "hit_rate": float((n_hits > 0).mean()),
        "mrr": float(rr.mean()),
        "n_users": int(n),
    }


def ranking_metrics(
    recommended: Sequence[Sequence[Hashable]],
    relevant: Sequence[Collection[Hashable]],
    k: int = 10,
    *,
    map_normalize: Literal["relevant", "min_k"] = "relevant",
) -> dict[str, float]:
    """All metrics at ``k`` for per-user ranked lists and relevant sets (same order). See module docstring."""
    hits, n_rel = hit_matrix(recommended, relevant, k)
    return metrics_from_hits(hits, n_rel, map_normalize=map_normalize)


def precision_at_k(recommended, relevant, k: int = 10) -> float:
    """Mean over users of |top-k ∩ R_u| / k."""
    return ranking_metrics(recommended, relevant, k)["precision"]


def recall_at_k(recommended, relevant, k: int = 10) -> float:
    """Mean over users of |top-k ∩ R_u| / |R_u|."""
    return ranking_metrics(recommended, relevant, k)["recall"]


def ndcg_at_k(recommended, relevant, k: int = 10) -> float:
    """Mean over users of DCG@k / IDCG@k with binary gains and 1/log2(1 + rank) discounts."""
    return ranking_metrics(recommended, relevant, k)["ndcg"]


def map_at_k(recommended, relevant, k: int = 10, *, normalize: Literal["relevant", "min_k"] = "relevant") -> float:
    """Mean over users of Σ_{r<=k} hit(r)·precision@r divided by |R_u| (MS benchmark) or min(|R_u|, k)."""
    return ranking_metrics(recommended, relevant, k, map_normalize=normalize)["map"]


def hit_rate_at_k(recommended, relevant, k: int = 10) -> float:
    """Share of users with at least one relevant item in their top k."""
    return ranking_metrics(recommended, relevant, k)["hit_rate"]


def mrr_at_k(recommended, relevant, k: int = 10) -> float:
    """Mean over users of 1 / (rank of the first relevant item in the top k), 0 when there is none."""
    return ranking_metrics(recommended, relevant, k)["mrr"]


def catalogue_coverage(recommended: Sequence[Sequence[Hashable]] | np.ndarray, n_items: int) -> float:
    """|⋃_u recommended_u| / n_items: the share of the catalogue that appears in at least one list."""
    if n_items < 1:
        raise ValueError("n_items must be >= 1")
    if isinstance(recommended, np.ndarray):
        distinct = np.unique(recommended[recommended >= 0]).size
    else:
        distinct = len({item for recs in recommended for item in recs})
    return distinct / n_items


def gini_index(counts: np.ndarray) -> float:
    """Gini coefficient of how often each catalogue item is recommended (0 = all equal, -> 1 = one item).

    ``counts`` has one entry per catalogue item (zeros included): G = Σ_i (2i - n - 1) c_(i) / (n Σ c), with
    c sorted ascending and i = 1..n.
    """
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n = c.size
    if n == 0 or c.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * c).sum() / (n * c.sum()))


def ranking_metrics_frame(
    recommendations: pd.DataFrame,
    truth: pd.DataFrame,
    k: int = 10,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rank_col: str = "rank",
    map_normalize: Literal["relevant", "min_k"] = "relevant",
) -> dict[str, float]:
    """DataFrame convenience: ``recommendations`` (user, item, rank 1 = best) and ``truth`` (user, item).

    Evaluates the users present in both frames, as MS Recommenders' ``merge_ranking_true_pred`` does.
    """
    users = np.intersect1d(recommendations[user_col].unique(), truth[user_col].unique())
    if users.size == 0:
        raise ValueError("no user appears in both recommendations and truth")
    recs = recommendations[recommendations[user_col].isin(users)].sort_values([user_col, rank_col])
    rec_lists = recs.groupby(user_col, sort=True)[item_col].agg(list)
    rel_sets = truth[truth[user_col].isin(users)].groupby(user_col, sort=True)[item_col].agg(set)
    rel_sets = rel_sets.reindex(rec_lists.index)
    return ranking_metrics(list(rec_lists), list(rel_sets), k, map_normalize=map_normalize)
