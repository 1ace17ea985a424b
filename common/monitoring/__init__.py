"""Data drift, prediction drift and performance over time.

Workflow: at training time build a :class:`ReferenceProfile` from the training frame (add the model's scores
as a column named ``prediction`` to monitor prediction drift) and save it with the model version
(``model_dir / "reference.json"``). Later, :func:`detect_drift` compares a recent frame with it and returns a
:class:`DriftReport` (per-feature table, verdict, markdown + PNG + JSON via :meth:`DriftReport.save`). Once
labels arrive, :func:`performance_over_time` gives metric decay per time window.

Every app's ``monitor`` runs the same sequence, :func:`run_check`: the champion's model directory -> its
reference profile -> :func:`detect_drift` -> a :class:`MonitorVerdict` (drift alert + the app's own alerts, its
statistics, the metric-over-time chart) -> ``drift.md`` + PNG + ``monitor.json`` (exit code 1 on any alert).

Modules, lowest first: :mod:`~common.monitoring.profile` (the reference profile), :mod:`~common.monitoring.drift`
(PSI / KS / chi-square, the verdict rule and its formulas), :mod:`~common.monitoring.performance` (metrics per
time window), :mod:`~common.monitoring.render` (``drift.md`` and figures) and :mod:`~common.monitoring.check`
(:func:`run_check`). Everything public is importable from ``common.monitoring``.
"""

from common.monitoring.check import MonitorVerdict, run_check
from common.monitoring.drift import (
    FEATURE_COLUMNS,
    DriftReport,
    DriftThresholds,
    Rule,
    chi_square_test,
    detect_drift,
    ks_test,
    psi,
)
from common.monitoring.performance import performance_over_time
from common.monitoring.profile import (
    NULL,
    OTHER,
    PREDICTION,
    PROFILE_FORMAT,
    REFERENCE_FILE,
    CategoricalFeatureProfile,
    FeatureProfile,
    NumericFeatureProfile,
    ReferenceProfile,
)
from common.monitoring.render import distribution_figure, performance_figure, psi_figure, save_report

__all__ = [
    "FEATURE_COLUMNS",
    "NULL",
    "OTHER",
    "PREDICTION",
    "PROFILE_FORMAT",
    "REFERENCE_FILE",
    "CategoricalFeatureProfile",
    "DriftReport",
    "DriftThresholds",
    "FeatureProfile",
    "MonitorVerdict",
    "NumericFeatureProfile",
    "ReferenceProfile",
    "Rule",
    "chi_square_test",
    "detect_drift",
    "distribution_figure",
    "ks_test",
    "performance_figure",
    "performance_over_time",
    "psi",
    "psi_figure",
    "run_check",
    "save_report",
]
