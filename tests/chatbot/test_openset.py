"""Out-of-scope detection (``components/openset.py``) on small synthetic intent sets, without Rasa: numpy only.

Intents are tight clusters around orthogonal directions, so a message of an intent the model never saw is
unmistakably far from every trained one; the class probabilities are a softmax over the cosine to each trained
intent's centroid, out of fold for calibration as the classifier does.
"""

from __future__ import annotations

import numpy as np
import pytest

from apps.chatbot.project.components import openset

DIM = 16


def _cluster(rng: np.random.Generator, direction: int, n: int, noise: float) -> np.ndarray:
    x = np.zeros((n, DIM))
    x[:, direction] = 1.0
    return openset.unit_rows(x + noise * rng.standard_normal((n, DIM)))


def _probs(x: np.ndarray, fit_x: np.ndarray, fit_y: np.ndarray, k: int) -> np.ndarray:
    """Softmax over the cosine to each intent's centroid (temperature 0.1)."""
    centroids = openset.unit_rows(np.stack([fit_x[fit_y == c].mean(0) for c in range(k)]))
    logits = openset.unit_rows(x) @ centroids.T / 0.1
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _out_of_fold(x: np.ndarray, y: np.ndarray, k: int, folds: int = 3) -> np.ndarray:
    probs = np.zeros((len(y), k))
    fold = np.arange(len(y)) % folds
    for f in range(folds):
        probs[fold == f] = _probs(x[fold == f], x[fold != f], y[fold != f], k)
    return probs


def _intents(rng: np.random.Generator, k: int, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.vstack([_cluster(rng, c, n, noise) for c in range(k)])
    return x, np.repeat(np.arange(k), n)


def test_messages_of_an_unseen_intent_are_rejected_far_more_often_than_in_scope_ones() -> None:
    rng = np.random.default_rng(0)
    k = 5
    x, y = _intents(rng, k, 40, noise=0.05)
    detector = openset.fit_detector(x, y, _out_of_fold(x, y, k), 0.015)
    assert detector["score"] == "class_knn_msp" and set(detector["thresholds"]) == set(openset.SCORES)
    assert len(detector["class_reference"]) == k and detector["n_calibration"] == len(y)
    # new messages: 20 of each trained intent, 20 of an intent never trained (another direction)
    test_x, test_y = _intents(rng, k, 20, noise=0.05)
    unseen = _cluster(rng, k + 3, 20, noise=0.05)
    queries = np.vstack([test_x, unseen])
    scores = openset.message_scores(queries, _probs(queries, x, y, k), detector, x, y)
    is_unseen = np.r_[np.zeros(len(test_y), bool), np.ones(len(unseen), bool)]
    for name, threshold in detector["thresholds"].items():
        rejected = scores[name] < threshold
        assert rejected[is_unseen].mean() >= 0.9, name
        assert rejected[~is_unseen].mean() <= 0.2, name
    # the same scores, one message at a time, as the classifier computes them
    one = openset.message_scores(queries[-1], _probs(queries[-1:], x, y, k), detector, x, y)
    assert one["class_knn_msp"][0] == pytest.approx(scores["class_knn_msp"][-1])


@pytest.mark.parametrize("drop", [0.0, 0.015, 0.1])
def test_the_threshold_respects_its_in_scope_accuracy_budget_on_the_calibration_data(drop: float) -> None:
    rng = np.random.default_rng(1)
    k = 4
    x, y = _intents(rng, k, 50, noise=0.6)  # overlapping intents: some held-out predictions are wrong
    oof = _out_of_fold(x, y, k)
    detector = openset.fit_detector(x, y, oof, drop)
    scores, correct, reference = openset.calibration_scores(x, y, oof)
    assert 0 < correct.mean() < 1 and reference.tolist() == pytest.approx(detector["class_reference"])
    allowed = int(np.floor(drop * len(y)))
    for name, threshold in detector["thresholds"].items():
        lost = int((correct & (scores[name] < threshold)).sum())
        assert lost <= allowed, name
        # the highest such threshold: raising it to the next correct score would cost one more
        assert int((correct & (scores[name] <= threshold)).sum()) > allowed, name


def test_a_trained_out_of_scope_intent_is_left_out_of_calibration() -> None:
    rng = np.random.default_rng(2)
    x, y = _intents(rng, 3, 30, noise=0.05)
    inside = y != 2  # intent 2 plays the trained out_of_scope intent
    detector = openset.fit_detector(x, y, _out_of_fold(x, y, 3), 0.015, inside=inside)
    assert detector["n_calibration"] == int(inside.sum())
    with pytest.raises(ValueError, match="score must be one of"):
        openset.fit_detector(x, y, _out_of_fold(x, y, 3), 0.015, score="energy")


def test_similarities_leave_the_message_itself_out_and_stay_within_the_predicted_intent() -> None:
    e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = np.array([0, 0, 1, 1])
    assert openset.nearest_similarity(e, e) == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert openset.nearest_similarity(e, e, leave_one_out=True) == pytest.approx([1.0, 1.0, 0.8, 0.8])
    q = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    # to intent 1's examples (0, 1) and (0.6, 0.8): the nearest (k=1) and the mean of both (k=2)
    assert openset.class_similarity(q, e, labels, np.array([1, 0, 1]), k=1) == pytest.approx([0.6, 1.0, 1.0])
    assert openset.class_similarity(q, e, labels, np.array([1, 0, 1]), k=2) == pytest.approx([0.3, 1.0, 0.9])
    # leave-one-out: example 2 (intent 1) has only example 3 left in its intent; an intent with no example -> 0
    loo = openset.class_similarity(e, e, labels, np.array([0, 0, 1, 2]), k=3, leave_one_out=True)
    assert loo == pytest.approx([1.0, 1.0, 0.8, 0.0])
    with pytest.raises(ValueError, match="the examples themselves"):
        openset.nearest_similarity(q, e, leave_one_out=True)


def test_a_model_calibrated_before_per_intent_scores_keeps_its_own_score() -> None:
    """An older model's openset.json has no per-intent references (and no vector labels): it gets the scores it was
    calibrated for, not a new one without a threshold."""
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    old = {"score": "knn_msp", "threshold": 1.0, "msp_weight": 0.5}
    s = openset.message_scores(np.array([[1.0, 0.0]]), np.array([[0.8, 0.2]]), old, x)
    assert set(s) == {"msp", "knn_msp"} and s["knn_msp"][0] == pytest.approx(1.0 + 0.5 * 0.8)
