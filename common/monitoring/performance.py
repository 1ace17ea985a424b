"""Model performance over time: metrics per time window on the rows whose labels have arrived."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def performance_over_time(
    df: pd.DataFrame,
    *,
    time_col: str,
    label_col: str,
    score_col: str,
    freq: str | int | float = "D",
    metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]] | None = None,
    min_count: int = 1,
) -> pd.DataFrame:
    """Metrics per time window on the rows whose label has arrived.

    Args:
        df: one row per prediction; rows with a missing ``label_col`` are ignored (labels not in yet).
        time_col: datetime (or parseable) column, windows by ``freq`` = pandas period alias ("D", "W", "M",
            "h" ...), labelled by window start; or a numeric column (day index, cycle), windows of width
            ``freq`` (a number) labelled by their lower edge.
        metrics: name -> ``f(y_true, y_score) -> float`` (arrays of shape ``(n,)``); a metric that raises or
            is undefined in a window (e.g. AUC with one class) gives NaN there.
        min_count: windows with fewer labelled rows get NaN metrics (``n`` is still reported).

    Returns:
        one row per non-empty window, sorted by time: ``window, n, label_mean, score_mean, <metric>...``.
    """
    metrics = dict(metrics or {})
    d = df[[time_col, label_col, score_col]].dropna(subset=[label_col])
    t = d[time_col]
    if pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t):
        if not isinstance(freq, int | float) or isinstance(freq, bool) or freq <= 0:
            raise ValueError(f"numeric time column {time_col!r} needs a positive numeric freq, got {freq!r}")
        window = np.floor(t.to_numpy(dtype=float) / freq) * freq
    else:
        if not isinstance(freq, str):
            raise ValueError(f"datetime column {time_col!r} needs a pandas frequency string, got {freq!r}")
        ts = pd.to_datetime(t)
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_localize(None)
        window = ts.dt.to_period(freq).dt.start_time
    d = d.assign(_window=np.asarray(window))
    out_rows = []
    for w, g in d.groupby("_window", sort=True):
        y = g[label_col].to_numpy()
        s = g[score_col].to_numpy(dtype=float)
        row: dict[str, Any] = {
            "window": w,
            "n": len(g),
            "label_mean": float(np.mean(y.astype(float))) if len(g) else np.nan,
            "score_mean": float(np.mean(s)) if len(g) else np.nan,
        }
        for name, fn in metrics.items():
            if len(g) < min_count:
                row[name] = np.nan
                continue
            try:
                row[name] = float(fn(y, s))
            except Exception as exc:  # noqa: BLE001 - a metric undefined on one window must not stop the rest
                log.debug("metric %s undefined for window %s: %s", name, w, exc)
                row[name] = np.nan
        out_rows.append(row)
    return pd.DataFrame(out_rows, columns=["window", "n", "label_mean", "score_mean", *metrics])
