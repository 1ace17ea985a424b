"""Calibration of predicted probabilities: the reliability table behind a reliability diagram. The expected
calibration error is :func:`common.metrics.classification.expected_calibration_error`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from common.metrics.classification import expected_calibration_error, finite_binary

__all__ = ["expected_calibration_error", "reliability_table"]


def reliability_table(
    y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10, strategy: str = "quantile"
) -> pd.DataFrame:
    """Calibration (reliability) table: predicted probabilities in ``n_bins`` bins (``quantile``: equal counts,
    ``uniform``: equal width on [0, 1]); per bin ``n``, ``mean_predicted``, ``observed_rate`` (share of
    positives) and its 95 % Wilson interval ``lo``/``hi``. Empty bins are dropped.

    Per bin with ``n`` rows and observed rate ``r`` (``z = 1.96``)::

        centre = (r + z^2 / 2n) / (1 + z^2 / n)
        half   = z * sqrt(r (1 - r) / n + z^2 / 4n^2) / (1 + z^2 / n)
        lo, hi = max(0, centre - half), min(1, centre + half)
    """
    y, p = finite_binary(y_true, y_prob)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    z = 1.959963984540054
    for b in np.unique(idx):
        m = idx == b
        n = int(m.sum())
        rate = float(y[m].mean())
        centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        rows.append(
            {
                "bin": int(b),
                "n": n,
                "mean_predicted": float(p[m].mean()),
                "observed_rate": rate,
                "lo": max(0.0, centre - half),
                "hi": min(1.0, centre + half),
            }
        )
    return pd.DataFrame(rows, columns=["bin", "n", "mean_predicted", "observed_rate", "lo", "hi"])
