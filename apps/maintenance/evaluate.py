"""Evaluation on the official C-MAPSS protocol: one prediction per test unit at its last observed cycle, RMSE and
the NASA asymmetric score against the true RUL, interval coverage, the alert trade-off, and the report's figures.

Conventions: ``rmse`` and ``score`` compare with the true RUL as published (``RUL_FD00x.txt``, not capped), which
is how the anchors report them; ``rmse_capped`` compares with ``min(true, cap)``, the target the models learn;
``coverage`` is the share of units whose capped true RUL lies in the interval.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from apps.maintenance.data import CYCLE, UNIT
from apps.maintenance.model import RULModel, WindowRegressor
from common.metrics.regression import cmapss_score, mae, rmse
from common.reports import write_report

log = logging.getLogger(__name__)


def metrics(
    pred: np.ndarray, truth: np.ndarray, cap: float, lower: np.ndarray | None = None, upper: np.ndarray | None = None
) -> dict[str, float]:
    """RMSE, NASA score (sum over units), MAE, capped-truth RMSE and, with bounds, coverage and mean width."""
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    capped = np.minimum(truth, cap)
    out = {
        "rmse": rmse(truth, pred),
        "score": cmapss_score(truth, pred),
        "mae": mae(truth, pred),
        "rmse_capped": rmse(capped, pred),
        "units": float(len(truth)),
    }
    if lower is not None and upper is not None:
        out["coverage"] = float(np.mean((capped >= lower) & (capped <= upper)))
        out["width"] = float(np.mean(np.asarray(upper) - np.asarray(lower)))
    return out


def evaluate_last_cycle(
    model: RULModel | WindowRegressor, test: pd.DataFrame, truth: pd.Series, cap: float
) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics of ``model`` at each test unit's last cycle, and the per-unit frame (with ``true_rul``)."""
    pred = model.predict(test)
    pred["true_rul"] = truth.loc[pred[UNIT]].to_numpy(float)
    lo = pred["lower"].to_numpy() if "lower" in pred else None
    hi = pred["upper"].to_numpy() if "upper" in pred else None
    return metrics(pred["rul"].to_numpy(), pred["true_rul"].to_numpy(), cap, lo, hi), pred


# ------------------------------------------------------------------ the alert decision


def alert_tradeoff(per_unit: pd.DataFrame, horizon: float, thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Missed failures against wasted life for the rule "alert when the interval's lower bound <= t".

    ``per_unit``: one row per unit at its last observed cycle with ``lower`` and ``true_rul``. A unit *needs*
    maintenance when its true RUL <= ``horizon``; a **missed failure** is such a unit without an alert; the
    **wasted life** of an alerted unit is its true RUL (cycles of life given up by servicing it now), and
    ``wasted_per_unit`` spreads it over all units (mean cycles lost per unit of the fleet). One row per ``t``.
    """
    thresholds = np.arange(0, 141, 5, dtype=float) if thresholds is None else np.asarray(thresholds, float)
    lower, true = per_unit["lower"].to_numpy(float), per_unit["true_rul"].to_numpy(float)
    need = true <= horizon
    rows = []
    for t in thresholds:
        alert = lower <= t
        missed = int(np.sum(need & ~alert))
        rows.append(
            {
                "threshold": float(t),
                "alerts": int(alert.sum()),
                "needed": int(need.sum()),
                "missed": missed,
                "missed_rate": missed / max(int(need.sum()), 1),
                "false_alarms": int(np.sum(alert & ~need)),
                "wasted_per_alert": float(true[alert].mean()) if alert.any() else 0.0,
                "wasted_per_unit": float(true[alert].sum() / len(true)),
            }
        )
    return pd.DataFrame(rows)


def tradeoff_figure(curve: pd.DataFrame, chosen: float, title: str = "") -> Figure:
    """Missed-failure rate (y) against wasted life per unit (x), one point per threshold, the chosen one marked."""
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ax.plot(curve["wasted_per_unit"], curve["missed_rate"], "o-", ms=3)
    for _, r in curve.iloc[::4].iterrows():
        ax.annotate(f"t={r.threshold:.0f}", (r.wasted_per_unit, r.missed_rate), fontsize=7, alpha=0.7)
    pick = curve.iloc[int(np.argmin(np.abs(curve["threshold"] - chosen)))]
    ax.plot([pick.wasted_per_unit], [pick.missed_rate], "r*", ms=14, label=f"alert threshold {chosen:.0f}")
    ax.set_xlabel("wasted life: cycles given up per unit of the fleet")
    ax.set_ylabel("missed failures (share of units that needed service)")
    ax.set_title(title or "Alert trade-off: lower bound <= threshold")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ figures


def predicted_vs_true_figure(per_unit: pd.DataFrame, cap: float, title: str = "") -> Figure:
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    true, pred = per_unit["true_rul"].to_numpy(), per_unit["rul"].to_numpy()
    if "lower" in per_unit:
        below = (pred - per_unit["lower"]).clip(lower=0)
        above = (per_unit["upper"] - pred).clip(lower=0)
        ax.errorbar(true, pred, yerr=[below, above], fmt="none", ecolor="0.7", lw=0.8, zorder=1)
    ax.scatter(true, pred, s=12, zorder=2)
    hi = max(true.max(), pred.max()) + 5
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="perfect")
    ax.plot([0, cap, hi], [0, cap, cap], ":", color="tab:orange", lw=1, label=f"cap {cap:.0f}")
    ax.set_xlabel("true RUL at the last cycle")
    ax.set_ylabel("predicted RUL")
    ax.set_title(title or "Predicted vs true RUL (test units)")
    ax.legend()
    fig.tight_layout()
    return fig


def trajectories_figure(model: RULModel, test: pd.DataFrame, truth: pd.Series, units: list[str]) -> Figure:
    """Predicted RUL with its interval at every cycle of a few test units, against the true (capped) RUL."""
    fig = Figure(figsize=(4 * len(units), 3.4))
    axes = fig.subplots(1, len(units), squeeze=False)
    for ax, unit in zip(axes[0], units, strict=True):
        rows = test[test[UNIT] == unit].reset_index(drop=True)
        traj = model.predict_cycles(rows)
        true = truth[unit] + rows[CYCLE].max() - traj[CYCLE]
        ax.fill_between(traj[CYCLE], traj["lower"], traj["upper"], alpha=0.25, label="interval")
        ax.plot(traj[CYCLE], traj["rul"], label="predicted")
        ax.plot(traj[CYCLE], np.minimum(true, model.rul_cap), "k--", lw=1, label="true (capped)")
        ax.axhline(float(model.cfg["horizon"]), color="tab:red", lw=0.8, ls=":", label="alert horizon")
        ax.set_title(f"unit {unit}")
        ax.set_xlabel("cycle")
    axes[0][0].set_ylabel("RUL (cycles)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def pick_units(per_unit: pd.DataFrame, n: int = 3) -> list[str]:
    """A few test units spread over the true RUL range (short, middle, long)."""
    order = per_unit.sort_values("true_rul")[UNIT].tolist()
    return [order[int(i)] for i in np.linspace(0, len(order) - 1, min(n, len(order)))]


PROTOCOLS = {
    "cmapss": "One prediction per test unit at its last observed cycle (the official C-MAPSS protocol). "
    "`rmse`/`score`/`mae` against the true RUL as published.",
    "simulated": "One prediction per test unit at its last observed cycle. The test units are simulated and cut at "
    "random cycles; `rmse`/`score`/`mae` against the simulator's true RUL.",
    "table": "One prediction per held-out unit at its last observed cycle. The held-out units are cut from your own "
    "run-to-failure histories (a share of the failed units, never trained on, each cut at a random cycle); "
    "`rmse`/`score`/`mae` against the cycles each of them actually ran after the cut.",
}


def write_evaluation(
    out_dir: Path,
    table: dict[str, dict[str, float]],
    *,
    dataset: str,
    model: RULModel,
    test: pd.DataFrame,
    truth: pd.Series,
    per_unit: pd.DataFrame,
    curve: pd.DataFrame,
    info: dict[str, Any],
    protocol: str | None = None,
) -> Path:
    """The report (``report.md`` + figures) of one evaluation in ``out_dir``; returns its path. ``protocol``: where
    the test units and their truth come from (default: C-MAPSS's published test set)."""
    figures = {
        "predicted_vs_true": predicted_vs_true_figure(per_unit, model.rul_cap),
        "trajectories": trajectories_figure(model, test, truth, pick_units(per_unit)),
        "alert_tradeoff": tradeoff_figure(curve, float(model.cfg["horizon"])),
    }
    chosen = curve.iloc[int(np.argmin(np.abs(curve["threshold"] - float(model.cfg["horizon"]))))]
    sections = {
        "Protocol": (
            (protocol or PROTOCOLS["cmapss"]) + " `rmse_capped` against "
            f"min(true, {model.rul_cap:.0f}); `coverage`/`width`: conformal intervals at "
            f"{1 - float(model.cfg['alpha']):.0%} nominal, calibrated on held-out training units. The NASA "
            "score is a sum over units (late predictions cost more)."
        ),
        "Alerts": (
            f"Rule: alert when the interval's lower bound <= {float(model.cfg['horizon']):.0f} cycles. A unit "
            f"needs service when its true RUL <= {float(model.cfg['horizon']):.0f}. At this threshold: "
            f"{int(chosen.missed)} of {int(chosen.needed)} needed services missed, {int(chosen.alerts)} "
            f"alerts ({int(chosen.false_alarms)} early), {chosen.wasted_per_alert:.1f} cycles of life given "
            "up per alert. The trade-off figure moves the threshold: right = safer and more wasteful."
        ),
    }
    return write_report(
        out_dir,
        title=f"maintenance (RUL) on {dataset}",
        metrics=table,
        figures=figures,
        sections=sections,
        model_info=info,
        baselines=[k for k in table if k != model.kind],
        champion=model.kind,
        higher_is_better={"rmse": False, "score": False, "rmse_capped": False},
        intended_use=(
            "Remaining-useful-life estimates with intervals for units that degrade "
            "towards a failure threshold, and maintenance alerts from them."
        ),
        limitations=(
            "Trained on run-to-failure histories of one machine type; predictions are "
            f"capped at {model.rul_cap:.0f} cycles (a healthy unit reads as 'at least "
            "the cap'); intervals are marginal (by predicted-RUL bin), not per unit."
        ),
    )
