"""Synthetic implicit feedback at any size, streamed to one parquet file in chunks (memory bounded by the chunk).

``python -m apps.recommender.synth --interactions 1000000 --users 20000 --items 10000 --out DIR`` writes
``DIR/interactions.parquet`` (``user,item,weight,timestamp``, one row group per chunk of users: the recommender's
``--dataset`` format), ``DIR/interactions.items.csv`` (item metadata: the item's cluster as its genre, picked up
by the loader) and ``DIR/synth.json`` (the arguments and what was written).

The structure is the embedded generator's (:mod:`apps.recommender.data`: ``make_world``/``sample_interactions``),
made scalable:

- items: ``n_clusters`` latent taste clusters, Zipf base popularity (``pop_i ∝ rank^-zipf``), as in ``make_world``;
- users: Dirichlet(``concentration``) taste mixtures as in ``make_world``, but power-law (Pareto) activity scaled so
  the total is about ``--interactions``; drawn chunk by chunk from per-chunk seeds, so no array over all users is
  ever held and the output does not depend on the chunk's memory, only on ``--seed`` and ``--chunk-users``;
- p(i | u) ∝ pop_i^0.8 · (taste_u[cluster_i] + 1e-4), the embedded generator's law, sampled exactly as a mixture:
  a cluster c with probability ∝ (taste_u[c] + 1e-4) · Σ_{i∈c} pop_i^0.8, then an item of c by inverse CDF. That
  is O(log n_items) per draw instead of the embedded generator's Gumbel top-k over the whole catalogue per user
  (O(n_items)), so 200k items and 50M rows stay cheap. Draws are with replacement; a repeated (user, item) is one
  row whose ``weight`` adds up (repeat plays), and short users are topped up (a few rounds) towards their count.

The clusters make quality measurable: a model that recovers them beats most-popular by a wide margin, a random
ranking does not.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from apps.recommender.data import GENRES, ITEM, SYNTH_START, TIMESTAMP, TITLE, USER, WEIGHT
from common.data import SECONDS_PER_DAY, atomic_path

log = logging.getLogger(__name__)

POP_POWER = 0.8  # p(i | u) ∝ pop_i^POP_POWER · taste: the embedded generator's default
TASTE_FLOOR = 1e-4  # the embedded generator's smoothing: every item keeps a little probability
PARETO_SHAPE = 1.5  # user activity tail: P(activity > x) ∝ x^-1.5 (finite mean, heavy tail)
MIN_ACTIVITY = 3  # every user can be split 75/25 and keep a test item


@dataclass(frozen=True)
class SynthSpec:
    """Arguments of one synthetic data set (stored in ``synth.json``)."""

    interactions: int = 1_000_000
    users: int = 20_000
    items: int = 10_000
    clusters: int = 20
    zipf: float = 1.0
    concentration: float = 0.15
    days: int = 180
    seed: int = 42
    chunk_users: int = 20_000

    def check(self) -> SynthSpec:
        """Raise ``ValueError`` naming the argument when a value is unusable."""
        for name in ("interactions", "users", "items", "clusters", "days", "chunk_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if self.items < 2:
            raise ValueError(f"--items: at least 2 items are needed, got {self.items}")
        if self.interactions < MIN_ACTIVITY * self.users:
            raise ValueError(
                f"--interactions: {self.interactions} is below {MIN_ACTIVITY} per user for {self.users} users"
            )
        if self.interactions > self.users * self.items // 2:
            raise ValueError(f"--interactions: {self.interactions} would fill over half of {self.users} x {self.items}")
        return self


@dataclass
class ItemWorld:
    """The catalogue: cluster and base popularity of each item, and per-cluster inverse-CDF tables."""

    cluster: np.ndarray  # (n_items,) int32
    weight: np.ndarray  # (n_items,) float64, pop^POP_POWER
    members: list[np.ndarray]  # items of each cluster, in popularity order
    cdf: list[np.ndarray]  # cumulative weight within each cluster, ending at 1
    mass: np.ndarray  # (n_clusters,) total weight of each cluster


def make_items(spec: SynthSpec) -> ItemWorld:
    """Clusters and Zipf popularity of the catalogue (as ``data.make_world`` draws them)."""
    rng = np.random.default_rng([spec.seed, 0])
    cluster = rng.integers(0, spec.clusters, spec.items).astype(np.int32)
    ranks = rng.permutation(spec.items) + 1
    weight = (1.0 / ranks**spec.zipf) ** POP_POWER
    weight /= weight.sum()
    members, cdf, mass = [], [], np.zeros(spec.clusters)
    for c in range(spec.clusters):
        idx = np.flatnonzero(cluster == c)
        idx = idx[np.argsort(-weight[idx], kind="stable")]
        w = weight[idx]
        mass[c] = w.sum()
        members.append(idx)
        cdf.append(np.cumsum(w) / w.sum() if w.size else np.ones(0))
    return ItemWorld(cluster, weight, members, cdf, mass)


def _activity(rng: np.random.Generator, n: int, spec: SynthSpec) -> np.ndarray:
    """Pareto activity per user between MIN_ACTIVITY and items / 5, scaled so the chunk's total is its share of
    ``interactions`` (heavy tails make a sample mean unreliable; the cap takes mass that is given back)."""
    target = spec.interactions / spec.users * n
    cap = max(MIN_ACTIVITY, spec.items // 5)
    extra = rng.pareto(PARETO_SHAPE, n)  # activity above the minimum, power-law tail
    act = np.full(n, float(MIN_ACTIVITY))
    for _ in range(5):  # scale, clip at the cap, hand the clipped mass to the others
        free = act < cap
        room = target - act[~free].sum() - MIN_ACTIVITY * free.sum()
        if room <= 0 or not free.any():
            break
        act[free] = MIN_ACTIVITY + extra[free] * room / extra[free].sum()
        if act.max() <= cap:
            break
        act = np.minimum(act, cap)
    return np.clip(np.round(act), MIN_ACTIVITY, cap).astype(np.int64)


def _draw(world: ItemWorld, rng: np.random.Generator, taste: np.ndarray, counts: np.ndarray) -> tuple:
    """``counts[u]`` items for each user of the chunk (with replacement): (user row, item) arrays."""
    mix = (taste + TASTE_FLOOR) * world.mass[None, :]
    mix /= mix.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(len(counts)), counts)
    # cluster per draw by inverse CDF of each row's mixture
    cum = np.cumsum(mix, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(rows.size)
    clusters = (u[:, None] > cum[rows]).sum(axis=1)
    items = np.empty(rows.size, np.int64)
    for c in np.unique(clusters):
        sel = np.flatnonzero(clusters == c)
        pos = np.searchsorted(world.cdf[c], rng.random(sel.size), side="right")
        items[sel] = world.members[c][np.minimum(pos, world.members[c].size - 1)]
    return rows, items


def generate_chunk(world: ItemWorld, spec: SynthSpec, chunk: int) -> pd.DataFrame:
    """The interactions of users ``chunk * chunk_users ...`` (deterministic in ``seed`` and ``chunk``)."""
    first = chunk * spec.chunk_users
    n = min(spec.chunk_users, spec.users - first)
    rng = np.random.default_rng([spec.seed, 1, chunk])
    taste = rng.dirichlet(np.full(spec.clusters, spec.concentration), n)
    want = _activity(rng, n, spec)
    rows, items = _draw(world, rng, taste, want)
    counts = pd.DataFrame({"r": rows, "i": items}).value_counts(sort=False)  # repeats -> one row, counted
    for _ in range(8):  # top up users whose repeats left them short of their activity
        have = np.bincount(counts.index.get_level_values("r"), minlength=n)
        short = np.maximum(want - have, 0)
        if not short.any():
            break
        r2, i2 = _draw(world, rng, taste, short)
        extra = pd.DataFrame({"r": r2, "i": i2}).value_counts(sort=False)
        counts = counts.add(extra, fill_value=0).astype(np.int64)
    r = counts.index.get_level_values("r").to_numpy()
    i = counts.index.get_level_values("i").to_numpy()
    repeats = counts.to_numpy()
    start, end = SYNTH_START, SYNTH_START + spec.days * SECONDS_PER_DAY
    span = (end - start) * rng.uniform(0.2, 1.0, n)
    t0 = start + rng.uniform(0, 1, n) * (end - start - span)
    ts = (t0[r] + rng.random(r.size) * span[r]).astype(np.int64)
    weight = (repeats + rng.poisson(0.5, r.size)).astype(np.float32)
    width = len(str(spec.users - 1))
    iwidth = len(str(spec.items - 1))
    users = np.char.add("u", np.char.zfill((r + first).astype(str), width)).astype(object)
    item_ids = np.char.add("i", np.char.zfill(i.astype(str), iwidth)).astype(object)
    return pd.DataFrame({USER: users, ITEM: item_ids, WEIGHT: weight, TIMESTAMP: ts})


SCHEMA = pa.schema([(USER, pa.string()), (ITEM, pa.string()), (WEIGHT, pa.float32()), (TIMESTAMP, pa.int64())])


def write_synthetic(spec: SynthSpec, out: str | Path) -> dict:
    """Stream the data set of ``spec`` into ``out`` (see the module docstring); returns the summary written to
    ``synth.json``. Each file appears only when complete."""
    spec.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    world = make_items(spec)
    rows = 0
    n_chunks = math.ceil(spec.users / spec.chunk_users)
    path = out / "interactions.parquet"
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for chunk in range(n_chunks):
            df = generate_chunk(world, spec, chunk)
            writer.write_table(pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False))
            rows += len(df)
            log.info("chunk %d/%d: %d rows (total %d)", chunk + 1, n_chunks, len(df), rows)
    width = len(str(spec.items - 1))
    ids = [f"i{i:0{width}d}" for i in range(spec.items)]
    meta = pd.DataFrame(
        {ITEM: ids, TITLE: [f"Item {i} (cluster {c})" for i, c in enumerate(world.cluster)], GENRES: world.cluster}
    )
    meta[GENRES] = "cluster-" + meta[GENRES].astype(str)
    with atomic_path(out / "interactions.items.csv") as tmp:
        meta.to_csv(tmp, index=False)
    summary = {
        "spec": asdict(spec),
        "rows": rows,
        "file": str(path),
        "seconds": round(time.perf_counter() - t0, 2),
        "law": "p(i|u) ∝ pop_i^0.8 (taste_u[cluster_i] + 1e-4); Zipf items, Pareto(1.5) user activity",
    }
    with atomic_path(out / "synth.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m apps.recommender.synth``: exit 0 on success, 2 on a bad argument."""
    p = argparse.ArgumentParser(prog="python -m apps.recommender.synth", description=__doc__.split("\n\n")[0])
    d = SynthSpec()
    p.add_argument("--interactions", type=float, default=d.interactions, help="about this many rows (1e6 is fine)")
    p.add_argument("--users", type=float, default=None, help="default: interactions / 50")
    p.add_argument("--items", type=float, default=None, help="default: interactions / 100, 1,000 to 200,000")
    p.add_argument("--clusters", type=int, default=d.clusters)
    p.add_argument("--zipf", type=float, default=d.zipf)
    p.add_argument("--concentration", type=float, default=d.concentration)
    p.add_argument("--days", type=int, default=d.days)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--chunk-users", type=int, default=d.chunk_users, help="users generated per chunk (memory)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    n = int(a.interactions)
    spec = SynthSpec(
        interactions=n,
        users=int(a.users) if a.users else max(1, n // 50),
        items=int(a.items) if a.items else default_items(n),
        clusters=a.clusters,
        zipf=a.zipf,
        concentration=a.concentration,
        days=a.days,
        seed=a.seed,
        chunk_users=a.chunk_users,
    )
    try:
        summary = write_synthetic(spec, a.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def default_items(interactions: int) -> int:
    """Catalogue size that grows with the data: interactions / 100, between 1,000 and 200,000."""
    return int(min(200_000, max(1_000, interactions // 100)))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
