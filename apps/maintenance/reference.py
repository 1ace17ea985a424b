"""Age-matched monitoring references: the training readings at the ages the monitored units are at.

A machine's sensors move as it wears, so the readings of a fleet depend on how old its units are. The training
histories run to failure; a live fleet is mostly earlier in life. Profiling every training row and comparing a
live fleet with it measures age, not a change of the machines: on C-MAPSS FD001, the model's own test units
"drifted" in 11 of 15 features. Compared like with like, they do not.

At registration :func:`reference_rows` keeps the training readings with their cycle and operating condition
(``reference_rows.parquet`` beside the model; raw sensors as float64, so quantised readings bin exactly as the
monitored ones do). At monitor time :func:`age_matched_profile` builds the reference from those rows reweighted
to the monitored rows' ages:

- age bins: ``AGE_BIN_CYCLES``-cycle bins of the reference's cycles, merged until each holds at least
  ``MIN_BIN_ROWS`` reference rows; a monitored row older than every reference row counts in the oldest bin;
- each reference row in bin ``b`` weighs ``m_b / (n_m * r_b)`` (``m_b`` monitored and ``r_b`` reference rows in
  the bin, ``n_m`` monitored rows), so the reference has the monitored rows' age distribution, and within each
  bin the training fleet's own spread of health;
- the profile (:class:`common.monitoring.ReferenceProfile`) then holds weighted quantile cuts and bin fractions,
  a weighted sample for KS, weighted mean/std; :func:`common.monitoring.detect_drift` compares as usual.

The reference's effective size ``(sum w)^2 / sum w^2`` is reported: bins the training fleet rarely reached (units
older than most training lives) rest on few rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from apps.maintenance.data import CYCLE, FAILED, UNIT
from apps.maintenance.features import Preprocessor
from common import monitoring
from common.data import DataError, write_table

log = logging.getLogger(__name__)

AGE_REFERENCE_FILE = "reference_rows.parquet"
CONDITION = "condition"
LIFE = "life"  # the last cycle of the reference row's unit (its failure)
AGE_BIN_CYCLES = 10  # width of the age bins before merging
MIN_BIN_ROWS = 50  # reference rows an age bin needs at least (sparser bins are merged with their neighbour)
MIN_MATCH_ROWS = 30  # reference rows a monitored row is matched with at least


def reference_rows(pre: Preprocessor, histories: pd.DataFrame) -> pd.DataFrame:
    """``cycle, life, condition, <sensors>`` of every training row (``life``: its unit's failure cycle; raw
    sensors, float64): what the reference is drawn from at monitor time."""
    life = histories.groupby(UNIT, sort=False)[CYCLE].transform("max").to_numpy(np.int64)
    out = pd.DataFrame({CYCLE: histories[CYCLE].to_numpy(np.int64), LIFE: life, CONDITION: pre.conditions(histories)})
    for s in pre.sensors:
        out[s] = histories[s].to_numpy(np.float64)
    return out


def save_reference_rows(pre: Preprocessor, histories: pd.DataFrame, path: Path) -> Path:
    return write_table(reference_rows(pre, histories), path)


def load_reference_rows(path: Path, pre: Preprocessor) -> pd.DataFrame:
    """The stored reference rows, checked against the model's sensors."""
    rows = pd.read_parquet(path)
    missing = [c for c in [CYCLE, LIFE, CONDITION, *pre.sensors] if c not in rows.columns]
    if missing:
        raise DataError(f"{path}: the stored reference lacks column(s) {missing}; register the model again")
    return rows


def scaled(pre: Preprocessor, raw: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """Sensors scaled by their condition's statistics, in float64 (the same arithmetic on both sides)."""
    return (np.asarray(raw, np.float64) - np.asarray(pre.loc)[cond]) / np.asarray(pre.scale)[cond]


def age_bins(ref_cycles: np.ndarray) -> np.ndarray:
    """Interior bin edges over the reference's cycles: ``AGE_BIN_CYCLES`` wide, merged until every bin has at
    least ``MIN_BIN_ROWS`` rows (one bin when there are fewer rows than that in all)."""
    c = np.asarray(ref_cycles, np.int64)
    if c.size == 0:
        return np.zeros(0)
    lo, hi = int(c.min()), int(c.max())
    candidates = np.arange(lo + AGE_BIN_CYCLES, hi + 1, AGE_BIN_CYCLES)
    counts = np.bincount(np.searchsorted(candidates, c, side="right"), minlength=len(candidates) + 1)
    edges, run = [], 0
    for i, edge in enumerate(candidates):
        run += counts[i]
        if run >= MIN_BIN_ROWS:
            edges.append(edge)
            run = 0
    # the rows after the last kept edge form the last bin; too few of them: merge it into the previous one
    if edges and (c >= edges[-1]).sum() < MIN_BIN_ROWS:
        edges.pop()
    return np.asarray(edges, dtype=float)


def alive_until(df: pd.DataFrame) -> np.ndarray:
    """The last cycle each row's unit is known to have survived: a running unit's last recorded cycle (it is still
    running there), the row's own cycle - 1 for a unit whose failure is recorded (``failed == 1``)."""
    cycles = df[CYCLE].to_numpy(np.int64)
    last = df.groupby(UNIT, sort=False)[CYCLE].transform("max").to_numpy(np.int64)
    failed = df[FAILED].to_numpy() == 1 if FAILED in df.columns else np.zeros(len(df), bool)
    return np.where(failed, cycles - 1, last)


def age_weights(
    ref_cycles: np.ndarray, ref_life: np.ndarray, cur_cycles: np.ndarray, cur_alive: np.ndarray
) -> np.ndarray:
    """Weight of each reference row (cycle, life of its unit) so that the weighted reference matches the current
    rows (cycle, cycle their unit is known to have survived): each current row spreads weight 1 evenly over the
    reference rows in its age bin whose unit lived longer than it is known to have survived, or, where fewer than
    ``MIN_MATCH_ROWS`` rows of the bin did, over the ``MIN_MATCH_ROWS`` longest-lived. Sums to 1."""
    c_ref, life = np.asarray(ref_cycles, np.int64), np.asarray(ref_life, np.int64)
    c_cur, alive = np.asarray(cur_cycles, np.int64), np.maximum(np.asarray(cur_alive, np.int64), 0)
    edges = age_bins(c_ref)
    rb = np.searchsorted(edges, c_ref, side="right")
    cb = np.searchsorted(edges, c_cur, side="right")
    n_bins = len(edges) + 1
    big = int(max(life.max(initial=0), alive.max(initial=0))) + 2  # composite keys: bin * big + cycle
    order = np.lexsort((-life, rb))  # by bin, longest life first
    start = np.searchsorted(rb[order], np.arange(n_bins), side="left")
    size = np.bincount(rb, minlength=n_bins)
    kth = np.minimum(MIN_MATCH_ROWS, np.maximum(size, 1)) - 1
    cap = life[order][np.minimum(start + kth, len(life) - 1)] - 1  # leaves >= MIN_MATCH_ROWS rows (or the bin)
    alive = np.minimum(alive, cap[cb])
    ref_key = np.sort(rb * big + life)
    bin_end = np.searchsorted(ref_key, (cb + 1) * big, side="left")
    eligible = bin_end - np.searchsorted(ref_key, cb * big + alive, side="right")
    cur_key = cb * big + alive
    by_key = np.argsort(cur_key, kind="stable")
    cum = np.r_[0.0, np.cumsum(1.0 / eligible[by_key])]
    keys = cur_key[by_key]
    w = cum[np.searchsorted(keys, rb * big + life, side="left")] - cum[np.searchsorted(keys, rb * big, side="left")]
    return w / w.sum()


def effective_rows(w: np.ndarray) -> float:
    """Kish's effective sample size of weights ``w``."""
    s2 = float(np.sum(w**2))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, q: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs, cw = x[order], np.cumsum(w[order])
    cw /= cw[-1]
    return xs[np.minimum(np.searchsorted(cw, q, side="left"), len(xs) - 1)]


def weighted_numeric(
    x: np.ndarray, w: np.ndarray, *, bins: int, sample_size: int, rng: np.random.Generator
) -> monitoring.NumericFeatureProfile:
    """A numeric feature profile of values ``x`` weighted by ``w`` (weighted quantile cuts and fractions, a sample
    drawn with probability ``w`` for KS, weighted statistics)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    keep = np.isfinite(x) & (w > 0)
    x, w = x[keep], w[keep]
    if x.size == 0:
        return monitoring.NumericFeatureProfile(cuts=[], fractions=[1.0], null_fraction=0.0, n=0, sample=[])
    p = w / w.sum()
    cuts = np.unique(_weighted_quantiles(x, p, np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.searchsorted(cuts, x, side="right")
    fractions = np.bincount(idx, weights=p, minlength=len(cuts) + 1)
    sample = rng.choice(x, size=min(sample_size, x.size), replace=True, p=p)
    mean = float(np.sum(p * x))
    q = _weighted_quantiles(x, p, np.array([0.05, 0.25, 0.5, 0.75, 0.95]))
    stats = {
        "mean": mean,
        "std": float(np.sqrt(np.sum(p * (x - mean) ** 2))),
        "min": float(x.min()),
        **{k: float(v) for k, v in zip(("p05", "p25", "p50", "p75", "p95"), q, strict=True)},
        "max": float(x.max()),
    }
    return monitoring.NumericFeatureProfile(
        cuts=cuts.tolist(),
        fractions=fractions.tolist(),
        null_fraction=0.0,
        n=int(x.size),
        sample=[float(v) for v in sample],
        stats=stats,
    )


def weighted_categorical(values: np.ndarray, w: np.ndarray) -> monitoring.CategoricalFeatureProfile:
    """A categorical feature profile of ``values`` weighted by ``w``."""
    shares = pd.Series(np.asarray(w, float)).groupby(pd.Series(values).astype(str).to_numpy()).sum()
    total = float(shares.sum()) or 1.0
    fractions = {str(k): float(v / total) for k, v in shares.items()}
    fractions.update({monitoring.OTHER: 0.0, monitoring.NULL: 0.0})
    return monitoring.CategoricalFeatureProfile(fractions=fractions, n=len(values))


def age_matched_profile(
    ref: pd.DataFrame,
    ref_cycles: np.ndarray,
    ref_life: np.ndarray,
    cur_cycles: np.ndarray,
    cur_alive: np.ndarray,
    *,
    categorical: tuple[str, ...] = (),
    bins: int = 10,
    sample_size: int = 5000,
    seed: int = 0,
) -> monitoring.ReferenceProfile:
    """The profile of every column of ``ref`` (reference rows at ``ref_cycles`` of units that failed at
    ``ref_life``) reweighted to the current rows (at ``cur_cycles``, of units known to have survived
    ``cur_alive``) by :func:`age_weights`; ``meta`` records the effective number of reference rows."""
    if len(ref) == 0:
        raise DataError("the age-matched reference has no rows")
    w = age_weights(ref_cycles, ref_life, cur_cycles, cur_alive)
    rng = np.random.default_rng(seed)
    features: dict[str, monitoring.FeatureProfile] = {}
    for col in ref.columns:
        vals = ref[col].to_numpy()
        if col in categorical:
            features[str(col)] = weighted_categorical(vals, w)
        else:
            features[str(col)] = weighted_numeric(vals, w, bins=bins, sample_size=sample_size, rng=rng)
    n_eff = effective_rows(w)
    return monitoring.ReferenceProfile(
        features=features,
        n_rows=len(ref),
        bins=bins,
        sample_size=sample_size,
        seed=seed,
        created_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        meta={"age_matched": True, "effective_rows": round(n_eff, 1), "age_bins": len(age_bins(ref_cycles)) + 1},
    )
