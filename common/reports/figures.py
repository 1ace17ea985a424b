"""Figures of a classifier's evaluation: precision-recall curves and the reliability (calibration) diagram, as
``matplotlib.figure.Figure`` objects (no pyplot). The numbers behind them are in :mod:`common.metrics`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from common.metrics.calibration import reliability_table
from common.metrics.classification import (
    average_precision,
    expected_calibration_error,
    finite_binary,
    precision_recall_points,
)


def pr_curve_figure(curves: Mapping[str, tuple[Any, Any]], title: str = "Precision-recall") -> Figure:
    """Precision-recall curves, one per ``name -> (y_true, y_score)``, average precision in the legend, and the
    positive rate (what a random ranking reaches) as a dotted line."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    rate = None
    for name, (y, s) in curves.items():
        recall, precision = precision_recall_points(y, s)
        ax.step(
            recall, precision, where="post", lw=1.4, label=f"{name} (AP {average_precision(*finite_binary(y, s)):.3f})"
        )
        rate = float(np.mean(finite_binary(y, s)[0]))
    if rate is not None:
        ax.axhline(rate, color="0.5", ls=":", lw=1, label=f"random ({rate:.3g})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def calibration_figure(
    curves: Mapping[str, tuple[Any, Any]],
    n_bins: int = 10,
    strategy: str = "quantile",
    title: str = "Calibration (reliability)",
) -> Figure:
    """Reliability diagram per ``name -> (y_true, y_prob)``: observed positive rate (95 % Wilson interval) vs
    mean predicted probability per bin (:func:`reliability_table`), the diagonal = perfect calibration, expected
    calibration error (10 equal-width bins) in the legend; below, the distribution of the predictions."""
    fig = Figure(figsize=(6, 6))
    ax, hist = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top = 0.0
    for name, (y, p) in curves.items():
        yy, pp = finite_binary(y, p)
        t = reliability_table(yy, pp, n_bins, strategy)
        err = np.clip(np.vstack([t["observed_rate"] - t["lo"], t["hi"] - t["observed_rate"]]), 0, None)
        ece = expected_calibration_error(yy, np.clip(pp, 0, 1))
        ax.errorbar(
            t["mean_predicted"],
            t["observed_rate"],
            yerr=err,
            marker="o",
            ms=4,
            lw=1.2,
            capsize=2,
            label=f"{name} (ECE {ece:.3f})",
        )
        hist.hist(pp, bins=50, range=(0, 1), histtype="step", label=name)
        top = max(top, float(t["hi"].max()), float(t["mean_predicted"].max()))
    lim = min(1.0, max(0.05, top * 1.1))
    ax.plot([0, lim], [0, lim], color="0.5", ls="--", lw=1, label="perfectly calibrated")
    ax.set(ylabel="observed positive rate", xlim=(0, lim), ylim=(0, lim), title=title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    hist.set(xlabel="predicted probability", ylabel="rows", yscale="log")
    fig.tight_layout()
    return fig
