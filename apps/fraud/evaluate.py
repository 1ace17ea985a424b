"""The evaluation protocol of the handbook (chapters 3.5, 4 and 5), metrics, alert threshold and the report.

A *fold* trains on ``delta_train`` days starting at day ``s``, skips the ``delta_delay`` days whose labels are not
known yet, and tests on the next ``delta_test`` days. From each test day the cards already known compromised are
removed: the frauds of the training period and of the days up to one feedback delay before the test day
(the handbook's ``get_train_test_set``). Prequential validation repeats this ``n_folds`` times, shifting ``s``
back one ``delta_test`` each time. Model selection uses validation folds that start ``delta_delay + delta_test``
days *before* the anchor day, and reports test folds that start ``(n_folds - 1) * delta_test`` days *after* it.

Metrics per fold: ROC AUC, average precision (transaction level) and card precision@k per day (k = ``top_k``, 100
by default; cards detected on earlier test days removed), then mean and std over folds. Rows without a label
(not known yet) are in neither the training nor the test rows of a fold; they still fed the features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import ProtocolConfig
from apps.fraud.data import CUSTOMER, DAY, LABEL
from common.metrics.classification import average_precision, card_precision_at_k, roc_auc

log = logging.getLogger(__name__)


def metric_names(top_k: int = 100) -> tuple[str, str, str]:
    """The protocol's metric names for card precision at ``top_k``."""
    return ("roc_auc", "average_precision", f"card_precision@{top_k}")


METRICS = metric_names(100)  # the handbook's k


@dataclass(frozen=True)
class Fold:
    """Row positions of one train/test split and its first training day."""

    start_day: int
    train: np.ndarray
    test: np.ndarray


def train_test_split(df: pd.DataFrame, start_day: int, p: ProtocolConfig) -> Fold:
    """One handbook split of ``df`` (must have :data:`DAY`, :data:`CUSTOMER`, :data:`LABEL`); positions, not labels."""
    day = df[DAY].to_numpy()
    known_label = df[LABEL].notna().to_numpy()
    label = df[LABEL].fillna(0).to_numpy()
    cust = df[CUSTOMER].to_numpy()
    train = np.flatnonzero((day >= start_day) & (day < start_day + p.delta_train) & known_label)
    known = set(cust[train][label[train] == 1].tolist())
    test_parts = []
    for j in range(p.delta_test):
        # frauds of the day one feedback delay before the test day become known (handbook: train end + j - 1)
        seen = day == start_day + p.delta_train + j - 1
        known.update(cust[seen & (label == 1)].tolist())
        today = np.flatnonzero((day == start_day + p.delta_train + p.delta_delay + j) & known_label)
        if known:
            today = today[~np.isin(cust[today], np.fromiter(known, dtype=cust.dtype))]
        test_parts.append(today)
    return Fold(start_day, train, np.concatenate(test_parts) if test_parts else np.array([], dtype=np.int64))


def prequential_folds(df: pd.DataFrame, start_day: int, p: ProtocolConfig) -> list[Fold]:
    """``p.n_folds`` splits whose training starts at ``start_day``, ``start_day - delta_test``, ..."""
    return [train_test_split(df, start_day - i * p.delta_test, p) for i in range(p.n_folds)]


def start_day_for_valid(p: ProtocolConfig, n_days: int) -> int:
    """First training day of the most recent validation fold."""
    return p.resolve_anchor(n_days) - (p.delta_delay + p.delta_test)


def start_day_for_test(p: ProtocolConfig, n_days: int) -> int:
    """First training day of the most recent test fold."""
    return p.resolve_anchor(n_days) + (p.n_folds - 1) * p.delta_test


def score_metrics(test: pd.DataFrame, scores: np.ndarray, top_k: int = 100) -> dict[str, float]:
    """AUC, AP and CP@k of ``scores`` on the rows of ``test`` (needs label, customer_id, day)."""
    y = test[LABEL].to_numpy()
    frame = pd.DataFrame({CUSTOMER: test[CUSTOMER].to_numpy(), DAY: test[DAY].to_numpy(), LABEL: y, "score": scores})
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": roc_auc(y, scores) if both else float("nan"),
        "average_precision": average_precision(y, scores),
        f"card_precision@{top_k}": card_precision_at_k(
            frame, top_k, group_col=CUSTOMER, score_col="score", label_col=LABEL, day_col=DAY
        ),
    }


FitPredict = Callable[[pd.DataFrame, pd.DataFrame], tuple[np.ndarray, float, float]]
"""(train rows, test rows) -> (test scores, fit seconds, predict seconds)."""


def run_folds(df: pd.DataFrame, folds: list[Fold], fit_predict: FitPredict, top_k: int = 100) -> pd.DataFrame:
    """Fit and score every fold; one row of metrics (+ train_s, predict_s, sizes) per fold, and the fold's test
    labels and scores as arrays (object columns ``y_true``, ``y_score``: the report's PR and calibration curves)."""
    rows = []
    for f in folds:
        train, test = df.iloc[f.train], df.iloc[f.test]
        scores, fit_s, pred_s = fit_predict(train, test)
        m = score_metrics(test, scores, top_k)
        m.update(
            start_day=f.start_day,
            n_train=len(train),
            n_test=len(test),
            n_test_frauds=int(test[LABEL].sum()),
            train_s=fit_s,
            predict_s=pred_s,
            y_true=test[LABEL].to_numpy(dtype=np.int8),
            y_score=np.asarray(scores, dtype=np.float32),
        )
        rows.append(m)
    return pd.DataFrame(rows)


def summarise(per_fold: pd.DataFrame, top_k: int = 100) -> dict[str, float]:
    """Mean and sample std (ddof=1, as the handbook's pandas ``.std()``) over folds; timings as means."""
    out: dict[str, float] = {}
    for m in metric_names(top_k):
        out[m] = float(per_fold[m].mean())
        out[f"{m}_std"] = float(per_fold[m].std(ddof=1)) if len(per_fold) > 1 else 0.0
    out["train_s"] = float(per_fold["train_s"].mean())
    out["predict_s"] = float(per_fold["predict_s"].mean())
    return out


def alert_threshold(day: np.ndarray, scores: np.ndarray, alerts_per_day: int) -> float:
    """Score threshold that raises about ``alerts_per_day`` alerts a day: the median over days of each day's
    ``alerts_per_day``-th highest transaction score."""
    per_day = []
    for d in np.unique(day):
        s = np.sort(scores[day == d])[::-1]
        per_day.append(s[min(alerts_per_day, len(s)) - 1])
    return float(np.median(per_day))


def write_report(
    out_dir: Path,
    *,
    title: str,
    results: dict[str, dict[str, Any]],
    importance: pd.Series | None = None,
    sections: dict[str, str] | None = None,
    model_info: dict | None = None,
    top_k: int = 100,
    curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    **card: Any,
) -> Path:
    """Markdown report + metrics JSON + figures under ``out_dir`` (``common.reports``); returns report.md.

    ``curves``: model -> (test labels, test scores) for the precision-recall and calibration figures (the
    calibration figure shows the first four). ``card``: the model card's fields of
    :func:`common.reports.write_report` (intended_use, limitations, data, data_columns, baselines, champion,
    interval_note)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    from common.reports import calibration_figure, pr_curve_figure

    table = pd.DataFrame({name: r for name, r in results.items()}).T
    figures = {}
    if importance is not None and len(importance):
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        imp = importance.sort_values()
        ax.barh(imp.index.astype(str), imp.to_numpy(dtype=float))  # matplotlib directly: pandas plotting is pyplot
        ax.set_title("feature importance (gain share)")
        fig.tight_layout()
        figures["feature_importance"] = fig
    names = metric_names(top_k)
    metric_cols = [c for c in table.columns if c in names]
    if metric_cols:
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        x, width = np.arange(len(table)), 0.8 / len(metric_cols)
        for i, m in enumerate(metric_cols):
            std = table[f"{m}_std"].to_numpy(dtype=float) if f"{m}_std" in table else None
            ax.bar(
                x + (i - (len(metric_cols) - 1) / 2) * width,
                table[m].to_numpy(dtype=float),
                width,
                label=m,
                yerr=std,
                capsize=3,
            )
        ax.set_xticks(x, table.index.astype(str), fontsize=8)
        ax.legend(fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title("prequential test (mean ± std over folds)")
        fig.tight_layout()
        figures["metrics"] = fig
    if curves:
        figures["precision_recall"] = pr_curve_figure(curves, title="Precision-recall, pooled test folds")
        figures["calibration"] = calibration_figure(
            dict(list(curves.items())[:4]), title="Calibration, pooled test folds"
        )
    from common.reports import write_report as common_write_report

    path = common_write_report(
        out_dir,
        title=title,
        metrics=table,
        figures=figures,
        sections=sections,
        model_info=model_info,
        higher_is_better={m: True for m in names},
        **card,
    )
    return path
