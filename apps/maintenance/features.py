"""Preprocessing, fitted on training units only: constant sensors dropped, operating conditions clustered from the
settings, sensors scaled per condition, the capped RUL target, sliding windows, and splits by unit.

Shapes: a window batch is ``x[n, window, n_sensors]`` (float32) with targets ``y[n]`` (capped RUL at the window's
last cycle). A unit shorter than the window is padded at the front with its first (scaled) reading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from apps.maintenance.data import CYCLE, RUL, UNIT, sensors_of, settings_of
from common.data import DataError

log = logging.getLogger(__name__)

MAX_CONDITIONS = 8


def add_rul(df: pd.DataFrame, cap: float | None = None) -> pd.DataFrame:
    """``df`` (run-to-failure histories) with column ``rul`` = last cycle of the unit - cycle, capped at ``cap``.

    Piecewise linear: constant ``cap`` while the machine is healthy, then falling by 1 per cycle to 0 at failure.
    """
    last = df.groupby(UNIT, sort=False)[CYCLE].transform("max")
    rul = (last - df[CYCLE]).astype(float)
    return df.assign(**{RUL: rul.clip(upper=cap) if cap is not None else rul})


def split_units(units: Any, fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(kept units, held-out units): a random ``fraction`` of the distinct units (at least one each side)."""
    uniq = list(dict.fromkeys(map(str, units)))
    if len(uniq) < 2:
        raise DataError(f"{len(uniq)} unit(s): a split by unit needs at least 2")
    rng = np.random.default_rng(seed)
    n_out = int(np.clip(round(fraction * len(uniq)), 1, len(uniq) - 1))
    out = set(rng.choice(uniq, n_out, replace=False).tolist())
    return [u for u in uniq if u not in out], [u for u in uniq if u in out]


def _kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> tuple[np.ndarray, float]:
    """Plain Lloyd's k-means with k-means++ starts (best of 5): (centres[k, d], inertia)."""
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, float] | None = None
    sample = x if len(x) <= 20_000 else x[rng.choice(len(x), 20_000, replace=False)]
    for _ in range(5):
        centres = [sample[rng.integers(len(sample))]]
        for _ in range(1, k):
            d2 = np.min(((sample[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else None
            centres.append(sample[rng.choice(len(sample), p=p)])
        c = np.asarray(centres, dtype=float)
        for _ in range(iters):
            lab = np.argmin(((sample[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
            new = np.array([sample[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = float(((sample - c[np.argmin(((sample[:, None, :] - c[None]) ** 2).sum(-1), axis=1)]) ** 2).sum())
        if best is None or inertia < best[1]:
            best = (c, inertia)
    assert best is not None
    return best


@dataclass
class Preprocessor:
    """Fitted state; :meth:`transform` maps a long table to scaled sensors plus a ``condition`` column.

    Fields: ``settings`` / ``sensors`` used (after dropping constants), ``setting_scale`` (divides settings
    before clustering), ``centres[k, n_settings]`` (scaled settings per condition), ``loc``/``scale[k, n_sensors]``
    per condition, ``dropped`` sensors, ``norm``.
    """

    settings: list[str]
    sensors: list[str]
    setting_scale: list[float]
    centres: list[list[float]]
    loc: list[list[float]]
    scale: list[list[float]]
    dropped: list[str] = field(default_factory=list)
    norm: str = "minmax"

    @property
    def n_conditions(self) -> int:
        return len(self.centres)

    @classmethod
    def fit(
        cls, train: pd.DataFrame, *, n_conditions: int | None = None, norm: str = "minmax", seed: int = 0
    ) -> Preprocessor:
        """Fit on training rows only (the caller passes training units; never validation or test rows)."""
        settings, sensors = settings_of(train), sensors_of(train)
        s = train[settings].to_numpy(float) if settings else np.zeros((len(train), 0))
        spread = s.std(0) if len(settings) else np.zeros(0)
        # scale each setting by its overall spread so no unit of measure dominates; constant settings are ignored
        setting_scale = np.where(spread > 0, spread, 1.0)
        z = s / setting_scale
        centres = _choose_conditions(z, n_conditions, seed)
        cond = _assign(z, centres)
        raw = train[sensors].to_numpy(float)
        keep, dropped = [], []
        for j, name in enumerate(sensors):
            # constant, or quantised to at most two levels, in every condition: no information about wear
            if all(np.unique(raw[cond == c, j]).size <= 2 for c in range(len(centres)) if (cond == c).any()):
                dropped.append(name)
            else:
                keep.append(j)
        if not keep:
            raise DataError(f"every sensor is constant within each operating condition: {sensors}")
        loc, scale = [], []
        for c in range(len(centres)):
            rows = raw[cond == c][:, keep]
            if len(rows) == 0:
                rows = raw[:, keep]
            if norm == "minmax":
                lo, hi = rows.min(0), rows.max(0)
                loc.append(((hi + lo) / 2).tolist())
                scale.append(np.where(hi > lo, (hi - lo) / 2, 1.0).tolist())
            else:
                sd = rows.std(0)
                loc.append(rows.mean(0).tolist())
                scale.append(np.where(sd > 0, sd, 1.0).tolist())
        pre = cls(
            settings, [sensors[j] for j in keep], setting_scale.tolist(), centres.tolist(), loc, scale, dropped, norm
        )
        log.info("preprocessing: %d condition(s), %d sensors kept, dropped %s", len(centres), len(keep), dropped)
        return pre

    def conditions(self, df: pd.DataFrame) -> np.ndarray:
        """The operating condition (0..k-1) of every row."""
        missing = [c for c in self.settings + self.sensors if c not in df.columns]
        if missing:
            raise DataError(
                f"missing column(s) {missing}: the model was trained with settings {self.settings} "
                f"and sensors {self.sensors}"
            )
        s = df[self.settings].to_numpy(float) if self.settings else np.zeros((len(df), 0))
        return _assign(s / np.asarray(self.setting_scale), np.asarray(self.centres))

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Scaled sensors ``[n_rows, n_sensors]`` (float32), each row by its condition's statistics."""
        cond = self.conditions(df)
        raw = df[self.sensors].to_numpy(float)
        loc, scale = np.asarray(self.loc)[cond], np.asarray(self.scale)[cond]
        return ((raw - loc) / scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(**d)


def _choose_conditions(z: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """Cluster centres of the scaled settings. ``k=None``: the smallest k (up to 8) whose clusters leave less
    than 0.1 % of the settings' variance within clusters (distinct operating points do; jitter around a single
    point never does, so it stays one condition)."""
    if z.shape[1] == 0 or len(z) == 0:
        return np.zeros((1, z.shape[1]))
    if k is not None:
        return _kmeans(z, int(k), seed)[0]
    centres, total = _kmeans(z, 1, seed)
    if total <= 1e-12:
        return centres
    for kk in range(2, MAX_CONDITIONS + 1):
        c, inertia = _kmeans(z, kk, seed)
        if inertia < 1e-3 * total:
            return c
    return centres


def _assign(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    if centres.shape[0] == 1 or z.shape[1] == 0:
        return np.zeros(len(z), dtype=np.int64)
    return np.argmin(((z[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)


def unit_slices(df: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(unit, start, stop) row ranges of a table sorted by unit then cycle."""
    units = df[UNIT].to_numpy()
    if len(units) == 0:
        return []
    change = np.flatnonzero(units[1:] != units[:-1]) + 1
    starts = np.r_[0, change]
    stops = np.r_[change, len(units)]
    return [(str(units[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def windows(
    x: np.ndarray,
    df: pd.DataFrame,
    window: int,
    *,
    last_only: bool = False,
    y: np.ndarray | None = None,
    every_cycle: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, list]:
    """Sliding windows over each unit of ``df`` (rows sorted by unit, cycle; ``x`` its transformed rows).

    Returns ``(windows[n, window, f], targets[n] or None, index)`` where ``index`` lists ``(unit, cycle)`` of each
    window's last row. ``last_only``: one window per unit, ending at its last cycle. ``every_cycle=False``
    (training): only windows that fit without padding, unless the unit is shorter than ``window`` (then one
    padded window). A window ending before cycle ``window`` is padded at the front with the unit's first row.
    """
    out, tgt, last_rows, names = [], [], [], []
    for unit, a, b in unit_slices(df):
        n = b - a
        xu = x[a:b]
        pad = max(window - n, 0)
        if last_only:
            ends = np.array([n])
        elif every_cycle:
            ends = np.arange(1, n + 1)
        else:
            ends = np.arange(window, n + 1) if n >= window else np.array([n])
        if pad or (len(ends) and ends[0] < window):
            need = window - int(ends.min())
            xu = np.concatenate([np.repeat(xu[:1], need, axis=0), xu])
            shift = need
        else:
            shift = 0
        sl = np.lib.stride_tricks.sliding_window_view(xu, window, axis=0)  # [n_windows, f, window]
        out.append(sl[ends + shift - window].transpose(0, 2, 1))
        if y is not None:
            tgt.append(y[a:b][ends - 1])
        last_rows.append(a + ends - 1)
        names.append((unit, len(ends)))
    if not out:
        return np.zeros((0, window, x.shape[1]), np.float32), (np.zeros(0) if y is not None else None), []
    # (unit, cycle) of every window's last row, built in one piece (a per-window Python loop cost seconds at scale)
    cycles = df[CYCLE].to_numpy()[np.concatenate(last_rows)].tolist()
    units = [u for u, k in names for _ in range(k)]
    return (
        np.ascontiguousarray(np.concatenate(out), dtype=np.float32),
        np.concatenate(tgt).astype(np.float32) if y is not None else None,
        list(zip(units, cycles, strict=True)),
    )


HEALTH_SPANS = (5, 10, 30)  # cycles of the rolling means in :func:`health_features`
HEALTH_CLIP = 100.0  # scaled readings are clipped to +-100 training half-ranges before the running sums
HEALTH_STD_SPANS = (10, 30)  # cycles of the rolling standard deviations


def health_feature_names(sensors: list[str], baseline_cycles: int) -> list[str]:
    """Column names of :func:`health_features`, in order."""
    names = ["age"]
    names += [f"mean{w}_{s}" for w in HEALTH_SPANS for s in sensors]
    names += [f"std{w}_{s}" for w in HEALTH_STD_SPANS for s in sensors]
    names += [f"drift{baseline_cycles}_{s}" for s in sensors]
    return names


def health_features(x: np.ndarray, df: pd.DataFrame, baseline_cycles: int = 20) -> np.ndarray:
    """Causal features of every row of ``df`` (sorted by unit, cycle; ``x[n_rows, f]`` its scaled sensors), each
    computed from the unit's rows up to and including that one -> ``[n_rows, 1 + 6 f]`` float32:

    - ``age``: the cycle number (cycles since the unit entered service);
    - rolling means over the last 5, 10 and 30 cycles, rolling standard deviations over 10 and 30 (fewer at the
      start of a unit's history);
    - ``drift``: the 10-cycle mean minus the unit's own baseline, the mean of its first ``baseline_cycles``
      cycles. C-MAPSS units start with different, unknown initial wear and manufacturing variation; the drift
      from each unit's own start is what separates wear from that offset (on FD001 it takes gradient boosting
      from RMSE 16.4 to 12.1).

    In serving, a unit's first ``baseline_cycles`` readings must be kept alongside its recent ones. The sums run
    over the whole table, so readings are first clipped to +-``HEALTH_CLIP`` (a sensor 100 training half-ranges
    off is broken): one absurd but finite reading (1e300) would otherwise overflow the running sums and turn the
    features of every later unit in the table into NaN.
    """
    n, f = x.shape
    if n == 0:
        return np.zeros((0, len(health_feature_names(["s"] * f, baseline_cycles))), np.float32)
    xs = np.clip(x.astype(np.float64), -HEALTH_CLIP, HEALTH_CLIP)
    c1 = np.vstack([np.zeros((1, f)), np.cumsum(xs, axis=0)])
    c2 = np.vstack([np.zeros((1, f)), np.cumsum(xs**2, axis=0)])
    del xs
    start = unit_starts(df)
    end = np.arange(1, n + 1)
    # filled column block by column block (float64 arithmetic, stored as float32): the peak is a few [n, f]
    # arrays instead of every statistic at once plus their float64 concatenation (1.5 GB at 10,000 units)
    out = np.empty((n, 1 + 6 * f), np.float32)
    out[:, 0] = df[CYCLE].to_numpy(float)

    def rolling(w: int, *, std: bool) -> np.ndarray:
        lo = np.maximum(start, end - w)
        k = (end - lo)[:, None].astype(np.float64)
        m = (c1[end] - c1[lo]) / k
        if not std:
            return m
        return np.sqrt(np.maximum((c2[end] - c2[lo]) / k - m**2, 0.0))

    for i, w in enumerate(HEALTH_SPANS):
        out[:, 1 + i * f : 1 + (i + 1) * f] = rolling(w, std=False)
    col = 1 + len(HEALTH_SPANS) * f
    for i, w in enumerate(HEALTH_STD_SPANS):
        out[:, col + i * f : col + (i + 1) * f] = rolling(w, std=True)
    b_end = np.minimum(end, start + baseline_cycles)
    baseline = (c1[b_end] - c1[start]) / (b_end - start)[:, None]
    out[:, col + len(HEALTH_STD_SPANS) * f :] = rolling(10, std=False) - baseline
    return out


def unit_starts(df: pd.DataFrame) -> np.ndarray:
    """For every row of ``df`` (sorted by unit, cycle), the index of its unit's first row."""
    units = df[UNIT].to_numpy()
    if len(units) == 0:
        return np.zeros(0, np.int64)
    first = np.r_[True, units[1:] != units[:-1]]
    return np.maximum.accumulate(np.where(first, np.arange(len(units)), 0))
