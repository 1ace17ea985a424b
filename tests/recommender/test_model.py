"""Models: quality vs baselines, shape checks, cold start, save/load, behaviour, EASE, tuning, training."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from apps.recommender.data import ITEM, USER, Dataset, normalize_interactions
from apps.recommender.evaluate import evaluate_bundle, stratified_split
from apps.recommender.model import MODEL_CLASSES, RecommenderBundle, ShapeError, make_model
from apps.recommender.train import fit_bundle, train_model, tune
from common.data import DataError


@pytest.fixture(scope="module")
def split(small):
    return stratified_split(small.interactions, 0.75, seed=7)


def test_als_beats_most_popular_by_a_clear_margin(split, cfg):
    train, test = split
    als = evaluate_bundle(fit_bundle(train, "als", cfg=cfg), test)
    pop = evaluate_bundle(fit_bundle(train, "popular", cfg=cfg), test)
    rnd = evaluate_bundle(fit_bundle(train, "random", cfg=cfg), test)
    assert als["ndcg@10"] > 1.5 * pop["ndcg@10"], (als["ndcg@10"], pop["ndcg@10"])
    assert pop["ndcg@10"] > 2 * rnd["ndcg@10"]
    assert als["coverage"] > pop["coverage"]


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_every_model_filters_seen_and_round_trips(name, split, cfg, tmp_path):
    train, _ = split
    params = {"iterations": 5} if name in ("als", "bpr") else None
    bundle = fit_bundle(train, name, params, cfg=cfg)
    users = np.arange(20)
    idx, scores = bundle.model.recommend(bundle.user_items[users], 10, users=users)
    assert idx.shape == (20, 10)
    seen = bundle.user_items[users].toarray() > 0
    assert not seen[np.arange(20)[:, None], idx].any(), "a seen item was recommended"
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores not sorted"
    loaded = RecommenderBundle.load(bundle.save(tmp_path / name))
    idx2, _ = loaded.model.recommend(loaded.user_items[users], 10, users=users)
    np.testing.assert_array_equal(idx, idx2)
    sim, _ = loaded.model.similar_items(0, 5)
    assert 0 not in sim and len(sim) == 5


def test_transposed_matrix_is_rejected_with_a_hint(split, cfg):
    bundle = fit_bundle(split[0], "als", {"iterations": 2}, cfg=cfg)
    wrong = bundle.user_items.T.tocsr()[:, : bundle.user_items.shape[0]]
    with pytest.raises(ShapeError, match="columns"):
        bundle.model.recommend(wrong, 5)
    with pytest.raises(ShapeError, match=r"scipy\.sparse"):
        make_model("als").fit(np.ones((3, 3)))
    square = sp.random(len(bundle.items), len(bundle.users), density=0.1, format="csr")
    with pytest.raises(ShapeError, match="transposed"):
        bundle.model.recommend(square, 5)


def test_cold_start_fold_in_and_popular_fallback(split, cfg):
    bundle = fit_bundle(split[0], "als", cfg=cfg)
    user = bundle.users.ids[3]
    history = [str(bundle.items.ids[i]) for i in bundle.user_items[3].indices]
    known = bundle.recommend_users([user], 10)[0]
    cold = bundle.recommend_history(history, 10)
    assert known.strategy == "personalized" and cold.strategy == "fold_in"
    # recalculating the user's factors from the same history reproduces most of the list
    assert len(set(known.items) & set(cold.items)) >= 7
    assert not set(cold.items) & set(history)
    nothing = bundle.recommend_users(["never-seen"], 10)[0]
    assert nothing.strategy == "popular" and not nothing.known_user
    assert nothing.items == bundle.popular(10)[0]
    unknown = bundle.recommend_history(["nope"], 5)
    assert unknown.strategy == "popular" and unknown.unknown_items == ["nope"]


@pytest.mark.parametrize("weighting", ["bm25", "tfidf"])
def test_confidence_weighting_keeps_orientation(split, cfg, weighting):
    cfg.weighting = weighting
    bundle = fit_bundle(split[0], "als", {"iterations": 3}, cfg=cfg)
    assert bundle.model.user_factors.shape[0] == len(bundle.users)
    assert bundle.model.item_factors.shape[0] == len(bundle.items)
    cfg.weighting = "log"
    with pytest.raises(ValueError, match="unknown weighting"):
        fit_bundle(split[0], "als", {"iterations": 1}, cfg=cfg)


# ------------------------------------------------------------------ behaviour (invariance / directional)

BEHAVIOUR_MODELS = ["als", "ease", "itemknn", "popular"]


def _fit(train, name, cfg):
    return fit_bundle(train, name, {"iterations": 5} if name == "als" else None, cfg=cfg)


@pytest.mark.parametrize("name", BEHAVIOUR_MODELS)
def test_renaming_user_ids_consistently_changes_no_recommendation(name, split, cfg):
    train, _ = split
    rename = {u: f"customer/{i}?x" for i, u in enumerate(pd.unique(train[USER]))}
    renamed = train.assign(**{USER: train[USER].map(rename)})
    a, b = _fit(train, name, cfg), _fit(renamed, name, cfg)
    users = list(rename)[:25]
    before = a.recommend_users(users, 10)
    after = b.recommend_users([rename[u] for u in users], 10)
    for x, y in zip(before, after, strict=True):
        assert x.items == y.items and x.strategy == y.strategy == "personalized"
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-5)


@pytest.mark.parametrize("name", BEHAVIOUR_MODELS)
def test_renaming_item_ids_maps_recommendations_accordingly(name, split, cfg):
    train, _ = split
    rename = {i: f"sku-{n}" for n, i in enumerate(pd.unique(train[ITEM]))}
    a = _fit(train, name, cfg)
    b = _fit(train.assign(**{ITEM: train[ITEM].map(rename)}), name, cfg)
    users = list(a.users.ids[:25])
    for x, y in zip(a.recommend_users(users, 10), b.recommend_users(users, 10), strict=True):
        assert [rename[i] for i in x.items] == y.items
    history = list(a.items.ids[:4])
    assert [rename[i] for i in a.recommend_history(history, 5).items] == b.recommend_history(
        [rename[i] for i in history], 5
    ).items


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_seen_items_are_never_recommended_with_exclude_seen(name, split, cfg):
    train, _ = split
    bundle = _fit(train, name, cfg)
    seen = train.groupby(USER)[ITEM].agg(set)
    users = list(bundle.users.ids[:40])
    for user, rec in zip(users, bundle.recommend_users(users, 20), strict=True):
        assert not set(rec.items) & seen[user], f"{name} recommended a seen item to {user}"
    history = list(bundle.items.ids[:10])
    assert not set(bundle.recommend_history(history, 20, filter_seen=True).items) & set(history)


def test_without_exclude_seen_the_most_popular_history_item_comes_back(split, cfg):
    bundle = fit_bundle(split[0], "popular", cfg=cfg)
    top = bundle.popular(1)[0][0]
    assert top in bundle.recommend_history([top], 3, filter_seen=False).items
    assert top not in bundle.recommend_history([top], 3, filter_seen=True).items


# ------------------------------------------------------------------ EASE: the Cholesky solve and the size limit


def test_ease_cholesky_matches_the_float64_inverse(split, cfg):
    bundle = fit_bundle(split[0], "ease", {"lambda_": 50.0}, cfg=cfg)
    x = (bundle.user_items > 0).astype(np.float64)
    gram = (x.T @ x).toarray() + 50.0 * np.eye(x.shape[1])
    p = np.linalg.inv(gram)
    expected = p / (-np.diag(p))
    np.fill_diagonal(expected, 0.0)
    assert bundle.model.B.dtype == np.float32
    np.testing.assert_allclose(bundle.model.B, expected, atol=1e-4)


def test_ease_refuses_a_catalogue_above_its_limit_and_names_the_alternatives():
    x = sp.random(30, 60, density=0.2, format="csr", random_state=0, dtype=np.float32)
    with pytest.raises(DataError, match=r"60 items .* above its limit of 50 items\. Use --model als or --model itemkn"):
        make_model("ease", {"max_items": 50}).fit(x)
    assert make_model("ease", {"max_items": 60}).fit(x).B.shape == (60, 60)


# ------------------------------------------------------------------ tuning and the train pipeline


def test_tuning_metric_follows_k_and_starts_from_the_configured_params(split, cfg):
    train, _ = split
    cfg.k = 5
    best, trials = tune(train, "ease", 2, cfg=cfg, budget_s=600)
    inner, valid = stratified_split(train, 0.85, seed=cfg.seed + 1)
    first = evaluate_bundle(fit_bundle(inner, "ease", cfg=cfg), valid, (5, 10))
    assert trials["params_lambda_"].iloc[0] == cfg.model_params("ease")["lambda_"]
    assert trials["value"].iloc[0] == pytest.approx(first["ndcg@5"])
    assert first["ndcg@5"] != pytest.approx(first["ndcg@10"])  # so the check above can tell the cut-offs apart
    assert set(best) >= {"lambda_", "max_items"}


def test_tuning_stops_when_the_next_trial_would_pass_the_budget(split, cfg, monkeypatch):
    import apps.recommender.train as train_mod

    real = train_mod.fit_bundle

    def slow_fit(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "fit_bundle", slow_fit)
    t0 = time.perf_counter()
    _, trials = tune(split[0], "itemknn", 50, cfg=cfg, budget_s=1.0)
    elapsed = time.perf_counter() - t0
    longest = trials["duration"].max().total_seconds()
    assert 1 <= len(trials) <= 3, len(trials)  # trials of >= 0.3 s: no trial may start that would end past 1 s
    assert elapsed < 1.0 + 2 * longest  # (the split before the first trial and a busy machine add a little)


def test_train_model_measures_held_out_at_k_and_fits_on_all_data(small, cfg):
    cfg.k, cfg.model = 5, "ease"
    result = train_model(small, cfg)
    assert result.held_out["ndcg@5"] > 0.05 and "ndcg@10" not in result.held_out
    assert len(result.bundle.users) == small.n_users and result.tuning is None


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({USER: ["u1"], ITEM: ["i1"]}, r"too little data for the ms-stratified split: 1 interaction\(s\)"),
        ({USER: ["u1", "u2", "u3"], ITEM: ["i1", "i2", "i1"]}, r"left 0 for training and 3 for evaluation"),
    ],
)
def test_train_model_on_too_little_data_is_a_data_error(rows, message, cfg):
    ds = Dataset("tiny", normalize_interactions(pd.DataFrame(rows)))
    with pytest.raises(DataError, match=message):
        train_model(ds, cfg)


def test_fit_needs_two_items(cfg):
    one_item = normalize_interactions(pd.DataFrame({USER: ["a", "b"], ITEM: ["x", "x"]}))
    with pytest.raises(DataError, match=r"2 interaction\(s\) with 1 item\(s\): at least 2 items"):
        fit_bundle(one_item, "als", cfg=cfg)


def test_evaluate_does_not_import_train():
    import ast
    import inspect

    import apps.recommender.evaluate as ev

    imported = {n.module for n in ast.walk(ast.parse(inspect.getsource(ev))) if isinstance(n, ast.ImportFrom)}
    assert "apps.recommender.train" not in imported
