"""The drift report: ``drift.md`` with its figures, written from a :class:`~common.monitoring.drift.DriftReport`.

Files of a report directory (:func:`save_report`): ``drift.json`` (the verdict), ``drift.png`` (PSI per
feature), ``drift_distributions.png`` (reference vs current for the most shifted features), with a performance
table ``performance.png`` + ``performance.csv``, and ``drift.md`` last. Figures are ``matplotlib.figure.Figure``
objects (no pyplot).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common.reports import format_value, markdown_table, publish, save_figure, write_json, write_text

if TYPE_CHECKING:  # drift.py imports this module lazily for DriftReport.save; no import back at run time
    from common.monitoring.drift import DriftReport

log = logging.getLogger(__name__)


def save_report(
    report: DriftReport,
    out_dir: str | Path,
    title: str = "Drift report",
    *,
    alerts: Sequence[str] | None = None,
    stats: Mapping[str, Any] | None = None,
    performance: pd.DataFrame | None = None,
) -> Path:
    """Write the drift report into ``out_dir``; returns ``drift.md``.

    Files: ``drift.json`` (the drift verdict), ``drift.png`` (PSI per feature), ``drift_distributions.png``
    (reference vs current for the most shifted features), with ``performance`` (output of
    :func:`performance_over_time`) ``performance.png`` + ``performance.csv``, and ``drift.md`` last. The
    markdown lists every alert (``alerts``; default: the drift alert), the monitored ``stats`` and the
    metric-over-time chart. When ``out_dir`` lies under ``$MLREF_HOME/reports`` the index is rebuilt.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(psi_figure(report), out / "drift.png")
    figures = ["![PSI per feature](drift.png)"]
    if report.distributions:
        save_figure(distribution_figure(report), out / "drift_distributions.png")
        figures.append("![Reference vs current](drift_distributions.png)")
    else:
        (out / "drift_distributions.png").unlink(missing_ok=True)  # no stale figure from an earlier report
    perf = performance if performance is not None and len(performance) else None
    if perf is not None:
        save_figure(performance_figure(perf), out / "performance.png")
        write_text(out / "performance.csv", perf.to_csv(index=False))
    else:
        for stale in ("performance.png", "performance.csv"):
            (out / stale).unlink(missing_ok=True)
    write_json(out / "drift.json", report.to_dict())
    alerts = list(alerts) if alerts is not None else ([report.alert] if report.alert else [])
    md = _markdown_head(report, title, alerts, stats)
    if perf is not None:
        md += [
            "## Performance over time",
            "",
            "Metrics per window on the rows whose labels are in.",
            "",
            markdown_table(perf, index=False),
            "",
            "![Performance over time](performance.png)",
            "",
        ]
    md += ["## Figures", "", *[line for f in figures for line in (f, "")]]
    path = write_text(out / "drift.md", "\n".join(md))
    log.info("drift report written: %s (drift=%s, %d alert(s))", path, report.drift, len(alerts))
    publish(out)
    return path


def _markdown_head(
    report: DriftReport, title: str, alerts: Sequence[str], stats: Mapping[str, Any] | None
) -> list[str]:
    """Title, verdict, alerts, statistics and the feature table of ``drift.md``."""
    verdict = "**DRIFT DETECTED**" if report.drift else "**No drift**"
    table = report.feature_table()
    table["drifted"] = table["drifted"].map({True: "yes", False: "no"})
    md = [
        f"# {title}",
        "",
        f"_Generated {report.created_at}_",
        "",
        f"Verdict: {verdict} ({len(report.drifted_features)} of {len(report.features)} features drifted"
        f"{': ' + ', '.join(report.drifted_features) if report.drifted_features else ''}).",
        "",
        f"Rule: {report.rule}",
        "",
        f"Reference rows: {report.n_reference}; current rows: {report.n_current}.",
        "",
    ]
    if report.prediction_drift is not None:
        md += [f"Prediction drift: {'yes' if report.prediction_drift else 'no'}.", ""]
    for w in report.warnings:
        md += [f"> Warning: {w}", ""]
    md += [f"## Alerts ({len(alerts)})", ""]
    md += [f"- {a}" for a in alerts] if alerts else ["None: no threshold was crossed."]
    md.append("")
    if stats:
        md += ["## Monitored statistics", "", "| statistic | value |", "| :--- | ---: |"]
        md += [f"| {format_value(k)} | {format_value(v)} |" for k, v in stats.items()]
        md.append("")
    md += [
        "## Features (sorted by PSI)",
        "",
        markdown_table(table, index=False),
        "",
        "PSI < 0.1: stable; 0.1-0.2: moderate shift; >= 0.2: significant shift. KS/chi-square p-values "
        "are shown for reference: on large samples they flag shifts too small to matter.",
        "",
    ]
    return md


def psi_figure(report: DriftReport) -> Figure:
    """Horizontal bars of PSI per feature with the threshold line."""
    df = report.features.sort_values("psi", ascending=True)
    fig = Figure(figsize=(7, max(2.0, 0.35 * len(df) + 1)))
    ax = fig.add_subplot()
    colors = ["tab:red" if d else "tab:blue" for d in df["drifted"]]
    ax.barh(df["feature"].astype(str), df["psi"].fillna(0).to_numpy(), color=colors)
    ax.axvline(report.thresholds.psi, color="k", ls="--", lw=1, label=f"threshold {report.thresholds.psi}")
    ax.set_xlabel("PSI")
    ax.set_title("Population stability index per feature (red = drifted)")
    ax.legend(loc="lower right")
    return fig


def distribution_figure(report: DriftReport, max_features: int = 9) -> Figure:
    """Reference vs current bin fractions for the ``max_features`` features with the highest PSI."""
    names = [f for f in report.features.sort_values("psi", ascending=False)["feature"] if f in report.distributions][
        :max_features
    ]
    ncols = min(3, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
    for i, name in enumerate(names):
        d = report.distributions[name]
        ax = fig.add_subplot(nrows, ncols, i + 1)
        x = np.arange(len(d["labels"]))
        ax.bar(x - 0.2, d["reference"], width=0.4, label="reference")
        ax.bar(x + 0.2, d["current"], width=0.4, label="current")
        ax.set_xticks(x, d["labels"], rotation=60, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("fraction of rows", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def performance_figure(perf: pd.DataFrame, metrics: Sequence[str] | None = None, title: str = "") -> Figure:
    """Line plot of metrics per window (output of :func:`performance_over_time`), with ``n`` as bars."""
    names = (
        list(metrics)
        if metrics is not None
        else [c for c in perf.columns if c not in {"window", "n", "label_mean", "score_mean"}]
    )
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    x = np.arange(len(perf))
    ax2.bar(x, perf["n"].to_numpy(), color="0.85", label="labelled rows")
    ax2.set_ylabel("labelled rows")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    for name in names:
        ax.plot(x, perf[name].to_numpy(dtype=float), marker="o", label=name)
    ax.set_xticks(x, [str(w)[:10] for w in perf["window"]], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("metric")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "Performance over time")
    fig.tight_layout()
    return fig
