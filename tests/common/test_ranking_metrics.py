"""Ranking metrics on hand-computed cases and against a pandas port of the MS Recommenders algorithm."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from common.metrics.ranking import (
    catalogue_coverage,
    gini_index,
    hit_matrix,
    map_at_k,
    metrics_from_hits,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    ranking_metrics_frame,
    recall_at_k,
)

RECS = [["a", "b", "c"], ["x", "y"]]
REL = [{"a", "c", "d"}, {"y"}]


def test_hand_computed_single_user():
    recs, rel = [RECS[0]], [REL[0]]
    assert precision_at_k(recs, rel, 3) == pytest.approx(2 / 3)
    assert recall_at_k(recs, rel, 3) == pytest.approx(2 / 3)
    assert map_at_k(recs, rel, 3) == pytest.approx((1 / 1 + 2 / 3) / 3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(recs, rel, 3) == pytest.approx((1 + 1 / math.log2(4)) / idcg)


def test_hand_computed_two_users_and_map_normalisation():
    m = ranking_metrics(RECS, REL, k=2)
    # user 1: hits [1, 0]; user 2: hits [0, 1]
    assert m["precision"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["recall"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["map"] == pytest.approx((1 / 3 + (1 / 2) / 1) / 2)  # divided by all relevant items (MS)
    assert map_at_k(RECS, REL, 2, normalize="min_k") == pytest.approx((1 / 2 + 1 / 2) / 2)  # by min(|R|, k)
    assert m["ndcg"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + (1 / math.log2(3)) / 1) / 2)
    assert m["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert m["hit_rate"] == 1.0


def test_short_lists_users_without_relevant_items_and_duplicates():
    m = ranking_metrics([["a"], ["z"], ["a", "a"]], [{"a"}, set(), {"a", "b"}], k=4)
    assert m["n_users"] == 2  # the user with nothing held out is not evaluable
    assert m["precision"] == pytest.approx((1 / 4 + 1 / 4) / 2)  # divides by k, duplicate counted once
    with pytest.raises(ValueError, match=r"no user has a relevant item"):
        ranking_metrics([["a"]], [set()], k=1)
    with pytest.raises(ValueError, match=r"k must be >= 1"):
        hit_matrix([["a"]], [{"a"}], k=0)


def test_coverage_and_gini():
    assert catalogue_coverage([["a", "b"], ["b", "c"]], n_items=6) == pytest.approx(0.5)
    assert catalogue_coverage(np.array([[0, 1], [1, -1]]), n_items=4) == pytest.approx(0.5)
    assert gini_index(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini_index(np.array([0, 0, 0, 10])) == pytest.approx(0.75)


def _ms_reference(true: pd.DataFrame, pred: pd.DataFrame, k: int) -> dict[str, float]:
    """Independent port of recommenders.evaluation.python_evaluation (merge_ranking_true_pred + metrics)."""
    users = set(true.user) & set(pred.user)
    true, pred = true[true.user.isin(users)], pred[pred.user.isin(users)]
    top = pred.sort_values(["user", "score"], ascending=[True, False]).groupby("user").head(k).copy()
    top["rank"] = top.groupby("user").cumcount() + 1
    hit = top.merge(true, on=["user", "item"])[["user", "item", "rank"]]
    count = hit.groupby("user").size().rename("hit").to_frame().join(true.groupby("user").size().rename("actual"))
    n = len(users)
    hit = hit.sort_values(["user", "rank"])
    hit["rr"] = (hit.groupby("user").cumcount() + 1) / hit["rank"]
    rr = hit.groupby("user")["rr"].sum()
    hit["dcg"] = 1 / np.log(1 + hit["rank"])
    dcg = hit.groupby("user")["dcg"].sum()
    actual = true.groupby("user").size()
    idcg = actual.apply(lambda a: sum(1 / np.log(1 + r) for r in range(1, min(a, k) + 1)))
    return {
        "precision": (count["hit"] / k).sum() / n,
        "recall": (count["hit"] / count["actual"]).sum() / n,
        "map": (rr / count["actual"]).sum() / n,
        "ndcg": (dcg.reindex(idcg.index, fill_value=0) / idcg).sum() / n,
    }


def test_matches_ms_recommenders_algorithm_on_random_data():
    rng = np.random.default_rng(0)
    true = pd.DataFrame({"user": rng.integers(0, 40, 400), "item": rng.integers(0, 60, 400)}).drop_duplicates()
    pred = pd.DataFrame(
        {"user": np.repeat(np.arange(45), 15), "item": rng.integers(0, 60, 45 * 15), "score": rng.random(45 * 15)}
    ).drop_duplicates(["user", "item"])
    ref = _ms_reference(true, pred, k=10)
    pred = pred.sort_values(["user", "score"], ascending=[True, False])
    pred["rank"] = pred.groupby("user").cumcount() + 1
    ours = ranking_metrics_frame(pred, true, k=10)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-9), key


def test_metrics_from_hits_rejects_impossible_input():
    with pytest.raises(ValueError, match=r"more hits than relevant items"):
        metrics_from_hits(np.ones((1, 3), bool), np.array([2]))
