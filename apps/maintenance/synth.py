"""Fleets of any size for the scaling bench: the simulator's units streamed to parquet, a chunk of units at a time.

``write_fleet(path, n_units, seed=...)`` draws units with :func:`apps.maintenance.data.sim_unit` (the physics of
:func:`~apps.maintenance.data.simulate_fleet`: one machine type, exponential damage, noisy sensors under several
operating conditions) and writes ``chunk_units`` of them per parquet row group, so memory stays at one chunk
(about 20 MB per 1,000 units) whatever the fleet size. Unit ``i`` is drawn from its own generator
``default_rng([seed, i])``, so the file does not depend on ``chunk_units``; the fleet's sensor noise levels come
from ``default_rng([seed])``. A fleet averages about 176 cycles per unit (0.18 M rows per 1,000 units).

``running=True`` cuts every unit at a random cycle, as :func:`apps.maintenance.data.truncate` does (at least 31
cycles, at least one before the failure), and also writes the true RUL at each unit's last cycle to
``<path stem>.rul.parquet`` (columns ``unit, rul``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from apps.maintenance.data import RUL, UNIT, sim_machine, sim_noise, sim_unit
from common.data import atomic_path

log = logging.getLogger(__name__)

ROWS_PER_UNIT = 176  # mean cycles of a simulated unit (run to failure), measured on 10,000 units
START = 1_704_067_200  # the first unit's earliest start (unix seconds, as simulate_fleet)
CYCLE_SECONDS = 6 * 3600
START_SPREAD_DAYS = 200.0
MIN_CYCLES = 31  # a running unit keeps at least this many cycles (truncate's rule)


def rul_path(path: Path) -> Path:
    """Where :func:`write_fleet` puts the true RUL of a running fleet written to ``path``."""
    return Path(path).with_suffix(".rul.parquet")


def fleet_units(
    first: int,
    count: int,
    *,
    seed: int,
    running: bool = False,
    n_conditions: int = 3,
    unit_prefix: str = "u",
) -> tuple[pd.DataFrame, pd.Series]:
    """Units ``first .. first + count - 1`` of the fleet ``seed`` as a long table (and their true RUL when
    ``running``; empty otherwise). Each unit depends only on ``(seed, its index)``."""
    machine = sim_machine(n_conditions)
    noise = sim_noise(np.random.default_rng([seed]))
    frames, truth = [], {}
    for i in range(first, first + count):
        rng = np.random.default_rng([seed, i])
        start = START + int(rng.uniform(0, START_SPREAD_DAYS * 86400))
        cols = sim_unit(rng, machine, noise, f"{unit_prefix}{i + 1}", start, CYCLE_SECONDS)
        if running:
            n = len(cols[UNIT])
            cut = int(rng.integers(max(min(MIN_CYCLES, n - 1), 1), n)) if n > 1 else n
            cols = {k: v[:cut] for k, v in cols.items()}
            truth[f"{unit_prefix}{i + 1}"] = float(n - cut)
        frames.append(cols)
    table = pd.DataFrame({c: np.concatenate([f[c] for f in frames]) for c in frames[0]})
    return table, pd.Series(truth, name=RUL, dtype=float)


def write_fleet(
    path: Path,
    n_units: int,
    *,
    seed: int = 0,
    chunk_units: int = 1000,
    running: bool = False,
    n_conditions: int = 3,
    unit_prefix: str = "u",
) -> dict[str, float]:
    """Write ``n_units`` simulated units to the parquet file ``path`` (atomically), ``chunk_units`` per row group;
    see the module docstring. Returns ``{"units", "rows", "seconds"}``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if n_units < 1 or chunk_units < 1:
        raise ValueError(f"n_units and chunk_units must be >= 1, got {n_units} and {chunk_units}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0, rows, truths = time.perf_counter(), 0, []
    with atomic_path(path) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for first in range(0, n_units, chunk_units):
                count = min(chunk_units, n_units - first)
                table, truth = fleet_units(
                    first, count, seed=seed, running=running, n_conditions=n_conditions, unit_prefix=unit_prefix
                )
                arrow = pa.Table.from_pandas(table, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, arrow.schema)
                writer.write_table(arrow)
                rows += len(table)
                truths.append(truth)
                if (first // chunk_units) % 10 == 9 or first + count == n_units:
                    log.info("fleet %s: %d of %d units written (%d rows)", path.name, first + count, n_units, rows)
        finally:
            if writer is not None:
                writer.close()
    if running:
        rul = pd.concat(truths).rename_axis(UNIT).reset_index()
        with atomic_path(rul_path(path)) as tmp:
            rul.to_parquet(tmp, index=False)
    return {"units": n_units, "rows": rows, "seconds": round(time.perf_counter() - t0, 2)}


def read_truth(path: Path) -> pd.Series:
    """The true RUL of the running fleet at ``path``, indexed by unit."""
    rul = pd.read_parquet(rul_path(path))
    return pd.Series(rul[RUL].to_numpy(float), index=rul[UNIT].astype(str).to_numpy(), name=RUL)
