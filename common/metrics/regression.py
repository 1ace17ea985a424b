"""Regression metrics for remaining-useful-life (RUL) style targets.

All take ``y_true`` and ``y_pred`` as 1-D array-likes of the same length (units of the target, e.g. cycles).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}")
    if t.size == 0:
        raise ValueError("empty input")
    return t, p


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error: ``sqrt(mean((y_pred - y_true)^2))``."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error: ``mean(|y_pred - y_true|)``."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(p - t)))


def cmapss_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """NASA C-MAPSS asymmetric scoring function (Saxena et al., 2008), lower is better.

    With ``d = y_pred - y_true`` per engine: ``s = exp(-d/13) - 1`` if ``d < 0`` (early prediction) else
    ``exp(d/10) - 1`` (late prediction, penalised harder); the score is the **sum** over engines (not the mean).
    """
    t, p = _pair(y_true, y_pred)
    d = p - t
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))
