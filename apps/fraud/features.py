"""Feature engineering: one definition, computed in batch (training, batch scoring) and online (the API).

Features of a transaction at time ``t`` (the handbook's chapter 3.4 "baseline feature transformation"):

- ``amount``; ``is_weekend`` (Saturday/Sunday); ``is_night`` (hour <= 6);
- per customer, over the windows ``(t - w, t]`` for ``w`` in 1, 7, 30 days, *including* the transaction itself:
  ``customer_nb_tx_{w}d`` (count) and ``customer_avg_amount_{w}d`` (mean amount);
- per terminal, over ``(t - delay - w, t - delay]`` - shifted back by the 7-day label feedback delay, because a
  fraud label is only known a week later: ``terminal_nb_tx_{w}d`` (count) and ``terminal_risk_{w}d``
  (share of those transactions labelled fraud; 0 when there are none);
- extended (``FeatureConfig.extended``, beyond the handbook): ``amount_to_customer_avg_{w}d`` for w in 7 and 30,
  the amount over the customer's mean amount in the window - a card used for unusually large amounts.

Time is handled in whole seconds since the Unix epoch (floor), in both paths. Ties (same second) are ordered by
``tx_id``: a transaction sees the earlier ones of the same second, not the later ones - exactly what the online
path sees when transactions arrive in that order. ``tests/fraud/test_features.py`` proves online == batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import FeatureConfig
from apps.fraud.data import AMOUNT, CUSTOMER, LABEL, TERMINAL, TIMESTAMP, TX_ID

EPOCH = pd.Timestamp("1970-01-01")
DAY_S = 86_400
RATIO_WINDOWS = (7, 30)


def feature_names(cfg: FeatureConfig | None = None) -> list[str]:
    """The model's input columns, in order."""
    cfg = cfg or FeatureConfig()
    names = [AMOUNT, "is_weekend", "is_night"]
    for w in cfg.customer_windows:
        names += [f"customer_nb_tx_{w}d", f"customer_avg_amount_{w}d"]
    for w in cfg.terminal_windows:
        names += [f"terminal_nb_tx_{w}d", f"terminal_risk_{w}d"]
    if cfg.extended:
        names += [f"amount_to_customer_avg_{w}d" for w in RATIO_WINDOWS if w in cfg.customer_windows]
    return names


def to_seconds(ts: pd.Series | pd.Timestamp | Any) -> np.ndarray | int:
    """Whole seconds since the epoch (floor); timezone-aware times are converted to UTC first."""
    if isinstance(ts, pd.Series):
        if ts.dt.tz is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        return ((ts - EPOCH) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
    ts = pd.Timestamp(ts)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int((ts - EPOCH) // pd.Timedelta(seconds=1))


def _calendar(seconds: np.ndarray | int, night_end_hour: int) -> tuple[Any, Any]:
    """(is_weekend, is_night) from epoch seconds (UTC wall clock). 1970-01-01 was a Thursday (weekday 3)."""
    weekday = (seconds // DAY_S + 3) % 7
    hour = (seconds % DAY_S) // 3600
    return (weekday >= 5), (hour <= night_end_hour)


# ---------------------------------------------------------------- batch


def _grouped_windows(group: np.ndarray, t: np.ndarray, order: np.ndarray):
    """Sorted view for windowed look-ups: rows ordered by (group, time, tx order) and a monotone int64 key."""
    g = group[order]
    ts = t[order]
    span = int(ts.max() - ts.min()) + 400 * DAY_S  # larger than any window, so groups never overlap
    key = g.astype(np.int64) * span + (ts - ts.min())
    return key


def compute_features(df: pd.DataFrame, cfg: FeatureConfig | None = None) -> pd.DataFrame:
    """Feature frame for every row of ``df`` (same index), from the history inside ``df`` only.

    ``df`` needs :data:`TIMESTAMP`, :data:`CUSTOMER`, :data:`TERMINAL`, :data:`AMOUNT`, :data:`TX_ID` and, for
    the terminal risk, :data:`LABEL` (missing labels count as genuine: not known to be fraud). Cost: a few
    sorts and binary searches - about a second per million transactions.
    """
    cfg = cfg or FeatureConfig()
    n = len(df)
    t = to_seconds(df[TIMESTAMP])
    amount = df[AMOUNT].to_numpy(dtype=float)
    label = (
        df[LABEL].fillna(0).to_numpy(dtype=np.int64) if LABEL in df.columns else np.zeros(n, dtype=np.int64)
    )
    tx_order = np.lexsort((df[TX_ID].to_numpy(), t))  # arrival order: time, then tx_id
    rank = np.empty(n, dtype=np.int64)
    rank[tx_order] = np.arange(n)

    out: dict[str, np.ndarray] = {AMOUNT: amount}
    weekend, night = _calendar(t, cfg.night_end_hour)
    out["is_weekend"], out["is_night"] = weekend.astype(np.int8), night.astype(np.int8)

    # customers: windows (t - w, t], the transaction included
    cust = pd.factorize(df[CUSTOMER])[0]
    order = np.lexsort((rank, cust))
    key = _grouped_windows(cust, t, order)
    csum = np.r_[0.0, np.cumsum(amount[order])]
    pos = np.arange(n)
    for w in cfg.customer_windows:
        left = np.searchsorted(key, key - w * DAY_S, side="right")
        count = pos - left + 1
        total = csum[pos + 1] - csum[left]
        nb, avg = np.empty(n), np.empty(n)
        nb[order], avg[order] = count, total / count
        out[f"customer_nb_tx_{w}d"], out[f"customer_avg_amount_{w}d"] = nb, avg

    # terminals: windows (t - delay - w, t - delay]
    term = pd.factorize(df[TERMINAL])[0]
    order = np.lexsort((rank, term))
    key = _grouped_windows(term, t, order)
    fsum = np.r_[0, np.cumsum(label[order])]
    d = cfg.delay_days * DAY_S
    right = np.searchsorted(key, key - d, side="right")
    for w in cfg.terminal_windows:
        left = np.searchsorted(key, key - d - w * DAY_S, side="right")
        count = right - left
        frauds = fsum[right] - fsum[left]
        nb, risk = np.empty(n), np.empty(n)
        nb[order] = count
        risk[order] = np.divide(frauds, count, out=np.zeros(n), where=count > 0)
        out[f"terminal_nb_tx_{w}d"], out[f"terminal_risk_{w}d"] = nb, risk

    if cfg.extended:
        for w in RATIO_WINDOWS:
            if w in cfg.customer_windows:
                out[f"amount_to_customer_avg_{w}d"] = _ratio(amount, out[f"customer_avg_amount_{w}d"])
    return pd.DataFrame(out, index=df.index)[feature_names(cfg)]


def _ratio(amount: Any, avg: Any) -> Any:
    """amount / mean amount, 1.0 when the mean is 0 (only zero-amount history)."""
    return np.divide(amount, avg, out=np.ones_like(np.asarray(avg, dtype=float)), where=np.asarray(avg) > 0)


# ---------------------------------------------------------------- online


@dataclass
class Transaction:
    """One incoming transaction (the online path's input)."""

    tx_id: int
    timestamp: Any
    customer_id: int
    terminal_id: int
    amount: float


class OnlineFeatureStore:
    """Per-customer and per-terminal state for computing :func:`compute_features` one transaction at a time.

    - customers: ``deque[(t, amount)]`` of the last ``max(customer_windows)`` days;
    - terminals: ``deque[(t, tx_id)]`` of the last ``delay + max(terminal_windows)`` days;
    - ``_labels``: ``tx_id -> label`` of every transaction held, -1 until :meth:`add_label` brings the delayed
      fraud label.

    Entries are tuples of numbers and the label map holds only ints, so CPython's garbage collector does not
    track them: a service holding millions of entries gets no long GC pauses (tail latency).

    Not thread-safe by itself: :class:`apps.fraud.service` serialises access with a lock.
    Memory: O(transactions in the last ``history_days``).
    """

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        self.cfg = cfg or FeatureConfig()
        self.names = feature_names(self.cfg)
        self._customers: dict[int, deque] = {}
        self._terminals: dict[int, deque] = {}
        self._labels: dict[int, int] = {}
        self._cust_keep = max(self.cfg.customer_windows) * DAY_S
        self._term_keep = (self.cfg.delay_days + max(self.cfg.terminal_windows)) * DAY_S
        self.last_t: int | None = None

    def __len__(self) -> int:
        return len(self._labels)

    # -- features
    def features(self, tx: Transaction) -> np.ndarray:
        """Feature vector of ``tx`` (order: :attr:`names`) given the state; the state is not changed."""
        cfg = self.cfg
        t = to_seconds(tx.timestamp)
        amount = float(tx.amount)
        weekend, night = _calendar(t, cfg.night_end_hour)
        vals: dict[str, float] = {AMOUNT: amount, "is_weekend": float(weekend), "is_night": float(night)}
        hist = self._customers.get(int(tx.customer_id), ())
        for w in cfg.customer_windows:
            lo = t - w * DAY_S
            count, total = 1, amount
            for te, a in reversed(hist):
                if te <= lo:
                    break
                if te <= t:
                    count += 1
                    total += a
            vals[f"customer_nb_tx_{w}d"] = float(count)
            vals[f"customer_avg_amount_{w}d"] = total / count
        thist = self._terminals.get(int(tx.terminal_id), ())
        labels = self._labels
        hi = t - cfg.delay_days * DAY_S
        for w in cfg.terminal_windows:
            lo = hi - w * DAY_S
            count = frauds = 0
            for te, tx_id in reversed(thist):
                if te <= lo:
                    break
                if te <= hi:
                    count += 1
                    frauds += labels.get(tx_id, -1) == 1
            vals[f"terminal_nb_tx_{w}d"] = float(count)
            vals[f"terminal_risk_{w}d"] = frauds / count if count else 0.0
        if cfg.extended:
            for w in RATIO_WINDOWS:
                if w in cfg.customer_windows:
                    vals[f"amount_to_customer_avg_{w}d"] = float(_ratio(amount, vals[f"customer_avg_amount_{w}d"]))
        return np.array([vals[n] for n in self.names], dtype=float)

    # -- state updates
    def update(self, tx: Transaction, label: int | None = None) -> None:
        """Append ``tx`` to its customer's and terminal's history (``label`` when already known)."""
        t = to_seconds(tx.timestamp)
        c = self._customers.setdefault(int(tx.customer_id), deque())
        c.append((t, float(tx.amount)))
        self._terminals.setdefault(int(tx.terminal_id), deque()).append((t, int(tx.tx_id)))
        self._labels[int(tx.tx_id)] = -1 if label is None else int(label)
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        self._evict(c, t - self._cust_keep)
        self._evict_terminal(self._terminals[int(tx.terminal_id)], t - self._term_keep)

    def score_and_update(self, tx: Transaction) -> np.ndarray:
        """:meth:`features` then :meth:`update` - what the API does per transaction."""
        x = self.features(tx)
        self.update(tx)
        return x

    def add_label(self, tx_id: int, label: int) -> bool:
        """Record the (delayed) fraud label of a past transaction; False when it is no longer (or never was) held."""
        tx_id = int(tx_id)
        if tx_id not in self._labels:
            return False
        self._labels[tx_id] = int(label)
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
        """State after seeing ``df`` (labels included when the column is there); only the last
        ``history_days`` before the latest transaction are kept."""
        store = cls(cfg)
        if df.empty:
            return store
        t = to_seconds(df[TIMESTAMP])
        keep = t > t.max() - store.cfg.history_days * DAY_S
        sub = df.loc[keep]
        t = t[keep]
        order = np.lexsort((sub[TX_ID].to_numpy(), t))
        labels = sub[LABEL].to_numpy() if LABEL in sub.columns else None
        tx_ids, custs = sub[TX_ID].to_numpy()[order], sub[CUSTOMER].to_numpy()[order]
        terms, amounts = sub[TERMINAL].to_numpy()[order], sub[AMOUNT].to_numpy(dtype=float)[order]
        labs = labels[order] if labels is not None else None
        for i in range(len(order)):
            ti = int(t[order[i]])
            store._customers.setdefault(int(custs[i]), deque()).append((ti, float(amounts[i])))
            lab = -1 if labs is None or pd.isna(labs[i]) else int(labs[i])
            store._terminals.setdefault(int(terms[i]), deque()).append((ti, int(tx_ids[i])))
            store._labels[int(tx_ids[i])] = lab
        store.last_t = int(t.max())
        for dq in store._customers.values():
            cls._evict(dq, store.last_t - store._cust_keep)
        for dq in store._terminals.values():
            store._evict_terminal(dq, store.last_t - store._term_keep)
        return store
