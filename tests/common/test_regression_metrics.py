"""Regression metrics against hand-computed values and scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error

from common.metrics.regression import cmapss_score, mae, rmse


def test_rmse_mae_hand_computed_and_sklearn() -> None:
    t, p = [10, 20, 30], [12, 18, 33]
    assert rmse(t, p) == pytest.approx(math.sqrt((4 + 4 + 9) / 3))
    assert mae(t, p) == pytest.approx(7 / 3)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert rmse(a, b) == pytest.approx(math.sqrt(mean_squared_error(a, b)))
    assert mae(a, b) == pytest.approx(mean_absolute_error(a, b))


def test_cmapss_score_penalises_late_more_than_early() -> None:
    # d = -13 (early): e^1 - 1; d = +10 (late): e^1 - 1; perfect: 0
    assert cmapss_score([50], [37]) == pytest.approx(math.e - 1)
    assert cmapss_score([50], [60]) == pytest.approx(math.e - 1)
    assert cmapss_score([50, 50], [50, 50]) == 0.0
    assert cmapss_score([50], [60]) > cmapss_score([50], [40])
    assert cmapss_score([1, 2], [2, 3]) == pytest.approx(2 * (math.exp(0.1) - 1))  # a sum, not a mean


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 values"):
        rmse([1, 2, 3], [1, 2])
