"""The fraud simulator at any size, streamed to one parquet file in blocks of days (memory bounded by a block).

``python -m apps.fraud.synth --scale 10 --out DIR`` writes ``DIR/transactions.parquet`` (the app's ``--dataset``
format plus ``scenario``; one row group per ``--chunk-days`` days, time-sorted: the out-of-core path's partitions)
and ``DIR/synth.json`` (the spec and what was written). ``--scale 10`` is 10x the reference population (50,000
customers, 100,000 terminals: about 18M transactions over 183 days).

The world is :func:`apps.fraud.data.simulate`'s (the handbook's chapter 3.2): the same customer and terminal
profiles (:func:`~apps.fraud.data._customer_profiles`, ``_terminal_profiles``, ``_reachable_terminals``), the same
laws for counts, times, amounts and terminals, the same three fraud scenarios. What changes, so that a block of
days can be drawn without the others:

- every day draws from its own random stream (``SeedSequence([seed, day])``), so the rows do not depend on
  ``chunk_days``: two chunk sizes write the same rows (``tests/fraud/test_synth.py``);
- compromises (scenario 2: terminals, 3: cards) are drawn for all days first, from their own streams (small
  arrays: ``terminals x days`` and ``customers x days`` booleans);
- scenario 3 marks each transaction of a compromised card with probability 1/3 (a third *in expectation*; the
  in-memory simulator picks exactly a third of the window's transactions, which needs the whole window at once);
- the compromises per day scale with the population (2 terminals and 3 cards a day per reference population), so
  the fraud rate stays the reference's at every scale.

The output is not :func:`~apps.fraud.data.simulate`'s row for row (other random streams), but the same world in
distribution. Memory: the profiles, the compromise masks and one block of days.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from apps.fraud.config import REFERENCE_SIMULATION, SimulationConfig
from apps.fraud.data import (
    AMOUNT,
    CUSTOMER,
    LABEL,
    SCENARIO,
    TERMINAL,
    TIMESTAMP,
    TX_ID,
    _customer_profiles,
    _reachable_terminals,
    _terminal_profiles,
)
from common.data import SECONDS_PER_DAY, atomic_path

log = logging.getLogger(__name__)

FILE = "transactions.parquet"
META = "synth.json"
ARROW_SCHEMA = pa.schema(
    [
        (TX_ID, pa.int64()),
        (TIMESTAMP, pa.timestamp("ns")),
        (CUSTOMER, pa.int64()),
        (TERMINAL, pa.int64()),
        (AMOUNT, pa.float64()),
        (LABEL, pa.int64()),
        (SCENARIO, pa.int64()),
    ]
)
# transactions a reference-population world makes (SimulationConfig defaults, seed 0): sizes -> scales
REFERENCE_ROWS = 1_791_728


SPARSE_SCALE = 0.05  # below this scale the radius widens, so customers still reach terminals


def scaled(scale: float, *, seed: int = 0, base: SimulationConfig = REFERENCE_SIMULATION) -> SimulationConfig:
    """``base`` with ``scale`` times its customers and terminals (and compromises a day, at least 1 each).

    Below :data:`SPARSE_SCALE` (worlds of under ~90,000 transactions, for tests) the radius grows as
    ``1/sqrt(scale)`` so that a customer reaches as many terminals as at that scale, instead of none."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    radius = base.radius * (SPARSE_SCALE / scale) ** 0.5 if scale < SPARSE_SCALE else base.radius
    return replace(
        base,
        radius=radius,
        n_customers=max(1, round(base.n_customers * scale)),
        n_terminals=max(1, round(base.n_terminals * scale)),
        compromised_terminals_per_day=max(1, round(base.compromised_terminals_per_day * scale)),
        compromised_customers_per_day=max(1, round(base.compromised_customers_per_day * scale)),
        seed=seed,
    )


def for_rows(rows: float, *, seed: int = 0) -> SimulationConfig:
    """The world of about ``rows`` transactions over the reference's 183 days (population scaled)."""
    return scaled(rows / REFERENCE_ROWS, seed=seed)


@dataclass
class _World:
    """What every block of days shares: profiles, reachable terminals, compromise masks (``[entity, day]``)."""

    cfg: SimulationConfig
    mean_amount: np.ndarray
    lam: np.ndarray  # transactions a day per customer (0 without a reachable terminal)
    offsets: np.ndarray
    flat: np.ndarray
    terminal_hit: np.ndarray
    customer_hit: np.ndarray


def _world(cfg: SimulationConfig) -> _World:
    rng = np.random.default_rng(cfg.seed)
    customers = _customer_profiles(cfg, rng)
    terminals = _terminal_profiles(cfg, rng)
    offsets, flat = _reachable_terminals(customers, terminals, cfg.radius)
    n_reach = np.diff(offsets)
    lam = np.where(n_reach > 0, customers["mean_nb_tx_per_day"].to_numpy(), 0.0)
    term_rng = np.random.default_rng([cfg.seed, 1_000_003])
    cust_rng = np.random.default_rng([cfg.seed, 1_000_033])
    terminal_hit = np.zeros((cfg.n_terminals, cfg.n_days), dtype=bool)
    customer_hit = np.zeros((cfg.n_customers, cfg.n_days), dtype=bool)
    k_t = min(cfg.compromised_terminals_per_day, cfg.n_terminals)
    k_c = min(cfg.compromised_customers_per_day, cfg.n_customers)
    for d in range(cfg.n_days):
        t_days, c_days = slice(d, d + cfg.terminal_compromise_days), slice(d, d + cfg.customer_compromise_days)
        terminal_hit[term_rng.choice(cfg.n_terminals, size=k_t, replace=False), t_days] = True
        customer_hit[cust_rng.choice(cfg.n_customers, size=k_c, replace=False), c_days] = True
    return _World(cfg, customers["mean_amount"].to_numpy(), lam, offsets, flat, terminal_hit, customer_hit)


def _day(world: _World, day: int) -> pd.DataFrame:
    """The transactions of one day (time-sorted; ``tx_id`` still 0-based within the day)."""
    cfg = world.cfg
    rng = np.random.default_rng([cfg.seed, day])
    counts = rng.poisson(world.lam)
    cust = np.repeat(np.arange(cfg.n_customers), counts)
    n = cust.size
    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n).astype(np.int64)
    mean = world.mean_amount[cust]
    amount = rng.normal(mean, mean / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    amount = np.round(amount, 2)
    n_reach = np.diff(world.offsets)
    pick = (rng.random(n) * n_reach[cust]).astype(np.int64)
    terminal = world.flat[world.offsets[cust] + pick]
    third = rng.random(n) < 1 / 3  # scenario 3's draw, made for every row so the stream does not depend on it

    inside = (seconds > 0) & (seconds < SECONDS_PER_DAY)
    keep = np.flatnonzero(inside)[np.lexsort((cust[inside], seconds[inside]))]  # inside the day, by time
    cust, seconds, amount, terminal, third = cust[keep], seconds[keep], amount[keep], terminal[keep], third[keep]
    scenario = np.zeros(cust.size, dtype=np.int64)
    scenario[amount > cfg.amount_fraud_threshold] = 1
    scenario[world.terminal_hit[terminal, day]] = 2
    hit = world.customer_hit[cust, day] & third
    amount[hit] = np.round(amount[hit] * 5, 2)
    scenario[hit] = 3
    t_abs = day * SECONDS_PER_DAY + seconds
    return pd.DataFrame(
        {
            TX_ID: np.arange(cust.size, dtype=np.int64),
            TIMESTAMP: pd.Timestamp(cfg.start_date) + pd.to_timedelta(t_abs, unit="s"),
            CUSTOMER: cust.astype(np.int64),
            TERMINAL: terminal.astype(np.int64),
            AMOUNT: amount,
            LABEL: (scenario > 0).astype(np.int64),
            SCENARIO: scenario,
        }
    )


def blocks(cfg: SimulationConfig, chunk_days: int = 14):
    """Yield the world's transactions one block of ``chunk_days`` days at a time (time-sorted, global tx ids)."""
    if chunk_days < 1:
        raise ValueError(f"chunk_days must be >= 1, got {chunk_days}")
    world = _world(cfg)
    next_id = 0
    for first in range(0, cfg.n_days, chunk_days):
        days = [_day(world, d) for d in range(first, min(first + chunk_days, cfg.n_days))]
        block = pd.concat(days, ignore_index=True)
        block[TX_ID] = np.arange(next_id, next_id + len(block), dtype=np.int64)
        next_id += len(block)
        yield block


def write_synthetic(cfg: SimulationConfig, out: str | Path, *, chunk_days: int = 14) -> dict:
    """Stream ``cfg``'s world into ``out/transactions.parquet`` (one row group per block of days) and write
    ``out/synth.json``; returns its summary. Each file appears only when complete."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = frauds = 0
    n_blocks = math.ceil(cfg.n_days / chunk_days)
    path = out / FILE
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, ARROW_SCHEMA) as writer:
        for i, block in enumerate(blocks(cfg, chunk_days)):
            writer.write_table(pa.Table.from_pandas(block, schema=ARROW_SCHEMA, preserve_index=False))
            rows += len(block)
            frauds += int(block[LABEL].sum())
            log.info("block %d/%d (%d days): %d rows (total %d)", i + 1, n_blocks, chunk_days, len(block), rows)
    summary = {
        "spec": cfg.asdict(),
        "chunk_days": chunk_days,
        "rows": rows,
        "fraud_rate": round(frauds / max(rows, 1), 5),
        "file": str(path),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    with atomic_path(out / META) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "wrote %d transactions (fraud rate %.4f) to %s in %.1fs", rows, summary["fraud_rate"], path, summary["seconds"]
    )
    return summary


def dataset_for(rows: float, data_dir: Path, *, seed: int = 0, chunk_days: int = 14) -> Path:
    """The parquet file of about ``rows`` transactions in ``data_dir`` (written once, reused while its spec
    matches)."""
    cfg = for_rows(rows, seed=seed)
    out = Path(data_dir) / f"synth-{int(rows)}-seed{seed}"
    meta = out / META
    if meta.exists():
        done = json.loads(meta.read_text())
        if done.get("spec") == cfg.asdict() and done.get("chunk_days") == chunk_days and (out / FILE).exists():
            return out / FILE
    log.info("generating about %d transactions into %s", int(rows), out)
    write_synthetic(cfg, out, chunk_days=chunk_days)
    return out / FILE


def main(argv: list[str] | None = None) -> int:
    """``python -m apps.fraud.synth``: exit 0 on success, 2 on a bad argument."""
    p = argparse.ArgumentParser(prog="python -m apps.fraud.synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=10.0, help="population x the reference (10: ~18M transactions)")
    p.add_argument("--days", type=int, default=REFERENCE_SIMULATION.n_days, help="days simulated")
    p.add_argument("--chunk-days", type=int, default=14, help="days per block (a parquet row group)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    a = p.parse_args(argv)
    if a.scale <= 0 or a.days < 1 or a.chunk_days < 1:
        p.error("--scale must be > 0, --days and --chunk-days >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    cfg = replace(scaled(a.scale, seed=a.seed), n_days=a.days)
    print(json.dumps(write_synthetic(cfg, a.out, chunk_days=a.chunk_days)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
