"""Data drift, prediction drift and performance over time.

Workflow: at training time build a :class:`ReferenceProfile` from the training frame (add the model's scores
as a column named ``prediction`` to monitor prediction drift) and save it with the model version
(``model_dir / "reference.json"``). Later, :func:`detect_drift` compares a recent frame with it and returns a
:class:`DriftReport` (per-feature table, verdict, markdown + PNG + JSON via :meth:`DriftReport.save`). Once
labels arrive, :func:`performance_over_time` gives metric decay per time window.

Every app's ``monitor`` runs the same sequence, :func:`run_check`: the champion's model directory -> its
reference profile -> :func:`detect_drift` -> a :class:`MonitorVerdict` (drift alert + the app's own alerts, its
statistics, the metric-over-time chart) -> ``drift.md`` + PNG + ``monitor.json`` (exit code 1 on any alert).

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
import itertools
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from common.reports import format_value, markdown_table, publish, save_figure, write_json, write_text

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

__all__ = [
    "NULL",
    "OTHER",
    "PREDICTION",
    "REFERENCE_FILE",
    "CategoricalFeatureProfile",
    "DriftReport",
    "DriftThresholds",
    "MonitorVerdict",
    "NumericFeatureProfile",
    "ReferenceProfile",
    "chi_square_test",
    "detect_drift",
    "ks_test",
    "performance_figure",
    "performance_over_time",
    "psi",
    "run_check",
]

REFERENCE_FILE = "reference.json"  # the profile's file name inside a registered model directory
PREDICTION = "prediction"  # name of the column that holds model outputs, profiled like any numeric feature
OTHER = "__other__"  # categories outside the reference's top-N
NULL = "__null__"  # missing values of a categorical feature
PROFILE_FORMAT = 1  # bump when the JSON layout changes


# ------------------------------------------------------------------ statistics


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


# ------------------------------------------------------------------ reference profile


def _finite_or_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class NumericFeatureProfile:
    """Reference statistics of a numeric feature.

    ``cuts``: interior quantile cut points, shape ``(k-1,)`` for ``k`` value bins (bin i = values x with
    ``cuts[i-1] <= x < cuts[i]``); ``fractions``: share of ALL rows in each value bin, shape ``(k,)``;
    ``null_fraction``: share of missing rows (``sum(fractions) + null_fraction == 1``); ``sample``: a random
    sample of non-null values for KS; ``stats``: mean/std/min/quantiles/max for the report.
    """

    cuts: list[float]
    fractions: list[float]
    null_fraction: float
    n: int
    sample: list[float]
    stats: dict[str, float | None] = field(default_factory=dict)
    kind: str = "numeric"

    @classmethod
    def from_series(
        cls, s: pd.Series, *, bins: int, sample_size: int, rng: np.random.Generator
    ) -> NumericFeatureProfile:
        x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        n = len(x)
        vals = x[np.isfinite(x)]
        if vals.size:
            qs = np.quantile(vals, np.linspace(0, 1, bins + 1)[1:-1])
            cuts = np.unique(qs)
        else:
            cuts = np.array([], dtype=float)
        prof = cls(cuts=cuts.tolist(), fractions=[], null_fraction=0.0, n=n, sample=[])
        fr, null = prof.bin_fractions(x)
        prof.fractions, prof.null_fraction = fr.tolist(), float(null)
        take = vals if vals.size <= sample_size else rng.choice(vals, size=sample_size, replace=False)
        prof.sample = [float(v) for v in take]
        if vals.size:
            q = np.quantile(vals, [0.05, 0.25, 0.5, 0.75, 0.95])
            prof.stats = {
                "mean": float(vals.mean()),
                "std": float(vals.std()),
                "min": float(vals.min()),
                "p05": q[0],
                "p25": q[1],
                "p50": q[2],
                "p75": q[3],
                "p95": q[4],
                "max": float(vals.max()),
            }
            prof.stats = {k: _finite_or_none(v) for k, v in prof.stats.items()}
        return prof

    def bin_fractions(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Share of the rows of ``x`` (shape ``(n,)``) per value bin, shape ``(k,)``; and the null share."""
        x = np.asarray(x, dtype=float)
        n = len(x)
        if n == 0:
            return np.zeros(len(self.cuts) + 1), 0.0
        ok = np.isfinite(x)
        idx = np.searchsorted(np.asarray(self.cuts, dtype=float), x[ok], side="right")
        counts = np.bincount(idx, minlength=len(self.cuts) + 1)
        return counts / n, float((~ok).sum() / n)

    def bin_labels(self) -> list[str]:
        c = self.cuts
        if not c:
            return ["all"]
        labels = [f"<{c[0]:.3g}"] + [f"[{a:.3g},{b:.3g})" for a, b in itertools.pairwise(c)]
        return [*labels, f">={c[-1]:.3g}"]


@dataclass
class CategoricalFeatureProfile:
    """Reference statistics of a categorical feature.

    ``fractions``: category (as string) -> share of all rows, for the top-N categories plus ``__other__`` (all
    remaining categories) and ``__null__`` (missing); the values sum to 1.
    """

    fractions: dict[str, float]
    n: int
    kind: str = "categorical"

    @classmethod
    def from_series(cls, s: pd.Series, *, top_n: int) -> CategoricalFeatureProfile:
        n = len(s)
        counts = _as_category_strings(s).value_counts()
        top = counts.drop(labels=[NULL], errors="ignore").head(top_n)
        fractions = {str(k): float(v / n) for k, v in top.items()} if n else {}
        fractions[OTHER] = float((n - top.sum() - counts.get(NULL, 0)) / n) if n else 0.0
        fractions[NULL] = float(counts.get(NULL, 0) / n) if n else 0.0
        return cls(fractions=fractions, n=n)

    def counts(self, s: pd.Series) -> dict[str, int]:
        """Counts of ``s`` over the reference categories (unknown categories go to ``__other__``)."""
        vc = _as_category_strings(s).value_counts()
        known = set(self.fractions) - {OTHER}
        out = {c: 0 for c in self.fractions}
        for cat, cnt in vc.items():
            key = cat if cat in known else OTHER
            out[key] = out.get(key, 0) + int(cnt)
        return out


FeatureProfile = NumericFeatureProfile | CategoricalFeatureProfile


def _as_category_strings(s: pd.Series) -> pd.Series:
    """Values as strings, missing as ``__null__``; integral floats print as ints (an int column read with
    NaNs becomes float, and "3.0" must match the reference's "3")."""
    if pd.api.types.is_float_dtype(s):
        vals = s.dropna()
        if len(vals) and bool((vals == np.round(vals)).all()) and bool(np.isfinite(vals).all()):
            s = s.astype("Int64")
    return s.astype(object).where(s.notna(), NULL).map(str)


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


@dataclass
class ReferenceProfile:
    """Reference statistics of every monitored feature (training data, and ``prediction`` when present).

    Saved as plain JSON (no pickle) next to the model: ``profile.save(model_dir / "reference.json")``.
    """

    features: dict[str, FeatureProfile]
    n_rows: int
    bins: int = 10
    sample_size: int = 5000
    seed: int = 0
    created_at: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        categorical: list[str] | None = None,
        bins: int = 10,
        sample_size: int = 5000,
        seed: int = 0,
        features: list[str] | None = None,
        top_n: int = 20,
        meta: Mapping[str, Any] | None = None,
    ) -> ReferenceProfile:
        """Profile the columns of ``df`` (rows = examples).

        Args:
            categorical: columns to treat as categorical; by default non-numeric and bool columns are
                categorical and numeric ones numeric. Datetime columns are skipped unless listed in
                ``features`` (time always drifts).
            bins: number of quantile bins per numeric feature (fewer when quantiles tie).
            sample_size: values kept per numeric feature for the KS test.
            seed: for the KS sample.
            features: columns to profile (default: all).
            top_n: categories kept per categorical feature; the rest are pooled into ``__other__``.
            meta: free-form JSON-able info stored with the profile (model name, version, data fingerprint).
        """
        if bins < 2:
            raise ValueError("bins must be >= 2")
        cat = set(categorical or [])
        missing = sorted(cat - set(df.columns))
        if missing:
            raise KeyError(f"categorical columns not in the frame: {missing}")
        cols = list(features) if features is not None else list(df.columns)
        rng = np.random.default_rng(seed)
        profiles: dict[str, FeatureProfile] = {}
        for col in cols:
            s = df[col]
            if col not in cat and features is None and pd.api.types.is_datetime64_any_dtype(s):
                log.info("reference profile: skipping datetime column %r", col)
                continue
            if col in cat or not _is_numeric(s):
                profiles[str(col)] = CategoricalFeatureProfile.from_series(s, top_n=top_n)
            else:
                profiles[str(col)] = NumericFeatureProfile.from_series(s, bins=bins, sample_size=sample_size, rng=rng)
        created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        return cls(
            features=profiles,
            n_rows=len(df),
            bins=bins,
            sample_size=sample_size,
            seed=seed,
            created_at=created,
            meta=dict(meta or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``format`` versioned)."""
        return {
            "format": PROFILE_FORMAT,
            "n_rows": self.n_rows,
            "bins": self.bins,
            "sample_size": self.sample_size,
            "seed": self.seed,
            "created_at": self.created_at,
            "meta": self.meta,
            "features": {name: asdict(p) for name, p in self.features.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        fmt = d.get("format", PROFILE_FORMAT)
        if fmt != PROFILE_FORMAT:
            raise ValueError(f"reference profile format {fmt} is not supported (expected {PROFILE_FORMAT})")
        feats: dict[str, FeatureProfile] = {}
        for name, p in d["features"].items():
            p = dict(p)
            kind = p.get("kind")
            if kind == "numeric":
                feats[name] = NumericFeatureProfile(**p)
            elif kind == "categorical":
                feats[name] = CategoricalFeatureProfile(**p)
            else:
                raise ValueError(f"reference profile: feature {name!r} has unknown kind {kind!r}")
        return cls(
            features=feats,
            n_rows=int(d["n_rows"]),
            bins=int(d.get("bins", 10)),
            sample_size=int(d.get("sample_size", 5000)),
            seed=int(d.get("seed", 0)),
            created_at=str(d.get("created_at", "")),
            meta=dict(d.get("meta", {})),
        )

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        """Read a profile written by :meth:`save`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))


# ------------------------------------------------------------------ drift detection


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

    def save(
        self,
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
        save_figure(self.psi_figure(), out / "drift.png")
        figures = ["![PSI per feature](drift.png)"]
        if self.distributions:
            save_figure(self.distribution_figure(), out / "drift_distributions.png")
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
        write_json(out / "drift.json", self.to_dict())
        alerts = list(alerts) if alerts is not None else ([self.alert] if self.alert else [])
        md = self._markdown_head(title, alerts, stats)
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
        log.info("drift report written: %s (drift=%s, %d alert(s))", path, self.drift, len(alerts))
        publish(out)
        return path

    def _markdown_head(self, title: str, alerts: Sequence[str], stats: Mapping[str, Any] | None) -> list[str]:
        """Title, verdict, alerts, statistics and the feature table of ``drift.md``."""
        verdict = "**DRIFT DETECTED**" if self.drift else "**No drift**"
        table = self.features[[c for c in FEATURE_COLUMNS if c in self.features.columns]].copy()
        table["drifted"] = table["drifted"].map({True: "yes", False: "no"})
        md = [
            f"# {title}",
            "",
            f"_Generated {self.created_at}_",
            "",
            f"Verdict: {verdict} ({len(self.drifted_features)} of {len(self.features)} features drifted"
            f"{': ' + ', '.join(self.drifted_features) if self.drifted_features else ''}).",
            "",
            f"Rule: {_rule_text(self.thresholds)}",
            "",
            f"Reference rows: {self.n_reference}; current rows: {self.n_current}.",
            "",
        ]
        if self.prediction_drift is not None:
            md += [f"Prediction drift: {'yes' if self.prediction_drift else 'no'}.", ""]
        for w in self.warnings:
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

    def psi_figure(self) -> Figure:
        """Horizontal bars of PSI per feature with the threshold line."""
        df = self.features.sort_values("psi", ascending=True)
        fig = Figure(figsize=(7, max(2.0, 0.35 * len(df) + 1)))
        ax = fig.add_subplot()
        colors = ["tab:red" if d else "tab:blue" for d in df["drifted"]]
        ax.barh(df["feature"].astype(str), df["psi"].fillna(0).to_numpy(), color=colors)
        ax.axvline(self.thresholds.psi, color="k", ls="--", lw=1, label=f"threshold {self.thresholds.psi}")
        ax.set_xlabel("PSI")
        ax.set_title("Population stability index per feature (red = drifted)")
        ax.legend(loc="lower right")
        return fig

    def distribution_figure(self, max_features: int = 9) -> Figure:
        """Reference vs current bin fractions for the ``max_features`` features with the highest PSI."""
        names = [f for f in self.features.sort_values("psi", ascending=False)["feature"] if f in self.distributions][
            :max_features
        ]
        ncols = min(3, max(1, len(names)))
        nrows = max(1, math.ceil(len(names) / ncols))
        fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows))
        for i, name in enumerate(names):
            d = self.distributions[name]
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


# ------------------------------------------------------------------ performance over time


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


# ------------------------------------------------------------------ the monitoring check of every app


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
