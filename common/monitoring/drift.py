"""Drift statistics: PSI, KS and chi-square per feature against a :class:`ReferenceProfile`, and the verdict.

:func:`detect_drift` compares a recent frame with a reference profile and returns a :class:`DriftReport`
(per-feature table, verdict; rendered by :mod:`common.monitoring.render` through :meth:`DriftReport.save`).

Statistics (per feature):

- **PSI** (population stability index), numeric and categorical::

      PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

  over bins i, with e_i / a_i the reference / current fraction of rows in bin i. Numeric bins are the
  reference deciles (``bins`` quantile bins, cut points = interior quantiles of the reference, outer bins
  open to +-inf); categorical bins are the reference's top-N categories plus ``__other__``. Missing values
  form one extra bin in both cases, so a jump in the null rate counts as drift. Empty bins are floored at
  ``eps`` (1e-4) before the log. Rule of thumb: < 0.1 stable, 0.1-0.2 moderate, >= 0.2 significant shift.
- **KS** (numeric): two-sample Kolmogorov-Smirnov ``D = max_x |F_ref(x) - F_cur(x)|`` between a stored random
  sample of the reference (``sample_size`` values) and the current non-null values; p-value from
  ``scipy.stats.ks_2samp``.
- **chi-square** (categorical): goodness of fit of the current category counts to the reference fractions,
  ``X2 = sum_c (o_c - n * p_c)^2 / (n * p_c)`` with ``k - 1`` degrees of freedom (reference fractions
  treated as exact; empty reference categories smoothed with ``eps``).

Verdict rule. p-values of KS and chi-square shrink with sample size: with 100k rows a shift far too small to
matter is "significant" at any level, and with 50 rows a real shift may not be. PSI measures the size of the
shift and does not grow with n, so the default verdict uses PSI only and reports the tests alongside:

- a feature is drifted when ``psi >= thresholds.psi`` (``rule="psi"``, default); ``rule="psi_and_test"``
  also requires ``p_value < thresholds.p_value`` (fewer false alarms on small samples);
  ``rule="psi_or_test"`` flags either (most sensitive);
- the data has drifted when the share of drifted features is ``> thresholds.max_drifted_share`` (default 0:
  any drifted feature), or when the ``prediction`` feature drifted and ``thresholds.prediction_drift_alarms``.

A feature missing from the current frame counts as drifted (test ``missing``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from common.monitoring.profile import NULL, PREDICTION, NumericFeatureProfile, ReferenceProfile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# Columns of DriftReport.features, in report order.
FEATURE_COLUMNS = [
    "feature",
    "kind",
    "test",
    "statistic",
    "p_value",
    "psi",
    "drifted",
    "ref_null",
    "cur_null",
    "ref_mean",
    "cur_mean",
]


def psi(expected: np.ndarray | Sequence[float], actual: np.ndarray | Sequence[float], eps: float = 1e-4) -> float:
    """Population stability index between two binned distributions.

    ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` where ``e``/``a`` are the expected (reference) and actual
    (current) fractions per bin, shape ``(n_bins,)``. Inputs are normalised to sum to 1 (so counts work too),
    then floored at ``eps`` so that empty bins give a large but finite term. Symmetric in its arguments up to
    the flooring; 0 for identical distributions.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"psi: expected and actual need the same bins, got shapes {e.shape} and {a.shape}")
    if e.size == 0:
        return 0.0
    if (e < 0).any() or (a < 0).any():
        raise ValueError("psi: fractions must be non-negative")
    e = e / e.sum() if e.sum() > 0 else e
    a = a / a.sum() if a.sum() > 0 else a
    e = np.maximum(e, eps)
    a = np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(
    reference_sample: np.ndarray | Sequence[float], current: np.ndarray | Sequence[float]
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: returns ``(D, p_value)``; ``(nan, nan)`` if either side is empty.

    ``D = sup_x |F_ref(x) - F_cur(x)|`` (empirical CDFs). NaNs are dropped. Note: the p-value goes to 0 for
    any non-zero D as the samples grow; judge the size of the shift by D or PSI, not by p alone.
    """
    r = np.asarray(reference_sample, dtype=float)
    c = np.asarray(current, dtype=float)
    r, c = r[~np.isnan(r)], c[~np.isnan(c)]
    if r.size == 0 or c.size == 0:
        return float("nan"), float("nan")
    res = stats.ks_2samp(r, c)
    return float(res.statistic), float(res.pvalue)


def chi_square_test(
    reference_fractions: Mapping[str, float], current_counts: Mapping[str, int | float], eps: float = 1e-4
) -> tuple[float, float]:
    """Chi-square goodness of fit of ``current_counts`` to ``reference_fractions``: returns ``(X2, p_value)``.

    ``X2 = sum_c (o_c - n p_c)^2 / (n p_c)``, ``k - 1`` degrees of freedom, over the union of categories
    (a current category absent from the reference gets ``p_c = eps`` before renormalising; categories empty
    on both sides are dropped). ``(nan, nan)`` when there are no current counts or fewer than 2 categories.
    """
    cats = [
        c
        for c in dict.fromkeys([*reference_fractions, *current_counts])
        if reference_fractions.get(c, 0) > 0 or current_counts.get(c, 0) > 0
    ]
    obs = np.array([float(current_counts.get(c, 0)) for c in cats])
    n = obs.sum()
    if n <= 0 or len(cats) < 2:
        return float("nan"), float("nan")
    p = np.maximum(np.array([float(reference_fractions.get(c, 0.0)) for c in cats]), eps)
    p = p / p.sum()
    res = stats.chisquare(obs, f_exp=p * n)
    return float(res.statistic), float(res.pvalue)


Rule = Literal["psi", "psi_and_test", "psi_or_test"]


@dataclass
class DriftThresholds:
    """When a feature, and the data as a whole, count as drifted (see the module docstring for the rule).

    ``psi``: PSI at or above which a feature drifted (0.2 = "significant shift" rule of thumb).
    ``p_value``: significance level for KS / chi-square (used by ``rule`` other than ``"psi"``, and shown).
    ``max_drifted_share``: the data drifted when more than this share of features drifted (0.0 = any).
    ``rule``: ``"psi"`` | ``"psi_and_test"`` | ``"psi_or_test"``.
    ``prediction_drift_alarms``: a drifted ``prediction`` column alone makes the verdict "drift".
    ``min_rows``: fewer current rows than this gets a warning in the report (statistics are noisy).
    """

    psi: float = 0.2
    p_value: float = 0.01
    max_drifted_share: float = 0.0
    rule: Rule = "psi"
    prediction_drift_alarms: bool = True
    min_rows: int = 100


@dataclass
class DriftReport:
    """Result of :func:`detect_drift`.

    ``features``: one row per feature with columns ``feature, kind, test, statistic, p_value, psi, drifted``
    (plus ``ref_null, cur_null, ref_mean, cur_mean``); ``drift``: the overall verdict.
    """

    features: pd.DataFrame
    drift: bool
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    n_reference: int = 0
    n_current: int = 0
    warnings: list[str] = field(default_factory=list)
    created_at: str = ""
    distributions: dict[str, dict[str, list]] = field(default_factory=dict, repr=False)

    @property
    def drifted_features(self) -> list[str]:
        return self.features.loc[self.features["drifted"], "feature"].tolist()

    @property
    def drifted_share(self) -> float:
        return float(self.features["drifted"].mean()) if len(self.features) else 0.0

    @property
    def prediction_drift(self) -> bool | None:
        """Whether the ``prediction`` column drifted; None when it is not monitored."""
        row = self.features[self.features["feature"] == PREDICTION]
        return bool(row["drifted"].iloc[0]) if len(row) else None

    @property
    def exit_code(self) -> int:
        """1 when drift was detected, else 0 (for ``monitor`` commands)."""
        return int(self.drift)

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable verdict (what ``drift.json`` holds)."""
        feats = self.features.astype(object).where(self.features.notna(), None).to_dict(orient="records")
        return {
            "drift": bool(self.drift),
            "drifted_features": self.drifted_features,
            "drifted_share": self.drifted_share,
            "prediction_drift": self.prediction_drift,
            "rule": _rule_text(self.thresholds),
            "thresholds": asdict(self.thresholds),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "warnings": list(self.warnings),
            "created_at": self.created_at,
            "features": feats,
        }

    @property
    def alert(self) -> str | None:
        """The alert line of a drift verdict (None without drift)."""
        if not self.drift:
            return None
        names = self.drifted_features
        return (
            f"distribution drift: {len(names)} of {len(self.features)} features drifted"
            f"{' (' + ', '.join(names) + ')' if names else ''}"
        )

    @property
    def rule(self) -> str:
        """The verdict rule in words (shown in the report)."""
        return _rule_text(self.thresholds)

    def feature_table(self) -> pd.DataFrame:
        """The per-feature table in report order (:data:`FEATURE_COLUMNS` that are present)."""
        return self.features[[c for c in FEATURE_COLUMNS if c in self.features.columns]].copy()

    def save(
        self,
        out_dir: str | Path,
        title: str = "Drift report",
        *,
        alerts: Sequence[str] | None = None,
        stats: Mapping[str, Any] | None = None,
        performance: pd.DataFrame | None = None,
    ) -> Path:
        """Write the drift report into ``out_dir``; returns ``drift.md`` (:func:`common.monitoring.render.save_report`
        lists the files)."""
        from common.monitoring.render import save_report  # rendering stays out of the statistics' imports

        return save_report(self, out_dir, title, alerts=alerts, stats=stats, performance=performance)

    def psi_figure(self) -> Figure:
        """Horizontal bars of PSI per feature with the threshold line."""
        from common.monitoring.render import psi_figure

        return psi_figure(self)

    def distribution_figure(self, max_features: int = 9) -> Figure:
        """Reference vs current bin fractions for the ``max_features`` features with the highest PSI."""
        from common.monitoring.render import distribution_figure

        return distribution_figure(self, max_features)


def _rule_text(t: DriftThresholds) -> str:
    feat = {
        "psi": f"PSI >= {t.psi}",
        "psi_and_test": f"PSI >= {t.psi} and test p-value < {t.p_value}",
        "psi_or_test": f"PSI >= {t.psi} or test p-value < {t.p_value}",
    }[t.rule]
    overall = f"drift when the share of drifted features > {t.max_drifted_share}"
    if t.prediction_drift_alarms:
        overall += f" or the '{PREDICTION}' column drifted"
    return f"a feature drifted when {feat}; {overall}."


def detect_drift(
    reference: ReferenceProfile,
    current: pd.DataFrame,
    thresholds: DriftThresholds | None = None,
    *,
    eps: float = 1e-4,
) -> DriftReport:
    """Compare ``current`` (rows = recent examples, same columns as the reference) with ``reference``.

    Every feature of the profile gets PSI plus KS (numeric) or chi-square (categorical); extra columns of
    ``current`` are ignored. See the module docstring for the formulas and the verdict rule.
    """
    t = thresholds or DriftThresholds()
    rows: list[dict[str, Any]] = []
    dists: dict[str, dict[str, list]] = {}
    warnings: list[str] = []
    n_cur = len(current)
    if n_cur < t.min_rows:
        warnings.append(f"only {n_cur} current rows (< {t.min_rows}); statistics are noisy")
    for name, prof in reference.features.items():
        row: dict[str, Any] = {"feature": name, "kind": prof.kind}
        if name not in current.columns:
            row.update(test="missing", statistic=np.nan, p_value=np.nan, psi=np.nan, drifted=True)
            warnings.append(f"feature {name!r} is missing from the current data")
            rows.append(row)
            continue
        s = current[name]
        if isinstance(prof, NumericFeatureProfile):
            x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            fr, null = prof.bin_fractions(x)
            value = psi(np.r_[prof.fractions, prof.null_fraction], np.r_[fr, null], eps=eps)
            stat, p = ks_test(prof.sample, x)
            finite = x[np.isfinite(x)]
            row.update(
                test="ks",
                statistic=stat,
                p_value=p,
                psi=value,
                ref_null=prof.null_fraction,
                cur_null=null,
                ref_mean=prof.stats.get("mean"),
                cur_mean=float(finite.mean()) if finite.size else np.nan,
            )
            labels = prof.bin_labels()
            ref_f, cur_f = list(prof.fractions), fr.tolist()
            if prof.null_fraction > 0 or null > 0:
                labels, ref_f, cur_f = [*labels, "null"], [*ref_f, prof.null_fraction], [*cur_f, null]
            dists[name] = {"labels": labels, "reference": ref_f, "current": cur_f}
        else:
            counts = prof.counts(s)
            cats = list(prof.fractions)
            total = max(sum(counts.values()), 1)
            value = psi([prof.fractions[c] for c in cats], [counts[c] / total for c in cats], eps=eps)
            stat, p = chi_square_test(prof.fractions, counts, eps=eps)
            row.update(
                test="chi2",
                statistic=stat,
                p_value=p,
                psi=value,
                ref_null=prof.fractions.get(NULL, 0.0),
                cur_null=counts.get(NULL, 0) / total,
                ref_mean=np.nan,
                cur_mean=np.nan,
            )
            dists[name] = {
                "labels": cats,
                "reference": [prof.fractions[c] for c in cats],
                "current": [counts[c] / total for c in cats],
            }
        by_psi = row["psi"] >= t.psi
        by_test = bool(np.isfinite(row["p_value"]) and row["p_value"] < t.p_value)
        row["drifted"] = bool(
            {"psi": by_psi, "psi_and_test": by_psi and by_test, "psi_or_test": by_psi or by_test}[t.rule]
        )
        rows.append(row)
    cols = FEATURE_COLUMNS
    table = pd.DataFrame(rows).reindex(columns=cols)
    table["drifted"] = table["drifted"].astype(bool)
    for c in ["statistic", "p_value", "psi", "ref_null", "cur_null", "ref_mean", "cur_mean"]:
        table[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
    table = table.sort_values("psi", ascending=False, na_position="first", kind="stable").reset_index(drop=True)
    share = float(table["drifted"].mean()) if len(table) else 0.0
    pred = table.loc[table["feature"] == PREDICTION, "drifted"]
    drift = share > t.max_drifted_share or (t.prediction_drift_alarms and bool(pred.any()))
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    report = DriftReport(
        features=table,
        drift=bool(drift),
        thresholds=t,
        n_reference=reference.n_rows,
        n_current=n_cur,
        warnings=warnings,
        created_at=created,
        distributions=dists,
    )
    log.info(
        "drift check: %d/%d features drifted (%s); verdict drift=%s",
        int(table["drifted"].sum()),
        len(table),
        ", ".join(report.drifted_features) or "none",
        report.drift,
    )
    return report
