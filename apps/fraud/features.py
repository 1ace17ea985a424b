"""Feature engineering: one definition, computed in batch (training, batch scoring) and online (the API).

Features of a transaction at time ``t`` (the handbook's chapter 3.4 "baseline feature transformation"):

- ``amount``; ``is_weekend`` (Saturday/Sunday); ``is_night`` (hour <= 6);
- per customer, over the windows ``(t - w, t]`` for ``w`` in 1, 7, 30 days, *including* the transaction itself:
  ``customer_nb_tx_{w}d`` (count) and ``customer_avg_amount_{w}d`` (mean amount);
- per terminal, over ``(t - delay - w, t - delay]`` - shifted back by the 7-day label feedback delay, because a
  fraud label is only known a week later: ``terminal_nb_tx_{w}d`` (count) and ``terminal_risk_{w}d``
  (share of those transactions labelled fraud; 0 when there are none);
- extended (``FeatureConfig.extended``, beyond the handbook), by group (``FeatureConfig.groups``,
  :data:`FEATURE_GROUPS`; ``W`` = the longest window):

  - ``amount_ratio``: ``amount_to_customer_avg_{w}d`` for w in 7 and 30, the amount over the customer's mean
    amount in the window (current transaction included) - a card used for unusually large amounts;
  - ``amount_vs_past``: ``amount_to_past_avg_{W}d``, the amount over the mean of the card's *earlier*
    transactions in ``(t - W, t]`` (1 when there are none): the compromised card's x5 amounts, not diluted by
    the transaction itself;
  - ``spend_shift``: ``customer_avg_{w}d_to_{W}d`` for the shorter windows: a card whose recent spending
    jumped (a compromised card's later transactions);
  - ``terminal_fraud_age``: ``terminal_days_since_first_fraud`` / ``terminal_days_since_last_fraud``, days from
    the first / last *known* fraud of the terminal in the delayed window ``(t - delay - W, t - delay]`` to ``t``
    (-1 when there is none): how long a terminal has been compromised (the simulator's compromises last 28 days).

Time is handled in whole seconds since the Unix epoch (floor), in both paths. Ties (same second) keep their row
order (the arrival order): a transaction sees the earlier rows of the same second, not the later ones - exactly
what the online path sees when transactions arrive in that order. ``tests/fraud/test_features.py`` proves
online == batch. Ids are compared as strings (:func:`apps.fraud.data.id_key`): ``171`` and ``"171"`` are one card.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import FeatureConfig
from apps.fraud.data import AMOUNT, CUSTOMER, LABEL, TERMINAL, TIMESTAMP, TX_ID, id_key
from common.data import SECONDS_PER_DAY

EPOCH = pd.Timestamp("1970-01-01")
_EPOCH_DT = datetime(1970, 1, 1)
RATIO_WINDOWS = (7, 30)
NO_FRAUD = -1.0  # terminal_days_since_*_fraud when the window holds no known fraud


def _group_names(group: str, cfg: FeatureConfig) -> list[str]:
    wc, wt = max(cfg.customer_windows), max(cfg.terminal_windows)
    if group == "amount_ratio":
        return [f"amount_to_customer_avg_{w}d" for w in RATIO_WINDOWS if w in cfg.customer_windows]
    if group == "amount_vs_past":
        return [f"amount_to_past_avg_{wc}d"]
    if group == "spend_shift":
        return [f"customer_avg_{w}d_to_{wc}d" for w in cfg.customer_windows if w < wc]
    if group == "terminal_fraud_age":
        return ["terminal_days_since_first_fraud", "terminal_days_since_last_fraud"] if wt else []
    raise ValueError(f"unknown feature group {group!r}; choose among {FEATURE_GROUPS}")


# Feature groups beyond the handbook's 15 (see the module docstring; their measured AP gains: the README).
FEATURE_GROUPS = ("amount_ratio", "amount_vs_past", "spend_shift", "terminal_fraud_age")


def feature_names(cfg: FeatureConfig | None = None) -> list[str]:
    """The model's input columns, in order."""
    cfg = cfg or FeatureConfig()
    names = [AMOUNT, "is_weekend", "is_night"]
    for w in cfg.customer_windows:
        names += [f"customer_nb_tx_{w}d", f"customer_avg_amount_{w}d"]
    for w in cfg.terminal_windows:
        names += [f"terminal_nb_tx_{w}d", f"terminal_risk_{w}d"]
    if cfg.extended:
        for g in FEATURE_GROUPS:  # a fixed order, whatever the order of cfg.groups
            if g in cfg.groups:
                names += _group_names(g, cfg)
        for g in cfg.groups:
            _group_names(g, cfg)  # raises for an unknown group
    return names


# Every feature in words a customer understands (the fraud API's reasons, the chatbot's explanation). A key
# ``{w}``/``{W}`` stands for a window's days in :func:`feature_names`; in the text ``{w}`` becomes "day" or "7 days"
# and ``{w_span}`` "7-day". The terminal windows end the label feedback delay before the transaction (only
# confirmed outcomes count), hence "a recent 7-day period". A feature without an entry here fails the tests
# (tests/fraud/test_explanations.py) and :func:`feature_label`.
FEATURE_LABELS: dict[str, str] = {
    AMOUNT: "the amount of this transaction",
    "is_weekend": "the day of the week (weekend or weekday)",
    "is_night": "the time of day (night or day)",
    "customer_nb_tx_{w}d": "the number of transactions on this card in the last {w}",
    "customer_avg_amount_{w}d": "the average amount spent with this card in the last {w}",
    "terminal_nb_tx_{w}d": "the number of transactions at this terminal over a recent {w_span} period",
    "terminal_risk_{w}d": "the share of confirmed fraud at this terminal over a recent {w_span} period",
    "amount_to_customer_avg_{w}d": "the amount compared with this card's average in the last {w}",
    "amount_to_past_avg_{w}d": "the amount compared with this card's earlier transactions in the last {w}",
    "customer_avg_{w}d_to_{W}d": "this card's average amount in the last {w} compared with the last {W}",
    "terminal_days_since_first_fraud": "how long ago fraud was first confirmed at this terminal",
    "terminal_days_since_last_fraud": "how long ago fraud was last confirmed at this terminal",
}
_LABEL_PATTERNS = {
    key: re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[0-9]+)", re.escape(key))) for key in FEATURE_LABELS
}


def _days(n: int) -> str:
    return "day" if n == 1 else f"{n} days"


def feature_label(name: str) -> str:
    """``name`` (a column of :func:`feature_names`) in words, from :data:`FEATURE_LABELS`; KeyError if it has none."""
    for key, pattern in _LABEL_PATTERNS.items():
        m = pattern.fullmatch(name)
        if m:
            days = {k: int(v) for k, v in m.groupdict().items()}
            words = {k: _days(v) for k, v in days.items()} | {f"{k}_span": f"{v}-day" for k, v in days.items()}
            return FEATURE_LABELS[key].format(**words)
    raise KeyError(f"feature {name!r} has no label: add it to apps.fraud.features.FEATURE_LABELS")


def history_needed(cfg: FeatureConfig | None = None) -> dict[str, int]:
    """Days of history each feature needs before it is complete: ``w`` for the customer windows (and the amount
    ratios), ``delay + w`` for the terminal windows; 0 for the transaction's own fields."""
    cfg = cfg or FeatureConfig()
    need = {name: 0 for name in feature_names(cfg)}
    wc, wt = max(cfg.customer_windows), max(cfg.terminal_windows)
    for w in cfg.customer_windows:
        need[f"customer_nb_tx_{w}d"] = need[f"customer_avg_amount_{w}d"] = w
        if f"amount_to_customer_avg_{w}d" in need:
            need[f"amount_to_customer_avg_{w}d"] = w
        if f"customer_avg_{w}d_to_{wc}d" in need:
            need[f"customer_avg_{w}d_to_{wc}d"] = wc
    if f"amount_to_past_avg_{wc}d" in need:
        need[f"amount_to_past_avg_{wc}d"] = wc
    for w in cfg.terminal_windows:
        need[f"terminal_nb_tx_{w}d"] = need[f"terminal_risk_{w}d"] = cfg.delay_days + w
    for name in ("terminal_days_since_first_fraud", "terminal_days_since_last_fraud"):
        if name in need:
            need[name] = cfg.delay_days + wt
    return need


def to_seconds(ts: pd.Series | pd.Timestamp | Any) -> np.ndarray | int:
    """Whole seconds since the epoch (floor); timezone-aware times are converted to UTC first."""
    if isinstance(ts, pd.Series):
        if ts.dt.tz is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        return ((ts - EPOCH) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
    if not isinstance(ts, datetime):  # strings, numpy datetimes
        ts = pd.Timestamp(ts)
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    # exact floor for any datetime (years 1-9999; pandas' nanosecond arithmetic overflows after 2262)
    td = ts - _EPOCH_DT if not isinstance(ts, pd.Timestamp) else ts.to_pydatetime(warn=False) - _EPOCH_DT
    return td.days * SECONDS_PER_DAY + td.seconds


def _calendar(seconds: np.ndarray | int, night_end_hour: int) -> tuple[Any, Any]:
    """(is_weekend, is_night) from epoch seconds (UTC wall clock). 1970-01-01 was a Thursday (weekday 3)."""
    weekday = (seconds // SECONDS_PER_DAY + 3) % 7
    hour = (seconds % SECONDS_PER_DAY) // 3600
    return (weekday >= 5), (hour <= night_end_hour)


# ---------------------------------------------------------------- batch


def _group_codes(ids: pd.Series) -> np.ndarray:
    """Integer codes of an id column; ids compare as strings (an object column may mix 171 and "171").

    All strings or all integers are factorised as they are, integers mixed with strings are converted in C
    (``astype(str)``: ``171`` -> ``"171"``, as :func:`id_key`); only other mixes (floats) go through
    :func:`id_key` row by row (seconds per million rows)."""
    if ids.dtype == object:
        kind = pd.api.types.infer_dtype(ids, skipna=False)
        if kind == "mixed-integer":
            ids = ids.astype(str)
        elif kind not in ("string", "integer", "empty"):
            ids = ids.map(id_key)
    return pd.factorize(ids)[0]


@dataclass
class _Rows:
    """What the features read of each transaction, as arrays in row order: epoch seconds, amount, label (0 when
    unknown) and integer codes of the card and the terminal (equal codes = equal ids)."""

    t: np.ndarray
    amount: np.ndarray
    label: np.ndarray
    customer: np.ndarray
    terminal: np.ndarray

    @classmethod
    def of(cls, df: pd.DataFrame, customer: np.ndarray, terminal: np.ndarray) -> _Rows:
        """The rows of ``df``, with the given id codes."""
        n = len(df)
        label = df[LABEL].fillna(0).to_numpy(dtype=np.int64) if LABEL in df.columns else np.zeros(n, np.int64)
        return cls(to_seconds(df[TIMESTAMP]), df[AMOUNT].to_numpy(dtype=float), label, customer, terminal)

    def __len__(self) -> int:
        return len(self.t)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.t, self.amount, self.label, self.customer, self.terminal

    def take(self, rows: np.ndarray | slice) -> _Rows:
        return _Rows(*(a[rows] for a in self.arrays()))

    def append(self, other: _Rows) -> _Rows:
        return _Rows(*(np.concatenate([a, b]) for a, b in zip(self.arrays(), other.arrays(), strict=True)))


def _entity_order(codes: np.ndarray, arrival: np.ndarray) -> np.ndarray:
    """Row positions ordered by (entity code, arrival): a stable sort of the codes of the rows in ``arrival``
    order (time, then row order)."""
    keys = codes[arrival]
    if len(keys) and keys.max() < 1 << 16:
        keys = keys.astype(np.uint16)  # NumPy sorts 16-bit keys stably by radix sort: linear time
    return arrival[np.argsort(keys, kind="stable")]


def _grouped_windows(group: np.ndarray, t: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Sorted view for windowed look-ups: a monotone int64 key of the rows in ``order`` (by group, then time)."""
    t0 = t.min()
    span = int(t.max() - t0) + 400 * SECONDS_PER_DAY  # larger than any window, so groups never overlap
    key = group.astype(np.int64) * span + (t - t0)  # in row order: one gather below, not one per input
    return key[order]


def compute_features(df: pd.DataFrame, cfg: FeatureConfig | None = None, *, start: int = 0) -> pd.DataFrame:
    """Feature frame for the rows ``start:`` of ``df`` (same index), from the history inside ``df`` only.

    ``df`` needs :data:`TIMESTAMP`, :data:`CUSTOMER`, :data:`TERMINAL`, :data:`AMOUNT` and, for the terminal
    risk, :data:`LABEL` (missing labels count as genuine: not known to be fraud). ``start``: the rows before it
    are history only: they are sorted and searched, not featurised. Cost: a few sorts and binary searches -
    about a second per million transactions. :class:`ChunkedFeatures` gives the same features chunk by chunk.
    """
    cfg = cfg or FeatureConfig()
    n = len(df)
    if not 0 <= start <= n:
        raise ValueError(f"start must be in [0, {n}], got {start}")
    if start == n:
        return _frame(None, cfg, df.index[start:])
    rows = _Rows.of(df, _group_codes(df[CUSTOMER]), _group_codes(df[TERMINAL]))
    return _frame(_window_features(rows, _orders(rows), cfg, start), cfg, df.index[start:])


def _orders(rows: _Rows) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` ordered by (customer, arrival) and by (terminal, arrival)."""
    arrival = np.argsort(rows.t, kind="stable")  # time, then row order
    return _entity_order(rows.customer, arrival), _entity_order(rows.terminal, arrival)


def _window_features(
    rows: _Rows, orders: tuple[np.ndarray, np.ndarray], cfg: FeatureConfig, start: int
) -> dict[str, np.ndarray]:
    """Features of ``rows[start:]`` by name; ``orders``: :func:`_orders` of ``rows``."""
    names = feature_names(cfg)
    t, amount, label = rows.t, rows.amount, rows.label
    m = len(rows) - start
    a = amount[start:]
    out: dict[str, np.ndarray] = {AMOUNT: a.copy()}  # not a view of the rows (ChunkedFeatures keeps them)
    out["is_weekend"], out["is_night"] = _calendar(t[start:], cfg.night_end_hour)
    wc, wt = max(cfg.customer_windows), max(cfg.terminal_windows)

    # customers: windows (t - w, t], the transaction included
    order = orders[0]
    key = _grouped_windows(rows.customer, t, order)
    csum = _prefix_sums(amount[order])
    sel = np.flatnonzero(order >= start)  # sorted positions of the rows to featurise
    dest = order[sel] - start  # ... and their output rows
    for w in cfg.customer_windows:
        left = np.searchsorted(key, key[sel] - w * SECONDS_PER_DAY, side="right")
        count = sel - left + 1
        total = csum[sel + 1] - csum[left]
        nb, avg = np.empty(m), np.empty(m)
        nb[dest], avg[dest] = count, total / count
        out[f"customer_nb_tx_{w}d"], out[f"customer_avg_amount_{w}d"] = nb, avg
        if w == wc:  # mean amount of the card's earlier transactions in the longest window (0: none)
            past = np.empty(m)
            past[dest] = np.divide(total - amount[order[sel]], count - 1, out=np.zeros(len(sel)), where=count > 1)
            out[f"amount_to_past_avg_{wc}d"] = _ratio(a, past)

    # terminals: windows (t - delay - w, t - delay]
    order = orders[1]
    key = _grouped_windows(rows.terminal, t, order)
    labels = label[order]
    fsum = _prefix_sums(labels)
    sel = np.flatnonzero(order >= start)
    dest = order[sel] - start
    d = cfg.delay_days * SECONDS_PER_DAY
    right = np.searchsorted(key, key[sel] - d, side="right")
    for w in cfg.terminal_windows:
        left = np.searchsorted(key, key[sel] - d - w * SECONDS_PER_DAY, side="right")
        count = right - left
        frauds = fsum[right] - fsum[left]
        nb, risk = np.empty(m), np.empty(m)
        nb[dest] = count
        risk[dest] = np.divide(frauds, count, out=np.zeros(len(sel)), where=count > 0)
        out[f"terminal_nb_tx_{w}d"], out[f"terminal_risk_{w}d"] = nb, risk
        if w == wt and "terminal_days_since_first_fraud" in names:
            fraud = np.flatnonzero(labels == 1)  # sorted positions of the known frauds
            first, last = _fraud_ages(fraud, t[order[fraud]], t[order[sel]], left, right)
            out["terminal_days_since_first_fraud"], out["terminal_days_since_last_fraud"] = np.empty(m), np.empty(m)
            out["terminal_days_since_first_fraud"][dest] = first
            out["terminal_days_since_last_fraud"][dest] = last

    for w in cfg.customer_windows:
        if f"amount_to_customer_avg_{w}d" in names:
            out[f"amount_to_customer_avg_{w}d"] = _ratio(a, out[f"customer_avg_amount_{w}d"])
        if f"customer_avg_{w}d_to_{wc}d" in names:
            out[f"customer_avg_{w}d_to_{wc}d"] = _ratio(
                out[f"customer_avg_amount_{w}d"], out[f"customer_avg_amount_{wc}d"]
            )
    return out


def _prefix_sums(x: np.ndarray) -> np.ndarray:
    """``[0, x0, x0 + x1, ...]``: the sum of ``x[i:j]`` is ``s[j] - s[i]``."""
    s = np.empty(len(x) + 1, dtype=x.dtype)
    s[0] = 0
    np.cumsum(x, out=s[1:])
    return s


def _frame(out: dict[str, np.ndarray] | None, cfg: FeatureConfig, index: pd.Index) -> pd.DataFrame:
    """The feature frame (columns :func:`feature_names`) of :func:`_window_features`' arrays; None: no rows."""
    names = feature_names(cfg)
    if out is None:
        return pd.DataFrame({name: np.empty(0) for name in names}, index=index)
    X = np.empty((len(index), len(names)))  # one float block (not one per column): no consolidation copy downstream
    for j, name in enumerate(names):
        X[:, j] = out[name]
    frame = pd.DataFrame(X, index=index, columns=names)
    for flag in ("is_weekend", "is_night"):
        frame[flag] = out[flag].astype(np.int8)  # 0/1 categories (monitoring profiles them as such)
    return frame


class _IdCodes:
    """Integer codes of ids (compared as :func:`id_key` strings) that stay the same from one call to the next:
    ``ids[code]`` is the id of ``code``. Only the distinct ids of each call are looked up."""

    def __init__(self) -> None:
        self.ids = pd.Index([], dtype=object)

    def __call__(self, values: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(np.asarray(values))  # an array, not a Series: no string dtype inference
        keys = pd.Index(uniques, dtype=object)
        if keys.inferred_type != "string":  # integers (a history's) or a mix: as strings, 171 and "171" are one
            merged, keys = pd.factorize(keys.map(id_key))
            local = merged[local]
        codes = self.ids.get_indexer(keys)
        new = codes < 0
        codes[new] = len(self.ids) + np.arange(np.count_nonzero(new))
        self.ids = self.ids.append(keys[new])
        return codes[local]

    def keep(self, in_use: np.ndarray) -> np.ndarray:
        """Forget the ids whose codes are not in ``in_use``; returns ``in_use`` renumbered. The renumbering keeps
        the codes' order, so rows sorted by code stay sorted."""
        kept = np.unique(in_use)
        self.ids = self.ids[kept]
        return np.searchsorted(kept, in_use)


class ChunkedFeatures:
    """:func:`compute_features` over a stream of time-sorted chunks (batch scoring): each chunk's features see
    the chunks before it and the last ``history_days`` of ``history``, as :func:`compute_features` over all of
    them at once would.

    Between chunks it keeps the transactions of the last ``history_days`` as arrays, ids as integer codes, so a
    chunk costs no re-reading of that history: no id hashing, no frame concatenation, no time conversion, only
    the sorts and searches of the features themselves. Memory: O(transactions in ``history_days``).
    """

    def __init__(self, cfg: FeatureConfig | None = None, history: pd.DataFrame | None = None) -> None:
        self.cfg = cfg or FeatureConfig()
        self._ids = _IdCodes(), _IdCodes()
        self.tail = _Rows(*(np.empty(0, dt) for dt in (np.int64, float, np.int64, np.int64, np.int64)))
        if history is not None and len(history):
            t = to_seconds(history[TIMESTAMP])
            self._carry(self._encode(history[t > t.max() - self.cfg.history_days * SECONDS_PER_DAY]))

    def _encode(self, df: pd.DataFrame) -> _Rows:
        return _Rows.of(df, self._ids[0](df[CUSTOMER]), self._ids[1](df[TERMINAL]))

    def __call__(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """Feature frame of ``chunk`` (its index), which then joins the history of the next chunks."""
        return _frame(self.arrays(chunk) if len(chunk) else None, self.cfg, chunk.index)

    def arrays(self, chunk: pd.DataFrame) -> dict[str, np.ndarray]:
        """:meth:`__call__` as one array per feature name (in ``chunk``'s row order), without the frame."""
        if not len(chunk):
            return {name: np.empty(0) for name in feature_names(self.cfg)}
        n = len(self.tail)
        rows = self.tail.append(self._encode(chunk))
        out = _window_features(rows, _orders(rows), self.cfg, n)
        self._carry(rows, newest=int(rows.t[n:].max()))
        return out

    def _carry(self, rows: _Rows, newest: int | None = None) -> None:
        """Keep the rows later than ``history_days`` before ``newest`` (default: the newest row); forget the ids
        of the rows dropped once they are most of the ids held."""
        newest = int(rows.t.max()) if newest is None else newest
        keep = rows.t > newest - self.cfg.history_days * SECONDS_PER_DAY
        drop = len(keep) - int(np.count_nonzero(keep))
        # time-sorted input drops its first rows: slices, no copies
        self.tail = tail = rows.take(slice(drop, None) if not keep[:drop].any() else keep)
        if len(self._ids[0].ids) > 2 * len(tail) + 1024:
            tail.customer = self._ids[0].keep(tail.customer)
        if len(self._ids[1].ids) > 2 * len(tail) + 1024:
            tail.terminal = self._ids[1].keep(tail.terminal)


def _fraud_ages(
    fraud: np.ndarray, fraud_t: np.ndarray, t: np.ndarray, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Days from the first / last fraud among sorted rows ``[left, right)`` to ``t`` (:data:`NO_FRAUD` when the
    range holds none). ``fraud``: the sorted positions of the frauds, ``fraud_t``: their times."""
    lo, hi = np.searchsorted(fraud, left), np.searchsorted(fraud, right)  # the range's frauds: fraud[lo:hi]
    has = hi > lo
    first, last = np.full(len(t), NO_FRAUD), np.full(len(t), NO_FRAUD)
    first[has] = (t[has] - fraud_t[lo[has]]) / SECONDS_PER_DAY
    last[has] = (t[has] - fraud_t[hi[has] - 1]) / SECONDS_PER_DAY
    return first, last


def _ratio(amount: Any, avg: Any) -> Any:
    """amount / mean amount, 1.0 when the mean is 0 (only zero-amount history)."""
    return np.divide(amount, avg, out=np.ones_like(np.asarray(avg, dtype=float)), where=np.asarray(avg) > 0)


# ---------------------------------------------------------------- online


def window_features(
    cfg: FeatureConfig,
    names: list[str],
    tx: Transaction,
    t: int,
    hist: Sequence[tuple[int, float]],
    thist: Sequence[tuple[int, str]],
    labels: Mapping[str, int],
) -> np.ndarray:
    """The online feature vector of ``tx`` at epoch seconds ``t`` (order: ``names``) from its card's history
    ``hist`` (``(t, amount)`` in time order), its terminal's ``thist`` (``(t, tx_id)`` in time order) and the
    known ``labels`` (``tx_id -> label``; a missing id is unlabelled). Entries outside the windows are ignored, so
    a store may pass its whole history or just the windows (every store computes features with this function)."""
    amount = float(tx.amount)
    weekend, night = _calendar(t, cfg.night_end_hour)
    vals: dict[str, float] = {AMOUNT: amount, "is_weekend": float(weekend), "is_night": float(night)}
    wc, wt = max(cfg.customer_windows), max(cfg.terminal_windows)
    for w in cfg.customer_windows:
        lo = t - w * SECONDS_PER_DAY
        count, total = 1, amount
        for te, a in reversed(hist):
            if te <= lo:
                break
            if te <= t:
                count += 1
                total += a
        vals[f"customer_nb_tx_{w}d"] = float(count)
        vals[f"customer_avg_amount_{w}d"] = total / count
        if w == wc:
            vals[f"amount_to_past_avg_{wc}d"] = float(
                _ratio(amount, (total - amount) / (count - 1) if count > 1 else 0.0)
            )
    hi = t - cfg.delay_days * SECONDS_PER_DAY
    for w in cfg.terminal_windows:
        lo = hi - w * SECONDS_PER_DAY
        count = frauds = 0
        first = last = None
        for te, tx_id in reversed(thist):
            if te <= lo:
                break
            if te <= hi:
                count += 1
                if labels.get(tx_id, -1) == 1:
                    frauds += 1
                    first = te
                    last = te if last is None else last
        vals[f"terminal_nb_tx_{w}d"] = float(count)
        vals[f"terminal_risk_{w}d"] = frauds / count if count else 0.0
        if w == wt:
            vals["terminal_days_since_first_fraud"] = NO_FRAUD if first is None else (t - first) / SECONDS_PER_DAY
            vals["terminal_days_since_last_fraud"] = NO_FRAUD if last is None else (t - last) / SECONDS_PER_DAY
    for w in cfg.customer_windows:
        vals[f"amount_to_customer_avg_{w}d"] = float(_ratio(amount, vals[f"customer_avg_amount_{w}d"]))
        vals[f"customer_avg_{w}d_to_{wc}d"] = float(
            _ratio(vals[f"customer_avg_amount_{w}d"], vals[f"customer_avg_amount_{wc}d"])
        )
    return np.array([vals[n] for n in names], dtype=float)


@dataclass
class Transaction:
    """One incoming transaction (the online path's input)."""

    tx_id: str | int
    timestamp: Any
    customer_id: str | int
    terminal_id: str | int
    amount: float


class OnlineFeatureStore:
    """Per-customer and per-terminal state for computing :func:`compute_features` one transaction at a time.

    - customers: ``deque[(t, amount)]`` of the last ``max(customer_windows)`` days, in time order;
    - terminals: ``deque[(t, tx_id)]`` of the last ``delay + max(terminal_windows)`` days, in time order;
    - ``_labels``: ``tx_id -> label`` of every transaction held, -1 until :meth:`add_label` brings the delayed
      fraud label (also how :meth:`seen` recognises a transaction scored before).

    Keys are the ids' strings (:func:`apps.fraud.data.id_key`). Entries are tuples of numbers and strings and the
    label map holds only ints, so CPython's garbage collector does not track them: a service holding millions of
    entries gets no long GC pauses (tail latency).

    Time order is an invariant: a late transaction is inserted at its place (never appended after newer ones),
    and eviction follows the newest entry of each history, so one out-of-order transaction cannot hide or keep
    alive other entries. Which timestamps are accepted at all is the service's policy
    (:meth:`apps.fraud.service.FraudScorer.check`).

    Not thread-safe by itself: :class:`apps.fraud.service.FraudScorer` serialises access with a lock.
    Memory: O(transactions in the last ``history_days``).
    """

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        self.cfg = cfg or FeatureConfig()
        self.names = feature_names(self.cfg)
        self._customers: dict[str, deque] = {}
        self._terminals: dict[str, deque] = {}
        self._labels: dict[str, int] = {}
        self._cust_keep = max(self.cfg.customer_windows) * SECONDS_PER_DAY
        self._term_keep = (self.cfg.delay_days + max(self.cfg.terminal_windows)) * SECONDS_PER_DAY
        self.last_t: int | None = None

    def __len__(self) -> int:
        return len(self._labels)

    def seen(self, tx_id: str | int) -> bool:
        """Whether ``tx_id`` is in the state (scored, or part of the warm-up history, within ``history_days``)."""
        return id_key(tx_id) in self._labels

    # -- features
    def features(self, tx: Transaction, t: int | None = None) -> np.ndarray:
        """Feature vector of ``tx`` (order: :attr:`names`) given the state; the state is not changed.

        ``t``: ``tx``'s epoch seconds when already computed. Entries newer than ``t`` (a late transaction) are
        not counted, so a late transaction gets the features it would have had on time.
        """
        t = to_seconds(tx.timestamp) if t is None else t
        return window_features(
            self.cfg,
            self.names,
            tx,
            t,
            self._customers.get(id_key(tx.customer_id), ()),
            self._terminals.get(id_key(tx.terminal_id), ()),
            self._labels,
        )

    # -- state updates
    def update(self, tx: Transaction, label: int | None = None, t: int | None = None) -> None:
        """Add ``tx`` to its customer's and terminal's history at its time (``label`` when already known)."""
        t = to_seconds(tx.timestamp) if t is None else t
        tx_id = id_key(tx.tx_id)
        c = self._customers.setdefault(id_key(tx.customer_id), deque())
        _insert_in_time_order(c, (t, float(tx.amount)))
        d = self._terminals.setdefault(id_key(tx.terminal_id), deque())
        _insert_in_time_order(d, (t, tx_id))
        self._labels[tx_id] = -1 if label is None else int(label)
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        self._evict(c, c[-1][0] - self._cust_keep)
        self._evict_terminal(d, d[-1][0] - self._term_keep)

    def score_and_update(self, tx: Transaction) -> np.ndarray:
        """:meth:`features` then :meth:`update` (batch equivalence tests; the API goes through the scorer)."""
        t = to_seconds(tx.timestamp)
        x = self.features(tx, t)
        self.update(tx, t=t)
        return x

    def add_label(self, tx_id: str | int, label: int) -> bool:
        """Record the (delayed) fraud label of a past transaction; False when it is no longer (or never was) held."""
        key = id_key(tx_id)
        if key not in self._labels:
            return False
        self._labels[key] = int(label)
        return True

    @staticmethod
    def _evict(dq: deque, older_than: int) -> None:
        while dq and dq[0][0] <= older_than:
            dq.popleft()

    def _evict_terminal(self, dq: deque, older_than: int) -> None:
        while dq and dq[0][0] <= older_than:
            self._labels.pop(dq.popleft()[1], None)

    @classmethod
    def from_history(cls, df: pd.DataFrame, cfg: FeatureConfig | None = None) -> OnlineFeatureStore:
        """State after seeing ``df`` (labels included when the column is there; a missing label stays unknown);
        only the last ``history_days`` before the latest transaction are kept. Ties keep ``df``'s row order."""
        store = cls(cfg)
        if df.empty:
            return store
        t = to_seconds(df[TIMESTAMP])
        keep = t > t.max() - store.cfg.history_days * SECONDS_PER_DAY
        sub = df.loc[keep]
        t = t[keep]
        order = np.argsort(t, kind="stable")
        labels = sub[LABEL].to_numpy() if LABEL in sub.columns else None
        tx_ids = [id_key(v) for v in sub[TX_ID].to_numpy()[order]]
        custs = [id_key(v) for v in sub[CUSTOMER].to_numpy()[order]]
        terms = [id_key(v) for v in sub[TERMINAL].to_numpy()[order]]
        amounts = sub[AMOUNT].to_numpy(dtype=float)[order]
        labs = labels[order] if labels is not None else None
        for i in range(len(order)):
            ti = int(t[order[i]])
            store._customers.setdefault(custs[i], deque()).append((ti, float(amounts[i])))
            lab = -1 if labs is None or pd.isna(labs[i]) else int(labs[i])
            store._terminals.setdefault(terms[i], deque()).append((ti, tx_ids[i]))
            store._labels[tx_ids[i]] = lab
        store.last_t = int(t.max())
        for dq in store._customers.values():
            cls._evict(dq, store.last_t - store._cust_keep)
        for dq in store._terminals.values():
            store._evict_terminal(dq, store.last_t - store._term_keep)
        return store


def _insert_in_time_order(dq: deque, entry: tuple) -> None:
    """Append ``entry`` (``(t, ...)``), or insert it after the last entry not newer than it (a late arrival;
    the scan from the right is short because accepted lateness is bounded)."""
    t = entry[0]
    if not dq or dq[-1][0] <= t:
        dq.append(entry)
        return
    i = len(dq)
    while i > 0 and dq[i - 1][0] > t:
        i -= 1
    dq.insert(i, entry)
