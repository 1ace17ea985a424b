"""Reference profiles: the statistics of the training data (and the model's outputs) that drift is measured against.

:meth:`ReferenceProfile.from_frame` profiles every column of a frame: numeric features by quantile bins (cut points
= interior quantiles of the reference), their null share and a random sample for the KS test; categorical
features by the shares of their top-N categories plus ``__other__`` and ``__null__``. The profile is plain JSON
(no pickle), saved next to a registered model as :data:`REFERENCE_FILE`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.reports import write_json

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.json"  # the profile's file name inside a registered model directory
PREDICTION = "prediction"  # name of the column that holds model outputs, profiled like any numeric feature
OTHER = "__other__"  # categories outside the reference's top-N
NULL = "__null__"  # missing values of a categorical feature
PROFILE_FORMAT = 1  # bump when the JSON layout changes


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
            raw = {
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
            prof.stats = {k: _finite_or_none(v) for k, v in raw.items()}
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
