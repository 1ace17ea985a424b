"""The fraud service's online state: one :class:`FeatureStore` interface, two implementations.

- :class:`LocalFeatureStore` (the default): the card and terminal windows in this process's memory
  (:class:`~apps.fraud.features.OnlineFeatureStore`), made durable by a :class:`Journal` - every scored
  transaction and applied label is appended to a SQLite file in WAL mode under the service's home
  (``$MLREF_HOME/state/fraud/journal.sqlite``) *before* the answer is sent, and replayed at start. A ``kill -9``
  therefore loses nothing that was acknowledged. ``synchronous=NORMAL`` (the default) survives the process
  dying; ``FULL`` (``MLREF_FRAUD_JOURNAL_SYNC=FULL``) also survives the machine losing power, at one fsync a
  transaction. One process per journal (a lock file): it cannot be shared by several workers.
- :class:`RedisFeatureStore` (``MLREF_REDIS_URL=redis://...``): the same windows in Redis, shared by any number
  of worker processes. Per card a sorted set of ``"<tx_id> <amount>"`` by time, per terminal a sorted set of
  tx ids by time and a hash of its known frauds, per transaction a key naming its terminal (duplicates, labels).
  Keys expire after the feature windows (card: the longest customer window; terminal, frauds, transactions:
  delay + the longest terminal window), and windows are trimmed in transaction time exactly like the local store.

Both compute features with :func:`apps.fraud.features.window_features`, so they equal the batch features.

One transaction is a read, the caller's decision (checks, model), then a commit (:meth:`FeatureStore.transact`).
In Redis the commit is one Lua script (atomic): it refuses a tx id already held (409), and refuses to commit when
the card's or the terminal's version moved since the read (another worker committed a transaction of the same
card or terminal in between); the transaction is then read and scored again, so no update is lost and every
transaction sees all those committed before it. Redis unreachable, or reachable but empty (restarted without
persistence, flushed), raises :class:`StoreUnavailable` (HTTP 503): the service never scores on a silently empty
history. It recovers by itself when Redis returns with its data (run Redis with ``--appendonly yes``); an empty
Redis is warmed again from the history when the service restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from apps.fraud.config import FeatureConfig
from apps.fraud.data import AMOUNT, CUSTOMER, LABEL, TERMINAL, TIMESTAMP, TX_ID, id_key
from apps.fraud.features import OnlineFeatureStore, Transaction, feature_names, to_seconds, window_features
from common.data import SECONDS_PER_DAY
from common.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
REDIS_URL_ENV = "MLREF_REDIS_URL"
REDIS_PREFIX_ENV = "MLREF_REDIS_PREFIX"
JOURNAL_SYNC_ENV = "MLREF_FRAUD_JOURNAL_SYNC"
DEFAULT_PREFIX = "mlref:fraud:"
HistorySource = pd.DataFrame | Callable[[], pd.DataFrame] | None


class StoreUnavailable(RuntimeError):
    """The online state cannot be read or written now (HTTP 503); the message says why and what to do."""


class DuplicateTransaction(ValueError):
    """A ``tx_id`` already in the online state (HTTP 409): it is not scored or counted again."""

    def __init__(self, tx_id: str | int) -> None:
        super().__init__(
            f"tx_id {id_key(tx_id)!r} was already scored (or is in the warm-up history); "
            "it is not scored or counted twice"
        )


@dataclass(frozen=True)
class View:
    """What one transaction's decision reads: the newest transaction time held, whether its id is held, and its
    features computed from the state as it was read."""

    last_t: int | None
    seen: bool
    features: np.ndarray


class FeatureStore(ABC):
    """The online state of the fraud service (cards', terminals' windows and known labels).

    Besides the methods below, a store has ``cfg`` (:class:`FeatureConfig`), ``names`` (the feature order) and
    ``last_t`` (epoch seconds of the newest transaction held, None when empty).
    """

    shared: ClassVar[bool] = False  # whether several processes may serve from it at once
    cfg: FeatureConfig
    names: list[str]

    @abstractmethod
    def __len__(self) -> int:
        """Transactions held (those whose labels and duplicates are still recognised)."""

    @abstractmethod
    def seen(self, tx_id: str | int) -> bool:
        """Whether ``tx_id`` is held."""

    @abstractmethod
    def features(self, tx: Transaction, t: int | None = None) -> np.ndarray:
        """The features ``tx`` would get now; changes nothing."""

    @abstractmethod
    def transact(self, tx: Transaction, t: int, decide: Callable[[View], T]) -> T:
        """Read the state for ``tx`` (at epoch seconds ``t``), call ``decide(view)`` (which raises to refuse
        ``tx``), then add ``tx`` to the state and return what ``decide`` returned. Atomic: the state is unchanged
        when ``decide`` raises; a concurrent writer never makes an update get lost. Raises
        :class:`DuplicateTransaction` when ``tx`` is held by the time it commits, :class:`StoreUnavailable` when
        the state cannot be reached."""

    @abstractmethod
    def add_labels(self, labels: list[tuple[str, int]]) -> int:
        """Record delayed labels; returns how many matched a transaction still held."""

    def start(self, history: HistorySource = None) -> None:  # noqa: B027 - optional hook
        """Called once when the service starts (warm-up, replay, locks); ``history``: the transactions that warm
        an empty state (a frame, or a function that loads it only when needed)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called when the service stops."""

    def describe(self) -> str:
        return type(self).__name__


# ------------------------------------------------------------------------------------------------ local


class Journal:
    """Append-only record of a :class:`LocalFeatureStore` in SQLite (WAL mode), replayed at start.

    Rows: ``(seq, kind, tx_id, t, customer, terminal, amount, label)``; ``kind`` 0 = a scored transaction, 1 = a
    label applied (``t``: the store's newest time when it was applied). Rows older than every window are deleted
    at start and every :attr:`COMPACT_EVERY` appends. The file is locked (``flock``) while a service uses it.
    """

    COMPACT_EVERY = 10_000

    def __init__(self, path: Path, synchronous: str | None = None) -> None:
        self.path = Path(path)
        sync = (synchronous or os.environ.get(JOURNAL_SYNC_ENV) or "NORMAL").upper()
        if sync not in ("NORMAL", "FULL"):
            raise UserError(f"{JOURNAL_SYNC_ENV}={sync!r}: must be NORMAL or FULL")
        self.synchronous = sync
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._appends = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"another fraud service is using the online-state journal {self.path}: one process per journal "
                f"(stop it, use another MLREF_HOME, or share the state in Redis with {REDIS_URL_ENV})"
            ) from None
        self._lock_fd = fd
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, tx_id TEXT NOT "
                "NULL, t INTEGER NOT NULL, customer TEXT, terminal TEXT, amount REAL, label INTEGER)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS events_t ON events (t)")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise UserError(f"the online-state journal {self.path} is unreadable ({exc}): move it aside") from None
        self._conn = conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _write(self, sql: str, rows: list[tuple]) -> None:
        if self._conn is None:
            raise StoreUnavailable("the online-state journal is not open (the service has not started)")
        try:
            if len(rows) == 1:
                self._conn.execute(sql, rows[0])
            else:
                with self._conn:  # one SQLite transaction
                    self._conn.execute("BEGIN")
                    self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot record the online state in {self.path}: {exc}") from None
        self._appends += len(rows)

    def append_transaction(self, tx: Transaction, t: int) -> None:
        self._write(
            "INSERT INTO events (kind, tx_id, t, customer, terminal, amount) VALUES (0, ?, ?, ?, ?, ?)",
            [(id_key(tx.tx_id), t, id_key(tx.customer_id), id_key(tx.terminal_id), float(tx.amount))],
        )

    def append_labels(self, labels: list[tuple[str, int]], t: int) -> None:
        self._write(
            "INSERT INTO events (kind, tx_id, t, label) VALUES (1, ?, ?, ?)", [(k, t, lab) for k, lab in labels]
        )

    def events(self) -> Iterable[tuple]:
        assert self._conn is not None
        yield from self._conn.execute(
            "SELECT kind, tx_id, t, customer, terminal, amount, label FROM events ORDER BY seq"
        )

    def compact(self, older_than: int) -> int:
        """Delete the rows with ``t <= older_than`` (outside every window); returns how many."""
        assert self._conn is not None
        self._appends = 0
        return self._conn.execute("DELETE FROM events WHERE t <= ?", (older_than,)).rowcount

    def __len__(self) -> int:
        assert self._conn is not None
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])


class LocalFeatureStore(OnlineFeatureStore, FeatureStore):
    """The embedded store: :class:`OnlineFeatureStore` behind a lock, optionally journaled (durable)."""

    shared = False

    def __init__(self, cfg: FeatureConfig | None = None, journal: Journal | None = None) -> None:
        super().__init__(cfg)
        self.journal = journal
        self._lock = threading.Lock()

    @classmethod
    def adopt(cls, store: OnlineFeatureStore, journal: Journal | None = None) -> LocalFeatureStore:
        """``store``'s state as a :class:`LocalFeatureStore` (itself when it is one)."""
        if isinstance(store, LocalFeatureStore):
            return store
        new = cls(store.cfg, journal)
        new.__dict__.update({k: v for k, v in vars(store).items() if k not in ("journal", "_lock")})
        return new

    @classmethod
    def from_history(cls, df: pd.DataFrame, cfg: FeatureConfig | None = None) -> LocalFeatureStore:
        return cls.adopt(OnlineFeatureStore.from_history(df, cfg))

    def describe(self) -> str:
        return f"in-process, journal {self.journal.path}" if self.journal else "in-process (not journaled)"

    def start(self, history: HistorySource = None) -> None:  # noqa: ARG002 - built from it already
        """Open the journal and replay it over the state built from the history (once)."""
        if self.journal is None or self.journal.is_open:
            return
        self.journal.open()
        n_tx = n_lab = 0
        for kind, tx_id, t, customer, terminal, amount, label in self.journal.events():
            if kind == 0:
                if tx_id not in self._labels:  # already held (part of the history): not counted twice
                    self.update(Transaction(tx_id, None, customer, terminal, amount), t=int(t))
                    n_tx += 1
            else:
                n_lab += self.add_label(tx_id, int(label))
        if self.last_t is not None:
            dropped = self.journal.compact(self.last_t - self.cfg.history_days * SECONDS_PER_DAY)
        else:
            dropped = 0
        log.info(
            "online state: replayed %d transaction(s) and %d label(s) from %s (%d old row(s) dropped)",
            n_tx,
            n_lab,
            self.journal.path,
            dropped,
        )

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    def transact(self, tx: Transaction, t: int, decide: Callable[[View], T]) -> T:
        with self._lock:
            view = View(self.last_t, self.seen(tx.tx_id), self.features(tx, t))
            result = decide(view)
            if view.seen:  # decide let it through: still never counted twice
                raise DuplicateTransaction(tx.tx_id)
            if self.journal is not None:  # write-ahead: recorded before the state changes and the answer goes
                self.journal.append_transaction(tx, t)
                if self.journal._appends >= Journal.COMPACT_EVERY and self.last_t is not None:
                    self.journal.compact(self.last_t - self.cfg.history_days * SECONDS_PER_DAY)
            self.update(tx, t=t)
        return result

    def add_labels(self, labels: list[tuple[str, int]]) -> int:
        with self._lock:
            known = [(id_key(k), int(lab)) for k, lab in labels if id_key(k) in self._labels]
            if known and self.journal is not None:
                self.journal.append_labels(known, self.last_t or 0)
            for k, lab in known:
                self._labels[k] = lab
        return len(known)


# ------------------------------------------------------------------------------------------------ redis

# KEYS: 1 ready, 2 x:tx, 3 c:card, 4 t:terminal, 5 f:terminal, 6 cv:card, 7 tv:terminal, 8 last_t, 9 n
# ARGV: 1 tx_id, 2 t, 3 card member, 4 expected card version, 5 expected terminal version, 6 terminal id,
#       7 card keep s, 8 terminal keep s, 9 card ttl s, 10 terminal ttl s, 11 key prefix
_COMMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -3 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if (redis.call('GET', KEYS[6]) or '0') ~= ARGV[4] or (redis.call('GET', KEYS[7]) or '0') ~= ARGV[5] then
  return -2
end
local t = tonumber(ARGV[2])
redis.call('ZADD', KEYS[3], t, ARGV[3])
redis.call('ZADD', KEYS[4], t, ARGV[1])
redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[10])
local newest = tonumber(redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', newest - tonumber(ARGV[7]))
newest = tonumber(redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', newest - tonumber(ARGV[8]))
for _, id in ipairs(old) do
  redis.call('DEL', ARGV[11] .. 'x:' .. id)
  redis.call('HDEL', KEYS[5], id)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', newest - tonumber(ARGV[8])) end
redis.call('INCRBY', KEYS[9], 1 - #old)
redis.call('INCR', KEYS[6])
redis.call('INCR', KEYS[7])
for _, k in ipairs({KEYS[3], KEYS[6]}) do redis.call('EXPIRE', k, ARGV[9]) end
for _, k in ipairs({KEYS[4], KEYS[5], KEYS[7]}) do redis.call('EXPIRE', k, ARGV[10]) end
local last = redis.call('GET', KEYS[8])
if not last or t > tonumber(last) then redis.call('SET', KEYS[8], ARGV[2]) end
return 1
"""

# KEYS: 1 ready; ARGV: 1 key prefix, 2 terminal ttl s, then tx_id, label pairs
_LABELS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -3 end
local p, applied = ARGV[1], 0
for i = 3, #ARGV, 2 do
  local term = redis.call('GET', p .. 'x:' .. ARGV[i])
  if term then
    applied = applied + 1
    local f = p .. 'f:' .. term
    if ARGV[i + 1] == '1' then
      redis.call('HSET', f, ARGV[i], 1)
      redis.call('EXPIRE', f, ARGV[2])
    else
      redis.call('HDEL', f, ARGV[i])
    end
    redis.call('INCR', p .. 'tv:' .. term)
    redis.call('EXPIRE', p .. 'tv:' .. term, ARGV[2])
  end
end
return applied
"""


def redis_url_from_env() -> str | None:
    """``MLREF_REDIS_URL`` when set (and not empty)."""
    return os.environ.get(REDIS_URL_ENV) or None


def safe_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class RedisFeatureStore(FeatureStore):
    """The online state in Redis, shared by every worker (see the module docstring for the layout)."""

    shared = True
    MAX_ATTEMPTS = 50  # reads + commits of one transaction before giving up on contention (503)
    LABEL_CHUNK = 1_000

    def __init__(
        self,
        url: str,
        cfg: FeatureConfig | None = None,
        *,
        prefix: str | None = None,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 2.0,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.cfg = cfg or FeatureConfig()
        self.names = feature_names(self.cfg)
        self.url = url
        self.prefix = prefix or os.environ.get(REDIS_PREFIX_ENV) or DEFAULT_PREFIX
        try:
            self.client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1),  # one immediate retry: a pooled connection that died with a restart
            )
        except ValueError as exc:
            raise UserError(f"{REDIS_URL_ENV}={safe_url(url)!r}: {exc}") from None
        self._errors = (redis.RedisError, OSError)
        self._commit = self.client.register_script(_COMMIT)
        self._labels = self.client.register_script(_LABELS)
        wc, wt = max(self.cfg.customer_windows), max(self.cfg.terminal_windows)
        self._card_keep = wc * SECONDS_PER_DAY  # the same trimming as OnlineFeatureStore
        self._term_keep = (self.cfg.delay_days + wt) * SECONDS_PER_DAY
        self._wc, self._wt = wc, wt

    # -- keys
    def _k(self, kind: str, key: str = "") -> str:
        return f"{self.prefix}{kind}{key}"

    def describe(self) -> str:
        return f"Redis at {safe_url(self.url)}, keys {self.prefix}*"

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"the online feature store is unavailable: cannot reach Redis at {safe_url(self.url)} "
            f"({type(exc).__name__}: {exc}); not scoring without the card and terminal history"
        )

    def _empty(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the online feature store in Redis at {safe_url(self.url)} holds no state (keys {self.prefix}*): "
            "Redis was restarted without persistence or flushed; not scoring on an empty history. Restart the "
            "service to warm it again from the history (run Redis with --appendonly yes to keep the state)"
        )

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    # -- interface
    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` when Redis cannot be reached."""
        self._call(self.client.ping)

    @property
    def last_t(self) -> int | None:
        v = self._call(lambda: self.client.get(self._k("last_t")))
        return None if v is None else int(v)

    def __len__(self) -> int:
        return int(self._call(lambda: self.client.get(self._k("n"))) or 0)

    def seen(self, tx_id: str | int) -> bool:
        return bool(self._call(lambda: self.client.exists(self._k("x:", id_key(tx_id)))))

    def _read(self, tx: Transaction, t: int) -> tuple[View, str, str]:
        card, term, D = id_key(tx.customer_id), id_key(tx.terminal_id), SECONDS_PER_DAY
        hi = t - self.cfg.delay_days * D
        pipe = self.client.pipeline(transaction=True)  # one consistent snapshot (MULTI/EXEC)
        pipe.exists(self._k("ready"))
        pipe.get(self._k("last_t"))
        pipe.exists(self._k("x:", id_key(tx.tx_id)))
        pipe.get(self._k("cv:", card))
        pipe.get(self._k("tv:", term))
        pipe.zrangebyscore(self._k("c:", card), f"({t - self._wc * D}", t, withscores=True)
        pipe.zrangebyscore(self._k("t:", term), f"({hi - self._wt * D}", hi, withscores=True)
        pipe.hkeys(self._k("f:", term))
        ready, last, seen, cv, tv, cards, terms, frauds = self._call(pipe.execute)
        if not ready:
            raise self._empty()
        hist = [(int(s), float(m.rsplit(" ", 1)[1])) for m, s in cards]
        thist = [(int(s), m) for m, s in terms]
        x = window_features(self.cfg, self.names, tx, t, hist, thist, dict.fromkeys(frauds, 1))
        return View(None if last is None else int(last), bool(seen), x), cv or "0", tv or "0"

    def features(self, tx: Transaction, t: int | None = None) -> np.ndarray:
        t = to_seconds(tx.timestamp) if t is None else t
        return self._read(tx, t)[0].features

    def transact(self, tx: Transaction, t: int, decide: Callable[[View], T]) -> T:
        tx_id, card, term = id_key(tx.tx_id), id_key(tx.customer_id), id_key(tx.terminal_id)
        keys = [
            self._k("ready"),
            self._k("x:", tx_id),
            self._k("c:", card),
            self._k("t:", term),
            self._k("f:", term),
            self._k("cv:", card),
            self._k("tv:", term),
            self._k("last_t"),
            self._k("n"),
        ]
        member = f"{tx_id} {float(tx.amount)!r}"
        for _ in range(self.MAX_ATTEMPTS):
            view, cv, tv = self._read(tx, t)
            result = decide(view)
            args = [tx_id, t, member, cv, tv, term, self._card_keep, self._term_keep]
            args += [self._card_keep, self._term_keep, self.prefix]
            code = self._call(lambda args=args: self._commit(keys=keys, args=args))
            if code == 1:
                return result
            if code == -1:
                raise DuplicateTransaction(tx_id)
            if code == -3:
                raise self._empty()
            # -2: another worker committed a transaction of this card or terminal since the read: read again
        raise StoreUnavailable(
            f"could not commit transaction {tx_id!r} after {self.MAX_ATTEMPTS} attempts: its card or terminal "
            "changed under every attempt (contention); retry"
        )

    def add_labels(self, labels: list[tuple[str, int]]) -> int:
        applied = 0
        for i in range(0, len(labels), self.LABEL_CHUNK):
            args: list[Any] = [self.prefix, self._term_keep]
            for k, lab in labels[i : i + self.LABEL_CHUNK]:
                args += [id_key(k), int(lab)]
            n = self._call(lambda args=args: self._labels(keys=[self._k("ready")], args=args))
            if n == -3:
                raise self._empty()
            applied += int(n)
        return applied

    # -- start: warm once from the history, shared by every worker
    def start(self, history: HistorySource = None, *, wait_s: float = 600.0) -> None:
        """Warm Redis from ``history`` unless it already holds a state (a restart, another worker). The first
        worker to take the warm-up lock loads it; the others wait for it to finish."""
        self.ping()
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_s
        while True:
            if self._call(lambda: self.client.exists(self._k("ready"))):
                log.info("online state: %d transaction(s) already in %s", len(self), self.describe())
                return
            if self._call(lambda: self.client.set(self._k("warm"), token, nx=True, ex=300)):
                break
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"another worker has been warming {self.describe()} for over {wait_s:.0f} s")
            time.sleep(0.1)
        try:
            frame = history() if callable(history) else history
            n = self._call(lambda: self._warm(frame))
            log.info("online state: warmed %s with %d transaction(s) from the history", self.describe(), n)
        finally:
            with contextlib.suppress(*self._errors):
                self.client.delete(self._k("warm"))

    def _warm(self, history: pd.DataFrame | None) -> int:
        """Write the state :meth:`OnlineFeatureStore.from_history` would hold (the same entries kept)."""
        pipe = self.client.pipeline(transaction=False)
        n = 0
        if history is not None and not history.empty:
            t = np.asarray(to_seconds(history[TIMESTAMP]), dtype=np.int64)
            last = int(t.max())
            keep = t > last - self.cfg.history_days * SECONDS_PER_DAY
            df = pd.DataFrame(
                {
                    "tx": [id_key(v) for v in history[TX_ID].to_numpy()[keep]],
                    "t": t[keep],
                    "card": [id_key(v) for v in history[CUSTOMER].to_numpy()[keep]],
                    "term": [id_key(v) for v in history[TERMINAL].to_numpy()[keep]],
                    "amount": history[AMOUNT].to_numpy(dtype=float)[keep],
                    "label": history[LABEL].to_numpy(dtype=float, na_value=np.nan)[keep]
                    if LABEL in history.columns
                    else np.nan,
                }
            )
            cards = df[df["t"] > last - self._card_keep]
            for card, g in cards.groupby("card", sort=False):
                pipe.zadd(
                    self._k("c:", card),
                    {
                        f"{tx} {a!r}": int(s)
                        for tx, a, s in zip(g["tx"], g["amount"].astype(float), g["t"], strict=True)
                    },
                )
                pipe.expire(self._k("c:", card), self._card_keep)
            terms = df[df["t"] > last - self._term_keep]
            for term, g in terms.groupby("term", sort=False):
                pipe.zadd(self._k("t:", term), dict(zip(g["tx"], g["t"].astype(int), strict=True)))
                pipe.expire(self._k("t:", term), self._term_keep)
                frauds = g.loc[g["label"] == 1, "tx"].tolist()
                if frauds:
                    pipe.hset(self._k("f:", term), mapping=dict.fromkeys(frauds, 1))
                    pipe.expire(self._k("f:", term), self._term_keep)
            for i, (tx, term) in enumerate(zip(terms["tx"], terms["term"], strict=True)):
                pipe.set(self._k("x:", tx), term, ex=self._term_keep)
                if i % 10_000 == 9_999:
                    pipe.execute()
            n = len(terms)
            pipe.set(self._k("last_t"), last)
        pipe.set(self._k("n"), n)
        pipe.set(self._k("ready"), uuid.uuid4().hex)
        pipe.execute()
        return n

    def close(self) -> None:
        self.client.close()

    def clear(self) -> int:
        """Delete every key of this store's prefix (tests, benchmarks); returns how many."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=10_000))
        for i in range(0, len(keys), 10_000):
            self.client.delete(*keys[i : i + 10_000])
        return len(keys)


def open_store(
    cfg: FeatureConfig | None = None, *, redis_url: str | None = None, journal: Path | None = None
) -> FeatureStore:
    """Redis when ``redis_url`` is given, else the local store (journaled at ``journal`` when given)."""
    if redis_url:
        return RedisFeatureStore(redis_url, cfg)
    return LocalFeatureStore(cfg, Journal(journal) if journal is not None else None)
