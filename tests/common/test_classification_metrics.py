"""common.metrics.classification: agreement with scikit-learn and hand-computed cases (incl. the handbook CP@k)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from common.metrics.classification import (
    average_precision,
    card_precision_at_k,
    card_precision_at_k_per_day,
    expected_calibration_error,
    precision_at_k,
    recall_at_k,
    roc_auc,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_ap_match_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(500) < 0.1).astype(int)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # rounding creates many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_hand_computed_auc_ap() -> None:
    y = [1, 0, 1, 0]
    s = [0.9, 0.8, 0.7, 0.1]
    # pairs (pos, neg): (0.9>0.8) (0.9>0.1) (0.7<0.8) (0.7>0.1) -> 3/4
    assert roc_auc(y, s) == pytest.approx(0.75)
    # thresholds: 0.9 -> P=1, R=.5 ; 0.8 -> P=.5 ; 0.7 -> P=2/3, R=1 -> AP = .5*1 + .5*2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_precision_recall_at_k() -> None:
    y = [0, 1, 1, 0, 1]
    s = [0.1, 0.9, 0.8, 0.7, 0.2]
    assert precision_at_k(y, s, 2) == 1.0
    assert precision_at_k(y, s, 3) == pytest.approx(2 / 3)
    assert precision_at_k(y, s, 10) == pytest.approx(3 / 10)  # denominator stays k
    assert recall_at_k(y, s, 3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"k must be positive"):
        precision_at_k(y, s, 0)


def test_card_precision_hand_made() -> None:
    """Two days, k=2. Day 0: cards A (fraud, max .9), B (genuine .8), C (fraud .3) -> top2 {A, B} -> 1/2.
    Day 1: A is removed (detected on day 0); C (fraud .95), B (.5), D (genuine .6) -> top2 {C, D} -> 1/2.
    Without removal, day 1 would rank A (.99, fraud) and C first -> 2/2."""
    df = pd.DataFrame(
        {
            "customer_id": ["A", "A", "B", "C", "A", "C", "B", "D"],
            "day": [0, 0, 0, 0, 1, 1, 1, 1],
            "label": [0, 1, 0, 1, 1, 1, 0, 0],
            "score": [0.2, 0.9, 0.8, 0.3, 0.99, 0.95, 0.5, 0.6],
        }
    )
    per_day = card_precision_at_k_per_day(df, 2)
    assert per_day["card_precision"].tolist() == [0.5, 0.5]
    assert per_day["n_compromised_cards"].tolist() == [2, 1]
    assert card_precision_at_k(df, 2) == pytest.approx(0.5)
    assert card_precision_at_k(df, 2, remove_detected=False) == pytest.approx(0.75)
    # excluding C from the start (known compromised): day 0 top2 {A, B} -> .5, day 1 {D, B} -> 0
    assert card_precision_at_k(df, 2, exclude={"C"}) == pytest.approx(0.25)


def test_card_precision_counts_card_once_and_divides_by_k() -> None:
    df = pd.DataFrame({"customer_id": [1, 1, 1], "day": [0, 0, 0], "label": [1, 1, 1], "score": [0.9, 0.8, 0.7]})
    assert card_precision_at_k(df, 100) == pytest.approx(1 / 100)


def test_expected_calibration_error() -> None:
    y = [0, 1, 1, 1]
    p = [0.05, 0.95, 0.55, 0.45]
    # bins: [0,.1): p=.05 y=0 -> .05 ; [.9,1]: .95 vs 1 -> .05 ; [.5,.6): .55 vs 1 -> .45 ; [.4,.5): .45 vs 1 -> .55
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.05 + 0.45 + 0.55) / 4)
    with pytest.raises(ValueError, match=r"y_prob must be within \[0, 1\]"):
        expected_calibration_error([0, 1], [0.2, 1.2])


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=r"needs both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match=r"must be binary \(0/1\)"):
        average_precision([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match=r"y_true has 2 values, y_score 1"):
        roc_auc([0, 1], [0.2])
    assert average_precision([0, 0], [0.1, 0.2]) == 0.0
