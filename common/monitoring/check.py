"""The monitoring check every app's ``monitor`` runs: :func:`run_check` -> :class:`MonitorVerdict`.

The champion's model directory -> its reference profile -> :func:`~common.monitoring.drift.detect_drift` -> a
verdict (drift alert + the app's own alerts, its statistics, the metric-over-time chart) -> ``monitor.json`` and
the drift report (exit code 1 on any alert).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from common.monitoring.drift import DriftReport, DriftThresholds, detect_drift
from common.monitoring.profile import REFERENCE_FILE, ReferenceProfile
from common.reports import write_json

log = logging.getLogger(__name__)


@dataclass
class MonitorVerdict:
    """What a ``monitor`` command concludes: the drift report, every alert (drift and the app's own), the
    monitored statistics and, where labels are in, the performance per window. ``exit_code`` is 1 on any alert."""

    report: DriftReport
    alerts: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    performance: pd.DataFrame = field(default_factory=pd.DataFrame)
    title: str = "Drift report"
    model_version: str | None = None

    @property
    def drift(self) -> bool:
        return self.report.drift

    @property
    def drifted_features(self) -> list[str]:
        return self.report.drifted_features

    @property
    def prediction_drift(self) -> bool | None:
        return self.report.prediction_drift

    @property
    def warnings(self) -> list[str]:
        return self.report.warnings

    @property
    def exit_code(self) -> int:
        """1 when any alert was raised, else 0 (the ``monitor`` command's exit code)."""
        return 1 if self.alerts else 0

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable verdict (what ``monitor.json`` holds)."""
        perf = self.performance
        return {
            "alerts": list(self.alerts),
            "exit_code": self.exit_code,
            "model_version": self.model_version,
            "stats": dict(self.stats),
            "warnings": list(self.warnings),
            "drift": self.report.to_dict(),
            "performance": perf.astype(object).where(perf.notna(), None).to_dict(orient="records") if len(perf) else [],
        }

    def save(self, out_dir: str | Path) -> Path:
        """``monitor.json`` (this verdict), then the drift report (:meth:`DriftReport.save`) with every alert,
        the statistics and the performance chart; returns ``drift.md``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "monitor.json", self.to_dict())
        return self.report.save(out, self.title, alerts=self.alerts, stats=self.stats, performance=self.performance)


def run_check(
    reference: ReferenceProfile | str | Path,
    current: pd.DataFrame,
    out_dir: str | Path | None = None,
    *,
    title: str = "Drift report",
    thresholds: DriftThresholds | None = None,
    extra_alerts: Sequence[str] = (),
    stats: Mapping[str, Any] | None = None,
    performance: pd.DataFrame | None = None,
    warnings: Sequence[str] = (),
    model_version: str | None = None,
) -> MonitorVerdict:
    """The monitoring sequence every app runs: reference profile -> drift -> verdict -> report.

    Args:
        reference: the profile, or the directory of a registered model version holding :data:`REFERENCE_FILE`
            (``registry.fetch_model_dir(champion)``).
        current: recent rows with the profiled feature columns, plus ``prediction`` (the model's output on them)
            when predictions are monitored.
        out_dir: where to write the report (:meth:`MonitorVerdict.save`); ``None`` writes nothing.
        extra_alerts: the app's own alerts (e.g. "new-user rate 40% > 25%"); listed before the drift alert in
            the report and the JSON.
        stats: the app's monitored statistics, shown as a table.
        performance: metrics per window (:func:`performance_over_time`) once labels are in; charted.
        warnings: caveats shown at the top of the report (e.g. a history shorter than the feature windows).

    Returns:
        the verdict; its ``exit_code`` is 1 when any alert (drift or extra) was raised.
    """
    if isinstance(reference, ReferenceProfile):
        profile = reference
    else:
        path = Path(reference)
        path = path / REFERENCE_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the model version was registered without a monitoring "
                "reference profile; register it again to monitor it"
            )
        profile = ReferenceProfile.load(path)
    report = detect_drift(profile, current, thresholds)
    report.warnings.extend(warnings)
    alerts = [*extra_alerts, *([report.alert] if report.alert else [])]
    verdict = MonitorVerdict(
        report,
        alerts,
        dict(stats or {}),
        performance if performance is not None else pd.DataFrame(),
        title,
        model_version,
    )
    if alerts:
        log.warning("monitor: %d alert(s): %s", len(alerts), "; ".join(alerts))
    if out_dir is not None:
        verdict.save(out_dir)
    return verdict
