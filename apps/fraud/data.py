"""Transactions: the schema, the embedded simulator (the default dataset) and loaders for a user's own file.

Schema (one row per card transaction; column names are defined once, below)::

    tx_id        id        unique
    timestamp    datetime  when the transaction happened (naive = UTC)
    customer_id  id        the card / customer
    terminal_id  id        the merchant terminal
    amount       float     0 <= amount <= MAX_AMOUNT (1e9)
    label        int       1 = fraud, 0 = genuine, empty = not known yet (the column is optional for scoring;
                           training and evaluation use the labelled rows, every row feeds the feature history)
    scenario     int       simulator only: 0 genuine, 1 amount > 220, 2 compromised terminal, 3 compromised card

Ids are strings of 1-64 letters, digits and ``_ - . : @`` (``C171``, ``T9``, ``2018-04-01:17``). Integer ids
are accepted and mean their decimal string (a file's ``171`` is the API's ``"171"``), which is why the simulator
keeps its ids as int64 (less memory): every id comparison goes through :func:`id_key`. Rows with the same
timestamp keep their file order (the arrival order).

The simulator follows the ULB/Worldline handbook's chapter 3.2 ("Transaction data simulator"), vectorised with
numpy: the reference size (5,000 customers, 10,000 terminals, 183 days) takes seconds, not the handbook's minutes.
It is deterministic for a given :class:`~apps.fraud.config.SimulationConfig` (seed included).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from apps.fraud.config import ID_MAX_LENGTH, ID_PATTERN, MAX_AMOUNT, SimulationConfig
from common.data import SECONDS_PER_DAY, Column, DataError, Schema, read_table, write_table

log = logging.getLogger(__name__)


@dataclass
class Transactions:
    """What the pipeline's ``load_data`` returns: transactions with their features (:func:`apps.fraud.train.prepare`,
    computed once over the whole history) and the dataset's name (reports, tags)."""

    frame: pd.DataFrame
    name: str
    # --engine dask: the feature parts of the whole data (apps.fraud.outofcore); ``frame`` then holds only the
    # latest days that registration needs (training window, online history)
    features_dir: Path | None = None


# ---------------------------------------------------------------- column names (the only place they are spelled)
TX_ID = "tx_id"
TIMESTAMP = "timestamp"
CUSTOMER = "customer_id"
TERMINAL = "terminal_id"
AMOUNT = "amount"
LABEL = "label"
SCENARIO = "scenario"
DAY = "day"  # derived: whole days since midnight of the data's first day (used by the protocol and CP@k)


ID_COLUMNS = (TX_ID, CUSTOMER, TERMINAL)
_ID_RE = re.compile(ID_PATTERN)

SCHEMA = Schema(
    columns=[
        Column(TX_ID, "id", max_length=ID_MAX_LENGTH),
        Column(TIMESTAMP, "datetime"),
        Column(CUSTOMER, "id", max_length=ID_MAX_LENGTH),
        Column(TERMINAL, "id", max_length=ID_MAX_LENGTH),
        Column(AMOUNT, "float", min=0.0, max=MAX_AMOUNT),
        Column(LABEL, "int", required=False, nullable=True, allowed={0, 1}),
        Column(SCENARIO, "int", required=False, allowed={0, 1, 2, 3}),
    ],
    unique=[TX_ID],
)


def id_key(v: object) -> str:
    """The canonical form of an id: its string (``171`` and ``"171"`` are the same id)."""
    return v if isinstance(v, str) else str(int(v))  # int(): numpy integers print as plain digits too


MAX_INT_ID = 10**63  # the largest integer id: its decimal string still fits ID_MAX_LENGTH


def check_id(v: object) -> str:
    """An id from an API body: a string matching :data:`~apps.fraud.config.ID_PATTERN`, or an integer >= 0
    (its decimal string; ``120.0`` is the integer 120, as in JSON Schema); raises ``ValueError`` saying what is
    expected (booleans are refused)."""
    if isinstance(v, float) and v.is_integer():  # JSON's 120.0 is the integer 120
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError(f"must be a string id of 1-{ID_MAX_LENGTH} letters, digits or _-.:@ (or an integer >= 0)")
    if isinstance(v, int) and not 0 <= v <= MAX_INT_ID:
        raise ValueError(f"integer ids must be in [0, 10**63], got {len(str(v))} digits")
    s = str(v)
    if not _ID_RE.fullmatch(s):
        raise ValueError(
            f"must be 1-{ID_MAX_LENGTH} characters among letters, digits and _-.:@ (got {len(s)} characters)"
        )
    return s


# ---------------------------------------------------------------- simulator


def _customer_profiles(cfg: SimulationConfig, rng: np.random.Generator) -> pd.DataFrame:
    n = cfg.n_customers
    mean_amount = rng.uniform(5, 100, n)
    return pd.DataFrame(
        {
            CUSTOMER: np.arange(n),
            "x": rng.uniform(0, 100, n),
            "y": rng.uniform(0, 100, n),
            "mean_amount": mean_amount,
            "std_amount": mean_amount / 2,
            "mean_nb_tx_per_day": rng.uniform(0, 4, n),
        }
    )


def _terminal_profiles(cfg: SimulationConfig, rng: np.random.Generator) -> pd.DataFrame:
    n = cfg.n_terminals
    return pd.DataFrame({TERMINAL: np.arange(n), "x": rng.uniform(0, 100, n), "y": rng.uniform(0, 100, n)})


def _reachable_terminals(customers: pd.DataFrame, terminals: pd.DataFrame, radius: float):
    """CSR lists of the terminals within ``radius`` of each customer: (offsets[n+1], flat terminal ids)."""
    tree = cKDTree(terminals[["x", "y"]].to_numpy())
    lists = tree.query_ball_point(customers[["x", "y"]].to_numpy(), r=radius)
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    offsets = np.r_[0, np.cumsum(counts)]
    flat = np.fromiter((t for x in lists for t in sorted(x)), dtype=np.int64, count=int(offsets[-1]))
    return offsets, flat


def simulate(cfg: SimulationConfig | None = None) -> pd.DataFrame:
    """Simulate labelled transactions (see the module docstring); returns a frame in :data:`SCHEMA`, time-sorted.

    Genuine behaviour per customer: ``Poisson(mean_nb_tx_per_day)`` transactions a day at second
    ``N(43200, 20000)`` (draws outside the day are dropped, as in the handbook), amount ``N(mean, mean/2)``
    (a negative draw replaced by ``U(0, 2*mean)``, rounded to cents) at a terminal drawn uniformly among those
    within ``radius``. Frauds: (1) amount > 220; (2) each day 2 terminals compromised for 28 days, all their
    transactions fraud; (3) each day 3 customers compromised for 14 days, a third of their transactions
    multiplied by 5 and fraud. Later scenarios overwrite earlier ones, as in the handbook.
    """
    cfg = cfg or SimulationConfig()
    rng = np.random.default_rng(cfg.seed)
    customers = _customer_profiles(cfg, rng)
    terminals = _terminal_profiles(cfg, rng)
    offsets, flat = _reachable_terminals(customers, terminals, cfg.radius)
    n_reach = np.diff(offsets)

    # transactions per (customer, day); customers without a reachable terminal make none
    lam = np.where(n_reach > 0, customers["mean_nb_tx_per_day"].to_numpy(), 0.0)
    counts = rng.poisson(lam[:, None], size=(cfg.n_customers, cfg.n_days))
    cust = np.repeat(np.repeat(np.arange(cfg.n_customers), cfg.n_days), counts.ravel())
    day = np.repeat(np.tile(np.arange(cfg.n_days), cfg.n_customers), counts.ravel())
    n = cust.size

    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n).astype(np.int64)
    mean = customers["mean_amount"].to_numpy()[cust]
    amount = rng.normal(mean, mean / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    amount = np.round(amount, 2)
    pick = (rng.random(n) * n_reach[cust]).astype(np.int64)
    terminal = flat[offsets[cust] + pick]

    inside = (seconds > 0) & (seconds < SECONDS_PER_DAY)
    cust, day, seconds, amount, terminal = cust[inside], day[inside], seconds[inside], amount[inside], terminal[inside]
    t_abs = day * SECONDS_PER_DAY + seconds
    order = np.lexsort((cust, t_abs))
    cust, day, t_abs, amount, terminal = cust[order], day[order], t_abs[order], amount[order], terminal[order]
    n = cust.size
    scenario = np.zeros(n, dtype=np.int64)

    # (1) large amounts
    scenario[amount > cfg.amount_fraud_threshold] = 1

    # (2) compromised terminals: a (terminal x day) mask, one compromise event per (day, terminal)
    compromised = np.zeros((cfg.n_terminals, cfg.n_days), dtype=bool)
    for d in range(cfg.n_days):
        for t in rng.choice(cfg.n_terminals, size=cfg.compromised_terminals_per_day, replace=False):
            compromised[t, d : d + cfg.terminal_compromise_days] = True
    scenario[compromised[terminal, day]] = 2

    # (3) compromised customers: a third of their transactions in the window, amount x5
    by_customer = np.lexsort((t_abs, cust))  # positions grouped by customer, time-ordered inside
    cust_sorted = cust[by_customer]
    starts = np.searchsorted(cust_sorted, np.arange(cfg.n_customers), side="left")
    ends = np.searchsorted(cust_sorted, np.arange(cfg.n_customers), side="right")
    for d in range(cfg.n_days):
        for c in rng.choice(cfg.n_customers, size=cfg.compromised_customers_per_day, replace=False):
            rows = by_customer[starts[c] : ends[c]]
            rows = rows[(day[rows] >= d) & (day[rows] < d + cfg.customer_compromise_days)]
            k = rows.size // 3
            if k:
                hit = rng.choice(rows, size=k, replace=False)
                amount[hit] = np.round(amount[hit] * 5, 2)
                scenario[hit] = 3

    start = pd.Timestamp(cfg.start_date)
    df = pd.DataFrame(
        {
            TX_ID: np.arange(n, dtype=np.int64),
            TIMESTAMP: start + pd.to_timedelta(t_abs, unit="s"),
            CUSTOMER: cust.astype(np.int64),
            TERMINAL: terminal.astype(np.int64),
            AMOUNT: amount,
            LABEL: (scenario > 0).astype(np.int64),
            SCENARIO: scenario,
        }
    )
    log.info("simulated %d transactions, fraud rate %.4f", n, df[LABEL].mean())
    return df


# ---------------------------------------------------------------- loading


def add_day(df: pd.DataFrame, origin: pd.Timestamp | None = None) -> pd.DataFrame:
    """Add :data:`DAY`: whole days since midnight of ``origin`` (default: the first transaction's day)."""
    origin = (df[TIMESTAMP].min() if origin is None else pd.Timestamp(origin)).normalize()
    out = df.copy()
    out[DAY] = ((out[TIMESTAMP] - origin) // pd.Timedelta(days=1)).astype(np.int64)
    return out


def validate(df: pd.DataFrame, *, source: str = "transactions", require_label: bool = False) -> pd.DataFrame:
    """Check ``df`` against :data:`SCHEMA`, coerce types (ids to str, labels to int64, or float64 with NaN where
    some are missing), sort by time keeping the file order of ties; raises ``DataError`` (one line)."""
    bools = [c for c in ID_COLUMNS if c in df.columns and pd.api.types.is_bool_dtype(df[c])]
    if bools:
        raise DataError(f"{source}: column(s) {bools} hold true/false values; ids are strings or integers")
    # integers print as digits (and "-"), at most 20 characters: always a valid id, no need to check
    integers = {c for c in ID_COLUMNS if c in df.columns and df[c].dtype.kind in "iu"}
    df = SCHEMA.validate(df, source=source)
    if df.empty:
        raise DataError(f"{source}: no transactions (only a header?); expected rows of {SCHEMA.header}")
    for col in ID_COLUMNS:
        if col in integers:
            continue
        ids = df[col].astype(str)
        bad = ~ids.str.fullmatch(ID_PATTERN).to_numpy()
        if bad.any():
            raise DataError(
                SCHEMA._describe(
                    source, col, bad, f"is not an id of 1-{ID_MAX_LENGTH} letters, digits or _-.:@", df[col]
                )
            )
    if require_label:
        if LABEL not in df.columns:
            raise DataError(f"{source}: column '{LABEL}' (1 = fraud, 0 = genuine) is required to train or evaluate")
        if df[LABEL].notna().sum() == 0:
            raise DataError(f"{source}: column '{LABEL}' is empty in every row; training needs labelled rows")
    if LABEL in df.columns:  # float with NaN for "not known yet"; plain int64 when every row is labelled
        df[LABEL] = df[LABEL].astype("float64") if df[LABEL].isna().any() else df[LABEL].astype("int64")
    keep = [c for c in SCHEMA.names if c in df.columns]
    return df[keep].sort_values(TIMESTAMP, kind="mergesort").reset_index(drop=True)


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose label is known (all rows when there are no missing labels)."""
    if LABEL not in df.columns or not df[LABEL].isna().any():
        return df
    return df[df[LABEL].notna()]


def load(
    path: str | Path | None = None,
    *,
    sim: SimulationConfig | None = None,
    require_label: bool = True,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """The transactions to work on: a user's CSV/parquet file in :data:`SCHEMA`, or the simulator's output.

    With ``path=None`` the simulated reference set (or ``sim``) is generated; with ``cache_dir`` (the pipeline
    passes ``$MLREF_HOME/cache/fraud``) it is cached there as parquet keyed by the simulation settings, so repeated
    runs skip the simulation.
    """
    if path is not None:
        return validate(read_table(path), source=str(path), require_label=require_label)
    return simulated(sim, cache_dir=cache_dir)


def simulated(sim: SimulationConfig | None = None, *, cache_dir: Path | None = None) -> pd.DataFrame:
    """Simulated transactions for ``sim``, read from / written to ``cache_dir`` when given."""
    sim = sim or SimulationConfig()
    if cache_dir is None:
        return simulate(sim)
    key = "_".join(str(v) for v in sim.asdict().values()).replace(" ", "")
    path = Path(cache_dir) / f"simulated_{key}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    df = simulate(sim)
    write_table(df, path)
    return df


def ulb_creditcard(data_dir: str | Path) -> pd.DataFrame:
    """The ULB Kaggle card dataset (``creditcard.csv``, 284,807 transactions over 2 days, 0.17 % fraud), if present.

    Read from ``data_dir/fraud/creditcard.csv`` (the workspace's ``data_dir``, ``$MLREF_DATA_DIR``; download it from
    https://www.kaggle.com/datasets/mlg-ulb/creditcardfraud - the licence (ODbL) requires an account, so it is
    not fetched automatically). It has no card or terminal ids and PCA-anonymised features ``V1..V28``: it fits the
    supervised part of this app (``Time`` -> timestamp, ``Amount``, ``Class`` -> label), not the card-based
    protocol; ``customer_id``/``terminal_id`` are set to the row number so the schema holds.
    """
    path = Path(data_dir) / "fraud" / "creditcard.csv"
    if not path.exists():
        raise DataError(
            f"{path} not found: download creditcard.csv from https://www.kaggle.com/datasets/mlg-ulb/creditcardfraud "
            f"and place it there (or set MLREF_DATA_DIR)"
        )
    raw = pd.read_csv(path)
    n = len(raw)
    df = pd.DataFrame(
        {
            TX_ID: np.arange(n),
            TIMESTAMP: pd.Timestamp("2013-09-01") + pd.to_timedelta(raw["Time"], unit="s"),
            CUSTOMER: np.arange(n),
            TERMINAL: np.arange(n),
            AMOUNT: raw["Amount"].astype(float),
            LABEL: raw["Class"].astype(int),
        }
    )
    return validate(df, source=str(path), require_label=True)
